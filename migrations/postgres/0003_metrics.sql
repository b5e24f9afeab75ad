-- Agent metrics: raw samples (kept 48 h) and 5-minute averages (kept 90 days).

CREATE TABLE metrics_raw (
    agent_id     TEXT    NOT NULL REFERENCES agents(id),
    at           BIGINT  NOT NULL,
    cpu_pct      DOUBLE PRECISION NOT NULL,
    mem_used     BIGINT  NOT NULL,
    mem_total    BIGINT  NOT NULL,
    disk_used    BIGINT  NOT NULL,
    disk_total   BIGINT  NOT NULL,
    disks        TEXT    NOT NULL,
    net_rx_bps   DOUBLE PRECISION NOT NULL,
    net_tx_bps   DOUBLE PRECISION NOT NULL,
    load1        DOUBLE PRECISION NOT NULL,
    load5        DOUBLE PRECISION NOT NULL,
    load15       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (agent_id, at)
);

CREATE TABLE metrics_5m (
    agent_id     TEXT    NOT NULL REFERENCES agents(id),
    at           BIGINT  NOT NULL,
    cpu_pct      DOUBLE PRECISION NOT NULL,
    mem_used     BIGINT  NOT NULL,
    mem_total    BIGINT  NOT NULL,
    disk_used    BIGINT  NOT NULL,
    disk_total   BIGINT  NOT NULL,
    net_rx_bps   DOUBLE PRECISION NOT NULL,
    net_tx_bps   DOUBLE PRECISION NOT NULL,
    load1        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (agent_id, at)
);
