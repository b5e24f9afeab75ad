//! Server functions for operations and approvals: who is asking, one
//! `control` call, the view. Every rule (roles, risk, production, expiry,
//! own proposals) is enforced in `control::operations`; the flags returned
//! for buttons only mirror it.

use control::{OperationView, OrgPolicy, TimelineEntry};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::AppError;

/// An operation with its history and what the viewer may do with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationPage {
    pub op: OperationView,
    pub timeline: Vec<TimelineEntry>,
    /// Each target's output so far (by target order), once its command reported.
    pub outputs: Vec<Option<String>>,
    pub can_decide: bool,
    /// Why the viewer may not approve, when they could otherwise (shown as a note).
    pub decide_refusal: Option<String>,
    pub can_cancel: bool,
    pub can_supervise: bool,
}

#[cfg(feature = "ssr")]
fn operation_id(raw: &str) -> Result<control::OperationId, AppError> {
    control::OperationId::parse(raw.trim())
        .ok_or_else(|| AppError::NotFound("No such operation.".into()))
}

/// Whether `me` may approve or reject `op`, and if not why (mirrors
/// `control::operations::approve`).
pub fn decision_refusal(me: &control::Me, op: &OperationView) -> Option<String> {
    if op.state != control::OperationState::Proposed {
        return Some("Not awaiting approval.".into());
    }
    if op.proposed_by == Some(me.user_id) {
        return Some("Nobody approves their own proposal.".into());
    }
    if op.origin == control::Origin::Pilot && op.touches_production() {
        return Some(
            "Production Protection: the AI Pilot's operations never run on a production server."
                .into(),
        );
    }
    control::approval_refusal(me.org.role, op.risk, op.touches_production()).map(String::from)
}

/// Proposes an operation (or, with `run_now`, runs your own as self-approved).
/// `targets` is a comma-separated list of server ids; `args` a JSON object;
/// `concurrency` a count (`2`) or a percentage (`25%`).
#[allow(clippy::too_many_arguments)]
#[server(endpoint = "propose-operation")]
pub async fn propose_operation(
    targets: String,
    kind: String,
    args: String,
    reason: String,
    idempotency_key: Option<String>,
    concurrency: Option<String>,
    error_threshold: Option<String>,
    run_now: Option<String>,
) -> Result<String, AppError> {
    use control::operations::{self, Parallel, Proposal, ProposeOperations};
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<ProposeOperations>()?;
    if args.len() > 64 * 1024 {
        return Err(AppError::Invalid("args: at most 64 KiB of JSON.".into()));
    }
    let json: serde_json::Value = if args.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(&args)
            .map_err(|_| AppError::Invalid("args: not a JSON object.".into()))?
    };
    let op = control::Operation::parse(kind.trim(), &json)
        .map_err(|e| AppError::Invalid(format!("{}: {}", e.field, e.message)))?;
    let targets: Vec<control::AgentId> = targets
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            control::AgentId::parse(t)
                .ok_or_else(|| AppError::Invalid("targets: a server id is malformed.".to_string()))
        })
        .collect::<Result<_, _>>()?;
    let parallel = match concurrency.as_deref().map(str::trim) {
        None | Some("") => Parallel::Count(1),
        Some(p) => match p.strip_suffix('%') {
            Some(pct) => Parallel::Percent(pct.trim().parse().map_err(|_| {
                AppError::Invalid("concurrency: a count or a percentage such as 25%.".into())
            })?),
            None => Parallel::Count(p.parse().map_err(|_| {
                AppError::Invalid("concurrency: a count or a percentage such as 25%.".into())
            })?),
        },
    };
    let error_threshold = match error_threshold.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(t) => t.parse().map_err(|_| {
            AppError::Invalid("error_threshold: a whole number of failed servers.".into())
        })?,
    };
    let proposal = Proposal {
        op,
        targets,
        reason,
        idempotency_key,
        parallel,
        error_threshold,
    };
    let id = if run_now.as_deref().is_some_and(|v| v == "true" || v == "on") {
        operations::run_own(&cx.state.delivery, &auth, proposal, cx.now).await?
    } else {
        operations::propose(&auth, proposal, cx.now).await?
    };
    Ok(id.0)
}

#[server(endpoint = "approve-operation")]
pub async fn approve_operation(id: String, reason: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::operations::DecideOperations>()?;
    control::operations::approve(
        &cx.state.delivery,
        &auth,
        &operation_id(&id)?,
        &reason,
        cx.now,
    )
    .await?;
    Ok(())
}

