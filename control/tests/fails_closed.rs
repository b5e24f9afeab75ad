//! Fails closed: when a change's audit event cannot be written, the change
//! is refused with "The action was not recorded, so it was not done" and
//! nothing changes. Each refusal is real: a trigger that refuses every new
//! audit event (a chain that cannot be extended), a PostgreSQL user whose
//! INSERT privilege on the audit log was revoked, and a SQLite database
//! opened read-only.

#![allow(clippy::unwrap_used)]

use control::access::Operator;
use control::store::Store;
use control::testing::TestDb;
use control::{ControlError, Role, Timestamp};
use secrecy::SecretString;

const PIN: &str = "0000000000000000000000000000000000000000000000000000000000000000";

async fn add(store: &Store, email: &str) -> Result<(), ControlError> {
    control::accounts::add_user_cli(
        &Operator::command_line(store.clone()),
        "Acme",
        email,
        Role::Member,
        SecretString::from("correct horse battery staple"),
        Timestamp::now(),
    )
    .await
    .map(|_| ())
}

async fn token(store: &Store) -> Result<(), ControlError> {
    control::agents::create_registration_token_cli(
        &Operator::command_line(store.clone()),
        "Acme",
        PIN,
        3600,
        Timestamp::now(),
    )
    .await
    .map(|_| ())
}

/// Rows in the tables the refused changes would write.
async fn counts(store: &Store) -> (i64, i64, i64, i64) {
    let n = |table: &'static str| {
        let store = store.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(store.pool())
                .await
                .unwrap()
        }
    };
    (
        n("audit_events").await,
        n("users").await,
        n("memberships").await,
        n("registration_tokens").await,
    )
}

fn not_recorded(result: Result<(), ControlError>) {
    match result {
        Err(e @ ControlError::NotRecorded(_)) => {
            assert_eq!(
                e.to_string(),
                "The action was not recorded, so it was not done."
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn a_chain_that_cannot_be_extended_refuses_every_change(db: TestDb) {
    add(&db.store, "first@example.com").await.unwrap();
    let before = counts(&db.store).await;
    let seal = if db.url.starts_with("postgres") {
        "CREATE FUNCTION audit_sealed() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'the audit chain is sealed'; END $$; \
         CREATE TRIGGER audit_sealed BEFORE INSERT ON audit_events \
         FOR EACH ROW EXECUTE FUNCTION audit_sealed();"
    } else {
        "CREATE TRIGGER audit_sealed BEFORE INSERT ON audit_events \
         BEGIN SELECT RAISE(ABORT, 'the audit chain is sealed'); END;"
    };
    sqlx::raw_sql(seal).execute(db.store.pool()).await.unwrap();
    not_recorded(add(&db.store, "second@example.com").await);
    not_recorded(token(&db.store).await);
    assert_eq!(counts(&db.store).await, before, "nothing changed");

    sqlx::raw_sql("DROP TRIGGER audit_sealed ON audit_events")
        .execute(db.store.pool())
        .await
        .or(sqlx::raw_sql("DROP TRIGGER audit_sealed")
            .execute(db.store.pool())
            .await)
        .unwrap();
    add(&db.store, "second@example.com").await.unwrap();
    let after = counts(&db.store).await;
    assert!(after.0 > before.0 && after.1 == before.1 + 1);
}

control::both_backends!(a_chain_that_cannot_be_extended_refuses_every_change);

/// A database user that may change everything but may not add to the audit
/// log changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_insert_on_the_audit_log_nothing_changes_postgres() {
    let Some(db) = TestDb::postgres("without_insert_on_the_audit_log_nothing_changes").await else {
        return;
    };
    add(&db.store, "first@example.com").await.unwrap();
    let role = format!("ph_limited_{}", control::crypto::random_token(4));
    let grants = format!(
        "CREATE ROLE {role} LOGIN; \
         GRANT USAGE, CREATE ON SCHEMA public TO {role}; \
         GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}; \
         GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}; \
         REVOKE INSERT ON audit_events FROM {role};"
    );
    sqlx::raw_sql(&grants)
        .execute(db.store.pool())
        .await
        .unwrap();
    // The same database, as that user (trust authentication on loopback).
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    let limited = Store::connect(&format!("{scheme}://{role}@{host}"))
        .await
        .unwrap();
    let before = counts(&db.store).await;
    not_recorded(add(&limited, "second@example.com").await);
    not_recorded(token(&limited).await);
    assert_eq!(counts(&db.store).await, before, "nothing changed");
    limited.close().await;
    sqlx::raw_sql(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
        .execute(db.store.pool())
        .await
        .unwrap();
}

/// A SQLite database opened read-only: every change is refused, none made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_changes_nothing_sqlite() {
    let db = TestDb::sqlite().await;
    add(&db.store, "first@example.com").await.unwrap();
    let before = counts(&db.store).await;
    let read_only = Store::connect(&db.url.replace("mode=rwc", "mode=ro"))
        .await
        .unwrap();
    not_recorded(add(&read_only, "second@example.com").await);
    not_recorded(token(&read_only).await);
    assert_eq!(counts(&db.store).await, before, "nothing changed");
}
