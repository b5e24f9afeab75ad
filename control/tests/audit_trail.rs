//! Exports and signed checkpoints on both backends: a checkpoint is signed
//! when the chain grew enough or long enough ago, once per chain state even
//! when two signers race, and an export verifies offline against them.

#![allow(clippy::unwrap_used)]

mod common;

use control::audit_export::{self, ExportFormat, ExportRange};
use control::checkpoints::{self, AuditKey, CheckpointCadence};
use control::testing::TestDb;
use control::{Role, Timestamp};

async fn add(db: &TestDb, email: &str) {
    common::add(db, "Acme", email, Role::Member).await;
}

async fn checkpoints_are_signed_when_due_and_an_export_verifies(db: TestDb) {
    let key = AuditKey::generate();
    add(&db, "a@example.com").await;
    let now = Timestamp::now();
    let first = checkpoints::sign_due(&db.store, &key, CheckpointCadence::default(), false, now)
        .await
        .unwrap();
    assert_eq!(
        first.len(),
        1,
        "the first checkpoint of a chain is due at once"
    );
    assert!(
        checkpoints::sign_due(&db.store, &key, CheckpointCadence::default(), false, now)
            .await
            .unwrap()
            .is_empty()
    );
    add(&db, "b@example.com").await;
    // Grown, but neither by 1,000 events nor for 15 minutes.
    assert!(checkpoints::sign_due(
        &db.store,
        &key,
        CheckpointCadence::default(),
        false,
        now.plus_secs(60)
    )
    .await
    .unwrap()
    .is_empty());
    // Two signers at once (two replicas): one checkpoint for the state.
    let later = now.plus_secs(CheckpointCadence::default().every_secs + 1);
    let (a, b) = tokio::join!(
        checkpoints::sign_due(&db.store, &key, CheckpointCadence::default(), false, later),
        checkpoints::sign_due(&db.store, &key, CheckpointCadence::default(), false, later)
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
        &ExportRange::default().into(),
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

/// A configured cadence: every 3 events signs at 3 and 6 events past the
/// last checkpoint, not at 2; every 2 minutes signs a chain that grew by one
/// event once 2 minutes have passed, not after 1.
async fn a_configured_cadence_decides_when_a_checkpoint_is_due(db: TestDb) {
    let key = AuditKey::generate();
    let cadence = CheckpointCadence {
        every_events: 3,
        every_secs: 120,
    };
    add(&db, "first@example.com").await;
    let now = Timestamp::now();
    let sign = |at: Timestamp| checkpoints::sign_due(&db.store, &key, cadence, false, at);
    let first = sign(now).await.unwrap();
    assert_eq!(first.len(), 1, "the first checkpoint of a chain is due");
    let org = control::OrgId(first[0].org);
    let mut people = 0;
    // Adds people until the chain holds `past` events after `count`.
    let mut grow_to = |count: i64, past: i64| {
        let db = &db;
        people += 1;
        let start = people * 100;
        async move {
            for i in start.. {
                let head = control::audit::verify_org(&db.store, org)
                    .await
                    .unwrap()
                    .events_checked;
                if head - count >= past {
                    assert_eq!(head - count, past, "one event per person added");
                    return;
                }
                add(db, &format!("p{i}@example.com")).await;
            }
        }
    };
    grow_to(first[0].count, 2).await;
    assert!(
        sign(now).await.unwrap().is_empty(),
        "2 events past the checkpoint are not enough"
    );
    grow_to(first[0].count, 3).await;
    let at3 = sign(now).await.unwrap();
    assert_eq!(at3.len(), 1, "due after 3 events");
    assert_eq!(at3[0].count, first[0].count + 3);
    grow_to(at3[0].count, 3).await;
    let at6 = sign(now).await.unwrap();
    assert_eq!(at6.len(), 1, "due after 3 more");
    assert_eq!(at6[0].count, first[0].count + 6);
    // Time: one more event is not due a minute later, but two minutes later.
    grow_to(at6[0].count, 1).await;
    assert!(sign(now.plus_secs(60)).await.unwrap().is_empty());
    let timed = sign(now.plus_secs(121)).await.unwrap();
    assert_eq!(timed.len(), 1, "due 2 minutes after the last checkpoint");
    assert_eq!(timed[0].count, at6[0].count + 1);
    // Nothing new: nothing is signed, however long it has been.
    assert!(sign(now.plus_secs(10_000)).await.unwrap().is_empty());
}

control::both_backends!(a_configured_cadence_decides_when_a_checkpoint_is_due);

/// The Audit page's search: filters, keyset pages that stay put while new
/// events arrive, one event with its hashes, and each bad filter refused by
/// name.
async fn the_viewer_filters_pages_and_refuses_bad_filters(db: TestDb) {
    let (owner, org) = common::add(&db, "Acme", "owner@example.com", Role::Owner).await;
    for i in 0..60 {
        add(&db, &format!("user{i}@example.com")).await;
    }
    let actor = common::actor(&db, owner, org).await;
    let auth = actor.authorize::<control::access::ReadOrg>().unwrap();
    let search = |f: control::AuditFilterText| {
        let auth = &auth;
        async move { control::audit_search::search(auth, &f).await }
    };
    let all = search(Default::default()).await.unwrap();
    assert_eq!(all.events.len() as i64, control::audit_search::PAGE);
    assert!(
        all.events.windows(2).all(|w| w[0].seq > w[1].seq),
        "newest first"
    );
    let next = all.next.unwrap();
    // New events arrive; the second page is still the one after the first.
    add(&db, "late@example.com").await;
    let older = search(control::AuditFilterText {
        before: Some(next.to_string()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(older.events[0].seq, next - 1);
    assert!(older.events.iter().all(|e| e.seq < next));

    let team = search(control::AuditFilterText {
        group: Some("team".into()),
        text: Some("user42@".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(!team.events.is_empty());
    assert!(team.events.iter().all(|e| e.details.contains("user42@")));
    let nothing = search(control::AuditFilterText {
        group: Some("keys".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(nothing.events.is_empty() && nothing.next.is_none());
    // LIKE wildcards match themselves.
    let wild = search(control::AuditFilterText {
        text: Some("%".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(wild.events.is_empty(), "{:?}", wild.events.first());
    let future = search(control::AuditFilterText {
        since: Some("2999-01-01".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(future.events.is_empty());

    let one = control::audit_search::event(&auth, next).await.unwrap();
    assert_eq!(one.event.seq, next);
    assert_eq!(one.hash.len(), 64);
    let prev = control::audit_search::event(&auth, next - 1).await.unwrap();
    assert_eq!(one.prev_hash, prev.hash, "the detail shows the link");
    assert!(matches!(
        control::audit_search::event(&auth, 999_999).await,
        Err(control::ControlError::NotFound(_))
    ));

    let long = "x".repeat(10_000);
    for (filter, field) in [
        (
            control::AuditFilterText {
                since: Some("2026-13-45".into()),
                ..Default::default()
            },
            "since:",
        ),
        (
            control::AuditFilterText {
                until: Some(long.clone()),
                ..Default::default()
            },
            "until:",
        ),
        (
            control::AuditFilterText {
                text: Some(long.clone()),
                ..Default::default()
            },
            "text:",
        ),
        (
            control::AuditFilterText {
                text: Some("a\0b".into()),
                ..Default::default()
            },
            "text:",
        ),
        (
            control::AuditFilterText {
                group: Some("everything".into()),
                ..Default::default()
            },
            "group:",
        ),
        (
            control::AuditFilterText {
                before: Some("abc".into()),
                ..Default::default()
            },
            "before:",
        ),
        (
            control::AuditFilterText {
                before: Some("-5".into()),
                ..Default::default()
            },
            "before:",
        ),
        (
            control::AuditFilterText {
                server: Some("../x".into()),
                ..Default::default()
            },
            "server:",
        ),
        (
            control::AuditFilterText {
                operation: Some(long.clone()),
                ..Default::default()
            },
            "operation:",
        ),
    ] {
        match search(filter).await {
            Err(control::ControlError::Invalid(m)) => {
                assert!(m.starts_with(field) && m.len() < 200, "{m}")
            }
            other => panic!("{field} {other:?}"),
        }
    }
}

control::both_backends!(the_viewer_filters_pages_and_refuses_bad_filters);