#[server(endpoint = "reject-operation")]
pub async fn reject_operation(id: String, reason: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::operations::DecideOperations>()?;
    control::operations::reject(&auth, &operation_id(&id)?, &reason, cx.now).await?;
    Ok(())
}

#[server(endpoint = "cancel-operation")]
pub async fn cancel_operation(id: String, reason: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    control::operations::cancel(&auth, &operation_id(&id)?, &reason, cx.now).await?;
    Ok(())
}

#[server(endpoint = "halt-operation")]
pub async fn halt_operation(id: String, reason: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::operations::SuperviseOperations>()?;
    control::operations::halt(&auth, &operation_id(&id)?, &reason, cx.now).await?;
    Ok(())
}

#[server(endpoint = "resume-operation")]
pub async fn resume_operation(id: String, reason: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::operations::SuperviseOperations>()?;
    control::operations::resume(
        &cx.state.delivery,
        &auth,
        &operation_id(&id)?,
        &reason,
        cx.now,
    )
    .await?;
    Ok(())
}

/// One operation with its history, outputs and what the viewer may do.
#[server(endpoint = "operation")]
pub async fn operation(id: String) -> Result<OperationPage, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    let id = operation_id(&id)?;
    let op = control::operations::get(&auth, &id).await?;
    let timeline = control::operations::timeline(&auth, &id).await?;
    let mut outputs = Vec::with_capacity(op.targets.len());
    for t in &op.targets {
        outputs.push(match &t.command {
            Some(c) => {
                control::commands::command_state(&auth, c, cx.now)
                    .await?
                    .result
            }
            None => None,
        });
    }
    let me = control::Me {
        user_id: actor.user(),
        email: actor.email().to_string(),
        org: actor.org_view().clone(),
        orgs: Vec::new(),
    };
    let refusal = decision_refusal(&me, &op);
    let supervise = actor.role().manages_members();
    let can_cancel = !op.state.is_final()
        && (supervise
            || (op.proposed_by == Some(actor.user()) && actor.role() != control::Role::Viewer));
    Ok(OperationPage {
        can_decide: refusal.is_none(),
        decide_refusal: refusal.filter(|_| {
            actor.role() != control::Role::Viewer && op.state == control::OperationState::Proposed
        }),
        can_cancel,
        can_supervise: supervise,
        op,
        timeline,
        outputs,
    })
}

/// Proposals awaiting approval, oldest first.
#[server(endpoint = "pending-operations")]
pub async fn pending_operations() -> Result<Vec<OperationView>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    Ok(control::operations::pending(&auth, 100).await?)
}

/// The latest operations, newest first.
#[server(endpoint = "recent-operations")]
pub async fn recent_operations() -> Result<Vec<OperationView>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    Ok(control::operations::recent(&auth, 50).await?)
}

/// How many proposals the viewer could approve now (the nav badge).
#[server(endpoint = "pending-count")]
pub async fn pending_count() -> Result<i64, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    Ok(control::operations::pending_count_for(&auth).await?)
}

/// Turns Production Protection on or off for a server (Owner, Admin).
#[server(endpoint = "set-production")]
pub async fn set_production(id: String, on: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::agents::ManageAgents>()?;
    let id =
        control::AgentId::parse(&id).ok_or_else(|| AppError::NotFound("No such server.".into()))?;
    control::operations::settings::set_production(&auth, &id, on == "true", cx.now).await?;
    Ok(())
}

/// Turns AI File Access on or off for a server (Owner, Admin).
#[server(endpoint = "set-file-access")]
pub async fn set_file_access(id: String, on: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::agents::ManageAgents>()?;
    let id =
        control::AgentId::parse(&id).ok_or_else(|| AppError::NotFound("No such server.".into()))?;
    control::operations::settings::set_file_access(&auth, &id, on == "true", cx.now).await?;
    Ok(())
}

/// The organisation's rules for operations.
#[server(endpoint = "operations-policy")]
pub async fn operations_policy() -> Result<OrgPolicy, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    Ok(control::operations::settings::policy(&auth).await?)
}

/// What the AI Pilot found on a server lately, newest first.
#[server(endpoint = "pilot-findings")]
pub async fn pilot_findings(id: String) -> Result<Vec<control::FindingView>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    let id =
        control::AgentId::parse(&id).ok_or_else(|| AppError::NotFound("No such server.".into()))?;
    Ok(control::operations::pilot::recent_findings(&auth, &id, 10).await?)
}
