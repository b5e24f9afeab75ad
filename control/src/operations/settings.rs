//! The settings operations read: the organisation's policy, and each
//! server's Production Protection, AI File Access and declared capabilities.
//! Owners and Admins change them; every change is audited in its transaction.

use serde_json::json;
use sqlx::Row;

use crate::access::{Authorized, ReadOrg};
use crate::agents::{AgentSession, ManageAgents};
use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::store::Tx;
use crate::{AgentId, Capabilities, ControlError, OrgId, OrgPolicy, Risk, Timestamp};

/// Longest approval lifetime an organisation may set (a week).
pub const MAX_APPROVAL_TTL_SECS: i64 = 7 * 86_400;
/// Longest grace period for a deleted server (90 days).
pub const MAX_DELETE_GRACE_SECS: i64 = 90 * 86_400;

/// The organisation's policy, read inside `tx` (defaults when never set).
pub(crate) async fn read_policy(tx: &mut Tx, org: OrgId) -> Result<OrgPolicy, ControlError> {
    read_policy_with(tx.conn(), org).await
}

async fn read_policy_with<'e, E>(e: E, org: OrgId) -> Result<OrgPolicy, ControlError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(
        "SELECT approval_ttl_secs, two_person_from, pilot_enabled, production_default, delete_grace_secs \
         FROM org_policies WHERE org_id = $1",
    )
    .bind(org.0)
    .fetch_optional(e)
    .await?;
    let Some(r) = row else {
        return Ok(OrgPolicy::default());
    };
    Ok(OrgPolicy {
        approval_ttl_secs: r.try_get("approval_ttl_secs")?,
        two_person_from: r
            .try_get::<Option<String>, _>("two_person_from")?
            .map(|s| s.parse::<Risk>())
            .transpose()
            .map_err(|e| ControlError::Internal(e.to_string().into()))?,
        pilot_enabled: r.try_get::<i64, _>("pilot_enabled")? != 0,
        production_default: r.try_get::<i64, _>("production_default")? != 0,
        delete_grace_secs: r.try_get("delete_grace_secs")?,
    })
}

/// The caller's organisation's policy.
pub async fn policy(auth: &Authorized<'_, ReadOrg>) -> Result<OrgPolicy, ControlError> {
    read_policy_with(auth.store().pool(), auth.actor().org()).await
}

