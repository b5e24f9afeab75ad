//! Forwarding the audit log to an organisation's SIEM.
//!
//! An organisation names destinations: syslog over TLS (RFC 5424 messages in
//! RFC 5425's octet-counted framing) or an HTTPS webhook whose requests carry
//! an HMAC-SHA256 signature. The server's forwarder (`server::forwarder`)
//! does the sending; this module keeps the state and builds the messages.
//!
//! The outbox is the log itself. Events are never deleted, and each
//! destination keeps the sequence number of the last event it has taken
//! (`delivered_seq`), so what it is owed survives restarts and is never
//! copied. The forwarder sends a destination what it is owed, oldest first,
//! and moves the cursor only after the receiver has taken it
//! ([`delivered`], conditional on the cursor it started from): delivery is
//! at least once and in order. A failure backs off ([`backoff_secs`]: 2 s,
//! doubling, at most 5 min) and is shown with the destination, with how far
//! behind it is ([`DestinationView`]). A new destination is owed the whole
//! history, from the first event.
//!
//! Signed checkpoints ([`crate::checkpoints`]) follow the events they cover:
//! once a destination has taken the events up to a checkpoint's count, it is
//! sent the checkpoint (cursor `delivered_checkpoint`). That is how a
//! customer keeps copies the control plane cannot take back.
//!
//! A webhook's HMAC key is write-only: sealed under the master key
//! ([`crate::secrets::seal_own`], table `audit_destination_secrets`),
//! re-wrapped by a master-key rotation, never shown or logged. Keys an earlier
//! version kept as files (`forwarding/<id>.secret` in the data directory) are
//! moved into the database at start ([`import_secret_files`]). Failures,
//! recoveries and
//! deliveries are not audit events (they would feed themselves); adding and
//! removing a destination are.

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sqlx::Row;

use crate::access::{Authorized, Capability};
use crate::audit::{self, AuditAction, Event};
use crate::audit_export::ExportedEvent;
use crate::crypto::random_token;
use crate::secrets::Keyring;
use crate::store::Store;
use crate::{ControlError, DestinationView, OrgId, Role, Timestamp};

/// Destinations per organisation.
pub const MAX_DESTINATIONS: i64 = 10;
/// Events one delivery round takes for one destination.
pub const ROUND_EVENTS: i64 = 2000;
/// Events in one webhook request.
pub const WEBHOOK_BATCH: usize = 500;
/// The first retry's delay; each failure doubles it, up to [`BACKOFF_MAX_SECS`].
pub const BACKOFF_FIRST_SECS: i64 = 2;
pub const BACKOFF_MAX_SECS: i64 = 300;
/// Bounds on what a destination is configured with.
const MAX_NAME_CHARS: usize = 64;
const MAX_ADDRESS_CHARS: usize = 2048;
const MAX_CA_BYTES: usize = 64 * 1024;
const MIN_SECRET_CHARS: usize = 16;
const MAX_SECRET_CHARS: usize = 512;
const MAX_ERROR_CHARS: usize = 300;

/// Who may add and remove destinations: Owners and Admins.
pub struct ManageForwarding;
impl Capability for ManageForwarding {
    const DESCRIPTION: &'static str = "manage audit forwarding";
    fn allows(role: Role) -> bool {
        role.manages_members()
    }
}

/// How a destination is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationKind {
    /// Syslog over TLS: `host:port`.
    Syslog,
    /// An HTTPS webhook: a URL, and an HMAC key.
    Webhook,
}

impl DestinationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Syslog => "syslog",
            DestinationKind::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ControlError> {
        match s {
            "syslog" => Ok(DestinationKind::Syslog),
            "webhook" => Ok(DestinationKind::Webhook),
            _ => Err(ControlError::invalid(
                "kind: choose syslog (TLS) or webhook (HTTPS).",
            )),
        }
    }
}

/// A destination as someone asks for it.
pub struct NewDestination {
    pub kind: DestinationKind,
    pub name: String,
    /// `host:port` for syslog, an `https://` URL for a webhook.
    pub address: String,
    /// A CA certificate (PEM) to trust instead of the public web roots.
    pub ca_pem: Option<String>,
    /// The webhook's HMAC key; syslog destinations take none.
    pub secret: Option<SecretString>,
}

