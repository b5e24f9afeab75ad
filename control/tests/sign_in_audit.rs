//! Failed sign-ins and refused authorizations in the audit log, on both
//! backends: a wrong password or a throttled attempt for an existing account
//! is recorded in each of its organisations with the client's address and
//! browser and nothing of the password, an unknown email records nothing,
//! and a refusal for a member's role is recorded in their organisation.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use control::access::{ManageMembers, RequestMeta};
use control::testing::TestDb;
use control::{accounts, team, ControlError, OrgId, Role, Timestamp};
use secrecy::{ExposeSecret, SecretString};
use sqlx::Row;

mod common;
use common::{actor, add, meta};

const WRONG: &str = "Tr0ub4dor&3-wrong-guess";

/// Every stored field of the organisation's events with `action`, as text.
async fn events(db: &TestDb, org: OrgId, action: &str) -> Vec<Vec<String>> {
    let rows = sqlx::query(
        "SELECT actor_user_id, actor, ip, user_agent, action, target, details FROM audit_events \
         WHERE org_id = $1 AND action = $2 ORDER BY seq",
    )
    .bind(org.0)
    .bind(action)
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            vec![
                r.try_get::<Option<i64>, _>(0)
                    .unwrap()
                    .map_or("NULL".into(), |u| u.to_string()),
                r.try_get(1).unwrap(),
                r.try_get(2).unwrap(),
                r.try_get(3).unwrap(),
                r.try_get(4).unwrap(),
                r.try_get(5).unwrap(),
                r.try_get(6).unwrap(),
            ]
        })
        .collect()
}

/// Waits (bounded) until the organisation has `n` events with `action`:
/// these are written by a task of their own, after the answer.
async fn wait_for(db: &TestDb, org: OrgId, action: &str, n: usize) -> Vec<Vec<String>> {
    for _ in 0..200 {
        let got = events(db, org, action).await;
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{action}: fewer than {n} events in org {}", org.0);
}

fn browser() -> RequestMeta {
    RequestMeta::new("198.51.100.23", "Mozilla/5.0 (audit test)")
}

async fn login(db: &TestDb, email: &str, password: &str) -> Result<(), ControlError> {
    accounts::login(
        &db.store,
        email,
        SecretString::from(password.to_string()),
        &browser(),
        Timestamp::now(),
    )
    .await
    .map(|_| ())
}

async fn failed_sign_ins_are_recorded_in_each_org_of_the_account(db: TestDb) {
    let now = Timestamp::now();
    let (ada, acme) = add(&db, "Acme", "ada@example.com", Role::Member).await;
    let (beta_owner, beta) = add(&db, "Beta", "owner@beta.example", Role::Owner).await;
    // Ada joins Beta too.
    let owner = actor(&db, beta_owner, beta).await;
    let invite = team::invite(
        &owner.authorize::<ManageMembers>().unwrap(),
        "ada@example.com",
        Role::Viewer,
        now,
    )
    .await
    .unwrap();
    team::accept_invite_signed_in(&db.store, invite.token.expose_secret(), ada, &meta(), now)
        .await
        .unwrap();

    let wrong = login(&db, "Ada@Example.com", WRONG).await.unwrap_err();
    let unknown = login(&db, "nobody@example.com", WRONG).await.unwrap_err();
    assert!(
        matches!(wrong, ControlError::Unauthenticated(_)),
        "{wrong:?}"
    );
    assert_eq!(
        wrong.to_string(),
        unknown.to_string(),
        "the answer does not tell a known account from an unknown one"
    );

    for org in [acme, beta] {
        let got = wait_for(&db, org, "user.login_failed", 1).await;
        assert_eq!(got.len(), 1, "{got:?}");
        let e = &got[0];
        assert_eq!(e[0], "NULL", "the attempt is not attributed to the account");
        assert_eq!(e[1], accounts::ANONYMOUS);
        assert_eq!(e[2], "198.51.100.23");
        assert_eq!(e[3], "Mozilla/5.0 (audit test)");
        assert_eq!(e[5], "ada@example.com");
        let details: serde_json::Value = serde_json::from_str(&e[6]).unwrap();
        assert_eq!(details, serde_json::json!({ "reason": "wrong_password" }));
    }
    // Nothing of the password anywhere in the log, whole or in part.
    let all: Vec<String> =
        sqlx::query("SELECT actor, ip, user_agent, action, target, details FROM audit_events")
            .fetch_all(db.store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (0..6).map(|i| r.try_get::<String, _>(i).unwrap()).collect())
            .collect();
    for row in &all {
        for part in ["Tr0ub4dor", "wrong-guess", WRONG] {
            assert!(!row.contains(part), "{row}");
        }
    }
    // The unknown email belongs to no organisation: nothing anywhere.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE action = 'user.login_failed'")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    assert_eq!(
        n, 2,
        "one event per organisation of Ada's, none for the unknown email"
    );
    let none: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE target LIKE '%nobody%' OR details LIKE '%nobody%'",
    )
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!(none, 0);

    // The right password still signs in, and is recorded as a login.
    login(&db, "ada@example.com", common::PASSWORD)
        .await
        .unwrap();
}

