//! Server-side sessions for tower-sessions, stored in the main database.
//!
//! Only the SHA-256 of a session id is stored, so a copy of the database
//! cannot be turned into a live cookie. The signed-in user id, client IP and
//! user agent also sit in their own columns, which lets a person list their
//! sessions and end all but the current one.

use async_trait::async_trait;
use serde_json::json;
use sqlx::Row;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use crate::access::Actor;
use crate::audit::{self, AuditAction, Event};
use crate::crypto::sha256_hex;
use crate::store::{Store, Tx};
use crate::{ControlError, SessionView, Timestamp, UserId};

/// Session data keys. `USER` and `ORG` are set at login; `CREATED` bounds the
/// absolute lifetime; `IP` and `UA` describe where the login came from. The
/// `PENDING_` keys hold a password sign-in waiting for its two-factor code
/// (no `USER` yet: such a session is signed out for every page and call).
pub mod keys {
    pub const PENDING_USER: &str = "pending_uid";
    pub const PENDING_ORG: &str = "pending_org";
    pub const PENDING_AT: &str = "pending_at";
    pub const USER: &str = "uid";
    pub const ORG: &str = "org";
    pub const CREATED: &str = "created";
    pub const IP: &str = "ip";
    pub const UA: &str = "ua";
    /// How the session signed in: `password`, `password+totp`, `oidc`, ...
    pub const METHOD: &str = "method";
    /// Why an SSO sign-in or link that just came back was refused, for the
    /// next sign-in or Settings page to show once.
    pub const SSO_ERROR: &str = "sso_error";
    /// The one-time token of the "Link" link the Settings page offers.
    pub const SSO_LINK_TOKEN: &str = "sso_link_token";
}

/// Lifetime limits: a session ends after this much inactivity...
pub const IDLE_SECS: i64 = 12 * 3600;
/// ...and at the latest this long after login, however active.
pub const ABSOLUTE_SECS: i64 = 7 * 86_400;

fn id_hash(id: &Id) -> String {
    sha256_hex(format!("session\0{id}"))
}

/// Sessions in the store's database. Writes go through the store's
/// transactions; the time comes from the clock it was given.
#[derive(Clone, Debug)]
pub struct DbSessionStore {
    store: Store,
    clock: fn() -> Timestamp,
}

impl DbSessionStore {
    pub fn new(store: Store) -> Self {
        Self::with_clock(store, Timestamp::now)
    }

    pub fn with_clock(store: Store, clock: fn() -> Timestamp) -> Self {
        Self { store, clock }
    }

    /// Deletes expired sessions; run periodically.
    pub async fn delete_expired(&self, now: Timestamp) -> Result<u64, ControlError> {
        let mut tx = self.store.begin().await?;
        let deleted = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now.0)
            .execute(tx.conn())
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}

fn backend(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[async_trait]
impl SessionStore for DbSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // A fresh random id collides with astronomically low odds; check anyway.
        loop {
            let taken: i64 = sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE id_hash = $1")
                .bind(id_hash(&record.id))
                .fetch_one(self.store.pool())
                .await
                .and_then(|r| r.try_get("n"))
                .map_err(backend)?;
            if taken == 0 {
                break;
            }
            record.id = Id::default();
        }
        self.save(record).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let data = serde_json::to_string(&record.data)
            .map_err(|e| session_store::Error::Encode(e.to_string()))?;
        let user = record.data.get(keys::USER).and_then(|v| v.as_i64());
        let text = |k: &str| {
            record
                .data
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let now = (self.clock)().0;
        let created = record
            .data
            .get(keys::CREATED)
            .and_then(|v| v.as_i64())
            .unwrap_or(now);
        let mut tx = self.store.begin().await.map_err(backend)?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, data, created_at, last_seen_at, expires_at, ip, user_agent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id_hash) DO UPDATE SET user_id = excluded.user_id, data = excluded.data, \
             last_seen_at = excluded.last_seen_at, expires_at = excluded.expires_at, ip = excluded.ip, user_agent = excluded.user_agent",
        )
        .bind(id_hash(&record.id))
        .bind(user)
        .bind(data)
        .bind(created)
        .bind(now)
        .bind(millis(record.expiry_date))
        .bind(text(keys::IP))
        .bind(text(keys::UA))
        .execute(tx.conn())
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let row = sqlx::query(
            "SELECT data, expires_at FROM sessions WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash(id))
        .bind((self.clock)().0)
        .fetch_optional(self.store.pool())
        .await
        .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let data: String = row.try_get("data").map_err(backend)?;
        let expires: i64 = row.try_get("expires_at").map_err(backend)?;
        let data =
            serde_json::from_str(&data).map_err(|e| session_store::Error::Decode(e.to_string()))?;
        let expiry_date =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(expires) * 1_000_000)
                .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        Ok(Some(Record {
            id: *id,
            data,
            expiry_date,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let mut tx = self.store.begin().await.map_err(backend)?;
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash(id))
            .execute(tx.conn())
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }
}

/// The caller's own live sessions, most recent first.
pub async fn list_own(
    actor: &Actor,
    current: Option<Id>,
    now: Timestamp,
) -> Result<Vec<SessionView>, ControlError> {
    let current = current.map(|id| id_hash(&id));
    let rows = sqlx::query(
        "SELECT id_hash, created_at, last_seen_at, ip, user_agent FROM sessions \
         WHERE user_id = $1 AND expires_at > $2 ORDER BY last_seen_at DESC",
    )
    .bind(actor.user().0)
    .bind(now.0)
    .fetch_all(actor.store().pool())
    .await?;
    rows.iter()
        .map(|r| {
            let hash: String = r.try_get("id_hash")?;
            Ok(SessionView {
                handle: hash.chars().take(12).collect(),
                current: current.as_deref() == Some(hash.as_str()),
                created_at: Timestamp(r.try_get("created_at")?),
                last_seen_at: Timestamp(r.try_get("last_seen_at")?),
                ip: r.try_get("ip")?,
                user_agent: r.try_get("user_agent")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Ends the sessions of `user` in `tx`: all of them, or all but `keep`.
/// Returns how many ended.
pub(crate) async fn end_for(
    tx: &mut Tx,
    user: UserId,
    keep: Option<&Id>,
) -> Result<u64, ControlError> {
    let keep = keep.map(id_hash).unwrap_or_default();
    Ok(
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id_hash <> $2")
            .bind(user.0)
            .bind(keep)
            .execute(tx.conn())
            .await?
            .rows_affected(),
    )
}

/// Ends every session of the caller except the current one.
pub async fn revoke_others(
    actor: &Actor,
    current: Id,
    now: Timestamp,
) -> Result<u64, ControlError> {
    let mut tx = actor.store().begin().await?;
    let ended = end_for(&mut tx, actor.user(), Some(&current)).await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::OtherSessionsRevoked,
            format!("user:{}", actor.user().0),
            json!({ "sessions_ended": ended }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(ended)
}