/// The associated-data context a webhook's HMAC key is sealed under.
const SECRET_CONTEXT: &str = "audit destination secret";

/// A destination's HMAC key, opened. The error names the destination, never
/// the value.
pub async fn secret(store: &Store, ring: &Keyring, id: &str) -> Result<SecretString, String> {
    crate::secrets::open_text_row(
        store,
        ring,
        ("audit_destination_secrets", SECRET_CONTEXT),
        id,
        &format!("destination {id}"),
    )
    .await
}

/// Seals `secret` as destination `id`'s key, in `tx`.
async fn store_secret(
    tx: &mut crate::store::Tx,
    ring: &Keyring,
    id: &str,
    secret: &SecretString,
) -> Result<(), ControlError> {
    crate::secrets::seal_row(
        tx,
        ring,
        "audit_destination_secrets",
        id,
        SECRET_CONTEXT,
        secret.expose_secret().as_bytes(),
    )
    .await
}

/// Moves the HMAC keys an earlier version kept as files
/// (`forwarding/<id>.secret` in `data_dir`) into the database, sealed; each
/// file is removed once its key is stored (or was stored by an earlier
/// start: the same key). A file for a destination that no longer exists is
/// removed; one that differs from the stored key, or cannot be read, is left
/// where it is and logged. Returns how many keys were moved.
pub async fn import_secret_files(
    store: &Store,
    ring: &Keyring,
    data_dir: &Path,
) -> Result<usize, ControlError> {
    let dir = data_dir.join("forwarding");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut moved = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".secret"))
            .map(str::to_string)
        else {
            continue;
        };
        let secret = match crate::files::read_private(&path)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(text) => SecretString::from(text),
            None => {
                tracing::warn!(file = %path.display(), "a forwarding key file that cannot be read (or that others can read) was left in place");
                continue;
            }
        };
        let mut tx = store.begin().await?;
        let exists: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_destinations WHERE id = $1")
                .bind(&id)
                .fetch_one(tx.conn())
                .await?;
        let stored: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_destination_secrets WHERE id = $1")
                .bind(&id)
                .fetch_one(tx.conn())
                .await?;
        if exists == 1 && stored == 0 {
            store_secret(&mut tx, ring, &id, &secret).await?;
            moved += 1;
        }
        tx.commit().await?;
        if exists == 1 && stored == 1 {
            let same = self::secret(store, ring, &id)
                .await
                .is_ok_and(|s| s.expose_secret() == secret.expose_secret());
            if !same {
                tracing::warn!(file = %path.display(), "a forwarding key file differs from the key in the database, which is in use; the file was left in place");
                continue;
            }
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %e, "could not remove a forwarding key file whose key is in the database");
        }
    }
    if moved > 0 {
        tracing::info!(
            keys = moved,
            "moved forwarding keys from files into the database, sealed under the master key"
        );
    }
    Ok(moved)
}

/// A destination's or channel's name: trimmed, 1 to 64 characters, no
/// control characters.
pub(crate) fn check_name(name: &str) -> Result<String, ControlError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ControlError::invalid(format!(
            "name: 1 to {MAX_NAME_CHARS} characters."
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ControlError::invalid("name: no control characters."));
    }
    Ok(name.to_string())
}

/// Splits `host:port` (`[v6]:port` for IPv6): a syslog destination, the
/// SMTP server.
pub fn parse_host_port(address: &str) -> Result<(String, u16), ControlError> {
    let bad = || {
        ControlError::invalid(
            "address: write host:port, e.g. siem.example.com:6514 ([2001:db8::1]:6514 for IPv6).",
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6.to_string(),
        Some(_) => return Err(bad()),
        None => host.to_string(),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if port == 0 || !host_ok {
        return Err(bad());
    }
    Ok((host, port))
}

/// Checks a webhook URL: `https://`, a host, no credentials, no spaces.
pub fn check_webhook_url(url: &str) -> Result<(), ControlError> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        ControlError::invalid("address: a webhook URL starts with https:// (TLS only).")
    })?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(ControlError::invalid("address: the URL has no host."));
    }
    if authority.contains('@') {
        return Err(ControlError::invalid(
            "address: no credentials in the URL; the HMAC key goes in the secret field.",
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ControlError::invalid("address: no spaces in the URL."));
    }
    Ok(())
}

