//! The built-in AI Pilot: a rule engine over heartbeats and metrics that
//! proposes operations with evidence, as a principal of its own with no
//! approval rights. The audit log and the history name it "AI Pilot".
//!
//! Rules ([`evaluate`], run by the server every [`PILOT_INTERVAL_SECS`]):
//! - a watched unit in state `failed` -> `restart_service(unit)`, if the
//!   agent offers it for that unit;
//! - the fullest disk above 90 % for [`DISK_HIGH_MINUTES`] minutes ->
//!   `disk_usage()`, if the agent offers it;
//! - a watched backup profile without a success for
//!   [`crate::metrics::BACKUP_DUE_HOURS`] hours (its stamp file that old, or
//!   missing that long) -> `run_backup(profile)`, if the agent offers it.
//!
//! What it never does:
//! - propose when the organisation switched it off;
//! - act twice on one condition: each condition has a key (the unit and
//!   since when it failed, the mount and since when it is full, the profile
//!   and its last success), and what
//!   became of it (proposed, or refused with the reason) is recorded once in
//!   `pilot_findings`, in the same transaction as the proposal;
//! - propose for a production server: Production Protection refuses it, and
//!   the refusal is recorded (and audited) once, with its reason.

use serde_json::json;
use sqlx::Row;

use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::operations::{insert_proposal, settings, Parallel, Proposal, Proposer};
use crate::store::{Store, Tx};
use crate::{
    AgentId, BackupStates, Capabilities, ControlError, FindingView, OpKind, Operation, OperationId,
    OrgId, Origin, Timestamp, UnitStates,
};

/// How often the server runs the rules.
pub const PILOT_INTERVAL_SECS: u64 = 60;
/// How long a disk must stay above 90 % before the pilot proposes.
pub const DISK_HIGH_MINUTES: i64 = 15;
/// Servers with a failed watched unit (a range on the index, which SQLite
/// does not use for `IS NOT NULL`; the rules run over the fleet).
pub(crate) const FAILED_UNITS_SQL: &str =
    "SELECT id, org_id, unit_states, capabilities FROM agents \
     WHERE units_failed_since > 0 AND revoked_at IS NULL LIMIT $1";
/// Servers whose fullest disk has been above 90 % since before `$1`.
pub(crate) const DISK_HIGH_SQL: &str =
    "SELECT id, org_id, disk_high_since, disk_high_mount, disk_high_pct, capabilities \
     FROM agents WHERE disk_high_since <= $1 AND revoked_at IS NULL LIMIT $2";
/// Servers with a watched backup profile due (see
/// [`crate::metrics::BACKUP_DUE_HOURS`]) at `$1`.
pub(crate) const BACKUP_DUE_SQL: &str = "SELECT id, org_id, backups, capabilities FROM agents \
     WHERE backup_due_at <= $1 AND revoked_at IS NULL LIMIT $2";
/// Most findings one evaluation acts on (the rest wait for the next round).
const MAX_FINDINGS_PER_ROUND: i64 = 500;

/// What the pilot found and wants done about it.
#[derive(Clone, Debug)]
pub struct Finding {
    pub agent: AgentId,
    pub op: Operation,
    /// Why, for people: "nginx.service failed at 12:04 UTC".
    pub reason: String,
    /// The measurements behind it.
    pub evidence: String,
    /// Names the open condition; acted on once, ever.
    pub condition_key: String,
}

/// What became of a finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Proposed(OperationId),
    /// The condition was acted on before.
    AlreadyProposed,
    /// The organisation switched the pilot off.
    PilotOff,
    /// Refused, with the reason (Production Protection, a server that cannot
    /// run it); recorded and audited once.
    Refused(String),
}

