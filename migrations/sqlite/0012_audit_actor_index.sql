-- The Audit page's actor filter, newest first: walks an index in sequence order.
CREATE INDEX audit_events_org_actor_seq ON audit_events(org_id, actor, seq);
