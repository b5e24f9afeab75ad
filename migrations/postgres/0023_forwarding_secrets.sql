-- A SIEM webhook's HMAC key, sealed under the master key like the other
-- secrets (control::forwarding), instead of a file in the data directory:
-- replicas on one database share it, and a rotation re-wraps it.
CREATE TABLE audit_destination_secrets (
    id TEXT PRIMARY KEY REFERENCES audit_destinations(id),
    master_key_id TEXT NOT NULL,
    wrapped_key TEXT NOT NULL,
    ciphertext TEXT NOT NULL
);
CREATE INDEX audit_destination_secrets_master_key ON audit_destination_secrets(master_key_id);