/// Checks a CA certificate: PEM with at least one certificate, and nothing
/// that does not parse.
pub fn check_ca_pem(pem: &str) -> Result<(), ControlError> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::CertificateDer;
    if pem.len() > MAX_CA_BYTES {
        return Err(ControlError::invalid("CA certificate: at most 64 KiB."));
    }
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(()),
        _ => Err(ControlError::invalid(
            "CA certificate: paste one or more PEM certificates (-----BEGIN CERTIFICATE-----).",
        )),
    }
}

/// Checks what someone asked for; returns the trimmed name.
fn check_new(new: &NewDestination) -> Result<String, ControlError> {
    let name = check_name(&new.name)?;
    let address = new.address.trim();
    if address.chars().count() > MAX_ADDRESS_CHARS {
        return Err(ControlError::invalid(format!(
            "address: at most {MAX_ADDRESS_CHARS} characters."
        )));
    }
    match new.kind {
        DestinationKind::Syslog => {
            parse_host_port(address)?;
            if new.secret.is_some() {
                return Err(ControlError::invalid(
                    "secret: syslog destinations take none (TLS authenticates the receiver).",
                ));
            }
        }
        DestinationKind::Webhook => {
            check_webhook_url(address)?;
            let chars = new
                .secret
                .as_ref()
                .map_or(0, |s| s.expose_secret().chars().count());
            if !(MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&chars) {
                return Err(ControlError::invalid(format!(
                    "secret: a webhook needs an HMAC key of {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters."
                )));
            }
        }
    }
    if let Some(pem) = &new.ca_pem {
        check_ca_pem(pem)?;
    }
    Ok(name)
}

/// Adds a destination; it is owed every event from the first. Its secret is
/// sealed under the master key in the same transaction.
pub async fn add(
    auth: &Authorized<'_, ManageForwarding>,
    ring: &Keyring,
    new: NewDestination,
    now: Timestamp,
) -> Result<String, ControlError> {
    let name = check_new(&new)?;
    let address = new.address.trim().to_string();
    let actor = auth.actor();
    let id = format!("fwd_{}", random_token(12));
    let mut tx = auth.store().begin().await?;
    tx.lock_org(actor.org()).await?;
    actor.recheck::<ManageForwarding>(&mut tx).await?;
    check_room(
        &mut tx,
        "audit_destinations",
        actor.org(),
        &name,
        (MAX_DESTINATIONS, "destinations"),
    )
    .await?;
    sqlx::query(
        "INSERT INTO audit_destinations (id, org_id, kind, name, address, ca_pem, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(actor.org().0)
    .bind(new.kind.as_str())
    .bind(&name)
    .bind(&address)
    .bind(new.ca_pem.as_deref())
    .bind(now.0)
    .execute(tx.conn())
    .await?;
    if let Some(secret) = &new.secret {
        store_secret(&mut tx, ring, &id, secret).await?;
    }
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::ForwardingAdded,
            format!("forwarding:{id}"),
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

/// Refuses a new row of `table` (an organisation's destinations or
/// channels, called `what`) past `max` per organisation, or with a name the
/// organisation uses already. Run in the adding transaction, under the
/// organisation's lock, so that concurrent adds cannot pass it together.
pub(crate) async fn check_room(
    tx: &mut crate::store::Tx,
    table: &'static str,
    org: OrgId,
    name: &str,
    (max, what): (i64, &str),
) -> Result<(), ControlError> {
    let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE org_id = $1"))
        .bind(org.0)
        .fetch_one(tx.conn())
        .await?;
    if count >= max {
        return Err(ControlError::conflict(format!(
            "An organisation has at most {max} {what}: remove one first."
        )));
    }
    let taken: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM {table} WHERE org_id = $1 AND name = $2"
    ))
    .bind(org.0)
    .bind(name)
    .fetch_one(tx.conn())
    .await?;
    if taken > 0 {
        return Err(ControlError::conflict(format!(
            "The name \"{name}\" is taken by another of the organisation's {what}."
        )));
    }
    Ok(())
}

