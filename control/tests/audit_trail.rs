//! Exports and signed checkpoints on both backends: a checkpoint is signed
//! when the chain grew enough or long enough ago, once per chain state even
//! when two signers race, and an export verifies offline against them.

#![allow(clippy::unwrap_used)]

use control::access::Operator;
use control::audit_export::{self, ExportFormat, ExportRange};
use control::checkpoints::{self, AuditKey};
use control::testing::TestDb;
use control::{Role, Timestamp};
use secrecy::SecretString;

async fn add(store: &control::store::Store, email: &str) {
    control::accounts::add_user_cli(
        &Operator::command_line(store.clone()),
        "Acme",
        email,
        Role::Member,
        SecretString::from("correct horse battery staple"),
        Timestamp::now(),
    )
    .await
    .unwrap();
}

async fn checkpoints_are_signed_when_due_and_an_export_verifies(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let key = AuditKey::load_or_create(dir.path()).unwrap();
    let again = AuditKey::load_or_create(dir.path()).unwrap();
    assert_eq!(key.public_key(), again.public_key(), "the key is made once");
    add(&db.store, "a@example.com").await;
    let now = Timestamp::now();
    let first = checkpoints::sign_due(&db.store, &key, false, now)
        .await
        .unwrap();
    assert_eq!(
        first.len(),
        1,
        "the first checkpoint of a chain is due at once"
    );
    assert!(checkpoints::sign_due(&db.store, &key, false, now)
        .await
        .unwrap()
        .is_empty());
    add(&db.store, "b@example.com").await;
    // Grown, but neither by 1,000 events nor for 15 minutes.
    assert!(
        checkpoints::sign_due(&db.store, &key, false, now.plus_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    // Two signers at once (two replicas): one checkpoint for the state.
    let later = now.plus_secs(checkpoints::CHECKPOINT_EVERY_SECS + 1);
    let (a, b) = tokio::join!(
        checkpoints::sign_due(&db.store, &key, false, later),
        checkpoints::sign_due(&db.store, &key, false, later)
    );
    assert_eq!(a.unwrap().len() + b.unwrap().len(), 1);
    let org = first[0].org;
    let list = checkpoints::list(&db.store, control::OrgId(org))
        .await
        .unwrap();
    assert_eq!(list.len(), 2);
    for c in &list {
        channel::verify_checkpoint(c, key.verifying_key()).unwrap();
    }

    let mut out = Vec::new();
    let n = audit_export::export(
        &db.store,
        control::OrgId(org),
        ExportRange::default(),
        ExportFormat::JsonLines,
        &mut out,
    )
    .await
    .unwrap();
    assert!(n >= 2);
    let signed: Vec<u8> = list
        .iter()
        .flat_map(|c| {
            let mut l = serde_json::to_vec(c).unwrap();
            l.push(b'\n');
            l
        })
        .collect();
    let verified =
        audit_export::verify_export(&mut &out[..], &mut &signed[..], key.verifying_key())
            .unwrap()
            .unwrap();
    assert_eq!(verified.events, n);
    assert_eq!(verified.checkpoints_matched, 2);
    // The export's hashes are the database's: the chain's own check agrees.
    let report = control::audit::verify_org(&db.store, control::OrgId(org))
        .await
        .unwrap();
    assert_eq!(report.head_hash, verified.head_hash);
}

control::both_backends!(checkpoints_are_signed_when_due_and_an_export_verifies);
