-- Operations and approval gates.
--
-- An operation is a catalogued kind with checked arguments, proposed by a
-- person or by the AI Pilot for one or more servers, approved or rejected by a
-- person whose role suffices, then dispatched as one command per server. Every
-- state it passes through is kept in operation_events, forever.

-- Per-organisation policy. A missing row means the defaults.
CREATE TABLE org_policies (
    org_id               BIGINT    PRIMARY KEY REFERENCES orgs(id),
    approval_ttl_secs    BIGINT   NOT NULL DEFAULT 3600,
    -- The two-person rule applies from this risk upwards; NULL turns it off.
    two_person_from      TEXT     CHECK (two_person_from IN ('low', 'medium', 'high', 'destructive')) DEFAULT 'high',
    pilot_enabled        BIGINT   NOT NULL DEFAULT 1 CHECK (pilot_enabled IN (0, 1)),
    production_default   BIGINT   NOT NULL DEFAULT 0 CHECK (production_default IN (0, 1)),
    delete_grace_secs    BIGINT   NOT NULL DEFAULT 604800,
    updated_at           BIGINT   NOT NULL
);

-- Production Protection and AI File Access are per server, set by an Owner
-- or Admin. Capabilities are what the agent declared from its own config.
ALTER TABLE agents ADD COLUMN production BIGINT NOT NULL DEFAULT 0 CHECK (production IN (0, 1));
ALTER TABLE agents ADD COLUMN file_access BIGINT NOT NULL DEFAULT 0 CHECK (file_access IN (0, 1));
ALTER TABLE agents ADD COLUMN capabilities TEXT;
-- The watched units' states from the latest heartbeat (JSON: unit -> state and
-- since when), and since when the fullest disk has been above 90 %.
ALTER TABLE agents ADD COLUMN unit_states TEXT;
ALTER TABLE agents ADD COLUMN units_failed_since BIGINT;
ALTER TABLE agents ADD COLUMN disk_high_since BIGINT;
ALTER TABLE agents ADD COLUMN disk_high_mount TEXT;
ALTER TABLE agents ADD COLUMN disk_high_pct DOUBLE PRECISION;

