//! New sign-in notices, on both backends: the first sign-in tells nothing,
//! the same browser on the same network tells nothing, a new device or a new
//! network makes a notice (mailed with the time, address, browser, method
//! and a "this wasn't me" link when email is on); the link works once, also
//! when several race with it, and signs out every session, makes the
//! password unusable and queues a reset link; from the dashboard it does the
//! same; the device cookie is kept only as a hash.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{contains, dump, PASSWORD};
use control::access::RequestMeta;
use control::accounts::{self, SignIn};
use control::mail;
use control::notices::{self, Mailing};
use control::secrets::{self, Keyring};
use control::testing::TestDb;
use control::{ControlError, OrgId, Role, Timestamp, UserId};
use secrecy::SecretString;

const BASE: &str = "https://pilothouse.example.com";

struct Setup {
    db: TestDb,
    ring: Arc<Keyring>,
    _dir: tempfile::TempDir,
    user: UserId,
    org: OrgId,
}

async fn setup(db: TestDb) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(Keyring::open(&dir.path().join("master.key")).unwrap());
    secrets::adopt(&db.store, &ring).await.unwrap();
    let (user, org) = common::add(&db, "Acme", "owner@example.com", Role::Owner).await;
    Setup {
        db,
        ring,
        _dir: dir,
        user,
        org,
    }
}

impl Setup {
    fn mailing(&self) -> Mailing<'_> {
        Mailing {
            ring: &self.ring,
            base_url: BASE,
            enabled: true,
        }
    }

    async fn sign_in(&self, device: &str, ip: &str) -> bool {
        notices::after_sign_in(
            &self.db.store,
            self.mailing(),
            self.user,
            device,
            "password+totp",
            &RequestMeta::new(ip, "Firefox 140"),
            Timestamp::now(),
        )
        .await
        .unwrap()
    }

    /// The queued messages' texts, as the mailer would send them.
    async fn mails(&self) -> Vec<String> {
        let now = Timestamp::now();
        let due = mail::claim_due(&self.db.store, &self.ring, now)
            .await
            .unwrap();
        for d in &due {
            mail::sent(&self.db.store, &d.id, now).await.unwrap();
        }
        due.iter()
            .map(|d| format!("{}\n{}", d.subject, d.body.as_str()))
            .collect()
    }
}

fn link_token(text: &str) -> String {
    let at = text.find("/not-me/").unwrap() + "/not-me/".len();
    text[at..at + 64].to_string()
}

