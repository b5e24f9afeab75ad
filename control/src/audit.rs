//! The audit log: typed events, append-only, hash-chained per organisation.
//!
//! Each row stores `hash = SHA-256(prev_hash || "\n" || canonical content)`,
//! where the canonical content is a JSON array of the row's stored fields. The
//! first row of an organisation chains from 64 zeros. Rows are written by
//! [`append`] inside the same transaction as the change they record, and the
//! database refuses UPDATE and DELETE on them (triggers, both backends).
//!
//! What an attacker can do past this: someone with raw write access to the
//! database could drop the triggers and rewrite rows, but [`verify`] then finds
//! the first row whose hash no longer matches; rewriting the whole chain from
//! that row on is possible for such an attacker, which is why the audit page
//! shows the head hash, for the customer to record elsewhere. The page
//! verifies incrementally ([`verify`]); [`verify_org`] walks the whole chain.

use serde_json::Value;
use sqlx::Row;

use crate::access::{Authorized, ReadOrg};
use crate::store::{Store, Tx, BATCH_ROWS};
use crate::{AuditEventView, ChainReport, ControlError, OrgId, StoreError, Timestamp, UserId};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Everything the audit log records. The string form is stable: it is hashed
/// into the chain and used by filters and exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    SetupCompleted,
    OrgCreated,
    UserCreated,
    MemberAdded,
    LoginSucceeded,
    LoggedOut,
    OtherSessionsRevoked,
    InviteCreated,
    InviteRevoked,
    InviteAccepted,
    RoleChanged,
    MemberRemoved,
    RegistrationTokenCreated,
    RegistrationTokenRevoked,
    AgentRegistered,
    AgentRegistrationRefused,
    AgentRevoked,
    CommandQueued,
    CommandFinished,
    KeyRotationRequested,
    PqcActivationRequested,
    KeysRotated,
    KeysRegistered,
    PqcActivated,
    CertRenewed,
    OperationProposed,
    OperationRefused,
    OperationApproved,
    OperationRejected,
    OperationCancelled,
    OperationHalted,
    OperationResumed,
    OperationFinished,
    OperationExpired,
    ServerProductionChanged,
    ServerFileAccessChanged,
    PolicyChanged,
    AgentCapabilitiesChanged,
    ServerDeletionScheduled,
    ServerRestored,
    ServerPurged,
    ServerLabelsChanged,
    AuditExported,
    ForwardingAdded,
    ForwardingRemoved,
    NotificationChannelAdded,
    NotificationChannelRemoved,
    LoginFailed,
    AccessRefused,
    AgentCommandRefused,
    SecretSet,
    SecretDeleted,
    SecretDelivered,
    MasterKeyRotated,
    SelfUpdateOffered,
    SelfUpdateApplied,
    SelfUpdateReverted,
    SelfUpdateRefused,
    MfaEnabled,
    MfaDisabled,
    MfaRequirementChanged,
    PasswordChanged,
    PasswordResetRequested,
    PasswordReset,
    SignInDisowned,
    IdentityLinked,
    IdentityUnlinked,
    JoinDomainAdded,
    JoinDomainRemoved,
    SsoRequirementChanged,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::SetupCompleted => "setup.completed",
            AuditAction::OrgCreated => "org.created",
            AuditAction::UserCreated => "user.created",
            AuditAction::MemberAdded => "member.added",
            AuditAction::LoginSucceeded => "user.login",
            AuditAction::LoggedOut => "user.logout",
            AuditAction::OtherSessionsRevoked => "user.other_sessions_revoked",
            AuditAction::InviteCreated => "invite.created",
            AuditAction::InviteRevoked => "invite.revoked",
            AuditAction::InviteAccepted => "invite.accepted",
            AuditAction::RoleChanged => "member.role_changed",
            AuditAction::MemberRemoved => "member.removed",
            AuditAction::RegistrationTokenCreated => "agent.registration_token_created",
            AuditAction::RegistrationTokenRevoked => "agent.registration_token_revoked",
            AuditAction::AgentRegistered => "agent.registered",
            AuditAction::AgentRegistrationRefused => "agent.registration_refused",
            AuditAction::AgentRevoked => "agent.revoked",
            AuditAction::CommandQueued => "command.queued",
            AuditAction::CommandFinished => "command.finished",
            AuditAction::KeyRotationRequested => "agent.key_rotation_requested",
            AuditAction::PqcActivationRequested => "agent.pqc_activation_requested",
            AuditAction::KeysRotated => "agent.keys_rotated",
            AuditAction::KeysRegistered => "agent.keys_registered",
            AuditAction::PqcActivated => "agent.pqc_activated",
            AuditAction::CertRenewed => "agent.cert_renewed",
            AuditAction::OperationProposed => "operation.proposed",
            AuditAction::OperationRefused => "operation.refused",
            AuditAction::OperationApproved => "operation.approved",
            AuditAction::OperationRejected => "operation.rejected",
            AuditAction::OperationCancelled => "operation.cancelled",
            AuditAction::OperationHalted => "operation.halted",
            AuditAction::OperationResumed => "operation.resumed",
            AuditAction::OperationFinished => "operation.finished",
            AuditAction::OperationExpired => "operation.expired",
            AuditAction::ServerProductionChanged => "server.production_changed",
            AuditAction::ServerFileAccessChanged => "server.file_access_changed",
            AuditAction::PolicyChanged => "org.operations_policy_changed",
            AuditAction::AgentCapabilitiesChanged => "agent.capabilities_changed",
            AuditAction::ServerDeletionScheduled => "server.deletion_scheduled",
            AuditAction::ServerRestored => "server.restored",
            AuditAction::ServerPurged => "server.purged",
            AuditAction::ServerLabelsChanged => "server.labels_changed",
            AuditAction::AuditExported => "audit.exported",
            AuditAction::ForwardingAdded => "audit.forwarding_added",
            AuditAction::ForwardingRemoved => "audit.forwarding_removed",
            AuditAction::NotificationChannelAdded => "notification.channel_added",
            AuditAction::NotificationChannelRemoved => "notification.channel_removed",
            AuditAction::LoginFailed => "user.login_failed",
            AuditAction::AccessRefused => "access.refused",
            AuditAction::AgentCommandRefused => "agent.command_refused",
            AuditAction::SecretSet => "secret.set",
            AuditAction::SecretDeleted => "secret.deleted",
            AuditAction::SecretDelivered => "secret.delivered",
            AuditAction::MasterKeyRotated => "secrets.master_key_rotated",
            AuditAction::SelfUpdateOffered => "agent.self_update_offered",
            AuditAction::SelfUpdateApplied => "agent.self_update_applied",
            AuditAction::SelfUpdateReverted => "agent.self_update_reverted",
            AuditAction::SelfUpdateRefused => "agent.self_update_refused",
            AuditAction::MfaEnabled => "user.mfa_enabled",
            AuditAction::MfaDisabled => "user.mfa_disabled",
            AuditAction::MfaRequirementChanged => "org.mfa_requirement_changed",
            AuditAction::PasswordChanged => "user.password_changed",
            AuditAction::PasswordResetRequested => "user.password_reset_requested",
            AuditAction::PasswordReset => "user.password_reset",
            AuditAction::SignInDisowned => "user.sign_in_disowned",
            AuditAction::IdentityLinked => "user.identity_linked",
            AuditAction::IdentityUnlinked => "user.identity_unlinked",
            AuditAction::JoinDomainAdded => "org.join_domain_added",
            AuditAction::JoinDomainRemoved => "org.join_domain_removed",
            AuditAction::SsoRequirementChanged => "org.sso_requirement_changed",
        }
    }
}

