//! HTTPS for the dashboard from certificate files (`tls_cert_file`,
//! `tls_key_file`): TLS 1.3 only, X25519MLKEM768 preferred (the aws-lc-rs
//! provider's default order), HTTP/2 or HTTP/1.1.
//!
//! The files are read at start (a missing or unreadable file, or a key that
//! does not match the certificate, stops the start with a sentence naming
//! it) and read again when they change: a handshake at most
//! [`RELOAD_CHECK`] after the last look compares their modification times
//! and sizes, and loads them when either moved. A replacement that does not
//! load (half written, mismatched) is logged once and the certificate in use
//! stays until the files change again.
//!
//! With TLS on, `http_redirect_listen` (optional) serves plain HTTP that only
//! redirects to the public HTTPS URL ([`redirect_router`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// How long a handshake trusts the last look at the files.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// What identifies a version of the two files: modification time and size.
type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    };
    [one(cert), one(key)]
}

/// The dashboard's certificate and key from files, re-read when they change.
pub struct FileCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// When the files were last looked at, and what they were then.
    seen: Mutex<(Instant, Stamp)>,
}

impl std::fmt::Debug for FileCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl FileCert {
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, String> {
        let seen = stamp(cert_path, key_path);
        let first = read(cert_path, key_path, &provider)?;
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            current: RwLock::new(first),
            seen: Mutex::new((Instant::now(), seen)),
        })
    }

    /// The certificate to present, read again first if the files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.reload_if_changed();
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn reload_if_changed(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.0.elapsed() < RELOAD_CHECK {
            return;
        }
        let now = stamp(&self.cert_path, &self.key_path);
        seen.0 = Instant::now();
        if now == seen.1 {
            return;
        }
        // Logged once per change of the files; the next change (the second
        // file of a pair written one after the other) is tried again.
        seen.1 = now;
        match read(&self.cert_path, &self.key_path, &self.provider) {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
                tracing::info!(cert = %self.cert_path.display(), "dashboard TLS certificate reloaded");
            }
            Err(e) => tracing::error!(
                error = %e,
                "the new dashboard TLS certificate does not load; keeping the one in use"
            ),
        }
    }
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Reads a PEM chain and its PEM private key, and checks that they match.
fn read(
    cert_path: &Path,
    key_path: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let cert_pem = std::fs::read(cert_path)
        .map_err(|e| format!("cannot read tls_cert_file {}: {e}", cert_path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls_cert_file {}: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "tls_cert_file {} holds no PEM certificate",
            cert_path.display()
        ));
    }
    let key_pem = std::fs::read(key_path)
        .map_err(|e| format!("cannot read tls_key_file {}: {e}", key_path.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "tls_key_file {} holds no PEM private key: {e}",
            key_path.display()
        )
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        format!(
            "tls_key_file {} does not go with tls_cert_file {}: {e}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    Ok(Arc::new(certified))
}

/// The dashboard's TLS configuration: TLS 1.3 only, presenting what `cert`
/// resolves (certificate files, or an ACME certificate).
pub fn server_config(
    cert: Arc<dyn ResolvesServerCert>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Plain HTTP that only redirects (308) to the same path on `public_url`,
/// never to a host the request names.
pub fn redirect_router(public_url: String) -> Router {
    Router::new().fallback(move |req: Request| {
        let base = public_url.clone();
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            let location = format!("{base}{path}");
            match axum::http::HeaderValue::from_str(&location) {
                Ok(v) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, v)]).into_response(),
                Err(_) => (StatusCode::BAD_REQUEST, "Bad request path.").into_response(),
            }
        }
    })
}
