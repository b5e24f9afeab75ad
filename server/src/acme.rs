//! Certificates for the dashboard from an ACME certificate authority (RFC 8555:
//! Let's Encrypt by default, any ACME server through `acme_directory`), with
//! the `instant-acme` crate.
//!
//! - `acme_domains` turns it on, instead of `tls_cert_file`. The CA checks
//!   each name with the http-01 challenge, answered on `http_redirect_listen`
//!   (port 80 in production) at `/.well-known/acme-challenge/TOKEN`, the one
//!   path there that is not a redirect to HTTPS. A token is answered only
//!   while its order is being validated.
//! - The account's key, the certificate chain and its key are kept in
//!   `DATA_DIR/acme/` (files 0600 in a 0700 directory, each replaced whole).
//!   A restart serves the stored certificate and orders nothing while it is
//!   valid for the configured names.
//! - The certificate is renewed once two thirds of its lifetime have passed,
//!   or at once when the configured names change; it is looked at every
//!   [`CHECK_EVERY`]. A failed order is logged with the CA's reason and tried
//!   again after a minute, the wait doubling up to [`MAX_BACKOFF`].
//! - Until the first certificate arrives, TLS handshakes are refused: there is
//!   nothing to present.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

/// Let's Encrypt's production directory: the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// How often the certificate is looked at for renewal.
pub const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// The longest wait before an order that failed is tried again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long one order may take from its creation to its certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(180);
/// Each request to the CA.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The ACME settings, checked at start.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The DNS names the certificate is for, in the configured order.
    pub domains: Vec<String>,
    /// The CA's directory URL.
    pub directory: String,
    /// `mailto:` contact for the account, when configured.
    pub contact: Option<String>,
    /// A CA certificate (PEM) the ACME server's HTTPS certificate must chain
    /// to, instead of the public roots.
    pub ca_pem: Option<Vec<u8>>,
    /// `DATA_DIR/acme`.
    pub state_dir: PathBuf,
}

impl AcmeSettings {
    /// Checks the `acme_*` settings; `None` when `acme_domains` is empty.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<AcmeSettings>, String> {
        if config.acme_domains.is_empty() {
            for (set, name) in [
                (config.acme_directory.is_some(), "acme_directory"),
                (config.acme_contact.is_some(), "acme_contact"),
                (config.acme_ca_file.is_some(), "acme_ca_file"),
            ] {
                if set {
                    return Err(format!(
                        "{name} is set but acme_domains is empty: name the dashboard's domains to get a certificate by ACME"
                    ));
                }
            }
            return Ok(None);
        }
        if config.tls_cert_file.is_some() || config.tls_key_file.is_some() {
            return Err(
                "acme_domains and tls_cert_file both give the dashboard a certificate: set one of them"
                    .into(),
            );
        }
        if config.http_redirect_listen.is_none() {
            return Err(
                "acme_domains needs http_redirect_listen: the CA checks each name over plain HTTP there (port 80 in production)"
                    .into(),
            );
        }
        let mut domains = Vec::new();
        for raw in &config.acme_domains {
            let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
            if !is_dns_name(&name) {
                return Err(format!(
                    "acme_domains: {raw:?} is not a DNS name (letters, digits, '-' and dots; no wildcard, no IP address)"
                ));
            }
            if !domains.contains(&name) {
                domains.push(name);
            }
        }
        if domains.len() > 100 {
            return Err("acme_domains: at most 100 names go in one certificate".into());
        }
        let directory = config
            .acme_directory
            .as_deref()
            .unwrap_or(LETS_ENCRYPT)
            .trim()
            .to_string();
        match reqwest::Url::parse(&directory) {
            Ok(url) if url.scheme() == "https" && url.host().is_some() => {}
            _ => {
                return Err(format!(
                    "acme_directory {directory:?} is not an https:// URL"
                ))
            }
        }
        let contact = match config.acme_contact.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(email) => {
                let email = email.strip_prefix("mailto:").unwrap_or(email);
                let valid = email.split_once('@').is_some_and(|(user, host)| {
                    !user.is_empty() && host.contains('.') && !host.starts_with('.')
                }) && !email.contains(|c: char| c.is_whitespace() || c == ',');
                if !valid {
                    return Err(format!("acme_contact {email:?} is not an email address"));
                }
                Some(format!("mailto:{email}"))
            }
        };
        let ca_pem = match &config.acme_ca_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read acme_ca_file {}: {e}", path.display()))?;
                if CertificateDer::from_pem_slice(&pem).is_err() {
                    return Err(format!(
                        "acme_ca_file {} is not a PEM certificate",
                        path.display()
                    ));
                }
                Some(pem)
            }
        };
        Ok(Some(AcmeSettings {
            domains,
            directory,
            contact,
            ca_pem,
            state_dir: config.data_dir.join("acme"),
        }))
    }

    fn cert_path(&self) -> PathBuf {
        self.state_dir.join("cert.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.state_dir.join("key.pem")
    }

    fn account_path(&self) -> PathBuf {
        self.state_dir.join("account.json")
    }
}

