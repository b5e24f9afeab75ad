//! Server functions for operations and approvals: who is asking, one
//! `control` call, the view. Every rule (roles, risk, production, expiry,
//! own proposals) is enforced in `control::operations`; the flags returned
//! for buttons only mirror it.

// The propose endpoints take one argument per form field. `#[server]` does
// not carry an item's `allow` over to the browser's copy of the function it
// generates, so the browser build allows it for this module.
#![cfg_attr(feature = "hydrate", allow(clippy::too_many_arguments))]

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

/// The audit target a refusal names for a request about operation `raw`
/// (empty when `raw` is not an operation id).
#[cfg(feature = "ssr")]
fn operation_target(raw: &str) -> String {
    control::OperationId::parse(raw.trim())
        .map(|id| format!("operation:{}", id.0))
        .unwrap_or_default()
}

/// The audit target a refusal names for a request about server `raw`
/// (empty when `raw` is not a server id).
#[cfg(feature = "ssr")]
pub(crate) fn agent_target(raw: &str) -> String {
    control::AgentId::parse(raw)
        .map(|id| format!("agent:{}", id.0))
        .unwrap_or_default()
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
    selector: Option<String>,
) -> Result<String, AppError> {
    if args.len() > 64 * 1024 {
        return Err(AppError::Invalid("args: at most 64 KiB of JSON.".into()));
    }
    let json: serde_json::Value = if args.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(&args)
            .map_err(|_| AppError::Invalid("args: not a JSON object.".into()))?
    };
    let id = submit_proposal(Submission {
        targets: &targets,
        kind: &kind,
        args: &json,
        reason,
        idempotency_key,
        concurrency: concurrency.as_deref(),
        error_threshold: error_threshold.as_deref(),
        run_now: is_checked(run_now.as_deref()),
        selector: selector.as_deref(),
    })
    .await?;
    Ok(id.0)
}

/// The server page's propose form: one server, the arguments as separate
/// fields (so the form works without JavaScript). Only the fields `kind`
/// takes are used ([`form_args`]); the catalogue checks them. Goes on to the
/// new operation's page.
#[allow(clippy::too_many_arguments)]
#[server(endpoint = "propose-on-server")]
pub async fn propose_on_server(
    server: String,
    kind: String,
    reason: String,
    unit: Option<String>,
    profile: Option<String>,
    package: Option<String>,
    version: Option<String>,
    path: Option<String>,
    steps: Option<String>,
    run_now: Option<String>,
) -> Result<String, AppError> {
    let fields = FormFields {
        unit: unit.as_deref(),
        profile: profile.as_deref(),
        package: package.as_deref(),
        version: version.as_deref(),
        path: path.as_deref(),
        steps: steps.as_deref(),
    };
    let id = submit_proposal(Submission {
        targets: &server,
        kind: &kind,
        args: &form_args(&kind, &fields)?,
        reason,
        idempotency_key: None,
        concurrency: None,
        error_threshold: None,
        run_now: is_checked(run_now.as_deref()),
        selector: None,
    })
    .await?;
    leptos_axum::redirect(&format!("/operations/{}", id.0));
    Ok(id.0)
}

/// A checkbox's value: `true` (or the browser's default `on`) when ticked.
#[cfg_attr(not(feature = "ssr"), allow(dead_code))]
fn is_checked(value: Option<&str>) -> bool {
    value.is_some_and(|v| v == "true" || v == "on")
}

/// The argument fields of the propose form; empty ones count as absent.
#[derive(Clone, Copy, Debug, Default)]
pub struct FormFields<'a> {
    pub unit: Option<&'a str>,
    pub profile: Option<&'a str>,
    pub package: Option<&'a str>,
    pub version: Option<&'a str>,
    pub path: Option<&'a str>,
    /// A plan's steps, as JSON: `[{"kind": ..., "args": {...}}, ...]`.
    pub steps: Option<&'a str>,
}

/// The JSON arguments of `kind` from the form's fields: each kind takes only
/// its own fields (a unit left selected for another kind is not sent). An
/// unknown kind gets `{}`, and the catalogue refuses the kind itself. A
/// plan's steps must be JSON; the catalogue checks what they say.
pub fn form_args(kind: &str, f: &FormFields<'_>) -> Result<serde_json::Value, AppError> {
    use control::OpKind;
    let mut args = serde_json::Map::new();
    let mut put = |key: &str, value: Option<&str>| {
        if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) {
            args.insert(key.to_string(), serde_json::Value::String(v.to_string()));
        }
    };
    match kind.parse::<OpKind>() {
        Ok(OpKind::ServiceStatus | OpKind::RestartService) => put("unit", f.unit),
        Ok(OpKind::RunBackup) => put("profile", f.profile),
        Ok(OpKind::InstallPackage) => {
            put("name", f.package);
            put("version", f.version);
        }
        Ok(OpKind::ReadFile) => put("path", f.path),
        Ok(OpKind::RunPlan) => {
            if let Some(text) = f.steps.map(str::trim).filter(|t| !t.is_empty()) {
                if text.len() > MAX_STEPS_TEXT {
                    return Err(AppError::Invalid(format!(
                        "steps: at most {MAX_STEPS_TEXT} bytes of JSON."
                    )));
                }
                let steps: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| AppError::Invalid(format!("steps: not valid JSON ({e}).")))?;
                args.insert("steps".into(), steps);
            }
        }
        Ok(OpKind::DiskUsage) | Err(_) => {}
    }
    Ok(serde_json::Value::Object(args))
}

