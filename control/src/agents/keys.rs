//! Key rounds: an agent registering new keys (after "Rotate Keys" or
//! "Activate Post-Quantum Encryption") and renewing its certificate.
//!
//! Past this module an agent session can change only its own keys, only with
//! a registration signed by the identity key the control plane trusts for it
//! (the type [`VerifiedKeyRegistration`] proves that check ran), and only while
//! the agent is not revoked: a revocation that commits first wins, and then no
//! certificate is issued and no event is recorded.

use serde_json::json;
use sqlx::Row;

use super::session::{AgentSession, Handover, HANDOVER_SECS};
use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::ca::{AgentCa, IssuedCert};
use crate::server_keys::encode_key;
use crate::store::{Store, Tx};
use crate::{CommandKind, ControlError, Timestamp};
use channel::{SignedKeyRegistration, SignedRenewal, VerifiedKeyRegistration};

/// Which key round an Owner or Admin asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAction {
    /// New identity, KEM and TLS keys.
    RotateKeys,
    /// Register an X-Wing key (for an agent in classical fallback).
    ActivatePqc,
}

impl KeyAction {
    pub fn kind(self) -> CommandKind {
        match self {
            KeyAction::RotateKeys => CommandKind::RotateKeys,
            KeyAction::ActivatePqc => CommandKind::RegisterPqcKey,
        }
    }
}

fn revoked() -> ControlError {
    ControlError::Unauthenticated("This agent has been revoked.".into())
}

/// Verifies a key registration against the identity key the session trusts,
/// then records it (see [`register_keys`]).
pub async fn accept_key_registration(
    store: &Store,
    ca: &AgentCa,
    session: &AgentSession,
    signed: &SignedKeyRegistration,
    csr_pem: Option<&str>,
    now: Timestamp,
) -> Result<Option<IssuedCert>, ControlError> {
    let verified =
        channel::verify_registration(signed, &session.agent().0, session.identity_key(), now.0)
            .map_err(|e| {
                ControlError::invalid(format!("The key registration was refused: {e}."))
            })?;
    register_keys(store, ca, session, &verified, csr_pem, now).await
}

/// Records keys an agent registered. With a CSR (bound to the registration by
/// its hash), also issues a new client certificate, which replaces the old one
/// at once; the old one stays usable for a short handover, only to repeat this
/// round. Returns the new certificate, if any.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn register_keys(
    store: &Store,
    ca: &AgentCa,
    session: &AgentSession,
    verified: &VerifiedKeyRegistration,
    csr_pem: Option<&str>,
    now: Timestamp,
) -> Result<Option<IssuedCert>, ControlError> {
    let registration = verified.registration();
    let agent = session.agent();
    if session.handover() == Some(Handover::Renewal) {
        return Err(ControlError::Unauthenticated(
            "This certificate was renewed; use the new one.".into(),
        ));
    }
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
                ca.issue_client(csr, &agent.0, now)
                    .map_err(|e| ControlError::invalid(e.to_string()))?,
            )
        }
        None => None,
    };
    let rotated = &registration.identity_key != session.identity_key();
    let activated = session.kem_key().is_none();
    let mut tx = store.begin().await?;
    if session.handover() == Some(Handover::Rotation) {
        // Only the registration that was already applied may be repeated.
        let row = sqlx::query("SELECT identity_key, kem_key FROM agents WHERE id = $1")
            .bind(&agent.0)
            .fetch_one(tx.conn())
            .await?;
        let same = row.try_get::<String, _>("identity_key")?
            == encode_key(&registration.identity_key)
            && row.try_get::<Option<String>, _>("kem_key")?
                == Some(encode_key(&registration.kem_public_key));
        if !same {
            return Err(ControlError::Unauthenticated(
                "This certificate was replaced by a key rotation; only that rotation may be repeated.".into(),
            ));
        }
    }
    let updated = sqlx::query(
        "UPDATE agents SET identity_key = $1, kem_key = $2, kem_key_id = $3, keys_registered_at = $4 \
         WHERE id = $5 AND revoked_at IS NULL",
    )
    .bind(encode_key(&registration.identity_key))
    .bind(encode_key(&registration.kem_public_key))
    .bind(registration.kem_public_key.key_id().to_string())
    .bind(now.0)
    .bind(&agent.0)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if updated != 1 {
        return Err(revoked());
    }
    if let Some(cert) = &cert {
        // A repeated round (the agent still on its old certificate) keeps the
        // original handover and its deadline.
        if session.handover().is_none() {
            sqlx::query(
                "UPDATE agents SET prev_cert_fingerprint = cert_fingerprint, prev_identity_key = $1, prev_valid_until = $2 WHERE id = $3",
            )
            .bind(encode_key(session.identity_key()))
            .bind(now.plus_secs(HANDOVER_SECS).0)
            .bind(&agent.0)
            .execute(tx.conn())
            .await?;
        }
        replace_cert(&mut tx, session, cert).await?;
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
        &AuditActor::agent(agent),
        Event::new(
            session.org(),
            action,
            format!("agent:{}", agent.0),
            json!({ "kem_key_id": registration.kem_public_key.key_id().to_string(), "identity_key_id": registration.identity_key.key_id().to_string(), "cert_serial": cert.as_ref().map(|c| c.serial.clone()) }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(cert)
}

async fn replace_cert(
    tx: &mut Tx,
    session: &AgentSession,
    cert: &IssuedCert,
) -> Result<(), ControlError> {
    let updated = sqlx::query(
        "UPDATE agents SET cert_serial = $1, cert_fingerprint = $2, cert_not_after = $3 WHERE id = $4 AND revoked_at IS NULL",
    )
    .bind(&cert.serial)
    .bind(&cert.fingerprint)
    .bind(cert.not_after.0)
    .bind(&session.agent().0)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if updated == 1 {
        Ok(())
    } else {
        Err(revoked())
    }
}

/// Issues a fresh client certificate to an agent before its current one
/// expires, for a CSR signed by the agent's identity key (holding the TLS key
/// alone is not enough); the old certificate stays usable for a short
/// handover, only to renew again.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn renew_cert(
    store: &Store,
    ca: &AgentCa,
    session: &AgentSession,
    csr_pem: &str,
    renewal: &SignedRenewal,
    now: Timestamp,
) -> Result<IssuedCert, ControlError> {
    channel::verify_renewal(
        renewal,
        csr_pem,
        &session.agent().0,
        session.identity_key(),
        now.0,
    )
    .map_err(|e| ControlError::invalid(format!("The renewal was refused: {e}.")))?;
    if session.handover() == Some(Handover::Rotation) {
        return Err(ControlError::Unauthenticated(
            "This certificate was replaced by a key rotation; finish the rotation first.".into(),
        ));
    }
    let agent = session.agent();
    let cert = ca
        .issue_client(csr_pem, &agent.0, now)
        .map_err(|e| ControlError::invalid(e.to_string()))?;
    let mut tx = store.begin().await?;
    if session.handover().is_none() {
        sqlx::query(
            "UPDATE agents SET prev_cert_fingerprint = cert_fingerprint, prev_identity_key = NULL, prev_valid_until = $1 WHERE id = $2",
        )
        .bind(now.plus_secs(HANDOVER_SECS).0)
        .bind(&agent.0)
        .execute(tx.conn())
        .await?;
    }
    replace_cert(&mut tx, session, &cert).await?;
    audit::append(
        &mut tx,
        &AuditActor::agent(agent),
        Event::new(
            session.org(),
            AuditAction::CertRenewed,
            format!("agent:{}", agent.0),
            json!({ "cert_serial": cert.serial, "not_after": cert.not_after.0 }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(cert)
}
