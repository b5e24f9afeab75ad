//! Control-plane behaviour on both backends: one test body, run on SQLite and
//! on PostgreSQL.

// Test bodies are shared by both backends through a macro, so they are not
// `#[test]` functions themselves; a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

use control::access::{self, ManageMembers, ReadOrg};
use control::accounts::{self, SetupForm, SetupGate};
use control::testing::TestDb;
use control::{audit, team, ControlError, Role, Timestamp};
use secrecy::{ExposeSecret, SecretString};
use sqlx::Row;

mod common;
use common::{add, meta, PASSWORD};

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(db.store.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

async fn setup_is_one_time(db: TestDb) {
    let (gate, code) = SetupGate::open(&db.store).await.unwrap();
    let code = code.expect("a fresh installation prints a setup code");
    let form = |code: &str| SetupForm {
        code: secret(code),
        org_name: "Acme".into(),
        email: "Owner@Example.com".into(),
        password: secret(PASSWORD),
    };
    let wrong =
        accounts::complete_setup(&db.store, &gate, form("0000"), &meta(), Timestamp::now()).await;
    assert!(
        matches!(wrong, Err(ControlError::Unauthenticated(_))),
        "{wrong:?}"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM users").await,
        0,
        "nothing written on a wrong code"
    );

    let (_, org) = accounts::complete_setup(
        &db.store,
        &gate,
        form(code.expose_secret()),
        &meta(),
        Timestamp::now(),
    )
    .await
    .unwrap();
    let again = accounts::complete_setup(
        &db.store,
        &gate,
        form(code.expose_secret()),
        &meta(),
        Timestamp::now(),
    )
    .await;
    assert!(matches!(again, Err(ControlError::Conflict(_))), "{again:?}");
    assert!(!gate.is_open().await);
    let (_, none) = SetupGate::open(&db.store).await.unwrap();
    assert!(none.is_none(), "no new code once an owner exists");

    let accounts::SignIn::Done(done) = accounts::login(
        &db.store,
        "owner@example.com",
        secret(PASSWORD),
        &meta(),
        Timestamp::now(),
    )
    .await
    .unwrap() else {
        panic!("an account without two-factor is signed in by its password")
    };
    assert_eq!(done.org, org);
    let actor = access::actor(&db.store, done.user, None, meta())
        .await
        .unwrap();
    assert_eq!(actor.role(), Role::Owner);
    let read = actor.authorize::<ReadOrg>().unwrap();
    let actions: Vec<String> = audit::latest(&read, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, vec!["user.login", "setup.completed"]);
    assert!(audit::verify(&read).await.unwrap().intact());
}

async fn login_failures_look_the_same_and_are_throttled(db: TestDb) {
    add(&db, "Acme", "ada@example.com", Role::Member).await;
    let now = Timestamp::now();
    let unknown = accounts::login(
        &db.store,
        "nobody@example.com",
        secret(PASSWORD),
        &meta(),
        now,
    )
    .await
    .unwrap_err();
    let wrong = accounts::login(
        &db.store,
        "ada@example.com",
        secret("wrong password!!"),
        &meta(),
        now,
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.to_string(), wrong.to_string());
    assert!(
        matches!(unknown, ControlError::Unauthenticated(_))
            && matches!(wrong, ControlError::Unauthenticated(_))
    );

    for _ in 1..control::throttle::ACCOUNT.max_failures {
        let e = accounts::login(
            &db.store,
            "ada@example.com",
            secret("wrong password!!"),
            &meta(),
            now,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ControlError::Unauthenticated(_)), "{e:?}");
    }
    // The 21st attempt is refused before the password is even checked, right or wrong.
    let e = accounts::login(&db.store, "ada@example.com", secret(PASSWORD), &meta(), now)
        .await
        .unwrap_err();
    let ControlError::Throttled(wait) = e else {
        panic!("expected throttling, got {e:?}")
    };
    assert!(wait.as_secs() > 3000 && wait.as_secs() <= 3600, "{wait:?}");
    // An hour later the window has passed.
    let later = now.plus_secs(3601);
    let signed_in = accounts::login(
        &db.store,
        "ada@example.com",
        secret(PASSWORD),
        &meta(),
        later,
    )
    .await
    .unwrap();
    assert!(matches!(signed_in, accounts::SignIn::Done(_)));
}

