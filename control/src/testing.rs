//! Fresh stores for tests: a SQLite file in a temporary directory, or a new
//! PostgreSQL database on the server named by `PILOTHOUSE_TEST_PG_URL`.
//!
//! Each call makes its own database, so tests never see each other's rows.
//! Databases are named `<PILOTHOUSE_TEST_PG_PREFIX>_<random>`; the test script
//! drops every database with its run's prefix afterwards.
//!
//! Without a PostgreSQL URL the PostgreSQL half fails, unless the run says so
//! explicitly with `PILOTHOUSE_TEST_SKIP_PG=1` (never honoured under
//! `CI=true`): then it skips, prints `SKIP`, and appends the test's name to
//! the file `PILOTHOUSE_TEST_SKIP_LOG` names, which `make test` counts in its
//! summary. Nothing passes silently.

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

    /// `None` when this run explicitly skips PostgreSQL (see the module notes).
    pub async fn postgres(test: &str) -> Option<TestDb> {
        let base = match std::env::var("PILOTHOUSE_TEST_PG_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                let ci = matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"));
                let skip = std::env::var("PILOTHOUSE_TEST_SKIP_PG").as_deref() == Ok("1");
                assert!(
                    skip && !ci,
                    "PILOTHOUSE_TEST_PG_URL is not set: run the tests through `make test` or \
                     scripts/pg.sh, or set PILOTHOUSE_TEST_SKIP_PG=1 to skip the PostgreSQL half \
                     (not allowed under CI)"
                );
                eprintln!("SKIP {test} (PostgreSQL): PILOTHOUSE_TEST_SKIP_PG=1");
                if let Ok(path) = std::env::var("PILOTHOUSE_TEST_SKIP_LOG") {
                    use std::io::Write;
                    if let Ok(mut f) = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                    {
                        let _ = writeln!(f, "{test}");
                    }
                }
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
                    if let Some(db) =
                        $crate::testing::TestDb::postgres(concat!(module_path!(), "::postgres")).await
                    {
                        super::$name(db).await
                    }
                }
            }
        )*
    };
}