CREATE TABLE operations (
    id                   TEXT     PRIMARY KEY,
    org_id               BIGINT    NOT NULL REFERENCES orgs(id),
    kind                 TEXT     NOT NULL,
    args                 TEXT     NOT NULL,
    risk                 TEXT     NOT NULL CHECK (risk IN ('low', 'medium', 'high', 'destructive')),
    reason               TEXT     NOT NULL,
    origin               TEXT     NOT NULL CHECK (origin IN ('human', 'pilot')),
    proposed_by          BIGINT    REFERENCES users(id),
    proposer_label       TEXT     NOT NULL,
    evidence             TEXT,
    -- The AI Pilot's key for the condition it proposed for: one proposal per condition.
    condition_key        TEXT,
    idempotency_key      TEXT,
    state                TEXT     NOT NULL CHECK (state IN ('proposed', 'approved', 'rejected', 'expired', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled', 'halted')),
    self_approved        BIGINT   NOT NULL DEFAULT 0 CHECK (self_approved IN (0, 1)),
    max_parallel         BIGINT   NOT NULL DEFAULT 1,
    error_threshold      BIGINT   NOT NULL DEFAULT 0,
    created_at           BIGINT   NOT NULL,
    decided_at           BIGINT,
    approval_expires_at  BIGINT,
    finished_at          BIGINT,
    UNIQUE (org_id, idempotency_key),
    UNIQUE (org_id, condition_key)
);
CREATE INDEX operations_org_state ON operations(org_id, state);
CREATE INDEX operations_org_created ON operations(org_id, created_at);
-- The sweep: running operations whose approval ran out.
CREATE INDEX operations_state_expiry ON operations(state, approval_expires_at);

-- One row per target server, with the plan hash its approval is bound to.
CREATE TABLE operation_targets (
    operation_id  TEXT     NOT NULL REFERENCES operations(id),
    agent_id      TEXT     NOT NULL REFERENCES agents(id),
    position      BIGINT   NOT NULL,
    plan_hash     TEXT     NOT NULL,
    state         TEXT     NOT NULL CHECK (state IN ('waiting', 'dispatched', 'succeeded', 'failed', 'expired', 'cancelled', 'skipped')),
    command_id    TEXT     REFERENCES commands(id),
    PRIMARY KEY (operation_id, agent_id)
);
CREATE INDEX operation_targets_command ON operation_targets(command_id);

-- Approvals of an operation: who, with which role at the time, and why.
CREATE TABLE operation_approvals (
    operation_id  TEXT     NOT NULL REFERENCES operations(id),
    user_id       BIGINT    NOT NULL REFERENCES users(id),
    label         TEXT     NOT NULL,
    role          TEXT     NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    reason        TEXT     NOT NULL,
    at            BIGINT   NOT NULL,
    PRIMARY KEY (operation_id, user_id)
);

-- The history: every state an operation (or one of its targets) entered.
CREATE TABLE operation_events (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operation_id   TEXT     NOT NULL REFERENCES operations(id),
    agent_id       TEXT,
    state          TEXT     NOT NULL,
    actor_user_id  BIGINT,
    actor_label    TEXT     NOT NULL,
    reason         TEXT,
    at             BIGINT   NOT NULL
);
CREATE INDEX operation_events_operation ON operation_events(operation_id, id);

-- What a command carries for the agent to check: its origin, the plan hash
-- it recomputes, the approval record; and the operation it belongs to.
ALTER TABLE commands ADD COLUMN origin TEXT NOT NULL DEFAULT 'system' CHECK (origin IN ('system', 'human', 'pilot'));
ALTER TABLE commands ADD COLUMN plan_hash TEXT;
ALTER TABLE commands ADD COLUMN approval TEXT;
ALTER TABLE commands ADD COLUMN operation_id TEXT;
-- The sweep: commands whose deadline passed.
CREATE INDEX commands_state_expiry ON commands(state, expires_at);

-- What the AI Pilot found, once per condition: proposed (with the operation)
-- or refused (with the reason, e.g. Production Protection), so it never acts
-- twice on one open condition and the server page can say why.
CREATE TABLE pilot_findings (
    org_id         BIGINT     NOT NULL REFERENCES orgs(id),
    condition_key  TEXT     NOT NULL,
    agent_id       TEXT     NOT NULL REFERENCES agents(id),
    kind           TEXT     NOT NULL,
    outcome        TEXT     NOT NULL CHECK (outcome IN ('proposed', 'refused')),
    operation_id   TEXT,
    reason         TEXT     NOT NULL,
    evidence       TEXT     NOT NULL,
    at             BIGINT    NOT NULL,
    PRIMARY KEY (org_id, condition_key)
);
CREATE INDEX pilot_findings_agent ON pilot_findings(agent_id, at);
CREATE INDEX agents_disk_high ON agents(disk_high_since);
CREATE INDEX agents_units_failed ON agents(units_failed_since);

-- Live output of running commands, chunk by chunk, kept until the final result
-- replaces it in the view; and a cancellation the agent learns of from the
-- answer to its next chunk.
CREATE TABLE command_output (
    command_id  TEXT     NOT NULL REFERENCES commands(id),
    idx         BIGINT    NOT NULL,
    text        TEXT     NOT NULL,
    at          BIGINT    NOT NULL,
    PRIMARY KEY (command_id, idx)
);
ALTER TABLE commands ADD COLUMN cancel_requested_at BIGINT;

-- Safe delete: a server scheduled for deletion is read-only and its agent
-- refused until delete_after; restoring clears it. After it, a background job
-- purges its commands, output, metrics and findings and keeps the row as a
-- tombstone (purged_at) for the history and the audit log.
ALTER TABLE agents ADD COLUMN delete_after BIGINT;
ALTER TABLE agents ADD COLUMN purged_at BIGINT;
CREATE INDEX agents_delete_after ON agents(delete_after);

-- Labels (key=value) an Owner or Admin sets on servers; a fleet operation can
-- target every server matching a selector of them, resolved when proposed.
CREATE TABLE agent_labels (
    agent_id  TEXT  NOT NULL REFERENCES agents(id),
    key       TEXT  NOT NULL,
    value     TEXT  NOT NULL,
    PRIMARY KEY (agent_id, key)
);
CREATE INDEX agent_labels_key_value ON agent_labels(key, value);
ALTER TABLE operations ADD COLUMN selector TEXT;
