//! Operations and approval gates: a person or the AI Pilot proposes, a person
//! whose role suffices approves or rejects, and the approved plan goes to
//! each target's agent as a signed, sealed command.
//!
//! Rules kept here, each applied inside the write transaction with the role
//! read there (never the one cached on the actor):
//! - **Who proposes.** A Member or above, or the AI Pilot ([`pilot`]). Every
//!   proposal has a reason; the pilot's also has its evidence.
//! - **Who approves.** [`approval_refusal`]: a Member approves low and medium
//!   risk on servers that are not production; high risk, destructive, and
//!   anything on a production server needs an Admin or Owner; a Viewer
//!   approves nothing. Nobody approves their own proposal.
//! - **Running your own.** [`run_own`] records a self-approval with the
//!   person's reason, if their role suffices and the organisation's
//!   two-person rule does not cover the risk.
//! - **Production Protection.** A pilot's proposal for a production server is
//!   refused when proposed, again at dispatch ([`dispatch`]), and a third time
//!   by the agent itself.
//! - **Plan hash.** Each target's approval is bound to
//!   [`channel::ops::plan_hash`] of the operation and the target; the command
//!   carries it and the agent recomputes it.
//! - **Expiry.** An approval holds for the organisation's
//!   `approval_ttl_secs`; a command not taken by its agent by then expires
//!   and is never delivered late.
//! - **History.** Every state is kept in `operation_events` and audited in
//!   the same transaction.
//! - **Refusals.** A refusal for the person's role (approving above it,
//!   cancelling someone else's operation) is recorded as `access.refused`
//!   ([`crate::access::Actor::refuse`]); refusals that no role would lift
//!   (your own proposal, the two-person rule, Production Protection) are
//!   answered without an event, and the pilot's refused proposals are
//!   `operation.refused`.

pub mod dispatch;
pub mod pilot;
pub mod settings;

use serde_json::json;
use sqlx::Row;

use crate::access::{Authorized, Capability, ReadOrg};
use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::crypto::random_token;
use crate::delivery::Delivery;
use crate::names::bounded_text;
use crate::store::{Store, Tx};
use crate::{
    approval_refusal, AgentId, ApprovalView, ControlError, OpKind, Operation, OperationId,
    OperationState, OperationView, OrgId, Origin, Risk, Role, TargetState, TargetView,
    TimelineEntry, Timestamp, UserId,
};

/// Longest reason (for proposing, approving, rejecting, cancelling).
pub const MAX_REASON_CHARS: usize = 2000;
/// Most target servers of one operation.
pub const MAX_TARGETS: usize = 1000;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

/// Propose operations (Member and above).
pub struct ProposeOperations;
impl Capability for ProposeOperations {
    const DESCRIPTION: &'static str = "propose operations";
    fn allows(role: Role) -> bool {
        role.rank() >= Role::Member.rank()
    }
}

/// Approve or reject operations (Member and above; the risk and the
/// production flag can ask for more, see [`approval_refusal`]).
pub struct DecideOperations;
impl Capability for DecideOperations {
    const DESCRIPTION: &'static str = "approve or reject operations";
    fn allows(role: Role) -> bool {
        role.rank() >= Role::Member.rank()
    }
}

/// Halt and resume fleet operations, cancel anyone's operation (Owner, Admin).
pub struct SuperviseOperations;
impl Capability for SuperviseOperations {
    const DESCRIPTION: &'static str = "halt, resume or cancel other people's operations";
    fn allows(role: Role) -> bool {
        role.manages_members()
    }
}

/// How many targets run at once: a count or a percentage of the targets,
/// reached by growing from 1 (doubling with each success); or every target
/// at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parallel {
    Count(u32),
    Percent(u8),
    Unlimited,
}

impl Parallel {
    /// The stored `max_parallel` for `targets` targets: at least 1, or 0 for
    /// every target at once (no slow start).
    pub fn resolve(self, targets: usize) -> i64 {
        let n = match self {
            Parallel::Count(n) => i64::from(n),
            Parallel::Percent(p) => (targets as i64 * i64::from(p.min(100)) + 99) / 100,
            Parallel::Unlimited => return 0,
        };
        n.clamp(1, targets.max(1) as i64)
    }
}

/// What someone asks to run.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// Already checked against the catalogue ([`Operation::parse`]).
    pub op: Operation,
    pub targets: Vec<AgentId>,
    pub reason: String,
    /// A repeated submit with the same key creates nothing new.
    pub idempotency_key: Option<String>,
    pub parallel: Parallel,
    /// How many failed targets are tolerated; one more halts the rest.
    pub error_threshold: u32,
}

impl Proposal {
    /// One operation on one server, one at a time, halting on the first failure.
    pub fn single(op: Operation, agent: AgentId, reason: impl Into<String>) -> Self {
        Self {
            op,
            targets: vec![agent],
            reason: reason.into(),
            idempotency_key: None,
            parallel: Parallel::Count(1),
            error_threshold: 0,
        }
    }
}

