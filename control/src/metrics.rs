//! Agent metrics: batched writes, series for charts, and retention with
//! downsampling (raw samples 48 h, 5-minute averages 90 days).
//!
//! A batch is written in one transaction with multi-row inserts, never one
//! transaction per sample; a resent batch (after a lost reply) is harmless
//! because a sample is keyed by agent and time. The agent's health report
//! (uptime, clock, last error) comes with the batch and goes on the agent row
//! in the same transaction.

use channel::api::{AgentHealth, MetricSample};

use crate::access::{Authorized, ReadOrg};
use crate::agents::AgentSession;
use crate::store::Store;
use crate::{AgentId, ControlError, MetricPoint, Timestamp};

/// The newest sample, copied to the agent row in the batch's transaction.
pub(crate) const LATEST_SQL: &str = "UPDATE agents SET last_cpu_pct = $1, last_mem_used = $2, last_mem_total = $3, last_metrics_at = $4 \
     WHERE id = $5 AND (last_metrics_at IS NULL OR last_metrics_at <= $4)";

pub const RAW_RETENTION_SECS: i64 = 48 * 3600;
pub const ROLLUP_RETENTION_SECS: i64 = 90 * 86_400;
const BUCKET_MS: i64 = 300_000;
const ROWS_PER_INSERT: usize = 50;

