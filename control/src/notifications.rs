//! Notification channels: where an organisation's security-relevant events
//! are announced as they happen (an Owner added, SSO required, an agent
//! revoked, Production Protection turned off, ...): an email address, a
//! Slack-style incoming webhook, or a generic webhook whose requests carry
//! an HMAC-SHA256 signature. The server's notifier (`server::notifier`) does
//! the sending; this module keeps the state and writes the messages.
//!
//! - **What is announced**: the audit events whose action is in
//!   [`NOTIFIED`], nothing else. A message says what happened, in which
//!   organisation, who did it, when, and the event's details, which never
//!   hold a secret value, a session token or a command's payload (the audit
//!   log keeps none).
//! - **The outbox is the log.** A channel keeps the sequence number it has
//!   been told up to (`delivered_seq`), from the log's head when it was added
//!   (a new channel is not sent the past). The notifier sends a channel its
//!   next events in order and moves the cursor only after the receiver took
//!   them ([`delivered`], conditional on the cursor it started from): at
//!   least once, in order, never lost to an outage. A failure backs off
//!   ([`crate::forwarding::backoff_secs`]: 2 s, doubling, at most 5 min) and
//!   is shown with the channel.
//! - **Email** goes through the mail outbox ([`crate::mail`]): the message
//!   is queued in the same transaction that moves the cursor, and the
//!   mailer's own retries take it from there.
//! - **Secrets**: a Slack URL is itself a credential, and a webhook's HMAC
//!   key is one. Each is sealed under the master key
//!   ([`crate::secrets::seal_own`], table `notification_secrets`), re-wrapped
//!   by a master-key rotation, write-only: never shown or logged; a Slack
//!   channel shows only its URL's host.
//!
//! Adding and removing a channel are audited (and announced to the other
//! channels); sends, failures and recoveries are not (they would feed
//! themselves).

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sqlx::Row;
use zeroize::Zeroizing;

use crate::access::{Authorized, Capability};
use crate::audit::{self, AuditAction, Event};
use crate::audit_export::ExportedEvent;
use crate::crypto::random_token;
use crate::forwarding::{check_ca_pem, check_name, check_room, check_webhook_url, record_failure};
use crate::secrets::Keyring;
use crate::store::{Store, Tx};
use crate::{ControlError, NotificationChannelView, OrgId, Role, Timestamp};

/// Channels per organisation.
pub const MAX_CHANNELS: i64 = 10;
/// Events one round sends a channel (email: one message each).
pub const ROUND_EVENTS: i64 = 20;
const MAX_ADDRESS_CHARS: usize = 2048;
const MIN_KEY_CHARS: usize = 16;
const MAX_KEY_CHARS: usize = 512;
/// What a sealed channel secret is bound to besides the channel's id.
const SECRET_CONTEXT: &str = "notification channel secret";
/// How long an announcement by email may wait for an SMTP server.
const MAIL_TTL_SECS: i64 = 3 * 86_400;

/// The events announced to notification channels: changes to who holds
/// power in the organisation, to how people sign in, to the servers' trust
/// and protection, and to where the audit log and the announcements go.
pub const NOTIFIED: &[AuditAction] = &[
    AuditAction::MemberAdded,
    AuditAction::InviteAccepted,
    AuditAction::RoleChanged,
    AuditAction::MemberRemoved,
    AuditAction::MfaRequirementChanged,
    AuditAction::SsoRequirementChanged,
    AuditAction::JoinDomainAdded,
    AuditAction::JoinDomainRemoved,
    AuditAction::SignInDisowned,
    AuditAction::AgentRegistered,
    AuditAction::AgentRevoked,
    AuditAction::ServerProductionChanged,
    AuditAction::ServerFileAccessChanged,
    AuditAction::ServerDeletionScheduled,
    AuditAction::ServerPurged,
    AuditAction::PolicyChanged,
    AuditAction::SecretDeleted,
    AuditAction::MasterKeyRotated,
    AuditAction::ForwardingAdded,
    AuditAction::ForwardingRemoved,
    AuditAction::AuditExported,
    AuditAction::NotificationChannelAdded,
    AuditAction::NotificationChannelRemoved,
];

/// Who may add and remove channels: Owners and Admins.
pub struct ManageNotifications;
impl Capability for ManageNotifications {
    const DESCRIPTION: &'static str = "manage notification channels";
    fn allows(role: Role) -> bool {
        role.manages_members()
    }
}