/// A name a CA can issue for over http-01: labels of letters, digits and
/// inner hyphens, at least two of them.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

/// The http-01 answers the CA may ask for: token -> key authorization.
#[derive(Debug, Clone, Default)]
pub struct Challenges(Arc<Mutex<HashMap<String, String>>>);

impl Challenges {
    fn put(&self, token: String, answer: String) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, answer);
    }

    fn remove(&self, tokens: &[String]) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for t in tokens {
            map.remove(t);
        }
    }

    fn get(&self, token: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    /// `/.well-known/acme-challenge/{token}`: the key authorization while
    /// that token's order is open, 404 otherwise.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/.well-known/acme-challenge/{token}", get(answer))
            .with_state(self.clone())
    }
}

async fn answer(
    State(challenges): State<Challenges>,
    UrlPath(token): UrlPath<String>,
) -> impl IntoResponse {
    match challenges.get(&token) {
        Some(answer) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            answer,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "No such ACME challenge.").into_response(),
    }
}

/// The certificate the dashboard presents, replaced by each new order.
#[derive(Debug, Default)]
pub struct AcmeCert {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ResolvesServerCert for AcmeCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl AcmeCert {
    fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(key);
    }
}

/// A certificate chain and its key, as PEM, with what was read from its leaf.
struct Issued {
    chain_pem: String,
    key_pem: String,
    names: BTreeSet<String>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Issued {
    fn parse(chain_pem: String, key_pem: String) -> Result<Issued, String> {
        let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .next()
            .ok_or("no certificate in the chain")?
            .map_err(|e| format!("the chain is not PEM: {e}"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
            .map_err(|e| format!("the certificate does not parse: {e}"))?;
        let mut names = BTreeSet::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                    names.insert(dns.to_ascii_lowercase());
                }
            }
        }
        let time = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or_default())
        };
        Ok(Issued {
            names,
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
            chain_pem,
            key_pem,
        })
    }

    fn certified_key(
        &self,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Arc<CertifiedKey>, String> {
        let chain = CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the chain is not PEM: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| format!("the key is not PEM: {e}"))?;
        CertifiedKey::from_der(chain, key, provider)
            .map(Arc::new)
            .map_err(|e| format!("the key does not go with the certificate: {e}"))
    }

    /// Whether to order a new certificate: the names differ from the
    /// configured ones, or two thirds of its lifetime have passed.
    fn due(&self, domains: &[String], now: SystemTime) -> bool {
        let wanted: BTreeSet<String> = domains.iter().cloned().collect();
        if wanted != self.names {
            return true;
        }
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        now + lifetime / 3 >= self.not_after
    }
}

/// Obtains and renews the dashboard's certificate.
pub struct Acme {
    settings: AcmeSettings,
    cert: Arc<AcmeCert>,
    challenges: Challenges,
    provider: Arc<rustls::crypto::CryptoProvider>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("domains", &self.settings.domains)
            .field("directory", &self.settings.directory)
            .finish_non_exhaustive()
    }
}

