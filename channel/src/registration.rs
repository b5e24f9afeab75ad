//! Key registration: how an agent announces new keys ("Activate Post-Quantum
//! Encryption", "Rotate Keys") so that the control plane can trust them.
//!
//! A [`KeyRegistration`] names the agent, its new X-Wing public key, its new identity
//! (Ed25519) verifying key, optionally its new TLS certificate fingerprint, and when it
//! was made. It carries two signatures over the canonical bytes, each under its own
//! label: one by the agent's CURRENT identity key (authorises the change) and one by
//! the NEW identity key (proves possession, so nobody can register a key they do not
//! hold). An agent that was offline during a rotation still holds its previous key and
//! can roll forward with it.
//!
//! For the very first registration there is no previous key: the agent signs with the
//! new key in both roles and the control plane verifies with
//! `registration.identity_key`, having authenticated the agent by its one-time
//! registration token. Keeping the same identity key (adding only a KEM key) is also
//! allowed.
//!
//! Past this module an attacker without the current identity key cannot get a key
//! registered; one who replays a captured registration within
//! [`REGISTRATION_MAX_AGE_MS`] can only re-register the same keys, and only while the
//! control plane still trusts the key that signed it. An attacker who has stolen the
//! current identity key can rotate to keys of their own: revocation, not this module,
//! answers that.

use crate::envelope::{check_version, MAX_CLOCK_SKEW_MS, MAX_ID_BYTES};
use crate::error::ChannelError;
use crate::keys::{KemPublicKey, KeyId, SigningKey, VerifyingKey, SIGNATURE_BYTES};
use crate::wire::{self, Canonical};
use crate::PROTOCOL_VERSION;
use serde::{Deserialize, Serialize};

/// Label of the registration body.
pub const REGISTRATION_LABEL: &str = "pilothouse/key-registration/v1";
const CURRENT_KEY_LABEL: &str = "pilothouse/key-registration/v1/current-key";
const NEW_KEY_LABEL: &str = "pilothouse/key-registration/v1/new-key";

/// Largest registration accepted by [`SignedKeyRegistration::from_json`].
pub const MAX_REGISTRATION_BYTES: usize = 16 * 1024;
/// How long after `issued_at` a registration is still accepted.
pub const REGISTRATION_MAX_AGE_MS: i64 = 10 * 60 * 1000;
/// Longest TLS certificate fingerprint string (`[A-Za-z0-9:+/=_-]`, e.g. hex with
/// colons or base64 of a SHA-256).
pub const MAX_TLS_FINGERPRINT_BYTES: usize = 128;

/// What an agent asks the control plane to trust from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRegistration {
    /// The agent whose keys change.
    pub agent_id: String,
    /// New X-Wing public key; commands will be sealed to it.
    pub kem_public_key: KemPublicKey,
    /// New identity verifying key; results and later registrations are signed with
    /// the matching signing key.
    pub identity_key: VerifyingKey,
    /// Fingerprint of the new TLS client certificate, if it changes too.
    pub tls_cert_fingerprint: Option<String>,
    /// When the agent made the registration, Unix milliseconds.
    pub issued_at: i64,
}

impl KeyRegistration {
    fn check_structure(&self) -> Result<(), &'static str> {
        if !wire::valid_id(&self.agent_id, MAX_ID_BYTES) {
            return Err("agent_id");
        }
        if let Some(fp) = &self.tls_cert_fingerprint {
            let ok = !fp.is_empty()
                && fp.len() <= MAX_TLS_FINGERPRINT_BYTES
                && fp.bytes().all(|c| {
                    c.is_ascii_alphanumeric()
                        || matches!(c, b':' | b'+' | b'/' | b'=' | b'_' | b'-')
                });
            if !ok {
                return Err("tls_cert_fingerprint");
            }
        }
        Ok(())
    }

    fn body(&self, v: u16) -> Vec<u8> {
        let mut c = Canonical::new(REGISTRATION_LABEL);
        c.u16(v)
            .str(&self.agent_id)
            .bytes(self.kem_public_key.as_bytes())
            .bytes(self.identity_key.as_bytes());
        match &self.tls_cert_fingerprint {
            Some(fp) => c.u8(1).str(fp),
            None => c.u8(0),
        };
        c.i64(self.issued_at).finish()
    }
}

/// A [`KeyRegistration`] with both signatures, as sent on the wire. Serialize with
/// `serde_json`; parse with [`SignedKeyRegistration::from_json`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedKeyRegistration {
    v: u16,
    registration: KeyRegistration,
    signer_key_id: KeyId,
    #[serde(
        serialize_with = "wire::ser_b64",
        deserialize_with = "wire::de_b64_array::<_, SIGNATURE_BYTES>"
    )]
    signature: [u8; SIGNATURE_BYTES],
    #[serde(
        serialize_with = "wire::ser_b64",
        deserialize_with = "wire::de_b64_array::<_, SIGNATURE_BYTES>"
    )]
    proof_of_possession: [u8; SIGNATURE_BYTES],
}

