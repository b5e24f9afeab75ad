//! The organisation's servers as the dashboard shows them, and revocation.
//!
//! Derived state is computed from what it follows, never stored beside it:
//! "Pending key registration" is an open key-round command, so a round that
//! fails, expires or is cancelled leaves nothing behind.

use serde_json::json;
use sqlx::Row;

use super::{ManageAgents, OFFLINE_AFTER_SECS};
use crate::access::{Authorized, ReadOrg};
use crate::audit::{self, AuditAction, Event};
use crate::commands;
use crate::{
    AgentId, AgentView, CommandKind, CommandState, ControlError, FleetSummary, PqcState, Role,
    Timestamp,
};

#[derive(sqlx::FromRow)]
struct AgentRow {
    id: String,
    hostname: String,
    agent_version: String,
    last_seen_at: Option<i64>,
    revoked_at: Option<i64>,
    kem_key: Option<String>,
    keys_registered_at: i64,
    cert_serial: String,
    cert_fingerprint: String,
    cert_not_after: i64,
    kem_key_id: Option<String>,
    tls_group: String,
    last_cpu_pct: Option<f64>,
    last_mem_used: Option<i64>,
    last_mem_total: Option<i64>,
    production: i64,
    file_access: i64,
    capabilities: Option<String>,
    unit_states: Option<String>,
    disk_high_pct: Option<f64>,
    delete_after: Option<i64>,
    health_at: Option<i64>,
    started_at: Option<i64>,
    clock_skew_ms: Option<i64>,
    last_error: Option<String>,
    last_error_at: Option<i64>,
    pending_key_commands: i64,
}

/// One query for the whole list: the agents of the organisation, joined with
/// the count of their open key-round commands (grouped once, not a subquery
/// per agent). The latest metrics sample lives on the agent row.
pub(crate) fn view_query(filter: &str) -> String {
    format!(
        "SELECT a.id, a.hostname, a.agent_version, a.last_seen_at, a.revoked_at, a.kem_key, a.keys_registered_at, \
         a.cert_serial, a.cert_fingerprint, a.cert_not_after, a.kem_key_id, a.tls_group, \
         a.last_cpu_pct, a.last_mem_used, a.last_mem_total, a.production, a.file_access, a.capabilities, \
         a.unit_states, a.disk_high_pct, a.delete_after, \
         a.health_at, a.started_at, a.clock_skew_ms, a.last_error, a.last_error_at, \
         COALESCE(p.n, 0) AS pending_key_commands \
         FROM agents a LEFT JOIN ( \
             SELECT agent_id, COUNT(*) AS n FROM commands \
             WHERE org_id = $1 AND state IN ('{queued}', '{delivered}') AND kind IN ('{rotate}', '{register}') AND expires_at > $2 \
             GROUP BY agent_id \
         ) p ON p.agent_id = a.id \
         WHERE a.org_id = $1 AND a.purged_at IS NULL {filter} ORDER BY a.created_at DESC, a.id",
        queued = CommandState::Queued.as_str(),
        delivered = CommandState::Delivered.as_str(),
        rotate = CommandKind::RotateKeys.as_str(),
        register = CommandKind::RegisterPqcKey.as_str(),
    )
}

fn pqc_state(r: &AgentRow) -> PqcState {
    match (&r.kem_key, r.pending_key_commands > 0) {
        (_, true) if r.revoked_at.is_none() => PqcState::PendingKeyRegistration,
        (None, _) => PqcState::ClassicalFallback,
        (Some(_), _) => PqcState::PostQuantumActive,
    }
}

/// Viewers see a prefix of the certificate fingerprint: enough to tell
/// servers apart, not enough to present as an agent's identity anywhere.
fn shown_fingerprint(fp: String, role: Role) -> String {
    if role == Role::Viewer {
        format!("{}…", fp.chars().take(16).collect::<String>())
    } else {
        fp
    }
}

fn view_of(r: AgentRow, role: Role, now: Timestamp) -> AgentView {
    let pqc = pqc_state(&r);
    AgentView {
        online: r.revoked_at.is_none()
            && r.last_seen_at
                .is_some_and(|t| Timestamp(t).plus_secs(OFFLINE_AFTER_SECS) > now),
        revoked: r.revoked_at.is_some(),
        last_seen_at: r.last_seen_at.map(Timestamp),
        pqc,
        keys_registered_at: Timestamp(r.keys_registered_at),
        cert_fingerprint: shown_fingerprint(r.cert_fingerprint, role),
        cert_not_after: Timestamp(r.cert_not_after),
        production: r.production != 0,
        file_access: r.file_access != 0,
        // Stored only after checking; a row that no longer parses shows as undeclared.
        capabilities: r
            .capabilities
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok()),
        units: r
            .unit_states
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default(),
        disk_high_pct: r.disk_high_pct,
        delete_after: r.delete_after.map(Timestamp),
        labels: std::collections::BTreeMap::new(),
        cpu_pct: r.last_cpu_pct,
        mem_used: r.last_mem_used,
        mem_total: r.last_mem_total,
        health: match (r.health_at, r.started_at, r.clock_skew_ms) {
            (Some(at), Some(started), Some(skew)) => Some(crate::AgentHealthView {
                reported_at: Timestamp(at),
                started_at: Timestamp(started),
                clock_skew_ms: skew,
                last_error: r.last_error,
                last_error_at: r.last_error_at.map(Timestamp),
            }),
            _ => None,
        },
        id: AgentId(r.id),
        hostname: r.hostname,
        agent_version: r.agent_version,
        cert_serial: r.cert_serial,
        kem_key_id: r.kem_key_id,
        tls_group: r.tls_group,
    }
}

