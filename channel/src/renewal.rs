//! Certificate renewal requests, signed by the agent's identity key.
//!
//! A [`SignedRenewal`] binds the agent id, the SHA-256 of the CSR's PEM text
//! and the time it was made, under the agent's current identity (Ed25519)
//! key. The control plane issues a renewed certificate only for a CSR that
//! verifies this way.
//!
//! Past this module an attacker who stole only an agent's TLS key (and so can
//! pass the mutual-TLS handshake until that certificate expires) cannot renew
//! it: renewal needs the identity key too. A captured request can be replayed
//! for [`RENEWAL_MAX_AGE_MS`], and only for the same CSR, whose private key the
//! attacker does not hold.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::envelope::{MAX_CLOCK_SKEW_MS, MAX_ID_BYTES};
use crate::error::ChannelError;
use crate::keys::{KeyId, SigningKey, VerifyingKey, SIGNATURE_BYTES};
use crate::wire::{self, Canonical};
use crate::PROTOCOL_VERSION;

/// Label of the signed renewal.
pub const RENEWAL_LABEL: &str = "pilothouse/cert-renewal/v1";
/// How long after `issued_at` a renewal is still accepted.
pub const RENEWAL_MAX_AGE_MS: i64 = 10 * 60 * 1000;

/// The agent's signature over its renewal CSR. Serialize with `serde_json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRenewal {
    v: u16,
    agent_id: String,
    /// Hex SHA-256 of the CSR's PEM text.
    csr_sha256: String,
    issued_at: i64,
    signer_key_id: KeyId,
    #[serde(
        serialize_with = "wire::ser_b64",
        deserialize_with = "wire::de_b64_array::<_, SIGNATURE_BYTES>"
    )]
    signature: [u8; SIGNATURE_BYTES],
}

fn csr_hash(csr_pem: &str) -> String {
    hex::encode(sha2::Sha256::digest(csr_pem.as_bytes()))
}

fn message(v: u16, agent_id: &str, csr_sha256: &str, issued_at: i64, signer: &KeyId) -> Vec<u8> {
    Canonical::new(RENEWAL_LABEL)
        .u16(v)
        .str(agent_id)
        .str(csr_sha256)
        .i64(issued_at)
        .str(signer.as_str())
        .finish()
}

/// Signs a renewal of `csr_pem` for `agent_id` with the agent's identity key.
///
/// # Errors
/// [`ChannelError::InvalidField`] for a malformed agent id.
pub fn sign_renewal(
    agent_id: &str,
    csr_pem: &str,
    identity: &SigningKey,
    now_ms: i64,
) -> Result<SignedRenewal, ChannelError> {
    if !wire::valid_id(agent_id, MAX_ID_BYTES) {
        return Err(ChannelError::InvalidField("agent_id"));
    }
    let csr_sha256 = csr_hash(csr_pem);
    let signer_key_id = identity.key_id();
    let signature = identity.sign(&message(
        PROTOCOL_VERSION,
        agent_id,
        &csr_sha256,
        now_ms,
        &signer_key_id,
    ));
    Ok(SignedRenewal {
        v: PROTOCOL_VERSION,
        agent_id: agent_id.to_string(),
        csr_sha256,
        issued_at: now_ms,
        signer_key_id,
        signature,
    })
}

/// Verifies a renewal on the control plane: signed by the identity key it
/// trusts for `expected_agent_id`, for exactly this CSR, recently.
///
/// # Errors
/// In check order: [`ChannelError::UnknownVersion`], [`ChannelError::BadSignature`]
/// (also for a CSR other than the signed one), [`ChannelError::WrongAgent`],
/// [`ChannelError::NotYetValid`], [`ChannelError::Expired`].
pub fn verify_renewal(
    signed: &SignedRenewal,
    csr_pem: &str,
    expected_agent_id: &str,
    current_verifying: &VerifyingKey,
    now_ms: i64,
) -> Result<(), ChannelError> {
    if signed.v != PROTOCOL_VERSION {
        return Err(ChannelError::UnknownVersion(u64::from(signed.v)));
    }
    if signed.signer_key_id != current_verifying.key_id() {
        return Err(ChannelError::BadSignature);
    }
    current_verifying.verify(
        &message(
            signed.v,
            &signed.agent_id,
            &csr_hash(csr_pem),
            signed.issued_at,
            &signed.signer_key_id,
        ),
        &signed.signature,
    )?;
    if signed.agent_id != expected_agent_id {
        return Err(ChannelError::WrongAgent);
    }
    if signed.issued_at > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(ChannelError::NotYetValid);
    }
    if now_ms.saturating_sub(signed.issued_at) > RENEWAL_MAX_AGE_MS {
        return Err(ChannelError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSR: &str =
        "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";

    #[test]
    fn renewals_verify_only_for_their_key_csr_agent_and_time() {
        let id = SigningKey::generate();
        let now = 1_700_000_000_000;
        let signed = sign_renewal("agt_1", CSR, &id, now).unwrap();
        verify_renewal(&signed, CSR, "agt_1", id.verifying_key(), now).unwrap();
        let json = serde_json::to_string(&signed).unwrap();
        let back: SignedRenewal = serde_json::from_str(&json).unwrap();
        verify_renewal(&back, CSR, "agt_1", id.verifying_key(), now + 1000).unwrap();

        // A thief with only the TLS key signs with some other key.
        let thief = SigningKey::generate();
        let forged = sign_renewal("agt_1", CSR, &thief, now).unwrap();
        assert_eq!(
            verify_renewal(&forged, CSR, "agt_1", id.verifying_key(), now),
            Err(ChannelError::BadSignature)
        );
        // Another CSR under a captured signature.
        assert_eq!(
            verify_renewal(&signed, "other csr", "agt_1", id.verifying_key(), now),
            Err(ChannelError::BadSignature)
        );
        assert_eq!(
            verify_renewal(&signed, CSR, "agt_2", id.verifying_key(), now),
            Err(ChannelError::WrongAgent)
        );
        assert_eq!(
            verify_renewal(
                &signed,
                CSR,
                "agt_1",
                id.verifying_key(),
                now + RENEWAL_MAX_AGE_MS + 1
            ),
            Err(ChannelError::Expired)
        );
        assert_eq!(
            verify_renewal(
                &signed,
                CSR,
                "agt_1",
                id.verifying_key(),
                now - MAX_CLOCK_SKEW_MS - 1
            ),
            Err(ChannelError::NotYetValid)
        );
        let mut tampered = signed.clone();
        tampered.issued_at += 1;
        assert_eq!(
            verify_renewal(&tampered, CSR, "agt_1", id.verifying_key(), now),
            Err(ChannelError::BadSignature)
        );
    }
}
