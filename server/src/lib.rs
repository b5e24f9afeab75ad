//! The `pilothouse` server: configuration, start-up, the HTTP router (UI,
//! server functions, health) and background jobs.
//!
//! [`Application::build`] opens the store (applying migrations), opens the
//! first-run setup gate and binds the listener; [`Application::run_until_stopped`]
//! serves until the process is told to stop. Tests build it on port 0.

pub mod acme;
pub mod audit_cli;
mod audit_http;
pub mod config;
pub mod forwarder;
pub mod gateway;
pub mod http;
pub mod install;
pub mod listen;
pub mod mailer;
pub mod notifier;
pub mod release_cli;
pub mod sso;
pub mod web_tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use app::context::AppState;
use app::{shell, App};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use control::accounts::SetupGate;
use control::sessions::DbSessionStore;
use control::store::Store;
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

pub use config::{Config, Overrides};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Store(#[from] control::StoreError),
    #[error("cannot read the database: {0}")]
    Control(#[from] control::ControlError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("agent gateway TLS: {0}")]
    Tls(String),
    #[error("control plane keys: {0}")]
    Keys(#[from] control::key_vault::VaultError),
    #[error("secrets: {0}")]
    Secrets(#[from] control::secrets::SecretError),
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("cannot read or write {path}: {source}")]
    Secret {
        path: String,
        source: std::io::Error,
    },
    #[error("agent install: {0}")]
    Install(String),
    #[error("email: {0}")]
    Mail(#[from] mailer::MailConfigError),
    #[error("dashboard TLS: {0}")]
    WebTls(String),
    #[error("sign-in with a provider: {0}")]
    Sso(#[from] sso::SsoConfigError),
}

/// How often the audit forwarder looks for events to send.
const FORWARD_INTERVAL: Duration = Duration::from_secs(1);

pub struct Application {
    listener: TcpListener,
    router: Router,
    store: Store,
    addr: SocketAddr,
    public_url: String,
    /// TLS for the dashboard, when `tls_cert_file` or `acme_domains` is set.
    web_tls: Option<Arc<rustls::ServerConfig>>,
    /// Gets and renews the dashboard's certificate, with `acme_domains`.
    acme: Option<acme::Acme>,
    /// Plain HTTP that redirects to HTTPS (`http_redirect_listen`).
    redirect_listener: Option<TcpListener>,
    agent_listener: TcpListener,
    agent_addr: SocketAddr,
    agent_tls: rustls::ServerConfig,
    agent_router: Router,
    ca_pin: String,
    web_limits: listen::Limits,
    agent_limits: listen::Limits,
    delivery: Arc<control::delivery::Delivery>,
    /// Signs the audit checkpoints.
    audit_key: Arc<control::checkpoints::AuditKey>,
    /// How often the audit checkpoints are signed.
    checkpoint_cadence: control::checkpoints::CheckpointCadence,
    pilot_interval: Duration,
    /// Sends the audit log to the organisations' SIEMs.
    forwarder: forwarder::Forwarder,
    /// Sends the email outbox, when SMTP is configured.
    mailer: Option<mailer::Mailer>,
    /// Announces events to the organisations' notification channels.
    notifier: notifier::Notifier,
}

#[derive(Clone)]
struct Health {
    store: Store,
}

impl Application {
    pub async fn build(config: Config) -> Result<Application, StartError> {
        control::files::private_dir(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store = Store::connect(config.database_url().expose_secret()).await?;
        tracing::info!(
            backend = store.backend().name(),
            "database ready, migrations applied"
        );
        control::password::warm_up();

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let (web_tls, acme) = web_tls_config(&config)?;
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| match (&acme, web_tls.is_some()) {
                // The certificate's first name, on the listener's port.
                (Some(acme), _) => match addr.port() {
                    443 => format!("https://{}", acme.domains()[0]),
                    port => format!("https://{}:{port}", acme.domains()[0]),
                },
                (None, true) => format!("https://{addr}"),
                (None, false) => format!("http://{addr}"),
            })
            .trim_end_matches('/')
            .to_string();
        if web_tls.is_some() && !public_url.starts_with("https://") {
            return Err(StartError::WebTls(format!(
                "public_url is {public_url}, but with tls_cert_file or acme_domains set the dashboard is served over HTTPS: make it https://"
            )));
        }
        let redirect_listener = match config.http_redirect_listen {
            None => None,
            Some(_) if web_tls.is_none() => return Err(StartError::WebTls(
                "http_redirect_listen redirects to HTTPS: it needs tls_cert_file and tls_key_file, or acme_domains"
                    .into(),
            )),
            Some(at) => Some(
                TcpListener::bind(at)
                    .await
                    .map_err(|source| StartError::Listen { addr: at, source })?,
            ),
        };

        // The master key of the secrets at rest: refused here, at start, when
        // the database's secrets are under a key this server does not hold.
        let master_key = config.master_key().map_err(StartError::MasterKey)?;
        let secrets_ring = master_key.open()?;
        control::secrets::adopt(&store, &secrets_ring).await?;
        // The control plane's own keys, sealed in the database under it.
        let control::key_vault::ControlKeys {
            ca,
            server: keys,
            audit: audit_key,
            agent_jwt: jwt_key,
        } = control::key_vault::load_all(
            &store,
            &secrets_ring,
            &config.data_dir,
            control::Timestamp::now(),
        )
        .await?;
        control::forwarding::import_secret_files(&store, &secrets_ring, &config.data_dir).await?;
        let ca = Arc::new(ca);
        let audit_key = Arc::new(audit_key);
        let secrets_ring = Arc::new(secrets_ring);
        let gateway_cert = Arc::new(
            gateway::GatewayCert::new(
                ca.clone(),
                &config.agent_tls_names,
                Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
                control::Timestamp::now,
            )
            .map_err(StartError::Tls)?,
        );
        let agent_tls = gateway::tls_config(&ca, gateway_cert).map_err(StartError::Tls)?;
        let agent_listener = TcpListener::bind(config.agent_listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.agent_listen,
                source,
            })?;
        let agent_addr = agent_listener
            .local_addr()
            .map_err(|source| StartError::Listen {
                addr: config.agent_listen,
                source,
            })?;
        let delivery = Arc::new(
            control::delivery::Delivery::new(store.clone(), Arc::new(keys))
                .with_secrets(secrets_ring.clone()),
        );
        let delivery_handle = delivery.clone();
        let agent_router = gateway::routes(gateway::GatewayState {
            store: store.clone(),
            ca: ca.clone(),
            delivery: delivery.clone(),
            jwt_key: jwt_key.as_slice().into(),
            enrol_throttle: Arc::new(control::throttle::MemoryThrottle::new(
                control::agents::ENROL_FAILURES_PER_CLIENT,
                control::agents::ENROL_WINDOW_SECS,
            )),
            proxy: proxy_trust(&config, &ca)?.map(Arc::new),
            poll_timeout: Duration::from_secs(config.poll_timeout_secs.clamp(1, 300)),
            releases: config.agent_releases_dir(),
        })
        .layer(DefaultBodyLimit::max(gateway::MAX_BODY_BYTES))
        .layer(RequestBodyLimitLayer::new(gateway::MAX_BODY_BYTES));
        let agent_host = config
            .agent_tls_names
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".into());
        let agent_url = format!("https://{agent_host}:{}", agent_addr.port());
        let install =
            install::InstallState::new(config.agent_releases_dir(), ca.cert_pem(), &agent_url)
                .map_err(StartError::Install)?;
        install.log_releases().await;
        let agent_router = agent_router.merge(install::routes(install));

        let (gate, code) = SetupGate::open(&store).await?;
        if let Some(code) = code {
            // The operator reads the code here; it is good for this process only.
            tracing::warn!(
                "no account exists yet: open {public_url}/setup and enter the one-time setup code: {}",
                code.expose_secret()
            );
            eprintln!("setup code: {}", code.expose_secret());
        }

        let mail = mailer::MailSettings::from_config(&config, &host_of(&public_url))?;
        let mailer =
            mail.map(|settings| mailer::Mailer::new(store.clone(), secrets_ring.clone(), settings));
        let notifier =
            notifier::Notifier::new(store.clone(), secrets_ring.clone(), mailer.is_some());
        if mailer.is_none() {
            tracing::info!("no smtp_server set: no email is sent, password reset by email is off");
        }
        let oidc = match sso::OidcSettings::from_config(&config)? {
            Some(settings) => Some(Arc::new(sso::Oidc::new(settings, &public_url)?)),
            None => None,
        };
        let github = match sso::GitHubSettings::from_config(&config)? {
            Some(settings) => Some(Arc::new(sso::GitHub::new(settings, &public_url)?)),
            None => None,
        };
        let state = AppState {
            store: store.clone(),
            setup: Arc::new(gate),
            public_url: public_url.clone(),
            delivery,
            ca_pin: ca.pin(),
            agent_url,
            audit_key: app::api::AuditKeyView {
                public_key: audit_key.public_key(),
                key_id: audit_key.key_id().to_string(),
            },
            secrets: secrets_ring.clone(),
            agent_releases: config.agent_releases_dir(),
            mail_enabled: mailer.is_some(),
            sso: app::sso_page::SsoOffer {
                oidc: oidc.as_ref().map(|o| o.label().to_string()),
                github: github.as_ref().map(|g| g.label().to_string()),
            },
        };
        let forwarder =
            forwarder::Forwarder::new(store.clone(), secrets_ring.clone(), host_of(&public_url));
        let edge = http::EdgeConfig {
            trusted_proxies: Arc::new(config.trusted_proxies.clone()),
            public_origin: origin_of(&public_url),
            // TLS here or at a proxy in front (an https:// public URL).
            tls: web_tls.is_some() || public_url.starts_with("https://"),
        };
        let sso = sso::SsoState {
            app: state.clone(),
            oidc,
            github,
        };
        let router = router(&config, state, sso, edge, addr);
        Ok(Application {
            web_tls,
            acme,
            redirect_listener,
            listener,
            router,
            store,
            addr,
            public_url,
            agent_listener,
            agent_addr,
            agent_tls,
            agent_router,
            ca_pin: ca.pin(),
            web_limits: listen::Limits {
                max_connections: config.max_connections,
                header_read_timeout: Duration::from_secs(config.header_read_timeout_secs.max(1)),
            },
            delivery: delivery_handle,
            audit_key,
            checkpoint_cadence: config.checkpoint_cadence(),
            pilot_interval: config.pilot_interval(),
            forwarder,
            mailer,
            notifier,
            agent_limits: listen::Limits {
                max_connections: config.agent_max_connections,
                header_read_timeout: Duration::from_secs(config.header_read_timeout_secs.max(1)),
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The agent gateway's TLS address.
    pub fn agent_addr(&self) -> SocketAddr {
        self.agent_addr
    }

    /// SHA-256 pin of the agent CA certificate.
    pub fn ca_pin(&self) -> &str {
        &self.ca_pin
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until SIGINT/SIGTERM, then finishes in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let sessions = DbSessionStore::new(self.store.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tick.tick().await;
                if let Err(e) = sessions.delete_expired(control::Timestamp::now()).await {
                    tracing::warn!(error = %e, "could not delete expired sessions");
                }
            }
        });
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tick.tick().await;
                match control::agents::deletion::purge_due(&store, control::Timestamp::now()).await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(servers = n, "purged servers whose grace period ended"),
                    Err(e) => tracing::warn!(error = %e, "could not purge deleted servers"),
                }
            }
        });
        let (store, key) = (self.store.clone(), self.audit_key.clone());
        let cadence = self.checkpoint_cadence;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let now = control::Timestamp::now();
                if let Err(e) =
                    control::checkpoints::sign_due(&store, &key, cadence, false, now).await
                {
                    tracing::warn!(error = %e, "could not sign audit checkpoints");
                }
            }
        });
        tokio::spawn(self.forwarder.run(FORWARD_INTERVAL));
        tokio::spawn(self.notifier.run(notifier::NOTIFY_INTERVAL));
        if let Some(mailer) = self.mailer {
            tokio::spawn(mailer.run(mailer::MAIL_INTERVAL));
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(300));
            loop {
                tick.tick().await;
                if let Err(e) = control::metrics::maintain(&store, control::Timestamp::now()).await
                {
                    tracing::warn!(error = %e, "metrics rollup failed");
                }
            }
        });
        let delivery = self.delivery.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_secs(control::delivery::HEARTBEAT_FLUSH_SECS));
            loop {
                tick.tick().await;
                if let Err(e) = delivery.flush_heartbeats().await {
                    tracing::warn!(error = %e, "could not write agent heartbeats");
                }
            }
        });
        let delivery = self.delivery.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(
                control::delivery::OPERATIONS_SWEEP_SECS,
            ));
            loop {
                tick.tick().await;
                if let Err(e) = delivery.sweep_operations().await {
                    tracing::warn!(error = %e, "could not sweep operations");
                }
            }
        });
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.pilot_interval);
            loop {
                tick.tick().await;
                match control::operations::pilot::evaluate(&store, control::Timestamp::now()).await
                {
                    Ok(outcomes) => {
                        let proposed = outcomes
                            .iter()
                            .filter(|o| {
                                matches!(o, control::operations::pilot::Outcome::Proposed(_))
                            })
                            .count();
                        if proposed > 0 {
                            tracing::info!(proposed, "the AI Pilot proposed operations");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "the AI Pilot's rules failed"),
                }
            }
        });
        tokio::spawn(gateway::serve(
            self.agent_listener,
            self.agent_tls,
            self.agent_router,
            self.agent_limits,
        ));
        tracing::info!("agent gateway listening on https://{}", self.agent_addr);
        if let Some(redirects) = self.redirect_listener {
            if let Ok(at) = redirects.local_addr() {
                tracing::info!("redirecting http://{at} to {}", self.public_url);
            }
            let mut router = web_tls::redirect_router(self.public_url.clone());
            if let Some(acme) = &self.acme {
                router = acme.challenges().router().merge(router);
            }
            let accept = move |tcp: tokio::net::TcpStream, _addr: SocketAddr| {
                std::future::ready(Some((tcp, router.clone())))
            };
            tokio::spawn(listen::serve(
                redirects,
                self.web_limits,
                accept,
                shutdown_signal(),
            ));
        }
        if let Some(acme) = self.acme {
            tokio::spawn(acme.run());
        }
        let router = self.router;
        match self.web_tls {
            None => {
                tracing::info!("listening on http://{}", self.addr);
                let accept = move |tcp: tokio::net::TcpStream, addr: SocketAddr| {
                    let router = router
                        .clone()
                        .layer(axum::Extension(axum::extract::ConnectInfo(addr)));
                    std::future::ready(Some((tcp, router)))
                };
                listen::serve(self.listener, self.web_limits, accept, shutdown_signal()).await;
            }
            Some(tls) => {
                tracing::info!("listening on https://{} (TLS 1.3)", self.addr);
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                let accept = move |tcp: tokio::net::TcpStream, addr: SocketAddr| {
                    let (acceptor, router) = (acceptor.clone(), router.clone());
                    async move {
                        let handshake = acceptor.accept(tcp);
                        match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                            Ok(Ok(tls)) => Some((
                                tls,
                                router.layer(axum::Extension(axum::extract::ConnectInfo(addr))),
                            )),
                            Ok(Err(e)) => {
                                tracing::debug!(peer = %addr, error = %e, "dashboard TLS handshake refused");
                                None
                            }
                            Err(_) => None,
                        }
                    }
                };
                listen::serve(self.listener, self.web_limits, accept, shutdown_signal()).await;
            }
        }
        Ok(())
    }
}

