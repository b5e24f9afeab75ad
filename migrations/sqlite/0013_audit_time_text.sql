-- The Audit page's time range: the sequence numbers at its ends are found
-- on this index (an event's time never precedes the previous event's).
CREATE INDEX audit_events_org_at ON audit_events(org_id, at, seq);
