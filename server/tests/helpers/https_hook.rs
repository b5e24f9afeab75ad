//! A real HTTPS receiver for webhook tests: hyper over rustls on a loopback
//! port, with a certificate from a test CA. It records each `POST` (path and
//! JSON body); given an HMAC key, it checks `X-Pilothouse-Signature`
//! (`v1=<hex HMAC-SHA256(key, "<X-Pilothouse-Timestamp>.<body>")>`) itself,
//! with the `hmac` crate rather than the server's code, and answers 401 to a
//! request that does not verify. While `down` it answers 503.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};

/// One request taken.
#[derive(Clone, Debug)]
pub struct Taken {
    pub path: String,
    pub body: serde_json::Value,
}

pub struct Hook {
    /// `https://localhost:PORT`.
    pub base: String,
    /// Requests answered 2xx, in arrival order.
    pub taken: Arc<Mutex<Vec<Taken>>>,
    /// Requests whose signature did not verify (answered 401).
    pub forged: Arc<AtomicU32>,
    /// Requests answered 503 while down.
    pub refused: Arc<AtomicU32>,
    pub down: Arc<AtomicBool>,
}

impl Hook {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn taken(&self) -> Vec<Taken> {
        self.taken.lock().unwrap().clone()
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

/// Starts the receiver with `cert` and `key` (PEM); `hmac_key` turns the
/// signature check on.
pub async fn start(cert: &str, key: &str, hmac_key: Option<&'static str>) -> Hook {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode, Uri};
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let taken = Arc::new(Mutex::new(Vec::new()));
    let forged = Arc::new(AtomicU32::new(0));
    let refused = Arc::new(AtomicU32::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let (t, f, r, d) = (taken.clone(), forged.clone(), refused.clone(), down.clone());
    let app = axum::Router::new().fallback(axum::routing::post(
        move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let (t, f, r, d) = (t.clone(), f.clone(), r.clone(), d.clone());
            async move {
                if d.load(Ordering::SeqCst) {
                    r.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                if let Some(key) = hmac_key {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    let sig = header("x-pilothouse-signature")
                        .strip_prefix("v1=")
                        .and_then(|v| hex::decode(v).ok())
                        .unwrap_or_default();
                    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
                    mac.update(format!("{}.", header("x-pilothouse-timestamp")).as_bytes());
                    mac.update(&body);
                    if mac.verify_slice(&sig).is_err() {
                        f.fetch_add(1, Ordering::SeqCst);
                        return StatusCode::UNAUTHORIZED;
                    }
                }
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                t.lock().unwrap().push(Taken {
                    path: uri.path().to_string(),
                    body,
                });
                StatusCode::NO_CONTENT
            }
        },
    ));
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    Hook {
        base: format!("https://localhost:{port}"),
        taken,
        forged,
        refused,
        down,
    }
}