/// Changes the organisation's policy (Owner, Admin).
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn set_policy(
    auth: &Authorized<'_, ManageAgents>,
    policy: OrgPolicy,
    now: Timestamp,
) -> Result<(), ControlError> {
    if !(60..=MAX_APPROVAL_TTL_SECS).contains(&policy.approval_ttl_secs) {
        return Err(ControlError::invalid(format!(
            "approval_ttl_secs: between 60 and {MAX_APPROVAL_TTL_SECS} seconds."
        )));
    }
    if !(3600..=MAX_DELETE_GRACE_SECS).contains(&policy.delete_grace_secs) {
        return Err(ControlError::invalid(format!(
            "delete_grace_secs: between 3600 and {MAX_DELETE_GRACE_SECS} seconds."
        )));
    }
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ManageAgents>(&mut tx).await?;
    let before = read_policy(&mut tx, actor.org()).await?;
    sqlx::query("DELETE FROM org_policies WHERE org_id = $1")
        .bind(actor.org().0)
        .execute(tx.conn())
        .await?;
    sqlx::query(
        "INSERT INTO org_policies (org_id, approval_ttl_secs, two_person_from, pilot_enabled, production_default, \
         delete_grace_secs, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(actor.org().0)
    .bind(policy.approval_ttl_secs)
    .bind(policy.two_person_from.map(Risk::as_str))
    .bind(i64::from(policy.pilot_enabled))
    .bind(i64::from(policy.production_default))
    .bind(policy.delete_grace_secs)
    .bind(now.0)
    .execute(tx.conn())
    .await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::PolicyChanged,
            format!("org:{}", actor.org().0),
            json!({ "before": before, "after": policy }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn set_flag(
    auth: &Authorized<'_, ManageAgents>,
    agent: &AgentId,
    column: &'static str,
    action: AuditAction,
    on: bool,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ManageAgents>(&mut tx).await?;
    let changed = sqlx::query(&format!(
        "UPDATE agents SET {column} = $1 WHERE id = $2 AND org_id = $3 AND revoked_at IS NULL"
    ))
    .bind(i64::from(on))
    .bind(&agent.0)
    .bind(actor.org().0)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(ControlError::not_found("No such active server."));
    }
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            action,
            format!("agent:{}", agent.0),
            json!({ "on": on }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Turns Production Protection on or off for a server (Owner, Admin).
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn set_production(
    auth: &Authorized<'_, ManageAgents>,
    agent: &AgentId,
    on: bool,
    now: Timestamp,
) -> Result<(), ControlError> {
    set_flag(
        auth,
        agent,
        "production",
        AuditAction::ServerProductionChanged,
        on,
        now,
    )
    .await
}

/// Turns AI File Access (`read_file`) on or off for a server (Owner, Admin).
/// The agent's own config must allow it too.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn set_file_access(
    auth: &Authorized<'_, ManageAgents>,
    agent: &AgentId,
    on: bool,
    now: Timestamp,
) -> Result<(), ControlError> {
    set_flag(
        auth,
        agent,
        "file_access",
        AuditAction::ServerFileAccessChanged,
        on,
        now,
    )
    .await
}

/// Stores what an agent declared it can run (at enrolment and whenever its
/// config changes), after checking it against the catalogue's patterns. File
/// access is offered only when both the agent's config and the server's
/// toggle allow it: the stored declaration keeps the agent's word, and
/// proposals read the toggle too.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn record_capabilities(
    store: &crate::store::Store,
    session: &AgentSession,
    caps: &Capabilities,
    now: Timestamp,
) -> Result<(), ControlError> {
    caps.check()
        .map_err(|e| ControlError::invalid(format!("capabilities: {e}")))?;
    let json = serde_json::to_string(caps).map_err(ControlError::internal)?;
    let mut tx = store.begin().await?;
    let changed = sqlx::query(
        "UPDATE agents SET capabilities = $1 WHERE id = $2 AND revoked_at IS NULL \
         AND (capabilities IS NULL OR capabilities <> $1)",
    )
    .bind(&json)
    .bind(&session.agent().0)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if changed > 0 {
        audit::append(
            &mut tx,
            &AuditActor::agent(session.agent()),
            Event::new(
                session.org(),
                AuditAction::AgentCapabilitiesChanged,
                format!("agent:{}", session.agent().0),
                json!({
                    "kinds": caps.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                    "units": caps.units.len(),
                    "file_access": caps.file_access,
                    "production": caps.production,
                }),
            ),
            now,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Most labels on one server.
pub const MAX_LABELS: usize = 32;

/// Checks one label: a key of lowercase letters, digits and `._/-` (1 to 63,
/// starting with a letter or digit) and a value of letters, digits and `._-`
/// (up to 63).
pub fn check_label(key: &str, value: &str) -> Result<(), ControlError> {
    let key_ok = (1..=63).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._/-".contains(&b));
    if !key_ok {
        return Err(ControlError::invalid(
            "labels: a key is 1 to 63 lowercase letters, digits and ._/- starting with a letter or digit.",
        ));
    }
    let value_ok = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !value_ok {
        return Err(ControlError::invalid(
            "labels: a value is up to 63 letters, digits and ._- characters.",
        ));
    }
    Ok(())
}

/// Replaces a server's labels (Owner, Admin), audited.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn set_labels(
    auth: &Authorized<'_, ManageAgents>,
    agent: &AgentId,
    labels: &std::collections::BTreeMap<String, String>,
    now: Timestamp,
) -> Result<(), ControlError> {
    if labels.len() > MAX_LABELS {
        return Err(ControlError::invalid(format!(
            "labels: at most {MAX_LABELS} per server."
        )));
    }
    for (k, v) in labels {
        check_label(k, v)?;
    }
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ManageAgents>(&mut tx).await?;
    let found: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM agents WHERE id = $1 AND org_id = $2 AND purged_at IS NULL",
    )
    .bind(&agent.0)
    .bind(actor.org().0)
    .fetch_one(tx.conn())
    .await?;
    if found == 0 {
        return Err(ControlError::not_found("No such server."));
    }
    sqlx::query("DELETE FROM agent_labels WHERE agent_id = $1")
        .bind(&agent.0)
        .execute(tx.conn())
        .await?;
    for (k, v) in labels {
        sqlx::query("INSERT INTO agent_labels (agent_id, key, value) VALUES ($1, $2, $3)")
            .bind(&agent.0)
            .bind(k)
            .bind(v)
            .execute(tx.conn())
            .await?;
    }
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::ServerLabelsChanged,
            format!("agent:{}", agent.0),
            json!({ "labels": labels }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A parsed label selector: `key=value` terms separated by commas, all of
/// which a server must carry.
pub fn parse_selector(raw: &str) -> Result<Vec<(String, String)>, ControlError> {
    let bad = || {
        ControlError::invalid(
            "selector: write key=value terms separated by commas, e.g. env=staging,role=web.",
        )
    };
    let terms: Vec<(String, String)> = raw
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (k, v) = t.split_once('=').ok_or_else(bad)?;
            let (k, v) = (k.trim(), v.trim());
            check_label(k, v).map_err(|_| bad())?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect::<Result<_, ControlError>>()?;
    if terms.is_empty() || terms.len() > MAX_LABELS {
        return Err(bad());
    }
    Ok(terms)
}

/// The organisation's active servers carrying every label of the selector,
/// read inside `tx`, in a stable order.
pub(crate) async fn select(
    tx: &mut Tx,
    org: OrgId,
    terms: &[(String, String)],
) -> Result<Vec<AgentId>, ControlError> {
    let mut matched: Option<std::collections::BTreeSet<String>> = None;
    for (k, v) in terms {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT l.agent_id FROM agent_labels l JOIN agents a ON a.id = l.agent_id \
             WHERE l.key = $1 AND l.value = $2 AND a.org_id = $3 AND a.revoked_at IS NULL AND a.delete_after IS NULL",
        )
        .bind(k)
        .bind(v)
        .bind(org.0)
        .fetch_all(tx.conn())
        .await?;
        let ids: std::collections::BTreeSet<String> = ids.into_iter().collect();
        matched = Some(match matched {
            None => ids,
            Some(m) => m.intersection(&ids).cloned().collect(),
        });
    }
    Ok(matched
        .unwrap_or_default()
        .into_iter()
        .map(AgentId)
        .collect())
}

/// The labels of an organisation's servers (the servers list).
pub(crate) const LABELS_SQL: &str =
    "SELECT l.agent_id AS agent_id, l.key AS key, l.value AS value \
     FROM agents a JOIN agent_labels l ON l.agent_id = a.id WHERE a.org_id = $1";

/// Every server's labels in the organisation (one query), by server.
pub(crate) async fn labels_of_org(
    store: &crate::store::Store,
    org: OrgId,
) -> Result<
    std::collections::HashMap<String, std::collections::BTreeMap<String, String>>,
    ControlError,
> {
    let rows = sqlx::query(LABELS_SQL)
        .bind(org.0)
        .fetch_all(store.pool())
        .await?;
    let mut out: std::collections::HashMap<String, std::collections::BTreeMap<String, String>> =
        std::collections::HashMap::new();
    for r in rows {
        out.entry(r.try_get("agent_id")?)
            .or_default()
            .insert(r.try_get("key")?, r.try_get("value")?);
    }
    Ok(out)
}
