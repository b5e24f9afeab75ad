//! Registration tokens and enrolment.
//!
//! A registration token is single-use, expiring, revocable, scoped to one
//! organisation and stored only as a hash; the string the operator pastes
//! also carries the CA pin the agent checks (`channel::token`).
//!
//! Past this module an attacker without a live token cannot enrol an agent.
//! Guessing costs them no database write (the token's hash is looked up before
//! any write transaction) and is throttled per client address in memory; a used,
//! expired or revoked token is audited once, then only counted.

use secrecy::SecretString;
use serde_json::json;
use sqlx::Row;

use super::ManageAgents;
use crate::access::{Authorized, Operator, RequestMeta};
use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::ca::{AgentCa, IssuedCert};
use crate::crypto::{random_token, token_hash};
use crate::server_keys::encode_key;
use crate::store::Store;
use crate::throttle::MemoryThrottle;
use crate::{names, AgentId, ControlError, OrgId, RegistrationTokenView, Timestamp, TokenState};
use channel::{KemPublicKey, VerifyingKey};

pub const DEFAULT_TOKEN_TTL_SECS: i64 = 3600;
pub const MAX_TOKEN_TTL_SECS: i64 = 7 * 86_400;

/// A token that was just created. The string is shown once and never stored.
pub struct NewToken {
    pub id: i64,
    pub token: SecretString,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
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
    tx: &mut crate::store::Tx,
    org: OrgId,
    actor: &AuditActor,
    ca_pin: &str,
    ttl_secs: i64,
    now: Timestamp,
) -> Result<NewToken, ControlError> {
    check_ttl(ttl_secs)?;
    let secret = random_token(16);
    let expires_at = now.plus_secs(ttl_secs);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO registration_tokens (org_id, token_hash, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(org.0)
    .bind(token_hash("registration", &secret))
    .bind(actor.user.map(|u| u.0))
    .bind(now.0)
    .bind(expires_at.0)
    .fetch_one(tx.conn())
    .await?;
    audit::append(
        tx,
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
    Ok(NewToken {
        id,
        token: SecretString::from(channel::token::RegistrationToken::format(&secret, ca_pin)),
        expires_at,
    })
}

#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn create_registration_token(
    auth: &Authorized<'_, ManageAgents>,
    ca_pin: &str,
    ttl_secs: i64,
    now: Timestamp,
) -> Result<NewToken, ControlError> {
    check_ttl(ttl_secs)?;
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ManageAgents>(&mut tx).await?;
    let new = insert_token(
        &mut tx,
        actor.org(),
        &actor.audit_actor(),
        ca_pin,
        ttl_secs,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(new)
}

/// `pilothouse admin registration-token`: for an organisation named on the command line.
pub async fn create_registration_token_cli(
    op: &Operator,
    org_name: &str,
    ca_pin: &str,
    ttl_secs: i64,
    now: Timestamp,
) -> Result<NewToken, ControlError> {
    check_ttl(ttl_secs)?;
    let mut tx = op.store().begin().await?;
    let org = op.org_named(&mut tx, org_name).await?;
    let new = insert_token(&mut tx, org, &AuditActor::cli(), ca_pin, ttl_secs, now).await?;
    tx.commit().await?;
    Ok(new)
}

fn token_state(
    used: Option<i64>,
    revoked: Option<i64>,
    expires_at: Timestamp,
    now: Timestamp,
) -> TokenState {
    if used.is_some() {
        TokenState::Used
    } else if revoked.is_some() {
        TokenState::Revoked
    } else if expires_at <= now {
        TokenState::Expired
    } else {
        TokenState::Active
    }
}

const TOKEN_COLUMNS: &str = "t.id, t.created_at, t.expires_at, t.used_at, t.revoked_at, t.agent_id, t.refusals, u.email AS created_by";

fn token_view(
    r: &sqlx::any::AnyRow,
    now: Timestamp,
) -> Result<RegistrationTokenView, ControlError> {
    let expires_at = Timestamp(r.try_get("expires_at")?);
    let used: Option<i64> = r.try_get("used_at")?;
    let revoked: Option<i64> = r.try_get("revoked_at")?;
    Ok(RegistrationTokenView {
        id: r.try_get("id")?,
        created_by: r
            .try_get::<Option<String>, _>("created_by")?
            .unwrap_or_else(|| "cli".into()),
        created_at: Timestamp(r.try_get("created_at")?),
        expires_at,
        state: token_state(used, revoked, expires_at, now),
        agent: r.try_get::<Option<String>, _>("agent_id")?.map(AgentId),
        refusals: r.try_get("refusals")?,
    })
}

/// The organisation's registration tokens, newest first (never the secret):
/// for those who manage agents (Owner, Admin).
pub async fn list_registration_tokens(
    auth: &Authorized<'_, ManageAgents>,
    now: Timestamp,
) -> Result<Vec<RegistrationTokenView>, ControlError> {
    let rows = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM registration_tokens t LEFT JOIN users u ON u.id = t.created_by \
         WHERE t.org_id = $1 ORDER BY t.created_at DESC, t.id DESC LIMIT 100"
    ))
    .bind(auth.actor().org().0)
    .fetch_all(auth.store().pool())
    .await?;
    rows.iter().map(|r| token_view(r, now)).collect()
}

