//! Agents: one-time registration tokens, enrolment, authentication of the
//! gateway's client certificates, heartbeats, revocation, and the durable
//! command queue (queued -> delivered -> succeeded | failed | expired | cancelled).
//!
//! A registration token is single-use, expiring, scoped to one organisation
//! and stored only as a hash; it also carries the CA pin the agent checks. An
//! agent is recognised on the gateway only by the SHA-256 fingerprint of the
//! certificate this control plane issued to it, and never once it is revoked.

use secrecy::SecretString;
use serde_json::json;
use sqlx::Row;

use crate::access::{Authorized, Capability, ReadOrg, RequestMeta};
use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::ca::{AgentCa, IssuedCert};
use crate::crypto::{random_token, token_hash};
use crate::server_keys::{decode_key, encode_key};
use crate::store::Store;
use crate::{AgentId, AgentView, ControlError, OrgId, PqcState, Role, Timestamp};
use channel::{KemPublicKey, VerifyingKey};

/// A server not heard from for this long shows Offline.
pub const OFFLINE_AFTER_SECS: i64 = 90;
pub const DEFAULT_TOKEN_TTL_SECS: i64 = 3600;
pub const MAX_TOKEN_TTL_SECS: i64 = 7 * 86_400;
const TOKEN_PREFIX: &str = "pht1";

/// Register, rotate, activate and revoke agents (Owner, Admin).
pub struct ManageAgents;
impl Capability for ManageAgents {
    const DESCRIPTION: &'static str = "manage servers and agents";
    fn allows(role: Role) -> bool {
        role.manages_members()
    }
}

/// `pht1_<secret>_<CA pin>`: what the operator pastes into `pilothouse-agent register`.
pub fn format_token(secret: &str, ca_pin: &str) -> String {
    format!("{TOKEN_PREFIX}_{secret}_{ca_pin}")
}

/// Splits a token into its secret and CA pin.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let mut parts = token.trim().split('_');
    let (prefix, secret, pin) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (prefix == TOKEN_PREFIX && parts.next().is_none() && hex(secret, 32) && hex(pin, 64))
        .then_some((secret, pin))
}

pub struct NewToken {
    pub token: SecretString,
    pub expires_at: Timestamp,
}

fn check_ttl(ttl_secs: i64) -> Result<(), ControlError> {
    if !(60..=MAX_TOKEN_TTL_SECS).contains(&ttl_secs) {
        return Err(ControlError::invalid(
            "A registration token lives between 1 minute and 7 days.",
        ));
    }
    Ok(())
}

