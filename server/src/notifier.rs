//! The notifier: announces each organisation's security-relevant events to
//! its notification channels. What is announced, and how far each channel
//! got, is kept by `control::notifications`.
//!
//! Every interval it takes the channels owed an event whose retry time has
//! come, and serves them concurrently, one round each (up to
//! `ROUND_EVENTS` events, oldest first):
//!
//! - **email**: one message per event, queued in the mail outbox in the
//!   transaction that moves the channel's cursor; the mailer sends it, with
//!   its own retries. Without SMTP configured the round fails and says so.
//! - **slack**: one `POST {"text": ...}` per event to the channel's sealed
//!   URL; each 2xx answer moves the cursor past that event.
//! - **webhook**: one `POST` with the round's events, signed as audit
//!   forwarding's webhooks are: `X-Pilothouse-Timestamp: <unix seconds>`
//!   and `X-Pilothouse-Signature: v1=<hex HMAC-SHA256(key,
//!   "<timestamp>.<body>")>`.
//!
//! Redirects are not followed. The cursor moves only after delivery, so a
//! receiver that is down is told everything, in order, once it is back: at
//! least once. Errors are recorded with the channel without URLs or secrets.

use std::sync::Arc;
use std::time::Duration;

use control::audit_export::ExportedEvent;
use control::notifications::{self, ChannelKind, Due};
use control::secrets::Keyring;
use control::store::Store;
use control::{ControlError, Timestamp};
use secrecy::ExposeSecret;

use crate::forwarder::{describe, every, post_signed, TIMEOUT};

/// How often the notifier looks for events to announce.
pub const NOTIFY_INTERVAL: Duration = Duration::from_secs(1);

/// Sends what channels are owed.
#[derive(Clone)]
pub struct Notifier {
    store: Store,
    ring: Arc<Keyring>,
    /// Whether the server sends email (`smtp_server` is set).
    mail: bool,
    timeout: Duration,
}

impl Notifier {
    pub fn new(store: Store, ring: Arc<Keyring>, mail: bool) -> Self {
        Self {
            store,
            ring,
            mail,
            timeout: TIMEOUT,
        }
    }

    /// Runs a round every `interval`, for ever.
    pub async fn run(self, interval: Duration) {
        every(interval, "notifications could not read their state", || {
            self.run_once(Timestamp::now())
        })
        .await
    }

    /// One round for every channel that is due at `now`; returns how many
    /// events were announced.
    pub async fn run_once(&self, now: Timestamp) -> Result<u64, ControlError> {
        let due = notifications::due(&self.store, now).await?;
        let rounds = due.into_iter().map(|d| async move {
            match self.deliver(&d, now).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(channel = %d.id, error = %e, "a notification could not be sent; will retry");
                    if let Err(e) = notifications::failed(&self.store, &d, &e, now).await {
                        tracing::warn!(channel = %d.id, error = %e, "could not record a notification failure");
                    }
                    0
                }
            }
        });
        Ok(futures_util::future::join_all(rounds)
            .await
            .into_iter()
            .sum())
    }

    async fn deliver(&self, d: &Due, now: Timestamp) -> Result<u64, String> {
        let events = notifications::owed(&self.store, d)
            .await
            .map_err(|e| format!("could not read the audit log: {e}"))?;
        if events.is_empty() {
            return Ok(0);
        }
        match d.kind {
            ChannelKind::Email => {
                if !self.mail {
                    return Err(
                        "this server sends no email: set smtp_server and mail_from".to_string()
                    );
                }
                let moved = notifications::mail_events(&self.store, &self.ring, d, &events, now)
                    .await
                    .map_err(|e| format!("could not queue the email: {e}"))?;
                Ok(if moved { events.len() as u64 } else { 0 })
            }
            ChannelKind::Slack => self.slack_round(d, &events, now).await,
            ChannelKind::Webhook => self.webhook_round(d, &events, now).await,
        }
    }

    fn client(&self, d: &Due) -> Result<reqwest::Client, String> {
        let mut client = reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .user_agent("pilothouse-notifications");
        if let Some(pem) = d.ca_pem.as_deref() {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|_| "the channel's CA certificate does not parse".to_string())?;
            client = client
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca);
        }
        client
            .build()
            .map_err(|e| format!("cannot make an HTTPS client: {}", describe(e)))
    }

    async fn slack_round(
        &self,
        d: &Due,
        events: &[ExportedEvent<'static>],
        now: Timestamp,
    ) -> Result<u64, String> {
        let url = notifications::secret(&self.store, &self.ring, &d.id).await?;
        let client = self.client(d)?;
        let mut at = d.clone();
        let mut sent = 0u64;
        for e in events {
            let answer = client
                .post(url.expose_secret())
                .header("content-type", "application/json")
                .body(notifications::slack_body(&d.org_name, e))
                .send()
                .await
                .map_err(|e| format!("the Slack webhook request failed: {}", describe(e)))?;
            let status = answer.status();
            if !status.is_success() {
                return Err(format!("the Slack webhook answered HTTP {status}"));
            }
            if !notifications::delivered(&self.store, &at, e.seq, now)
                .await
                .map_err(|e| format!("could not record the delivery: {e}"))?
            {
                return Ok(sent);
            }
            at.delivered_seq = e.seq;
            sent += 1;
        }
        Ok(sent)
    }

    async fn webhook_round(
        &self,
        d: &Due,
        events: &[ExportedEvent<'static>],
        now: Timestamp,
    ) -> Result<u64, String> {
        let key = notifications::secret(&self.store, &self.ring, &d.id).await?;
        let client = self.client(d)?;
        let body = notifications::webhook_body(d, events);
        post_signed(&client, &d.address, key.expose_secret().as_bytes(), body).await?;
        let last = events.last().map_or(d.delivered_seq, |e| e.seq);
        let moved = notifications::delivered(&self.store, d, last, now)
            .await
            .map_err(|e| format!("could not record the delivery: {e}"))?;
        Ok(if moved { events.len() as u64 } else { 0 })
    }
}
