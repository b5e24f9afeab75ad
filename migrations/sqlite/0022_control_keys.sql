-- The control plane's own private keys (agent CA, command-signing key,
-- result key, agent token key, audit key), sealed under the master key like
-- every other secret (control::key_vault). `id` is `ck_` and the key's name;
-- `public_part` is what may be shown (the CA certificate, a public key).
CREATE TABLE control_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    public_part TEXT NOT NULL,
    master_key_id TEXT NOT NULL,
    wrapped_key TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX control_keys_master_key ON control_keys(master_key_id);
