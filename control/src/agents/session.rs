//! Agent sessions: an agent recognised on the gateway by the certificate this
//! control plane issued to it.
//!
//! An [`AgentSession`] is the agent-side proof of authorization: it has no
//! public constructor and is not `Clone`, so the only way to obtain one is
//! [`authenticate`], which refuses unknown, superseded, expired and revoked
//! certificates. Every function that acts for an agent (key rounds, renewal,
//! metrics, results) takes one.

use sqlx::Row;

use crate::server_keys::decode_key;
use crate::store::Store;
use crate::{AgentId, ControlError, OrgId, Timestamp};
use channel::{KemPublicKey, VerifyingKey};

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

/// An agent authenticated by its client certificate.
#[derive(Debug)]
pub struct AgentSession {
    agent: AgentId,
    org: OrgId,
    identity_key: VerifyingKey,
    kem_key: Option<KemPublicKey>,
    handover: Option<Handover>,
    fingerprint: String,
    last_seen_at: Option<Timestamp>,
    tls_group: String,
}

impl AgentSession {
    pub fn agent(&self) -> &AgentId {
        &self.agent
    }
    pub fn org(&self) -> OrgId {
        self.org
    }
    /// The identity key results and key registrations must be signed with:
    /// during a rotation handover, the key from before the rotation.
    pub fn identity_key(&self) -> &VerifyingKey {
        &self.identity_key
    }
    /// The X-Wing key commands are sealed to; `None` in classical fallback.
    pub fn kem_key(&self) -> Option<&KemPublicKey> {
        self.kem_key.as_ref()
    }
    /// Set when the agent presented the certificate from before its latest
    /// key round (within the handover window): it may only finish that round.
    pub fn handover(&self) -> Option<Handover> {
        self.handover
    }
    /// SHA-256 (hex) of the certificate the agent presented.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// The lookups [`authenticate`] runs on every agent request.
pub(crate) const BY_CERT_SQL: &str =
    "SELECT id, org_id, identity_key, kem_key, revoked_at, delete_after, cert_fingerprint, \
     cert_not_after, prev_identity_key, prev_valid_until, last_seen_at, tls_group FROM agents WHERE cert_fingerprint = $1";
pub(crate) const BY_PREV_CERT_SQL: &str = "SELECT id, org_id, identity_key, kem_key, revoked_at, delete_after, cert_fingerprint, \
     cert_not_after, prev_identity_key, prev_valid_until, last_seen_at, tls_group FROM agents WHERE prev_cert_fingerprint = $1 AND prev_valid_until > $2";
/// The heartbeat.
pub(crate) const TOUCH_SQL: &str =
    "UPDATE agents SET last_seen_at = $1, tls_group = $2 WHERE id = $3 AND revoked_at IS NULL";

/// Recognises an agent by its client certificate's fingerprint. Unknown,
/// superseded, expired and revoked certificates are refused. The first use
/// of a new certificate retires the previous one for good.
///
/// Two indexed lookups (current certificate, then the previous one within its
/// handover window), never a scan: this runs on every agent request.
pub async fn authenticate(
    store: &Store,
    cert_fingerprint: &str,
    now: Timestamp,
) -> Result<AgentSession, ControlError> {
    let unknown = || {
        ControlError::Unauthenticated(
            "This certificate does not belong to an enrolled agent.".into(),
        )
    };
    let row = match sqlx::query(BY_CERT_SQL)
        .bind(cert_fingerprint)
        .fetch_optional(store.pool())
        .await?
    {
        Some(row) => row,
        None => sqlx::query(BY_PREV_CERT_SQL)
            .bind(cert_fingerprint)
            .bind(now.0)
            .fetch_optional(store.pool())
            .await?
            .ok_or_else(unknown)?,
    };
    if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
        return Err(ControlError::Unauthenticated(
            "This agent has been revoked.".into(),
        ));
    }
    if row.try_get::<Option<i64>, _>("delete_after")?.is_some() {
        return Err(ControlError::Unauthenticated(
            "This server is scheduled for deletion; an Owner or Admin can restore it.".into(),
        ));
    }
    let agent = AgentId(row.try_get("id")?);
    let current: String = row.try_get("cert_fingerprint")?;
    let prev_identity: Option<String> = row.try_get("prev_identity_key")?;
    let prev_until: Option<i64> = row.try_get("prev_valid_until")?;
    let corrupt = || ControlError::Internal("an agent's stored key does not parse".into());
    let mut identity_key: String = row.try_get("identity_key")?;
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
        if Timestamp(row.try_get("cert_not_after")?) <= now {
            return Err(ControlError::Unauthenticated(
                "This agent's certificate has expired; enrol the server again.".into(),
            ));
        }
        if prev_until.is_some() {
            // The new certificate is in use: the old one retires for good.
            let mut tx = store.begin().await?;
            sqlx::query(
                "UPDATE agents SET prev_cert_fingerprint = NULL, prev_identity_key = NULL, prev_valid_until = NULL \
                 WHERE id = $1 AND cert_fingerprint = $2",
            )
            .bind(&agent.0)
            .bind(cert_fingerprint)
            .execute(tx.conn())
            .await?;
            tx.commit().await?;
        }
        None
    };
    let kem_key: Option<String> = row.try_get("kem_key")?;
    Ok(AgentSession {
        agent,
        org: OrgId(row.try_get("org_id")?),
        identity_key: decode_key(&identity_key).ok_or_else(corrupt)?,
        kem_key: kem_key
            .map(|k| decode_key(&k).ok_or_else(corrupt))
            .transpose()?,
        handover,
        fingerprint: cert_fingerprint.to_string(),
        last_seen_at: row
            .try_get::<Option<i64>, _>("last_seen_at")?
            .map(Timestamp),
        tls_group: row.try_get("tls_group")?,
    })
}

