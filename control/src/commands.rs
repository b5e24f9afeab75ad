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
use crate::store::{Store, Tx, BATCH_ROWS};
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
    // The long-poll calls this on every wake-up: a plain read first, so an
    // agent with nothing queued never takes the write lock.
    if !any_open(store, session.agent()).await? {
        return Ok(Taken::default());
    }
    let mut taken = take_pending_all(store, &[session.agent().clone()], now).await?;
    Ok(taken.pop().unwrap_or_default())
}

/// Whether the agent has a queued or delivered command: a plain read.
pub async fn any_open(store: &Store, agent: &AgentId) -> Result<bool, ControlError> {
    Ok(sqlx::query(ANY_OPEN_SQL)
        .bind(&agent.0)
        .bind(CommandState::Queued.as_str())
        .bind(CommandState::Delivered.as_str())
        .fetch_optional(store.pool())
        .await?
        .is_some())
}

/// The open commands of `n` agents (`$1`, `$2`: queued and delivered).
pub(crate) fn pending_sql(n: usize) -> String {
    format!(
        "SELECT agent_id, id, seq, kind, args, state, created_at, expires_at, origin, plan_hash, approval, operation_id \
         FROM commands WHERE state IN ($1, $2) AND agent_id IN ({}) ORDER BY agent_id, seq",
        crate::store::list(n, 3)
    )
}

/// `n` reported commands with their operation targets.
pub(crate) fn finishing_sql(n: usize) -> String {
    format!(
        "SELECT c.id AS id, c.agent_id AS agent_id, c.kind AS kind, c.state AS state, c.seq AS seq, \
         c.delivered_at AS delivered_at, c.operation_id AS operation_id, \
         c.cancel_requested_at AS cancel_requested_at, t.state AS target_state, o.org_id AS op_org \
         FROM commands c LEFT JOIN operation_targets t ON t.command_id = c.id \
         LEFT JOIN operations o ON o.id = t.operation_id WHERE c.id IN ({})",
        crate::store::list(n, 1)
    )
}

#[derive(sqlx::FromRow)]
struct PendingRow {
    agent_id: String,
    #[sqlx(flatten)]
    command: QueuedRow,
}

/// [`take_pending`] for several agents in one transaction (the long-polls a
/// fan-out wakes together); one [`Taken`] per agent, in order, the whole
/// batch's agents to wake on the first.
pub async fn take_pending_all(
    store: &Store,
    agents: &[AgentId],
    now: Timestamp,
) -> Result<Vec<Taken>, ControlError> {
    let (queued, delivered) = (
        CommandState::Queued.as_str(),
        CommandState::Delivered.as_str(),
    );
    let mut tx = store.begin().await?;
    let mut rows: Vec<PendingRow> = Vec::new();
    for part in agents.chunks(BATCH_ROWS) {
        let sql = pending_sql(part.len());
        let mut q = sqlx::query_as::<_, PendingRow>(&sql)
            .bind(queued)
            .bind(delivered);
        for a in part {
            q = q.bind(a.0.as_str());
        }
        rows.extend(q.fetch_all(tx.conn()).await?);
    }
    let mut wake = Vec::new();
    let mut running: Vec<(OperationId, AgentId)> = Vec::new();
    let mut by_agent: std::collections::HashMap<String, Vec<QueuedCommand>> =
        std::collections::HashMap::new();
    for PendingRow {
        agent_id,
        command: row,
    } in rows
    {
        if row.expires_at <= now.0 {
            // Past its deadline: expired, unless it is an operation's command
            // already delivered (the sweep gives the agent a grace period).
            if row.state == delivered && row.operation_id.is_some() {
                continue;
            }
            sqlx::query("UPDATE commands SET state = $1, finished_at = $2 WHERE id = $3")
                .bind(CommandState::Expired.as_str())
                .bind(now.0)
                .bind(&row.id)
                .execute(tx.conn())
                .await?;
            if row.operation_id.is_some() {
                wake.extend(
                    dispatch::command_finished(
                        &mut tx,
                        &row.id,
                        TargetState::Expired,
                        Some("The approval expired before the agent took the command."),
                        now,
                    )
                    .await?,
                );
            }
            continue;
        }
        if row.state == queued {
            if let Some(op) = &row.operation_id {
                running.push((OperationId(op.clone()), AgentId(agent_id.clone())));
            }
        }
        by_agent
            .entry(agent_id)
            .or_default()
            .push(row.into_command()?);
    }
    dispatch::mark_running(&mut tx, &running, now).await?;
    let taking: Vec<&AgentId> = agents
        .iter()
        .filter(|a| by_agent.contains_key(&a.0))
        .collect();
    for part in taking.chunks(BATCH_ROWS) {
        let sql = format!(
            "UPDATE commands SET state = $1, delivered_at = COALESCE(delivered_at, $2) \
             WHERE state = $3 AND expires_at > $2 AND agent_id IN ({})",
            crate::store::list(part.len(), 4)
        );
        let mut q = sqlx::query(&sql).bind(delivered).bind(now.0).bind(queued);
        for a in part {
            q = q.bind(a.0.as_str());
        }
        q.execute(tx.conn()).await?;
    }
    tx.commit().await?;
    let mut out: Vec<Taken> = agents
        .iter()
        .map(|a| Taken {
            commands: by_agent.remove(&a.0).unwrap_or_default(),
            wake: Vec::new(),
        })
        .collect();
    if let Some(first) = out.first_mut() {
        first.wake = wake;
    }
    Ok(out)
}