/// The dashboard's TLS configuration, checked at start: from `tls_cert_file`
/// and `tls_key_file` (both or neither), or from an ACME CA for
/// `acme_domains` (with what obtains and renews that certificate).
#[allow(clippy::type_complexity)]
fn web_tls_config(
    config: &Config,
) -> Result<(Option<Arc<rustls::ServerConfig>>, Option<acme::Acme>), StartError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    if let Some(settings) = acme::AcmeSettings::from_config(config).map_err(StartError::WebTls)? {
        let acme = acme::Acme::new(settings, provider.clone()).map_err(StartError::WebTls)?;
        let tls = web_tls::server_config(acme.resolver(), provider).map_err(StartError::WebTls)?;
        return Ok((Some(Arc::new(tls)), Some(acme)));
    }
    match (&config.tls_cert_file, &config.tls_key_file) {
        (None, None) => Ok((None, None)),
        (Some(cert), Some(key)) => {
            let cert =
                web_tls::FileCert::load(cert, key, provider.clone()).map_err(StartError::WebTls)?;
            let tls =
                web_tls::server_config(Arc::new(cert), provider).map_err(StartError::WebTls)?;
            Ok((Some(Arc::new(tls)), None))
        }
        _ => Err(StartError::WebTls(
            "tls_cert_file and tls_key_file go together: set both, or neither".into(),
        )),
    }
}