impl Acme {
    /// Prepares the state directory and loads a stored certificate (one that
    /// does not load is logged and ordered again).
    pub fn new(
        settings: AcmeSettings,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Acme, String> {
        control::files::private_dir(&settings.state_dir)
            .map_err(|e| format!("cannot make {}: {e}", settings.state_dir.display()))?;
        let mut http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("pilothouse-acme")
            .https_only(true);
        if let Some(pem) = &settings.ca_pem {
            let ca =
                reqwest::Certificate::from_pem(pem).map_err(|e| format!("acme_ca_file: {e}"))?;
            http = http.tls_built_in_root_certs(false).add_root_certificate(ca);
        }
        let http = http
            .build()
            .map_err(|e| format!("cannot make an HTTPS client: {e}"))?;
        let acme = Acme {
            settings,
            cert: Arc::new(AcmeCert::default()),
            challenges: Challenges::default(),
            provider,
            http,
        };
        match acme.stored() {
            Ok(Some(issued)) => match issued.certified_key(&acme.provider) {
                Ok(key) => acme.cert.set(key),
                Err(e) => {
                    tracing::warn!(error = %e, "the stored ACME certificate does not load; ordering a new one")
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the stored ACME certificate does not load; ordering a new one")
            }
        }
        Ok(acme)
    }

    /// The certificate's names, as configured (at least one).
    pub fn domains(&self) -> &[String] {
        &self.settings.domains
    }

    /// What the TLS listener presents.
    pub fn resolver(&self) -> Arc<AcmeCert> {
        self.cert.clone()
    }

    /// The challenge answers, for the plain-HTTP listener.
    pub fn challenges(&self) -> Challenges {
        self.challenges.clone()
    }

    /// The stored certificate, if there is one.
    fn stored(&self) -> Result<Option<Issued>, String> {
        let (cert, key) = (self.settings.cert_path(), self.settings.key_path());
        if !cert.exists() || !key.exists() {
            return Ok(None);
        }
        let chain = std::fs::read_to_string(&cert)
            .map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
        let key_pem = control::files::read_private(&key)
            .map_err(|e| format!("cannot read {}: {e}", key.display()))?;
        let key_pem =
            String::from_utf8(key_pem).map_err(|_| format!("{} is not PEM", key.display()))?;
        Issued::parse(chain, key_pem).map(Some)
    }

    /// Keeps a valid certificate in place until the process stops.
    pub async fn run(self) {
        let mut backoff = Duration::from_secs(60);
        loop {
            // Nothing in use (none stored, or a stored pair that does not
            // load), or what is stored is due.
            let in_use = self
                .cert
                .current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .is_some();
            let due = match self.stored() {
                Ok(Some(issued)) if in_use => issued.due(&self.settings.domains, SystemTime::now()),
                _ => true,
            };
            if !due {
                tokio::time::sleep(CHECK_EVERY).await;
                continue;
            }
            tracing::info!(domains = ?self.settings.domains, directory = %self.settings.directory, "ordering the dashboard's certificate by ACME");
            match self.order().await {
                Ok(issued) => {
                    tracing::info!(
                        domains = ?issued.names,
                        not_after = %time::OffsetDateTime::from(issued.not_after),
                        "the dashboard's ACME certificate is in use"
                    );
                    backoff = Duration::from_secs(60);
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in_secs = backoff.as_secs(), "could not get the dashboard's certificate by ACME");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// The ACME account: the stored one for this directory, or a new one.
    async fn account(&self) -> Result<Account, String> {
        #[derive(Serialize, Deserialize)]
        struct Stored {
            directory: String,
            credentials: AccountCredentials,
        }
        let path = self.settings.account_path();
        if path.exists() {
            let bytes = control::files::read_private(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            match serde_json::from_slice::<Stored>(&bytes) {
                Ok(stored) if stored.directory == self.settings.directory => {
                    return Account::builder_with_http(Box::new(ReqwestHttp(self.http.clone())))
                        .from_credentials(stored.credentials)
                        .await
                        .map_err(|e| format!("the stored ACME account does not load: {e}"));
                }
                Ok(_) => tracing::info!("acme_directory changed: making a new ACME account"),
                Err(e) => {
                    tracing::warn!(error = %e, "{} does not parse: making a new ACME account", path.display())
                }
            }
        }
        let contact: Vec<&str> = self.settings.contact.as_deref().into_iter().collect();
        let (account, credentials) =
            Account::builder_with_http(Box::new(ReqwestHttp(self.http.clone())))
                .create(
                    &NewAccount {
                        contact: &contact,
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    self.settings.directory.clone(),
                    None,
                )
                .await
                .map_err(|e| format!("the CA refused a new account: {e}"))?;
        let stored = serde_json::to_vec(&Stored {
            directory: self.settings.directory.clone(),
            credentials,
        })
        .map_err(|e| format!("cannot store the ACME account: {e}"))?;
        replace_private(&path, &stored)?;
        Ok(account)
    }

    /// One order, from its creation to the certificate in use.
    async fn order(&self) -> Result<Issued, String> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .settings
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("the CA refused the order: {e}"))?;
        let mut tokens = Vec::new();
        let answered = self.answer_challenges(&mut order, &mut tokens).await;
        let ready = match answered {
            Ok(()) => order
                .poll_ready(&RetryPolicy::new().timeout(ORDER_TIMEOUT))
                .await
                .map_err(|e| format!("the order did not become ready: {e}")),
            Err(e) => Err(e),
        };
        self.challenges.remove(&tokens);
        let status = ready?;
        if status != OrderStatus::Ready {
            return Err(format!(
                "the CA did not validate the names ({status:?}): {}",
                why_invalid(&mut order).await
            ));
        }
        let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
        let csr = rcgen::CertificateParams::new(self.settings.domains.clone())
            .and_then(|params| params.serialize_request(&key))
            .map_err(|e| format!("cannot make the certificate request: {e}"))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| format!("the CA refused to finalize the order: {e}"))?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(ORDER_TIMEOUT))
            .await
            .map_err(|e| format!("the CA did not deliver the certificate: {e}"))?;
        let issued = Issued::parse(chain, key.serialize_pem())?;
        let certified = issued.certified_key(&self.provider)?;
        // The key first: a crash between the two writes leaves a pair that
        // does not load, which is ordered again at the next start.
        replace_private(&self.settings.key_path(), issued.key_pem.as_bytes())?;
        replace_private(&self.settings.cert_path(), issued.chain_pem.as_bytes())?;
        self.cert.set(certified);
        Ok(issued)
    }

    /// Publishes the http-01 answer of each pending authorization and tells
    /// the CA to check it; `tokens` collects what to withdraw afterwards.
    async fn answer_challenges(
        &self,
        order: &mut instant_acme::Order,
        tokens: &mut Vec<String>,
    ) -> Result<(), String> {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| format!("cannot read an authorization: {e}"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(format!(
                        "the authorization for {} is {other:?}",
                        authz.identifier()
                    ))
                }
            }
            let name = authz.identifier().to_string();
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| format!("the CA offers no http-01 challenge for {name}"))?;
            tokens.push(challenge.token.clone());
            self.challenges.put(
                challenge.token.clone(),
                challenge.key_authorization().as_str().to_string(),
            );
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("the CA refused the challenge for {name}: {e}"))?;
        }
        Ok(())
    }
}

