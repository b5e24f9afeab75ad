-- Signed audit checkpoints: an organisation's event count and the hash of its
-- last event at a time, signed by the audit key. `checkpoint` is the signed
-- checkpoint exactly as published (channel::Checkpoint, JSON). Kept forever,
-- like the events.
CREATE TABLE audit_checkpoints (
    org_id INTEGER NOT NULL REFERENCES orgs(id),
    count INTEGER NOT NULL,
    at INTEGER NOT NULL,
    checkpoint TEXT NOT NULL,
    PRIMARY KEY (org_id, count)
);