/// How a channel is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// An email address, through the mail outbox.
    Email,
    /// A Slack-style incoming webhook: its URL is the secret.
    Slack,
    /// An HTTPS webhook with an HMAC key.
    Webhook,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Slack => "slack",
            ChannelKind::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ControlError> {
        match s.trim() {
            "email" => Ok(ChannelKind::Email),
            "slack" => Ok(ChannelKind::Slack),
            "webhook" => Ok(ChannelKind::Webhook),
            _ => Err(ControlError::invalid(
                "kind: choose email, slack or webhook.",
            )),
        }
    }
}

/// A channel as someone asks for it.
pub struct NewChannel {
    pub kind: ChannelKind,
    pub name: String,
    /// The email address, or the webhook's `https://` URL; a Slack channel
    /// takes its URL as `secret` and nothing here.
    pub address: String,
    /// A CA certificate (PEM) a webhook's server must chain to, instead of
    /// the public web roots.
    pub ca_pem: Option<String>,
    /// The Slack URL, or the webhook's HMAC key.
    pub secret: Option<SecretString>,
}

fn check_email(address: &str) -> Result<(), ControlError> {
    let ok = address.split_once('@').is_some_and(|(user, host)| {
        !user.is_empty()
            && host.contains('.')
            && !host.starts_with('.')
            && !host.ends_with('.')
            && !host.contains('@')
    }) && !address
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
        && address.len() <= 254;
    if ok {
        Ok(())
    } else {
        Err(ControlError::invalid(
            "address: an email address, such as security@example.com.",
        ))
    }
}

/// Checks what someone asked for: (name, address to store and show).
fn check_new(new: &NewChannel) -> Result<(String, String), ControlError> {
    let name = check_name(&new.name)?;
    let address = new.address.trim();
    if address.chars().count() > MAX_ADDRESS_CHARS {
        return Err(ControlError::invalid(format!(
            "address: at most {MAX_ADDRESS_CHARS} characters."
        )));
    }
    let secret = new
        .secret
        .as_ref()
        .map(|s| s.expose_secret().trim())
        .filter(|s| !s.is_empty());
    let shown = match new.kind {
        ChannelKind::Email => {
            check_email(address)?;
            if secret.is_some() {
                return Err(ControlError::invalid(
                    "secret: an email channel takes none.",
                ));
            }
            address.to_string()
        }
        ChannelKind::Slack => {
            let url = secret.ok_or_else(|| {
                ControlError::invalid(
                    "secret: paste the incoming webhook's URL (https://hooks.slack.com/services/...).",
                )
            })?;
            check_webhook_url(url).map_err(|e| {
                ControlError::invalid(e.to_string().replacen("address:", "secret:", 1))
            })?;
            if url.chars().count() > MAX_ADDRESS_CHARS {
                return Err(ControlError::invalid(format!(
                    "secret: at most {MAX_ADDRESS_CHARS} characters."
                )));
            }
            url_host(url)
        }
        ChannelKind::Webhook => {
            check_webhook_url(address)?;
            let chars = secret.map_or(0, |s| s.chars().count());
            if !(MIN_KEY_CHARS..=MAX_KEY_CHARS).contains(&chars) {
                return Err(ControlError::invalid(format!(
                    "secret: a webhook needs an HMAC key of {MIN_KEY_CHARS} to {MAX_KEY_CHARS} characters."
                )));
            }
            address.to_string()
        }
    };
    if let Some(pem) = &new.ca_pem {
        if new.kind == ChannelKind::Email {
            return Err(ControlError::invalid(
                "CA certificate: an email channel takes none (the SMTP settings do).",
            ));
        }
        check_ca_pem(pem)?;
    }
    Ok((name, shown))
}

