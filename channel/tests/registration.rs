//! Key registration: activation, rotation, and every way a registration is refused.

// Test code: a failed unwrap is a failed assertion, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use channel::registration::REGISTRATION_MAX_AGE_MS;
use channel::{
    sign_registration, verify_registration, ChannelError, KemSecretKey, KeyRegistration,
    SignedKeyRegistration, SigningKey,
};
use common::{edit_json, flip_b64_field, Fixture, AGENT, NOW};

struct Rotation {
    current: SigningKey,
    new_identity: SigningKey,
    new_kem: KemSecretKey,
}

fn rotation(f: &mut Fixture) -> Rotation {
    Rotation {
        current: SigningKey::generate_from_rng(&mut f.rng),
        new_identity: SigningKey::generate_from_rng(&mut f.rng),
        new_kem: KemSecretKey::generate_from_rng(&mut f.rng),
    }
}

fn registration(r: &Rotation) -> KeyRegistration {
    KeyRegistration {
        agent_id: AGENT.into(),
        kem_public_key: r.new_kem.public_key().clone(),
        identity_key: r.new_identity.verifying_key().clone(),
        tls_cert_fingerprint: Some("sha256:9f86d081884c7d659a2feaa0c55ad015".into()),
        issued_at: NOW,
    }
}

fn signed(r: &Rotation) -> SignedKeyRegistration {
    sign_registration(registration(r), &r.current, &r.new_identity).unwrap()
}

fn reparse(bytes: &[u8]) -> SignedKeyRegistration {
    SignedKeyRegistration::from_json(bytes).unwrap()
}

#[test]
fn rotation_round_trip_through_json() {
    let mut f = Fixture::new();
    let r = rotation(&mut f);
    let s = signed(&r);
    let json = serde_json::to_vec(&s).unwrap();
    let parsed = reparse(&json);
    assert_eq!(parsed.signer_key_id(), &r.current.key_id());
    let verified = verify_registration(&parsed, AGENT, r.current.verifying_key(), NOW).unwrap();
    assert_eq!(verified.registration(), &registration(&r));
    assert_eq!(
        verified.into_inner().kem_public_key.key_id(),
        r.new_kem.key_id()
    );
}

#[test]
fn first_registration_and_kem_only_activation_use_one_key() {
    let mut f = Fixture::new();
    let r = rotation(&mut f);
    let mut reg = registration(&r);
    reg.identity_key = r.current.verifying_key().clone();
    reg.tls_cert_fingerprint = None;
    let s = sign_registration(reg, &r.current, &r.current).unwrap();
    assert!(verify_registration(&s, AGENT, r.current.verifying_key(), NOW).is_ok());
}

#[test]
fn signed_by_a_key_that_is_not_current_is_refused() {
    let mut f = Fixture::new();
    let r = rotation(&mut f);
    let s = signed(&r);
    // The control plane trusts a different key for this agent.
    let other = SigningKey::generate_from_rng(&mut f.rng);
    assert_eq!(
        verify_registration(&s, AGENT, other.verifying_key(), NOW).unwrap_err(),
        ChannelError::BadSignature
    );
    // An attacker registering their own keys, signed only with the new key.
    let self_signed =
        sign_registration(registration(&r), &r.new_identity, &r.new_identity).unwrap();
    assert_eq!(
        verify_registration(&self_signed, AGENT, r.current.verifying_key(), NOW).unwrap_err(),
        ChannelError::BadSignature
    );
}

#[test]
fn missing_proof_of_possession_is_refused() {
    let mut f = Fixture::new();
    let r = rotation(&mut f);
    // The signer cannot claim a new identity key it does not hold.
    let stranger = SigningKey::generate_from_rng(&mut f.rng);
    assert_eq!(
        sign_registration(registration(&r), &r.current, &stranger).unwrap_err(),
        ChannelError::InvalidField("identity_key")
    );
    // Nor can the proof be damaged on the wire.
    let json = edit_json(&signed(&r), |v| flip_b64_field(v, "proof_of_possession", 5));
    assert_eq!(
        verify_registration(&reparse(&json), AGENT, r.current.verifying_key(), NOW).unwrap_err(),
        ChannelError::BadSignature
    );
}

