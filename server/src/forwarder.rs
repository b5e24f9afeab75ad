//! The audit forwarder: sends each organisation's audit events, and the
//! signed checkpoints over them, to its SIEM destinations. What is owed and
//! how far each destination got is kept by `control::forwarding`.
//!
//! Every interval it takes the destinations that are owed something and
//! whose retry time has come, and serves them concurrently, one round each
//! (up to `ROUND_EVENTS` events and the checkpoints they complete):
//!
//! - **syslog**: one TLS connection per round. The messages, then TLS
//!   close_notify and a half-close; the round counts as delivered only when
//!   the receiver closes its side in turn (so it has read everything),
//!   within the timeout.
//! - **webhook**: `POST` of up to `WEBHOOK_BATCH` events at a time, signed:
//!   `X-Pilothouse-Timestamp: <unix seconds>` and
//!   `X-Pilothouse-Signature: v1=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`.
//!   Each 2xx answer moves the cursor; redirects are not followed.
//!
//! The cursor moves only after delivery, so a receiver that is down gets
//! everything, in order, once it returns. A receiver that took a round whose
//! acknowledgement was lost gets it again: at least once (every event
//! carries its `seq` and `hash` to drop repeats by). Errors are recorded
//! with the destination without URLs or secrets.

use std::sync::Arc;
use std::time::Duration;

use control::audit_export::ExportedEvent;
use control::forwarding::{self, DestinationKind, Due, ROUND_EVENTS, WEBHOOK_BATCH};
use control::secrets::Keyring;
use control::store::Store;
use control::{ControlError, Timestamp};
use hmac::{Hmac, Mac};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use secrecy::ExposeSecret;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one connection, request or round may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// Sends what destinations are owed.
#[derive(Clone)]
pub struct Forwarder {
    store: Store,
    /// Opens the webhooks' HMAC keys.
    secrets: Arc<Keyring>,
    /// RFC 5424 HOSTNAME: the control plane's public host name.
    hostname: String,
    timeout: Duration,
}

impl Forwarder {
    pub fn new(store: Store, secrets: Arc<Keyring>, hostname: impl Into<String>) -> Self {
        Self {
            store,
            secrets,
            hostname: hostname.into(),
            timeout: TIMEOUT,
        }
    }

    /// A shorter limit per connection, request or round (tests).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs a round every `interval`, for ever.
    pub async fn run(self, interval: Duration) {
        every(
            interval,
            "audit forwarding could not read its state",
            || self.run_once(Timestamp::now()),
        )
        .await
    }

    /// One round for every destination that is due at `now` (also the time
    /// its success or failure is recorded at); returns how many events were
    /// delivered.
    pub async fn run_once(&self, now: Timestamp) -> Result<u64, ControlError> {
        let due = forwarding::due(&self.store, now).await?;
        let rounds = due.into_iter().map(|d| async move {
            match self.deliver(&d, now).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(destination = %d.id, error = %e, "audit forwarding failed; will retry");
                    if let Err(e) = forwarding::failed(&self.store, &d, &e, now).await
                    {
                        tracing::warn!(destination = %d.id, error = %e, "could not record a forwarding failure");
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
        let (events, checkpoints) = forwarding::owed(&self.store, d, ROUND_EVENTS)
            .await
            .map_err(|e| format!("could not read the audit log: {e}"))?;
        if events.is_empty() && checkpoints.is_empty() {
            return Ok(0);
        }
        match d.kind {
            DestinationKind::Syslog => self.syslog_round(d, &events, &checkpoints, now).await,
            DestinationKind::Webhook => self.webhook_round(d, &events, &checkpoints, now).await,
        }
    }

    async fn syslog_round(
        &self,
        d: &Due,
        events: &[ExportedEvent<'static>],
        checkpoints: &[channel::Checkpoint],
        now: Timestamp,
    ) -> Result<u64, String> {
        let (host, port) = forwarding::parse_host_port(&d.address).map_err(|e| e.to_string())?;
        let name = ServerName::try_from(host.clone())
            .map_err(|_| format!("{host} is not a host name or address"))?;
        let config = client_tls(d.ca_pem.as_deref())?;
        let mut frames = Vec::with_capacity(events.len() * 600);
        for e in events {
            forwarding::syslog_event(&mut frames, &self.hostname, e);
        }
        for c in checkpoints {
            forwarding::syslog_checkpoint(&mut frames, &self.hostname, c);
        }
        let send = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
            let mut tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host}:{port} failed: {e}"))?;
            tls.write_all(&frames)
                .await
                .map_err(|e| format!("sending to {host}:{port} failed: {e}"))?;
            tls.shutdown()
                .await
                .map_err(|e| format!("closing the connection to {host}:{port} failed: {e}"))?;
            // The receiver closes its side once it has read up to our close.
            let mut sink = [0u8; 1024];
            loop {
                match tls.read(&mut sink).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => {
                        return Err(format!("{host}:{port} did not confirm the messages: {e}"))
                    }
                }
            }
        };
        tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| format!("{host}:{port} did not answer within {:?}", self.timeout))??;
        let seq = events.last().map_or(d.delivered_seq, |e| e.seq);
        let checkpoint = checkpoints
            .last()
            .map_or(d.delivered_checkpoint, |c| c.count);
        forwarding::delivered(&self.store, d, seq, checkpoint, now)
            .await
            .map_err(|e| format!("could not record the delivery: {e}"))?;
        Ok(events.len() as u64)
    }