impl SignedKeyRegistration {
    /// Parses a registration from JSON, refusing oversized input and unknown versions.
    /// Verifies nothing cryptographic: see [`verify_registration`].
    ///
    /// # Errors
    /// [`ChannelError::TooLarge`], [`ChannelError::UnknownVersion`],
    /// [`ChannelError::Malformed`].
    pub fn from_json(input: &[u8]) -> Result<Self, ChannelError> {
        if input.len() > MAX_REGISTRATION_BYTES {
            return Err(ChannelError::TooLarge);
        }
        check_version(input)?;
        let reg: Self = serde_json::from_slice(input)
            .map_err(|_| ChannelError::Malformed("key registration"))?;
        reg.registration
            .check_structure()
            .map_err(ChannelError::Malformed)?;
        Ok(reg)
    }

    /// The registration, not yet verified.
    pub fn registration(&self) -> &KeyRegistration {
        &self.registration
    }

    /// Id of the key that authorised it (the agent's current identity key).
    pub fn signer_key_id(&self) -> &KeyId {
        &self.signer_key_id
    }
}

fn current_key_message(body: &[u8], signer_key_id: &KeyId) -> Vec<u8> {
    Canonical::new(CURRENT_KEY_LABEL)
        .nested(body)
        .str(signer_key_id.as_str())
        .finish()
}

fn new_key_message(body: &[u8]) -> Vec<u8> {
    Canonical::new(NEW_KEY_LABEL).nested(body).finish()
}

/// Signs a registration with the agent's current identity key and the new one.
///
/// # Errors
/// [`ChannelError::InvalidField`] for a malformed agent id or fingerprint, or when
/// `new_identity` does not match `registration.identity_key`.
pub fn sign_registration(
    registration: KeyRegistration,
    current_identity: &SigningKey,
    new_identity: &SigningKey,
) -> Result<SignedKeyRegistration, ChannelError> {
    registration
        .check_structure()
        .map_err(ChannelError::InvalidField)?;
    if new_identity.verifying_key() != &registration.identity_key {
        return Err(ChannelError::InvalidField("identity_key"));
    }
    let body = registration.body(PROTOCOL_VERSION);
    let signer_key_id = current_identity.key_id();
    let signature = current_identity.sign(&current_key_message(&body, &signer_key_id));
    let proof_of_possession = new_identity.sign(&new_key_message(&body));
    Ok(SignedKeyRegistration {
        v: PROTOCOL_VERSION,
        registration,
        signer_key_id,
        signature,
        proof_of_possession,
    })
}

/// A registration whose signatures, addressee and age were checked. Only
/// [`verify_registration`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKeyRegistration(KeyRegistration);

impl VerifiedKeyRegistration {
    /// The verified registration.
    pub fn registration(&self) -> &KeyRegistration {
        &self.0
    }

    /// Takes the verified registration.
    pub fn into_inner(self) -> KeyRegistration {
        self.0
    }
}

/// Verifies a registration on the control plane against the key it currently trusts
/// for `expected_agent_id` (the agent the request is authenticated as).
///
/// # Errors
/// In check order: [`ChannelError::UnknownVersion`], [`ChannelError::Malformed`],
/// [`ChannelError::BadSignature`] (current-key signature, then proof of possession),
/// [`ChannelError::WrongAgent`], [`ChannelError::NotYetValid`] (issued more than
/// [`MAX_CLOCK_SKEW_MS`] ahead), [`ChannelError::Expired`] (older than
/// [`REGISTRATION_MAX_AGE_MS`]).
pub fn verify_registration(
    signed: &SignedKeyRegistration,
    expected_agent_id: &str,
    current_verifying: &VerifyingKey,
    now_ms: i64,
) -> Result<VerifiedKeyRegistration, ChannelError> {
    if signed.v != PROTOCOL_VERSION {
        return Err(ChannelError::UnknownVersion(u64::from(signed.v)));
    }
    let reg = &signed.registration;
    reg.check_structure().map_err(ChannelError::Malformed)?;
    let body = reg.body(signed.v);
    current_verifying.verify(
        &current_key_message(&body, &signed.signer_key_id),
        &signed.signature,
    )?;
    if signed.signer_key_id != current_verifying.key_id() {
        return Err(ChannelError::BadSignature);
    }
    reg.identity_key
        .verify(&new_key_message(&body), &signed.proof_of_possession)?;
    if reg.agent_id != expected_agent_id {
        return Err(ChannelError::WrongAgent);
    }
    if reg.issued_at > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(ChannelError::NotYetValid);
    }
    if now_ms.saturating_sub(reg.issued_at) > REGISTRATION_MAX_AGE_MS {
        return Err(ChannelError::Expired);
    }
    Ok(VerifiedKeyRegistration(reg.clone()))
}
