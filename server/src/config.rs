//! Configuration: defaults, then a TOML file, then `PILOTHOUSE_*` environment
//! variables (`__` separates nested keys), then command-line flags. A secret
//! can also come from a file named by its `*_FILE` variable (for example
//! `PILOTHOUSE_DATABASE_URL_FILE`), so it never has to sit in the environment.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use control::checkpoints::CheckpointCadence;
use control::secrets::MasterKeySource;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Where the SQLite database and other local state live.
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; defaults to SQLite in `data_dir`.
    pub database_url: Option<SecretString>,
    /// Address of the dashboard's HTTP listener.
    pub listen: SocketAddr,
    /// The dashboard's public base URL (used in invitation links and to
    /// decide whether cookies are `Secure`). Defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// Reverse proxies whose `X-Forwarded-For` is believed. Empty: none.
    pub trusted_proxies: Vec<IpAddr>,
    /// Directory holding the built site (pkg/, favicon.ico). Found next to
    /// the binary when unset.
    pub site_root: Option<PathBuf>,
    /// Upper bound for request bodies, in bytes.
    pub max_body_bytes: usize,
    /// Address of the agent gateway's TLS listener.
    pub agent_listen: SocketAddr,
    /// DNS names and IP addresses the gateway's certificate is valid for
    /// (what agents put in `--server https://HOST:PORT`).
    pub agent_tls_names: Vec<String>,
    /// How long an agent's long-poll is held when nothing is queued.
    pub poll_timeout_secs: u64,
    /// Behind a TLS-terminating proxy: the request header in which the proxy
    /// forwards the agent's client certificate (URL-escaped PEM, as nginx's
    /// `$ssl_client_escaped_cert`). Off (unset) by default; only believed from
    /// `agent_trusted_proxies`, with the proxy's secret.
    pub agent_cert_header: Option<String>,
    /// Addresses of proxies allowed to set `agent_cert_header`.
    pub agent_trusted_proxies: Vec<IpAddr>,
    /// File holding the secret (at least 32 characters) the proxy sends in
    /// `agent_proxy_secret_header`. Required with `agent_cert_header`.
    pub agent_proxy_secret_file: Option<PathBuf>,
    /// The header carrying the proxy's secret.
    pub agent_proxy_secret_header: String,
    /// Most connections open at once on the web listener; more wait to be accepted.
    pub max_connections: usize,
    /// Most connections open at once on the agent gateway (one per agent
    /// holding a long-poll, plus a few).
    pub agent_max_connections: usize,
    /// Request headers must arrive within this many seconds; a keep-alive
    /// connection idle this long is closed. Both listeners.
    pub header_read_timeout_secs: u64,
    /// How often the AI Pilot's rules run, in seconds (at least 1).
    pub pilot_interval_secs: u64,
    /// Each organisation's audit chain is signed (a checkpoint) after this
    /// many new events, 1 to 1,000,000 (default 1000).
    pub audit_checkpoint_every_events: i64,
    /// ... and this many minutes after its last checkpoint when it has new
    /// events, 1 to 1440 (default 15).
    pub audit_checkpoint_every_minutes: i64,
    /// The master key of the secrets at rest (mode 0600, created on first
    /// start). Default: `master.key` in `data_dir`. Keep a copy of it apart
    /// from database backups: without it no secret can be read.
    pub master_key_file: Option<PathBuf>,
    /// The master key as a systemd credential instead: the name given to
    /// `LoadCredential=` in the unit, read at `$CREDENTIALS_DIRECTORY/NAME`
    /// and never written. `master_key_file` wins when both are set (that is
    /// how `rotate-master-key` is pointed at the credential's source file).
    pub master_key_credential: Option<String>,
    /// Signed agent releases the gateway serves to install scripts (what
    /// `pilothouse release sign` writes). Default: `releases` in `data_dir`.
    pub agent_releases_dir: Option<PathBuf>,
    /// The dashboard's certificate chain (PEM, leaf first) and private key
    /// (PEM): set both to serve the dashboard over TLS 1.3 (server/src/web_tls.rs),
    /// neither for plain HTTP behind a TLS proxy or on loopback.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// With TLS on: a plain-HTTP listener that only redirects to the HTTPS
    /// public URL (and answers the ACME CA's http-01 challenges).
    pub http_redirect_listen: Option<SocketAddr>,
    /// The dashboard's DNS names, one or a list: set to serve it over TLS 1.3
    /// with a certificate from an ACME CA (server/src/acme.rs), instead of
    /// `tls_cert_file`. Needs `http_redirect_listen`.
    #[serde(default, deserialize_with = "one_or_many")]
    pub acme_domains: Vec<String>,
    /// The ACME CA's directory URL. Default: Let's Encrypt.
    pub acme_directory: Option<String>,
    /// An email address the CA may write to about the certificate.
    pub acme_contact: Option<String>,
    /// A CA certificate (PEM) the ACME server's own HTTPS certificate must
    /// chain to, instead of the public roots (a private ACME server).
    pub acme_ca_file: Option<PathBuf>,
    /// Email (password reset links, new sign-in notices): the SMTP server,
    /// `host:port`. Unset: no email is sent and password reset by email is
    /// not offered.
    pub smtp_server: Option<String>,
    /// How the SMTP connection is secured: `starttls` (the default: the
    /// server must offer STARTTLS, or nothing is sent), `tls` (TLS from the
    /// first byte, usually port 465), or `none` (only to a relay on a
    /// loopback address).
    pub smtp_security: Option<String>,
    pub smtp_username: Option<String>,
    /// The SMTP password; `PILOTHOUSE_SMTP_PASSWORD_FILE` names a file
    /// holding it instead.
    pub smtp_password: Option<SecretString>,
    /// A CA certificate (PEM) the SMTP server's certificate may chain to,
    /// besides the public roots.
    pub smtp_ca_file: Option<PathBuf>,
    /// The From of every message, as `Name <address>` or an address;
    /// required with `smtp_server`.
    pub mail_from: Option<String>,
    /// Sign-in with an OpenID Connect provider (server/src/sso/oidc.rs): the
    /// client id it issued. Unset: no such sign-in is offered.
    pub oidc_client_id: Option<String>,
    /// The client secret; `PILOTHOUSE_OIDC_CLIENT_SECRET_FILE` names a file
    /// holding it instead.
    pub oidc_client_secret: Option<SecretString>,
    /// The provider's issuer URL (its discovery document is at
    /// `ISSUER/.well-known/openid-configuration`). Default: Google,
    /// `https://accounts.google.com`.
    pub oidc_issuer: Option<String>,
    /// How the sign-in page names the provider. Default: `Google`.
    pub oidc_label: Option<String>,
    /// Only accounts of this hosted domain (Google Workspace's `hd` claim)
    /// sign in.
    pub oidc_hosted_domain: Option<String>,
    /// A CA certificate (PEM) the provider's certificate may chain to,
    /// besides the public roots.
    pub oidc_ca_file: Option<PathBuf>,
    /// Sign-in with GitHub (server/src/sso/github.rs): the OAuth app's
    /// client id. Unset: no GitHub sign-in is offered.
    pub github_client_id: Option<String>,
    /// The OAuth app's client secret; `PILOTHOUSE_GITHUB_CLIENT_SECRET_FILE`
    /// names a file holding it instead.
    pub github_client_secret: Option<SecretString>,
    /// Where people sign in to GitHub. Default `https://github.com`; a
    /// GitHub Enterprise Server's URL for it.
    pub github_url: Option<String>,
    /// GitHub's REST API. Default `https://api.github.com`, or
    /// `<github_url>/api/v3` for an Enterprise Server.
    pub github_api_url: Option<String>,
    /// Only members of this GitHub organisation sign in with GitHub.
    pub github_org: Option<String>,
    /// A CA certificate (PEM) GitHub's certificate may chain to, besides the
    /// public roots (an Enterprise Server with a private CA).
    pub github_ca_file: Option<PathBuf>,
}

