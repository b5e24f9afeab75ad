//! What agents say about their own version and self-updates.
//!
//! An agent declares the release version it runs at every start, and once
//! what became of its last self-update: applied (the new version ran healthy
//! and was marked stable) or reverted (it did not stay up, and the previous
//! binary was restored). Both are recorded in one transaction with their audit
//! events. The agent repeats a report until the control plane took it, so a
//! report whose answer was lost may be recorded twice.

use serde_json::json;

use super::AgentSession;
use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::store::Store;
use crate::{ControlError, Timestamp};
use channel::api::{UpdateOutcome, UpdateReport};

/// Most characters kept of a revert's reason.
pub const MAX_REASON_CHARS: usize = 500;

fn version(v: &str, what: &str) -> Result<(), ControlError> {
    if v.len() > 32 || !channel::release::valid_version(v) {
        return Err(ControlError::invalid(format!(
            "{what}: a version is 1 to 32 of [0-9A-Za-z.+-] starting with a digit."
        )));
    }
    Ok(())
}

/// Records the version an agent runs and its update report, if any.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn record_version(
    store: &Store,
    session: &AgentSession,
    running: Option<&str>,
    report: Option<&UpdateReport>,
    now: Timestamp,
) -> Result<(), ControlError> {
    if let Some(v) = running {
        version(v, "agent_version")?;
    }
    if let Some(r) = report {
        version(&r.from_version, "update.from_version")?;
        version(&r.to_version, "update.to_version")?;
    }
    if running.is_none() && report.is_none() {
        return Ok(());
    }
    let mut tx = store.begin().await?;
    if let Some(v) = running {
        sqlx::query(
            "UPDATE agents SET agent_version = $1 WHERE id = $2 AND revoked_at IS NULL \
             AND agent_version <> $1",
        )
        .bind(v)
        .bind(&session.agent().0)
        .execute(tx.conn())
        .await?;
    }
    if let Some(r) = report {
        let action = match r.outcome {
            UpdateOutcome::Applied => AuditAction::SelfUpdateApplied,
            UpdateOutcome::Reverted => AuditAction::SelfUpdateReverted,
        };
        let reason: Option<String> = r
            .reason
            .as_deref()
            .map(|t| t.chars().take(MAX_REASON_CHARS).collect());
        audit::append(
            &mut tx,
            &AuditActor::agent(session.agent()),
            Event::new(
                session.org(),
                action,
                format!("agent:{}", session.agent().0),
                json!({
                    "from_version": r.from_version,
                    "to_version": r.to_version,
                    "reason": reason,
                }),
            ),
            now,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
