//! Login throttling: failures are counted per account (normalised email, known
//! or not) and per client IP in a sliding window stored in the database, so
//! the limit holds across restarts and replicas.
//!
//! An attacker gets at most [`ACCOUNT`] guesses per account per hour, and at
//! most [`CLIENT`] failed logins per IP per hour, whichever is reached first.

use std::time::Duration;

use sqlx::Row;

use crate::store::{Store, Tx};
use crate::{ControlError, StoreError, Timestamp};

#[derive(Clone, Copy, Debug)]
pub struct Limit {
    pub max_failures: i64,
    pub window_secs: i64,
}

pub const ACCOUNT: Limit = Limit {
    max_failures: 20,
    window_secs: 3600,
};
pub const CLIENT: Limit = Limit {
    max_failures: 100,
    window_secs: 3600,
};

pub fn account_key(email: &str) -> String {
    format!("account:{email}")
}

pub fn client_key(ip: &str) -> String {
    format!("ip:{ip}")
}

/// Refuses with [`ControlError::Throttled`] when `key` has reached its limit.
pub async fn check(
    store: &Store,
    key: &str,
    limit: Limit,
    now: Timestamp,
) -> Result<(), ControlError> {
    let since = now.plus_secs(-limit.window_secs).0;
    let row =
        sqlx::query("SELECT COUNT(*), MIN(at) FROM login_failures WHERE key = $1 AND at > $2")
            .bind(key)
            .bind(since)
            .fetch_one(store.pool())
            .await?;
    let count: i64 = row.try_get(0)?;
    if count < limit.max_failures {
        return Ok(());
    }
    // The window frees a slot when its oldest failure ages out.
    let oldest: Option<i64> = row.try_get(1)?;
    let free_at = oldest.unwrap_or(now.0) + limit.window_secs * 1000;
    let wait_ms = (free_at - now.0).max(1000);
    Err(ControlError::Throttled(Duration::from_millis(
        wait_ms as u64,
    )))
}

/// Records one failure for `key` and forgets failures older than a day.
pub async fn record(tx: &mut Tx, key: &str, now: Timestamp) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO login_failures (key, at) VALUES ($1, $2)")
        .bind(key)
        .bind(now.0)
        .execute(tx.conn())
        .await?;
    sqlx::query("DELETE FROM login_failures WHERE key = $1 AND at < $2")
        .bind(key)
        .bind(now.plus_secs(-86_400).0)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Clears an account's failures after a successful login.
pub async fn clear(tx: &mut Tx, key: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM login_failures WHERE key = $1")
        .bind(key)
        .execute(tx.conn())
        .await?;
    Ok(())
}