/// Removes a destination: it is sent nothing more.
pub async fn remove(
    auth: &Authorized<'_, ManageForwarding>,
    id: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ManageForwarding>(&mut tx).await?;
    let row = sqlx::query(
        "SELECT name, delivered_seq FROM audit_destinations WHERE id = $1 AND org_id = $2",
    )
    .bind(id)
    .bind(actor.org().0)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| ControlError::not_found("No such destination."))?;
    let name: String = row.try_get("name")?;
    let delivered: i64 = row.try_get("delivered_seq")?;
    crate::secrets::delete_row(&mut tx, "audit_destination_secrets", id).await?;
    sqlx::query("DELETE FROM audit_destinations WHERE id = $1")
        .bind(id)
        .execute(tx.conn())
        .await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::ForwardingRemoved,
            format!("forwarding:{id}"),
            json!({ "name": name, "delivered_seq": delivered }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// An organisation's destinations with their delivery state (no secrets).
pub async fn list(store: &Store, org: OrgId) -> Result<Vec<DestinationView>, ControlError> {
    let head: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_events WHERE org_id = $1")
            .bind(org.0)
            .fetch_one(store.pool())
            .await?;
    let rows = sqlx::query(
        "SELECT d.id, d.kind, d.name, d.address, d.ca_pem, d.delivered_seq, \
                d.failures, d.next_attempt_at, d.last_error, d.last_success_at, d.created_at, \
                (SELECT e.at FROM audit_events e WHERE e.org_id = d.org_id AND e.seq = d.delivered_seq + 1) AS owed_since \
         FROM audit_destinations d WHERE d.org_id = $1 ORDER BY d.created_at, d.id",
    )
    .bind(org.0)
    .fetch_all(store.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let delivered: i64 = r.try_get("delivered_seq")?;
        let failures: i64 = r.try_get("failures")?;
        let next: i64 = r.try_get("next_attempt_at")?;
        let own_ca = r.try_get::<Option<String>, _>("ca_pem")?.is_some();
        out.push(DestinationView {
            id: r.try_get("id")?,
            kind: r.try_get("kind")?,
            name: r.try_get("name")?,
            address: r.try_get("address")?,
            own_ca,
            delivered_seq: delivered,
            head_seq: head,
            owed_since: r.try_get::<Option<i64>, _>("owed_since")?.map(Timestamp),
            failures,
            retry_at: (failures > 0).then_some(Timestamp(next)),
            last_error: r.try_get("last_error")?,
            last_success_at: r
                .try_get::<Option<i64>, _>("last_success_at")?
                .map(Timestamp),
            created_at: Timestamp(r.try_get("created_at")?),
        });
    }
    Ok(out)
}

/// A destination the forwarder should send to now.
#[derive(Clone, Debug)]
pub struct Due {
    pub id: String,
    pub org: OrgId,
    pub kind: DestinationKind,
    pub address: String,
    pub ca_pem: Option<String>,
    pub delivered_seq: i64,
    pub delivered_checkpoint: i64,
    pub failures: i64,
}

/// Destinations owed events or checkpoints whose retry time has come.
pub async fn due(store: &Store, now: Timestamp) -> Result<Vec<Due>, ControlError> {
    let rows = sqlx::query(
        "SELECT d.id, d.org_id, d.kind, d.address, d.ca_pem, d.delivered_seq, d.delivered_checkpoint, d.failures \
         FROM audit_destinations d \
         WHERE d.next_attempt_at <= $1 AND ( \
           EXISTS (SELECT 1 FROM audit_events e WHERE e.org_id = d.org_id AND e.seq = d.delivered_seq + 1) \
           OR EXISTS (SELECT 1 FROM audit_checkpoints c WHERE c.org_id = d.org_id \
                      AND c.count > d.delivered_checkpoint AND c.count <= d.delivered_seq)) \
         ORDER BY d.id",
    )
    .bind(now.0)
    .fetch_all(store.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let kind: String = r.try_get("kind")?;
        out.push(Due {
            id: r.try_get("id")?,
            org: OrgId(r.try_get("org_id")?),
            kind: DestinationKind::parse(&kind)?,
            address: r.try_get("address")?,
            ca_pem: r.try_get("ca_pem")?,
            delivered_seq: r.try_get("delivered_seq")?,
            delivered_checkpoint: r.try_get("delivered_checkpoint")?,
            failures: r.try_get("failures")?,
        });
    }
    Ok(out)
}

/// What a destination is owed, oldest first: up to `limit` events after its
/// cursor, then the checkpoints those events (and the ones it has) complete.
pub async fn owed(
    store: &Store,
    d: &Due,
    limit: i64,
) -> Result<(Vec<ExportedEvent<'static>>, Vec<channel::Checkpoint>), ControlError> {
    let events = crate::audit_export::events_after(store, d.org, d.delivered_seq, limit).await?;
    let upto = events.last().map_or(d.delivered_seq, |e| e.seq);
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT checkpoint FROM audit_checkpoints \
         WHERE org_id = $1 AND count > $2 AND count <= $3 ORDER BY count",
    )
    .bind(d.org.0)
    .bind(d.delivered_checkpoint)
    .bind(upto)
    .fetch_all(store.pool())
    .await?;
    let checkpoints = stored
        .iter()
        .map(|s| serde_json::from_str(s).map_err(ControlError::internal))
        .collect::<Result<_, _>>()?;
    Ok((events, checkpoints))
}