/// Longest plan the form takes (20 steps fit easily).
pub const MAX_STEPS_TEXT: usize = 16 * 1024;

/// A proposal as the two propose endpoints receive it.
#[cfg(feature = "ssr")]
struct Submission<'a> {
    targets: &'a str,
    kind: &'a str,
    args: &'a serde_json::Value,
    reason: String,
    idempotency_key: Option<String>,
    concurrency: Option<&'a str>,
    error_threshold: Option<&'a str>,
    run_now: bool,
    /// `key=value,...` labels choosing the targets instead of `targets`.
    selector: Option<&'a str>,
}

/// Parses a submission and hands it to `control::operations`.
#[cfg(feature = "ssr")]
async fn submit_proposal(s: Submission<'_>) -> Result<control::OperationId, AppError> {
    use control::operations::{self, Parallel, Proposal, ProposeOperations};
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<ProposeOperations>()?;
    let op = control::Operation::parse(s.kind.trim(), s.args)
        .map_err(|e| AppError::Invalid(format!("{}: {}", e.field, e.message)))?;
    let targets: Vec<control::AgentId> = s
        .targets
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            control::AgentId::parse(t)
                .ok_or_else(|| AppError::Invalid("targets: a server id is malformed.".to_string()))
        })
        .collect::<Result<_, _>>()?;
    let bad_concurrency =
        || AppError::Invalid("concurrency: a count or a percentage such as 25%.".into());
    let parallel = match s.concurrency.map(str::trim) {
        None | Some("") => Parallel::Count(1),
        Some("all") => Parallel::Unlimited,
        Some(p) => match p.strip_suffix('%') {
            Some(pct) => Parallel::Percent(pct.trim().parse().map_err(|_| bad_concurrency())?),
            None => Parallel::Count(p.parse().map_err(|_| bad_concurrency())?),
        },
    };
    let error_threshold = match s.error_threshold.map(str::trim) {
        None | Some("") => 0,
        Some(t) => t.parse().map_err(|_| {
            AppError::Invalid("error_threshold: a whole number of failed servers.".into())
        })?,
    };
    let proposal = Proposal {
        op,
        targets,
        reason: s.reason,
        idempotency_key: s.idempotency_key,
        parallel,
        error_threshold,
    };
    Ok(match s.selector.map(str::trim).filter(|x| !x.is_empty()) {
        Some(_) if s.run_now => {
            return Err(AppError::Invalid(
                "selector: running your own operation takes a list of servers.".into(),
            ))
        }
        Some(selector) => operations::propose_selected(&auth, selector, proposal, cx.now).await?,
        None if s.run_now => {
            operations::run_own(&cx.state.delivery, &auth, proposal, cx.now).await?
        }
        None => operations::propose(&auth, proposal, cx.now).await?,
    })
}

#[server(endpoint = "approve-operation")]
pub async fn approve_operation(id: String, reason: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth =
        actor.authorize_on::<control::operations::DecideOperations>(&operation_target(&id))?;
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
    let auth =
        actor.authorize_on::<control::operations::DecideOperations>(&operation_target(&id))?;
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
    let auth =
        actor.authorize_on::<control::operations::SuperviseOperations>(&operation_target(&id))?;
    control::operations::halt(&auth, &operation_id(&id)?, &reason, cx.now).await?;
    Ok(())
}

