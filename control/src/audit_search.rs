//! The Audit page's reads: filtered, keyset-paginated lists of an
//! organisation's events (newest first, stable while new events arrive), and
//! one event with every field and its hashes.

use sqlx::Row;

use crate::access::{Authorized, ReadOrg};
use crate::audit::AuditAction;
use crate::audit_export::parse_time;
use crate::{
    AgentId, AuditEventDetail, AuditEventView, AuditFilterText, AuditResults, ControlError,
    OperationId, Timestamp,
};

/// Events per page.
pub const PAGE: i64 = 50;
/// Longest free text searched.
pub const MAX_TEXT: usize = 200;

/// The actions of a group (see [`crate::AUDIT_GROUPS`]).
pub fn group_actions(group: &str) -> Option<Vec<&'static str>> {
    use AuditAction as A;
    let actions: &[AuditAction] = match group {
        "sign-in" => &[
            A::LoginSucceeded,
            A::LoginFailed,
            A::LoggedOut,
            A::OtherSessionsRevoked,
        ],
        "team" => &[
            A::SetupCompleted,
            A::OrgCreated,
            A::UserCreated,
            A::MemberAdded,
            A::InviteCreated,
            A::InviteRevoked,
            A::InviteAccepted,
            A::RoleChanged,
            A::MemberRemoved,
            A::AccessRefused,
        ],
        "servers" => &[
            A::RegistrationTokenCreated,
            A::RegistrationTokenRevoked,
            A::AgentRegistered,
            A::AgentRegistrationRefused,
            A::AgentRevoked,
            A::AgentCapabilitiesChanged,
            A::ServerProductionChanged,
            A::ServerFileAccessChanged,
            A::ServerDeletionScheduled,
            A::ServerRestored,
            A::ServerPurged,
            A::ServerLabelsChanged,
        ],
        "keys" => &[
            A::KeyRotationRequested,
            A::PqcActivationRequested,
            A::KeysRotated,
            A::KeysRegistered,
            A::PqcActivated,
            A::CertRenewed,
        ],
        "operations" => &[
            A::CommandQueued,
            A::CommandFinished,
            A::AgentCommandRefused,
            A::OperationProposed,
            A::OperationRefused,
            A::OperationCancelled,
            A::OperationHalted,
            A::OperationResumed,
            A::OperationFinished,
            A::OperationExpired,
            A::PolicyChanged,
        ],
        "approvals" => &[A::OperationApproved, A::OperationRejected],
        "audit" => &[A::AuditExported, A::ForwardingAdded, A::ForwardingRemoved],
        _ => return None,
    };
    Some(actions.iter().map(|a| a.as_str()).collect())
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// `%` and `_` match themselves in a LIKE pattern (escaped with `\`).
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

enum Bind {
    Int(i64),
    Text(String),
}

