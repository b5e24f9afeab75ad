//! Safe delete: a server is deleted only after a grace period, during which
//! it can be restored.
//!
//! - [`schedule`] (Owner, Admin) needs the server's name typed exactly, then
//!   sets `delete_after` to now plus the organisation's `delete_grace_secs`
//!   (default 7 days), cancels its open commands and audits it. Meanwhile the
//!   server is read-only (no proposals, no commands) and its agent is refused.
//! - [`restore`] (Owner, Admin) clears it before the grace period ends.
//! - [`purge_due`] (the server's background job) deletes, once the period
//!   is over, the server's commands, their live output, its metrics and the
//!   pilot's findings; the agent row stays as a tombstone (`purged_at`,
//!   revoked) so operation history and audit events, which are kept forever,
//!   still name it.

use serde_json::json;
use sqlx::Row;

use super::ManageAgents;
use crate::access::Authorized;
use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::commands;
use crate::operations::settings;
use crate::store::Store;
use crate::{AgentId, ControlError, Timestamp};

/// Schedules a server's deletion after the grace period. `typed_name` must be
/// its hostname, exactly.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn schedule(
    auth: &Authorized<'_, ManageAgents>,
    agent: &AgentId,
    typed_name: &str,
    now: Timestamp,
) -> Result<Timestamp, ControlError> {
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ManageAgents>(&mut tx).await?;
    let row = sqlx::query(
        "SELECT hostname, delete_after FROM agents WHERE id = $1 AND org_id = $2 AND purged_at IS NULL",
    )
    .bind(&agent.0)
    .bind(actor.org().0)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| ControlError::not_found("No such server."))?;
    let hostname: String = row.try_get("hostname")?;
    if row.try_get::<Option<i64>, _>("delete_after")?.is_some() {
        return Err(ControlError::conflict(
            "This server is already scheduled for deletion.",
        ));
    }
    if typed_name.trim() != hostname {
        return Err(ControlError::invalid(
            "name: type the server's name exactly to confirm the deletion.",
        ));
    }
    let grace = settings::read_policy(&mut tx, actor.org())
        .await?
        .delete_grace_secs;
    let after = now.plus_secs(grace);
    sqlx::query("UPDATE agents SET delete_after = $1 WHERE id = $2")
        .bind(after.0)
        .bind(&agent.0)
        .execute(tx.conn())
        .await?;
    let cancelled = commands::cancel_open(&mut tx, agent, now).await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::ServerDeletionScheduled,
            format!("agent:{}", agent.0),
            json!({ "hostname": hostname, "delete_after": after.0, "commands_cancelled": cancelled }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Restores a server scheduled for deletion, within the grace period.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn restore(
    auth: &Authorized<'_, ManageAgents>,
    agent: &AgentId,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ManageAgents>(&mut tx).await?;
    let after: Option<i64> = sqlx::query_scalar(
        "SELECT delete_after FROM agents WHERE id = $1 AND org_id = $2 AND purged_at IS NULL",
    )
    .bind(&agent.0)
    .bind(actor.org().0)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| ControlError::not_found("No such server (it may have been purged)."))?;
    match after {
        None => {
            return Err(ControlError::conflict(
                "This server is not scheduled for deletion.",
            ))
        }
        Some(t) if Timestamp(t) <= now => {
            return Err(ControlError::conflict(
                "The grace period is over: the server is being purged.",
            ))
        }
        Some(_) => {}
    }
    sqlx::query("UPDATE agents SET delete_after = NULL WHERE id = $1")
        .bind(&agent.0)
        .execute(tx.conn())
        .await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::ServerRestored,
            format!("agent:{}", agent.0),
            json!({}),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Servers whose grace period ended (the purge job; a range on the index).
pub(crate) const DUE_SQL: &str =
    "SELECT id, org_id FROM agents WHERE delete_after <= $1 AND purged_at IS NULL LIMIT 100";

/// Purges every server whose grace period ended, one transaction each.
/// Returns how many.
pub async fn purge_due(store: &Store, now: Timestamp) -> Result<usize, ControlError> {
    let due = sqlx::query(DUE_SQL)
        .bind(now.0)
        .fetch_all(store.pool())
        .await?;
    let mut purged = 0;
    for row in due {
        let agent: String = row.try_get("id")?;
        let org = crate::OrgId(row.try_get("org_id")?);
        let mut tx = store.begin().await?;
        for sql in [
            "UPDATE operation_targets SET command_id = NULL WHERE agent_id = $1",
            "DELETE FROM command_output WHERE command_id IN (SELECT id FROM commands WHERE agent_id = $1)",
            "DELETE FROM commands WHERE agent_id = $1",
            "DELETE FROM metrics_raw WHERE agent_id = $1",
            "DELETE FROM metrics_5m WHERE agent_id = $1",
            "DELETE FROM pilot_findings WHERE agent_id = $1",
        ] {
            sqlx::query(sql).bind(&agent).execute(tx.conn()).await?;
        }
        sqlx::query(
            "UPDATE agents SET purged_at = $1, revoked_at = COALESCE(revoked_at, $1), unit_states = NULL, \
             units_failed_since = NULL, disk_high_since = NULL, capabilities = NULL WHERE id = $2",
        )
        .bind(now.0)
        .bind(&agent)
        .execute(tx.conn())
        .await?;
        audit::append(
            &mut tx,
            &AuditActor::system(),
            Event::new(
                org,
                AuditAction::ServerPurged,
                format!("agent:{agent}"),
                json!({}),
            ),
            now,
        )
        .await?;
        tx.commit().await?;
        purged += 1;
    }
    Ok(purged)
}
