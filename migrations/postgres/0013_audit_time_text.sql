-- The Audit page's time range: the sequence numbers at its ends are found
-- on this index (an event's time never precedes the previous event's).
CREATE INDEX audit_events_org_at ON audit_events(org_id, at, seq);

-- The Audit page's free text: a trigram index over the searched fields, so a
-- rare string is found without reading every event. Built only where the
-- pg_trgm extension is available to this database user; without it the page
-- searches by scanning, a bounded slice of the log per page.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS pg_trgm;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'pg_trgm is not available to this user: the audit text search scans';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX audit_events_text ON audit_events USING gin (
            (actor || chr(10) || action || chr(10) || target || chr(10) || details) gin_trgm_ops
        );
    END IF;
END
$$;
