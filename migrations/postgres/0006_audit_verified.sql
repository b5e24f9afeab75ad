-- The last audit event whose chain has been verified, per organisation: the
-- audit page checks only the events after it, and that it is unchanged.
CREATE TABLE audit_verified (
    org_id  BIGINT  PRIMARY KEY REFERENCES orgs(id),
    seq     BIGINT  NOT NULL,
    hash    TEXT    NOT NULL,
    at      BIGINT  NOT NULL
);