/// A list setting also given as one string (`PILOTHOUSE_ACME_DOMAINS=dash.example.com`).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

#[derive(Serialize)]
struct Defaults {
    data_dir: PathBuf,
    listen: SocketAddr,
    agent_listen: SocketAddr,
    agent_tls_names: Vec<String>,
    poll_timeout_secs: u64,
    agent_trusted_proxies: Vec<IpAddr>,
    agent_proxy_secret_header: String,
    trusted_proxies: Vec<IpAddr>,
    max_body_bytes: usize,
    max_connections: usize,
    agent_max_connections: usize,
    header_read_timeout_secs: u64,
    pilot_interval_secs: u64,
    audit_checkpoint_every_events: i64,
    audit_checkpoint_every_minutes: i64,
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overrides")
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "[redacted]"),
            )
            .field("listen", &self.listen)
            .field("agent_listen", &self.agent_listen)
            .finish()
    }
}

/// Values given on the command line; `None` leaves lower layers in force.
/// `Debug` leaves the database URL out (it may carry a password).
#[derive(Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_listen: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("cannot read {var} file {path}: {source}")]
    SecretFile {
        var: String,
        path: String,
        source: std::io::Error,
    },
    #[error("invalid configuration: {setting} is {value}, but it must be from {min} to {max}")]
    OutOfRange {
        setting: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
}