/// Who proposes, as the rows record it.
pub(crate) struct Proposer {
    pub origin: Origin,
    pub user: Option<UserId>,
    pub label: String,
    pub audit: AuditActor,
    pub evidence: Option<String>,
    pub condition_key: Option<String>,
}

/// A target as proposing and dispatching read it inside the transaction.
pub(crate) struct TargetRow {
    pub agent: AgentId,
    pub production: bool,
    pub has_kem: bool,
    /// The server's AI File Access toggle.
    pub file_access: bool,
    pub capabilities: Option<String>,
}

pub(crate) async fn read_target(
    tx: &mut Tx,
    org: OrgId,
    agent: &AgentId,
) -> Result<TargetRow, ControlError> {
    let row = sqlx::query(
        "SELECT production, file_access, kem_key, capabilities FROM agents \
         WHERE id = $1 AND org_id = $2 AND revoked_at IS NULL AND delete_after IS NULL",
    )
    .bind(&agent.0)
    .bind(org.0)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| {
        ControlError::not_found(format!(
            "targets: no active server `{agent}` (revoked, or scheduled for deletion)."
        ))
    })?;
    Ok(TargetRow {
        agent: agent.clone(),
        production: row.try_get::<i64, _>("production")? != 0,
        has_kem: row.try_get::<Option<String>, _>("kem_key")?.is_some(),
        file_access: row.try_get::<i64, _>("file_access")? != 0,
        capabilities: row.try_get("capabilities")?,
    })
}

/// Checks one target for a proposal: it runs sealed commands, its agent
/// declared it can run this operation, and a pilot does not touch production.
fn check_target(t: &TargetRow, op: &Operation, origin: Origin) -> Result<(), ControlError> {
    if origin == Origin::Pilot && t.production {
        return Err(ControlError::forbidden(format!(
            "Production Protection: the AI Pilot does not propose operations for production server `{}`.",
            t.agent
        )));
    }
    if !t.has_kem {
        return Err(ControlError::conflict(format!(
            "targets: server `{}` has no post-quantum key yet, and operations travel encrypted. Activate post-quantum encryption first.",
            t.agent
        )));
    }
    let caps: crate::Capabilities = match &t.capabilities {
        Some(json) => serde_json::from_str(json).map_err(ControlError::internal)?,
        None => {
            return Err(ControlError::conflict(format!(
                "targets: the agent on server `{}` has not declared what it can run (update the agent).",
                t.agent
            )))
        }
    };
    if op.kinds().contains(&OpKind::ReadFile) && !t.file_access {
        return Err(ControlError::forbidden(format!(
            "AI File Access is off for server `{}` (an Owner or Admin can turn it on).",
            t.agent
        )));
    }
    caps.allows(op).map_err(|e| {
        ControlError::invalid(format!("{} (server `{}`): {}", e.field, t.agent, e.message))
    })
}

fn check_shape(p: &Proposal) -> Result<(String, Option<String>), ControlError> {
    let reason = bounded_text(&p.reason, MAX_REASON_CHARS, "reason")?;
    if p.targets.is_empty() {
        return Err(ControlError::invalid(
            "targets: choose at least one server.",
        ));
    }
    if p.targets.len() > MAX_TARGETS {
        return Err(ControlError::invalid(format!(
            "targets: at most {MAX_TARGETS} servers per operation."
        )));
    }
    let mut seen = std::collections::HashSet::new();
    if !p.targets.iter().all(|t| seen.insert(t)) {
        return Err(ControlError::invalid("targets: a server is listed twice."));
    }
    let key = match &p.idempotency_key {
        Some(k) if k.is_empty() => None,
        Some(k) => {
            if k.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
            {
                return Err(ControlError::invalid(format!(
                    "idempotency_key: at most {MAX_IDEMPOTENCY_KEY_CHARS} letters, digits and -_.: characters."
                )));
            }
            Some(k.clone())
        }
        None => None,
    };
    if let Parallel::Percent(p) = p.parallel {
        if p == 0 || p > 100 {
            return Err(ControlError::invalid(
                "concurrency: a percentage between 1 and 100.",
            ));
        }
    }
    if p.parallel == Parallel::Count(0) {
        return Err(ControlError::invalid("concurrency: at least 1."));
    }
    Ok((reason, key))
}

/// Records a proposal inside `tx`: checks its shape and every target, stores
/// it with one plan hash per target, and audits it. Returns the id, and
/// whether it already existed under the same idempotency key.
pub(crate) async fn insert_proposal(
    tx: &mut Tx,
    org: OrgId,
    who: &Proposer,
    p: &Proposal,
    now: Timestamp,
) -> Result<(OperationId, bool), ControlError> {
    insert_selected(tx, org, who, p, None, now).await
}

