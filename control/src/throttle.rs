//! Login throttling: failures are counted per account (normalised email, known
//! or not) and per client IP in a sliding window stored in the database, so
//! the limit holds across restarts and replicas.
//!
//! An attacker gets at most [`ACCOUNT`] guesses per account per hour, and at
//! most [`CLIENT`] failed logins per IP per hour, whichever is reached first,
//! however many requests they send at once: [`reserve`] records the attempt
//! before the password is hashed, and only a success gives it back.

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
/// Wrong two-factor codes per account (after its right password): fewer than
/// passwords, since a code has only a million values.
pub const MFA: Limit = Limit {
    max_failures: 10,
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
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(at) AS oldest FROM login_failures WHERE key = $1 AND at > $2",
    )
    .bind(key)
    .bind(since)
    .fetch_one(store.pool())
    .await?;
    let count: i64 = row.try_get("n")?;
    if count < limit.max_failures {
        return Ok(());
    }
    // The window frees a slot when its oldest failure ages out.
    let oldest: Option<i64> = row.try_get("oldest")?;
    let free_at = oldest.unwrap_or(now.0) + limit.window_secs * 1000;
    let wait_ms = (free_at - now.0).max(1000);
    Err(ControlError::Throttled(Duration::from_millis(
        wait_ms as u64,
    )))
}

/// Attempts reserved by [`reserve`]: one failure row per key, written before
/// the expensive check runs. Kept on failure; given back with [`release`].
#[derive(Debug)]
#[must_use = "a reservation is a recorded failure until it is released"]
pub struct Reservation {
    ids: Vec<i64>,
}

/// Checks every key against its limit and, if all are under it, records one
/// failure for each, in one write transaction: concurrent attempts cannot all
/// pass a nearly full window, because each sees the ones reserved before it.
/// (SQLite write transactions are serialised; on PostgreSQL each key is
/// locked with a transaction-scoped advisory lock, in a fixed order.)
pub async fn reserve(
    store: &Store,
    keys: &[(&str, Limit)],
    now: Timestamp,
) -> Result<Reservation, ControlError> {
    let mut sorted: Vec<&(&str, Limit)> = keys.iter().collect();
    sorted.sort_by_key(|(k, _)| *k);
    let mut tx = store.begin().await?;
    if tx.backend() == crate::store::Backend::Postgres {
        for (key, _) in &sorted {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
                .bind(*key)
                .execute(tx.conn())
                .await?;
        }
    }
    for (key, limit) in &sorted {
        let since = now.plus_secs(-limit.window_secs).0;
        let row =
            sqlx::query("SELECT COUNT(*) AS n, MIN(at) AS oldest FROM login_failures WHERE key = $1 AND at > $2")
                .bind(*key)
                .bind(since)
                .fetch_one(tx.conn())
                .await?;
        let count: i64 = row.try_get("n")?;
        if count >= limit.max_failures {
            let oldest: Option<i64> = row.try_get("oldest")?;
            let free_at = oldest.unwrap_or(now.0) + limit.window_secs * 1000;
            let wait_ms = (free_at - now.0).max(1000);
            return Err(ControlError::Throttled(Duration::from_millis(
                wait_ms as u64,
            )));
        }
    }
    let mut ids = Vec::with_capacity(sorted.len());
    for (key, _) in &sorted {
        ids.push(insert_failure(&mut tx, key, now).await?);
    }
    tx.commit().await?;
    Ok(Reservation { ids })
}

/// Gives back a reservation whose attempt succeeded.
pub async fn release(tx: &mut Tx, reservation: Reservation) -> Result<(), StoreError> {
    for id in reservation.ids {
        sqlx::query("DELETE FROM login_failures WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
    }
    Ok(())
}

async fn insert_failure(tx: &mut Tx, key: &str, now: Timestamp) -> Result<i64, StoreError> {
    let id: i64 =
        sqlx::query_scalar("INSERT INTO login_failures (key, at) VALUES ($1, $2) RETURNING id")
            .bind(key)
            .bind(now.0)
            .fetch_one(tx.conn())
            .await?;
    sqlx::query("DELETE FROM login_failures WHERE key = $1 AND at < $2")
        .bind(key)
        .bind(now.plus_secs(-86_400).0)
        .execute(tx.conn())
        .await?;
    Ok(id)
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

/// A per-client limit kept in memory, for floods that must not cost a
/// database write each (random enrolment tokens). Per process: with several
/// replicas each keeps its own count, which bounds the total at replicas x limit.
/// Bounded in size: past `MAX_CLIENTS` tracked addresses the oldest windows
/// are dropped first.
#[derive(Debug)]
pub struct MemoryThrottle {
    max_failures: u32,
    window_ms: i64,
    clients: std::sync::Mutex<std::collections::HashMap<String, (i64, u32)>>,
}

const MAX_CLIENTS: usize = 65_536;

impl MemoryThrottle {
    pub fn new(max_failures: u32, window_secs: i64) -> Self {
        Self {
            max_failures,
            window_ms: window_secs.saturating_mul(1000),
            clients: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (i64, u32)>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one attempt for `client`, or refuses with
    /// [`ControlError::Throttled`] when its window is full. Checking and
    /// counting are one step, so concurrent attempts cannot all slip past a
    /// nearly full window. Give the attempt back with [`Self::release`] when it
    /// turns out not to be a failure.
    pub fn reserve(&self, client: &str, now: Timestamp) -> Result<(), ControlError> {
        let mut map = self.lock();
        if map.len() >= MAX_CLIENTS && !map.contains_key(client) {
            let window = self.window_ms;
            map.retain(|_, (start, _)| now.0 < *start + window);
            if map.len() >= MAX_CLIENTS {
                if let Some(oldest) = map.iter().min_by_key(|(_, v)| v.0).map(|(k, _)| k.clone()) {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map.entry(client.to_string()).or_insert((now.0, 0));
        if now.0 >= entry.0 + self.window_ms {
            *entry = (now.0, 0);
        }
        if entry.1 >= self.max_failures {
            return Err(ControlError::Throttled(Duration::from_millis(
                u64::try_from(entry.0 + self.window_ms - now.0).unwrap_or(1000),
            )));
        }
        entry.1 += 1;
        Ok(())
    }

    /// Gives back an attempt taken by [`Self::reserve`] that succeeded.
    pub fn release(&self, client: &str) {
        if let Some(entry) = self.lock().get_mut(client) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }
}