/// The caller's organisation's events matching `filter`, newest first, a
/// page at a time. Each bad filter is refused naming it.
pub async fn search(
    auth: &Authorized<'_, ReadOrg>,
    filter: &AuditFilterText,
) -> Result<AuditResults, ControlError> {
    let mut sql = String::from(
        "SELECT seq, at, actor, ip, user_agent, action, target, details FROM audit_events WHERE org_id = $1",
    );
    let mut binds = vec![Bind::Int(auth.actor().org().0)];
    let mut push = |sql: &mut String, clause: &str, b: Bind| {
        binds.push(b);
        sql.push_str(&clause.replace('?', &format!("${}", binds.len())));
    };
    if let Some(before) = given(&filter.before) {
        let seq = before
            .parse::<i64>()
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| {
                ControlError::invalid("before: not a page of this log (a positive event number).")
            })?;
        push(&mut sql, " AND seq < ?", Bind::Int(seq));
    }
    if let Some(actor) = given(&filter.actor) {
        if actor.len() > 320 {
            return Err(ControlError::invalid("actor: at most 320 characters."));
        }
        push(&mut sql, " AND actor = ?", Bind::Text(actor.to_string()));
    }
    if let Some(group) = given(&filter.group) {
        let actions = group_actions(group)
            .ok_or_else(|| ControlError::invalid("group: not an action group of this log."))?;
        sql.push_str(" AND action IN (");
        for (i, a) in actions.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            push(&mut sql, "?", Bind::Text((*a).to_string()));
        }
        sql.push(')');
    }
    if let Some(server) = given(&filter.server) {
        let agent = AgentId::parse(server)
            .ok_or_else(|| ControlError::invalid("server: not a server id."))?;
        push(
            &mut sql,
            " AND target = ?",
            Bind::Text(format!("agent:{}", agent.0)),
        );
    }
    if let Some(op) = given(&filter.operation) {
        let op = OperationId::parse(op)
            .ok_or_else(|| ControlError::invalid("operation: not an operation id."))?;
        push(
            &mut sql,
            " AND target = ?",
            Bind::Text(format!("operation:{}", op.0)),
        );
    }
    for (value, name, clause) in [
        (&filter.since, "since", " AND at >= ?"),
        (&filter.until, "until", " AND at < ?"),
    ] {
        if let Some(v) = given(value) {
            let t: Timestamp =
                parse_time(v).map_err(|e| ControlError::invalid(format!("{name}: {e}.")))?;
            push(&mut sql, clause, Bind::Int(t.0));
        }
    }
    if let Some(text) = given(&filter.text) {
        if text.chars().count() > MAX_TEXT {
            return Err(ControlError::invalid(format!(
                "text: at most {MAX_TEXT} characters."
            )));
        }
        let pattern = like_pattern(text);
        sql.push_str(" AND (");
        for (i, column) in ["actor", "action", "target", "details"].iter().enumerate() {
            if i > 0 {
                sql.push_str(" OR ");
            }
            push(
                &mut sql,
                &format!("{column} LIKE ? ESCAPE '\\'"),
                Bind::Text(pattern.clone()),
            );
        }
        sql.push(')');
    }
    push(&mut sql, " ORDER BY seq DESC LIMIT ?", Bind::Int(PAGE + 1));
    let mut q = sqlx::query(&sql);
    for b in &binds {
        q = match b {
            Bind::Int(v) => q.bind(*v),
            Bind::Text(v) => q.bind(v.as_str()),
        };
    }
    let rows = q.fetch_all(auth.store().pool()).await?;
    let mut events = rows
        .iter()
        .map(view)
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let next = if events.len() as i64 > PAGE {
        events.truncate(PAGE as usize);
        events.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(AuditResults { events, next })
}

/// An event row as the pages show it.
pub(crate) fn view(r: &sqlx::any::AnyRow) -> Result<AuditEventView, sqlx::Error> {
    Ok(AuditEventView {
        seq: r.try_get("seq")?,
        at: Timestamp(r.try_get("at")?),
        actor: r.try_get("actor")?,
        ip: r.try_get("ip")?,
        user_agent: r.try_get("user_agent")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        details: r.try_get("details")?,
    })
}

/// One event of the caller's organisation, with its hashes.
pub async fn event(
    auth: &Authorized<'_, ReadOrg>,
    seq: i64,
) -> Result<AuditEventDetail, ControlError> {
    let r = sqlx::query(
        "SELECT seq, at, actor_user_id, actor, ip, user_agent, action, target, details, prev_hash, hash \
         FROM audit_events WHERE org_id = $1 AND seq = $2",
    )
    .bind(auth.actor().org().0)
    .bind(seq)
    .fetch_optional(auth.store().pool())
    .await?
    .ok_or_else(|| ControlError::not_found("No such event in this organisation's log."))?;
    Ok(AuditEventDetail {
        event: view(&r)?,
        actor_user_id: r.try_get("actor_user_id")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// When the caller's organisation's oldest event was recorded.
pub async fn oldest(auth: &Authorized<'_, ReadOrg>) -> Result<Option<Timestamp>, ControlError> {
    let at: Option<i64> =
        sqlx::query_scalar("SELECT at FROM audit_events WHERE org_id = $1 ORDER BY seq LIMIT 1")
            .bind(auth.actor().org().0)
            .fetch_optional(auth.store().pool())
            .await?;
    Ok(at.map(Timestamp))
}
