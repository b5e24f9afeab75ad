-- Watched backup profiles, as the newest metrics sample reports them: per
-- profile the last success (the stamp file's mtime) and when the profile was
-- first reported, JSON; and when the stalest of them becomes due (26 h after
-- its last success, or after it was first reported without one), for the
-- AI Pilot's rule.
ALTER TABLE agents ADD COLUMN backups TEXT;
ALTER TABLE agents ADD COLUMN backup_due_at BIGINT;
CREATE INDEX agents_backup_due ON agents(backup_due_at);