/// Heartbeats kept in memory and written together, in one transaction, by
/// [`Heartbeats::flush`] (every few seconds): an idle fleet's polls then cost
/// one write every few seconds instead of one per poll. The first heartbeat
/// of an agent, or one over a different TLS group, is written at once by the
/// caller ([`Heartbeats::record`] says so).
#[derive(Debug, Default)]
pub struct Heartbeats {
    pending: std::sync::Mutex<std::collections::HashMap<AgentId, Timestamp>>,
}

impl Heartbeats {
    /// Notes that the agent was heard from now. Returns `true` when the caller
    /// must write it at once with [`touch`] (first contact, or a new TLS group).
    pub fn record(&self, session: &AgentSession, tls_group: &str, now: Timestamp) -> bool {
        let group: String = tls_group.chars().take(64).collect();
        if session.last_seen_at.is_none() || session.tls_group != group {
            return true;
        }
        let fresh = session
            .last_seen_at
            .is_some_and(|t| t.plus_secs(TOUCH_EVERY_SECS) > now && t <= now);
        if !fresh {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let at = pending.entry(session.agent.clone()).or_insert(now);
            *at = (*at).max(now);
        }
        false
    }

    /// Writes the heartbeats noted since the last flush, in one transaction
    /// (never moving a recorded time backwards). Returns how many it wrote.
    pub async fn flush(&self, store: &Store) -> Result<usize, ControlError> {
        let batch: Vec<(AgentId, Timestamp)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let mut tx = store.begin().await?;
        for (agent, at) in &batch {
            sqlx::query(HEARTBEAT_SQL)
                .bind(at.0)
                .bind(&agent.0)
                .execute(tx.conn())
                .await?;
        }
        tx.commit().await?;
        Ok(batch.len())
    }
}

/// A batched heartbeat: never moves `last_seen_at` backwards.
pub(crate) const HEARTBEAT_SQL: &str = "UPDATE agents SET last_seen_at = $1 \
     WHERE id = $2 AND revoked_at IS NULL AND (last_seen_at IS NULL OR last_seen_at < $1)";

/// How stale the recorded heartbeat may get before a poll notes a new one:
/// well inside the 90 s after which a server shows Offline, and it spares a
/// heartbeat for every poll of an agent that polls again at once.
pub const TOUCH_EVERY_SECS: i64 = 10;

/// Writes the heartbeat now: first contact, or a new TLS group (see
/// [`Heartbeats::record`]); routine heartbeats are batched.
pub async fn touch(
    store: &Store,
    session: &AgentSession,
    tls_group: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    let tls_group: String = tls_group.chars().take(64).collect();
    let mut tx = store.begin().await?;
    sqlx::query(TOUCH_SQL)
        .bind(now.0)
        .bind(&tls_group)
        .bind(&session.agent.0)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(())
}
