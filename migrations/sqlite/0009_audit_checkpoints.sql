-- Signed audit checkpoints: an organisation's event count and the hash of its
-- last event at a time, signed by the audit key (Ed25519; signature and key
-- id as channel::Checkpoint carries them). Kept forever, like the events.
CREATE TABLE audit_checkpoints (
    org_id INTEGER NOT NULL REFERENCES orgs(id),
    count INTEGER NOT NULL,
    head_hash TEXT NOT NULL,
    at INTEGER NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (org_id, count)
);
