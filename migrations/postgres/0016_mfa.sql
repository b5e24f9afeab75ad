-- Two-factor sign-in (control/src/mfa.rs). A person's TOTP seed is sealed
-- like a secret (its own data key, wrapped by the master key named by
-- master_key_id; hex of nonce || ciphertext): no column holds it in the
-- clear. confirmed_at is NULL until the first code confirms the set-up;
-- last_step is the latest TOTP step accepted, so no code is accepted twice.
CREATE TABLE user_totp (
    id TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL UNIQUE REFERENCES users(id),
    master_key_id TEXT NOT NULL,
    wrapped_key TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    confirmed_at BIGINT,
    last_step BIGINT NOT NULL
);
CREATE INDEX user_totp_master_key ON user_totp(master_key_id);

-- One-time recovery codes: SHA-256 of each (80 random bits), never the code.
CREATE TABLE recovery_codes (
    user_id BIGINT NOT NULL REFERENCES users(id),
    code_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- An organisation may require two-factor sign-in for its Owners and Admins
-- (control/src/access.rs refuses them everything else until they set it up).
ALTER TABLE orgs ADD COLUMN require_mfa BIGINT NOT NULL DEFAULT 0 CHECK (require_mfa IN (0, 1));
