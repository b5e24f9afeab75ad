-- Signed audit checkpoints: an organisation's event count and the hash of its
-- last event at a time, signed by the audit key. `checkpoint` is the signed
-- checkpoint exactly as published (channel::Checkpoint, JSON). Kept forever,
-- like the events.
CREATE TABLE audit_checkpoints (
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    count BIGINT NOT NULL,
    at BIGINT NOT NULL,
    checkpoint TEXT NOT NULL,
    PRIMARY KEY (org_id, count)
);
