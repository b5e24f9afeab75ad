//! The mailer: sends the outbox (`control::mail`) over SMTP with `lettre`.
//!
//! Every [`MAIL_INTERVAL`] it takes the messages whose time has come and
//! sends each as plain text (UTF-8), one SMTP session per message, within
//! [`TIMEOUT`]. An acceptance by the SMTP server marks the message sent; any
//! failure is recorded with it and retried (see `control::mail`).
//!
//! The connection is secured as configured ([`Security`]): with STARTTLS
//! required, a server that does not offer it gets nothing, not a plain-text
//! message. The server's certificate is checked against the public roots and
//! `smtp_ca_file`, for the configured host name. Errors are recorded and
//! logged without the message, which may carry a one-time link.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use control::mail::{self, Due};
use control::secrets::Keyring;
use control::store::Store;
use control::{ControlError, Timestamp};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::Config;

/// How often the mailer looks for messages to send.
pub const MAIL_INTERVAL: Duration = Duration::from_secs(2);
/// How long one SMTP session may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plain connection, then STARTTLS, which the server must offer.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption: only to a relay on a loopback address.
    None,
}

/// Why the email settings cannot be used; each names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MailConfigError(String);

/// The SMTP settings, checked.
#[derive(Clone)]
pub struct MailSettings {
    host: String,
    port: u16,
    security: Security,
    username: Option<String>,
    password: Option<secrecy::SecretString>,
    ca_pem: Option<Vec<u8>>,
    from: Mailbox,
    /// The name the mailer greets the SMTP server with (the dashboard's host).
    hello: String,
}

impl MailSettings {
    /// The email settings of `config`: `None` when `smtp_server` is unset.
    pub fn from_config(config: &Config, hello: &str) -> Result<Option<Self>, MailConfigError> {
        let Some(server) = config
            .smtp_server
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        else {
            return Ok(None);
        };
        let bad = |m: String| Err(MailConfigError(m));
        let Ok((host, port)) = control::forwarding::parse_host_port(server.trim()) else {
            return bad(format!(
                "smtp_server: `{server}` is not host:port (smtp.example.com:587, [2001:db8::1]:587 for IPv6)"
            ));
        };
        let security = match config.smtp_security.as_deref().unwrap_or("starttls") {
            "starttls" => Security::StartTls,
            "tls" => Security::Tls,
            "none" => Security::None,
            other => {
                return bad(format!(
                    "smtp_security: `{other}` is not one of starttls, tls, none"
                ))
            }
        };
        let loopback =
            host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if security == Security::None && !loopback {
            return bad(format!(
                "smtp_security = \"none\" sends email unencrypted, which is refused for {host}: only a relay on a loopback address may be reached without TLS"
            ));
        }
        let Some(from) = config.mail_from.as_deref() else {
            return bad("mail_from: required with smtp_server (the From of every message)".into());
        };
        let Ok(from) = from.parse::<Mailbox>() else {
            return bad(format!("mail_from: `{from}` is not an email address"));
        };
        let password = config.smtp_password.clone();
        if config.smtp_username.is_some() != password.is_some() {
            return bad("smtp_username and smtp_password: set both or neither".into());
        }
        let ca_pem = match &config.smtp_ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    MailConfigError(format!("smtp_ca_file {}: {e}", path.display()))
                })?;
                Certificate::from_pem(&pem).map_err(|_| {
                    MailConfigError(format!(
                        "smtp_ca_file {}: not a PEM certificate",
                        path.display()
                    ))
                })?;
                Some(pem)
            }
            None => None,
        };
        Ok(Some(Self {
            host,
            port,
            security,
            username: config.smtp_username.clone(),
            password,
            ca_pem,
            from,
            hello: hello.to_string(),
        }))
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .timeout(Some(TIMEOUT))
            .hello_name(ClientId::Domain(self.hello.clone()));
        if self.security != Security::None {
            let mut tls = TlsParameters::builder(self.host.clone());
            if let Some(pem) = &self.ca_pem {
                let ca = Certificate::from_pem(pem)
                    .map_err(|_| "smtp_ca_file is not a PEM certificate".to_string())?;
                tls = tls.add_root_certificate(ca);
            }
            let tls = tls
                .build_rustls()
                .map_err(|e| format!("cannot set up TLS for {}: {e}", self.host))?;
            builder = builder.tls(match self.security {
                Security::StartTls => Tls::Required(tls),
                _ => Tls::Wrapper(tls),
            });
        }
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(builder.build())
    }
}

/// Sends what the outbox holds.
#[derive(Clone)]
pub struct Mailer {
    store: Store,
    ring: Arc<Keyring>,
    settings: MailSettings,
}

impl Mailer {
    pub fn new(store: Store, ring: Arc<Keyring>, settings: MailSettings) -> Self {
        Self {
            store,
            ring,
            settings,
        }
    }

    /// Runs a round every `interval`, for ever.
    pub async fn run(self, interval: Duration) {
        crate::forwarder::every(interval, "the mailer could not read the outbox", || {
            self.run_once(Timestamp::now())
        })
        .await
    }

    /// Sends every message due at `now`; returns how many an SMTP server
    /// accepted.
    pub async fn run_once(&self, now: Timestamp) -> Result<usize, ControlError> {
        let due = mail::claim_due(&self.store, &self.ring, now).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let transport = match self.settings.transport() {
            Ok(t) => Some(t),
            Err(e) => {
                for d in &due {
                    self.record_failure(d, &e).await;
                }
                None
            }
        };
        let Some(transport) = transport else {
            return Ok(0);
        };
        let mut sent = 0;
        for d in &due {
            match self.send(&transport, d).await {
                Ok(()) => {
                    mail::sent(&self.store, &d.id, Timestamp::now()).await?;
                    tracing::info!(message = %d.id, kind = %d.kind, "email sent");
                    sent += 1;
                }
                Err(e) => self.record_failure(d, &e).await,
            }
        }
        Ok(sent)
    }

    async fn record_failure(&self, d: &Due, error: &str) {
        tracing::warn!(message = %d.id, kind = %d.kind, attempts = d.attempts + 1, %error, "email not sent; will retry");
        if let Err(e) = mail::failed(&self.store, d, error, Timestamp::now()).await {
            tracing::warn!(message = %d.id, error = %e, "could not record an email failure");
        }
    }

    async fn send(
        &self,
        transport: &AsyncSmtpTransport<Tokio1Executor>,
        d: &Due,
    ) -> Result<(), String> {
        let to =
            d.to.parse::<Mailbox>()
                .map_err(|_| format!("`{}` is not an email address", d.to))?;
        let domain = self.settings.from.email.domain().to_string();
        let message = Message::builder()
            .from(self.settings.from.clone())
            .to(to)
            .subject(d.subject.clone())
            .message_id(Some(format!("<{}@{domain}>", d.id)))
            .date_now()
            .header(ContentType::TEXT_PLAIN)
            .body(d.body.to_string())
            .map_err(|e| format!("the message could not be built: {e}"))?;
        tokio::time::timeout(TIMEOUT, transport.send(message))
            .await
            .map_err(|_| {
                format!(
                    "{}:{} did not answer within {TIMEOUT:?}",
                    self.settings.host, self.settings.port
                )
            })?
            .map_err(|e| describe(&self.settings, &e))?;
        Ok(())
    }
}

/// An SMTP error as a sentence with the server's address (lettre's own text
/// carries no message content).
fn describe(settings: &MailSettings, e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    format!("SMTP {}:{}: {text}", settings.host, settings.port)
}
