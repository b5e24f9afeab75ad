//! The control plane's own keys in the database, on both backends: made once
//! and sealed (a dump holds none of them), shared by replicas that start at
//! the same moment, imported from the files an earlier version kept (and the
//! files removed), a file with another key refused, re-wrapped by a
//! master-key rotation, and a tampered row or a wrong master key named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{contains, dump};

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use control::key_vault::{self, ControlKey, ControlKeys, VaultError};
use control::secrets::{self, Keyring, SecretError};
use control::testing::TestDb;
use control::Timestamp;

async fn ring_in(db: &TestDb, dir: &Path) -> Keyring {
    key_vault::open_ring(
        &db.store,
        &control::secrets::MasterKeySource::File(dir.join("master.key")),
    )
    .await
    .unwrap()
}

async fn load(db: &TestDb, ring: &Keyring, dir: &Path) -> Result<ControlKeys, VaultError> {
    key_vault::load_all(&db.store, ring, dir, Timestamp::now()).await
}

/// What identifies each key: the CA pin, the two key ids, the audit public
/// key, the token key.
fn identity(k: &ControlKeys) -> (String, String, String, String, Vec<u8>) {
    (
        k.ca.pin(),
        k.server.signing.key_id().to_string(),
        k.server.kem.key_id().to_string(),
        k.audit.public_key(),
        k.agent_jwt.to_vec(),
    )
}

/// The files in `dir`, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn write_private(path: &Path, text: &str) {
    control::files::write_new_private(path, text.as_bytes()).unwrap();
}

