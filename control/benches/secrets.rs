//! Secrets at rest: the cost of setting and of reading one secret against a
//! real SQLite store (the whole path: transaction, sealing, audit event; or
//! read, unwrap, open, `last_used_at`), the AEAD work alone, and a master-key
//! rotation over 100,000 secrets on SQLite and (with
//! `PILOTHOUSE_TEST_PG_URL`) PostgreSQL. Prints figures; asserts nothing
//! about time.
//!
//! Run: `cargo bench -p control --bench secrets -- [SECRETS]` (default 100000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use control::access::{self, RequestMeta};
use control::secrets::{self, Keyring, ManageSecrets, NewSecret, Scope, SecretKind};
use control::testing::TestDb;
use control::{accounts, Role, Timestamp};
use secrecy::{ExposeSecret, SecretString};

const RUNS: usize = 200;

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<44} n={:<4} median {:>8.1} µs  p90 {:>8.1} µs  min {:>8.1} µs",
        samples.len(),
        us(samples[samples.len() / 2]),
        us(samples[samples.len() * 9 / 10]),
        us(samples[0]),
    );
}

async fn rotation(db: TestDb, name: &str, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let ring = Keyring::open(&dir.path().join("master.key")).unwrap();
    secrets::adopt(&db.store, &ring).await.unwrap();
    // MAX_SECRETS per organisation: as many organisations as it takes.
    let per_org = secrets::MAX_SECRETS as usize;
    let start = Instant::now();
    let mut left = n;
    let mut i = 0;
    while left > 0 {
        let (_, org) = accounts::add_user_cli(
            &access::Operator::command_line(db.store.clone()),
            &format!("Org{i}"),
            &format!("owner{i}@example.com"),
            Role::Owner,
            SecretString::from("correct horse battery staple"),
            Timestamp::now(),
        )
        .await
        .unwrap();
        let take = left.min(per_org);
        secrets::fill_unaudited(
            &db.store,
            &ring,
            org,
            "S",
            take,
            "a value of 32 bytes, give or take",
        )
        .await
        .unwrap();
        left -= take;
        i += 1;
    }
    println!(
        "{name}: wrote {n} secrets in {} organisations in {:.1} s",
        i,
        start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let r = secrets::rotate_master_key(&db.store, &ring).await.unwrap();
    println!(
        "{name}: rotate-master-key over {n} secrets: {:.2} s ({} data keys re-wrapped, {:.0} per s)",
        start.elapsed().as_secs_f64(),
        r.rewrapped,
        r.rewrapped as f64 / start.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);

    // The AEAD work of one secret: seal a 32-byte data key and a value, then
    // open both.
    let mk = ChaCha20Poly1305::new(&[7u8; 32].into());
    for size in [64usize, 4096] {
        let value = vec![b'x'; size];
        let mut seal_times = Vec::new();
        let mut open_times = Vec::new();
        for _ in 0..RUNS * 10 {
            let t = Instant::now();
            let dk = [9u8; 32];
            let wrapped = mk
                .encrypt(
                    &[1u8; 12].into(),
                    Payload {
                        msg: &dk,
                        aad: b"id",
                    },
                )
                .unwrap();
            let ct = ChaCha20Poly1305::new(&dk.into())
                .encrypt(
                    &[2u8; 12].into(),
                    Payload {
                        msg: &value,
                        aad: b"id",
                    },
                )
                .unwrap();
            seal_times.push(t.elapsed());
            let t = Instant::now();
            let dk: [u8; 32] = mk
                .decrypt(
                    &[1u8; 12].into(),
                    Payload {
                        msg: &wrapped,
                        aad: b"id",
                    },
                )
                .unwrap()
                .try_into()
                .unwrap();
            let pt = ChaCha20Poly1305::new(&dk.into())
                .decrypt(
                    &[2u8; 12].into(),
                    Payload {
                        msg: &ct,
                        aad: b"id",
                    },
                )
                .unwrap();
            open_times.push(t.elapsed());
            assert_eq!(pt.len(), size);
        }
        report(
            &format!("AEAD only: wrap key + seal {size} B value"),
            seal_times,
        );
        report(
            &format!("AEAD only: unwrap key + open {size} B value"),
            open_times,
        );
    }

    // The whole path on SQLite.
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let ring = Keyring::open(&dir.path().join("master.key")).unwrap();
    secrets::adopt(&db.store, &ring).await.unwrap();
    let (user, org) = accounts::add_user_cli(
        &access::Operator::command_line(db.store.clone()),
        "Acme",
        "owner@example.com",
        Role::Owner,
        SecretString::from("correct horse battery staple"),
        Timestamp::now(),
    )
    .await
    .unwrap();
    let actor = access::actor(
        &db.store,
        user,
        Some(org),
        RequestMeta::new("192.0.2.1", "bench"),
    )
    .await
    .unwrap();
    let auth = actor.authorize::<ManageSecrets>().unwrap();
    let mut set_times = Vec::new();
    let mut ids = Vec::new();
    for i in 0..RUNS {
        let t = Instant::now();
        let id = secrets::set(
            &auth,
            &ring,
            NewSecret {
                scope: Scope::Org,
                kind: SecretKind::Env,
                name: format!("VAR_{i}"),
                value: SecretString::from("a value of 32 bytes, give or take"),
            },
            Timestamp::now(),
        )
        .await
        .unwrap();
        set_times.push(t.elapsed());
        ids.push(id);
    }
    report("SQLite: set (new secret, audited)", set_times);
    let mut reveal_times = Vec::new();
    for id in &ids {
        let t = Instant::now();
        let v = secrets::reveal(&db.store, &ring, org, id, Timestamp::now())
            .await
            .unwrap();
        reveal_times.push(t.elapsed());
        assert_eq!(v.expose_secret().len(), 33);
    }
    report("SQLite: reveal (read, open, last_used_at)", reveal_times);
    drop(db);

    rotation(TestDb::sqlite().await, "SQLite", n).await;
    if std::env::var("PILOTHOUSE_TEST_PG_URL").is_ok_and(|u| !u.is_empty()) {
        if let Some(db) = TestDb::postgres("bench_secrets").await {
            rotation(db, "PostgreSQL", n).await;
        }
    } else {
        println!("SKIP PostgreSQL: PILOTHOUSE_TEST_PG_URL is not set");
    }
}