async fn team_rules_hold(db: TestDb) {
    let (owner, org) = add(&db, "Acme", "owner@example.com", Role::Owner).await;
    let (admin, _) = add(&db, "Acme", "admin@example.com", Role::Admin).await;
    let (viewer, _) = add(&db, "Acme", "viewer@example.com", Role::Viewer).await;
    let now = Timestamp::now();
    let owner_a = access::actor(&db.store, owner, Some(org), meta())
        .await
        .unwrap();
    let admin_a = access::actor(&db.store, admin, Some(org), meta())
        .await
        .unwrap();
    let viewer_a = access::actor(&db.store, viewer, Some(org), meta())
        .await
        .unwrap();

    assert!(matches!(
        viewer_a.authorize::<ManageMembers>(),
        Err(ControlError::Forbidden(_))
    ));
    let admin_m = admin_a.authorize::<ManageMembers>().unwrap();
    let owner_m = owner_a.authorize::<ManageMembers>().unwrap();

    // Admins cannot create, promote to, demote or remove Owners.
    assert!(matches!(
        team::invite(&admin_m, "x@example.com", Role::Owner, now).await,
        Err(ControlError::Forbidden(_))
    ));
    assert!(matches!(
        team::change_role(&admin_m, viewer, Role::Owner, now).await,
        Err(ControlError::Forbidden(_))
    ));
    assert!(matches!(
        team::change_role(&admin_m, owner, Role::Viewer, now).await,
        Err(ControlError::Forbidden(_))
    ));
    assert!(matches!(
        team::remove_member(&admin_m, owner, now).await,
        Err(ControlError::Forbidden(_))
    ));
    // The last Owner stays.
    assert!(matches!(
        team::change_role(&owner_m, owner, Role::Admin, now).await,
        Err(ControlError::Conflict(_))
    ));
    assert!(matches!(
        team::remove_member(&owner_m, owner, now).await,
        Err(ControlError::Conflict(_))
    ));
    // Admins manage non-owners.
    team::change_role(&admin_m, viewer, Role::Member, now)
        .await
        .unwrap();

    // Invitations: one-time, expiring, for that email only. The five
    // refusals above are recorded (`access.refused`) from tasks of their own:
    // wait for them, so that the count below sees only what follows.
    let refused = "SELECT COUNT(*) FROM audit_events WHERE action = 'access.refused'";
    for _ in 0..200 {
        if count(&db, refused).await >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        count(&db, refused).await,
        5,
        "each refusal is recorded once"
    );
    let audit_before = count(&db, "SELECT COUNT(*) FROM audit_events").await;
    let dup = team::invite(&admin_m, "viewer@example.com", Role::Member, now).await;
    assert!(matches!(dup, Err(ControlError::Conflict(_))));
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM audit_events").await,
        audit_before,
        "a refused change writes nothing"
    );

    let inv = team::invite(&admin_m, "new@example.com", Role::Member, now)
        .await
        .unwrap();
    let token = inv.token.expose_secret().to_string();
    let preview = team::preview_invite(&db.store, &token, now).await.unwrap();
    assert_eq!(
        (preview.email.as_str(), preview.role, preview.account_exists),
        ("new@example.com", Role::Member, false)
    );
    let expired =
        team::preview_invite(&db.store, &token, now.plus_secs(team::INVITE_TTL_SECS + 1)).await;
    assert!(
        matches!(expired, Err(ControlError::Conflict(ref m)) if m.contains("expired")),
        "{expired:?}"
    );
    let weak =
        team::accept_invite_new_account(&db.store, &token, secret("short"), &meta(), now).await;
    assert!(matches!(weak, Err(ControlError::Invalid(_))));
    let (new_user, joined) =
        team::accept_invite_new_account(&db.store, &token, secret(PASSWORD), &meta(), now)
            .await
            .unwrap();
    assert_eq!(joined, org);
    let reuse =
        team::accept_invite_new_account(&db.store, &token, secret(PASSWORD), &meta(), now).await;
    assert!(
        matches!(reuse, Err(ControlError::Conflict(ref m)) if m.contains("already been used")),
        "{reuse:?}"
    );
    let new_a = access::actor(&db.store, new_user, Some(org), meta())
        .await
        .unwrap();
    assert_eq!(new_a.role(), Role::Member);

    // Another organisation's member cannot act here or switch into it.
    let (stranger, other_org) = add(&db, "Globex", "stranger@example.com", Role::Owner).await;
    let s = access::actor(&db.store, stranger, Some(org), meta())
        .await
        .unwrap();
    assert_eq!(
        s.org(),
        other_org,
        "asking for someone else's org falls back to your own"
    );
    assert!(matches!(
        access::actor_in(&db.store, stranger, org, meta()).await,
        Err(ControlError::NotFound(_))
    ));
    let s_m = s.authorize::<ManageMembers>().unwrap();
    assert!(matches!(
        team::change_role(&s_m, viewer, Role::Admin, now).await,
        Err(ControlError::NotFound(_))
    ));
    assert!(matches!(
        team::remove_member(&s_m, viewer, now).await,
        Err(ControlError::NotFound(_))
    ));

    // A role lowered after the actor was loaded cannot still be used.
    team::change_role(&owner_m, admin, Role::Viewer, now)
        .await
        .unwrap();
    let stale = team::invite(&admin_m, "late@example.com", Role::Member, now).await;
    assert!(
        matches!(stale, Err(ControlError::Forbidden(_))),
        "{stale:?}"
    );

    let read = owner_a.authorize::<ReadOrg>().unwrap();
    let actions: Vec<String> = audit::latest(&read, 50)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    for expected in [
        "member.role_changed",
        "invite.created",
        "invite.accepted",
        "user.created",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
    assert!(audit::verify(&read).await.unwrap().intact());
}

