-- The Audit page filters by action group and by target (a server or an
-- operation), newest first: both walk an index in sequence order.
CREATE INDEX audit_events_org_action_seq ON audit_events(org_id, action, seq);
CREATE INDEX audit_events_org_target_seq ON audit_events(org_id, target, seq);
