//! Email: a durable outbox that the server's mailer (`server::mailer`) sends
//! from over SMTP.
//!
//! - **Written with the change.** What the control plane mails (a password
//!   reset link, a new sign-in notice) is queued by [`enqueue`] inside the
//!   transaction of what causes it: the change and its message commit
//!   together or not at all.
//! - **Nothing lost.** A message stays queued until an SMTP server has
//!   accepted it. A failure is recorded with the message (attempts, the
//!   error, never the body) and retried after a back-off (2 s, doubling, at
//!   most 5 min) until the message's expiry; only then is it given up, and
//!   that is recorded too. A reset link expires with its token; a notice is
//!   kept for three days.
//! - **At least once.** The mailer takes a message for [`LEASE_SECS`]
//!   ([`claim_due`]); a server that dies while sending leaves it to be taken
//!   again once the lease ends, so a message whose acceptance was not
//!   recorded may arrive twice, never not at all.
//! - **Sealed.** Subject and body may carry a one-time link, so they are
//!   sealed like a secret (own data key, wrapped by the master key, bound to
//!   the message's id) in `mail_bodies`, and deleted once the message is sent
//!   or given up. `mail_outbox` keeps who it was for, its kind and its
//!   history.

use rand::Rng;
use sqlx::Row;
use zeroize::Zeroizing;

use crate::secrets::{Keyring, Sealed};
use crate::store::{Store, Tx};
use crate::{ControlError, Timestamp};

/// How long the mailer holds a message it is sending.
pub const LEASE_SECS: i64 = 120;
/// The first retry's delay; each failure doubles it, up to [`BACKOFF_MAX_SECS`].
pub const BACKOFF_FIRST_SECS: i64 = 2;
pub const BACKOFF_MAX_SECS: i64 = 300;
/// How long a notice may wait for an SMTP server.
pub const NOTICE_TTL_SECS: i64 = 3 * 86_400;
/// Messages one round of the mailer takes.
pub const ROUND_MESSAGES: i64 = 50;
/// What a sealed body is bound to besides its id.
const BODY_CONTEXT: &str = "mail body";
const MAX_ERROR_CHARS: usize = 300;

/// What a message is, for the record and the outbox's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailKind {
    PasswordReset,
    NewSignIn,
    /// An organisation's event announced to an email notification channel.
    Notification,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::PasswordReset => "password_reset",
            MailKind::NewSignIn => "new_sign_in",
            MailKind::Notification => "notification",
        }
    }
}

/// A plain-text message to one person.
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: Zeroizing<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Content {
    subject: String,
    body: String,
}

/// Queues `mail` in `tx`, to be sent from now until `expires_at`; returns
/// the message's id.
pub async fn enqueue(
    tx: &mut Tx,
    ring: &Keyring,
    kind: MailKind,
    mail: &Mail,
    expires_at: Timestamp,
    now: Timestamp,
) -> Result<String, ControlError> {
    let id = format!("mail_{}", crate::crypto::random_token(16));
    let content = Zeroizing::new(
        serde_json::to_vec(&Content {
            subject: mail.subject.clone(),
            body: mail.body.to_string(),
        })
        .map_err(|e| ControlError::Internal(e.to_string().into()))?,
    );
    let sealed = crate::secrets::seal_own(tx, ring, &id, BODY_CONTEXT, &content).await?;
    sqlx::query(
        "INSERT INTO mail_outbox (id, kind, recipient, created_at, expires_at, attempts, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, 0, $4)",
    )
    .bind(&id)
    .bind(kind.as_str())
    .bind(&mail.to)
    .bind(now.0)
    .bind(expires_at.0)
    .execute(tx.conn())
    .await?;
    sqlx::query(
        "INSERT INTO mail_bodies (id, master_key_id, wrapped_key, ciphertext) VALUES ($1, $2, $3, $4)",
    )
    .bind(&id)
    .bind(&sealed.key_id)
    .bind(&sealed.wrapped_key)
    .bind(&sealed.ciphertext)
    .execute(tx.conn())
    .await?;
    Ok(id)
}