async fn audit_rows_are_append_only_and_edits_are_detected(db: TestDb) {
    let (_, org) = add(&db, "Acme", "owner@example.com", Role::Owner).await;
    add(&db, "Acme", "second@example.com", Role::Member).await;
    add(&db, "Acme", "third@example.com", Role::Viewer).await;
    let update = sqlx::query("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
        .execute(db.store.pool())
        .await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM audit_events WHERE seq = 3")
        .execute(db.store.pool())
        .await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    assert!(audit::verify_org(&db.store, org).await.unwrap().intact());

    // Someone with full database access drops the guard and edits a row: the chain shows it.
    let drop = match db.store.backend() {
        control::store::Backend::Sqlite => "DROP TRIGGER audit_events_no_update",
        control::store::Backend::Postgres => "DROP TRIGGER audit_events_no_update ON audit_events",
    };
    sqlx::query(drop).execute(db.store.pool()).await.unwrap();
    sqlx::query("UPDATE audit_events SET details = '{\"email\":\"mallory@example.com\"}' WHERE seq = 3 AND org_id = $1")
        .bind(org.0)
        .execute(db.store.pool())
        .await
        .unwrap();
    let report = audit::verify_org(&db.store, org).await.unwrap();
    assert_eq!(report.first_broken_seq, Some(3), "{report:?}");
    assert_eq!(report.events_checked, 2);
}

control::both_backends!(
    setup_is_one_time,
    login_failures_look_the_same_and_are_throttled,
    team_rules_hold,
    audit_rows_are_append_only_and_edits_are_detected,
);