/// [`insert_proposal`], with the selector the targets were resolved from (kept
/// on the operation for display).
async fn insert_selected(
    tx: &mut Tx,
    org: OrgId,
    who: &Proposer,
    p: &Proposal,
    selector: Option<&str>,
    now: Timestamp,
) -> Result<(OperationId, bool), ControlError> {
    let (reason, key) = check_shape(p)?;
    if let Some(key) = &key {
        let existing = sqlx::query(
            "SELECT id, proposed_by FROM operations WHERE org_id = $1 AND idempotency_key = $2",
        )
        .bind(org.0)
        .bind(key)
        .fetch_optional(tx.conn())
        .await?;
        if let Some(row) = existing {
            let by: Option<i64> = row.try_get("proposed_by")?;
            if by != who.user.map(|u| u.0) {
                return Err(ControlError::conflict(
                    "idempotency_key: another proposer already used this key.",
                ));
            }
            return Ok((OperationId(row.try_get("id")?), true));
        }
    }
    let mut targets = Vec::with_capacity(p.targets.len());
    for agent in &p.targets {
        let t = read_target(tx, org, agent).await?;
        check_target(&t, &p.op, who.origin)?;
        targets.push(t);
    }
    let id = OperationId(format!("op_{}", random_token(12)));
    let risk = p.op.risk();
    let max_parallel = p.parallel.resolve(targets.len());
    sqlx::query(
        "INSERT INTO operations (id, org_id, kind, args, risk, reason, origin, proposed_by, proposer_label, \
         evidence, condition_key, idempotency_key, state, max_parallel, error_threshold, created_at, selector) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(&id.0)
    .bind(org.0)
    .bind(p.op.kind().as_str())
    .bind(p.op.args().to_string())
    .bind(risk.as_str())
    .bind(&reason)
    .bind(who.origin.as_str())
    .bind(who.user.map(|u| u.0))
    .bind(&who.label)
    .bind(who.evidence.as_deref())
    .bind(who.condition_key.as_deref())
    .bind(key.as_deref())
    .bind(OperationState::Proposed.as_str())
    .bind(max_parallel)
    .bind(i64::from(p.error_threshold))
    .bind(now.0)
    .bind(selector)
    .execute(tx.conn())
    .await
    .map_err(|e| {
        if crate::store::is_unique_violation(&e) {
            ControlError::conflict("This condition already has a proposal.")
        } else {
            e.into()
        }
    })?;
    for (position, t) in targets.iter().enumerate() {
        sqlx::query(
            "INSERT INTO operation_targets (operation_id, agent_id, position, plan_hash, state) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id.0)
        .bind(&t.agent.0)
        .bind(position as i64)
        .bind(channel::ops::plan_hash(&t.agent.0, &p.op))
        .bind(TargetState::Waiting.as_str())
        .execute(tx.conn())
        .await?;
    }
    history(
        tx,
        &id,
        None,
        OperationState::Proposed.as_str(),
        &who.audit,
        Some(&reason),
        now,
    )
    .await?;
    audit::append(
        tx,
        &who.audit,
        Event::new(
            org,
            AuditAction::OperationProposed,
            format!("operation:{}", id.0),
            json!({
                "kind": p.op.kind().as_str(), "risk": risk.as_str(), "origin": who.origin.as_str(),
                "targets": p.targets.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
            }),
        ),
        now,
    )
    .await?;
    Ok((id, false))
}

/// Appends one entry to an operation's history.
pub(crate) async fn history(
    tx: &mut Tx,
    op: &OperationId,
    agent: Option<&AgentId>,
    state: &str,
    actor: &AuditActor,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<(), ControlError> {
    sqlx::query(
        "INSERT INTO operation_events (operation_id, agent_id, state, actor_user_id, actor_label, reason, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&op.0)
    .bind(agent.map(|a| a.0.as_str()))
    .bind(state)
    .bind(actor.user.map(|u| u.0))
    .bind(&actor.label)
    .bind(reason)
    .bind(now.0)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A person's step on an operation: its history entry and its audit event,
/// in the same transaction.
#[allow(clippy::too_many_arguments)]
async fn record_step(
    tx: &mut Tx,
    actor: &crate::access::Actor,
    id: &OperationId,
    state: &str,
    reason: &str,
    action: AuditAction,
    details: serde_json::Value,
    now: Timestamp,
) -> Result<(), ControlError> {
    let who = actor.audit_actor();
    history(tx, id, None, state, &who, Some(reason), now).await?;
    audit::append(
        tx,
        &who,
        Event::new(actor.org(), action, format!("operation:{}", id.0), details),
        now,
    )
    .await?;
    Ok(())
}

fn human(auth_actor: &crate::access::Actor) -> Proposer {
    Proposer {
        origin: Origin::Human,
        user: Some(auth_actor.user()),
        label: auth_actor.email().to_string(),
        audit: auth_actor.audit_actor(),
        evidence: None,
        condition_key: None,
    }
}

/// Proposes an operation for approval by someone else.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn propose(
    auth: &Authorized<'_, ProposeOperations>,
    proposal: Proposal,
    now: Timestamp,
) -> Result<OperationId, ControlError> {
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ProposeOperations>(&mut tx).await?;
    let (id, _) = insert_proposal(&mut tx, actor.org(), &human(actor), &proposal, now).await?;
    tx.commit().await?;
    Ok(id)
}

/// Proposes an operation for every active server carrying the selector's
/// labels (`env=staging,role=web`), resolved in the proposing transaction.
/// `proposal.targets` must be empty.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn propose_selected(
    auth: &Authorized<'_, ProposeOperations>,
    selector: &str,
    mut proposal: Proposal,
    now: Timestamp,
) -> Result<OperationId, ControlError> {
    if !proposal.targets.is_empty() {
        return Err(ControlError::invalid(
            "targets: give a list of servers or a selector, not both.",
        ));
    }
    let terms = settings::parse_selector(selector)?;
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ProposeOperations>(&mut tx).await?;
    proposal.targets = settings::select(&mut tx, actor.org(), &terms).await?;
    if proposal.targets.is_empty() {
        return Err(ControlError::invalid(
            "selector: no active server carries these labels.",
        ));
    }
    let shown: Vec<String> = terms.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let (id, _) = insert_selected(
        &mut tx,
        actor.org(),
        &human(actor),
        &proposal,
        Some(&shown.join(",")),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Runs the person's own operation without a second person: recorded as
/// self-approved with their reason. Refused when their role could not
/// approve it from someone else, or when the organisation's two-person rule
/// covers its risk.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn run_own(
    delivery: &Delivery,
    auth: &Authorized<'_, ProposeOperations>,
    proposal: Proposal,
    now: Timestamp,
) -> Result<OperationId, ControlError> {
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    let role = actor.recheck::<ProposeOperations>(&mut tx).await?;
    let policy = settings::read_policy(&mut tx, actor.org()).await?;
    let risk = proposal.op.risk();
    if policy.needs_second_person(risk) {
        return Err(ControlError::forbidden(format!(
            "The two-person rule covers {} operations in this organisation: propose it for someone else to approve.",
            risk.as_str()
        )));
    }
    let (id, existed) =
        insert_proposal(&mut tx, actor.org(), &human(actor), &proposal, now).await?;
    if existed {
        tx.commit().await?;
        return Ok(id);
    }
    let production = any_production(&mut tx, &id).await?;
    if let Some(why) = approval_refusal(role, risk, production) {
        // The operation is rolled back with this transaction: the refusal
        // names its server when there is one.
        let target = match proposal.targets.as_slice() {
            [one] => Some(format!("agent:{}", one.0)),
            _ => None,
        };
        return Err(actor.refuse(
            DecideOperations::DESCRIPTION,
            Some(role),
            target.as_deref(),
            why.to_string(),
        ));
    }
    let reason = bounded_text(&proposal.reason, MAX_REASON_CHARS, "reason")?;
    record_approval(&mut tx, actor, role, &id, &reason, true, &policy, now).await?;
    let wake = dispatch::advance(&mut tx, actor.org(), &id, now).await?;
    tx.commit().await?;
    for agent in &wake {
        delivery.wake(agent);
    }
    Ok(id)
}

/// The operation's row, locked for the rest of the transaction on PostgreSQL
/// (SQLite write transactions are serialised already).
pub(crate) struct OpRow {
    pub org: OrgId,
    pub kind: OpKind,
    pub args: String,
    pub risk: Risk,
    pub state: OperationState,
    pub origin: Origin,
    pub proposed_by: Option<UserId>,
    pub self_approved: bool,
    pub max_parallel: i64,
    pub error_threshold: i64,
    pub approval_expires_at: Option<Timestamp>,
}

pub(crate) async fn lock_operation(
    tx: &mut Tx,
    org: OrgId,
    id: &OperationId,
) -> Result<OpRow, ControlError> {
    let lock = if tx.backend() == crate::store::Backend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    let row = sqlx::query(&format!(
        "SELECT org_id, kind, args, risk, state, origin, proposed_by, self_approved, max_parallel, \
         error_threshold, approval_expires_at FROM operations WHERE id = $1 AND org_id = $2{lock}"
    ))
    .bind(&id.0)
    .bind(org.0)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| ControlError::not_found("No such operation."))?;
    let stored = |e: crate::UnknownValue| ControlError::Internal(format!("stored {e}").into());
    Ok(OpRow {
        org: OrgId(row.try_get("org_id")?),
        kind: row
            .try_get::<String, _>("kind")?
            .parse()
            .map_err(|e: crate::OpError| ControlError::Internal(e.to_string().into()))?,
        args: row.try_get("args")?,
        risk: row
            .try_get::<String, _>("risk")?
            .parse()
            .map_err(|e: crate::OpError| ControlError::Internal(e.to_string().into()))?,
        state: row.try_get::<String, _>("state")?.parse().map_err(stored)?,
        origin: row
            .try_get::<String, _>("origin")?
            .parse()
            .map_err(|e: crate::OpError| ControlError::Internal(e.to_string().into()))?,
        proposed_by: row.try_get::<Option<i64>, _>("proposed_by")?.map(UserId),
        self_approved: row.try_get::<i64, _>("self_approved")? != 0,
        max_parallel: row.try_get("max_parallel")?,
        error_threshold: row.try_get("error_threshold")?,
        approval_expires_at: row
            .try_get::<Option<i64>, _>("approval_expires_at")?
            .map(Timestamp),
    })
}

async fn any_production(tx: &mut Tx, id: &OperationId) -> Result<bool, ControlError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM operation_targets t JOIN agents a ON a.id = t.agent_id \
         WHERE t.operation_id = $1 AND a.production = 1",
    )
    .bind(&id.0)
    .fetch_one(tx.conn())
    .await?;
    Ok(n > 0)
}

#[allow(clippy::too_many_arguments)]
async fn record_approval(
    tx: &mut Tx,
    actor: &crate::access::Actor,
    role: Role,
    id: &OperationId,
    reason: &str,
    self_approved: bool,
    policy: &crate::OrgPolicy,
    now: Timestamp,
) -> Result<(), ControlError> {
    sqlx::query(
        "INSERT INTO operation_approvals (operation_id, user_id, label, role, reason, at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id.0)
    .bind(actor.user().0)
    .bind(actor.email())
    .bind(role.as_str())
    .bind(reason)
    .bind(now.0)
    .execute(tx.conn())
    .await?;
    let expires = now.plus_secs(policy.approval_ttl_secs);
    sqlx::query(
        "UPDATE operations SET state = $1, decided_at = $2, approval_expires_at = $3, self_approved = $4 \
         WHERE id = $5",
    )
    .bind(OperationState::Approved.as_str())
    .bind(now.0)
    .bind(expires.0)
    .bind(i64::from(self_approved))
    .bind(&id.0)
    .execute(tx.conn())
    .await?;
    let label = if self_approved {
        "self-approved"
    } else {
        OperationState::Approved.as_str()
    };
    history(tx, id, None, label, &actor.audit_actor(), Some(reason), now).await?;
    audit::append(
        tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::OperationApproved,
            format!("operation:{}", id.0),
            json!({ "role": role.as_str(), "self_approved": self_approved, "expires_at": expires.0 }),
        ),
        now,
    )
    .await?;
    Ok(())
}

/// Approves someone else's proposal and dispatches its first targets.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn approve(
    delivery: &Delivery,
    auth: &Authorized<'_, DecideOperations>,
    id: &OperationId,
    reason: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let reason = bounded_text(reason, MAX_REASON_CHARS, "reason")?;
    let mut tx = auth.store().begin().await?;
    let role = actor.recheck::<DecideOperations>(&mut tx).await?;
    let op = lock_operation(&mut tx, actor.org(), id).await?;
    if op.state != OperationState::Proposed {
        return Err(ControlError::conflict(format!(
            "This operation is {}, not awaiting approval.",
            op.state.label().to_lowercase()
        )));
    }
    if op.proposed_by == Some(actor.user()) {
        return Err(ControlError::forbidden(
            "Nobody approves their own proposal.",
        ));
    }
    let production = any_production(&mut tx, id).await?;
    if op.origin == Origin::Pilot && production {
        return Err(ControlError::forbidden(
            "Production Protection: operations the AI Pilot proposed never run on a production server.",
        ));
    }
    if let Some(why) = approval_refusal(role, op.risk, production) {
        return Err(actor.refuse(
            DecideOperations::DESCRIPTION,
            Some(role),
            Some(&format!("operation:{}", id.0)),
            why.to_string(),
        ));
    }
    let policy = settings::read_policy(&mut tx, actor.org()).await?;
    record_approval(&mut tx, actor, role, id, &reason, false, &policy, now).await?;
    let wake = dispatch::advance(&mut tx, actor.org(), id, now).await?;
    tx.commit().await?;
    for agent in &wake {
        delivery.wake(agent);
    }
    Ok(())
}

