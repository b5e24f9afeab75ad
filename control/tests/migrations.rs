//! The SQLite and PostgreSQL migrations must describe one schema: the same
//! tables, the same columns in each, the same nullability and the same
//! indexes. A column added to one dialect only fails here.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use control::testing::TestDb;
use sqlx::Row;

/// (table, column, nullable) for every column of the application's tables.
/// SQLite's trigram index for the Audit page's free text (the FTS5 table
/// `audit_text` and the tables FTS5 keeps it in) is its own, as PostgreSQL's
/// `audit_events_text` index is.
async fn sqlite_columns(db: &TestDb) -> BTreeSet<(String, String, bool)> {
    let rows = sqlx::query(
        "SELECT m.name, p.name, p.\"notnull\", p.pk FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx_%' \
         AND m.name NOT IN ('audit_text', 'audit_text_data', 'audit_text_idx', 'audit_text_config')",
    )
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            let notnull: i64 = r.try_get(2).unwrap();
            let pk: i64 = r.try_get(3).unwrap();
            (
                r.try_get::<String, _>(0).unwrap(),
                r.try_get::<String, _>(1).unwrap(),
                // SQLite lets a non-INTEGER primary key column hold NULL unless
                // declared NOT NULL; PostgreSQL never does. Compare what the
                // schema means: a key column is not nullable.
                notnull == 0 && pk == 0,
            )
        })
        .collect()
}

async fn postgres_columns(db: &TestDb) -> BTreeSet<(String, String, bool)> {
    let rows = sqlx::query(
        "SELECT table_name::text, column_name::text, is_nullable::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name NOT LIKE '\\_sqlx\\_%'",
    )
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            (
                r.try_get::<String, _>(0).unwrap(),
                r.try_get::<String, _>(1).unwrap(),
                r.try_get::<String, _>(2).unwrap() == "YES",
            )
        })
        .collect()
}

async fn sqlite_indexes(db: &TestDb) -> BTreeSet<String> {
    sqlx::query("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        .fetch_all(db.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>(0).unwrap())
        .collect()
}

async fn postgres_indexes(db: &TestDb) -> BTreeSet<String> {
    // Named indexes only: implicit ones (primary keys, UNIQUE constraints) are
    // named by each dialect its own way and are covered by the column check.
    sqlx::query(
        "SELECT i.indexname::text FROM pg_indexes i WHERE i.schemaname = 'public' \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
    )
    .fetch_all(db.store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.try_get::<String, _>(0).unwrap())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_dialects_build_the_same_schema() {
    let sqlite = TestDb::sqlite().await;
    let Some(pg) = TestDb::postgres("migrations::both_dialects_build_the_same_schema").await else {
        return;
    };
    let (a, b) = (sqlite_columns(&sqlite).await, postgres_columns(&pg).await);
    assert!(a.len() > 50, "the schema was read: {a:?}");
    let only_sqlite: Vec<_> = a.difference(&b).collect();
    let only_postgres: Vec<_> = b.difference(&a).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "columns differ\nonly in SQLite: {only_sqlite:?}\nonly in PostgreSQL: {only_postgres:?}"
    );
    let (a, mut b) = (sqlite_indexes(&sqlite).await, postgres_indexes(&pg).await);
    // PostgreSQL's own: the trigram index for the Audit page's free text
    // (where pg_trgm is available; SQLite's is the `audit_text` table).
    b.remove("audit_events_text");
    assert_eq!(a, b, "named indexes differ");
}
