//! The store: one API over SQLite (embedded default, WAL) and PostgreSQL.
//!
//! Queries are written once with `$N` placeholders, which both drivers accept,
//! and only portable column types (64-bit integers, text). Where the dialects
//! truly differ (row locks) the caller asks [`Store::backend`].
//!
//! Invariant: every state change goes through a [`Tx`], so the change and its
//! audit event commit together or not at all. With SQLite the process is the
//! only writer; write transactions are serialised in-process so two of them
//! never deadlock on SQLite's lock upgrade.

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Executor};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::StoreError;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    writer: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Rows one multi-row statement or `IN (...)` list names (a batch larger than
/// this is written in parts).
pub(crate) const BATCH_ROWS: usize = 200;

/// `rows` groups of `cols` numbered placeholders for a multi-row
/// `VALUES` list: `($1, $2), ($3, $4)` for 2 × 2.
pub(crate) fn placeholders(rows: usize, cols: usize) -> String {
    placeholders_from(rows, cols, 1)
}

/// [`placeholders`] numbered from `$first`.
pub(crate) fn placeholders_from(rows: usize, cols: usize, first: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(first + r * cols + c).to_string());
        }
        out.push(')');
    }
    out
}

/// `n` numbered placeholders from `$first` for an `IN (...)` list.
pub(crate) fn list(n: usize, first: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Connects and applies the embedded migrations of the URL's dialect.
    /// The URL is never logged: it may carry a password.
    /// A SQLite database file is created 0600 (and tightened if others could
    /// read it); SQLite gives its WAL and shared-memory files the same mode.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        if let Some(path) = sqlite_file(url) {
            crate::files::ensure_private(path)
                .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let options: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if backend == Backend::Sqlite {
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        let store = Store {
            pool,
            backend,
            writer: Arc::new(Mutex::new(())),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The SQLite URL for a data directory.
    pub fn sqlite_url(data_dir: &std::path::Path) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("pilothouse.db").display()
        )
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// For reads outside a transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let write = match self.backend {
            Backend::Sqlite => Some(self.writer.clone().lock_owned().await),
            Backend::Postgres => None,
        };
        // SQLite: take the write lock at BEGIN. A deferred transaction that
        // reads and then writes fails at once (SQLITE_BUSY, no busy wait) when
        // another connection wrote in between; IMMEDIATE waits its turn instead.
        let inner = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(Tx {
            inner,
            backend: self.backend,
            _write: write,
        })
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A write transaction. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx {
    // Field order matters: the transaction ends before the write lock is released.
    inner: sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    _write: Option<OwnedMutexGuard<()>>,
}

impl Tx {
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Serialises this transaction with every other one that changes the
    /// organisation's chain or its Owners: on PostgreSQL a `NO KEY UPDATE` lock
    /// on the organisation's row, held to commit (it does not conflict with the
    /// key-share locks foreign keys take). SQLite write transactions are already
    /// serialised by the store.
    pub async fn lock_org(&mut self, org: crate::OrgId) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT id FROM orgs WHERE id = $1 FOR NO KEY UPDATE")
                .bind(org.0)
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.inner.commit().await?;
        Ok(())
    }
}

/// The database file of a `sqlite://PATH[?...]` URL, if it names one.
fn sqlite_file(url: &str) -> Option<&std::path::Path> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && !path.contains(":memory:")).then(|| std::path::Path::new(path))
}

/// Whether an error is a unique-constraint violation (for clean "already exists" answers).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_number_rows_and_lists() {
        assert_eq!(super::placeholders(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(super::placeholders(1, 3), "($1, $2, $3)");
        assert_eq!(super::list(3, 4), "$4, $5, $6");
        assert_eq!(super::placeholders_from(2, 2, 3), "($3, $4), ($5, $6)");
    }
}
