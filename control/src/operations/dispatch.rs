//! From an approved operation to commands, target by target.
//!
//! [`advance`] runs inside the transaction that changed the operation
//! (approval, a target's result, a resume, the sweep) and sends as many
//! waiting targets as the rate controls allow:
//! - **Concurrency** grows from 1: one target first, then twice as many in
//!   flight after each success, up to the operation's `max_parallel` (0:
//!   every target at once, no slow start).
//! - **Error threshold**: once more targets failed than it tolerates, the
//!   targets not yet sent are skipped and the operation is halted.
//! - **Expiry**: after the approval's `approval_expires_at` nothing more is
//!   sent, and a command its agent has not taken is expired, never delivered late.
//! - **Production Protection**, second refusal: a pilot's operation is not
//!   sent to a server that became production after the proposal.
//! - **Plan hash**: each target's stored hash is recomputed from the stored
//!   operation before sending; a mismatch fails the target.
//!
//! It returns the agents to wake once the transaction commits.

use serde_json::json;
use sqlx::Row;

use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::commands::{self, NewCommand};
use crate::operations::{history, lock_operation, read_target, set_state, OpRow};
use crate::store::{Store, Tx, BATCH_ROWS};
use crate::{
    AgentId, CommandId, CommandKind, CommandState, ControlError, Operation, OperationId,
    OperationState, OrgId, Origin, TargetState, Timestamp,
};

/// How long after its approval ran out a command its agent took may still
/// report, before the sweep gives up on it (the agent's own task timeout is
/// shorter).
pub const DELIVERED_GRACE_SECS: i64 = 3600;

struct Target {
    agent: AgentId,
    state: TargetState,
    plan_hash: String,
}

async fn targets(tx: &mut Tx, id: &OperationId) -> Result<Vec<Target>, ControlError> {
    let rows = sqlx::query(
        "SELECT agent_id, state, plan_hash FROM operation_targets WHERE operation_id = $1 ORDER BY position",
    )
    .bind(&id.0)
    .fetch_all(tx.conn())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Target {
                agent: AgentId(r.try_get("agent_id")?),
                state: r.try_get::<String, _>("state")?.parse().map_err(
                    |e: crate::UnknownValue| ControlError::Internal(e.to_string().into()),
                )?,
                plan_hash: r.try_get("plan_hash")?,
            })
        })
        .collect()
}