    async fn webhook_round(
        &self,
        d: &Due,
        events: &[ExportedEvent<'static>],
        checkpoints: &[channel::Checkpoint],
        now: Timestamp,
    ) -> Result<u64, String> {
        let key = forwarding::secret(&self.store, &self.secrets, &d.id).await?;
        let mut client = reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("pilothouse-audit-forwarder");
        if let Some(pem) = d.ca_pem.as_deref() {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|_| "the destination's CA certificate does not parse".to_string())?;
            client = client
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca);
        }
        let client = client
            .build()
            .map_err(|e| format!("cannot make an HTTPS client: {}", describe(e)))?;
        let mut at = d.clone();
        let mut sent = 0u64;
        let mut rest = checkpoints;
        let mut chunks: Vec<&[ExportedEvent<'static>]> = events.chunks(WEBHOOK_BATCH).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for chunk in chunks {
            let upto = chunk.last().map_or(at.delivered_seq, |e| e.seq);
            let split = rest.partition_point(|c| c.count <= upto);
            let (these, later) = rest.split_at(split);
            rest = later;
            let body = forwarding::webhook_body(d.org, chunk, these).map_err(|e| e.to_string())?;
            post_signed(&client, &d.address, key.expose_secret().as_bytes(), body).await?;
            let checkpoint = these.last().map_or(at.delivered_checkpoint, |c| c.count);
            let moved = forwarding::delivered(&self.store, &at, upto, checkpoint, now)
                .await
                .map_err(|e| format!("could not record the delivery: {e}"))?;
            if !moved {
                // Removed or served by someone else meanwhile: stop here.
                return Ok(sent);
            }
            sent += chunk.len() as u64;
            at.delivered_seq = upto;
            at.delivered_checkpoint = checkpoint;
        }
        Ok(sent)
    }
}

/// Runs `round` every `interval`, for ever, logging `failure` with the
/// error of a round that fails (the next one runs all the same). A round
/// that overruns delays the next rather than piling them up.
pub(crate) async fn every<T, F, Fut>(interval: Duration, failure: &'static str, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ControlError>>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = round().await {
            tracing::warn!(error = %e, "{failure}");
        }
    }
}

/// A request error with its causes (connection refused, TLS, timeout), and
/// without the URL (its query may hold a token).
pub(crate) fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// POSTs a JSON `body` to a webhook, signed with `key` (headers
/// `x-pilothouse-timestamp` and `x-pilothouse-signature: v1=<hex>`, see
/// [`sign`]); anything but a 2xx answer is an error. Shared by audit
/// forwarding and notification channels.
pub(crate) async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    key: &[u8],
    body: Vec<u8>,
) -> Result<(), String> {
    let t = Timestamp::now().0 / 1000;
    let signature = sign(key, t, &body);
    let answer = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-pilothouse-timestamp", t.to_string())
        .header("x-pilothouse-signature", format!("v1={signature}"))
        .body(body)
        .send()
        .await
        .map_err(|e| format!("the webhook request failed: {}", describe(e)))?;
    let status = answer.status();
    if !status.is_success() {
        return Err(format!("the webhook answered HTTP {status}"));
    }
    Ok(())
}

/// Hex HMAC-SHA256 of `"<t>.<body>"` under `key`: the webhook signature.
pub fn sign(key: &[u8], t: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        // HMAC takes keys of any length; this is unreachable.
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// TLS to a syslog receiver: its own CA when it has one, else the public
/// web roots.
fn client_tls(ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert
                    .map_err(|_| "the destination's CA certificate does not parse".to_string())?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the destination's CA certificate is unusable: {e}"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
