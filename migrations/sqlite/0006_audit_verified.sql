-- The last audit event whose chain has been verified, per organisation: the
-- audit page checks only the events after it, and that it is unchanged.
CREATE TABLE audit_verified (
    org_id  INTEGER PRIMARY KEY REFERENCES orgs(id),
    seq     INTEGER NOT NULL,
    hash    TEXT    NOT NULL,
    at      INTEGER NOT NULL
);
