//! The durable command queue, typed: [`CommandKind`], [`CommandState`] and
//! [`CommandId`] in Rust, their `as_str` names in SQL, rows mapped by column
//! name.
//!
//! Rules kept here:
//! - **Sequence.** Each command takes the agent's next sequence number when it
//!   is queued, in the same transaction, and commands are delivered in that
//!   order. A command is only queued if it can be delivered: a kind that must
//!   travel sealed is refused for an agent without a KEM key (and an agent
//!   never loses its KEM key), so no command is ever held back behind a later
//!   one that the agent's replay guard would then make unrunnable.
//! - **Deadline.** A command is deliverable until `expires_at` (an
//!   operation's: its approval's expiry); an open command past it is expired
//!   (the views derive it at once, the queue records it on the agent's next
//!   poll, the operations sweep for agents that never poll again). A result
//!   that arrives for a delivered command after its deadline still records the
//!   outcome: the agent did run it.
//! - **Operations.** A command with an `operation_id` reports to its
//!   operation's target in the same transaction ([`crate::operations::dispatch`]).
//! - **Results** are accepted only from the agent the command was for, for the
//!   sequence number it was queued with.

use serde_json::json;
use sqlx::Row;

use crate::access::{Authorized, ReadOrg};
use crate::agents::AgentSession;
use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::crypto::random_token;
use crate::operations::dispatch;
use crate::store::{Store, Tx};
use crate::{
    AgentId, CommandId, CommandKind, CommandOutcome, CommandState, CommandView, ControlError,
    OperationId, OrgId, Origin, TargetState, Timestamp, UserId,
};

/// The long-poll's check on every wake-up.
pub(crate) const ANY_OPEN_SQL: &str =
    "SELECT seq FROM commands WHERE agent_id = $1 AND state IN ($2, $3) LIMIT 1";

/// Longest result text kept per command.
pub const MAX_RESULT_CHARS: usize = 64 * 1024;
/// Most live output kept per running command (bytes of text); later chunks
/// still answer the cancellation question but their text is dropped.
pub const MAX_LIVE_OUTPUT_BYTES: i64 = 256 * 1024;
/// Highest chunk index accepted.
pub const MAX_CHUNKS: u32 = 100_000;

/// A command waiting for or delivered to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedCommand {
    pub id: CommandId,
    pub seq: u64,
    pub kind: CommandKind,
    pub args: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub origin: Origin,
    /// For an operation's command: its plan hash and approval record (JSON).
    pub plan_hash: Option<String>,
    pub approval: Option<String>,
}

#[derive(sqlx::FromRow)]
struct QueuedRow {
    id: String,
    seq: i64,
    kind: String,
    args: String,
    state: String,
    created_at: i64,
    expires_at: i64,
    origin: String,
    plan_hash: Option<String>,
    approval: Option<String>,
    operation_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ViewRow {
    id: String,
    kind: String,
    state: String,
    created_at: i64,
    expires_at: i64,
    finished_at: Option<i64>,
}

pub(crate) fn parse_kind(s: &str) -> Result<CommandKind, ControlError> {
    s.parse()
        .map_err(|e| ControlError::Internal(format!("stored {e}").into()))
}

pub(crate) fn parse_state(s: &str) -> Result<CommandState, ControlError> {
    s.parse()
        .map_err(|e| ControlError::Internal(format!("stored {e}").into()))
}

/// The state as of `now`: an open command past its deadline is expired.
fn effective_state(state: CommandState, expires_at: Timestamp, now: Timestamp) -> CommandState {
    if state.is_open() && expires_at <= now {
        CommandState::Expired
    } else {
        state
    }
}

impl QueuedRow {
    fn into_command(self) -> Result<QueuedCommand, ControlError> {
        Ok(QueuedCommand {
            id: CommandId(self.id),
            seq: u64::try_from(self.seq)
                .map_err(|_| ControlError::Internal("a stored sequence is negative".into()))?,
            kind: parse_kind(&self.kind)?,
            args: self.args,
            created_at: Timestamp(self.created_at),
            expires_at: Timestamp(self.expires_at),
            origin: self
                .origin
                .parse()
                .map_err(|e: crate::OpError| ControlError::Internal(e.to_string().into()))?,
            plan_hash: self.plan_hash,
            approval: self.approval,
        })
    }
}

/// What ties an operation's command to its operation.
pub(crate) struct OperationLink {
    pub operation: OperationId,
    pub plan_hash: String,
    /// The approval record, JSON, as the command header carries it.
    pub approval: String,
}

/// A command to queue, inside the caller's write transaction.
pub(crate) struct NewCommand<'a> {
    pub org: OrgId,
    pub agent: &'a AgentId,
    pub kind: CommandKind,
    pub args: serde_json::Value,
    pub created_by: Option<UserId>,
    pub ttl_secs: i64,
    /// Overrides `ttl_secs` (an operation's command expires with its approval).
    pub expires_at: Option<Timestamp>,
    pub origin: Origin,
    pub operation: Option<OperationLink>,
}