/// Records that the receiver took everything up to event `seq` and
/// checkpoint `checkpoint`. Conditional on the cursors `d` started from, so
/// a destination removed or re-sent meanwhile is not moved; returns whether
/// it moved.
pub async fn delivered(
    store: &Store,
    d: &Due,
    seq: i64,
    checkpoint: i64,
    now: Timestamp,
) -> Result<bool, ControlError> {
    let moved = sqlx::query(
        "UPDATE audit_destinations SET delivered_seq = $1, delivered_checkpoint = $2, failures = 0, \
                next_attempt_at = 0, last_error = NULL, last_success_at = $3 \
         WHERE id = $4 AND delivered_seq = $5 AND delivered_checkpoint = $6",
    )
    .bind(seq)
    .bind(checkpoint)
    .bind(now.0)
    .bind(&d.id)
    .bind(d.delivered_seq)
    .bind(d.delivered_checkpoint)
    .execute(store.pool())
    .await?
    .rows_affected();
    Ok(moved > 0)
}

/// The delay before retry number `failures` (1 for the first failure).
pub fn backoff_secs(failures: i64) -> i64 {
    let doublings = u32::try_from(failures.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    BACKOFF_FIRST_SECS
        .saturating_mul(1i64 << doublings)
        .min(BACKOFF_MAX_SECS)
}

/// Records a failed attempt: the error (bounded; it must never hold a
/// secret) and when to try again.
pub async fn failed(
    store: &Store,
    d: &Due,
    error: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    record_failure(store, "audit_destinations", &d.id, d.failures, error, now).await
}

/// Records failure number `before + 1` of row `id` of `table` (a table of
/// senders with `failures`, `next_attempt_at` and `last_error`): the error,
/// without control characters and bounded, and the back-off before the next
/// try.
pub(crate) async fn record_failure(
    store: &Store,
    table: &'static str,
    id: &str,
    before: i64,
    error: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    let failures = before.saturating_add(1);
    let error: String = error
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERROR_CHARS)
        .collect();
    sqlx::query(&format!(
        "UPDATE {table} SET failures = $1, next_attempt_at = $2, last_error = $3 WHERE id = $4"
    ))
    .bind(failures)
    .bind(now.plus_secs(backoff_secs(failures)).0)
    .bind(error)
    .bind(id)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// RFC 3339 UTC with milliseconds, as RFC 5424's TIMESTAMP wants it.
fn rfc3339_millis(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => "-".to_string(),
    }
}

/// RFC 5424's PRI for these messages: facility 13 (log audit), severity 6
/// (informational).
const SYSLOG_PRI: u8 = 13 * 8 + 6;

