-- What an agent reports about itself with each metrics batch
-- (control/src/metrics.rs): when it started and how far its clock is from
-- the control plane's (both measured on receipt, on the control plane's
-- clock), and the last warning or error it logged, with when.
ALTER TABLE agents ADD COLUMN health_at INTEGER;
ALTER TABLE agents ADD COLUMN started_at INTEGER;
ALTER TABLE agents ADD COLUMN clock_skew_ms INTEGER;
ALTER TABLE agents ADD COLUMN last_error TEXT;
ALTER TABLE agents ADD COLUMN last_error_at INTEGER;