/// Queues a command inside `tx`: takes the agent's next sequence number and
/// refuses what the agent could not receive. Audits `command.queued`.
pub(crate) async fn insert(
    tx: &mut Tx,
    actor: &AuditActor,
    c: NewCommand<'_>,
    now: Timestamp,
) -> Result<CommandId, ControlError> {
    // One atomic step takes the sequence number and bumps it, so concurrent
    // enqueues for one agent never share a number (the row is locked on PostgreSQL).
    let row = sqlx::query(
        "UPDATE agents SET next_seq = next_seq + 1 WHERE id = $1 AND org_id = $2 AND revoked_at IS NULL AND delete_after IS NULL \
         RETURNING next_seq - 1 AS seq, kem_key",
    )
    .bind(&c.agent.0)
    .bind(c.org.0)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| ControlError::not_found("No such active server."))?;
    let seq: i64 = row.try_get("seq")?;
    let has_kem = row.try_get::<Option<String>, _>("kem_key")?.is_some();
    if !has_kem && !channel::api::kinds::may_travel_unsealed(c.kind.as_str()) {
        return Err(ControlError::conflict(
            "This server has no post-quantum key yet, and this command must travel encrypted. Activate post-quantum encryption first.",
        ));
    }
    let id = CommandId(format!("cmd_{}", random_token(12)));
    let link = c.operation.as_ref();
    sqlx::query(
        "INSERT INTO commands (id, org_id, agent_id, seq, kind, args, state, created_by, created_at, expires_at, \
         origin, plan_hash, approval, operation_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&id.0)
    .bind(c.org.0)
    .bind(&c.agent.0)
    .bind(seq)
    .bind(c.kind.as_str())
    .bind(c.args.to_string())
    .bind(CommandState::Queued.as_str())
    .bind(c.created_by.map(|u| u.0))
    .bind(now.0)
    .bind(c.expires_at.unwrap_or(now.plus_secs(c.ttl_secs)).0)
    .bind(c.origin.as_str())
    .bind(link.map(|l| l.plan_hash.as_str()))
    .bind(link.map(|l| l.approval.as_str()))
    .bind(link.map(|l| l.operation.0.as_str()))
    .execute(tx.conn())
    .await?;
    audit::append(
        tx,
        actor,
        Event::new(
            c.org,
            AuditAction::CommandQueued,
            format!("agent:{}", c.agent.0),
            json!({ "command": id.0, "kind": c.kind.as_str(), "seq": seq }),
        ),
        now,
    )
    .await?;
    Ok(id)
}

/// Cancels every open command of an agent inside `tx`. Returns how many.
pub(crate) async fn cancel_open(
    tx: &mut Tx,
    agent: &AgentId,
    now: Timestamp,
) -> Result<u64, ControlError> {
    Ok(sqlx::query(
        "UPDATE commands SET state = $1, finished_at = $2 WHERE agent_id = $3 AND state IN ($4, $5)",
    )
    .bind(CommandState::Cancelled.as_str())
    .bind(now.0)
    .bind(&agent.0)
    .bind(CommandState::Queued.as_str())
    .bind(CommandState::Delivered.as_str())
    .execute(tx.conn())
    .await?
    .rows_affected())
}

