//! Password reset and the email outbox, on both backends: requests throttled
//! under concurrency (exactly the limit gets through, whether or not the
//! account exists), a token that works once when many race with it, an
//! expired token refused, the reset ending every session and clearing the
//! account's failed sign-ins, the queued message sealed (a database dump
//! holds neither the link nor the text) and re-wrapped by a master-key
//! rotation, and the outbox's retries, back-off and giving up at expiry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{contains, dump, meta, PASSWORD};
use control::mail;
use control::password_reset::{self, PER_ACCOUNT};
use control::secrets::{self, Keyring};
use control::testing::TestDb;
use control::{ControlError, Role, Timestamp};
use secrecy::SecretString;

const NEW: &str = "a brand new passphrase, nine words long";
const BASE: &str = "https://pilothouse.example.com";

struct Setup {
    db: TestDb,
    ring: Arc<Keyring>,
    _dir: tempfile::TempDir,
}

async fn setup(db: TestDb) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(Keyring::open(&dir.path().join("master.key")).unwrap());
    secrets::adopt(&db.store, &ring).await.unwrap();
    common::add(&db, "Acme", "owner@example.com", Role::Owner).await;
    Setup {
        db,
        ring,
        _dir: dir,
    }
}

/// Queues a reset for the owner at `now` and returns the token, read from
/// the queued message as the mailer would.
async fn token_at(s: &Setup, now: Timestamp) -> String {
    assert!(password_reset::issue(
        &s.db.store,
        &s.ring,
        "owner@example.com",
        &meta(),
        BASE,
        now
    )
    .await
    .unwrap());
    let due = mail::claim_due(&s.db.store, &s.ring, now).await.unwrap();
    let last = due.last().expect("a queued message");
    mail::sent(&s.db.store, &last.id, now).await.unwrap();
    let at = last.body.find("/reset-password/").unwrap() + "/reset-password/".len();
    last.body[at..at + 64].to_string()
}

