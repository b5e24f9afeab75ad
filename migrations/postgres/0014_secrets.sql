-- Secrets at rest (control/src/secrets.rs). Each value is sealed
-- (ChaCha20-Poly1305) under its own data key; the data key is wrapped by the
-- master key named by master_key_id, which is kept outside the database.
-- wrapped_key and ciphertext are hex of nonce || ciphertext. No column holds
-- a value or a key in the clear.
CREATE TABLE secrets (
    id TEXT PRIMARY KEY,
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    -- 'org' (every server) or 'agent:<id>' (one server).
    scope TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('env', 'api_key', 'credential')),
    name TEXT NOT NULL,
    master_key_id TEXT NOT NULL,
    wrapped_key TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_used_at BIGINT,
    UNIQUE (org_id, scope, name)
);
CREATE INDEX secrets_master_key ON secrets(master_key_id);

-- The master key every new secret is wrapped by. A rotation switches it under
-- this row's lock, which every write of a secret takes too.
CREATE TABLE secret_keyring (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    current_key_id TEXT NOT NULL
);