/// The trusted-proxy settings, when `agent_cert_header` is set: the proxy's
/// secret is required, from a file others cannot read.
fn proxy_trust(
    config: &Config,
    ca: &control::ca::AgentCa,
) -> Result<Option<gateway::ProxyTrust>, StartError> {
    let Some(header) = config
        .agent_cert_header
        .as_deref()
        .filter(|h| !h.trim().is_empty())
    else {
        return Ok(None);
    };
    let Some(path) = &config.agent_proxy_secret_file else {
        return Err(StartError::Tls(
            "agent_cert_header is set but agent_proxy_secret_file is not: the gateway believes a forwarded certificate only from a proxy that proves itself with a shared secret".into(),
        ));
    };
    let err = |source| StartError::Secret {
        path: path.display().to_string(),
        source,
    };
    let secret =
        String::from_utf8_lossy(&control::files::read_private(path).map_err(err)?).into_owned();
    gateway::ProxyTrust::new(
        ca,
        header,
        &config.agent_proxy_secret_header,
        &secret,
        config.agent_trusted_proxies.clone(),
    )
    .map(Some)
    .map_err(StartError::Tls)
}

/// The host of a URL, without scheme, port or path (RFC 5424's HOSTNAME
/// for forwarded events).
fn host_of(url: &str) -> String {
    let authority = origin_of(url);
    let authority = authority
        .split_once("://")
        .map_or(authority.as_str(), |(_, a)| a);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host.to_string(),
        _ => authority.to_string(),
    }
}