/// What a poll takes from the queue.
#[derive(Debug, Default)]
pub struct Taken {
    /// Deliverable commands in sequence order.
    pub commands: Vec<QueuedCommand>,
    /// Agents that got a command of a later wave (an operation's command here
    /// expired): wake them once the transaction has committed.
    pub wake: Vec<AgentId>,
}

/// Commands for the agent that are queued or delivered but not finished
/// (at-least-once: a command stays deliverable until the agent reports it),
/// in sequence order, and only until their deadline: a queued command past
/// it is marked expired instead (an operation's target with it), and so is a
/// delivered one, except that an operation's delivered command is left to
/// the sweep's grace period (the agent may still be running it). Marks the
/// rest delivered; an operation's target whose command is delivered for the
/// first time is recorded as running.
pub async fn take_pending(
    store: &Store,
    session: &AgentSession,
    now: Timestamp,
) -> Result<Taken, ControlError> {
    let agent = session.agent();
    let (queued, delivered) = (
        CommandState::Queued.as_str(),
        CommandState::Delivered.as_str(),
    );
    // The long-poll calls this on every wake-up: a plain read first, so an
    // agent with nothing queued never takes the write lock.
    let any = sqlx::query(ANY_OPEN_SQL)
        .bind(&agent.0)
        .bind(queued)
        .bind(delivered)
        .fetch_optional(store.pool())
        .await?;
    if any.is_none() {
        return Ok(Taken::default());
    }
    let mut tx = store.begin().await?;
    let mut wake = Vec::new();
    let past: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT id, operation_id FROM commands WHERE agent_id = $1 AND expires_at <= $2 \
         AND (state = $3 OR (state = $4 AND operation_id IS NULL))",
    )
    .bind(&agent.0)
    .bind(now.0)
    .bind(queued)
    .bind(delivered)
    .fetch_all(tx.conn())
    .await?;
    for (id, operation) in &past {
        sqlx::query("UPDATE commands SET state = $1, finished_at = $2 WHERE id = $3")
            .bind(CommandState::Expired.as_str())
            .bind(now.0)
            .bind(id)
            .execute(tx.conn())
            .await?;
        if operation.is_some() {
            wake.extend(
                dispatch::command_finished(
                    &mut tx,
                    id,
                    TargetState::Expired,
                    Some("The approval expired before the agent took the command."),
                    now,
                )
                .await?,
            );
        }
    }
    let rows: Vec<QueuedRow> = sqlx::query_as(
        "SELECT id, seq, kind, args, state, created_at, expires_at, origin, plan_hash, approval, operation_id \
         FROM commands WHERE agent_id = $1 AND state IN ($2, $3) AND expires_at > $4 ORDER BY seq",
    )
    .bind(&agent.0)
    .bind(queued)
    .bind(delivered)
    .bind(now.0)
    .fetch_all(tx.conn())
    .await?;
    let mut commands = Vec::with_capacity(rows.len());
    for row in rows {
        if row.state == queued {
            if let Some(op) = &row.operation_id {
                dispatch::mark_running(&mut tx, &OperationId(op.clone()), agent, now).await?;
            }
        }
        commands.push(row.into_command()?);
    }
    if !commands.is_empty() {
        sqlx::query(
            "UPDATE commands SET state = $1, delivered_at = COALESCE(delivered_at, $2) WHERE agent_id = $3 AND state = $4 AND expires_at > $2",
        )
        .bind(delivered)
        .bind(now.0)
        .bind(&agent.0)
        .bind(queued)
        .execute(tx.conn())
        .await?;
    }
    tx.commit().await?;
    Ok(Taken { commands, wake })
}

/// Part of a running command's output, as the agent sent it.
pub struct Chunk<'a> {
    pub command: &'a str,
    pub sequence: u64,
    pub index: u32,
    pub text: &'a str,
}