async fn keys_are_made_once_and_sealed_at_rest(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring_in(&db, dir.path()).await;
    let first = load(&db, &ring, dir.path()).await.unwrap();
    let again = load(&db, &ring, dir.path()).await.unwrap();
    assert_eq!(identity(&first), identity(&again), "made once, then read");
    assert_eq!(
        files(dir.path()),
        ["agent-ca.crt", "master.key"],
        "no private key file beside the master key"
    );
    let crt = std::fs::read_to_string(dir.path().join("agent-ca.crt")).unwrap();
    assert_eq!(
        crt,
        first.ca.cert_pem(),
        "the public copy of the certificate"
    );

    // Neither private key the test can see is in a dump (the import test
    // checks all five); the public parts are.
    let dumped = dump(&db);
    let signing = hex_of(&first.server.signing.to_bytes()[..]);
    let jwt = String::from_utf8(first.agent_jwt.to_vec()).unwrap();
    assert_eq!(jwt.len(), 64);
    assert!(
        !contains(&dumped, &signing),
        "the command key is in the dump"
    );
    assert!(!contains(&dumped, &jwt), "the token key is in the dump");
    assert!(
        !contains(&dumped, "PRIVATE KEY"),
        "a PEM key is in the dump"
    );
    assert!(contains(&dumped, &first.audit.public_key()));
    assert!(contains(&dumped, "BEGIN CERTIFICATE"));
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn legacy_key_files_are_imported_then_removed(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The files an earlier version kept: hex keys, the CA as PEM, 0600.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    let ca_cert = params.self_signed(&ca_key).unwrap();
    write_private(&d.join("agent-ca.key"), &ca_key.serialize_pem());
    std::fs::write(d.join("agent-ca.crt"), ca_cert.pem()).unwrap();
    let signing = channel::SigningKey::generate();
    write_private(
        &d.join("command-signing.key"),
        &hex_of(&signing.to_bytes()[..]),
    );
    let kem = channel::KemSecretKey::generate();
    write_private(&d.join("result-kem.key"), &hex_of(&kem.to_bytes()[..]));
    let audit = channel::SigningKey::generate();
    write_private(&d.join("audit-signing.key"), &hex_of(&audit.to_bytes()[..]));
    let jwt = control::crypto::random_token(32);
    write_private(&d.join("agent-jwt.key"), &jwt);

    let ring = ring_in(&db, d).await;
    let keys = load(&db, &ring, d).await.unwrap();
    assert_eq!(
        keys.ca.pin(),
        control::crypto::sha256_hex(ca_cert.der()),
        "the file's CA"
    );
    assert_eq!(keys.server.signing.key_id(), signing.key_id());
    assert_eq!(keys.server.kem.key_id(), kem.key_id());
    assert_eq!(keys.audit.key_id(), audit.key_id());
    assert_eq!(
        &keys.agent_jwt[..],
        jwt.as_bytes(),
        "tokens issued before stay valid"
    );
    assert_eq!(
        files(d),
        ["agent-ca.crt", "master.key"],
        "the private files are gone once the database holds them"
    );

    // None of the five is in a dump, in any form the files held.
    let dumped = dump(&db);
    let pem = ca_key.serialize_pem();
    let ca_body = pem.lines().nth(1).unwrap();
    let secrets = [
        ("CA key", ca_body.to_string()),
        ("command key", hex_of(&signing.to_bytes()[..])),
        ("result key", hex_of(&kem.to_bytes()[..])),
        ("audit key", hex_of(&audit.to_bytes()[..])),
        ("token key", jwt.clone()),
    ];
    for (what, secret) in &secrets {
        assert!(secret.len() >= 32, "{what}");
        assert!(!contains(&dumped, secret), "the {what} is in the dump");
    }

    // A fresh data directory (another replica) reads the same keys.
    let replica = tempfile::tempdir().unwrap();
    std::fs::copy(d.join("master.key"), replica.path().join("master.key")).unwrap();
    let ring2 = ring_in(&db, replica.path()).await;
    let shared = load(&db, &ring2, replica.path()).await.unwrap();
    assert_eq!(identity(&shared), identity(&keys));
}

async fn a_file_with_another_key_or_loose_mode_stops_the_start(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ring = ring_in(&db, d).await;
    let keys = load(&db, &ring, d).await.unwrap();

    // Another command key in a file: refused, naming it; the file stays.
    let other = hex_of(&channel::SigningKey::generate().to_bytes()[..]);
    write_private(&d.join("command-signing.key"), &other);
    let err = load(&db, &ring, d).await.unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::Conflict {
                name: "command-signing",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("command-signing.key"), "{err}");
    assert!(
        !err.to_string().contains(&other),
        "no key material in the error"
    );
    assert!(d.join("command-signing.key").exists(), "nothing is dropped");
    std::fs::remove_file(d.join("command-signing.key")).unwrap();

    // A key file others can read is refused before it is read.
    let same = hex_of(&keys.server.signing.to_bytes()[..]);
    write_private(&d.join("command-signing.key"), &same);
    std::fs::set_permissions(
        d.join("command-signing.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = load(&db, &ring, d).await.unwrap_err();
    assert!(err.to_string().contains("readable by other users"), "{err}");

    // The same key, private: the import finishes (the file is removed).
    std::fs::set_permissions(
        d.join("command-signing.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let again = load(&db, &ring, d).await.unwrap();
    assert_eq!(identity(&again), identity(&keys));
    assert!(!d.join("command-signing.key").exists());

    // Not a key at all.
    write_private(&d.join("result-kem.key"), "zz");
    let err = load(&db, &ring, d).await.unwrap_err();
    assert!(err.to_string().contains("not a valid key file"), "{err}");
}

async fn replicas_starting_together_share_one_set_of_keys(db: TestDb) {
    let master = tempfile::tempdir().unwrap();
    let ring = Arc::new(ring_in(&db, master.path()).await);
    let store = db.store.clone();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, ring) = (store.clone(), ring.clone());
        tasks.push(tokio::spawn(async move {
            let dir = tempfile::tempdir().unwrap();
            let keys = key_vault::load_all(&store, &ring, dir.path(), Timestamp::now())
                .await
                .unwrap();
            identity(&keys)
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "one set of keys");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM control_keys")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(rows, ControlKey::ALL.len() as i64);
}

async fn rotation_rewraps_them_and_tampering_is_named(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ring = ring_in(&db, d).await;
    let keys = load(&db, &ring, d).await.unwrap();
    let old_key = std::fs::read(d.join("master.key")).unwrap();

    let rotation = secrets::rotate_master_key(&db.store, &ring).await.unwrap();
    assert_eq!(rotation.rewrapped, ControlKey::ALL.len() as u64);
    let after = load(&db, &ring, d).await.unwrap();
    assert_eq!(identity(&after), identity(&keys), "readable after rotation");

    // The old master key opens none of them, and the start says so.
    let old = tempfile::tempdir().unwrap();
    write_private(
        &old.path().join("master.key"),
        std::str::from_utf8(&old_key).unwrap(),
    );
    let stale = Keyring::open(&old.path().join("master.key")).unwrap();
    let err = secrets::adopt(&db.store, &stale).await.unwrap_err();
    assert!(matches!(err, SecretError::WrongMasterKey { .. }), "{err}");
    let err = key_vault::server_keys(&db.store, &stale, old.path())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::Secret(SecretError::UnknownMasterKey { id, .. }) if id == "ck_command-signing"),
        "{err}"
    );

    // A changed ciphertext is named by its row, never opened to garbage.
    let ct: String =
        sqlx::query_scalar("SELECT ciphertext FROM control_keys WHERE name = 'audit-signing'")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    let mut flipped = ct.into_bytes();
    let i = flipped.len() / 2;
    // Hex, read in either case: `0` and `1` differ from every other digit.
    flipped[i] = if flipped[i] == b'0' { b'1' } else { b'0' };
    sqlx::query("UPDATE control_keys SET ciphertext = $1 WHERE name = 'audit-signing'")
        .bind(String::from_utf8(flipped).unwrap())
        .execute(db.store.pool())
        .await
        .unwrap();
    let err = key_vault::audit_key(&db.store, &ring, d).await.unwrap_err();
    assert!(
        matches!(&err, VaultError::Secret(SecretError::Tampered { id }) if id == "ck_audit-signing"),
        "{err}"
    );
}

control::both_backends!(
    keys_are_made_once_and_sealed_at_rest,
    legacy_key_files_are_imported_then_removed,
    a_file_with_another_key_or_loose_mode_stops_the_start,
    replicas_starting_together_share_one_set_of_keys,
    rotation_rewraps_them_and_tampering_is_named,
);
