-- Agents: registration tokens, enrolled agents with their keys and
-- certificates, and the durable command queue.

CREATE TABLE registration_tokens (
    id          INTEGER PRIMARY KEY,
    org_id      INTEGER NOT NULL REFERENCES orgs(id),
    token_hash  TEXT    NOT NULL UNIQUE,
    created_by  INTEGER REFERENCES users(id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    agent_id    TEXT
);
CREATE INDEX registration_tokens_org ON registration_tokens(org_id);

CREATE TABLE agents (
    id                  TEXT    PRIMARY KEY,
    org_id              INTEGER NOT NULL REFERENCES orgs(id),
    hostname            TEXT    NOT NULL,
    agent_version       TEXT    NOT NULL,
    created_at          INTEGER NOT NULL,
    cert_serial         TEXT    NOT NULL,
    cert_fingerprint    TEXT    NOT NULL UNIQUE,
    cert_not_after      INTEGER NOT NULL,
    identity_key        TEXT    NOT NULL,
    kem_key             TEXT,
    kem_key_id          TEXT,
    keys_registered_at  INTEGER NOT NULL,
    pending_key_action  TEXT    CHECK (pending_key_action IN ('rotate_keys', 'register_pqc_key')),
    tls_group           TEXT    NOT NULL DEFAULT '',
    last_seen_at        INTEGER,
    revoked_at          INTEGER,
    next_seq            INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX agents_org ON agents(org_id);

CREATE TABLE commands (
    id            TEXT    PRIMARY KEY,
    org_id        INTEGER NOT NULL REFERENCES orgs(id),
    agent_id      TEXT    NOT NULL REFERENCES agents(id),
    seq           INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    args          TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('queued', 'delivered', 'succeeded', 'failed', 'expired', 'cancelled')),
    created_by    INTEGER REFERENCES users(id),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    delivered_at  INTEGER,
    finished_at   INTEGER,
    result        TEXT,
    UNIQUE (agent_id, seq)
);
CREATE INDEX commands_agent_state ON commands(agent_id, state);
