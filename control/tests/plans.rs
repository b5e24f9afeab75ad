//! Every hot-path query (agent authentication, heartbeat, poll, metrics,
//! servers list) must be answered from an index on both backends: a full
//! table scan of agents or commands on every agent request is what a fleet
//! of 10,000 idle agents turns into a saturated server.

#![allow(clippy::unwrap_used)]

use control::hot_path::{self, Param};
use control::store::Backend;
use control::testing::TestDb;
use sqlx::Row;

/// Tables whose full scan on a hot path is a bug.
const TABLES: [&str; 5] = [
    "agents",
    "commands",
    "metrics_raw",
    "registration_tokens",
    "audit_events",
];

fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    params: &'q [Param],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for p in params {
        q = match p {
            Param::Text(s) => q.bind(*s),
            Param::Int(i) => q.bind(*i),
            Param::Real(f) => q.bind(*f),
        };
    }
    q
}

/// A plan line that reads a whole table: SQLite's `SCAN <table>` without an
/// index, PostgreSQL's `Seq Scan on <table>` (sequential scans are disabled
/// for the session, so one still chosen means no index can serve the query).
fn full_scan(backend: Backend, line: &str) -> Option<&'static str> {
    TABLES.into_iter().find(|t| match backend {
        Backend::Sqlite => {
            let words: Vec<&str> = line.split_whitespace().collect();
            words.first() == Some(&"SCAN")
                && words.get(1).is_some_and(|w| w == t)
                && !line.contains("USING")
        }
        Backend::Postgres => {
            line.contains(&format!("Seq Scan on {t} "))
                || line.trim_end().ends_with(&format!("Seq Scan on {t}"))
        }
    })
}

async fn hot_path_queries_use_indexes(db: TestDb) {
    let backend = db.store.backend();
    let mut conn = db.store.pool().acquire().await.unwrap();
    if backend == Backend::Postgres {
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let queries = hot_path::queries();
    assert!(queries.len() >= 6);
    for q in &queries {
        let explain = match backend {
            Backend::Sqlite => format!("EXPLAIN QUERY PLAN {}", q.sql),
            Backend::Postgres => format!("EXPLAIN {}", q.sql),
        };
        let rows = bind(sqlx::query(&explain), &q.params)
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", q.name));
        let plan: Vec<String> = rows
            .iter()
            .map(|r| match backend {
                Backend::Sqlite => r.try_get::<String, _>(3).unwrap(),
                Backend::Postgres => r.try_get::<String, _>(0).unwrap(),
            })
            .collect();
        assert!(!plan.is_empty(), "{}: no plan", q.name);
        for line in &plan {
            if let Some(table) = full_scan(backend, line) {
                panic!(
                    "{} on {}: full scan of {table}\n{}",
                    q.name,
                    backend.name(),
                    plan.join("\n")
                );
            }
        }
    }
}

#[test]
fn the_detector_sees_full_scans() {
    assert_eq!(full_scan(Backend::Sqlite, "SCAN agents"), Some("agents"));
    assert_eq!(
        full_scan(
            Backend::Sqlite,
            "SEARCH agents USING INDEX agents_prev_cert_fingerprint (prev_cert_fingerprint=?)"
        ),
        None
    );
    assert_eq!(full_scan(Backend::Sqlite, "SCAN p"), None);
    assert_eq!(
        full_scan(
            Backend::Postgres,
            "Seq Scan on agents  (cost=10000000000.00..10000000001.01 rows=1 width=8)"
        ),
        Some("agents")
    );
    assert_eq!(
        full_scan(
            Backend::Postgres,
            "Index Scan using agents_pkey on agents a  (cost=0.15..8.17 rows=1 width=8)"
        ),
        None
    );
}

control::both_backends!(hot_path_queries_use_indexes);