/// Appends one RFC 5424 message in RFC 5425 framing (`LEN SP MSG`): MSGID
/// is the event's action, MSG a UTF-8 BOM and the event's export line
/// (every field the chain hash covers, with `prev_hash` and `hash`), so a
/// SIEM can check the chain itself.
pub fn syslog_event(out: &mut Vec<u8>, hostname: &str, e: &ExportedEvent<'_>) {
    let json = serde_json::to_string(e).unwrap_or_default();
    syslog_frame(out, hostname, e.at, &e.action, &json);
}

/// Appends a signed checkpoint as an RFC 5424 message (MSGID `audit.checkpoint`).
pub fn syslog_checkpoint(out: &mut Vec<u8>, hostname: &str, c: &channel::Checkpoint) {
    let json = serde_json::to_string(c).unwrap_or_default();
    syslog_frame(out, hostname, c.at, "audit.checkpoint", &json);
}

fn syslog_frame(out: &mut Vec<u8>, hostname: &str, at: i64, msgid: &str, json: &str) {
    // RFC 5424 field rules: printable US-ASCII without spaces, bounded.
    let field = |s: &str, max: usize| -> String {
        let f: String = s
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(max)
            .collect();
        if f.is_empty() {
            "-".to_string()
        } else {
            f
        }
    };
    let msg = format!(
        "<{SYSLOG_PRI}>1 {} {} pilothouse - {} - \u{feff}{json}",
        rfc3339_millis(at),
        field(hostname, 255),
        field(msgid, 32),
    );
    out.extend_from_slice(format!("{} ", msg.len()).as_bytes());
    out.extend_from_slice(msg.as_bytes());
}

/// A webhook request's body: `{"org", "events", "checkpoints"}`.
pub fn webhook_body(
    org: OrgId,
    events: &[ExportedEvent<'_>],
    checkpoints: &[channel::Checkpoint],
) -> Result<Vec<u8>, ControlError> {
    serde_json::to_vec(&json!({ "org": org.0, "events": events, "checkpoints": checkpoints }))
        .map_err(ControlError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn addresses_are_checked() {
        assert_eq!(
            parse_host_port("siem.example.com:6514").unwrap(),
            ("siem.example.com".to_string(), 6514)
        );
        assert_eq!(
            parse_host_port("[2001:db8::1]:6514").unwrap(),
            ("2001:db8::1".to_string(), 6514)
        );
        for bad in [
            "siem",
            "siem:0",
            "siem:99999",
            ":6514",
            "a b:1",
            "[zz]:1",
            "x/y:1",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
        assert!(check_webhook_url("https://siem.example.com/hook?x=1").is_ok());
        for bad in [
            "http://siem.example.com/hook",
            "https://",
            "https://user:pw@siem.example.com/",
            "https://siem.example.com/a b",
        ] {
            assert!(check_webhook_url(bad).is_err(), "{bad}");
        }
        assert!(check_ca_pem("not a certificate").is_err());
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<i64> = (1..=10).map(backoff_secs).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff_secs(i64::MAX), BACKOFF_MAX_SECS);
    }

    #[test]
    fn a_syslog_message_is_framed_by_its_length_in_bytes() {
        let e = ExportedEvent {
            org: 1,
            seq: 7,
            at: 1_764_000_000_123,
            actor_user_id: Some(2),
            actor: Cow::Borrowed("ann@example.com"),
            ip: Cow::Borrowed("10.0.0.1"),
            user_agent: Cow::Borrowed("Mozilla/5.0 (X11)"),
            action: Cow::Borrowed("member.role_changed"),
            target: Cow::Borrowed("user:3"),
            details: Cow::Borrowed("{\"role\":\"admin\",\"note\":\"é\"}"),
            prev_hash: Cow::Borrowed("aa"),
            hash: Cow::Borrowed("bb"),
        };
        let mut out = Vec::new();
        syslog_event(&mut out, "control plane.example", &e);
        let text = String::from_utf8(out).unwrap();
        let (len, msg) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        assert!(msg.starts_with(
            "<110>1 2025-11-24T16:00:00.123Z controlplane.example pilothouse - member.role_changed - \u{feff}{"
        ));
        let json = msg.split_once('\u{feff}').unwrap().1;
        let back: ExportedEvent<'_> = serde_json::from_str(json).unwrap();
        assert_eq!(back, e);
    }
}