/// The organisation's servers, most recently enrolled first.
pub async fn list(
    auth: &Authorized<'_, ReadOrg>,
    now: Timestamp,
) -> Result<Vec<AgentView>, ControlError> {
    let rows: Vec<AgentRow> = sqlx::query_as(&view_query(""))
        .bind(auth.actor().org().0)
        .bind(now.0)
        .fetch_all(auth.store().pool())
        .await?;
    let role = auth.actor().role();
    let mut labels =
        crate::operations::settings::labels_of_org(auth.store(), auth.actor().org()).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let own = labels.remove(&r.id).unwrap_or_default();
            AgentView {
                labels: own,
                ..view_of(r, role, now)
            }
        })
        .collect())
}

/// One server of the caller's organisation.
pub async fn get(
    auth: &Authorized<'_, ReadOrg>,
    agent: &AgentId,
    now: Timestamp,
) -> Result<AgentView, ControlError> {
    let row: AgentRow = sqlx::query_as(&view_query("AND a.id = $3"))
        .bind(auth.actor().org().0)
        .bind(now.0)
        .bind(&agent.0)
        .fetch_optional(auth.store().pool())
        .await?
        .ok_or_else(|| ControlError::not_found("No such server."))?;
    let mut labels =
        crate::operations::settings::labels_of_org(auth.store(), auth.actor().org()).await?;
    let own = labels.remove(&row.id).unwrap_or_default();
    Ok(AgentView {
        labels: own,
        ..view_of(row, auth.actor().role(), now)
    })
}

/// Counts for the dashboard: servers online and offline (revoked ones left
/// out), and live registration tokens whose agent has not enrolled yet.
pub async fn summary(
    auth: &Authorized<'_, ReadOrg>,
    now: Timestamp,
) -> Result<FleetSummary, ControlError> {
    let org = auth.actor().org().0;
    let seen_since = now.plus_secs(-OFFLINE_AFTER_SECS).0;
    let row = sqlx::query(
        "SELECT \
         COALESCE(SUM(CASE WHEN last_seen_at > $2 THEN 1 ELSE 0 END), 0) AS online, \
         COALESCE(SUM(CASE WHEN last_seen_at IS NULL OR last_seen_at <= $2 THEN 1 ELSE 0 END), 0) AS offline \
         FROM agents WHERE org_id = $1 AND revoked_at IS NULL",
    )
    .bind(org)
    .bind(seen_since)
    .fetch_one(auth.store().pool())
    .await?;
    let awaiting: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM registration_tokens \
         WHERE org_id = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(org)
    .bind(now.0)
    .fetch_one(auth.store().pool())
    .await?;
    Ok(FleetSummary {
        online: row.try_get("online")?,
        offline: row.try_get("offline")?,
        awaiting_agent: awaiting,
    })
}

/// Revokes an agent: its certificate is refused from now on and its pending
/// commands are cancelled. The host may enrol again with a new token.
/// Called through `Delivery::revoke`, which also ends the agent's polls.
#[tracing::instrument(skip_all, err(level = "info"))]
pub(crate) async fn revoke(
    auth: &Authorized<'_, ManageAgents>,
    agent: &AgentId,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ManageAgents>(&mut tx).await?;
    let hostname: String = sqlx::query_scalar(
        "SELECT hostname FROM agents WHERE id = $1 AND org_id = $2 AND revoked_at IS NULL",
    )
    .bind(&agent.0)
    .bind(actor.org().0)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| ControlError::not_found("No such active server."))?;
    sqlx::query("UPDATE agents SET revoked_at = $1 WHERE id = $2")
        .bind(now.0)
        .bind(&agent.0)
        .execute(tx.conn())
        .await?;
    let cancelled = commands::cancel_open(&mut tx, agent, now).await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::AgentRevoked,
            format!("agent:{}", agent.0),
            json!({ "hostname": hostname, "commands_cancelled": cancelled }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