async fn insert_token(
    store: &Store,
    org: OrgId,
    actor: &AuditActor,
    ca_pin: &str,
    ttl_secs: i64,
    now: Timestamp,
) -> Result<NewToken, ControlError> {
    check_ttl(ttl_secs)?;
    let secret = random_token(16);
    let expires_at = now.plus_secs(ttl_secs);
    let mut tx = store.begin().await?;
    let id: i64 = sqlx::query(
        "INSERT INTO registration_tokens (org_id, token_hash, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(org.0)
    .bind(token_hash("registration", &secret))
    .bind(actor.user.map(|u| u.0))
    .bind(now.0)
    .bind(expires_at.0)
    .fetch_one(tx.conn())
    .await?
    .try_get(0)?;
    audit::append(
        &mut tx,
        actor,
        Event::new(
            org,
            AuditAction::RegistrationTokenCreated,
            format!("registration_token:{id}"),
            json!({ "expires_at": expires_at.0 }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(NewToken {
        token: SecretString::from(format_token(&secret, ca_pin)),
        expires_at,
    })
}

pub async fn create_registration_token(
    auth: &Authorized<'_, ManageAgents>,
    ca_pin: &str,
    ttl_secs: i64,
    now: Timestamp,
) -> Result<NewToken, ControlError> {
    let actor = auth.actor();
    insert_token(
        auth.store(),
        actor.org(),
        &actor.audit_actor(),
        ca_pin,
        ttl_secs,
        now,
    )
    .await
}

/// `pilothouse admin registration-token`: for an organisation named on the command line.
pub async fn create_registration_token_cli(
    store: &Store,
    org_name: &str,
    ca_pin: &str,
    ttl_secs: i64,
    now: Timestamp,
) -> Result<NewToken, ControlError> {
    let org: i64 = sqlx::query("SELECT id FROM orgs WHERE name = $1")
        .bind(org_name.trim())
        .fetch_optional(store.pool())
        .await?
        .ok_or_else(|| {
            ControlError::not_found(format!("No organisation named `{}`.", org_name.trim()))
        })?
        .try_get(0)?;
    insert_token(store, OrgId(org), &AuditActor::cli(), ca_pin, ttl_secs, now).await
}

/// What an agent sends to enrol.
pub struct Enrolment {
    pub token_secret: String,
    pub csr_pem: String,
    pub identity_key: VerifyingKey,
    pub kem_key: Option<KemPublicKey>,
    pub hostname: String,
    pub agent_version: String,
}

#[derive(Debug)]
pub struct Enrolled {
    pub agent: AgentId,
    pub org: OrgId,
    pub cert: IssuedCert,
}

fn bounded_text(s: &str, max: usize, what: &str) -> Result<String, ControlError> {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > max || s.chars().any(char::is_control) {
        return Err(ControlError::invalid(format!(
            "The {what} is missing or too long (at most {max} characters)."
        )));
    }
    Ok(s.to_string())
}

/// Enrols an agent with a registration token. A refused token that belongs
/// to an organisation (used, expired) is recorded in that organisation's audit log.
pub async fn enrol(
    store: &Store,
    ca: &AgentCa,
    e: Enrolment,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<Enrolled, ControlError> {
    let hostname = bounded_text(&e.hostname, 253, "hostname")?;
    let version = bounded_text(&e.agent_version, 32, "agent version")?;
    let identity_key = encode_key(&e.identity_key);
    let kem_key = e.kem_key.as_ref().map(encode_key);
    let kem_key_id = e.kem_key.as_ref().map(|k| k.key_id().to_string());
    let actor = AuditActor {
        user: None,
        label: format!("agent on {hostname}"),
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    };
    let hash = token_hash("registration", &e.token_secret);
    let mut tx = store.begin().await?;
    let row = sqlx::query(
        "SELECT id, org_id, expires_at, used_at FROM registration_tokens WHERE token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else {
        return Err(ControlError::Unauthenticated(
            "The registration token is not valid.".into(),
        ));
    };
    let token_id: i64 = row.try_get(0)?;
    let org = OrgId(row.try_get(1)?);
    let expires_at = Timestamp(row.try_get(2)?);
    let used: Option<i64> = row.try_get(3)?;
    let refusal = if used.is_some() {
        Some("The registration token has already been used. Create a new one.")
    } else if expires_at <= now {
        Some("The registration token has expired. Create a new one.")
    } else {
        None
    };
    if let Some(reason) = refusal {
        audit::append(
            &mut tx,
            &actor,
            Event::new(
                org,
                AuditAction::AgentRegistrationRefused,
                format!("registration_token:{token_id}"),
                json!({ "reason": reason, "hostname": hostname }),
            ),
            now,
        )
        .await?;
        tx.commit().await?;
        return Err(ControlError::Conflict(reason.into()));
    }
    let agent = AgentId(format!("agt_{}", random_token(12)));
    let cert = ca
        .issue_client(&e.csr_pem, &agent.0, now)
        .map_err(|err| ControlError::invalid(err.to_string()))?;
    let flipped = sqlx::query("UPDATE registration_tokens SET used_at = $1, agent_id = $2 WHERE id = $3 AND used_at IS NULL")
        .bind(now.0)
        .bind(&agent.0)
        .bind(token_id)
        .execute(tx.conn())
        .await?
        .rows_affected();
    if flipped != 1 {
        return Err(ControlError::conflict(
            "The registration token has already been used. Create a new one.",
        ));
    }
    sqlx::query(
        "INSERT INTO agents (id, org_id, hostname, agent_version, created_at, cert_serial, cert_fingerprint, cert_not_after, \
         identity_key, kem_key, kem_key_id, keys_registered_at, last_seen_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&agent.0)
    .bind(org.0)
    .bind(&hostname)
    .bind(&version)
    .bind(now.0)
    .bind(&cert.serial)
    .bind(&cert.fingerprint)
    .bind(cert.not_after.0)
    .bind(&identity_key)
    .bind(kem_key.as_deref())
    .bind(kem_key_id.as_deref())
    .bind(now.0)
    .bind(now.0)
    .execute(tx.conn())
    .await?;
    audit::append(
        &mut tx,
        &actor,
        Event::new(
            org,
            AuditAction::AgentRegistered,
            format!("agent:{}", agent.0),
            json!({ "hostname": hostname, "version": version, "cert_serial": cert.serial, "pqc": kem_key.is_some() }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Enrolled { agent, org, cert })
}

/// An agent recognised on the gateway.
#[derive(Clone, Debug)]
pub struct AgentIdentity {
    pub agent: AgentId,
    pub org: OrgId,
    pub identity_key: VerifyingKey,
    pub kem_key: Option<KemPublicKey>,
    /// Set when the agent presented the certificate from before its latest
    /// key round (within the handover window): it may only finish that round.
    pub handover: Option<Handover>,
}

/// What an agent on its previous certificate may still do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handover {
    /// After a rotation: only repeat the key registration already applied
    /// (so a thief of the old keys cannot register keys of their own).
    Rotation,
    /// After a renewal: renew again.
    Renewal,
}

/// How long the previous certificate stays usable after a key round.
pub const HANDOVER_SECS: i64 = 600;

/// Recognises an agent by its client certificate's fingerprint. Unknown,
/// superseded and revoked certificates are refused.
pub async fn authenticate(
    store: &Store,
    cert_fingerprint: &str,
) -> Result<AgentIdentity, ControlError> {
    let now = Timestamp::now();
    let row = sqlx::query(
        "SELECT id, org_id, identity_key, kem_key, revoked_at, cert_fingerprint, prev_identity_key, prev_valid_until \
         FROM agents WHERE cert_fingerprint = $1 OR (prev_cert_fingerprint = $1 AND prev_valid_until > $2)",
    )
    .bind(cert_fingerprint)
    .bind(now.0)
    .fetch_optional(store.pool())
    .await?
    .ok_or_else(|| ControlError::Unauthenticated("This certificate does not belong to an enrolled agent.".into()))?;
    let revoked: Option<i64> = row.try_get(4)?;
    if revoked.is_some() {
        return Err(ControlError::Unauthenticated(
            "This agent has been revoked.".into(),
        ));
    }
    let agent = AgentId(row.try_get(0)?);
    let current: String = row.try_get(5)?;
    let prev_identity: Option<String> = row.try_get(6)?;
    let prev_until: Option<i64> = row.try_get(7)?;
    let corrupt = || ControlError::Internal("an agent's stored key does not parse".into());
    let mut identity_key: String = row.try_get(2)?;
    let handover = if current != cert_fingerprint {
        // Still on the certificate from before its latest key round: the agent
        // has not received or not yet used the new one.
        if let Some(old) = &prev_identity {
            identity_key = old.clone();
        }
        Some(if prev_identity.is_some() {
            Handover::Rotation
        } else {
            Handover::Renewal
        })
    } else {
        if prev_until.is_some() {
            // The new certificate is in use: the old one retires for good.
            sqlx::query(
                "UPDATE agents SET prev_cert_fingerprint = NULL, prev_identity_key = NULL, prev_valid_until = NULL WHERE id = $1",
            )
            .bind(&agent.0)
            .execute(store.pool())
            .await?;
        }
        None
    };
    let kem_key: Option<String> = row.try_get(3)?;
    Ok(AgentIdentity {
        agent,
        org: OrgId(row.try_get(1)?),
        identity_key: decode_key(&identity_key).ok_or_else(corrupt)?,
        kem_key: kem_key
            .map(|k| decode_key(&k).ok_or_else(corrupt))
            .transpose()?,
        handover,
    })
}

/// Records that the agent was heard from (the poll is the heartbeat).
pub async fn touch(
    store: &Store,
    agent: &AgentId,
    tls_group: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    sqlx::query(
        "UPDATE agents SET last_seen_at = $1, tls_group = $2 WHERE id = $3 AND revoked_at IS NULL",
    )
    .bind(now.0)
    .bind(tls_group.chars().take(64).collect::<String>())
    .bind(&agent.0)
    .execute(store.pool())
    .await?;
    Ok(())
}

fn pqc_state(kem_key: &Option<String>, pending: &Option<String>) -> PqcState {
    match (kem_key, pending.as_deref()) {
        (_, Some(_)) => PqcState::PendingKeyRegistration,
        (None, None) => PqcState::ClassicalFallback,
        (Some(_), None) => PqcState::PostQuantumActive,
    }
}

const VIEW_COLUMNS: &str = "id, hostname, agent_version, last_seen_at, revoked_at, kem_key, pending_key_action, keys_registered_at, \
     cert_serial, cert_fingerprint, cert_not_after, kem_key_id, tls_group, \
     (SELECT cpu_pct FROM metrics_raw m WHERE m.agent_id = agents.id ORDER BY m.at DESC LIMIT 1), \
     (SELECT mem_used FROM metrics_raw m WHERE m.agent_id = agents.id ORDER BY m.at DESC LIMIT 1), \
     (SELECT mem_total FROM metrics_raw m WHERE m.agent_id = agents.id ORDER BY m.at DESC LIMIT 1)";

fn view_of(r: &sqlx::any::AnyRow, now: Timestamp) -> Result<AgentView, ControlError> {
    let last_seen: Option<i64> = r.try_get(3)?;
    let revoked: Option<i64> = r.try_get(4)?;
    let kem_key: Option<String> = r.try_get(5)?;
    let pending: Option<String> = r.try_get(6)?;
    Ok(AgentView {
        id: AgentId(r.try_get(0)?),
        hostname: r.try_get(1)?,
        agent_version: r.try_get(2)?,
        online: revoked.is_none()
            && last_seen.is_some_and(|t| Timestamp(t).plus_secs(OFFLINE_AFTER_SECS) > now),
        revoked: revoked.is_some(),
        last_seen_at: last_seen.map(Timestamp),
        pqc: pqc_state(&kem_key, &pending),
        keys_registered_at: Timestamp(r.try_get(7)?),
        cert_serial: r.try_get(8)?,
        cert_fingerprint: r.try_get(9)?,
        cert_not_after: Timestamp(r.try_get(10)?),
        kem_key_id: r.try_get(11)?,
        tls_group: r.try_get(12)?,
        cpu_pct: r.try_get(13)?,
        mem_used: r.try_get(14)?,
        mem_total: r.try_get(15)?,
    })
}

/// The organisation's servers, most recently enrolled first.
pub async fn list(
    auth: &Authorized<'_, ReadOrg>,
    now: Timestamp,
) -> Result<Vec<AgentView>, ControlError> {
    let rows = sqlx::query(&format!(
        "SELECT {VIEW_COLUMNS} FROM agents WHERE org_id = $1 ORDER BY created_at DESC, id"
    ))
    .bind(auth.actor().org().0)
    .fetch_all(auth.store().pool())
    .await?;
    rows.iter().map(|r| view_of(r, now)).collect()
}

/// One server of the caller's organisation.
pub async fn get(
    auth: &Authorized<'_, ReadOrg>,
    agent: &AgentId,
    now: Timestamp,
) -> Result<AgentView, ControlError> {
    let row = sqlx::query(&format!(
        "SELECT {VIEW_COLUMNS} FROM agents WHERE org_id = $1 AND id = $2"
    ))
    .bind(auth.actor().org().0)
    .bind(&agent.0)
    .fetch_optional(auth.store().pool())
    .await?
    .ok_or_else(|| ControlError::not_found("No such server."))?;
    view_of(&row, now)
}

/// Revokes an agent: its certificate is refused from now on and its pending
/// commands are cancelled. The host may enrol again with a new token.
pub async fn revoke(
    auth: &Authorized<'_, ManageAgents>,
    agent: &AgentId,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ManageAgents>(&mut tx).await?;
    let hostname: String = sqlx::query(
        "SELECT hostname FROM agents WHERE id = $1 AND org_id = $2 AND revoked_at IS NULL",
    )
    .bind(&agent.0)
    .bind(actor.org().0)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| ControlError::not_found("No such active server."))?
    .try_get(0)?;
    sqlx::query("UPDATE agents SET revoked_at = $1, pending_key_action = NULL WHERE id = $2")
        .bind(now.0)
        .bind(&agent.0)
        .execute(tx.conn())
        .await?;
    let cancelled = sqlx::query("UPDATE commands SET state = 'cancelled', finished_at = $1 WHERE agent_id = $2 AND state IN ('queued', 'delivered')")
        .bind(now.0)
        .bind(&agent.0)
        .execute(tx.conn())
        .await?
        .rows_affected();
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::AgentRevoked,
            format!("agent:{}", agent.0),
            json!({ "hostname": hostname, "commands_cancelled": cancelled }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A command waiting for or delivered to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedCommand {
    pub id: String,
    pub seq: i64,
    pub kind: String,
    pub args: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Queues a command for an agent of the caller's organisation. Returns its id.
pub async fn enqueue(
    auth: &Authorized<'_, ManageAgents>,
    agent: &AgentId,
    kind: &str,
    args: serde_json::Value,
    ttl_secs: i64,
    now: Timestamp,
) -> Result<String, ControlError> {
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ManageAgents>(&mut tx).await?;
    // One atomic step takes the sequence number and bumps it, so concurrent
    // enqueues for one agent never share a number (the row is locked on PostgreSQL).
    let row = sqlx::query(
        "UPDATE agents SET next_seq = next_seq + 1 WHERE id = $1 AND org_id = $2 AND revoked_at IS NULL RETURNING next_seq - 1",
    )
    .bind(&agent.0)
    .bind(actor.org().0)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| ControlError::not_found("No such active server."))?;
    let seq: i64 = row.try_get(0)?;
    let id = format!("cmd_{}", random_token(12));
    sqlx::query(
        "INSERT INTO commands (id, org_id, agent_id, seq, kind, args, state, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9)",
    )
    .bind(&id)
    .bind(actor.org().0)
    .bind(&agent.0)
    .bind(seq)
    .bind(kind)
    .bind(args.to_string())
    .bind(actor.user().0)
    .bind(now.0)
    .bind(now.plus_secs(ttl_secs).0)
    .execute(tx.conn())
    .await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::CommandQueued,
            format!("agent:{}", agent.0),
            json!({ "command": id, "kind": kind, "seq": seq }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Commands for the agent that are queued or delivered but not finished
/// (at-least-once: a command stays deliverable until the agent reports it).
/// Expired ones are marked expired instead. Marks the rest delivered.
pub async fn take_pending(
    store: &Store,
    agent: &AgentId,
    now: Timestamp,
) -> Result<Vec<QueuedCommand>, ControlError> {
    // The long-poll calls this on every wake-up: a plain read first, so an
    // agent with nothing queued never takes the write lock.
    let any: Option<i64> = sqlx::query(
        "SELECT seq FROM commands WHERE agent_id = $1 AND state IN ('queued', 'delivered') LIMIT 1",
    )
    .bind(&agent.0)
    .fetch_optional(store.pool())
    .await?
    .map(|r| r.try_get(0))
    .transpose()?;
    if any.is_none() {
        return Ok(Vec::new());
    }
    let mut tx = store.begin().await?;
    sqlx::query("UPDATE commands SET state = 'expired', finished_at = $1 WHERE agent_id = $2 AND state IN ('queued', 'delivered') AND expires_at <= $1")
        .bind(now.0)
        .bind(&agent.0)
        .execute(tx.conn())
        .await?;
    let rows = sqlx::query(
        "SELECT id, seq, kind, args, created_at, expires_at FROM commands WHERE agent_id = $1 AND state IN ('queued', 'delivered') ORDER BY seq",
    )
    .bind(&agent.0)
    .fetch_all(tx.conn())
    .await?;
    let commands = rows
        .iter()
        .map(|r| {
            Ok(QueuedCommand {
                id: r.try_get(0)?,
                seq: r.try_get(1)?,
                kind: r.try_get(2)?,
                args: r.try_get(3)?,
                created_at: Timestamp(r.try_get(4)?),
                expires_at: Timestamp(r.try_get(5)?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    if !commands.is_empty() {
        sqlx::query("UPDATE commands SET state = 'delivered', delivered_at = COALESCE(delivered_at, $1) WHERE agent_id = $2 AND state = 'queued'")
            .bind(now.0)
            .bind(&agent.0)
            .execute(tx.conn())
            .await?;
    }
    tx.commit().await?;
    Ok(commands)
}

/// Records an agent's result for one of its own commands. A second report
/// for a finished command is ignored (the agent may retry after a lost reply).
pub async fn finish(
    store: &Store,
    agent: &AgentIdentity,
    command: &str,
    succeeded: bool,
    result: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    let mut tx = store.begin().await?;
    let row = sqlx::query("SELECT kind, state FROM commands WHERE id = $1 AND agent_id = $2")
        .bind(command)
        .bind(&agent.agent.0)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| ControlError::not_found("No such command for this agent."))?;
    let kind: String = row.try_get(0)?;
    let state: String = row.try_get(1)?;
    if state != "queued" && state != "delivered" {
        return Ok(());
    }
    let new_state = if succeeded { "succeeded" } else { "failed" };
    sqlx::query("UPDATE commands SET state = $1, finished_at = $2, result = $3 WHERE id = $4")
        .bind(new_state)
        .bind(now.0)
        .bind(result.chars().take(16 * 1024).collect::<String>())
        .bind(command)
        .execute(tx.conn())
        .await?;
    let actor = AuditActor {
        user: None,
        label: format!("agent {}", agent.agent.0),
        ip: String::new(),
        user_agent: String::new(),
    };
    audit::append(
        &mut tx,
        &actor,
        Event::new(
            agent.org,
            AuditAction::CommandFinished,
            format!("agent:{}", agent.agent.0),
            json!({ "command": command, "kind": kind, "state": new_state }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The state and result of one command of the caller's organisation.
pub async fn command_state(
    auth: &Authorized<'_, ReadOrg>,
    command: &str,
) -> Result<(String, Option<String>), ControlError> {
    let row = sqlx::query("SELECT state, result FROM commands WHERE id = $1 AND org_id = $2")
        .bind(command)
        .bind(auth.actor().org().0)
        .fetch_optional(auth.store().pool())
        .await?
        .ok_or_else(|| ControlError::not_found("No such command."))?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_ca_pin() {
        let pin = "ab".repeat(32);
        let t = format_token(&"0f".repeat(16), &pin);
        assert_eq!(
            parse_token(&t),
            Some(("0f".repeat(16).as_str(), pin.as_str()))
        );
        assert_eq!(
            parse_token(&format!(" {t}\n")).map(|p| p.1),
            Some(pin.as_str())
        );
        for bad in [
            "",
            "pht1",
            "pht2_00_11",
            &format!("{t}_x"),
            &t.replace("pht1", "pht2"),
            &t[..t.len() - 1],
        ] {
            assert!(parse_token(bad).is_none(), "{bad}");
        }
    }
}

/// Which key round an Owner or Admin asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAction {
    /// New identity, KEM and TLS keys.
    RotateKeys,
    /// Register an X-Wing key (for an agent in classical fallback).
    ActivatePqc,
}

impl KeyAction {
    fn kind(self) -> &'static str {
        match self {
            KeyAction::RotateKeys => channel::api::kinds::ROTATE_KEYS,
            KeyAction::ActivatePqc => channel::api::kinds::REGISTER_PQC_KEY,
        }
    }
}

/// Whether a command kind may travel signed but not encrypted to an agent in
/// classical fallback: only those whose arguments are not secret.
pub fn may_travel_unsealed(kind: &str) -> bool {
    use channel::api::kinds;
    [kinds::PING, kinds::ROTATE_KEYS, kinds::REGISTER_PQC_KEY].contains(&kind)
}

/// How long a key round waits for an agent that is offline.
pub const KEY_ACTION_TTL_SECS: i64 = 7 * 86_400;

/// Asks an agent to rotate its keys or register an ML-KEM key: marks the
/// server "Pending key registration" and queues the command. An agent that is
/// offline completes it when it returns (the command waits for a week).
pub async fn request_key_action(
    auth: &Authorized<'_, ManageAgents>,
    agent: &AgentId,
    action: KeyAction,
    now: Timestamp,
) -> Result<String, ControlError> {
    let actor = auth.actor();
    if action == KeyAction::ActivatePqc {
        let has_kem: Option<Option<String>> = sqlx::query(
            "SELECT kem_key FROM agents WHERE id = $1 AND org_id = $2 AND revoked_at IS NULL",
        )
        .bind(&agent.0)
        .bind(actor.org().0)
        .fetch_optional(auth.store().pool())
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
        match has_kem {
            None => return Err(ControlError::not_found("No such active server.")),
            Some(Some(_)) => {
                return Err(ControlError::conflict(
                    "Post-quantum encryption is already active on this server.",
                ))
            }
            Some(None) => {}
        }
    }
    let command = enqueue(
        auth,
        agent,
        action.kind(),
        json!({}),
        KEY_ACTION_TTL_SECS,
        now,
    )
    .await?;
    let mut tx = auth.store().begin().await?;
    sqlx::query("UPDATE agents SET pending_key_action = $1 WHERE id = $2 AND org_id = $3")
        .bind(action.kind())
        .bind(&agent.0)
        .bind(actor.org().0)
        .execute(tx.conn())
        .await?;
    let what = match action {
        KeyAction::RotateKeys => AuditAction::KeyRotationRequested,
        KeyAction::ActivatePqc => AuditAction::PqcActivationRequested,
    };
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            what,
            format!("agent:{}", agent.0),
            json!({ "command": command }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(command)
}

fn agent_actor(agent: &AgentIdentity) -> AuditActor {
    AuditActor {
        user: None,
        label: format!("agent {}", agent.agent.0),
        ip: String::new(),
        user_agent: String::new(),
    }
}

/// Records keys an agent registered in a message signed by its current
/// identity key (already verified by the caller against `agent.identity_key`).
/// With a CSR, also issues a new client certificate, which replaces the old one
/// at once. Returns the new certificate, if any.
pub async fn register_keys(
    store: &Store,
    ca: &AgentCa,
    agent: &AgentIdentity,
    registration: &channel::KeyRegistration,
    csr_pem: Option<&str>,
    now: Timestamp,
) -> Result<Option<IssuedCert>, ControlError> {
    let cert = match csr_pem {
        Some(csr) => {
            let bound = registration.tls_cert_fingerprint.as_deref()
                == Some(crate::crypto::sha256_hex(csr).as_str());
            if !bound {
                return Err(ControlError::invalid(
                    "The CSR does not match the fingerprint in the signed registration.",
                ));
            }
            Some(
                ca.issue_client(csr, &agent.agent.0, now)
                    .map_err(|e| ControlError::invalid(e.to_string()))?,
            )
        }
        None => None,
    };
    let rotated = registration.identity_key != agent.identity_key;
    let activated = agent.kem_key.is_none();
    if agent.handover == Some(Handover::Renewal) {
        return Err(ControlError::Unauthenticated(
            "This certificate was renewed; use the new one.".into(),
        ));
    }
    if agent.handover == Some(Handover::Rotation) {
        // Only the registration that was already applied may be repeated.
        let row = sqlx::query("SELECT identity_key, kem_key FROM agents WHERE id = $1")
            .bind(&agent.agent.0)
            .fetch_one(store.pool())
            .await?;
        let same = row.try_get::<String, _>(0)? == encode_key(&registration.identity_key)
            && row.try_get::<Option<String>, _>(1)?
                == Some(encode_key(&registration.kem_public_key));
        if !same {
            return Err(ControlError::Unauthenticated(
                "This certificate was replaced by a key rotation; only that rotation may be repeated.".into(),
            ));
        }
    }
    let mut tx = store.begin().await?;
    sqlx::query(
        "UPDATE agents SET identity_key = $1, kem_key = $2, kem_key_id = $3, keys_registered_at = $4, pending_key_action = NULL \
         WHERE id = $5 AND revoked_at IS NULL",
    )
    .bind(encode_key(&registration.identity_key))
    .bind(encode_key(&registration.kem_public_key))
    .bind(registration.kem_public_key.key_id().to_string())
    .bind(now.0)
    .bind(&agent.agent.0)
    .execute(tx.conn())
    .await?;
    if let Some(cert) = &cert {
        // The certificate in use stays valid for a short handover, in case this
        // response is lost. A repeated round (the agent still on its old
        // certificate) keeps the original handover and its deadline.
        if agent.handover.is_none() {
            sqlx::query(
                "UPDATE agents SET prev_cert_fingerprint = cert_fingerprint, prev_identity_key = $1, prev_valid_until = $2 WHERE id = $3",
            )
            .bind(encode_key(&agent.identity_key))
            .bind(now.plus_secs(HANDOVER_SECS).0)
            .bind(&agent.agent.0)
            .execute(tx.conn())
            .await?;
        }
        sqlx::query("UPDATE agents SET cert_serial = $1, cert_fingerprint = $2, cert_not_after = $3 WHERE id = $4")
            .bind(&cert.serial)
            .bind(&cert.fingerprint)
            .bind(cert.not_after.0)
            .bind(&agent.agent.0)
            .execute(tx.conn())
            .await?;
    }
    let action = if activated {
        AuditAction::PqcActivated
    } else if rotated || cert.is_some() {
        AuditAction::KeysRotated
    } else {
        AuditAction::KeysRegistered
    };
    audit::append(
        &mut tx,
        &agent_actor(agent),
        Event::new(
            agent.org,
            action,
            format!("agent:{}", agent.agent.0),
            json!({ "kem_key_id": registration.kem_public_key.key_id().to_string(), "identity_key_id": registration.identity_key.key_id().to_string(), "cert_serial": cert.as_ref().map(|c| c.serial.clone()) }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(cert)
}

/// Issues a fresh client certificate to an agent before its current one
/// expires; the old certificate is refused from then on.
pub async fn renew_cert(
    store: &Store,
    ca: &AgentCa,
    agent: &AgentIdentity,
    csr_pem: &str,
    now: Timestamp,
) -> Result<IssuedCert, ControlError> {
    if agent.handover == Some(Handover::Rotation) {
        return Err(ControlError::Unauthenticated(
            "This certificate was replaced by a key rotation; finish the rotation first.".into(),
        ));
    }
    let cert = ca
        .issue_client(csr_pem, &agent.agent.0, now)
        .map_err(|e| ControlError::invalid(e.to_string()))?;
    let mut tx = store.begin().await?;
    if agent.handover.is_none() {
        sqlx::query(
            "UPDATE agents SET prev_cert_fingerprint = cert_fingerprint, prev_identity_key = NULL, prev_valid_until = $1 WHERE id = $2",
        )
        .bind(now.plus_secs(HANDOVER_SECS).0)
        .bind(&agent.agent.0)
        .execute(tx.conn())
        .await?;
    }
    sqlx::query("UPDATE agents SET cert_serial = $1, cert_fingerprint = $2, cert_not_after = $3 WHERE id = $4 AND revoked_at IS NULL")
        .bind(&cert.serial)
        .bind(&cert.fingerprint)
        .bind(cert.not_after.0)
        .bind(&agent.agent.0)
        .execute(tx.conn())
        .await?;
    audit::append(
        &mut tx,
        &agent_actor(agent),
        Event::new(
            agent.org,
            AuditAction::CertRenewed,
            format!("agent:{}", agent.agent.0),
            json!({ "cert_serial": cert.serial, "not_after": cert.not_after.0 }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(cert)
}

/// The latest commands of one server of the caller's organisation.
pub async fn recent_commands(
    auth: &Authorized<'_, ReadOrg>,
    agent: &AgentId,
    limit: i64,
) -> Result<Vec<crate::CommandView>, ControlError> {
    let rows = sqlx::query(
        "SELECT id, kind, state, created_at, finished_at FROM commands WHERE agent_id = $1 AND org_id = $2 ORDER BY seq DESC LIMIT $3",
    )
    .bind(&agent.0)
    .bind(auth.actor().org().0)
    .bind(limit.clamp(1, 100))
    .fetch_all(auth.store().pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(crate::CommandView {
                id: r.try_get(0)?,
                kind: r.try_get(1)?,
                state: r.try_get(2)?,
                created_at: Timestamp(r.try_get(3)?),
                finished_at: r.try_get::<Option<i64>, _>(4)?.map(Timestamp),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}
