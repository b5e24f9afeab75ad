-- Where an organisation's audit log is forwarded (a SIEM), and how far each
-- destination has got. The outbox is audit_events itself: delivered_seq is
-- the last event the receiver took, delivered_checkpoint the last checkpoint
-- (by count). A webhook's HMAC key is not here: it is a 0600 file in the
-- data directory (forwarding/<id>.secret).
CREATE TABLE audit_destinations (
    id TEXT PRIMARY KEY,
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    kind TEXT NOT NULL CHECK (kind IN ('syslog', 'webhook')),
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    ca_pem TEXT,
    delivered_seq BIGINT NOT NULL DEFAULT 0,
    delivered_checkpoint BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    last_success_at BIGINT,
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, name)
);