/// The CA's reasons for an order that failed validation, one per name.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    if let Some(problem) = &order.state().error {
        reasons.push(problem.to_string());
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for challenge in &authz.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(format!("{}: {problem}", authz.identifier()));
            }
        }
    }
    if reasons.is_empty() {
        "the CA gave no reason".into()
    } else {
        reasons.join("; ")
    }
}

/// Replaces `path` whole with `contents`, mode 0600: a new file beside it,
/// renamed over it.
fn replace_private(path: &Path, contents: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    {
        let mut file = control::files::create_private(&tmp).map_err(err)?;
        std::io::Write::write_all(&mut file, contents).map_err(err)?;
        file.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

/// The HTTP client instant-acme uses: reqwest, with the configured roots.
struct ReqwestHttp(reqwest::Client);

impl HttpClient for ReqwestHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            Ok(BytesResponse::from(http::Response::<reqwest::Body>::from(
                response,
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate for `names` valid from `from` for `days`.
    fn issued(names: &[&str], from: SystemTime, days: u64) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = time::OffsetDateTime::from(from);
        params.not_after = time::OffsetDateTime::from(from + Duration::from_secs(days * 86_400));
        let cert = params.self_signed(&key).unwrap();
        Issued::parse(cert.pem(), key.serialize_pem()).unwrap()
    }

    #[test]
    fn renewal_is_due_after_two_thirds_of_the_lifetime_or_for_new_names() {
        let day = Duration::from_secs(86_400);
        let start = SystemTime::UNIX_EPOCH + 20_000 * day;
        let cert = issued(&["dash.example.com"], start, 90);
        let names = ["dash.example.com".to_string()];
        assert!(!cert.due(&names, start + day));
        assert!(!cert.due(&names, start + 59 * day));
        assert!(cert.due(&names, start + 61 * day));
        assert!(cert.due(&names, start + 100 * day));
        // Another set of names is due at once, whatever the dates.
        let more = [
            "dash.example.com".to_string(),
            "ops.example.com".to_string(),
        ];
        assert!(cert.due(&more, start + day));
        assert!(cert.due(&["ops.example.com".to_string()], start + day));
        // The key goes with the certificate.
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        assert!(cert.certified_key(&provider).is_ok());
    }

    #[test]
    fn dns_names_for_http_01() {
        for good in ["dash.example.com", "a-b.example.co.uk", "x.y"] {
            assert!(is_dns_name(good), "{good}");
        }
        for bad in [
            "localhost",
            "*.example.com",
            "127.0.0.1",
            "-a.example.com",
            "a..example.com",
            "exa mple.com",
            "",
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }
}