/// Keeps a live output chunk of one of the agent's own running commands
/// (once per index, within [`MAX_LIVE_OUTPUT_BYTES`]) and answers whether the
/// command was cancelled meanwhile. An empty chunk is a keep-alive: nothing
/// is written.
pub async fn append_output(
    store: &Store,
    session: &AgentSession,
    chunk: Chunk<'_>,
    now: Timestamp,
) -> Result<bool, ControlError> {
    let agent = session.agent();
    let row = sqlx::query(
        "SELECT state, seq, cancel_requested_at FROM commands WHERE id = $1 AND agent_id = $2",
    )
    .bind(chunk.command)
    .bind(&agent.0)
    .fetch_optional(store.pool())
    .await?
    .ok_or_else(|| ControlError::not_found("No such command for this agent."))?;
    if u64::try_from(row.try_get::<i64, _>("seq")?).ok() != Some(chunk.sequence) {
        return Err(ControlError::invalid(
            "The chunk's sequence number does not match its command.",
        ));
    }
    if chunk.index > MAX_CHUNKS {
        return Err(ControlError::invalid(
            "Too many output chunks for one command.",
        ));
    }
    let state = parse_state(&row.try_get::<String, _>("state")?)?;
    let cancel = state == CommandState::Cancelled
        || row
            .try_get::<Option<i64>, _>("cancel_requested_at")?
            .is_some();
    if chunk.text.is_empty() || state != CommandState::Delivered {
        return Ok(cancel);
    }
    let mut tx = store.begin().await?;
    let kept: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(LENGTH(text)), 0) FROM command_output WHERE command_id = $1",
    )
    .bind(chunk.command)
    .fetch_one(tx.conn())
    .await?;
    if kept + chunk.text.len() as i64 <= MAX_LIVE_OUTPUT_BYTES {
        sqlx::query(
            "INSERT INTO command_output (command_id, idx, text, at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (command_id, idx) DO NOTHING",
        )
        .bind(chunk.command)
        .bind(i64::from(chunk.index))
        .bind(chunk.text)
        .bind(now.0)
        .execute(tx.conn())
        .await?;
    }
    tx.commit().await?;
    Ok(cancel)
}

/// A command's output for people: the agent's final report once it
/// finished, the live output so far while it runs, `None` before any.
pub async fn output(
    auth: &Authorized<'_, ReadOrg>,
    command: &CommandId,
    now: Timestamp,
) -> Result<Option<String>, ControlError> {
    let outcome = command_state(auth, command, now).await?;
    if outcome.result.is_some() || !outcome.state.is_open() {
        return Ok(outcome.result);
    }
    let parts: Vec<String> =
        sqlx::query_scalar("SELECT text FROM command_output WHERE command_id = $1 ORDER BY idx")
            .bind(&command.0)
            .fetch_all(auth.store().pool())
            .await?;
    Ok((!parts.is_empty()).then(|| parts.concat()))
}

/// An agent's report on one of its commands.
pub struct Report<'a> {
    pub command: &'a str,
    pub sequence: u64,
    pub succeeded: bool,
    pub text: &'a str,
}

/// Records an agent's result for one of its own commands, and for an
/// operation's command the target's outcome (which may send the next wave).
/// A second report for a finished command is ignored (the agent may retry
/// after a lost reply). Returns the agents to wake after the commit.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn finish(
    store: &Store,
    session: &AgentSession,
    report: Report<'_>,
    now: Timestamp,
) -> Result<Vec<AgentId>, ControlError> {
    let agent = session.agent();
    let mut tx = store.begin().await?;
    let row = sqlx::query(
        "SELECT kind, state, seq, delivered_at, operation_id, cancel_requested_at FROM commands WHERE id = $1 AND agent_id = $2",
    )
    .bind(report.command)
    .bind(&agent.0)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| ControlError::not_found("No such command for this agent."))?;
    let kind = parse_kind(&row.try_get::<String, _>("kind")?)?;
    let state = parse_state(&row.try_get::<String, _>("state")?)?;
    let seq: i64 = row.try_get("seq")?;
    let delivered: Option<i64> = row.try_get("delivered_at")?;
    if u64::try_from(seq).ok() != Some(report.sequence) {
        return Err(ControlError::invalid(
            "The result's sequence number does not match its command.",
        ));
    }
    let open = state.is_open() || (state == CommandState::Expired && delivered.is_some());
    if !open {
        return Ok(Vec::new());
    }
    let operation: Option<String> = row.try_get("operation_id")?;
    let cancelled = row
        .try_get::<Option<i64>, _>("cancel_requested_at")?
        .is_some();
    let new_state = if report.succeeded {
        CommandState::Succeeded
    } else {
        CommandState::Failed
    };
    sqlx::query("UPDATE commands SET state = $1, finished_at = $2, result = $3 WHERE id = $4")
        .bind(new_state.as_str())
        .bind(now.0)
        .bind(
            report
                .text
                .chars()
                .take(MAX_RESULT_CHARS)
                .collect::<String>(),
        )
        .bind(report.command)
        .execute(tx.conn())
        .await?;
    audit::append(
        &mut tx,
        &AuditActor::agent(agent),
        Event::new(
            session.org(),
            AuditAction::CommandFinished,
            format!("agent:{}", agent.0),
            json!({ "command": report.command, "kind": kind.as_str(), "state": new_state.as_str(), "late": state == CommandState::Expired }),
        ),
        now,
    )
    .await?;
    let wake = if operation.is_some() {
        let outcome = match (report.succeeded, cancelled) {
            (true, _) => TargetState::Succeeded,
            (false, true) => TargetState::Cancelled,
            (false, false) => TargetState::Failed,
        };
        dispatch::command_finished(&mut tx, report.command, outcome, None, now).await?
    } else {
        Vec::new()
    };
    sqlx::query("DELETE FROM command_output WHERE command_id = $1")
        .bind(report.command)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(wake)
}