async fn throttled_sign_ins_are_recorded_once_a_minute(db: TestDb) {
    let (_, acme) = add(&db, "Acme", "ada@example.com", Role::Member).await;
    let now = Timestamp::now();
    // The account's window is full.
    for _ in 0..control::throttle::ACCOUNT.max_failures {
        sqlx::query("INSERT INTO login_failures (key, at) VALUES ($1, $2)")
            .bind(control::throttle::account_key("ada@example.com"))
            .bind(now.0)
            .execute(db.store.pool())
            .await
            .unwrap();
    }
    let first = login(&db, "ada@example.com", WRONG).await.unwrap_err();
    assert!(matches!(first, ControlError::Throttled(_)), "{first:?}");
    let got = wait_for(&db, acme, "user.login_failed", 1).await;
    let details: serde_json::Value = serde_json::from_str(&got[0][6]).unwrap();
    assert_eq!(details, serde_json::json!({ "reason": "throttled" }));
    assert_eq!(got[0][2], "198.51.100.23");
    // Throttled attempts cost nothing to send: more of them within the
    // minute add no rows to a log that is never pruned.
    for _ in 0..5 {
        let again = login(&db, "ada@example.com", common::PASSWORD)
            .await
            .unwrap_err();
        assert!(matches!(again, ControlError::Throttled(_)), "{again:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(events(&db, acme, "user.login_failed").await.len(), 1);
    // A minute later the next one is recorded again.
    let later = now.plus_secs(accounts::THROTTLED_RECORD_EVERY_SECS + 1);
    let written = accounts::record_failed_login(
        &db.store,
        "ada@example.com",
        accounts::FailedLogin::Throttled,
        &browser(),
        later,
    )
    .await
    .unwrap();
    assert_eq!(written, 1);
}

/// A refusal for a member's role is recorded in their organisation, from
/// every path: the edge's check, and the Owner-level check inside a change.
async fn role_refusals_are_recorded(db: TestDb) {
    let now = Timestamp::now();
    let (owner, org) = add(&db, "Acme", "owner@example.com", Role::Owner).await;
    let (admin, _) = add(&db, "Acme", "admin@example.com", Role::Admin).await;
    let (member, _) = add(&db, "Acme", "member@example.com", Role::Member).await;
    let member = actor(&db, member, org).await;
    let refused = member.authorize::<ManageMembers>().err().unwrap();
    assert!(matches!(refused, ControlError::Forbidden(_)), "{refused:?}");
    // An Admin may manage members but not Owners.
    let admin = actor(&db, admin, org).await;
    let demote = team::change_role(
        &admin.authorize::<ManageMembers>().unwrap(),
        owner,
        Role::Member,
        now,
    )
    .await;
    assert!(
        matches!(demote, Err(ControlError::Forbidden(_))),
        "{demote:?}"
    );

    let got = wait_for(&db, org, "access.refused", 2).await;
    let mut by_actor: Vec<(&str, serde_json::Value, &str, &str)> = got
        .iter()
        .map(|e| {
            (
                e[1].as_str(),
                serde_json::from_str(&e[6]).unwrap(),
                e[5].as_str(),
                e[0].as_str(),
            )
        })
        .collect();
    by_actor.sort_by_key(|e| e.0);
    assert_eq!(by_actor[0].0, "admin@example.com");
    assert_eq!(
        by_actor[0].1,
        serde_json::json!({ "capability": "make or remove owners", "role": "admin" })
    );
    assert_eq!(by_actor[0].2, format!("user:{}", owner.0));
    assert_eq!(by_actor[0].3, admin.user().0.to_string());
    assert_eq!(by_actor[1].0, "member@example.com");
    assert_eq!(
        by_actor[1].1,
        serde_json::json!({ "capability": "manage members", "role": "member" })
    );
    assert_eq!(got[0][2], "192.0.2.7", "the request's address");
    // The refused change did not happen.
    let still: String =
        sqlx::query_scalar("SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2")
            .bind(org.0)
            .bind(owner.0)
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    assert_eq!(still, "owner");
}

control::both_backends!(
    failed_sign_ins_are_recorded_in_each_org_of_the_account,
    throttled_sign_ins_are_recorded_once_a_minute,
    role_refusals_are_recorded,
);