/// `pilothouse admin registration-tokens --org NAME`.
pub async fn list_registration_tokens_cli(
    op: &Operator,
    org_name: &str,
    now: Timestamp,
) -> Result<Vec<RegistrationTokenView>, ControlError> {
    let mut tx = op.store().begin().await?;
    let org = op.org_named(&mut tx, org_name).await?;
    let rows = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM registration_tokens t LEFT JOIN users u ON u.id = t.created_by \
         WHERE t.org_id = $1 ORDER BY t.created_at DESC, t.id DESC LIMIT 100"
    ))
    .bind(org.0)
    .fetch_all(tx.conn())
    .await?;
    rows.iter().map(|r| token_view(r, now)).collect()
}

async fn revoke_token_in(
    tx: &mut crate::store::Tx,
    org: OrgId,
    id: i64,
    actor: &AuditActor,
    now: Timestamp,
) -> Result<(), ControlError> {
    let revoked = sqlx::query(
        "UPDATE registration_tokens SET revoked_at = $1 \
         WHERE id = $2 AND org_id = $3 AND used_at IS NULL AND revoked_at IS NULL",
    )
    .bind(now.0)
    .bind(id)
    .bind(org.0)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if revoked != 1 {
        return Err(ControlError::not_found(
            "No such unused registration token.",
        ));
    }
    audit::append(
        tx,
        actor,
        Event::new(
            org,
            AuditAction::RegistrationTokenRevoked,
            format!("registration_token:{id}"),
            json!({}),
        ),
        now,
    )
    .await?;
    Ok(())
}

/// Revokes an unused registration token: enrolment with it is refused from now on.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn revoke_registration_token(
    auth: &Authorized<'_, ManageAgents>,
    id: i64,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ManageAgents>(&mut tx).await?;
    revoke_token_in(&mut tx, actor.org(), id, &actor.audit_actor(), now).await?;
    tx.commit().await?;
    Ok(())
}

/// `pilothouse admin revoke-registration-token --org NAME ID`.
pub async fn revoke_registration_token_cli(
    op: &Operator,
    org_name: &str,
    id: i64,
    now: Timestamp,
) -> Result<(), ControlError> {
    let mut tx = op.store().begin().await?;
    let org = op.org_named(&mut tx, org_name).await?;
    revoke_token_in(&mut tx, org, id, &AuditActor::cli(), now).await?;
    tx.commit().await?;
    Ok(())
}

