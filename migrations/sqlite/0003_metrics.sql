-- Agent metrics: raw samples (kept 48 h) and 5-minute averages (kept 90 days).

CREATE TABLE metrics_raw (
    agent_id     TEXT    NOT NULL REFERENCES agents(id),
    at           INTEGER NOT NULL,
    cpu_pct      REAL    NOT NULL,
    mem_used     INTEGER NOT NULL,
    mem_total    INTEGER NOT NULL,
    disk_used    INTEGER NOT NULL,
    disk_total   INTEGER NOT NULL,
    disks        TEXT    NOT NULL,
    net_rx_bps   REAL    NOT NULL,
    net_tx_bps   REAL    NOT NULL,
    load1        REAL    NOT NULL,
    load5        REAL    NOT NULL,
    load15       REAL    NOT NULL,
    PRIMARY KEY (agent_id, at)
);

CREATE TABLE metrics_5m (
    agent_id     TEXT    NOT NULL REFERENCES agents(id),
    at           INTEGER NOT NULL,
    cpu_pct      REAL    NOT NULL,
    mem_used     INTEGER NOT NULL,
    mem_total    INTEGER NOT NULL,
    disk_used    INTEGER NOT NULL,
    disk_total   INTEGER NOT NULL,
    net_rx_bps   REAL    NOT NULL,
    net_tx_bps   REAL    NOT NULL,
    load1        REAL    NOT NULL,
    PRIMARY KEY (agent_id, at)
);
