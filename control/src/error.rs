//! The control plane's errors. `StoreError` is what the database layer can say;
//! `ControlError` is what callers see. Messages in `Invalid`, `Conflict` and
//! `Forbidden` are safe to show to the person who made the request; `Internal`
//! keeps its cause for the logs only.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The audit event could not be written: the change it records is rolled
    /// back with it.
    #[error("the audit event could not be written: {0}")]
    NotRecorded(#[source] sqlx::Error),
    /// A batched write failed for every request in it (the cause is logged
    /// once, with the batch).
    #[error("a batched write failed: {0}")]
    Batch(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The thing does not exist, or the caller may not know that it exists.
    #[error("{0}")]
    NotFound(String),
    /// The caller is known but their role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// No valid session, or the credentials were wrong. One message for every
    /// login failure so that nothing leaks about which part was wrong.
    #[error("{0}")]
    Unauthenticated(String),
    /// The request conflicts with the current state (already used, last owner, ...).
    #[error("{0}")]
    Conflict(String),
    /// The input is malformed or breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// Too many attempts; try again after the given time.
    #[error("too many attempts; try again in {} seconds", .0.as_secs().max(1))]
    Throttled(Duration),
    /// The database cannot be reached right now.
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] StoreError),
    /// The change could not be recorded (its audit event, or any write: a
    /// full or read-only database, a refused privilege), so it was not made.
    #[error("The action was not recorded, so it was not done.")]
    NotRecorded(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ControlError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::Forbidden(msg.into())
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::Conflict(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::NotFound(msg.into())
    }
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(e))
    }
}

/// Whether the database refused to write at all: full, read-only, or a
/// privilege taken away (SQLite's FULL and READONLY result codes, with their
/// extended forms; PostgreSQL's insufficient_privilege, disk_full and
/// read_only_sql_transaction).
fn write_refused(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    let Some(code) = db.code() else { return false };
    match code.as_ref() {
        "42501" | "53100" | "25006" => true,
        c => c.parse::<i64>().is_ok_and(|n| matches!(n & 0xff, 8 | 13)),
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotRecorded(_) => ControlError::NotRecorded(e),
            StoreError::Database(db) if write_refused(db) => ControlError::NotRecorded(e),
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_),
            ) => ControlError::Unavailable(e),
            _ => ControlError::Internal(Box::new(e)),
        }
    }
}

impl From<sqlx::Error> for ControlError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}
