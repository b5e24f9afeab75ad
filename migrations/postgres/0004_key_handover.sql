-- The certificate (and identity key) an agent used before its latest key
-- round stay accepted for a short, bounded handover, so a lost response to a
-- rotation or renewal does not lock the agent out. Cleared as soon as the
-- agent uses its new certificate.
ALTER TABLE agents ADD COLUMN prev_cert_fingerprint TEXT;
ALTER TABLE agents ADD COLUMN prev_identity_key TEXT;
ALTER TABLE agents ADD COLUMN prev_valid_until BIGINT;