/// How the audit log and the history name the built-in pilot.
pub const PILOT_LABEL: &str = "AI Pilot";

/// Who caused an event: a signed-in user or the operator at the CLI.
#[derive(Clone, Debug)]
pub struct AuditActor {
    pub user: Option<UserId>,
    /// The user's email, or "cli" / "system".
    pub label: String,
    pub ip: String,
    pub user_agent: String,
}

impl AuditActor {
    /// An agent acting on its own behalf (results, key rounds, renewals).
    pub fn agent(agent: &crate::AgentId) -> Self {
        Self {
            user: None,
            label: format!("agent {}", agent.0),
            ip: String::new(),
            user_agent: String::new(),
        }
    }

    /// The built-in AI Pilot: proposes, never approves.
    pub fn pilot() -> Self {
        Self {
            user: None,
            label: PILOT_LABEL.into(),
            ip: String::new(),
            user_agent: String::new(),
        }
    }

    /// The control plane's own background work (expiry, halts by threshold).
    pub fn system() -> Self {
        Self {
            user: None,
            label: "system".into(),
            ip: String::new(),
            user_agent: String::new(),
        }
    }

    pub fn cli() -> Self {
        Self {
            user: None,
            label: "cli".into(),
            ip: String::new(),
            user_agent: "pilothouse admin".into(),
        }
    }
}

/// One event to record.
pub struct Event {
    pub org: OrgId,
    pub action: AuditAction,
    pub target: String,
    pub details: Value,
}