/// Rejects someone else's proposal, with a reason. Needs the same authority
/// as approving it: a Member cannot turn down what only an Admin may approve.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn reject(
    auth: &Authorized<'_, DecideOperations>,
    id: &OperationId,
    reason: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let reason = bounded_text(reason, MAX_REASON_CHARS, "reason")?;
    let mut tx = auth.store().begin().await?;
    let role = actor.recheck::<DecideOperations>(&mut tx).await?;
    let op = lock_operation(&mut tx, actor.org(), id).await?;
    if op.state != OperationState::Proposed {
        return Err(ControlError::conflict(format!(
            "This operation is {}, not awaiting approval.",
            op.state.label().to_lowercase()
        )));
    }
    if op.proposed_by == Some(actor.user()) {
        return Err(ControlError::forbidden(
            "Nobody decides on their own proposal: cancel it instead.",
        ));
    }
    let production = any_production(&mut tx, id).await?;
    if let Some(why) = approval_refusal(role, op.risk, production) {
        return Err(actor.refuse(
            DecideOperations::DESCRIPTION,
            Some(role),
            Some(&format!("operation:{}", id.0)),
            why.replace("approve", "decide on"),
        ));
    }
    finish_untouched(&mut tx, id, TargetState::Skipped).await?;
    set_state(&mut tx, id, OperationState::Rejected, now).await?;
    record_step(
        &mut tx,
        actor,
        id,
        OperationState::Rejected.as_str(),
        &reason,
        AuditAction::OperationRejected,
        json!({ "role": role.as_str() }),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Cancels an operation that has not finished: its proposer may, and so may
/// an Owner or Admin. Targets not yet sent are cancelled, and so are commands
/// their agents have not taken yet; an agent running one is told to kill the
/// task with the answer to its next output chunk.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn cancel(
    auth: &Authorized<'_, ReadOrg>,
    id: &OperationId,
    reason: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let reason = bounded_text(reason, MAX_REASON_CHARS, "reason")?;
    let mut tx = auth.store().begin().await?;
    let role = actor.recheck::<ReadOrg>(&mut tx).await?;
    let op = lock_operation(&mut tx, actor.org(), id).await?;
    let own = op.proposed_by == Some(actor.user()) && role.rank() >= Role::Member.rank();
    if !own && !SuperviseOperations::allows(role) {
        return Err(actor.refuse(
            SuperviseOperations::DESCRIPTION,
            Some(role),
            Some(&format!("operation:{}", id.0)),
            "Only the proposer, an Admin or an Owner can cancel an operation.".into(),
        ));
    }
    if op.state.is_final() {
        return Err(ControlError::conflict(format!(
            "This operation is already {}.",
            op.state.label().to_lowercase()
        )));
    }
    finish_untouched(&mut tx, id, TargetState::Cancelled).await?;
    dispatch::cancel_queued(&mut tx, id, now).await?;
    let running = dispatch::request_cancel(&mut tx, id, now).await?;
    set_state(&mut tx, id, OperationState::Cancelled, now).await?;
    record_step(
        &mut tx,
        actor,
        id,
        OperationState::Cancelled.as_str(),
        &reason,
        AuditAction::OperationCancelled,
        json!({ "running_tasks_stopped": running }),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Halts a fleet operation: no more targets are sent until it is resumed.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn halt(
    auth: &Authorized<'_, SuperviseOperations>,
    id: &OperationId,
    reason: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let reason = bounded_text(reason, MAX_REASON_CHARS, "reason")?;
    let mut tx = auth.store().begin().await?;
    actor.recheck::<SuperviseOperations>(&mut tx).await?;
    let op = lock_operation(&mut tx, actor.org(), id).await?;
    if !matches!(
        op.state,
        OperationState::Approved | OperationState::Dispatched | OperationState::Running
    ) {
        return Err(ControlError::conflict(format!(
            "Only a running operation can be halted; this one is {}.",
            op.state.label().to_lowercase()
        )));
    }
    set_state(&mut tx, id, OperationState::Halted, now).await?;
    record_step(
        &mut tx,
        actor,
        id,
        "halted",
        &reason,
        AuditAction::OperationHalted,
        json!({ "by": "person" }),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Resumes a halted operation within its approval's lifetime.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn resume(
    delivery: &Delivery,
    auth: &Authorized<'_, SuperviseOperations>,
    id: &OperationId,
    reason: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let reason = bounded_text(reason, MAX_REASON_CHARS, "reason")?;
    let mut tx = auth.store().begin().await?;
    actor.recheck::<SuperviseOperations>(&mut tx).await?;
    let op = lock_operation(&mut tx, actor.org(), id).await?;
    if op.state != OperationState::Halted {
        return Err(ControlError::conflict(
            "Only a halted operation can be resumed.",
        ));
    }
    if op.approval_expires_at.is_none_or(|t| t <= now) {
        return Err(ControlError::conflict(
            "The approval has expired: propose the operation again.",
        ));
    }
    let waiting: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM operation_targets WHERE operation_id = $1 AND state = $2",
    )
    .bind(&id.0)
    .bind(TargetState::Waiting.as_str())
    .fetch_one(tx.conn())
    .await?;
    if waiting == 0 {
        return Err(ControlError::conflict(
            "Nothing is left to send: the error threshold skipped the remaining servers. Propose the operation again.",
        ));
    }
    set_state(&mut tx, id, OperationState::Dispatched, now).await?;
    record_step(
        &mut tx,
        actor,
        id,
        "resumed",
        &reason,
        AuditAction::OperationResumed,
        json!({}),
        now,
    )
    .await?;
    let wake = dispatch::advance_resumed(&mut tx, actor.org(), id, now).await?;
    tx.commit().await?;
    for agent in &wake {
        delivery.wake(agent);
    }
    Ok(())
}

pub(crate) async fn set_state(
    tx: &mut Tx,
    id: &OperationId,
    state: OperationState,
    now: Timestamp,
) -> Result<(), ControlError> {
    let finished = state.is_final().then_some(now.0);
    sqlx::query(
        "UPDATE operations SET state = $1, finished_at = COALESCE(finished_at, $2) WHERE id = $3",
    )
    .bind(state.as_str())
    .bind(finished)
    .bind(&id.0)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Moves every target still waiting to `to`.
async fn finish_untouched(
    tx: &mut Tx,
    id: &OperationId,
    to: TargetState,
) -> Result<u64, ControlError> {
    Ok(sqlx::query(
        "UPDATE operation_targets SET state = $1 WHERE operation_id = $2 AND state = $3",
    )
    .bind(to.as_str())
    .bind(&id.0)
    .bind(TargetState::Waiting.as_str())
    .execute(tx.conn())
    .await?
    .rows_affected())
}

#[derive(sqlx::FromRow)]
struct ViewRow {
    id: String,
    kind: String,
    args: String,
    risk: String,
    state: String,
    origin: String,
    proposed_by: Option<i64>,
    proposer_label: String,
    reason: String,
    evidence: Option<String>,
    self_approved: i64,
    selector: Option<String>,
    max_parallel: i64,
    error_threshold: i64,
    created_at: i64,
    approval_expires_at: Option<i64>,
}

const VIEW_COLUMNS: &str =
    "id, kind, args, risk, state, origin, proposed_by, proposer_label, reason, evidence, \
     self_approved, selector, max_parallel, error_threshold, created_at, approval_expires_at";

async fn view(store: &Store, r: ViewRow) -> Result<OperationView, ControlError> {
    let internal = |e: String| ControlError::Internal(e.into());
    let kind: OpKind = r
        .kind
        .parse()
        .map_err(|e: crate::OpError| internal(e.to_string()))?;
    let args: serde_json::Value = serde_json::from_str(&r.args).map_err(ControlError::internal)?;
    let summary = Operation::parse(kind.as_str(), &args)
        .map(|op| op.summary())
        .unwrap_or_else(|_| kind.as_str().to_string());
    let targets = sqlx::query(
        "SELECT t.agent_id AS agent_id, a.hostname AS hostname, a.production AS production, t.state AS state, \
         t.plan_hash AS plan_hash, t.command_id AS command_id \
         FROM operation_targets t JOIN agents a ON a.id = t.agent_id WHERE t.operation_id = $1 ORDER BY t.position",
    )
    .bind(&r.id)
    .fetch_all(store.pool())
    .await?
    .iter()
    .map(|t| {
        Ok(TargetView {
            agent: AgentId(t.try_get("agent_id")?),
            hostname: t.try_get("hostname")?,
            production: t.try_get::<i64, _>("production")? != 0,
            state: t
                .try_get::<String, _>("state")?
                .parse()
                .map_err(|e: crate::UnknownValue| internal(e.to_string()))?,
            plan_hash: t.try_get("plan_hash")?,
            command: t.try_get::<Option<String>, _>("command_id")?.map(crate::CommandId),
        })
    })
    .collect::<Result<Vec<_>, ControlError>>()?;
    let approvals = sqlx::query(
        "SELECT user_id, label, role, reason, at FROM operation_approvals WHERE operation_id = $1 ORDER BY at",
    )
    .bind(&r.id)
    .fetch_all(store.pool())
    .await?
    .iter()
    .map(|a| {
        Ok(ApprovalView {
            user: UserId(a.try_get("user_id")?),
            label: a.try_get("label")?,
            role: crate::access::parse_role(&a.try_get::<String, _>("role")?)?,
            reason: a.try_get("reason")?,
            at: Timestamp(a.try_get("at")?),
        })
    })
    .collect::<Result<Vec<_>, ControlError>>()?;
    Ok(OperationView {
        id: OperationId(r.id),
        kind,
        summary,
        args: r.args,
        risk: r
            .risk
            .parse()
            .map_err(|e: crate::OpError| internal(e.to_string()))?,
        state: r
            .state
            .parse()
            .map_err(|e: crate::UnknownValue| internal(e.to_string()))?,
        origin: r
            .origin
            .parse()
            .map_err(|e: crate::OpError| internal(e.to_string()))?,
        proposed_by: r.proposed_by.map(UserId),
        proposer: r.proposer_label,
        reason: r.reason,
        evidence: r.evidence,
        self_approved: r.self_approved != 0,
        selector: r.selector,
        max_parallel: r.max_parallel,
        error_threshold: r.error_threshold,
        created_at: Timestamp(r.created_at),
        approval_expires_at: r.approval_expires_at.map(Timestamp),
        targets,
        approvals,
    })
}

/// One operation of the caller's organisation.
pub async fn get(
    auth: &Authorized<'_, ReadOrg>,
    id: &OperationId,
) -> Result<OperationView, ControlError> {
    let row: ViewRow = sqlx::query_as(&format!(
        "SELECT {VIEW_COLUMNS} FROM operations WHERE id = $1 AND org_id = $2"
    ))
    .bind(&id.0)
    .bind(auth.actor().org().0)
    .fetch_optional(auth.store().pool())
    .await?
    .ok_or_else(|| ControlError::not_found("No such operation."))?;
    view(auth.store(), row).await
}

/// The operation's history, oldest first.
pub async fn timeline(
    auth: &Authorized<'_, ReadOrg>,
    id: &OperationId,
) -> Result<Vec<TimelineEntry>, ControlError> {
    let rows = sqlx::query(
        "SELECT e.at AS at, e.state AS state, e.agent_id AS agent_id, e.actor_label AS actor_label, e.reason AS reason \
         FROM operation_events e JOIN operations o ON o.id = e.operation_id \
         WHERE e.operation_id = $1 AND o.org_id = $2 ORDER BY e.id",
    )
    .bind(&id.0)
    .bind(auth.actor().org().0)
    .fetch_all(auth.store().pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(TimelineEntry {
                at: Timestamp(r.try_get("at")?),
                state: r.try_get("state")?,
                agent: r.try_get::<Option<String>, _>("agent_id")?.map(AgentId),
                actor: r.try_get("actor_label")?,
                reason: r.try_get("reason")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Proposals awaiting approval, oldest first.
pub async fn pending(
    auth: &Authorized<'_, ReadOrg>,
    limit: i64,
) -> Result<Vec<OperationView>, ControlError> {
    list(auth, Some(OperationState::Proposed), "created_at", limit).await
}

/// The latest operations in any state, newest first.
pub async fn recent(
    auth: &Authorized<'_, ReadOrg>,
    limit: i64,
) -> Result<Vec<OperationView>, ControlError> {
    list(auth, None, "created_at DESC", limit).await
}

async fn list(
    auth: &Authorized<'_, ReadOrg>,
    state: Option<OperationState>,
    order: &str,
    limit: i64,
) -> Result<Vec<OperationView>, ControlError> {
    let rows: Vec<ViewRow> = sqlx::query_as(&format!(
        "SELECT {VIEW_COLUMNS} FROM operations WHERE org_id = $1 AND ($2 = '' OR state = $2) \
         ORDER BY {order} LIMIT $3"
    ))
    .bind(auth.actor().org().0)
    .bind(state.map_or("", OperationState::as_str))
    .bind(limit.clamp(1, 200))
    .fetch_all(auth.store().pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(view(auth.store(), r).await?);
    }
    Ok(out)
}

/// How many proposals the caller could approve now (the nav badge): not
/// their own, and within what their role may approve.
pub async fn pending_count_for(auth: &Authorized<'_, ReadOrg>) -> Result<i64, ControlError> {
    let actor = auth.actor();
    if actor.role() == Role::Viewer {
        return Ok(0);
    }
    let rows = sqlx::query(
        "SELECT o.risk AS risk, o.proposed_by AS proposed_by, \
         (SELECT COUNT(*) FROM operation_targets t JOIN agents a ON a.id = t.agent_id \
          WHERE t.operation_id = o.id AND a.production = 1) AS production \
         FROM operations o WHERE o.org_id = $1 AND o.state = $2",
    )
    .bind(actor.org().0)
    .bind(OperationState::Proposed.as_str())
    .fetch_all(auth.store().pool())
    .await?;
    let mut n = 0;
    for r in rows {
        let risk: Risk = r
            .try_get::<String, _>("risk")?
            .parse()
            .map_err(|e: crate::OpError| ControlError::Internal(e.to_string().into()))?;
        let own = r.try_get::<Option<i64>, _>("proposed_by")? == Some(actor.user().0);
        let production = r.try_get::<i64, _>("production")? > 0;
        if !own && approval_refusal(actor.role(), risk, production).is_none() {
            n += 1;
        }
    }
    Ok(n)
}
