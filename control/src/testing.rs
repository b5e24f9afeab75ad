//! Fresh stores for tests: a SQLite file in a temporary directory, or a new
//! PostgreSQL database on the server named by `PILOTHOUSE_TEST_PG_URL`.
//!
//! Each call makes its own database, so tests never see each other's rows.
//! Databases are named `<PILOTHOUSE_TEST_PG_PREFIX>_<random>`; the test script
//! drops every database with its run's prefix afterwards. When no PostgreSQL
//! URL is set the PostgreSQL half is skipped with a note, except under
//! `CI=true`, where that is a failure.

use crate::store::Store;

pub struct TestDb {
    pub store: Store,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let url = Store::sqlite_url(dir.path());
        let store = Store::connect(&url)
            .await
            .expect("open a fresh SQLite store");
        TestDb {
            store,
            url,
            _dir: Some(dir),
        }
    }

    /// `None` when PostgreSQL is not configured for this run (never under CI).
    pub async fn postgres() -> Option<TestDb> {
        let base = match std::env::var("PILOTHOUSE_TEST_PG_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "PILOTHOUSE_TEST_PG_URL is not set: under CI the PostgreSQL tests must run"
                );
                eprintln!("note: PILOTHOUSE_TEST_PG_URL is not set; skipping the PostgreSQL half");
                return None;
            }
        };
        let prefix =
            std::env::var("PILOTHOUSE_TEST_PG_PREFIX").unwrap_or_else(|_| "ph_test".into());
        let name = format!("{prefix}_{}", crate::crypto::random_token(6));
        let admin = format!("{}/postgres", base.trim_end_matches('/'));
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
            .await
            .expect("connect to the test PostgreSQL server");
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .expect("create a test database");
        let url = format!("{}/{name}", base.trim_end_matches('/'));
        let store = Store::connect(&url)
            .await
            .expect("open a fresh PostgreSQL store");
        Some(TestDb {
            store,
            url,
            _dir: None,
        })
    }
}

/// Instantiates `async fn $name(db: TestDb)` once per backend.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::testing::TestDb::sqlite().await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(db) = $crate::testing::TestDb::postgres().await {
                        super::$name(db).await
                    }
                }
            }
        )*
    };
}