impl Event {
    pub fn new(org: OrgId, action: AuditAction, target: impl Into<String>, details: Value) -> Self {
        Self {
            org,
            action,
            target: target.into(),
            details,
        }
    }
}

struct Fields<'a> {
    org: i64,
    seq: i64,
    at: i64,
    actor_user_id: Option<i64>,
    actor: &'a str,
    ip: &'a str,
    user_agent: &'a str,
    action: &'a str,
    target: &'a str,
    details: &'a str,
}

fn chain_hash(prev_hash: &str, f: &Fields<'_>) -> String {
    crate::audit_export::chain_hash(
        prev_hash,
        f.org,
        f.seq,
        f.at,
        f.actor_user_id,
        f.actor,
        f.ip,
        f.user_agent,
        f.action,
        f.target,
        f.details,
    )
}

/// Appends one event to its organisation's chain, inside the caller's transaction.
pub async fn append(
    tx: &mut Tx,
    actor: &AuditActor,
    event: Event,
    now: Timestamp,
) -> Result<(), StoreError> {
    append_many(tx, vec![(actor.clone(), event)], now).await
}

/// Appends events in the given order, each to its organisation's chain,
/// inside the caller's transaction: per organisation one read of the head
/// and multi-row inserts, so a batch of agent reports costs a few statements.
pub async fn append_many(
    tx: &mut Tx,
    entries: Vec<(AuditActor, Event)>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut orgs: Vec<OrgId> = Vec::new();
    for (_, e) in &entries {
        if !orgs.contains(&e.org) {
            orgs.push(e.org);
        }
    }
    for org in orgs {
        // Serialise appends per organisation so two writers never fork the chain.
        tx.lock_org(org).await?;
        let head = sqlx::query(
            "SELECT seq, at, hash FROM audit_events WHERE org_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(org.0)
        .fetch_optional(tx.conn())
        .await
        .map_err(StoreError::NotRecorded)?;
        let (mut seq, head_at, mut prev_hash) = match head {
            Some(row) => (
                row.try_get::<i64, _>("seq")?,
                row.try_get::<i64, _>("at")?,
                row.try_get::<String, _>("hash")?,
            ),
            None => (0, i64::MIN, GENESIS.to_string()),
        };
        // An event's time is never earlier than the event before it (`now`
        // was read before the lock was taken, and clocks can step back), so
        // time ranges map to ranges of sequence numbers (see audit_search).
        let at = now.0.max(head_at);
        let mut rows = Vec::new();
        for (actor, event) in entries.iter().filter(|(_, e)| e.org == org) {
            seq += 1;
            let details = event.details.to_string();
            let fields = Fields {
                org: org.0,
                seq,
                at,
                actor_user_id: actor.user.map(|u| u.0),
                actor: &actor.label,
                ip: &actor.ip,
                user_agent: &actor.user_agent,
                action: event.action.as_str(),
                target: &event.target,
                details: &details,
            };
            let hash = chain_hash(&prev_hash, &fields);
            rows.push((
                seq,
                actor,
                event,
                details,
                std::mem::replace(&mut prev_hash, hash.clone()),
                hash,
            ));
        }
        for part in rows.chunks(BATCH_ROWS) {
            let sql = format!(
                "INSERT INTO audit_events (org_id, seq, at, actor_user_id, actor, ip, user_agent, action, target, details, prev_hash, hash) VALUES {}",
                crate::store::placeholders(part.len(), 12)
            );
            let mut q = sqlx::query(&sql);
            for (seq, actor, event, details, prev, hash) in part {
                q = q
                    .bind(org.0)
                    .bind(*seq)
                    .bind(at)
                    .bind(actor.user.map(|u| u.0))
                    .bind(actor.label.as_str())
                    .bind(actor.ip.as_str())
                    .bind(actor.user_agent.as_str())
                    .bind(event.action.as_str())
                    .bind(event.target.as_str())
                    .bind(details.as_str())
                    .bind(prev.as_str())
                    .bind(hash.as_str());
            }
            // Any failure here fails the change's whole transaction.
            q.execute(tx.conn())
                .await
                .map_err(StoreError::NotRecorded)?;
        }
    }
    Ok(())
}

/// The latest events of the caller's organisation, newest first.
pub async fn latest(
    auth: &Authorized<'_, ReadOrg>,
    limit: i64,
) -> Result<Vec<AuditEventView>, ControlError> {
    let rows = sqlx::query(
        "SELECT seq, at, actor, ip, user_agent, action, target, details FROM audit_events \
         WHERE org_id = $1 ORDER BY seq DESC LIMIT $2",
    )
    .bind(auth.actor().org().0)
    .bind(limit.clamp(1, 500))
    .fetch_all(auth.store().pool())
    .await?;
    rows.iter()
        .map(crate::audit_search::view)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Verifies the caller's organisation chain incrementally: only the events
/// after the last verified one, and that one itself (its stored hash must be
/// the one recorded when it was verified, so a rewritten history up to it is
/// noticed). The full walk is [`verify_org`].
pub async fn verify(auth: &Authorized<'_, ReadOrg>) -> Result<ChainReport, ControlError> {
    let store = auth.store();
    let org = auth.actor().org();
    let checkpoint = sqlx::query("SELECT seq, hash FROM audit_verified WHERE org_id = $1")
        .bind(org.0)
        .fetch_optional(store.pool())
        .await?;
    let (from_seq, from_hash) = match checkpoint {
        Some(r) => (r.try_get::<i64, _>("seq")?, r.try_get::<String, _>("hash")?),
        None => (0, GENESIS.to_string()),
    };
    if from_seq > 0 {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT hash FROM audit_events WHERE org_id = $1 AND seq = $2")
                .bind(org.0)
                .bind(from_seq)
                .fetch_optional(store.pool())
                .await?;
        if stored.as_deref() != Some(from_hash.as_str()) {
            return Ok(ChainReport {
                events_checked: from_seq - 1,
                head_hash: None,
                first_broken_seq: Some(from_seq),
            });
        }
    }
    let walked = walk(store, org, from_seq, from_hash).await?;
    if walked.report.first_broken_seq.is_none() && walked.last_seq > from_seq {
        let mut tx = store.begin().await?;
        sqlx::query(
            "INSERT INTO audit_verified (org_id, seq, hash, at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at \
             WHERE audit_verified.seq < excluded.seq",
        )
        .bind(org.0)
        .bind(walked.last_seq)
        .bind(&walked.last_hash)
        .bind(Timestamp::now().0)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
    }
    Ok(walked.report)
}

/// Walks an organisation's chain from the first row and reports the first row
/// that was edited, removed or inserted out of order. Reads the chain in
/// pages, never all of it at once.
pub async fn verify_org(store: &Store, org: OrgId) -> Result<ChainReport, StoreError> {
    Ok(walk(store, org, 0, GENESIS.to_string()).await?.report)
}

struct Walked {
    report: ChainReport,
    last_seq: i64,
    last_hash: String,
}

/// Rows fetched per page while walking the chain.
const WALK_PAGE: i64 = 1000;

/// Verifies the rows after `from_seq`, starting from that row's hash.
async fn walk(
    store: &Store,
    org: OrgId,
    from_seq: i64,
    from_hash: String,
) -> Result<Walked, StoreError> {
    let mut prev = from_hash;
    let mut last_seq = from_seq;
    loop {
        let rows = sqlx::query(
            "SELECT seq, at, actor_user_id, actor, ip, user_agent, action, target, details, prev_hash, hash \
             FROM audit_events WHERE org_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3",
        )
        .bind(org.0)
        .bind(last_seq)
        .bind(WALK_PAGE)
        .fetch_all(store.pool())
        .await?;
        for r in &rows {
            let seq: i64 = r.try_get("seq")?;
            let fields = Fields {
                org: org.0,
                seq,
                at: r.try_get("at")?,
                actor_user_id: r.try_get("actor_user_id")?,
                actor: r.try_get("actor")?,
                ip: r.try_get("ip")?,
                user_agent: r.try_get("user_agent")?,
                action: r.try_get("action")?,
                target: r.try_get("target")?,
                details: r.try_get("details")?,
            };
            let stored_prev: String = r.try_get("prev_hash")?;
            let stored_hash: String = r.try_get("hash")?;
            let expected_seq = last_seq + 1;
            if seq != expected_seq
                || stored_prev != prev
                || chain_hash(&prev, &fields) != stored_hash
            {
                return Ok(Walked {
                    report: ChainReport {
                        events_checked: last_seq,
                        head_hash: None,
                        first_broken_seq: Some(seq.min(expected_seq)),
                    },
                    last_seq,
                    last_hash: prev,
                });
            }
            last_seq = seq;
            prev = stored_hash;
        }
        if (rows.len() as i64) < WALK_PAGE {
            break;
        }
    }
    Ok(Walked {
        report: ChainReport {
            events_checked: last_seq,
            head_hash: (last_seq > 0).then(|| prev.clone()),
            first_broken_seq: None,
        },
        last_seq,
        last_hash: prev,
    })
}