/// `https://host[:port]/...` -> `host[:port]`.
fn url_host(url: &str) -> String {
    url.trim_start_matches("https://")
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Adds a channel; it is told the events from now on.
pub async fn add(
    auth: &Authorized<'_, ManageNotifications>,
    ring: &Keyring,
    new: NewChannel,
    now: Timestamp,
) -> Result<String, ControlError> {
    let (name, address) = check_new(&new)?;
    let actor = auth.actor();
    let org = actor.org();
    let id = format!("nch_{}", random_token(12));
    let mut tx = auth.store().begin().await?;
    tx.lock_org(org).await?;
    actor.recheck::<ManageNotifications>(&mut tx).await?;
    check_room(
        &mut tx,
        "notification_channels",
        org,
        &name,
        (MAX_CHANNELS, "notification channels"),
    )
    .await?;
    // Told from here on: its cursor is the log's head, and the event that
    // records its creation is announced to it too.
    let head: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_events WHERE org_id = $1")
            .bind(org.0)
            .fetch_one(tx.conn())
            .await?;
    sqlx::query(
        "INSERT INTO notification_channels (id, org_id, kind, name, address, ca_pem, delivered_seq, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(org.0)
    .bind(new.kind.as_str())
    .bind(&name)
    .bind(&address)
    .bind(new.ca_pem.as_deref())
    .bind(head)
    .bind(now.0)
    .execute(tx.conn())
    .await?;
    if let Some(secret) = new
        .secret
        .as_ref()
        .map(|s| s.expose_secret().trim())
        .filter(|s| !s.is_empty())
    {
        crate::secrets::seal_row(
            &mut tx,
            ring,
            "notification_secrets",
            &id,
            SECRET_CONTEXT,
            secret.as_bytes(),
        )
        .await?;
    }
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            org,
            AuditAction::NotificationChannelAdded,
            format!("notification:{id}"),
            json!({
                "name": name,
                "kind": new.kind.as_str(),
                "address": address,
                "own_ca": new.ca_pem.is_some(),
            }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Removes a channel and its sealed secret: it is told nothing more.
pub async fn remove(
    auth: &Authorized<'_, ManageNotifications>,
    id: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    tx.lock_org(actor.org()).await?;
    actor.recheck::<ManageNotifications>(&mut tx).await?;
    let row =
        sqlx::query("SELECT name, kind FROM notification_channels WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(actor.org().0)
            .fetch_optional(tx.conn())
            .await?
            .ok_or_else(|| ControlError::not_found("No such notification channel."))?;
    let (name, kind): (String, String) = (row.try_get("name")?, row.try_get("kind")?);
    crate::secrets::delete_row(&mut tx, "notification_secrets", id).await?;
    sqlx::query("DELETE FROM notification_channels WHERE id = $1")
        .bind(id)
        .execute(tx.conn())
        .await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::NotificationChannelRemoved,
            format!("notification:{id}"),
            json!({ "name": name, "kind": kind }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The SQL list of the announced actions: `'a', 'b', ...` (fixed strings).
fn notified_sql() -> String {
    NOTIFIED
        .iter()
        .map(|a| format!("'{}'", a.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An organisation's channels and how their delivery stands (no secrets).
pub async fn list(store: &Store, org: OrgId) -> Result<Vec<NotificationChannelView>, ControlError> {
    let sql = format!(
        "SELECT c.id, c.kind, c.name, c.address, c.ca_pem, c.failures, c.next_attempt_at, \
                c.last_error, c.last_success_at, c.created_at, \
                (SELECT COUNT(*) FROM audit_events e WHERE e.org_id = c.org_id \
                   AND e.seq > c.delivered_seq AND e.action IN ({})) AS pending \
         FROM notification_channels c WHERE c.org_id = $1 ORDER BY c.created_at, c.id",
        notified_sql()
    );
    let rows = sqlx::query(&sql)
        .bind(org.0)
        .fetch_all(store.pool())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let failures: i64 = r.try_get("failures")?;
        out.push(NotificationChannelView {
            id: r.try_get("id")?,
            kind: r.try_get("kind")?,
            name: r.try_get("name")?,
            address: r.try_get("address")?,
            own_ca: r.try_get::<Option<String>, _>("ca_pem")?.is_some(),
            pending: r.try_get("pending")?,
            failures,
            retry_at: (failures > 0).then_some(Timestamp(r.try_get("next_attempt_at")?)),
            last_error: r.try_get("last_error")?,
            last_success_at: r
                .try_get::<Option<i64>, _>("last_success_at")?
                .map(Timestamp),
            created_at: Timestamp(r.try_get("created_at")?),
        });
    }
    Ok(out)
}

/// A channel the notifier should send to now.
#[derive(Clone, Debug)]
pub struct Due {
    pub id: String,
    pub org: OrgId,
    pub org_name: String,
    pub kind: ChannelKind,
    pub address: String,
    pub ca_pem: Option<String>,
    pub delivered_seq: i64,
    pub failures: i64,
}

/// Channels owed an announced event whose retry time has come. First, a
/// channel owed none moves its cursor to its organisation's last event, so
/// that this look stays short however many unannounced events (sign-ins,
/// commands) the log gathers; an event committed meanwhile has a higher
/// number and is not passed over.
pub async fn due(store: &Store, now: Timestamp) -> Result<Vec<Due>, ControlError> {
    let head =
        "(SELECT MAX(e.seq) FROM audit_events e WHERE e.org_id = notification_channels.org_id)";
    sqlx::query(&format!(
        "UPDATE notification_channels SET delivered_seq = {head} \
         WHERE delivered_seq < {head} AND NOT EXISTS (SELECT 1 FROM audit_events e \
           WHERE e.org_id = notification_channels.org_id AND e.seq > notification_channels.delivered_seq \
           AND e.action IN ({}))",
        notified_sql()
    ))
    .execute(store.pool())
    .await?;
    let sql = format!(
        "SELECT c.id, c.org_id, o.name AS org_name, c.kind, c.address, c.ca_pem, c.delivered_seq, c.failures \
         FROM notification_channels c JOIN orgs o ON o.id = c.org_id \
         WHERE c.next_attempt_at <= $1 AND EXISTS (SELECT 1 FROM audit_events e \
           WHERE e.org_id = c.org_id AND e.seq > c.delivered_seq AND e.action IN ({})) \
         ORDER BY c.id",
        notified_sql()
    );
    let rows = sqlx::query(&sql)
        .bind(now.0)
        .fetch_all(store.pool())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let kind: String = r.try_get("kind")?;
        out.push(Due {
            id: r.try_get("id")?,
            org: OrgId(r.try_get("org_id")?),
            org_name: r.try_get("org_name")?,
            kind: ChannelKind::parse(&kind)?,
            address: r.try_get("address")?,
            ca_pem: r.try_get("ca_pem")?,
            delivered_seq: r.try_get("delivered_seq")?,
            failures: r.try_get("failures")?,
        });
    }
    Ok(out)
}

/// The next announced events a channel is owed, oldest first, at most
/// [`ROUND_EVENTS`].
pub async fn owed(store: &Store, d: &Due) -> Result<Vec<ExportedEvent<'static>>, ControlError> {
    let sql = format!(
        "SELECT seq FROM audit_events WHERE org_id = $1 AND seq > $2 AND action IN ({}) \
         ORDER BY seq LIMIT $3",
        notified_sql()
    );
    let seqs: Vec<i64> = sqlx::query_scalar(&sql)
        .bind(d.org.0)
        .bind(d.delivered_seq)
        .bind(ROUND_EVENTS)
        .fetch_all(store.pool())
        .await?;
    let mut out = Vec::with_capacity(seqs.len());
    for seq in seqs {
        if let Some(e) = crate::audit_export::events_after(store, d.org, seq - 1, 1)
            .await?
            .into_iter()
            .next()
        {
            out.push(e);
        }
    }
    Ok(out)
}

/// The channel's secret (the Slack URL, the webhook's HMAC key). The error
/// names the channel, never the value.
pub async fn secret(store: &Store, ring: &Keyring, id: &str) -> Result<SecretString, String> {
    crate::secrets::open_text_row(
        store,
        ring,
        ("notification_secrets", SECRET_CONTEXT),
        id,
        &format!("channel {id}"),
    )
    .await
}

/// Records that the receiver took everything up to event `seq`; conditional
/// on the cursor `d` started from. Returns whether it moved.
pub async fn delivered(
    store: &Store,
    d: &Due,
    seq: i64,
    now: Timestamp,
) -> Result<bool, ControlError> {
    let mut tx = store.begin().await?;
    let moved = move_cursor(&mut tx, d, seq, now).await?;
    tx.commit().await?;
    Ok(moved)
}

async fn move_cursor(tx: &mut Tx, d: &Due, seq: i64, now: Timestamp) -> Result<bool, ControlError> {
    let moved = sqlx::query(
        "UPDATE notification_channels SET delivered_seq = $1, failures = 0, next_attempt_at = 0, \
                last_error = NULL, last_success_at = $2 \
         WHERE id = $3 AND delivered_seq = $4",
    )
    .bind(seq)
    .bind(now.0)
    .bind(&d.id)
    .bind(d.delivered_seq)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(moved > 0)
}

/// Queues `events` as emails to an email channel and moves its cursor past
/// them, in one transaction (the mailer sends them, with its own retries).
pub async fn mail_events(
    store: &Store,
    ring: &Keyring,
    d: &Due,
    events: &[ExportedEvent<'_>],
    now: Timestamp,
) -> Result<bool, ControlError> {
    let Some(last) = events.last() else {
        return Ok(false);
    };
    let mut tx = store.begin().await?;
    for e in events {
        let mail = crate::mail::Mail {
            to: d.address.clone(),
            subject: format!("[Pilothouse] {}: {}", d.org_name, what(&e.action)),
            body: Zeroizing::new(format!(
                "{}\n\nThis is a notification channel of {} on Pilothouse; Owners and Admins manage them in Settings.\n",
                text(&d.org_name, e),
                d.org_name
            )),
        };
        crate::mail::enqueue(
            &mut tx,
            ring,
            crate::mail::MailKind::Notification,
            &mail,
            now.plus_secs(MAIL_TTL_SECS),
            now,
        )
        .await?;
    }
    if !move_cursor(&mut tx, d, last.seq, now).await? {
        // Removed or served by someone else meanwhile: queue nothing (the
        // transaction is dropped, not committed).
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// Records a failed attempt: the error (bounded; never a URL or secret) and
/// when to try again.
pub async fn failed(
    store: &Store,
    d: &Due,
    error: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    record_failure(
        store,
        "notification_channels",
        &d.id,
        d.failures,
        error,
        now,
    )
    .await
}

/// What happened, in a few words, from the event's action.
pub fn what(action: &str) -> &'static str {
    match action {
        "member.added" => "a member was added",
        "invite.accepted" => "an invitation was accepted",
        "member.role_changed" => "a member's role changed",
        "member.removed" => "a member was removed",
        "org.mfa_requirement_changed" => "the two-factor requirement changed",
        "org.sso_requirement_changed" => "the single sign-on requirement changed",
        "org.join_domain_added" => "an email domain may now join",
        "org.join_domain_removed" => "an email domain may no longer join",
        "user.sign_in_disowned" => "someone disowned a sign-in (\"this wasn't me\")",
        "agent.registered" => "a server was added",
        "agent.revoked" => "a server's agent was revoked",
        "server.production_changed" => "Production Protection changed",
        "server.file_access_changed" => "AI File Access changed",
        "server.deletion_scheduled" => "a server was scheduled for deletion",
        "server.purged" => "a server was deleted",
        "org.operations_policy_changed" => "the operations policy changed",
        "secret.deleted" => "a secret was deleted",
        "secrets.master_key_rotated" => "the master key was rotated",
        "audit.forwarding_added" => "an audit forwarding destination was added",
        "audit.forwarding_removed" => "an audit forwarding destination was removed",
        "audit.exported" => "the audit log was exported",
        "notification.channel_added" => "a notification channel was added",
        "notification.channel_removed" => "a notification channel was removed",
        _ => "an event was recorded",
    }
}

/// The announcement of one event, as one line of text: what happened, in
/// which organisation, who did it, when (UTC), its target and details.
pub fn text(org_name: &str, e: &ExportedEvent<'_>) -> String {
    let when = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.at) * 1_000_000)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_default();
    let mut line = format!(
        "{org_name}: {} ({}) by {} at {when}",
        what(&e.action),
        e.action,
        e.actor
    );
    if !e.ip.is_empty() {
        line.push_str(&format!(" from {}", e.ip));
    }
    if !e.target.is_empty() {
        line.push_str(&format!(". Target: {}", e.target));
    }
    let details: Value = serde_json::from_str(&e.details).unwrap_or(Value::Null);
    if let Value::Object(map) = details {
        let parts: Vec<String> = map
            .iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some(format!("{k}: {s}")),
                Value::Number(n) => Some(format!("{k}: {n}")),
                Value::Bool(b) => Some(format!("{k}: {b}")),
                _ => None,
            })
            .collect();
        if !parts.is_empty() {
            line.push_str(&format!(". {}", parts.join(", ")));
        }
    }
    line.push_str(&format!(". Audit event #{}.", e.seq));
    line
}

/// A Slack-style message: `{"text": ...}`.
pub fn slack_body(org_name: &str, e: &ExportedEvent<'_>) -> Vec<u8> {
    serde_json::to_vec(&json!({ "text": text(org_name, e) })).unwrap_or_default()
}

/// A generic webhook's body: the organisation, the events (as the audit
/// export writes them, with their hashes) and each one's text.
pub fn webhook_body(d: &Due, events: &[ExportedEvent<'_>]) -> Vec<u8> {
    let texts: Vec<String> = events.iter().map(|e| text(&d.org_name, e)).collect();
    serde_json::to_vec(&json!({
        "org": d.org.0,
        "org_name": d.org_name,
        "events": events,
        "texts": texts,
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn new(kind: ChannelKind, address: &str, secret: Option<&str>) -> NewChannel {
        NewChannel {
            kind,
            name: "ops".into(),
            address: address.into(),
            ca_pem: None,
            secret: secret.map(|s| SecretString::from(s.to_string())),
        }
    }

    #[test]
    fn channels_are_checked_and_a_slack_url_is_never_the_address() {
        let (_, shown) = check_new(&new(ChannelKind::Email, "sec@example.com", None)).unwrap();
        assert_eq!(shown, "sec@example.com");
        let (_, shown) = check_new(&new(
            ChannelKind::Slack,
            "",
            Some("https://hooks.slack.com/services/T0/B0/abcdefsecret"),
        ))
        .unwrap();
        assert_eq!(shown, "hooks.slack.com");
        let (_, shown) = check_new(&new(
            ChannelKind::Webhook,
            "https://hooks.example.com/pilothouse",
            Some("a-long-enough-hmac-key"),
        ))
        .unwrap();
        assert_eq!(shown, "https://hooks.example.com/pilothouse");
        for (bad, field) in [
            (new(ChannelKind::Email, "not an address", None), "address"),
            (new(ChannelKind::Email, "a@b", None), "address"),
            (
                new(ChannelKind::Email, "a@example.com", Some("x")),
                "secret",
            ),
            (new(ChannelKind::Slack, "", None), "secret"),
            (
                new(ChannelKind::Slack, "", Some("http://hooks.slack.com/x")),
                "secret",
            ),
            (
                new(ChannelKind::Webhook, "https://h.example/x", None),
                "secret",
            ),
            (
                new(ChannelKind::Webhook, "https://h.example/x", Some("short")),
                "secret",
            ),
            (
                new(
                    ChannelKind::Webhook,
                    "http://h.example/x",
                    Some("a-long-enough-hmac-key"),
                ),
                "address",
            ),
        ] {
            let err = check_new(&bad).unwrap_err().to_string();
            assert!(err.starts_with(field), "{field}: {err}");
        }
        let mut named = new(ChannelKind::Email, "a@example.com", None);
        named.name = " ".into();
        assert!(check_new(&named).is_err());
    }

    #[test]
    fn an_announcement_says_what_who_when_and_where() {
        let e = ExportedEvent {
            org: 1,
            seq: 42,
            at: 1_764_000_000_123,
            actor_user_id: Some(2),
            actor: Cow::Borrowed("ann@example.com"),
            ip: Cow::Borrowed("203.0.113.9"),
            user_agent: Cow::Borrowed("Mozilla/5.0"),
            action: Cow::Borrowed("member.role_changed"),
            target: Cow::Borrowed("user:3"),
            details: Cow::Borrowed(
                "{\"email\":\"bob@example.com\",\"role\":\"owner\",\"nested\":{\"x\":1}}",
            ),
            prev_hash: Cow::Borrowed("aa"),
            hash: Cow::Borrowed("bb"),
        };
        assert_eq!(
            text("Acme", &e),
            "Acme: a member's role changed (member.role_changed) by ann@example.com at 2025-11-24 16:00:00 UTC from 203.0.113.9. Target: user:3. email: bob@example.com, role: owner. Audit event #42."
        );
        let slack: Value = serde_json::from_slice(&slack_body("Acme", &e)).unwrap();
        assert!(slack["text"]
            .as_str()
            .unwrap()
            .starts_with("Acme: a member's role changed"));
    }

    #[test]
    fn every_announced_action_has_words() {
        for a in NOTIFIED {
            assert_ne!(what(a.as_str()), "an event was recorded", "{}", a.as_str());
        }
    }
}