fn valid(s: &MetricSample, now: Timestamp) -> bool {
    let finite = [
        s.cpu_pct,
        s.net_rx_bytes_per_sec,
        s.net_tx_bytes_per_sec,
        s.load[0],
        s.load[1],
        s.load[2],
    ]
    .iter()
    .all(|v| v.is_finite() && *v >= 0.0);
    finite
        && s.cpu_pct <= 100.0
        && s.mem_used_bytes <= s.mem_total_bytes
        && s.disks.len() <= 64
        && s.units.len() <= channel::api::MAX_SAMPLE_UNITS
        && s.backups.len() <= channel::api::MAX_SAMPLE_BACKUPS
        && s.disks
            .iter()
            .all(|d| d.used_bytes <= d.total_bytes && d.mount.len() <= 256)
        && s.at > now.plus_secs(-RAW_RETENTION_SECS).0
        && s.at <= now.plus_secs(300).0
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Stores a batch of samples from an agent. Returns how many were accepted;
/// samples outside the retention window or with impossible values are dropped.
pub async fn record(
    store: &Store,
    agent: &AgentSession,
    samples: &[MetricSample],
    now: Timestamp,
) -> Result<usize, ControlError> {
    record_batch(store, agent, samples, None, now).await
}

/// [`record`] with the agent's health report, written in the same
/// transaction ([`record_health`]). A health report that breaks its bounds
/// refuses the whole batch, before anything is written.
pub async fn record_batch(
    store: &Store,
    agent: &AgentSession,
    samples: &[MetricSample],
    health: Option<&AgentHealth>,
    now: Timestamp,
) -> Result<usize, ControlError> {
    if samples.len() > channel::api::MAX_BATCH_SAMPLES {
        return Err(ControlError::invalid(format!(
            "A batch carries at most {} samples.",
            channel::api::MAX_BATCH_SAMPLES
        )));
    }
    let health = health.map(|h| Health::of(h, now)).transpose()?;
    let good: Vec<&MetricSample> = samples.iter().filter(|s| valid(s, now)).collect();
    if good.is_empty() && health.is_none() {
        return Ok(0);
    }
    let mut tx = store.begin().await?;
    if let Some(h) = &health {
        record_health(&mut tx, agent, h, now).await?;
    }
    for chunk in good.chunks(ROWS_PER_INSERT) {
        let mut sql = String::from(
            "INSERT INTO metrics_raw (agent_id, at, cpu_pct, mem_used, mem_total, disk_used, disk_total, disks, net_rx_bps, net_tx_bps, load1, load5, load15) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 13;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            sql.push_str(
                &(1..=13)
                    .map(|k| format!("${}", b + k))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (agent_id, at) DO NOTHING");
        let mut q = sqlx::query(&sql);
        for s in chunk {
            let (used, total) = disk_totals(&s.disks);
            let disks = serde_json::to_string(&s.disks).map_err(ControlError::internal)?;
            q = q
                .bind(&agent.agent().0)
                .bind(s.at)
                .bind(s.cpu_pct)
                .bind(clamp_i64(s.mem_used_bytes))
                .bind(clamp_i64(s.mem_total_bytes))
                .bind(clamp_i64(used))
                .bind(clamp_i64(total))
                .bind(disks)
                .bind(s.net_rx_bytes_per_sec)
                .bind(s.net_tx_bytes_per_sec)
                .bind(s.load[0])
                .bind(s.load[1])
                .bind(s.load[2]);
        }
        q.execute(tx.conn()).await?;
    }
    // The newest sample also goes on the agent row, for the servers list.
    if let Some(latest) = good.iter().max_by_key(|s| s.at) {
        let newest = sqlx::query(LATEST_SQL)
            .bind(latest.cpu_pct)
            .bind(clamp_i64(latest.mem_used_bytes))
            .bind(clamp_i64(latest.mem_total_bytes))
            .bind(latest.at)
            .bind(&agent.agent().0)
            .execute(tx.conn())
            .await?
            .rows_affected()
            > 0;
        if newest {
            record_conditions(&mut tx, agent, latest).await?;
        }
    }
    tx.commit().await?;
    Ok(good.len())
}

/// Longest uptime an agent may claim (a century): anything longer is not a clock.
const MAX_UPTIME_SECS: u64 = 100 * 365 * 86_400;

/// A health report checked and placed on the control plane's clock.
struct Health {
    started_at: i64,
    clock_skew_ms: i64,
    last_error: Option<(i64, String)>,
}

impl Health {
    fn of(h: &AgentHealth, now: Timestamp) -> Result<Self, ControlError> {
        if h.uptime_secs > MAX_UPTIME_SECS {
            return Err(ControlError::invalid(
                "health.uptime_secs: at most a century.",
            ));
        }
        let ms = |secs: u64| i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000);
        let last_error = match &h.last_error {
            None => None,
            Some(e) if e.message.chars().count() > channel::api::MAX_ERROR_CHARS => {
                return Err(ControlError::invalid(format!(
                    "health.last_error.message: at most {} characters.",
                    channel::api::MAX_ERROR_CHARS
                )))
            }
            Some(e) if e.age_secs > h.uptime_secs => {
                return Err(ControlError::invalid(
                    "health.last_error.age_secs: older than the agent's uptime.",
                ))
            }
            Some(e) => {
                let clean: String = e
                    .message
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                Some((now.0.saturating_sub(ms(e.age_secs)), clean))
            }
        };
        Ok(Self {
            started_at: now.0.saturating_sub(ms(h.uptime_secs)),
            clock_skew_ms: h.sent_at.saturating_sub(now.0),
            last_error,
        })
    }
}

/// Puts an agent's health on its row: when it started and how far its clock
/// is from this one (both as of receipt), and its last error. A report older
/// than the one stored (batches racing) changes nothing.
async fn record_health(
    tx: &mut crate::store::Tx,
    agent: &AgentSession,
    h: &Health,
    now: Timestamp,
) -> Result<(), ControlError> {
    let (error_at, error) = match &h.last_error {
        Some((at, message)) => (Some(*at), Some(message.as_str())),
        None => (None, None),
    };
    sqlx::query(
        "UPDATE agents SET health_at = $1, started_at = $2, clock_skew_ms = $3, last_error = $4, last_error_at = $5 \
         WHERE id = $6 AND (health_at IS NULL OR health_at <= $1)",
    )
    .bind(now.0)
    .bind(h.started_at)
    .bind(h.clock_skew_ms)
    .bind(error)
    .bind(error_at)
    .bind(&agent.agent().0)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Disk usage above which the AI Pilot starts counting.
pub const DISK_HIGH_PCT: f64 = 90.0;
/// Hours without a successful backup after which the AI Pilot proposes one.
pub const BACKUP_DUE_HOURS: i64 = 26;

/// Keeps what the AI Pilot reads from the newest sample on the agent row:
/// each watched unit's state and since when it has been in it, and since
/// when the fullest disk has been above [`DISK_HIGH_PCT`], and each watched
/// backup profile's last success with when the stalest becomes due
/// ([`BACKUP_DUE_HOURS`] later). Units, states or profiles that break the
/// catalogue's patterns are ignored. Writes only on change.
async fn record_conditions(
    tx: &mut crate::store::Tx,
    agent: &AgentSession,
    latest: &MetricSample,
) -> Result<(), ControlError> {
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT unit_states, disk_high_since, disk_high_mount, backups FROM agents WHERE id = $1",
    )
    .bind(&agent.agent().0)
    .fetch_one(tx.conn())
    .await?;
    let old: crate::UnitStates = row
        .try_get::<Option<String>, _>("unit_states")?
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default();
    let mut units = crate::UnitStates::new();
    for u in &latest.units {
        let state_ok = !u.state.is_empty()
            && u.state.len() <= 32
            && u.state.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
        if channel::ops::check_unit(&u.unit).is_err() || !state_ok {
            continue;
        }
        let since = match old.get(&u.unit) {
            Some(prev) if prev.state == u.state => prev.since,
            _ => Timestamp(latest.at),
        };
        units.insert(
            u.unit.clone(),
            crate::UnitState {
                state: u.state.clone(),
                since,
            },
        );
    }
    if units != old {
        let json = (!units.is_empty())
            .then(|| serde_json::to_string(&units))
            .transpose()
            .map_err(ControlError::internal)?;
        let failed_since = units
            .values()
            .filter(|u| u.state == "failed")
            .map(|u| u.since.0)
            .min();
        sqlx::query("UPDATE agents SET unit_states = $1, units_failed_since = $2 WHERE id = $3")
            .bind(json)
            .bind(failed_since)
            .bind(&agent.agent().0)
            .execute(tx.conn())
            .await?;
    }
    let old_backups: crate::BackupStates = row
        .try_get::<Option<String>, _>("backups")?
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default();
    let mut backups = crate::BackupStates::new();
    for b in &latest.backups {
        if channel::ops::check_profile(&b.profile).is_err() {
            continue;
        }
        // A stamp from the future (a skewed clock) counts as of the sample.
        let last_success = b.last_success_at.map(|t| Timestamp(t.min(latest.at)));
        let seen = old_backups
            .get(&b.profile)
            .map_or(Timestamp(latest.at), |o| o.seen);
        backups.insert(b.profile.clone(), crate::BackupState { last_success, seen });
    }
    if backups != old_backups {
        let json = (!backups.is_empty())
            .then(|| serde_json::to_string(&backups))
            .transpose()
            .map_err(ControlError::internal)?;
        let due = backups
            .values()
            .map(|b| b.since().plus_secs(BACKUP_DUE_HOURS * 3600).0)
            .min();
        sqlx::query("UPDATE agents SET backups = $1, backup_due_at = $2 WHERE id = $3")
            .bind(json)
            .bind(due)
            .bind(&agent.agent().0)
            .execute(tx.conn())
            .await?;
    }
    let fullest = latest
        .disks
        .iter()
        .filter(|d| d.total_bytes > 0)
        .map(|d| (d.used_bytes as f64 * 100.0 / d.total_bytes as f64, &d.mount))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let since: Option<i64> = row.try_get("disk_high_since")?;
    let mount: Option<String> = row.try_get("disk_high_mount")?;
    match fullest {
        Some((pct, m)) if pct > DISK_HIGH_PCT => {
            let same = since.is_some() && mount.as_deref() == Some(m.as_str());
            sqlx::query(
                "UPDATE agents SET disk_high_since = $1, disk_high_mount = $2, disk_high_pct = $3 WHERE id = $4",
            )
            .bind(if same { since } else { Some(latest.at) })
            .bind(m)
            .bind(pct)
            .bind(&agent.agent().0)
            .execute(tx.conn())
            .await?;
        }
        _ if since.is_some() => {
            sqlx::query(
                "UPDATE agents SET disk_high_since = NULL, disk_high_mount = NULL, disk_high_pct = NULL WHERE id = $1",
            )
            .bind(&agent.agent().0)
            .execute(tx.conn())
            .await?;
        }
        _ => {}
    }
    Ok(())
}

/// Used and total bytes over all disks, saturating instead of overflowing
/// (an agent may report any u64).
fn disk_totals(disks: &[channel::api::DiskUsage]) -> (u64, u64) {
    disks.iter().fold((0u64, 0u64), |(u, t), d| {
        (
            u.saturating_add(d.used_bytes),
            t.saturating_add(d.total_bytes),
        )
    })
}

/// One chart point as the series queries name their columns (`t` is the
/// sample time or the bucket start).
#[derive(sqlx::FromRow)]
struct PointRow {
    t: i64,
    cpu_pct: f64,
    mem_used: i64,
    mem_total: i64,
    disk_used: i64,
    disk_total: i64,
    net_rx_bps: f64,
    net_tx_bps: f64,
    load1: f64,
}

impl From<PointRow> for MetricPoint {
    fn from(r: PointRow) -> Self {
        MetricPoint {
            at: Timestamp(r.t),
            cpu_pct: r.cpu_pct,
            mem_used: r.mem_used,
            mem_total: r.mem_total,
            disk_used: r.disk_used,
            disk_total: r.disk_total,
            net_rx_bps: r.net_rx_bps,
            net_tx_bps: r.net_tx_bps,
            load1: r.load1,
        }
    }
}

/// The averaged columns of a 5-minute bucket, named as the table names them.
const AVERAGES: &str = "CAST(AVG(cpu_pct) AS DOUBLE PRECISION) AS cpu_pct, CAST(AVG(mem_used) AS BIGINT) AS mem_used, \
     CAST(MAX(mem_total) AS BIGINT) AS mem_total, CAST(AVG(disk_used) AS BIGINT) AS disk_used, \
     CAST(MAX(disk_total) AS BIGINT) AS disk_total, CAST(AVG(net_rx_bps) AS DOUBLE PRECISION) AS net_rx_bps, \
     CAST(AVG(net_tx_bps) AS DOUBLE PRECISION) AS net_tx_bps, CAST(AVG(load1) AS DOUBLE PRECISION) AS load1";

/// The series for a chart of the last `range_secs`: raw samples for an hour
/// or less, 5-minute averages beyond.
pub async fn series(
    auth: &Authorized<'_, ReadOrg>,
    agent: &AgentId,
    range_secs: i64,
    now: Timestamp,
) -> Result<Vec<MetricPoint>, ControlError> {
    let store = auth.store();
    let owned: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE id = $1 AND org_id = $2")
            .bind(&agent.0)
            .bind(auth.actor().org().0)
            .fetch_one(store.pool())
            .await?;
    if owned == 0 {
        return Err(ControlError::not_found("No such server."));
    }
    let since = now
        .plus_secs(-range_secs.clamp(60, ROLLUP_RETENTION_SECS))
        .0;
    let rows: Vec<PointRow> = if range_secs <= 3600 {
        sqlx::query_as(
            "SELECT at AS t, cpu_pct, mem_used, mem_total, disk_used, disk_total, net_rx_bps, net_tx_bps, load1 \
             FROM metrics_raw WHERE agent_id = $1 AND at > $2 ORDER BY at",
        )
        .bind(&agent.0)
        .bind(since)
        .fetch_all(store.pool())
        .await?
    } else if range_secs <= RAW_RETENTION_SECS {
        sqlx::query_as(&format!(
            "SELECT (at / {BUCKET_MS}) * {BUCKET_MS} AS t, {AVERAGES} FROM metrics_raw \
             WHERE agent_id = $1 AND at > $2 GROUP BY t ORDER BY t"
        ))
        .bind(&agent.0)
        .bind(since)
        .fetch_all(store.pool())
        .await?
    } else {
        sqlx::query_as(
            "SELECT at AS t, cpu_pct, mem_used, mem_total, disk_used, disk_total, net_rx_bps, net_tx_bps, load1 \
             FROM metrics_5m WHERE agent_id = $1 AND at > $2 ORDER BY at",
        )
        .bind(&agent.0)
        .bind(since)
        .fetch_all(store.pool())
        .await?
    };
    Ok(rows.into_iter().map(MetricPoint::from).collect())
}

/// Rolls complete 5-minute buckets of raw samples into averages and applies
/// retention. Idempotent; run every few minutes.
pub async fn maintain(store: &Store, now: Timestamp) -> Result<(), ControlError> {
    let horizon = now.0 - now.0.rem_euclid(BUCKET_MS);
    let mut tx = store.begin().await?;
    sqlx::query(&format!(
        "INSERT INTO metrics_5m (agent_id, at, cpu_pct, mem_used, mem_total, disk_used, disk_total, net_rx_bps, net_tx_bps, load1) \
         SELECT agent_id, (at / {BUCKET_MS}) * {BUCKET_MS} AS bucket, {AVERAGES} FROM metrics_raw \
         WHERE at < $1 AND at >= $2 GROUP BY agent_id, bucket \
         ON CONFLICT (agent_id, at) DO UPDATE SET cpu_pct = excluded.cpu_pct, mem_used = excluded.mem_used, \
         mem_total = excluded.mem_total, disk_used = excluded.disk_used, disk_total = excluded.disk_total, \
         net_rx_bps = excluded.net_rx_bps, net_tx_bps = excluded.net_tx_bps, load1 = excluded.load1"
    ))
    .bind(horizon)
    .bind(now.plus_secs(-RAW_RETENTION_SECS).0)
    .execute(tx.conn())
    .await?;
    sqlx::query("DELETE FROM metrics_raw WHERE at < $1")
        .bind(now.plus_secs(-RAW_RETENTION_SECS).0)
        .execute(tx.conn())
        .await?;
    sqlx::query("DELETE FROM metrics_5m WHERE at < $1")
        .bind(now.plus_secs(-ROLLUP_RETENTION_SECS).0)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel::api::DiskUsage;

    #[test]
    fn disk_totals_saturate_instead_of_overflowing() {
        let disk = |used, total| DiskUsage {
            mount: "/".into(),
            used_bytes: used,
            total_bytes: total,
        };
        assert_eq!(disk_totals(&[disk(1, 2), disk(3, 4)]), (4, 6));
        assert_eq!(
            disk_totals(&[disk(u64::MAX, u64::MAX), disk(u64::MAX, u64::MAX)]),
            (u64::MAX, u64::MAX)
        );
    }
}