/// A message the mailer holds for sending.
pub struct Due {
    pub id: String,
    pub kind: String,
    pub to: String,
    pub subject: String,
    pub body: Zeroizing<String>,
    /// Failed attempts so far.
    pub attempts: i64,
}

impl std::fmt::Debug for Due {
    /// Without the body, which may carry a one-time link.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Due")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Gives up what expired unsent, then takes up to [`ROUND_MESSAGES`]
/// messages whose time has come and that no one else holds, for
/// [`LEASE_SECS`]. A body that does not open (altered, or under a master key
/// this server does not hold) is given up with that reason.
pub async fn claim_due(
    store: &Store,
    ring: &Keyring,
    now: Timestamp,
) -> Result<Vec<Due>, ControlError> {
    give_up_expired(store, now).await?;
    let rows = sqlx::query(
        "SELECT o.id AS id, o.kind AS kind, o.recipient AS recipient, o.attempts AS attempts, \
         b.master_key_id AS master_key_id, b.wrapped_key AS wrapped_key, b.ciphertext AS ciphertext \
         FROM mail_outbox o JOIN mail_bodies b ON b.id = o.id \
         WHERE o.sent_at IS NULL AND o.given_up_at IS NULL AND o.next_attempt_at <= $1 \
         AND (o.lease_until IS NULL OR o.lease_until <= $1) ORDER BY o.next_attempt_at, o.id LIMIT $2",
    )
    .bind(now.0)
    .bind(ROUND_MESSAGES)
    .fetch_all(store.pool())
    .await?;
    let mut due = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = r.try_get("id")?;
        let taken = sqlx::query(
            "UPDATE mail_outbox SET lease_until = $1 WHERE id = $2 AND sent_at IS NULL \
             AND given_up_at IS NULL AND (lease_until IS NULL OR lease_until <= $3)",
        )
        .bind(now.plus_secs(LEASE_SECS).0)
        .bind(&id)
        .bind(now.0)
        .execute(store.pool())
        .await?
        .rows_affected();
        if taken != 1 {
            continue;
        }
        let sealed = Sealed {
            key_id: r.try_get("master_key_id")?,
            wrapped_key: r.try_get("wrapped_key")?,
            ciphertext: r.try_get("ciphertext")?,
        };
        let content = crate::secrets::open_own(ring, &id, BODY_CONTEXT, &sealed)
            .map_err(|e| e.to_string())
            .and_then(|plain| {
                serde_json::from_slice::<Content>(&plain)
                    .map_err(|_| format!("message {id} does not read as a message"))
            });
        match content {
            Ok(c) => due.push(Due {
                to: r.try_get("recipient")?,
                kind: r.try_get("kind")?,
                attempts: r.try_get("attempts")?,
                subject: c.subject,
                body: Zeroizing::new(c.body),
                id,
            }),
            Err(reason) => {
                tracing::warn!(message = %id, %reason, "a queued email cannot be read; giving it up");
                finish(store, &id, Finish::GivenUp(&reason), now).await?;
            }
        }
    }
    Ok(due)
}

enum Finish<'a> {
    Sent,
    GivenUp(&'a str),
}

async fn finish(
    store: &Store,
    id: &str,
    how: Finish<'_>,
    now: Timestamp,
) -> Result<(), ControlError> {
    let mut tx = store.begin().await?;
    match how {
        Finish::Sent => {
            sqlx::query("UPDATE mail_outbox SET sent_at = $1, lease_until = NULL WHERE id = $2")
                .bind(now.0)
                .bind(id)
                .execute(tx.conn())
                .await?
        }
        Finish::GivenUp(reason) => sqlx::query(
            "UPDATE mail_outbox SET given_up_at = $1, lease_until = NULL, last_error = $2 WHERE id = $3",
        )
        .bind(now.0)
        .bind(bounded(reason))
        .bind(id)
        .execute(tx.conn())
        .await?,
    };
    sqlx::query("DELETE FROM mail_bodies WHERE id = $1")
        .bind(id)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(())
}

