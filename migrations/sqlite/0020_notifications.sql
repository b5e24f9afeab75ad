-- Notification channels (control/src/notifications.rs): where an
-- organisation's security-relevant events are announced: an email address,
-- a Slack-style incoming webhook, or a generic webhook signed with an HMAC.
-- Each keeps the audit sequence number it has been told up to
-- (delivered_seq), which starts at the log's head when the channel is added.
-- address is what may be shown: the email address, the webhook's URL, or
-- only the host of a Slack URL (the URL itself is the secret).
CREATE TABLE notification_channels (
    id TEXT PRIMARY KEY,
    org_id INTEGER NOT NULL REFERENCES orgs(id),
    kind TEXT NOT NULL CHECK (kind IN ('email', 'slack', 'webhook')),
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    ca_pem TEXT,
    delivered_seq INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_success_at INTEGER,
    created_at INTEGER NOT NULL,
    UNIQUE (org_id, name)
);

-- A channel's secret (the Slack URL, the webhook's HMAC key), sealed like a
-- secret: its own data key, wrapped by the master key named by
-- master_key_id, bound to the channel's id; hex of nonce || ciphertext.
CREATE TABLE notification_secrets (
    id TEXT PRIMARY KEY REFERENCES notification_channels(id),
    master_key_id TEXT NOT NULL,
    wrapped_key TEXT NOT NULL,
    ciphertext TEXT NOT NULL
);
CREATE INDEX notification_secrets_master_key ON notification_secrets(master_key_id);