async fn set_target(
    tx: &mut Tx,
    id: &OperationId,
    agent: &AgentId,
    state: TargetState,
    command: Option<&CommandId>,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<(), ControlError> {
    sqlx::query(
        "UPDATE operation_targets SET state = $1, command_id = COALESCE($2, command_id) \
         WHERE operation_id = $3 AND agent_id = $4",
    )
    .bind(state.as_str())
    .bind(command.map(|c| c.0.as_str()))
    .bind(&id.0)
    .bind(&agent.0)
    .execute(tx.conn())
    .await?;
    history(
        tx,
        id,
        Some(agent),
        state.as_str(),
        &AuditActor::system(),
        reason,
        now,
    )
    .await
}

/// The approval record the operation's commands carry.
async fn approval_record(
    tx: &mut Tx,
    id: &OperationId,
    op: &OpRow,
    expires_at: Timestamp,
) -> Result<channel::ops::ApprovalRecord, ControlError> {
    let rows = sqlx::query(
        "SELECT user_id, role, at FROM operation_approvals WHERE operation_id = $1 ORDER BY at",
    )
    .bind(&id.0)
    .fetch_all(tx.conn())
    .await?;
    let approvers = rows
        .iter()
        .map(|r| {
            Ok(channel::ops::Approver {
                user_id: r.try_get("user_id")?,
                role: r.try_get("role")?,
                at: r.try_get("at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(channel::ops::ApprovalRecord {
        operation_id: id.0.clone(),
        origin: op.origin,
        proposed_by: op.proposed_by.map(|u| u.0),
        self_approved: op.self_approved,
        approvers,
        expires_at: expires_at.0,
    })
}

/// Sends what the rate controls allow and settles the operation's state.
/// Returns the agents that got a command.
pub(crate) async fn advance(
    tx: &mut Tx,
    org: OrgId,
    id: &OperationId,
    now: Timestamp,
) -> Result<Vec<AgentId>, ControlError> {
    let op = lock_operation(tx, org, id).await?;
    if !matches!(
        op.state,
        OperationState::Approved | OperationState::Dispatched | OperationState::Running
    ) {
        settle(tx, id, &op, now).await?;
        return Ok(Vec::new());
    }
    let expires = op
        .approval_expires_at
        .ok_or_else(|| ControlError::Internal("an approved operation has no expiry".into()))?;
    let operation = Operation::parse(
        op.kind.as_str(),
        &serde_json::from_str(&op.args).map_err(ControlError::internal)?,
    )
    .map_err(|e| ControlError::Internal(format!("stored operation: {e}").into()))?;
    let mut wake = Vec::new();
    loop {
        let all = targets(tx, id).await?;
        let count = |s: TargetState| all.iter().filter(|t| t.state == s).count() as i64;
        let (failed, succeeded, in_flight) = (
            count(TargetState::Failed),
            count(TargetState::Succeeded),
            count(TargetState::Dispatched),
        );
        let waiting: Vec<&Target> = all
            .iter()
            .filter(|t| t.state == TargetState::Waiting)
            .collect();
        if waiting.is_empty() {
            break;
        }
        if failed > op.error_threshold {
            let why = format!(
                "{failed} target(s) failed, more than the error threshold of {}",
                op.error_threshold
            );
            for t in &waiting {
                set_target(
                    tx,
                    id,
                    &t.agent,
                    TargetState::Skipped,
                    None,
                    Some(&why),
                    now,
                )
                .await?;
            }
            set_state(tx, id, OperationState::Halted, now).await?;
            history(
                tx,
                id,
                None,
                "halted",
                &AuditActor::system(),
                Some(&why),
                now,
            )
            .await?;
            audit::append(
                tx,
                &AuditActor::system(),
                Event::new(
                    org,
                    AuditAction::OperationHalted,
                    format!("operation:{}", id.0),
                    json!({ "by": "error_threshold", "failed": failed }),
                ),
                now,
            )
            .await?;
            break;
        }
        if now >= expires {
            for t in &waiting {
                set_target(
                    tx,
                    id,
                    &t.agent,
                    TargetState::Expired,
                    None,
                    Some("The approval expired before this server was sent the operation."),
                    now,
                )
                .await?;
            }
            break;
        }
        // Slow start: 1, then doubling with each success, up to max_parallel;
        // 0 means every target at once.
        let allowed = if op.max_parallel == 0 {
            i64::MAX
        } else {
            op.max_parallel.min(1i64 << succeeded.min(30))
        };
        let slots = (allowed - in_flight).max(0) as usize;
        if slots == 0 {
            break;
        }
        let record = approval_record(tx, id, &op, expires).await?;
        let mut progressed = false;
        // Recorded together after the wave (one update, one history insert).
        let mut sent: Vec<(AgentId, CommandId)> = Vec::new();
        for t in waiting.into_iter().take(slots) {
            progressed = true;
            let refusal = match read_target(tx, org, &t.agent).await {
                Err(ControlError::NotFound(_)) => Some("The server was revoked or deleted."),
                Err(e) => return Err(e),
                Ok(row) if op.origin == Origin::Pilot && row.production => Some(
                    "Production Protection: the server is production; the AI Pilot's operations never run there.",
                ),
                Ok(_) if channel::ops::plan_hash(&t.agent.0, &operation) != t.plan_hash => {
                    Some("The plan no longer matches its approval (plan hash mismatch).")
                }
                Ok(_) => None,
            };
            if let Some(why) = refusal {
                set_target(tx, id, &t.agent, TargetState::Failed, None, Some(why), now).await?;
                continue;
            }
            let queued = commands::insert(
                tx,
                &AuditActor::system(),
                NewCommand {
                    org,
                    agent: &t.agent,
                    kind: CommandKind::Operation(op.kind),
                    args: operation.args(),
                    created_by: record.approvers.last().map(|a| crate::UserId(a.user_id)),
                    ttl_secs: 0,
                    expires_at: Some(expires),
                    origin: record.origin,
                    operation: Some(commands::OperationLink {
                        operation: id.clone(),
                        plan_hash: t.plan_hash.clone(),
                        approval: serde_json::to_string(&record).map_err(ControlError::internal)?,
                    }),
                },
                now,
            )
            .await;
            match queued {
                Ok(command) => {
                    sent.push((t.agent.clone(), command));
                    wake.push(t.agent.clone());
                }
                Err(ControlError::Conflict(why)) | Err(ControlError::NotFound(why)) => {
                    set_target(tx, id, &t.agent, TargetState::Failed, None, Some(&why), now)
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
        targets_dispatched(tx, id, &sent, now).await?;
        if !progressed {
            break;
        }
    }
    if !wake.is_empty() && op.state == OperationState::Approved {
        set_state(tx, id, OperationState::Dispatched, now).await?;
    }
    let op = lock_operation(tx, org, id).await?;
    settle(tx, id, &op, now).await?;
    Ok(wake)
}

/// After a resume: sends again, within the approval's lifetime.
pub(crate) async fn advance_resumed(
    tx: &mut Tx,
    org: OrgId,
    id: &OperationId,
    now: Timestamp,
) -> Result<Vec<AgentId>, ControlError> {
    advance(tx, org, id, now).await
}

/// Once no target is waiting or in flight, gives the operation its final
/// state: succeeded when every target did; expired when none ran; halted
/// stays halted; cancelled stays cancelled; failed otherwise.
async fn settle(
    tx: &mut Tx,
    id: &OperationId,
    op: &OpRow,
    now: Timestamp,
) -> Result<(), ControlError> {
    if op.state.is_final() || op.state == OperationState::Proposed {
        return Ok(());
    }
    let all = targets(tx, id).await?;
    if all.iter().any(|t| !t.state.is_final()) {
        return Ok(());
    }
    let final_state = if op.state == OperationState::Halted {
        // Already recorded; only the finish time is missing.
        sqlx::query("UPDATE operations SET finished_at = COALESCE(finished_at, $1) WHERE id = $2")
            .bind(now.0)
            .bind(&id.0)
            .execute(tx.conn())
            .await?;
        return Ok(());
    } else if all.iter().all(|t| t.state == TargetState::Succeeded) {
        OperationState::Succeeded
    } else if all.iter().all(|t| t.state == TargetState::Expired) {
        OperationState::Expired
    } else {
        OperationState::Failed
    };
    set_state(tx, id, final_state, now).await?;
    history(
        tx,
        id,
        None,
        final_state.as_str(),
        &AuditActor::system(),
        None,
        now,
    )
    .await?;
    let action = if final_state == OperationState::Expired {
        AuditAction::OperationExpired
    } else {
        AuditAction::OperationFinished
    };
    audit::append(
        tx,
        &AuditActor::system(),
        Event::new(
            op.org,
            action,
            format!("operation:{}", id.0),
            json!({ "state": final_state.as_str() }),
        ),
        now,
    )
    .await?;
    Ok(())
}

/// Cancels the commands of an operation that no agent has taken yet.
pub(crate) async fn cancel_queued(
    tx: &mut Tx,
    id: &OperationId,
    now: Timestamp,
) -> Result<u64, ControlError> {
    Ok(sqlx::query(
        "UPDATE commands SET state = $1, finished_at = $2 WHERE operation_id = $3 AND state = $4",
    )
    .bind(CommandState::Cancelled.as_str())
    .bind(now.0)
    .bind(&id.0)
    .bind(CommandState::Queued.as_str())
    .execute(tx.conn())
    .await?
    .rows_affected())
}

/// Asks the agents running an operation's commands to stop: each learns it
/// from the answer to its next output chunk (every few seconds) and kills
/// the task. Returns how many commands were running.
pub(crate) async fn request_cancel(
    tx: &mut Tx,
    id: &OperationId,
    now: Timestamp,
) -> Result<u64, ControlError> {
    Ok(sqlx::query(
        "UPDATE commands SET cancel_requested_at = COALESCE(cancel_requested_at, $1) \
         WHERE operation_id = $2 AND state = $3",
    )
    .bind(now.0)
    .bind(&id.0)
    .bind(CommandState::Delivered.as_str())
    .execute(tx.conn())
    .await?
    .rows_affected())
}

/// Operations' commands reached their agents: each target's history records
/// it running, and an operation still dispatched becomes running.
pub(crate) async fn mark_running(
    tx: &mut Tx,
    started: &[(OperationId, AgentId)],
    now: Timestamp,
) -> Result<(), ControlError> {
    let steps: Vec<TargetStep<'_>> = started
        .iter()
        .map(|(operation, agent)| TargetStep {
            operation,
            agent,
            state: OperationState::Running.as_str(),
        })
        .collect();
    system_history(tx, &steps, None, now).await?;
    for part in started.chunks(BATCH_ROWS) {
        let mut ops: Vec<&str> = part.iter().map(|(op, _)| op.0.as_str()).collect();
        ops.sort_unstable();
        ops.dedup();
        let sql = format!(
            "UPDATE operations SET state = $1 WHERE state = $2 AND id IN ({})",
            crate::store::list(ops.len(), 3)
        );
        let mut q = sqlx::query(&sql)
            .bind(OperationState::Running.as_str())
            .bind(OperationState::Dispatched.as_str());
        for op in ops {
            q = q.bind(op);
        }
        q.execute(tx.conn()).await?;
    }
    Ok(())
}

/// A command of an operation finished (its result arrived, or the sweep gave
/// up on it): records the target's outcome and advances the operation.
/// Returns the agents to wake.
pub(crate) async fn command_finished(
    tx: &mut Tx,
    command: &str,
    outcome: TargetState,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<Vec<AgentId>, ControlError> {
    let row = sqlx::query(
        "SELECT t.operation_id AS operation_id, t.agent_id AS agent_id, o.org_id AS org_id, t.state AS state \
         FROM operation_targets t JOIN operations o ON o.id = t.operation_id WHERE t.command_id = $1",
    )
    .bind(command)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else {
        return Ok(Vec::new());
    };
    if row.try_get::<String, _>("state")? != TargetState::Dispatched.as_str() {
        return Ok(Vec::new());
    }
    let finished = Finished {
        operation: OperationId(row.try_get("operation_id")?),
        org: OrgId(row.try_get("org_id")?),
        agent: AgentId(row.try_get("agent_id")?),
        command: command.to_string(),
        outcome,
    };
    targets_finished(tx, &[finished], reason, now).await
}

/// A dispatched target whose command finished, and how.
pub(crate) struct Finished {
    pub operation: OperationId,
    pub org: OrgId,
    pub agent: AgentId,
    pub command: String,
    pub outcome: TargetState,
}

/// Records dispatched targets' outcomes (with their history entries) and
/// advances the operations that need it. Returns the agents to wake.
pub(crate) async fn targets_finished(
    tx: &mut Tx,
    finished: &[Finished],
    reason: Option<&str>,
    now: Timestamp,
) -> Result<Vec<AgentId>, ControlError> {
    if finished.is_empty() {
        return Ok(Vec::new());
    }
    for outcome in [
        TargetState::Succeeded,
        TargetState::Failed,
        TargetState::Cancelled,
        TargetState::Expired,
    ] {
        let commands: Vec<&str> = finished
            .iter()
            .filter(|f| f.outcome == outcome)
            .map(|f| f.command.as_str())
            .collect();
        for part in commands.chunks(BATCH_ROWS) {
            let sql = format!(
                "UPDATE operation_targets SET state = $1 WHERE command_id IN ({})",
                crate::store::list(part.len(), 2)
            );
            let mut q = sqlx::query(&sql).bind(outcome.as_str());
            for c in part {
                q = q.bind(*c);
            }
            q.execute(tx.conn()).await?;
        }
    }
    let steps: Vec<TargetStep<'_>> = finished
        .iter()
        .map(|f| TargetStep {
            operation: &f.operation,
            agent: &f.agent,
            state: f.outcome.as_str(),
        })
        .collect();
    system_history(tx, &steps, reason, now).await?;
    // Most results change nothing else: targets are still in flight and none
    // waits (a fan-out sends every target at once). Only an operation with a
    // target waiting for a slot, or none left in flight, is read whole.
    let mut operations: Vec<(&OperationId, OrgId)> = Vec::new();
    for f in finished {
        if !operations.iter().any(|(id, _)| *id == &f.operation) {
            operations.push((&f.operation, f.org));
        }
    }
    let mut wake = Vec::new();
    for part in operations.chunks(BATCH_ROWS) {
        let sql = format!(
            "SELECT operation_id, \
             COALESCE(SUM(CASE WHEN state = $1 THEN 1 ELSE 0 END), 0) AS waiting, \
             COALESCE(SUM(CASE WHEN state = $2 THEN 1 ELSE 0 END), 0) AS in_flight \
             FROM operation_targets WHERE operation_id IN ({}) GROUP BY operation_id",
            crate::store::list(part.len(), 3)
        );
        let mut q = sqlx::query_as::<_, (String, i64, i64)>(&sql)
            .bind(TargetState::Waiting.as_str())
            .bind(TargetState::Dispatched.as_str());
        for (id, _) in part {
            q = q.bind(id.0.as_str());
        }
        let counts = q.fetch_all(tx.conn()).await?;
        for (id, org) in part {
            let (waiting, in_flight) = counts
                .iter()
                .find(|(op, _, _)| *op == id.0)
                .map_or((0, 0), |(_, w, f)| (*w, *f));
            if waiting == 0 && in_flight > 0 {
                continue;
            }
            wake.extend(advance(tx, *org, id, now).await?);
        }
    }
    Ok(wake)
}

/// Targets whose commands were queued: dispatched, each with its command,
/// and their history entries.
async fn targets_dispatched(
    tx: &mut Tx,
    id: &OperationId,
    sent: &[(AgentId, CommandId)],
    now: Timestamp,
) -> Result<(), ControlError> {
    for part in sent.chunks(BATCH_ROWS) {
        let sql = format!(
            "UPDATE operation_targets SET state = $1, command_id = v.column2 \
             FROM (VALUES {}) AS v \
             WHERE operation_targets.operation_id = $2 AND operation_targets.agent_id = v.column1",
            crate::store::placeholders_from(part.len(), 2, 3)
        );
        let mut q = sqlx::query(&sql)
            .bind(TargetState::Dispatched.as_str())
            .bind(id.0.as_str());
        for (agent, command) in part {
            q = q.bind(agent.0.as_str()).bind(command.0.as_str());
        }
        q.execute(tx.conn()).await?;
    }
    let steps: Vec<TargetStep<'_>> = sent
        .iter()
        .map(|(agent, _)| TargetStep {
            operation: id,
            agent,
            state: TargetState::Dispatched.as_str(),
        })
        .collect();
    system_history(tx, &steps, None, now).await
}

/// A target's step in the history, as [`system_history`] writes it.
pub(crate) struct TargetStep<'a> {
    pub operation: &'a OperationId,
    pub agent: &'a AgentId,
    pub state: &'a str,
}

/// The control plane's own history entries for targets (a command taken, a
/// result recorded), by the system actor, in multi-row inserts.
pub(crate) async fn system_history(
    tx: &mut Tx,
    steps: &[TargetStep<'_>],
    reason: Option<&str>,
    now: Timestamp,
) -> Result<(), ControlError> {
    let system = AuditActor::system();
    for part in steps.chunks(BATCH_ROWS) {
        let sql = format!(
            "INSERT INTO operation_events (operation_id, agent_id, state, actor_user_id, actor_label, reason, at) VALUES {}",
            crate::store::placeholders(part.len(), 7)
        );
        let mut q = sqlx::query(&sql);
        for step in part {
            q = q
                .bind(step.operation.0.as_str())
                .bind(step.agent.0.as_str())
                .bind(step.state)
                .bind(system.user.map(|u| u.0))
                .bind(system.label.as_str())
                .bind(reason)
                .bind(now.0);
        }
        q.execute(tx.conn()).await?;
    }
    Ok(())
}

/// Operation commands in one state whose deadline passed (the sweep).
pub(crate) const SWEEP_COMMANDS_SQL: &str =
    "SELECT id FROM commands WHERE state = $1 AND expires_at <= $2 \
     AND operation_id IS NOT NULL LIMIT 500";
/// Running operations whose approval ran out (the sweep).
pub(crate) const SWEEP_OPERATIONS_SQL: &str =
    "SELECT id FROM operations WHERE state IN ($1, $2, $3) \
     AND approval_expires_at <= $4 LIMIT 500";

/// The background sweep: expires operation commands their agents never took
/// by the approval's deadline, gives up on taken ones whose result is
/// [`DELIVERED_GRACE_SECS`] overdue, and expires targets still waiting when
/// the approval ran out. Returns the agents to wake (a later wave).
pub async fn sweep(store: &Store, now: Timestamp) -> Result<Vec<AgentId>, ControlError> {
    let mut overdue: Vec<(String, bool)> = Vec::new();
    for (state, before) in [
        (CommandState::Queued, now),
        (
            CommandState::Delivered,
            now.plus_secs(-DELIVERED_GRACE_SECS),
        ),
    ] {
        let ids: Vec<String> = sqlx::query_scalar(SWEEP_COMMANDS_SQL)
            .bind(state.as_str())
            .bind(before.0)
            .fetch_all(store.pool())
            .await?;
        overdue.extend(
            ids.into_iter()
                .map(|id| (id, state == CommandState::Delivered)),
        );
    }
    let stale: Vec<String> = sqlx::query_scalar(SWEEP_OPERATIONS_SQL)
        .bind(OperationState::Approved.as_str())
        .bind(OperationState::Dispatched.as_str())
        .bind(OperationState::Running.as_str())
        .bind(now.0)
        .fetch_all(store.pool())
        .await?;
    if overdue.is_empty() && stale.is_empty() {
        return Ok(Vec::new());
    }
    let mut wake = Vec::new();
    let mut tx = store.begin().await?;
    for (command, was_delivered) in overdue {
        let changed = sqlx::query(
            "UPDATE commands SET state = $1, finished_at = $2 WHERE id = $3 AND state IN ($4, $5)",
        )
        .bind(CommandState::Expired.as_str())
        .bind(now.0)
        .bind(&command)
        .bind(CommandState::Queued.as_str())
        .bind(CommandState::Delivered.as_str())
        .execute(tx.conn())
        .await?
        .rows_affected();
        if changed == 0 {
            continue;
        }
        let why = if was_delivered {
            "No result from the agent: it took the command but never reported."
        } else {
            "The approval expired before the agent took the command (the server was offline)."
        };
        wake.extend(
            command_finished(&mut tx, &command, TargetState::Expired, Some(why), now).await?,
        );
    }
    for id in stale {
        let org: i64 = sqlx::query_scalar("SELECT org_id FROM operations WHERE id = $1")
            .bind(&id)
            .fetch_one(tx.conn())
            .await?;
        wake.extend(advance(&mut tx, OrgId(org), &OperationId(id), now).await?);
    }
    tx.commit().await?;
    Ok(wake)
}