async fn record(
    tx: &mut Tx,
    org: OrgId,
    f: &Finding,
    outcome: &str,
    operation: Option<&OperationId>,
    reason: &str,
    now: Timestamp,
) -> Result<bool, ControlError> {
    let inserted = sqlx::query(
        "INSERT INTO pilot_findings (org_id, condition_key, agent_id, kind, outcome, operation_id, reason, evidence, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(org.0)
    .bind(&f.condition_key)
    .bind(&f.agent.0)
    .bind(f.op.kind().as_str())
    .bind(outcome)
    .bind(operation.map(|o| o.0.as_str()))
    .bind(reason)
    .bind(&f.evidence)
    .bind(now.0)
    .execute(tx.conn())
    .await;
    match inserted {
        Ok(_) => Ok(true),
        // Another replica recorded the same condition first.
        Err(e) if crate::store::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Acts on one finding, as the AI Pilot.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn propose(
    store: &Store,
    org: OrgId,
    finding: Finding,
    now: Timestamp,
) -> Result<Outcome, ControlError> {
    let mut tx = store.begin().await?;
    if !settings::read_policy(&mut tx, org).await?.pilot_enabled {
        return Ok(Outcome::PilotOff);
    }
    let seen: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pilot_findings WHERE org_id = $1 AND condition_key = $2",
    )
    .bind(org.0)
    .bind(&finding.condition_key)
    .fetch_one(tx.conn())
    .await?;
    if seen > 0 {
        return Ok(Outcome::AlreadyProposed);
    }
    let who = Proposer {
        origin: Origin::Pilot,
        user: None,
        label: audit::PILOT_LABEL.into(),
        audit: AuditActor::pilot(),
        evidence: Some(finding.evidence.clone()),
        condition_key: Some(finding.condition_key.clone()),
    };
    let proposal = Proposal {
        op: finding.op.clone(),
        targets: vec![finding.agent.clone()],
        reason: finding.reason.clone(),
        idempotency_key: None,
        parallel: Parallel::Count(1),
        error_threshold: 0,
    };
    let why = match insert_proposal(&mut tx, org, &who, &proposal, now).await {
        Ok((id, _)) => {
            if !record(
                &mut tx,
                org,
                &finding,
                "proposed",
                Some(&id),
                &finding.reason,
                now,
            )
            .await?
            {
                return Ok(Outcome::AlreadyProposed);
            }
            tx.commit().await?;
            return Ok(Outcome::Proposed(id));
        }
        Err(ControlError::Forbidden(why))
        | Err(ControlError::Conflict(why))
        | Err(ControlError::Invalid(why)) => why,
        Err(e) => return Err(e),
    };
    drop(tx);
    // The proposal's writes are gone with its transaction; the refusal is
    // recorded on its own, once per condition.
    let mut tx = store.begin().await?;
    if !record(&mut tx, org, &finding, "refused", None, &why, now).await? {
        return Ok(Outcome::AlreadyProposed);
    }
    audit::append(
        &mut tx,
        &AuditActor::pilot(),
        Event::new(
            org,
            AuditAction::OperationRefused,
            format!("agent:{}", finding.agent.0),
            json!({
                "kind": finding.op.kind().as_str(),
                "condition": finding.condition_key,
                "reason": why,
            }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Outcome::Refused(why))
}

/// A JSON column of a row, `None` when NULL.
fn json_column<T: serde::de::DeserializeOwned>(
    r: &sqlx::any::AnyRow,
    column: &str,
) -> Result<Option<T>, ControlError> {
    r.try_get::<Option<String>, _>(column)?
        .map(|j| serde_json::from_str(&j).map_err(ControlError::internal))
        .transpose()
}

fn hhmm(t: Timestamp) -> String {
    let full = t.display_utc();
    // "YYYY-MM-DD HH:MM UTC" -> "HH:MM UTC"
    full.get(11..).unwrap_or(&full).to_string()
}

/// The findings of the rules as of `now`, with each agent's organisation.
pub async fn findings(
    store: &Store,
    now: Timestamp,
) -> Result<Vec<(OrgId, Finding)>, ControlError> {
    let mut out = Vec::new();
    let rows = sqlx::query(FAILED_UNITS_SQL)
        .bind(MAX_FINDINGS_PER_ROUND)
        .fetch_all(store.pool())
        .await?;
    for r in rows {
        let agent = AgentId(r.try_get("id")?);
        let Some(caps) = json_column::<Capabilities>(&r, "capabilities")? else {
            continue;
        };
        let Some(units) = json_column::<UnitStates>(&r, "unit_states")? else {
            continue;
        };
        for (unit, state) in units.iter().filter(|(_, s)| s.state == "failed") {
            let Ok(op) = Operation::parse("restart_service", &json!({ "unit": unit })) else {
                continue;
            };
            if caps.allows(&op).is_err() || !caps.watched_units.contains(unit) {
                continue;
            }
            out.push((
                OrgId(r.try_get("org_id")?),
                Finding {
                    condition_key: format!("unit:{}:{unit}:failed:{}", agent.0, state.since.0),
                    reason: format!("{unit} failed at {}", hhmm(state.since)),
                    evidence: format!(
                        "The agent reports the watched unit {unit} in state `failed` since {}.",
                        state.since.display_utc()
                    ),
                    agent: agent.clone(),
                    op,
                },
            ));
        }
    }
    let rows = sqlx::query(DISK_HIGH_SQL)
        .bind(now.plus_secs(-DISK_HIGH_MINUTES * 60).0)
        .bind(MAX_FINDINGS_PER_ROUND)
        .fetch_all(store.pool())
        .await?;
    for r in rows {
        let Some(caps) = json_column::<Capabilities>(&r, "capabilities")? else {
            continue;
        };
        if !caps.kinds.contains(&OpKind::DiskUsage) {
            continue;
        }
        let agent = AgentId(r.try_get("id")?);
        let since = Timestamp(r.try_get("disk_high_since")?);
        let mount: String = r
            .try_get::<Option<String>, _>("disk_high_mount")?
            .unwrap_or_default();
        let pct: f64 = r
            .try_get::<Option<f64>, _>("disk_high_pct")?
            .unwrap_or_default();
        let minutes = (now.0 - since.0) / 60_000;
        let Ok(op) = Operation::parse("disk_usage", &json!({})) else {
            continue;
        };
        out.push((
            OrgId(r.try_get("org_id")?),
            Finding {
                condition_key: format!("disk:{}:{mount}:{}", agent.0, since.0),
                reason: format!("disk {mount} at {pct:.0}% for {minutes} min"),
                evidence: format!(
                    "The fullest disk, {mount}, has been above 90% since {} (now {pct:.1}%).",
                    since.display_utc()
                ),
                agent,
                op,
            },
        ));
    }
    let rows = sqlx::query(BACKUP_DUE_SQL)
        .bind(now.0)
        .bind(MAX_FINDINGS_PER_ROUND)
        .fetch_all(store.pool())
        .await?;
    for r in rows {
        let Some(caps) = json_column::<Capabilities>(&r, "capabilities")? else {
            continue;
        };
        let Some(backups) = json_column::<BackupStates>(&r, "backups")? else {
            continue;
        };
        let agent = AgentId(r.try_get("id")?);
        let due_before = now.plus_secs(-crate::metrics::BACKUP_DUE_HOURS * 3600);
        for (profile, b) in backups.iter().filter(|(_, b)| b.since() <= due_before) {
            let Ok(op) = Operation::parse("run_backup", &json!({ "profile": profile })) else {
                continue;
            };
            if caps.allows(&op).is_err() {
                continue;
            }
            let hours = (now.0 - b.since().0) / 3_600_000;
            let (condition, evidence) = match b.last_success {
                Some(last) => (
                    last.0.to_string(),
                    format!(
                        "The agent reports the last success of backup profile `{profile}` (its stamp file) at {}.",
                        last.display_utc()
                    ),
                ),
                None => (
                    format!("none-since-{}", b.seen.0),
                    format!(
                        "The agent has reported no stamp file for backup profile `{profile}` since {}.",
                        b.seen.display_utc()
                    ),
                ),
            };
            out.push((
                OrgId(r.try_get("org_id")?),
                Finding {
                    condition_key: format!("backup:{}:{profile}:{condition}", agent.0),
                    reason: format!("no successful backup ({profile}) for {hours} h"),
                    evidence,
                    agent: agent.clone(),
                    op,
                },
            ));
        }
    }
    Ok(out)
}

/// One round of the rules: acts on every new finding. Returns what became of each.
pub async fn evaluate(store: &Store, now: Timestamp) -> Result<Vec<Outcome>, ControlError> {
    let mut outcomes = Vec::new();
    for (org, finding) in findings(store, now).await? {
        outcomes.push(propose(store, org, finding, now).await?);
    }
    Ok(outcomes)
}

/// What the pilot found on one server lately, newest first (the server page).
pub async fn recent_findings(
    auth: &crate::access::Authorized<'_, crate::access::ReadOrg>,
    agent: &AgentId,
    limit: i64,
) -> Result<Vec<FindingView>, ControlError> {
    let rows = sqlx::query(
        "SELECT at, kind, outcome, operation_id, reason, evidence FROM pilot_findings \
         WHERE agent_id = $1 AND org_id = $2 ORDER BY at DESC LIMIT $3",
    )
    .bind(&agent.0)
    .bind(auth.actor().org().0)
    .bind(limit.clamp(1, 50))
    .fetch_all(auth.store().pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(FindingView {
                at: Timestamp(r.try_get("at")?),
                kind: r
                    .try_get::<String, _>("kind")?
                    .parse()
                    .map_err(|e: crate::OpError| ControlError::Internal(e.to_string().into()))?,
                outcome: r.try_get("outcome")?,
                operation: r
                    .try_get::<Option<String>, _>("operation_id")?
                    .map(OperationId),
                reason: r.try_get("reason")?,
                evidence: r.try_get("evidence")?,
            })
        })
        .collect()
}
