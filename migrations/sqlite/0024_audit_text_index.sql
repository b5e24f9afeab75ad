-- The Audit page's free text on SQLite: a trigram index over the searched
-- fields (FTS5, case-sensitive, as the search matches), so a rare string is
-- found without reading every event. It keeps no copy of the text
-- (contentless) and no positions (detail=none): a search asks for events
-- holding every trigram of its text and checks each such event's fields for
-- the text itself. The row id is the event's organisation and sequence
-- number, `org_id * 2^40 + seq`, so an organisation's events are one range
-- of row ids, in sequence order.
CREATE VIRTUAL TABLE audit_text USING fts5(
    actor, action, target, details,
    content = '', columnsize = 0, detail = none,
    tokenize = 'trigram case_sensitive 1'
);

CREATE TRIGGER audit_events_text AFTER INSERT ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit event number out of the text index''s range')
    WHERE new.seq < 1 OR new.seq >= 1099511627776 OR new.org_id < 0 OR new.org_id >= 8388608;
    INSERT INTO audit_text (rowid, actor, action, target, details)
    VALUES ((new.org_id << 40) + new.seq, new.actor, new.action, new.target, new.details);
END;

INSERT INTO audit_text (rowid, actor, action, target, details)
SELECT (org_id << 40) + seq, actor, action, target, details FROM audit_events;
