//! Known-answer test vectors in `testdata/vectors.json`.
//!
//! Everything in the file comes from one `ChaCha20Rng` (crate `chacha20`, feature
//! `rng`) seeded with `seed_hex`, drawn in the order of `generate` below. The test
//! regenerates the file and asserts byte equality, so any change to the wire format,
//! the canonical encoding, key derivation or key expansion shows up here; a second
//! test opens the stored envelopes with the stored keys, independently of
//! regeneration.
//!
//! After an intentional format change, regenerate with
//! `CHANNEL_WRITE_VECTORS=1 cargo test -p channel --test vectors`
//! and review the diff.

// Test code: a failed unwrap is a failed assertion, helpers included.
#![allow(clippy::unwrap_used)]

use chacha20::ChaCha20Rng;
use channel::{
    open_command, open_result, seal_command, seal_result, sign_registration, verify_registration,
    CommandHeader, KemSecretKey, KeyRegistration, ReplayGuard, ResultHeader, ResultStatus,
    SealedCommand, SealedResult, SignedKeyRegistration, SigningKey,
};
use rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

const SEED: [u8; 32] = *b"pilothouse channel test vectors!";
const NOW: i64 = 1_760_000_000_000;

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Vectors {
    comment: String,
    seed_hex: String,
    now_ms: i64,
    keys: Keys,
    command: CommandVector,
    result: ResultVector,
    registration: RegistrationVector,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Keys {
    server_signing_secret_hex: String,
    server_verifying_key: String,
    server_verifying_key_id: String,
    server_kem_secret_hex: String,
    server_kem_public_key: String,
    server_kem_key_id: String,
    agent_signing_secret_hex: String,
    agent_verifying_key: String,
    agent_verifying_key_id: String,
    agent_kem_secret_hex: String,
    agent_kem_public_key: String,
    agent_kem_key_id: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct CommandVector {
    header: CommandHeader,
    payload_hex: String,
    sealed_json: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct ResultVector {
    header: ResultHeader,
    output_hex: String,
    sealed_json: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct RegistrationVector {
    new_identity_secret_hex: String,
    new_kem_secret_hex: String,
    signed_json: String,
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/vectors.json")
}

fn b64<T: Serialize>(key: &T) -> String {
    serde_json::to_value(key)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// Draw order: server signing key, server KEM key, agent signing key, agent KEM key,
/// command seal (64 bytes encapsulation + 12 bytes nonce), result seal (same),
/// new agent identity key, new agent KEM key.
fn generate() -> Vectors {
    let mut rng = ChaCha20Rng::from_seed(SEED);
    let server_signing = SigningKey::generate_from_rng(&mut rng);
    let server_kem = KemSecretKey::generate_from_rng(&mut rng);
    let agent_signing = SigningKey::generate_from_rng(&mut rng);
    let agent_kem = KemSecretKey::generate_from_rng(&mut rng);

    let header = CommandHeader {
        agent_id: "agent-01j9zq7k4m".into(),
        command_id: "7d444840-9dc0-11d1-b245-5ffdce74fad2".into(),
        sequence: 42,
        issued_at: NOW,
        expires_at: NOW + 15 * 60_000,
        kind: "service/restart".into(),
        operation: None,
    };
    let payload = br#"{"unit":"nginx.service","mode":"replace"}"#;
    let sealed = seal_command(
        &header,
        payload,
        agent_kem.public_key(),
        &server_signing,
        &mut rng,
    )
    .unwrap();

    let result_header = ResultHeader {
        agent_id: header.agent_id.clone(),
        command_id: header.command_id.clone(),
        sequence: header.sequence,
        finished_at: NOW + 1_250,
        status: ResultStatus::Succeeded,
    };
    let output = b"nginx.service: restarted\n";
    let sealed_result = seal_result(
        &result_header,
        output,
        server_kem.public_key(),
        &agent_signing,
        &mut rng,
    )
    .unwrap();

    let new_identity = SigningKey::generate_from_rng(&mut rng);
    let new_kem = KemSecretKey::generate_from_rng(&mut rng);
    let registration = sign_registration(
        KeyRegistration {
            agent_id: header.agent_id.clone(),
            kem_public_key: new_kem.public_key().clone(),
            identity_key: new_identity.verifying_key().clone(),
            tls_cert_fingerprint: Some(
                "sha256:4f3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e".into(),
            ),
            issued_at: NOW + 2_000,
        },
        &agent_signing,
        &new_identity,
    )
    .unwrap();

    Vectors {
        comment: "Pilothouse channel v1 test vectors. Regenerate with \
                  CHANNEL_WRITE_VECTORS=1 cargo test -p channel --test vectors"
            .into(),
        seed_hex: hex::encode(SEED),
        now_ms: NOW,
        keys: Keys {
            server_signing_secret_hex: hex::encode(server_signing.to_bytes().as_slice()),
            server_verifying_key: b64(server_signing.verifying_key()),
            server_verifying_key_id: server_signing.key_id().to_string(),
            server_kem_secret_hex: hex::encode(server_kem.to_bytes().as_slice()),
            server_kem_public_key: b64(server_kem.public_key()),
            server_kem_key_id: server_kem.key_id().to_string(),
            agent_signing_secret_hex: hex::encode(agent_signing.to_bytes().as_slice()),
            agent_verifying_key: b64(agent_signing.verifying_key()),
            agent_verifying_key_id: agent_signing.key_id().to_string(),
            agent_kem_secret_hex: hex::encode(agent_kem.to_bytes().as_slice()),
            agent_kem_public_key: b64(agent_kem.public_key()),
            agent_kem_key_id: agent_kem.key_id().to_string(),
        },
        command: CommandVector {
            header,
            payload_hex: hex::encode(payload),
            sealed_json: serde_json::to_string(&sealed).unwrap(),
        },
        result: ResultVector {
            header: result_header,
            output_hex: hex::encode(output),
            sealed_json: serde_json::to_string(&sealed_result).unwrap(),
        },
        registration: RegistrationVector {
            new_identity_secret_hex: hex::encode(new_identity.to_bytes().as_slice()),
            new_kem_secret_hex: hex::encode(new_kem.to_bytes().as_slice()),
            signed_json: serde_json::to_string(&registration).unwrap(),
        },
    }
}

fn render(v: &Vectors) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap();
    s.push('\n');
    s
}

#[test]
fn vectors_match_the_file() {
    let fresh = render(&generate());
    if std::env::var_os("CHANNEL_WRITE_VECTORS").is_some_and(|v| v == "1") {
        std::fs::write(path(), &fresh).unwrap();
        return;
    }
    let stored = std::fs::read_to_string(path()).expect(
        "testdata/vectors.json missing: run CHANNEL_WRITE_VECTORS=1 cargo test -p channel --test vectors",
    );
    assert!(
        stored == fresh,
        "channel output differs from testdata/vectors.json; if the format change is \
         intended, regenerate with CHANNEL_WRITE_VECTORS=1 and review the diff"
    );
}

#[test]
fn stored_vectors_open() {
    if std::env::var_os("CHANNEL_WRITE_VECTORS").is_some_and(|v| v == "1") {
        // The other test is rewriting the file right now.
        return;
    }
    let stored: Vectors = serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap();
    let k = &stored.keys;
    let secret = |h: &str| hex::decode(h).unwrap();

    let server_signing = SigningKey::from_bytes(&secret(&k.server_signing_secret_hex)).unwrap();
    let server_kem = KemSecretKey::from_bytes(&secret(&k.server_kem_secret_hex)).unwrap();
    let agent_signing = SigningKey::from_bytes(&secret(&k.agent_signing_secret_hex)).unwrap();
    let agent_kem = KemSecretKey::from_bytes(&secret(&k.agent_kem_secret_hex)).unwrap();
    assert_eq!(b64(server_signing.verifying_key()), k.server_verifying_key);
    assert_eq!(b64(server_kem.public_key()), k.server_kem_public_key);
    assert_eq!(b64(agent_signing.verifying_key()), k.agent_verifying_key);
    assert_eq!(b64(agent_kem.public_key()), k.agent_kem_public_key);
    assert_eq!(agent_kem.key_id().as_str(), k.agent_kem_key_id);
    assert_eq!(server_signing.key_id().as_str(), k.server_verifying_key_id);

    let agent_id = &stored.command.header.agent_id;
    let sealed = SealedCommand::from_json(stored.command.sealed_json.as_bytes()).unwrap();
    let opened = open_command(
        &sealed,
        agent_id,
        &agent_kem,
        server_signing.verifying_key(),
        &ReplayGuard::new(),
        stored.now_ms,
    )
    .unwrap();
    assert_eq!(opened.header(), &stored.command.header);
    assert_eq!(hex::encode(opened.payload()), stored.command.payload_hex);

    let sealed = SealedResult::from_json(stored.result.sealed_json.as_bytes()).unwrap();
    let opened = open_result(
        &sealed,
        agent_id,
        &server_kem,
        agent_signing.verifying_key(),
        stored.now_ms + 60_000,
    )
    .unwrap();
    assert_eq!(opened.header(), &stored.result.header);
    assert_eq!(hex::encode(opened.output()), stored.result.output_hex);

    let reg = SignedKeyRegistration::from_json(stored.registration.signed_json.as_bytes()).unwrap();
    let verified = verify_registration(
        &reg,
        agent_id,
        agent_signing.verifying_key(),
        stored.now_ms + 60_000,
    )
    .unwrap();
    let new_identity =
        SigningKey::from_bytes(&secret(&stored.registration.new_identity_secret_hex)).unwrap();
    let new_kem =
        KemSecretKey::from_bytes(&secret(&stored.registration.new_kem_secret_hex)).unwrap();
    assert_eq!(
        &verified.registration().identity_key,
        new_identity.verifying_key()
    );
    assert_eq!(
        &verified.registration().kem_public_key,
        new_kem.public_key()
    );
}
