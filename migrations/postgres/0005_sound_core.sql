-- Hot-path indexes and derived state.
--
-- authenticate() also matches the previous certificate during a key handover:
-- without this index that lookup scanned every agent on every agent request.
CREATE INDEX agents_prev_cert_fingerprint ON agents(prev_cert_fingerprint);

-- The latest metrics sample is kept on the agent row (written in the same
-- transaction as the sample), so the servers list reads one row per server.
ALTER TABLE agents ADD COLUMN last_cpu_pct DOUBLE PRECISION;
ALTER TABLE agents ADD COLUMN last_mem_used BIGINT;
ALTER TABLE agents ADD COLUMN last_mem_total BIGINT;
ALTER TABLE agents ADD COLUMN last_metrics_at BIGINT;

UPDATE agents SET last_metrics_at = (SELECT MAX(at) FROM metrics_raw m WHERE m.agent_id = agents.id);
UPDATE agents SET
    last_cpu_pct = (SELECT cpu_pct FROM metrics_raw m WHERE m.agent_id = agents.id AND m.at = agents.last_metrics_at),
    last_mem_used = (SELECT mem_used FROM metrics_raw m WHERE m.agent_id = agents.id AND m.at = agents.last_metrics_at),
    last_mem_total = (SELECT mem_total FROM metrics_raw m WHERE m.agent_id = agents.id AND m.at = agents.last_metrics_at)
WHERE last_metrics_at IS NOT NULL;

-- "Pending key registration" is derived from the open key command instead of
-- a flag that a failed or expired command left set.
ALTER TABLE agents DROP COLUMN pending_key_action;

-- Open commands of an organisation (the servers list's pending key rounds).
CREATE INDEX commands_org_state ON commands(org_id, state);

-- Registration tokens can be revoked; refusals of a used or expired token are
-- counted, and only the first is audited.
ALTER TABLE registration_tokens ADD COLUMN revoked_at BIGINT;
ALTER TABLE registration_tokens ADD COLUMN refusals BIGINT NOT NULL DEFAULT 0;