/// An SMTP server accepted the message: it is sent, and its body is deleted.
pub async fn sent(store: &Store, id: &str, now: Timestamp) -> Result<(), ControlError> {
    finish(store, id, Finish::Sent, now).await
}

/// Sending failed with `error` (a sentence without the body): the message is
/// retried after the back-off, or given up if that would pass its expiry.
pub async fn failed(
    store: &Store,
    due: &Due,
    error: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    let attempts = due.attempts + 1;
    let next = now.plus_secs(backoff_secs(attempts));
    let expires: Option<i64> =
        sqlx::query_scalar("SELECT expires_at FROM mail_outbox WHERE id = $1")
            .bind(&due.id)
            .fetch_optional(store.pool())
            .await?;
    if expires.is_some_and(|e| next.0 >= e) {
        sqlx::query("UPDATE mail_outbox SET attempts = $1 WHERE id = $2")
            .bind(attempts)
            .bind(&due.id)
            .execute(store.pool())
            .await?;
        return finish(
            store,
            &due.id,
            Finish::GivenUp(&format!(
                "expired before it could be sent; last error: {error}"
            )),
            now,
        )
        .await;
    }
    sqlx::query(
        "UPDATE mail_outbox SET attempts = $1, next_attempt_at = $2, lease_until = NULL, last_error = $3 WHERE id = $4",
    )
    .bind(attempts)
    .bind(next.0)
    .bind(bounded(error))
    .bind(&due.id)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Seconds before the next try after `attempts` failures, with up to a
/// tenth of jitter so many messages failing together do not retry together.
pub fn backoff_secs(attempts: i64) -> i64 {
    let base = BACKOFF_FIRST_SECS
        .saturating_mul(1i64 << attempts.clamp(1, 20).saturating_sub(1))
        .min(BACKOFF_MAX_SECS);
    base + rand::thread_rng().gen_range(0..=base / 10)
}

async fn give_up_expired(store: &Store, now: Timestamp) -> Result<(), ControlError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM mail_outbox WHERE sent_at IS NULL AND given_up_at IS NULL AND expires_at <= $1 \
         AND (lease_until IS NULL OR lease_until <= $1)",
    )
    .bind(now.0)
    .fetch_all(store.pool())
    .await?;
    for id in ids {
        tracing::warn!(message = %id, "a queued email expired before it could be sent");
        finish(
            store,
            &id,
            Finish::GivenUp("expired before it could be sent"),
            now,
        )
        .await?;
    }
    Ok(())
}

fn bounded(error: &str) -> String {
    let mut s: String = error.chars().filter(|c| !c.is_control()).collect();
    if s.chars().count() > MAX_ERROR_CHARS {
        s = s.chars().take(MAX_ERROR_CHARS).collect();
    }
    s
}

/// One message as the outbox records it (no body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: String,
    pub kind: String,
    pub to: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub sent_at: Option<Timestamp>,
    pub given_up_at: Option<Timestamp>,
}

/// The outbox, newest first (for operators and tests).
pub async fn entries(store: &Store, limit: i64) -> Result<Vec<OutboxEntry>, ControlError> {
    let rows = sqlx::query(
        "SELECT id, kind, recipient, attempts, last_error, sent_at, given_up_at FROM mail_outbox \
         ORDER BY created_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(OutboxEntry {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                to: r.try_get("recipient")?,
                attempts: r.try_get("attempts")?,
                last_error: r.try_get("last_error")?,
                sent_at: r.try_get::<Option<i64>, _>("sent_at")?.map(Timestamp),
                given_up_at: r.try_get::<Option<i64>, _>("given_up_at")?.map(Timestamp),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_to_its_ceiling() {
        for (attempts, base) in [(1, 2), (2, 4), (3, 8), (8, 256), (9, 300), (60, 300)] {
            let s = backoff_secs(attempts);
            assert!((base..=base + base / 10).contains(&s), "{attempts}: {s}");
        }
    }
}