async fn new_devices_and_networks_are_told(db: TestDb) {
    let s = setup(db).await;
    let laptop = notices::new_device_id();
    let phone = notices::new_device_id();
    // The first sign-in tells nothing, also when it happens twice at once
    // from the same place (one row for the device, no error).
    let both: Vec<_> = (0..2)
        .map(|_| {
            let (store, ring, laptop, user) =
                (s.db.store.clone(), s.ring.clone(), laptop.clone(), s.user);
            tokio::spawn(async move {
                let mailing = Mailing {
                    ring: &ring,
                    base_url: BASE,
                    enabled: true,
                };
                notices::after_sign_in(
                    &store,
                    mailing,
                    user,
                    &laptop,
                    "password",
                    &RequestMeta::new("198.51.100.7", "Firefox 140"),
                    Timestamp::now(),
                )
                .await
            })
        })
        .collect();
    for b in both {
        assert!(!b.await.unwrap().unwrap());
    }
    assert!(
        !s.sign_in(&laptop, "198.51.100.99").await,
        "same device, same /24"
    );
    assert!(s.mails().await.is_empty());
    assert!(s.sign_in(&phone, "198.51.100.8").await, "a new device");
    assert!(s.sign_in(&laptop, "203.0.113.5").await, "a new network");
    assert!(!s.sign_in(&phone, "198.51.100.8").await, "seen now");
    let mails = s.mails().await;
    assert_eq!(mails.len(), 2, "{mails:?}");
    for m in &mails {
        assert!(m.starts_with("New sign-in to your Pilothouse account"));
        assert!(
            m.contains("Firefox 140") && m.contains("password+totp"),
            "{m}"
        );
        assert!(m.contains(&format!("{BASE}/not-me/")), "{m}");
    }
    assert!(mails[0].contains("198.51.100.8") && mails[0].contains("a new device"));
    assert!(mails[1].contains("203.0.113.5") && mails[1].contains("a new network"));

    let owner = common::actor(&s.db, s.user, s.org).await;
    let list = notices::list(&owner).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(notices::unread(&s.db.store, s.user).await.unwrap(), 2);
    notices::acknowledge(&owner, &list[0].id, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(notices::unread(&s.db.store, s.user).await.unwrap(), 1);
    assert!(matches!(
        notices::acknowledge(&owner, &list[0].id, Timestamp::now()).await,
        Err(ControlError::NotFound(_))
    ));

    // Neither the cookies nor the links are in the database.
    let bytes = dump(&s.db);
    for secret in [
        &laptop,
        &phone,
        &link_token(&mails[0]),
        &link_token(&mails[1]),
    ] {
        assert!(
            !contains(&bytes, secret),
            "a device id or link token is in the database"
        );
    }
    assert_eq!(notices::network_of("2001:db8:1:2::5"), "2001:db8:1::/48");
    assert_eq!(
        notices::network_of("::ffff:198.51.100.7"),
        "198.51.100.0/24"
    );
}

async fn the_link_locks_the_account_once(db: TestDb) {
    let s = setup(db).await;
    s.sign_in(&notices::new_device_id(), "198.51.100.7").await;
    assert!(s.sign_in(&notices::new_device_id(), "203.0.113.5").await);
    let token = link_token(&s.mails().await[0]);
    // A session that should end.
    let org = s.org;
    sqlx::query(
        "INSERT INTO sessions (id_hash, user_id, data, created_at, last_seen_at, expires_at, ip, user_agent) \
         VALUES ('h', $1, '{}', 0, 0, 99999999999999, '', '')",
    )
    .bind(s.user.0)
    .execute(s.db.store.pool())
    .await
    .unwrap();

    let racers: Vec<_> = (0..6)
        .map(|_| {
            let (store, ring, token) = (s.db.store.clone(), s.ring.clone(), token.clone());
            tokio::spawn(async move {
                let mailing = Mailing {
                    ring: &ring,
                    base_url: BASE,
                    enabled: true,
                };
                notices::disown_by_token(
                    &store,
                    mailing,
                    &token,
                    &RequestMeta::new("198.51.100.7", "Firefox 140"),
                    Timestamp::now(),
                )
                .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for r in racers {
        results.push(r.await.unwrap());
    }
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results
        .iter()
        .filter(|r| r.is_err())
        .all(|r| matches!(r, Err(ControlError::NotFound(_)))));

    let sessions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = $1")
        .bind(s.user.0)
        .fetch_one(s.db.store.pool())
        .await
        .unwrap();
    assert_eq!(sessions, 0);
    let login = accounts::login(
        &s.db.store,
        "owner@example.com",
        SecretString::from(PASSWORD),
        &common::meta(),
        Timestamp::now(),
    )
    .await;
    assert!(
        !matches!(login, Ok(SignIn::Done(_))),
        "the old password still works"
    );
    let mails = s.mails().await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].contains("/reset-password/"), "{}", mails[0]);
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_events WHERE org_id = $1 ORDER BY seq")
            .bind(org.0)
            .fetch_all(s.db.store.pool())
            .await
            .unwrap();
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "user.sign_in_disowned")
            .count(),
        1,
        "{actions:?}"
    );
}

async fn the_dashboard_button_does_the_same(db: TestDb) {
    let s = setup(db).await;
    // Linked to Google: whoever it was may have come that way.
    let google = control::sso::Identity {
        provider: control::sso::Provider::Oidc,
        subject: "g-1".into(),
        email: "owner@example.com".into(),
        email_verified: true,
        label: "Google".into(),
    };
    control::sso::link(
        &s.db.store,
        s.user,
        &google,
        &common::meta(),
        Timestamp::now(),
    )
    .await
    .unwrap();
    s.sign_in(&notices::new_device_id(), "198.51.100.7").await;
    s.sign_in(&notices::new_device_id(), "203.0.113.5").await;
    let owner = common::actor(&s.db, s.user, s.org).await;
    let id = notices::list(&owner).await.unwrap()[0].id.clone();
    let email = notices::disown(&owner, s.mailing(), &id, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(email, "owner@example.com");
    assert!(matches!(
        notices::disown(&owner, s.mailing(), &id, Timestamp::now()).await,
        Err(ControlError::NotFound(_))
    ));
    let login = accounts::login(
        &s.db.store,
        "owner@example.com",
        SecretString::from(PASSWORD),
        &common::meta(),
        Timestamp::now(),
    )
    .await;
    assert!(login.is_err());
    // The link is gone: Google no longer signs in to the account.
    assert!(
        control::sso::sign_in(&s.db.store, &google, &common::meta(), Timestamp::now())
            .await
            .is_err()
    );
    let details: String = sqlx::query_scalar(
        "SELECT details FROM audit_events WHERE action = 'user.sign_in_disowned'",
    )
    .fetch_one(s.db.store.pool())
    .await
    .unwrap();
    assert!(details.contains("\"identities_unlinked\":1"), "{details}");
}

control::both_backends!(
    new_devices_and_networks_are_told,
    the_link_locks_the_account_once,
    the_dashboard_button_does_the_same,
);