async fn requests_are_throttled_under_concurrency(db: TestDb) {
    let s = setup(db).await;
    let now = Timestamp::now();
    for email in ["owner@example.com", "nobody@example.com"] {
        let attempts: Vec<_> = (0..3 * PER_ACCOUNT.max_failures)
            .map(|_| {
                let (store, ring) = (s.db.store.clone(), s.ring.clone());
                tokio::spawn(async move {
                    password_reset::request(&store, ring, email, &meta(), BASE, now).await
                })
            })
            .collect();
        let mut results = Vec::new();
        for a in attempts {
            results.push(a.await.unwrap());
        }
        let ok = results.iter().filter(|r| r.is_ok()).count() as i64;
        let throttled = results
            .iter()
            .filter(|r| matches!(r, Err(ControlError::Throttled(_))))
            .count() as i64;
        assert_eq!(ok, PER_ACCOUNT.max_failures, "{email}: {results:?}");
        assert_eq!(throttled, 2 * PER_ACCOUNT.max_failures, "{email}");
    }
    // The background work queued five messages for the account, none for
    // the address with no account.
    let mut queued = 0;
    for _ in 0..100 {
        queued = mail::entries(&s.db.store, 100).await.unwrap().len();
        if queued == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(queued, 5);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let entries = mail::entries(&s.db.store, 100).await.unwrap();
    assert!(
        entries.iter().all(|e| e.to == "owner@example.com"),
        "{entries:?}"
    );
    // A malformed address is refused with a sentence, not queued.
    let bad = password_reset::request(
        &s.db.store,
        s.ring.clone(),
        "not an address",
        &meta(),
        BASE,
        now,
    )
    .await;
    assert!(matches!(bad, Err(ControlError::Invalid(_))), "{bad:?}");
}

async fn a_token_works_once_under_a_race(db: TestDb) {
    let s = setup(db).await;
    let now = Timestamp::now();
    let token = token_at(&s, now).await;
    // Stored hashed: the token is in no column, the message is sealed.
    let bytes = dump(&s.db);
    assert!(!contains(&bytes, &token), "the token is in the database");
    assert!(
        !contains(&bytes, "Someone asked to reset"),
        "the message text is in the database"
    );

    // Some failed sign-ins on the account.
    for _ in 0..3 {
        let wrong = control::accounts::login(
            &s.db.store,
            "owner@example.com",
            SecretString::from("not the password"),
            &meta(),
            now,
        )
        .await;
        assert!(wrong.is_err());
    }

    let racers: Vec<_> = (0..8)
        .map(|i| {
            let (store, token) = (s.db.store.clone(), token.clone());
            tokio::spawn(async move {
                let new = format!("{NEW} {i}");
                password_reset::reset(&store, &token, SecretString::from(new), &meta(), now).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for r in racers {
        results.push(r.await.unwrap());
    }
    let won: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(results
        .iter()
        .filter(|r| r.is_err())
        .all(|r| matches!(r, Err(ControlError::NotFound(_)))));
    let signed_in = control::accounts::login(
        &s.db.store,
        "owner@example.com",
        SecretString::from(format!("{NEW} {}", won[0])),
        &meta(),
        now,
    )
    .await
    .unwrap();
    assert!(matches!(signed_in, control::accounts::SignIn::Done(_)));
    let old = control::accounts::login(
        &s.db.store,
        "owner@example.com",
        SecretString::from(PASSWORD),
        &meta(),
        now,
    )
    .await;
    assert!(old.is_err());
    // The failed sign-ins were cleared with the reset (the one above is new).
    let failures: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM login_failures WHERE key = $1")
        .bind(control::throttle::account_key("owner@example.com"))
        .fetch_one(s.db.store.pool())
        .await
        .unwrap();
    assert_eq!(failures, 1);
}

async fn an_expired_or_superseded_token_is_refused(db: TestDb) {
    let s = setup(db).await;
    let then = Timestamp::now();
    let first = token_at(&s, then).await;
    let second = token_at(&s, then).await;
    let late = then.plus_secs(password_reset::TOKEN_TTL_SECS + 1);
    let expired =
        password_reset::reset(&s.db.store, &first, SecretString::from(NEW), &meta(), late).await;
    assert!(
        matches!(&expired, Err(ControlError::NotFound(m)) if m.contains("expired")),
        "{expired:?}"
    );
    // Using one link spends the account's others.
    password_reset::reset(&s.db.store, &second, SecretString::from(NEW), &meta(), then)
        .await
        .unwrap();
    let other =
        password_reset::reset(&s.db.store, &first, SecretString::from(NEW), &meta(), then).await;
    assert!(matches!(other, Err(ControlError::NotFound(_))), "{other:?}");
    // A weak password is refused without spending a token.
    let third = token_at(&s, then).await;
    let weak = password_reset::reset(
        &s.db.store,
        &third,
        SecretString::from("password123"),
        &meta(),
        then,
    )
    .await;
    assert!(matches!(weak, Err(ControlError::Invalid(_))), "{weak:?}");
    password_reset::email_for(&s.db.store, &third, then)
        .await
        .unwrap();
}

async fn the_outbox_retries_gives_up_and_survives_rotation(db: TestDb) {
    let s = setup(db).await;
    let now = Timestamp::now();
    assert!(password_reset::issue(
        &s.db.store,
        &s.ring,
        "owner@example.com",
        &meta(),
        BASE,
        now
    )
    .await
    .unwrap());
    // A rotation re-wraps the queued message's key; it still opens.
    let rotation = secrets::rotate_master_key(&s.db.store, &s.ring)
        .await
        .unwrap();
    assert_eq!(rotation.rewrapped, 1, "{rotation:?}");
    let key_id: String = sqlx::query_scalar("SELECT master_key_id FROM mail_bodies")
        .fetch_one(s.db.store.pool())
        .await
        .unwrap();
    assert_eq!(key_id, rotation.new_key_id);
    let ring = s.ring.clone();

    // Taken by one mailer, not by a second while the first holds it.
    let due = mail::claim_due(&s.db.store, &ring, now).await.unwrap();
    assert_eq!(due.len(), 1);
    assert!(mail::claim_due(&s.db.store, &ring, now)
        .await
        .unwrap()
        .is_empty());
    assert!(
        !format!("{:?}", due[0]).contains("reset-password"),
        "Debug shows the body"
    );

    // A failure backs off; the message is taken again once that has passed.
    mail::failed(
        &s.db.store,
        &due[0],
        "SMTP localhost:25: connection refused",
        now,
    )
    .await
    .unwrap();
    assert!(mail::claim_due(&s.db.store, &ring, now.plus_secs(1))
        .await
        .unwrap()
        .is_empty());
    let again = mail::claim_due(&s.db.store, &ring, now.plus_secs(3))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    mail::failed(
        &s.db.store,
        &again[0],
        "SMTP localhost:25: connection refused",
        now.plus_secs(3),
    )
    .await
    .unwrap();
    let entry = &mail::entries(&s.db.store, 1).await.unwrap()[0];
    assert_eq!(entry.attempts, 2);
    assert!(entry
        .last_error
        .as_deref()
        .unwrap()
        .contains("connection refused"));

    // Past the link's expiry it is given up, recorded, and its body deleted.
    let late = now.plus_secs(password_reset::TOKEN_TTL_SECS + 1);
    assert!(mail::claim_due(&s.db.store, &ring, late)
        .await
        .unwrap()
        .is_empty());
    let entry = &mail::entries(&s.db.store, 1).await.unwrap()[0];
    assert!(
        entry.given_up_at.is_some() && entry.sent_at.is_none(),
        "{entry:?}"
    );
    let bodies: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mail_bodies")
        .fetch_one(s.db.store.pool())
        .await
        .unwrap();
    assert_eq!(bodies, 0);
}

control::both_backends!(
    requests_are_throttled_under_concurrency,
    a_token_works_once_under_a_race,
    an_expired_or_superseded_token_is_refused,
    the_outbox_retries_gives_up_and_survives_rotation,
);