const SECRET_KEYS: &[&str] = &[
    "database_url",
    "smtp_password",
    "oidc_client_secret",
    "github_client_secret",
];

impl Config {
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        let defaults = Defaults {
            data_dir: PathBuf::from("./data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            agent_listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            agent_tls_names: vec!["127.0.0.1".into(), "localhost".into()],
            poll_timeout_secs: 25,
            agent_trusted_proxies: Vec::new(),
            agent_proxy_secret_header: "x-pilothouse-proxy-secret".into(),
            trusted_proxies: Vec::new(),
            max_body_bytes: 64 * 1024,
            max_connections: 1024,
            agent_max_connections: 16_384,
            header_read_timeout_secs: 30,
            pilot_interval_secs: control::operations::pilot::PILOT_INTERVAL_SECS,
            audit_checkpoint_every_events: CheckpointCadence::default().every_events,
            audit_checkpoint_every_minutes: CheckpointCadence::default().every_secs / 60,
        };
        let mut figment = Figment::from(Serialized::defaults(defaults));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        // DATABASE_URL is the conventional name; the prefixed one wins.
        if let Ok(url) = std::env::var("DATABASE_URL") {
            figment = figment.merge(Serialized::default("database_url", url));
        }
        figment = figment.merge(
            Env::prefixed("PILOTHOUSE_")
                .split("__")
                .ignore(&["config"])
                // `PILOTHOUSE_DATABASE_URL_FILE` names the file of a secret
                // (read below), not a setting; `*_file` settings such as
                // `master_key_file` are settings like any other.
                .filter(|k| {
                    !SECRET_KEYS
                        .iter()
                        .any(|s| k.as_str().eq_ignore_ascii_case(&format!("{s}_file")))
                }),
        );
        for key in SECRET_KEYS {
            let var = format!("PILOTHOUSE_{}_FILE", key.to_ascii_uppercase());
            if let Ok(path) = std::env::var(&var) {
                let value =
                    std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile {
                        var: var.clone(),
                        path: path.clone(),
                        source,
                    })?;
                figment = figment.merge(Serialized::default(key, value.trim().to_string()));
            }
        }
        figment = figment.merge(Serialized::defaults(overrides));
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        config.check_ranges()?;
        Ok(config)
    }

    /// Refuses settings outside their range, naming the setting.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        let ranges: [(&'static str, i64, i64, i64); 2] = [
            (
                "audit_checkpoint_every_events",
                self.audit_checkpoint_every_events,
                1,
                1_000_000,
            ),
            (
                "audit_checkpoint_every_minutes",
                self.audit_checkpoint_every_minutes,
                1,
                24 * 60,
            ),
        ];
        for (setting, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::OutOfRange {
                    setting,
                    value,
                    min,
                    max,
                });
            }
        }
        Ok(())
    }

    /// How often the audit chains are signed.
    pub fn checkpoint_cadence(&self) -> CheckpointCadence {
        CheckpointCadence {
            every_events: self.audit_checkpoint_every_events,
            every_secs: self.audit_checkpoint_every_minutes * 60,
        }
    }

    /// How often the AI Pilot's rules run.
    pub fn pilot_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.pilot_interval_secs.max(1))
    }

    /// Where the master key of the secrets at rest comes from:
    /// `master_key_file`, else the systemd credential `master_key_credential`,
    /// else `master.key` in the data directory. A credential without
    /// `$CREDENTIALS_DIRECTORY`, or whose name is not a plain file name, is
    /// refused with a sentence.
    pub fn master_key(&self) -> Result<MasterKeySource, String> {
        if let Some(path) = &self.master_key_file {
            return Ok(MasterKeySource::File(path.clone()));
        }
        let Some(name) = self.master_key_credential.as_deref() else {
            return Ok(MasterKeySource::File(self.data_dir.join("master.key")));
        };
        if name.is_empty()
            || name.contains('/')
            || name == "."
            || name == ".."
            || name.chars().any(char::is_control)
        {
            return Err(format!(
                "master_key_credential must be the credential's name as LoadCredential= gives it (no `/`), not {name:?}"
            ));
        }
        match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) if !dir.is_empty() => Ok(MasterKeySource::Credential {
                name: name.to_string(),
                path: PathBuf::from(dir).join(name),
            }),
            _ => Err(format!(
                "master_key_credential is {name:?}, but CREDENTIALS_DIRECTORY is not set: run the server from a systemd unit with LoadCredential={name}:/path/to/key, or use master_key_file"
            )),
        }
    }

    /// Where the signed agent releases are.
    pub fn agent_releases_dir(&self) -> PathBuf {
        self.agent_releases_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("releases"))
    }

    /// The database URL to use (never logged).
    pub fn database_url(&self) -> SecretString {
        match &self.database_url {
            Some(url) if !url.expose_secret().is_empty() => url.clone(),
            _ => SecretString::from(control::store::Store::sqlite_url(&self.data_dir)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_the_database_url_out() {
        let o = Overrides {
            database_url: Some("postgres://app:hunter2@db/pilothouse".into()),
            ..Overrides::default()
        };
        let shown = format!("{o:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    #[test]
    fn flags_override_files_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pilothouse.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:4000\"\nmax_body_bytes = 1000\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), Overrides::default()).unwrap();
        assert_eq!(c.listen.port(), 4000);
        assert_eq!(c.max_body_bytes, 1000);
        let c = Config::load(
            Some(&file),
            Overrides {
                listen: Some("127.0.0.1:5000".parse().unwrap()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 5000);
    }

    #[test]
    fn the_pilot_interval_defaults_to_a_minute_and_can_be_shortened() {
        let c = Config::load(None, Overrides::default()).unwrap();
        // The test environment may set PILOTHOUSE_PILOT_INTERVAL_SECS (the
        // browser tests do); the default applies only without it.
        if std::env::var_os("PILOTHOUSE_PILOT_INTERVAL_SECS").is_none() {
            assert_eq!(c.pilot_interval(), std::time::Duration::from_secs(60));
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pilot.toml");
        std::fs::write(&file, "pilot_interval_secs = 0\n").unwrap();
        let c = Config::load(Some(&file), Overrides::default()).unwrap();
        assert_eq!(c.pilot_interval(), std::time::Duration::from_secs(1));
    }

    #[test]
    fn the_checkpoint_cadence_defaults_and_refuses_values_out_of_range() {
        let defaults = Config::load(None, Overrides::default()).unwrap();
        if std::env::var_os("PILOTHOUSE_AUDIT_CHECKPOINT_EVERY_EVENTS").is_none()
            && std::env::var_os("PILOTHOUSE_AUDIT_CHECKPOINT_EVERY_MINUTES").is_none()
        {
            assert_eq!(defaults.checkpoint_cadence(), CheckpointCadence::default());
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cadence.toml");
        std::fs::write(
            &file,
            "audit_checkpoint_every_events = 3\naudit_checkpoint_every_minutes = 2\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), Overrides::default()).unwrap();
        assert_eq!(
            c.checkpoint_cadence(),
            CheckpointCadence {
                every_events: 3,
                every_secs: 120
            }
        );
        for (text, setting) in [
            (
                "audit_checkpoint_every_events = 0",
                "audit_checkpoint_every_events",
            ),
            (
                "audit_checkpoint_every_events = 1000001",
                "audit_checkpoint_every_events",
            ),
            (
                "audit_checkpoint_every_minutes = 0",
                "audit_checkpoint_every_minutes",
            ),
            (
                "audit_checkpoint_every_minutes = -5",
                "audit_checkpoint_every_minutes",
            ),
            (
                "audit_checkpoint_every_minutes = 1441",
                "audit_checkpoint_every_minutes",
            ),
        ] {
            std::fs::write(&file, format!("{text}\n")).unwrap();
            let err = Config::load(Some(&file), Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(setting), "{text}: {err}");
            assert!(err.contains("must be from 1 to"), "{text}: {err}");
        }
        std::fs::write(&file, "audit_checkpoint_every_events = 0\n").unwrap();
        assert_eq!(
            Config::load(Some(&file), Overrides::default())
                .unwrap_err()
                .to_string(),
            "invalid configuration: audit_checkpoint_every_events is 0, but it must be from 1 to 1000000"
        );
    }

    #[test]
    fn bad_values_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "listen = \"not an address\"\n").unwrap();
        let err = Config::load(Some(&file), Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }
}
