-- Accounts, organisations, roles, invitations, sessions, login throttling and
-- the hash-chained audit log. Times are milliseconds since the Unix epoch.

CREATE TABLE orgs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT   NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email          TEXT   NOT NULL UNIQUE,
    password_hash  TEXT   NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE memberships (
    org_id      BIGINT NOT NULL REFERENCES orgs(id),
    user_id     BIGINT NOT NULL REFERENCES users(id),
    role        TEXT   NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id);

CREATE TABLE invites (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id       BIGINT NOT NULL REFERENCES orgs(id),
    email        TEXT   NOT NULL,
    role         TEXT   NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    token_hash   TEXT   NOT NULL UNIQUE,
    created_by   BIGINT NOT NULL REFERENCES users(id),
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    accepted_at  BIGINT,
    accepted_by  BIGINT REFERENCES users(id),
    revoked_at   BIGINT
);
CREATE INDEX invites_org ON invites(org_id);

CREATE TABLE sessions (
    id_hash       TEXT   PRIMARY KEY,
    user_id       BIGINT REFERENCES users(id),
    data          TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    ip            TEXT   NOT NULL DEFAULT '',
    user_agent    TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expiry ON sessions(expires_at);

CREATE TABLE login_failures (
    id    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key   TEXT   NOT NULL,
    at    BIGINT NOT NULL
);
CREATE INDEX login_failures_key_at ON login_failures(key, at);

CREATE TABLE audit_events (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id         BIGINT NOT NULL REFERENCES orgs(id),
    seq            BIGINT NOT NULL,
    at             BIGINT NOT NULL,
    actor_user_id  BIGINT,
    actor          TEXT   NOT NULL,
    ip             TEXT   NOT NULL,
    user_agent     TEXT   NOT NULL,
    action         TEXT   NOT NULL,
    target         TEXT   NOT NULL,
    details        TEXT   NOT NULL,
    prev_hash      TEXT   NOT NULL,
    hash           TEXT   NOT NULL,
    UNIQUE (org_id, seq)
);

CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only';
END;
$$;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