/// Part of a running command's output, as the agent sent it.
pub struct Chunk<'a> {
    pub command: &'a str,
    pub sequence: u64,
    pub index: u32,
    pub text: &'a str,
}

/// A live output chunk to keep, checked by [`check_output`].
pub struct KeptChunk {
    pub command: String,
    pub index: u32,
    pub text: String,
}

/// Checks a live output chunk against one of the agent's own commands:
/// answers whether the command was cancelled meanwhile, and the chunk to keep
/// ([`keep_output`]) while the command runs. An empty chunk is a keep-alive:
/// nothing is kept.
pub async fn check_output(
    store: &Store,
    session: &AgentSession,
    chunk: Chunk<'_>,
) -> Result<(bool, Option<KeptChunk>), ControlError> {
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
    let keep = (!chunk.text.is_empty() && state == CommandState::Delivered).then(|| KeptChunk {
        command: chunk.command.to_string(),
        index: chunk.index,
        text: chunk.text.to_string(),
    });
    Ok((cancel, keep))
}

/// Keeps live output chunks in one transaction, each once per index and
/// within [`MAX_LIVE_OUTPUT_BYTES`] per command (a chunk past the cap is
/// dropped; the final result still carries the output's end).
pub async fn keep_output(
    store: &Store,
    chunks: &[KeptChunk],
    now: Timestamp,
) -> Result<(), ControlError> {
    let mut tx = store.begin().await?;
    for c in chunks {
        sqlx::query(
            "INSERT INTO command_output (command_id, idx, text, at) SELECT $1, $2, $3, $4 \
             WHERE (SELECT COALESCE(SUM(LENGTH(text)), 0) FROM command_output WHERE command_id = $1) + $5 <= $6 \
             ON CONFLICT (command_id, idx) DO NOTHING",
        )
        .bind(&c.command)
        .bind(i64::from(c.index))
        .bind(&c.text)
        .bind(now.0)
        .bind(c.text.len() as i64)
        .bind(MAX_LIVE_OUTPUT_BYTES)
        .execute(tx.conn())
        .await?;
    }
    tx.commit().await?;
    Ok(())
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
    /// The agent refused to run it (its local policy); `text` says why.
    pub refused: bool,
    pub text: &'a str,
}

/// Most characters of an agent's reason an `agent.command_refused` event keeps.
pub const MAX_REFUSAL_REASON_CHARS: usize = 500;

/// Records an agent's result for one of its own commands: [`finish_all`]
/// with one report. Returns the agents to wake after the commit.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn finish(
    store: &Store,
    session: &AgentSession,
    report: Report<'_>,
    now: Timestamp,
) -> Result<Vec<AgentId>, ControlError> {
    let mut outcome = finish_all(
        store,
        vec![AgentReport {
            agent: session.agent().clone(),
            org: session.org(),
            command: report.command.to_string(),
            sequence: report.sequence,
            succeeded: report.succeeded,
            refused: report.refused,
            reason: None,
            text: report.text.to_string(),
        }],
        now,
    )
    .await?;
    outcome
        .pop()
        .unwrap_or_else(|| Err(ControlError::Internal("a report had no outcome".into())))
}

/// An authenticated agent's report, owned, as a batch holds it.
pub struct AgentReport {
    pub agent: AgentId,
    pub org: OrgId,
    pub command: String,
    pub sequence: u64,
    pub succeeded: bool,
    /// The agent refused to run it (its local policy).
    pub refused: bool,
    /// The agent's own reason for a refusal, when it differs from `text`
    /// (`text` is what the command's result shows; `None`: `text`).
    pub reason: Option<String>,
    pub text: String,
}

#[derive(sqlx::FromRow)]
struct FinishRow {
    id: String,
    agent_id: String,
    kind: String,
    state: String,
    seq: i64,
    delivered_at: Option<i64>,
    operation_id: Option<String>,
    cancel_requested_at: Option<i64>,
    target_state: Option<String>,
    op_org: Option<i64>,
}