#[test]
fn tampered_fields_break_the_signature() {
    let mut f = Fixture::new();
    let r = rotation(&mut f);
    let s = signed(&r);
    let other_kem = serde_json::to_value(KemSecretKey::generate().public_key()).unwrap();
    let other_vk = serde_json::to_value(SigningKey::generate().verifying_key()).unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let edits: Vec<Edit> = vec![
        Box::new(move |v| v["registration"]["kem_public_key"] = other_kem.clone()),
        Box::new(move |v| v["registration"]["identity_key"] = other_vk.clone()),
        Box::new(|v| v["registration"]["tls_cert_fingerprint"] = serde_json::Value::Null),
        Box::new(|v| v["registration"]["issued_at"] = (NOW + 1).into()),
        Box::new(|v| v["registration"]["agent_id"] = "agent-other".into()),
        Box::new(|v| flip_b64_field(v, "signature", 0)),
    ];
    for (i, edit) in edits.iter().enumerate() {
        let json = edit_json(&s, edit);
        assert_eq!(
            verify_registration(&reparse(&json), AGENT, r.current.verifying_key(), NOW)
                .unwrap_err(),
            ChannelError::BadSignature,
            "edit {i}"
        );
    }
}

#[test]
fn registration_for_another_agent_is_refused() {
    let mut f = Fixture::new();
    let r = rotation(&mut f);
    let s = signed(&r);
    assert_eq!(
        verify_registration(&s, "agent-other", r.current.verifying_key(), NOW).unwrap_err(),
        ChannelError::WrongAgent
    );
}

#[test]
fn registration_validity_window() {
    let mut f = Fixture::new();
    let r = rotation(&mut f);
    let s = signed(&r);
    let vk = r.current.verifying_key();
    assert!(verify_registration(&s, AGENT, vk, NOW + REGISTRATION_MAX_AGE_MS).is_ok());
    assert_eq!(
        verify_registration(&s, AGENT, vk, NOW + REGISTRATION_MAX_AGE_MS + 1).unwrap_err(),
        ChannelError::Expired
    );
    assert!(verify_registration(&s, AGENT, vk, NOW - 30_000).is_ok());
    assert_eq!(
        verify_registration(&s, AGENT, vk, NOW - 30_001).unwrap_err(),
        ChannelError::NotYetValid
    );
}

#[test]
fn malformed_registrations_are_refused() {
    let mut f = Fixture::new();
    let r = rotation(&mut f);
    let s = signed(&r);
    let json = edit_json(&s, |v| v["v"] = 9.into());
    assert_eq!(
        SignedKeyRegistration::from_json(&json).unwrap_err(),
        ChannelError::UnknownVersion(9)
    );
    let edits: [fn(&mut serde_json::Value); 4] = [
        |v| v["registration"]["tls_cert_fingerprint"] = "has space".into(),
        |v| v["registration"]["kem_public_key"] = "AAAA".into(),
        // The Ed25519 identity point: decodes, but has small order.
        |v| {
            v["registration"]["identity_key"] = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()
        },
        |v| v["registration"]["unexpected"] = true.into(),
    ];
    for edit in edits {
        let json = edit_json(&s, edit);
        assert!(matches!(
            SignedKeyRegistration::from_json(&json).unwrap_err(),
            ChannelError::Malformed(_)
        ));
    }
    let big = vec![b' '; channel::registration::MAX_REGISTRATION_BYTES + 1];
    assert_eq!(
        SignedKeyRegistration::from_json(&big).unwrap_err(),
        ChannelError::TooLarge
    );
    let mut bad = registration(&r);
    bad.tls_cert_fingerprint = Some(String::new());
    assert_eq!(
        sign_registration(bad, &r.current, &r.new_identity).unwrap_err(),
        ChannelError::InvalidField("tls_cert_fingerprint")
    );
}