/// What an agent sends to enrol.
pub struct Enrolment {
    /// The token as the agent sent it, parsed once at the edge.
    pub token: channel::token::RegistrationToken,
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

/// Enrolment attempts per client address per window that have not succeeded
/// (failed, or still in flight), checked before any database work. Successful
/// enrolments give their attempt back, so a fleet behind one NAT address
/// enrols freely, up to this many at a time.
pub const ENROL_FAILURES_PER_CLIENT: u32 = 100;
pub const ENROL_WINDOW_SECS: i64 = 600;

const TOKEN_INVALID: &str = "The registration token is not valid.";

/// Enrols an agent with a registration token. A refused token that belongs
/// to an organisation (used, expired, revoked) is audited there once.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn enrol(
    store: &Store,
    ca: &AgentCa,
    throttle: &MemoryThrottle,
    e: Enrolment,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<Enrolled, ControlError> {
    let client = meta.ip.as_str();
    throttle.reserve(client, now)?;
    let result = enrol_reserved(store, ca, e, meta, now).await;
    if result.is_ok() {
        throttle.release(client);
    }
    result
}

async fn enrol_reserved(
    store: &Store,
    ca: &AgentCa,
    e: Enrolment,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<Enrolled, ControlError> {
    let hostname = names::bounded_name(&e.hostname, 253, "hostname")?;
    let version = names::bounded_name(&e.agent_version, 32, "agent version")?;
    let hash = token_hash("registration", e.token.secret());
    // A read first: a flood of random tokens never takes the write lock.
    let row = sqlx::query(
        "SELECT id, org_id, expires_at, used_at, revoked_at FROM registration_tokens WHERE token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(store.pool())
    .await?;
    let Some(row) = row else {
        return Err(ControlError::Unauthenticated(TOKEN_INVALID.into()));
    };
    let token_id: i64 = row.try_get("id")?;
    let org = OrgId(row.try_get("org_id")?);
    let expires_at = Timestamp(row.try_get("expires_at")?);
    let state = token_state(
        row.try_get("used_at")?,
        row.try_get("revoked_at")?,
        expires_at,
        now,
    );
    let actor = AuditActor {
        user: None,
        label: format!("agent on {hostname}"),
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    };
    if state != TokenState::Active {
        return Err(refuse(store, org, token_id, state, &hostname, &actor, now).await?);
    }
    let identity_key = encode_key(&e.identity_key);
    let kem_key = e.kem_key.as_ref().map(encode_key);
    let kem_key_id = e.kem_key.as_ref().map(|k| k.key_id().to_string());
    let agent = AgentId(format!("agt_{}", random_token(12)));
    let cert = ca
        .issue_client(&e.csr_pem, &agent.0, now)
        .map_err(|err| ControlError::invalid(err.to_string()))?;
    let mut tx = store.begin().await?;
    // Single use even under a race: only one UPDATE can flip used_at.
    let flipped = sqlx::query(
        "UPDATE registration_tokens SET used_at = $1, agent_id = $2 \
         WHERE id = $3 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
    )
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

/// Counts a refusal of a token that exists, audits the first one, and returns
/// the error for the agent.
async fn refuse(
    store: &Store,
    org: OrgId,
    token_id: i64,
    state: TokenState,
    hostname: &str,
    actor: &AuditActor,
    now: Timestamp,
) -> Result<ControlError, ControlError> {
    let reason = match state {
        TokenState::Used => "The registration token has already been used. Create a new one.",
        TokenState::Expired => "The registration token has expired. Create a new one.",
        TokenState::Revoked => "The registration token was revoked. Create a new one.",
        TokenState::Active => TOKEN_INVALID,
    };
    let mut tx = store.begin().await?;
    let refusals: i64 = sqlx::query_scalar(
        "UPDATE registration_tokens SET refusals = refusals + 1 WHERE id = $1 RETURNING refusals",
    )
    .bind(token_id)
    .fetch_one(tx.conn())
    .await?;
    if refusals == 1 {
        audit::append(
            &mut tx,
            actor,
            Event::new(
                org,
                AuditAction::AgentRegistrationRefused,
                format!("registration_token:{token_id}"),
                json!({ "reason": reason, "hostname": hostname }),
            ),
            now,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(ControlError::Conflict(reason.into()))
}