/// Records agents' results, each for one of the reporting agent's own
/// commands at the sequence number it was queued with, in one transaction:
/// the commands' states and texts, their audit events, and for operations'
/// commands the targets' outcomes (which may send the next wave); a refusal
/// by the agent is also recorded as `agent.command_refused`. A report
/// for a finished command is ignored (the agent may retry after a lost
/// reply). Returns one outcome per report, in order: the agents to wake
/// after the commit (the whole batch's, on the first report that has any),
/// or why the report was refused. A database failure fails the whole batch.
pub async fn finish_all(
    store: &Store,
    reports: Vec<AgentReport>,
    now: Timestamp,
) -> Result<Vec<Result<Vec<AgentId>, ControlError>>, ControlError> {
    let mut tx = store.begin().await?;
    let mut ids: Vec<&str> = reports.iter().map(|r| r.command.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut rows = std::collections::HashMap::new();
    for part in ids.chunks(BATCH_ROWS) {
        let sql = finishing_sql(part.len());
        let mut q = sqlx::query_as::<_, FinishRow>(&sql);
        for id in part {
            q = q.bind(*id);
        }
        for row in q.fetch_all(tx.conn()).await? {
            rows.insert(row.id.clone(), row);
        }
    }
    let mut outcomes = Vec::with_capacity(reports.len());
    let mut updates: Vec<(&str, CommandState, String)> = Vec::new();
    let mut events = Vec::new();
    let mut targets = Vec::new();
    for report in &reports {
        let Some(row) = rows
            .get(&report.command)
            .filter(|r| r.agent_id == report.agent.0)
        else {
            outcomes.push(Err(ControlError::not_found(
                "No such command for this agent.",
            )));
            continue;
        };
        if u64::try_from(row.seq).ok() != Some(report.sequence) {
            outcomes.push(Err(ControlError::invalid(
                "The result's sequence number does not match its command.",
            )));
            continue;
        }
        outcomes.push(Ok(Vec::new()));
        let state = parse_state(&row.state)?;
        let open =
            state.is_open() || (state == CommandState::Expired && row.delivered_at.is_some());
        if !open || updates.iter().any(|(id, _, _)| *id == report.command) {
            continue;
        }
        let kind = parse_kind(&row.kind)?;
        let new_state = if report.succeeded {
            CommandState::Succeeded
        } else {
            CommandState::Failed
        };
        updates.push((
            report.command.as_str(),
            new_state,
            report.text.chars().take(MAX_RESULT_CHARS).collect(),
        ));
        events.push((
            AuditActor::agent(&report.agent),
            Event::new(
                report.org,
                AuditAction::CommandFinished,
                format!("agent:{}", report.agent.0),
                json!({ "command": report.command, "kind": kind.as_str(), "state": new_state.as_str(), "late": state == CommandState::Expired }),
            ),
        ));
        // The agent's reason, for a refusal or a self-update it did not take.
        let reason = || -> String {
            report
                .reason
                .as_deref()
                .unwrap_or(&report.text)
                .chars()
                .take(MAX_REFUSAL_REASON_CHARS)
                .collect()
        };
        if report.refused {
            events.push((
                AuditActor::agent(&report.agent),
                Event::new(
                    report.org,
                    AuditAction::AgentCommandRefused,
                    format!("agent:{}", report.agent.0),
                    json!({ "command": report.command, "kind": kind.as_str(), "seq": report.sequence, "reason": reason() }),
                ),
            ));
        }
        if kind == CommandKind::UpdateAgent && !report.succeeded {
            // The agent kept the version it runs: it refused the release (a
            // bad signature or digest, another platform, a downgrade) or could
            // not fetch it.
            events.push((
                AuditActor::agent(&report.agent),
                Event::new(
                    report.org,
                    AuditAction::SelfUpdateRefused,
                    format!("agent:{}", report.agent.0),
                    json!({ "command": report.command, "reason": reason() }),
                ),
            ));
        }
        if let (Some(op), Some(org), Some(target)) =
            (&row.operation_id, row.op_org, &row.target_state)
        {
            if target == TargetState::Dispatched.as_str() {
                targets.push(dispatch::Finished {
                    operation: OperationId(op.clone()),
                    org: OrgId(org),
                    agent: report.agent.clone(),
                    command: report.command.clone(),
                    outcome: match (report.succeeded, row.cancel_requested_at.is_some()) {
                        (true, _) => TargetState::Succeeded,
                        (false, true) => TargetState::Cancelled,
                        (false, false) => TargetState::Failed,
                    },
                });
            }
        }
    }
    for part in updates.chunks(BATCH_ROWS) {
        let sql = format!(
            "UPDATE commands SET state = v.column2, finished_at = ${}, result = v.column3 \
             FROM (VALUES {}) AS v WHERE commands.id = v.column1",
            part.len() * 3 + 1,
            crate::store::placeholders(part.len(), 3)
        );
        let mut q = sqlx::query(&sql);
        for (id, state, text) in part {
            q = q.bind(*id).bind(state.as_str()).bind(text.as_str());
        }
        q.bind(now.0).execute(tx.conn()).await?;
    }
    audit::append_many(&mut tx, events, now).await?;
    let wake = dispatch::targets_finished(&mut tx, &targets, None, now).await?;
    for part in updates.chunks(BATCH_ROWS) {
        let sql = format!(
            "DELETE FROM command_output WHERE command_id IN ({})",
            crate::store::list(part.len(), 1)
        );
        let mut q = sqlx::query(&sql);
        for (id, _, _) in part {
            q = q.bind(*id);
        }
        q.execute(tx.conn()).await?;
    }
    tx.commit().await?;
    if let Some(first) = outcomes.iter_mut().find_map(|o| o.as_mut().ok()) {
        *first = wake;
    }
    Ok(outcomes)
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
        assert_eq!(CommandKind::UpdateAgent.as_str(), kinds::UPDATE_AGENT);
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
