//! Signed audit checkpoints, made by the control plane with its audit key.
//!
//! The audit key is an Ed25519 key of its own, never the command key, kept
//! in the database sealed under the master key ([`crate::key_vault`]). Every
//! [`CheckpointCadence::every_events`] events or
//! [`CheckpointCadence::every_secs`] seconds (whichever comes first, and only
//! when there are new events; by default 1000 events or 15 minutes, set by
//! `audit_checkpoint_every_events` and `audit_checkpoint_every_minutes`) the
//! server signs each organisation's event count and head hash
//! ([`sign_due`]). The
//! checkpoints are kept in `audit_checkpoints` and published with
//! `pilothouse audit checkpoints`; a customer who keeps them, with the audit
//! public key pinned (`pilothouse audit key`), can verify an export offline
//! (`pilothouse audit verify`, [`crate::audit_export::verify_export`]).
//!
//! What this defends against: someone who can rewrite the database can
//! rewrite the chain, but not the checkpoints a customer already holds, so a
//! truncated or rewritten history no longer matches them. Someone who also
//! holds the audit key can sign new checkpoints, not alter the customer's
//! copies.

use sqlx::Row;

use crate::store::Store;
use crate::{ControlError, OrgId, Timestamp};

/// How often a chain is signed: whichever of the two comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointCadence {
    /// A checkpoint after this many new events (at least 1).
    pub every_events: i64,
    /// A checkpoint this many seconds after the last one, when there are new
    /// events (at least 1).
    pub every_secs: i64,
}

impl Default for CheckpointCadence {
    /// 1000 events or 15 minutes.
    fn default() -> Self {
        CheckpointCadence {
            every_events: 1000,
            every_secs: 15 * 60,
        }
    }
}

/// The audit signing key.
pub struct AuditKey {
    signing: channel::SigningKey,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("key_id", &self.signing.key_id())
            .finish_non_exhaustive()
    }
}

impl AuditKey {
    /// A new key, held in memory only (tests; the server's comes from
    /// [`crate::key_vault`]).
    pub fn generate() -> Self {
        Self {
            signing: channel::SigningKey::generate(),
        }
    }

    /// The key from its secret bytes; `None` when they are not a key.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        channel::SigningKey::from_bytes(bytes)
            .ok()
            .map(|signing| Self { signing })
    }

    /// The public key customers pin: base64url, as `--key` takes it.
    pub fn public_key(&self) -> String {
        crate::server_keys::encode_key(self.signing.verifying_key())
    }

    pub fn verifying_key(&self) -> &channel::VerifyingKey {
        self.signing.verifying_key()
    }

    pub fn key_id(&self) -> channel::KeyId {
        self.signing.key_id()
    }

    /// Signs one organisation's chain as it stands.
    pub fn sign(
        &self,
        org: OrgId,
        count: i64,
        head_hash: &str,
        now: Timestamp,
    ) -> Result<channel::Checkpoint, ControlError> {
        channel::sign_checkpoint(&self.signing, org.0, count, head_hash, now.0)
            .map_err(ControlError::internal)
    }
}

/// Parses a pinned audit public key (base64url, as `pilothouse audit key`
/// prints it).
pub fn parse_public_key(text: &str) -> Option<channel::VerifyingKey> {
    crate::server_keys::decode_key(text.trim())
}

/// Signs a checkpoint for every organisation whose chain grew by
/// `cadence.every_events` since its last checkpoint, or grew at all and
/// whose last checkpoint is `cadence.every_secs` old (`force`: grew at
/// all). Returns the new checkpoints.
pub async fn sign_due(
    store: &Store,
    key: &AuditKey,
    cadence: CheckpointCadence,
    force: bool,
    now: Timestamp,
) -> Result<Vec<channel::Checkpoint>, ControlError> {
    let orgs: Vec<i64> = sqlx::query_scalar("SELECT id FROM orgs ORDER BY id")
        .fetch_all(store.pool())
        .await?;
    let mut signed = Vec::new();
    for org in orgs {
        let head = sqlx::query(
            "SELECT seq, hash FROM audit_events WHERE org_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(org)
        .fetch_optional(store.pool())
        .await?;
        let Some(head) = head else { continue };
        let (count, hash): (i64, String) = (head.try_get("seq")?, head.try_get("hash")?);
        let last = sqlx::query(
            "SELECT count, at FROM audit_checkpoints WHERE org_id = $1 ORDER BY count DESC LIMIT 1",
        )
        .bind(org)
        .fetch_optional(store.pool())
        .await?;
        let (last_count, last_at) = match last {
            Some(r) => (r.try_get::<i64, _>("count")?, r.try_get::<i64, _>("at")?),
            None => (0, i64::MIN),
        };
        let grew = count > last_count;
        let due = count - last_count >= cadence.every_events.max(1)
            || now.0.saturating_sub(last_at) >= cadence.every_secs.max(1).saturating_mul(1000);
        if !grew || !(due || force) {
            continue;
        }
        let c = key.sign(OrgId(org), count, &hash, now)?;
        let mut tx = store.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO audit_checkpoints (org_id, count, at, checkpoint) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (org_id, count) DO NOTHING",
        )
        .bind(org)
        .bind(c.count)
        .bind(c.at)
        .bind(serde_json::to_string(&c).map_err(ControlError::internal)?)
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        if inserted > 0 {
            signed.push(c);
        }
    }
    Ok(signed)
}

/// An organisation's checkpoints, oldest first, as a checkpoints file holds
/// them (one JSON object per line).
pub async fn list(store: &Store, org: OrgId) -> Result<Vec<channel::Checkpoint>, ControlError> {
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT checkpoint FROM audit_checkpoints WHERE org_id = $1 ORDER BY count",
    )
    .bind(org.0)
    .fetch_all(store.pool())
    .await?;
    stored
        .iter()
        .map(|c| serde_json::from_str(c).map_err(ControlError::internal))
        .collect()
}