#[server(endpoint = "resume-operation")]
pub async fn resume_operation(id: String, reason: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth =
        actor.authorize_on::<control::operations::SuperviseOperations>(&operation_target(&id))?;
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
            // The final report, or the live output while it runs.
            Some(c) => control::commands::output(&auth, c, cx.now).await?,
            None => None,
        });
    }
    let me = control::Me {
        user_id: actor.user(),
        email: actor.email().to_string(),
        org: actor.org_view().clone(),
        orgs: Vec::new(),
        mfa_due: actor.mfa_due(),
        sso_due: actor.sso_due(),
        unread_notices: 0,
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

/// The latest operations, newest first: `limit` of them (default 50).
#[server(endpoint = "recent-operations")]
pub async fn recent_operations(limit: Option<u32>) -> Result<Vec<OperationView>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    let limit = i64::from(limit.unwrap_or(50));
    Ok(control::operations::recent(&auth, limit).await?)
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
    let auth =
        actor.authorize_on::<control::agents::ManageAgents>(&crate::ops_api::agent_target(&id))?;
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
    let auth =
        actor.authorize_on::<control::agents::ManageAgents>(&crate::ops_api::agent_target(&id))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_kind_takes_only_its_own_fields() {
        let f = FormFields {
            unit: Some("nginx.service"),
            profile: Some("nightly"),
            package: Some(" htop "),
            version: Some(""),
            path: Some("/etc/hosts"),
            steps: Some(r#"[{"kind": "disk_usage"}]"#),
        };
        assert_eq!(
            form_args("restart_service", &f).unwrap(),
            json!({"unit": "nginx.service"})
        );
        assert_eq!(
            form_args("service_status", &f).unwrap(),
            json!({"unit": "nginx.service"})
        );
        assert_eq!(
            form_args("run_backup", &f).unwrap(),
            json!({"profile": "nightly"})
        );
        assert_eq!(
            form_args("install_package", &f).unwrap(),
            json!({"name": "htop"})
        );
        let pinned = FormFields {
            version: Some("1.2"),
            ..f
        };
        assert_eq!(
            form_args("install_package", &pinned).unwrap(),
            json!({"name": "htop", "version": "1.2"})
        );
        assert_eq!(
            form_args("read_file", &f).unwrap(),
            json!({"path": "/etc/hosts"})
        );
        assert_eq!(form_args("disk_usage", &f).unwrap(), json!({}));
        assert_eq!(form_args("reboot", &f).unwrap(), json!({}));
        assert_eq!(
            form_args("run_plan", &f).unwrap(),
            json!({"steps": [{"kind": "disk_usage"}]})
        );
        let broken = FormFields {
            steps: Some("[{\"kind\": "),
            ..f
        };
        let err = form_args("run_plan", &broken).unwrap_err();
        assert!(
            matches!(&err, AppError::Invalid(m) if m.starts_with("steps: not valid JSON")),
            "{err:?}"
        );
    }

    #[test]
    fn form_arguments_pass_the_catalogue() {
        let f = FormFields {
            unit: Some("nginx.service"),
            package: Some("htop"),
            ..FormFields::default()
        };
        for kind in ["restart_service", "install_package", "disk_usage"] {
            let op = control::Operation::parse(kind, &form_args(kind, &f).unwrap()).unwrap();
            assert_eq!(op.kind().as_str(), kind);
        }
        // A missing required field is the catalogue's to refuse, by name.
        let err = control::Operation::parse(
            "restart_service",
            &form_args("restart_service", &FormFields::default()).unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.field, "unit");
        // A plan's bad step is named by its place.
        let plan = FormFields {
            steps: Some(
                r#"[{"kind": "disk_usage"}, {"kind": "restart_service", "args": {"unit": "../../etc"}}]"#,
            ),
            ..FormFields::default()
        };
        let err = control::Operation::parse("run_plan", &form_args("run_plan", &plan).unwrap())
            .unwrap_err();
        assert_eq!(err.field, "steps[1].unit");
    }

    #[test]
    fn a_checkbox_counts_when_ticked() {
        assert!(is_checked(Some("true")) && is_checked(Some("on")));
        assert!(!is_checked(None) && !is_checked(Some("")) && !is_checked(Some("false")));
    }
}

/// Schedules a server's deletion after the grace period (Owner, Admin);
/// `name` must be its hostname, typed. Returns when it will be purged.
#[server(endpoint = "delete-server")]
pub async fn delete_server(id: String, name: String) -> Result<control::Timestamp, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth =
        actor.authorize_on::<control::agents::ManageAgents>(&crate::ops_api::agent_target(&id))?;
    let id =
        control::AgentId::parse(&id).ok_or_else(|| AppError::NotFound("No such server.".into()))?;
    let after = control::agents::deletion::schedule(&auth, &id, &name, cx.now).await?;
    cx.state.delivery.wake(&id);
    Ok(after)
}

/// Restores a server scheduled for deletion, within the grace period.
#[server(endpoint = "restore-server")]
pub async fn restore_server(id: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth =
        actor.authorize_on::<control::agents::ManageAgents>(&crate::ops_api::agent_target(&id))?;
    let id =
        control::AgentId::parse(&id).ok_or_else(|| AppError::NotFound("No such server.".into()))?;
    control::agents::deletion::restore(&auth, &id, cx.now).await?;
    Ok(())
}

/// Replaces a server's labels (Owner, Admin): `labels` is `key=value` pairs
/// separated by commas.
#[server(endpoint = "set-labels")]
pub async fn set_labels(id: String, labels: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth =
        actor.authorize_on::<control::agents::ManageAgents>(&crate::ops_api::agent_target(&id))?;
    let id =
        control::AgentId::parse(&id).ok_or_else(|| AppError::NotFound("No such server.".into()))?;
    let mut map = std::collections::BTreeMap::new();
    for term in labels.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (k, v) = term.split_once('=').ok_or_else(|| {
            AppError::Invalid("labels: write key=value pairs separated by commas.".into())
        })?;
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    control::operations::settings::set_labels(&auth, &id, &map, cx.now).await?;
    Ok(())
}