fn origin_of(url: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[scheme_end..].find('/') {
        Some(i) => url[..scheme_end + i].to_string(),
        None => url.to_string(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// Where the built site (pkg/, favicon) is: configured, then `LEPTOS_SITE_ROOT`,
/// then `site/` next to the binary or one level up (the layout of `target/`),
/// then `target/site` under the working directory.
pub fn find_site_root(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    if let Ok(p) = std::env::var("LEPTOS_SITE_ROOT") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            for candidate in [dir.join("site"), dir.join("../site")] {
                if candidate.join("pkg").is_dir() {
                    return candidate;
                }
            }
        }
    }
    PathBuf::from("target/site")
}

fn router(
    config: &Config,
    state: AppState,
    sso: sso::SsoState,
    edge: http::EdgeConfig,
    addr: SocketAddr,
) -> Router {
    let site_root = find_site_root(config.site_root.as_deref());
    let options = LeptosOptions::builder()
        .output_name("pilothouse")
        .site_root(site_root.display().to_string())
        .site_pkg_dir("pkg")
        .site_addr(addr)
        .build();
    let routes = generate_route_list(App);
    let context = {
        let state = state.clone();
        move || provide_context(state.clone())
    };
    let sessions = SessionManagerLayer::new(DbSessionStore::new(state.store.clone()))
        .with_name("pilothouse_session")
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(edge.tls)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(time::Duration::seconds(
            control::sessions::IDLE_SECS,
        )));
    let health = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Health {
            store: state.store.clone(),
        });
    let ui: Router = Router::new()
        .leptos_routes_with_context(&options, routes, context.clone(), {
            let options = options.clone();
            move || shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler_with_context(
            context, shell,
        ))
        .with_state(options);
    let mut downloads = Router::new()
        .route("/audit/export", get(audit_http::export))
        .with_state(state.clone());
    if sso.oidc.is_some() || sso.github.is_some() {
        downloads = downloads.merge(sso::routes(sso));
    }
    ui.merge(downloads)
        .layer(axum::middleware::from_fn(http::server_fn_errors))
        .layer(sessions)
        .merge(health)
        .layer(axum::middleware::from_fn_with_state(
            edge.clone(),
            http::same_origin,
        ))
        .layer(axum::middleware::from_fn_with_state(edge, http::edge))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok")
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    match h.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}