/// The state and result of one command of the caller's organisation.
pub async fn command_state(
    auth: &Authorized<'_, ReadOrg>,
    command: &CommandId,
    now: Timestamp,
) -> Result<CommandOutcome, ControlError> {
    let row =
        sqlx::query("SELECT state, result, expires_at FROM commands WHERE id = $1 AND org_id = $2")
            .bind(&command.0)
            .bind(auth.actor().org().0)
            .fetch_optional(auth.store().pool())
            .await?
            .ok_or_else(|| ControlError::not_found("No such command."))?;
    let state = parse_state(&row.try_get::<String, _>("state")?)?;
    let expires_at = Timestamp(row.try_get("expires_at")?);
    let effective = effective_state(state, expires_at, now);
    Ok(CommandOutcome {
        state: effective,
        result: if effective == state {
            row.try_get("result")?
        } else {
            Some("No result from the agent before the command's deadline.".into())
        },
    })
}

/// The latest commands of one server of the caller's organisation.
pub async fn recent_commands(
    auth: &Authorized<'_, ReadOrg>,
    agent: &AgentId,
    limit: i64,
    now: Timestamp,
) -> Result<Vec<CommandView>, ControlError> {
    let rows: Vec<ViewRow> = sqlx::query_as(
        "SELECT id, kind, state, created_at, expires_at, finished_at FROM commands \
         WHERE agent_id = $1 AND org_id = $2 ORDER BY seq DESC LIMIT $3",
    )
    .bind(&agent.0)
    .bind(auth.actor().org().0)
    .bind(limit.clamp(1, 100))
    .fetch_all(auth.store().pool())
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(CommandView {
                id: CommandId(r.id),
                kind: parse_kind(&r.kind)?,
                state: effective_state(parse_state(&r.state)?, Timestamp(r.expires_at), now),
                created_at: Timestamp(r.created_at),
                finished_at: r.finished_at.map(Timestamp),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_match_the_channel() {
        use channel::api::kinds;
        assert_eq!(CommandKind::Ping.as_str(), kinds::PING);
        assert_eq!(CommandKind::RotateKeys.as_str(), kinds::ROTATE_KEYS);
        assert_eq!(
            CommandKind::RegisterPqcKey.as_str(),
            kinds::REGISTER_PQC_KEY
        );
    }

    #[test]
    fn open_commands_past_their_deadline_are_expired() {
        let t = Timestamp(1000);
        assert_eq!(
            effective_state(CommandState::Delivered, t, Timestamp(1000)),
            CommandState::Expired
        );
        assert_eq!(
            effective_state(CommandState::Queued, t, Timestamp(999)),
            CommandState::Queued
        );
        assert_eq!(
            effective_state(CommandState::Succeeded, t, Timestamp(5000)),
            CommandState::Succeeded
        );
    }
}
