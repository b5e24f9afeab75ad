//! The gateway's TLS listener: TLS 1.3 only, X25519MLKEM768 preferred (the
//! aws-lc-rs provider's default order), client certificates from the agent CA
//! requested (required for everything but enrolment, which the routes
//! enforce). The gateway's own certificate is renewed while the process runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use control::ca::AgentCa;
use control::Timestamp;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::PeerInfo;

/// Renew the gateway's certificate when less than this is left of it.
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// The gateway's own certificate, issued by the agent CA and renewed while
/// the process runs: the first handshake that finds it within
/// [`RENEW_BEFORE_DAYS`] of its end issues a new one (once; the handshakes
/// after it use the new one). If issuing fails, the current certificate stays
/// in use and the failure is logged.
pub struct GatewayCert {
    ca: Arc<AgentCa>,
    names: Vec<String>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: std::sync::RwLock<(Arc<CertifiedKey>, Timestamp)>,
    clock: fn() -> Timestamp,
}

impl std::fmt::Debug for GatewayCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayCert")
            .field("names", &self.names)
            .field("not_after", &self.not_after())
            .finish_non_exhaustive()
    }
}

impl GatewayCert {
    pub fn new(
        ca: Arc<AgentCa>,
        names: &[String],
        provider: Arc<rustls::crypto::CryptoProvider>,
        clock: fn() -> Timestamp,
    ) -> Result<Self, String> {
        let first = issue(&ca, names, &provider, clock())?;
        Ok(Self {
            ca,
            names: names.to_vec(),
            provider,
            current: std::sync::RwLock::new(first),
            clock,
        })
    }

    /// When the certificate in use ends.
    pub fn not_after(&self) -> Timestamp {
        self.current.read().unwrap_or_else(|p| p.into_inner()).1
    }

    /// The certificate in use (leaf first, then the agent CA).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .cert
            .clone()
    }

    /// The certificate to present now, renewed first if it is due.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let now = (self.clock)();
        let due = |not_after: Timestamp| now.plus_secs(RENEW_BEFORE_DAYS * 86_400) >= not_after;
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if !due(current.1) {
                return current.0.clone();
            }
        }
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if due(current.1) {
            match issue(&self.ca, &self.names, &self.provider, now) {
                Ok(renewed) => {
                    tracing::info!(not_after = %renewed.1.display_utc(), "gateway certificate renewed");
                    *current = renewed;
                }
                Err(e) => tracing::error!(error = %e, "could not renew the gateway certificate"),
            }
        }
        current.0.clone()
    }
}

impl ResolvesServerCert for GatewayCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn issue(
    ca: &AgentCa,
    names: &[String],
    provider: &rustls::crypto::CryptoProvider,
    now: Timestamp,
) -> Result<(Arc<CertifiedKey>, Timestamp), String> {
    let (cert_pem, key_pem) = ca.issue_server(names, now).map_err(|e| e.to_string())?;
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| format!("gateway certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("gateway key: {e}"))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("gateway key: {e}"))?;
    let chain = vec![cert, CertificateDer::from(ca.cert_der().to_vec())];
    Ok((
        Arc::new(CertifiedKey::new(chain, signing)),
        now.plus_secs(control::ca::SERVER_CERT_DAYS * 86_400),
    ))
}

/// TLS 1.3 only, client certificates from the agent CA requested (required
/// for everything but enrolment, which the handlers enforce), the gateway's
/// certificate from `cert`, HTTP/2 offered before HTTP/1.1 (an agent then
/// multiplexes its long-poll, uploads and downloads on one connection).
pub fn tls_config(ca: &AgentCa, cert: Arc<GatewayCert>) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert_der().to_vec()))
        .map_err(|e| format!("agent CA certificate: {e}"))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts TLS connections and serves `router` on each, with the peer's
/// certificate fingerprint and TLS group attached to every request, under the
/// listener's connection limits. A TLS handshake must finish within 10 s.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    router: Router,
    limits: crate::listen::Limits,
) {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let accept = move |tcp: tokio::net::TcpStream, addr: SocketAddr| {
        let (acceptor, router) = (acceptor.clone(), router.clone());
        async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::info!(peer = %addr, error = %e, "agent TLS handshake refused");
                        return None;
                    }
                    Err(_) => return None,
                };
            let (_, conn) = tls.get_ref();
            let peer = PeerInfo {
                cert_fingerprint: conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| control::crypto::sha256_hex(c.as_ref())),
                tls_group: conn
                    .negotiated_key_exchange_group()
                    .map(|g| format!("{:?}", g.name()))
                    .unwrap_or_default(),
            };
            let router = router
                .layer(Extension(peer))
                .layer(Extension(ConnectInfo(addr)));
            Some((tls, router))
        }
    };
    // Held long-polls are not drained: agents reconnect to the next process.
    crate::listen::serve(listener, limits, accept, std::future::pending()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    static NOW: AtomicI64 = AtomicI64::new(1_800_000_000_000);

    fn clock() -> Timestamp {
        Timestamp(NOW.load(Ordering::SeqCst))
    }

    #[test]
    fn the_gateway_certificate_is_renewed_before_it_ends() {
        let ca = Arc::new(AgentCa::generate(clock()).unwrap());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cert = GatewayCert::new(ca, &["localhost".into()], provider, clock).unwrap();
        let first = cert.chain()[0].clone();
        let first_end = cert.not_after();
        // Two months in: still the same certificate.
        NOW.fetch_add(59 * 86_400_000, Ordering::SeqCst);
        assert_eq!(cert.current().cert[0], first);
        // Within 30 days of its end (day 61 of 90): a new one, valid 90 days from now.
        NOW.fetch_add(2 * 86_400_000, Ordering::SeqCst);
        assert_ne!(cert.current().cert[0], first);
        assert!(cert.not_after() > first_end);
        assert_eq!(
            cert.not_after(),
            clock().plus_secs(control::ca::SERVER_CERT_DAYS * 86_400)
        );
        let second = cert.chain()[0].clone();
        assert_eq!(cert.current().cert[0], second, "renewed once, then reused");
    }
}
