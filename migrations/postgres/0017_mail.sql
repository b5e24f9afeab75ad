-- Email (control/src/mail.rs): a durable outbox the server's mailer sends
-- from. A message's subject and body are sealed like a secret (its own data
-- key, wrapped by the master key named by master_key_id; hex of nonce ||
-- ciphertext) in mail_bodies, deleted once it is sent or given up; the
-- outbox row stays as the record.
CREATE TABLE mail_outbox (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT,
    last_error TEXT,
    sent_at BIGINT,
    given_up_at BIGINT
);
CREATE INDEX mail_outbox_due ON mail_outbox(next_attempt_at) WHERE sent_at IS NULL AND given_up_at IS NULL;

CREATE TABLE mail_bodies (
    id TEXT PRIMARY KEY REFERENCES mail_outbox(id),
    master_key_id TEXT NOT NULL,
    wrapped_key TEXT NOT NULL,
    ciphertext TEXT NOT NULL
);
CREATE INDEX mail_bodies_master_key ON mail_bodies(master_key_id);

-- Password reset tokens (control/src/password_reset.rs): SHA-256 of each,
-- never the token; one use, until expires_at.
CREATE TABLE password_resets (
    token_hash TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    ip TEXT NOT NULL
);
CREATE INDEX password_resets_user ON password_resets(user_id);
