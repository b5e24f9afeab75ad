//! The HTTP client of the agent gateway (`/agent/v1/*` on the control plane).
//!
//! Owns the reqwest client (built on a preconfigured rustls configuration from
//! [`crate::pki`]), the short-lived JWT and its refresh, response size limits, and
//! the translation of failures into sentences an operator can act on. Every call
//! is a JSON `POST`, except the release download (`GET`, raw bytes).
//!
//! Invariants: the JWT is refreshed before it expires and, after a 401 from any
//! endpoint, once more before the request is retried a single time; the JWT is never
//! logged or shown. Response bodies are read up to a fixed limit, so a misbehaving
//! server cannot make the agent allocate without bound. Error texts from the server
//! are cut short and stripped of control characters before they reach a terminal.

use channel::api::MetricSample;
use channel::api::{
    EnrolRequest, EnrolResponse, KeysRequest, KeysResponse, MetricsBatch, PollRequest,
    PollResponse, RenewRequest, RenewResponse, ResultRequest, TokenResponse, MAX_RELEASE_BYTES,
    RELEASE_DOWNLOAD_PREFIX,
};
use channel::SealedResult;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time on top of the long-poll hold for the answer to arrive.
const POLL_GRACE: Duration = Duration::from_secs(20);
/// Refresh the JWT this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);
/// Largest poll answer (several envelopes of at most 1 MiB each).
const MAX_POLL_BODY: usize = 8 << 20;
/// Largest answer of any other endpoint.
const MAX_BODY: usize = 256 << 10;
/// A release download may take this long (up to 64 MiB on a slow link).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Longest server error reason shown to the operator.
const MAX_REASON_CHARS: usize = 300;

/// Why a call to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No HTTP answer: DNS, connection refused, TLS failure, timeout.
    #[error("cannot reach the control plane at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// The server's chain did not contain the CA the registration token pins.
    #[error(
        "{}: check that --server names the control plane the token was made for, and that \
         the token was copied whole",
        crate::pki::PIN_MISMATCH
    )]
    PinMismatch,
    /// An HTTP error status, with the server's `{"error": ...}` reason.
    #[error("the control plane refused the request (HTTP {status}): {reason}")]
    Refused { status: u16, reason: String },
    /// A 2xx answer that is not what the protocol says.
    #[error("the control plane sent an unexpected answer to {path}: {detail}")]
    BadResponse { path: &'static str, detail: String },
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

impl GatewayError {
    /// Worth retrying later (no answer, or a server-side error).
    pub fn is_transient(&self) -> bool {
        match self {
            GatewayError::Unreachable { .. } => true,
            GatewayError::Refused { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

impl GatewayError {
    /// The control plane answered and will not accept this request as it is
    /// (a 4xx other than 401, 408 and 429): retrying the same bytes is pointless.
    pub fn is_rejection(&self) -> bool {
        matches!(self, GatewayError::Refused { status, .. }
            if (400..500).contains(status) && !matches!(status, 401 | 408 | 429))
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn sanitize(reason: &str) -> String {
    reason
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON_CHARS)
        .collect()
}

fn build_client(tls: rustls::ClientConfig) -> Result<reqwest::Client, GatewayError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .tcp_keepalive(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(2)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pilothouse-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| GatewayError::Client(chain(&e)))
}

/// Checks a `--server` value: `https://HOST[:PORT]` with no path, query or fragment.
/// Returns it without a trailing slash.
pub fn normalize_base_url(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s.trim())
        .map_err(|e| format!("`{s}` is not a valid URL ({e}); expected https://HOST:PORT"))?;
    if url.scheme() != "https" {
        return Err(format!(
            "the server URL must start with https:// (got `{s}`)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("the server URL `{s}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the server URL must not contain a user name or password".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "the server URL must be just https://HOST:PORT, without a path (got `{s}`)"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    // Sized once from the announced length (never past the limit): a large
    // download then needs no reallocations and no twice-the-size peak.
    let announced = resp.content_length().unwrap_or(0);
    let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(limit).min(limit));
    while let Some(chunk) = resp.chunk().await.map_err(|e| chain(&e.without_url()))? {
        if body.len() + chunk.len() > limit {
            return Err(format!("answer larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn decode<T: DeserializeOwned>(path: &'static str, body: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(body).map_err(|e| GatewayError::BadResponse {
        path,
        // Position only: the body may carry command material.
        detail: format!("invalid JSON at line {} column {}", e.line(), e.column()),
    })
}

/// Sends one `POST` and returns the body of a 2xx answer.
async fn send(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    body: Option<Vec<u8>>,
    timeout: Duration,
    limit: usize,
) -> Result<Vec<u8>, GatewayError> {
    send_as(
        reqwest::Method::POST,
        client,
        url,
        bearer,
        body,
        timeout,
        limit,
    )
    .await
}

/// [`send`] with any method. An error's reason is the server's `{"error": ...}`,
/// else its plain-text body, else the status's name.
async fn send_as(
    method: reqwest::Method,
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    body: Option<Vec<u8>>,
    timeout: Duration,
    limit: usize,
) -> Result<Vec<u8>, GatewayError> {
    let mut req = client.request(method, url).timeout(timeout);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    req = match body {
        Some(b) => req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b),
        None => req,
    };
    let unreachable = |detail: String| GatewayError::Unreachable {
        url: url.to_string(),
        detail,
    };
    let resp = req
        .send()
        .await
        .map_err(|e| unreachable(chain(&e.without_url())))?;
    let status = resp.status();
    let plain_text = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    let body = read_limited(resp, limit).await.map_err(unreachable)?;
    if status.is_success() {
        return Ok(body);
    }
    let text = std::str::from_utf8(&body).ok().map(str::trim);
    let reason = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(b) => sanitize(&b.error),
        Err(_) => match text {
            // The release route answers a missing release in plain text.
            Some(t) if plain_text && !t.is_empty() => sanitize(t),
            _ => status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_string(),
        },
    };
    Err(GatewayError::Refused {
        status: status.as_u16(),
        reason,
    })
}

fn to_json<T: Serialize>(path: &'static str, value: &T) -> Result<Vec<u8>, GatewayError> {
    serde_json::to_vec(value)
        .map_err(|e| GatewayError::Client(format!("cannot encode {path}: {e}")))
}

/// `POST /agent/v1/enrol` with the pinned configuration of [`crate::pki::enrol_config`].
pub async fn enrol(
    base_url: &str,
    tls: rustls::ClientConfig,
    mismatch: &std::sync::atomic::AtomicBool,
    request: &EnrolRequest,
) -> Result<EnrolResponse, GatewayError> {
    const PATH: &str = "/agent/v1/enrol";
    let client = build_client(tls)?;
    let url = format!("{base_url}{PATH}");
    let body = to_json(PATH, request)?;
    match send(&client, &url, None, Some(body), REQUEST_TIMEOUT, MAX_BODY).await {
        Ok(body) => decode(PATH, &body),
        Err(_) if mismatch.load(Ordering::SeqCst) => Err(GatewayError::PinMismatch),
        Err(e) => Err(e),
    }
}

struct Jwt {
    token: Zeroizing<String>,
    refresh_at: Instant,
}

struct Inner {
    client: reqwest::Client,
    jwt: Option<Jwt>,
    last_contact_ms: Option<i64>,
    saved_contact_ms: Option<i64>,
}

/// An authenticated (mutual TLS + JWT) connection to the gateway. Clones share
/// the client and the JWT; it is meant for one current-thread runtime.
#[derive(Clone)]
pub struct Gateway {
    base_url: Rc<str>,
    inner: Rc<RefCell<Inner>>,
}

#[derive(Deserialize)]
struct MetricsAccepted {
    #[allow(dead_code)]
    accepted: u64,
}

impl Gateway {
    /// A gateway for `base_url` over the mutual-TLS configuration `tls`.
    pub fn new(base_url: &str, tls: rustls::ClientConfig) -> Result<Self, GatewayError> {
        Ok(Self {
            base_url: base_url.into(),
            inner: Rc::new(RefCell::new(Inner {
                client: build_client(tls)?,
                jwt: None,
                last_contact_ms: None,
                saved_contact_ms: None,
            })),
        })
    }

    /// Switches to a new TLS configuration (a new client certificate). The JWT is
    /// dropped: the next call fetches one over the new certificate.
    pub fn set_tls(&self, tls: rustls::ClientConfig) -> Result<(), GatewayError> {
        let client = build_client(tls)?;
        let mut inner = self.inner.borrow_mut();
        inner.client = client;
        inner.jwt = None;
        Ok(())
    }

    /// When the control plane last answered (Unix ms).
    pub fn last_contact_ms(&self) -> Option<i64> {
        self.inner.borrow().last_contact_ms
    }

    /// The last contact time if it is at least `every_ms` newer than the one
    /// last handed out (or none was); marks it as handed out. Lets every task
    /// persist the contact time without writing more than once per `every_ms`.
    pub fn contact_to_save(&self, every_ms: i64) -> Option<i64> {
        let mut inner = self.inner.borrow_mut();
        let contact = inner.last_contact_ms?;
        let due = inner
            .saved_contact_ms
            .is_none_or(|saved| contact - saved >= every_ms);
        if due {
            inner.saved_contact_ms = Some(contact);
        }
        due.then_some(contact)
    }

    /// Records the contact time already on disk (from `status.json`).
    pub fn set_saved_contact(&self, ms: Option<i64>) {
        self.inner.borrow_mut().saved_contact_ms = ms;
    }

    fn client(&self) -> reqwest::Client {
        self.inner.borrow().client.clone()
    }

    fn note_contact(&self) {
        self.inner.borrow_mut().last_contact_ms = Some(crate::now_ms());
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `POST /agent/v1/token`: a fresh JWT.
    async fn refresh_token(&self) -> Result<Zeroizing<String>, GatewayError> {
        const PATH: &str = "/agent/v1/token";
        let started = Instant::now();
        let body = send(
            &self.client(),
            &self.url(PATH),
            None,
            None,
            REQUEST_TIMEOUT,
            MAX_BODY,
        )
        .await?;
        self.note_contact();
        let t: TokenResponse = decode(PATH, &body)?;
        let token = Zeroizing::new(t.token);
        let lifetime = Duration::from_secs(t.expires_in_secs.max(0).unsigned_abs());
        // Refresh a margin before expiry, but never before half the lifetime.
        let refresh_in = lifetime.saturating_sub(TOKEN_MARGIN).max(lifetime / 2);
        self.inner.borrow_mut().jwt = Some(Jwt {
            token: token.clone(),
            refresh_at: started + refresh_in,
        });
        tracing::debug!(expires_in_secs = t.expires_in_secs, "new gateway token");
        Ok(token)
    }

    async fn bearer(&self) -> Result<Zeroizing<String>, GatewayError> {
        let current = {
            let inner = self.inner.borrow();
            inner
                .jwt
                .as_ref()
                .filter(|j| Instant::now() < j.refresh_at)
                .map(|j| j.token.clone())
        };
        match current {
            Some(t) => Ok(t),
            None => self.refresh_token().await,
        }
    }

    /// One authenticated `POST`; on 401 the token is refreshed and the call retried once.
    async fn call(
        &self,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
        limit: usize,
    ) -> Result<Vec<u8>, GatewayError> {
        self.call_as(reqwest::Method::POST, path, Some(body), timeout, limit)
            .await
    }

    /// [`call`](Self::call) with any method, body or none.
    async fn call_as(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
        limit: usize,
    ) -> Result<Vec<u8>, GatewayError> {
        let url = self.url(path);
        let token = self.bearer().await?;
        let first = send_as(
            method.clone(),
            &self.client(),
            &url,
            Some(&token),
            body.clone(),
            timeout,
            limit,
        )
        .await;
        let result = match first {
            Err(GatewayError::Refused { status: 401, .. }) => {
                tracing::debug!(path, "token refused, refreshing");
                self.inner.borrow_mut().jwt = None;
                let token = self.refresh_token().await?;
                send_as(
                    method,
                    &self.client(),
                    &url,
                    Some(&token),
                    body,
                    timeout,
                    limit,
                )
                .await
            }
            other => other,
        };
        if result.is_ok() {
            self.note_contact();
        }
        result
    }

    /// `POST /agent/v1/poll`, held by the server up to `wait_secs`.
    pub async fn poll(&self, wait_secs: u64) -> Result<PollResponse, GatewayError> {
        const PATH: &str = "/agent/v1/poll";
        let body = to_json(
            PATH,
            &PollRequest {
                wait_secs: Some(wait_secs),
            },
        )?;
        let timeout = Duration::from_secs(wait_secs) + POLL_GRACE;
        let body = self.call(PATH, body, timeout, MAX_POLL_BODY).await?;
        decode(PATH, &body)
    }

    /// `POST /agent/v1/result`.
    pub async fn post_result(&self, result: &SealedResult) -> Result<(), GatewayError> {
        const PATH: &str = "/agent/v1/result";
        let body = to_json(
            PATH,
            &ResultRequest {
                result: result.clone(),
            },
        )?;
        self.call(PATH, body, REQUEST_TIMEOUT, MAX_BODY).await?;
        Ok(())
    }

    /// `POST /agent/v1/metrics` with at most one batch of samples and the
    /// agent's health as of now ([`crate::health::report`]).
    pub async fn post_metrics(&self, samples: Vec<MetricSample>) -> Result<(), GatewayError> {
        const PATH: &str = "/agent/v1/metrics";
        let health = Some(crate::health::report(crate::now_ms()));
        let body = to_json(PATH, &MetricsBatch { samples, health })?;
        let body = self.call(PATH, body, REQUEST_TIMEOUT, MAX_BODY).await?;
        decode::<MetricsAccepted>(PATH, &body)?;
        Ok(())
    }

    /// `POST /agent/v1/output`: one live output chunk; answers whether the
    /// command was cancelled.
    pub async fn post_output(
        &self,
        chunk: &channel::SealedChunk,
    ) -> Result<channel::api::OutputResponse, GatewayError> {
        const PATH: &str = "/agent/v1/output";
        let body = to_json(
            PATH,
            &channel::api::OutputRequest {
                chunk: chunk.clone(),
            },
        )?;
        let body = self.call(PATH, body, REQUEST_TIMEOUT, MAX_BODY).await?;
        decode(PATH, &body)
    }

    /// `POST /agent/v1/capabilities`: what the agent may run, the version it
    /// runs and, once, what became of its last self-update.
    pub async fn post_capabilities(
        &self,
        request: &channel::api::CapabilitiesRequest,
    ) -> Result<(), GatewayError> {
        const PATH: &str = "/agent/v1/capabilities";
        let body = to_json(PATH, request)?;
        self.call(PATH, body, REQUEST_TIMEOUT, MAX_BODY).await?;
        Ok(())
    }

    /// `GET /agent/v1/release/{platform}`: the agent binary the control plane
    /// offers for `platform`, at most [`MAX_RELEASE_BYTES`] bytes. Unchecked:
    /// the caller verifies it against the release manifest.
    pub async fn download_release(&self, platform: &str) -> Result<Vec<u8>, GatewayError> {
        if !channel::release::valid_platform(platform) {
            return Err(GatewayError::Client(format!(
                "{platform:?} is not a platform name"
            )));
        }
        let path = format!("{RELEASE_DOWNLOAD_PREFIX}{platform}");
        let limit = usize::try_from(MAX_RELEASE_BYTES).unwrap_or(usize::MAX);
        self.call_as(reqwest::Method::GET, &path, None, RELEASE_TIMEOUT, limit)
            .await
    }

    /// `POST /agent/v1/keys`.
    pub async fn post_keys(&self, request: &KeysRequest) -> Result<KeysResponse, GatewayError> {
        const PATH: &str = "/agent/v1/keys";
        let body = to_json(PATH, request)?;
        let body = self.call(PATH, body, REQUEST_TIMEOUT, MAX_BODY).await?;
        decode(PATH, &body)
    }

    /// `POST /agent/v1/renew`.
    pub async fn renew(
        &self,
        csr_pem: &str,
        renewal: channel::SignedRenewal,
    ) -> Result<RenewResponse, GatewayError> {
        const PATH: &str = "/agent/v1/renew";
        let body = to_json(
            PATH,
            &RenewRequest {
                csr_pem: csr_pem.to_string(),
                renewal,
            },
        )?;
        let body = self.call(PATH, body, REQUEST_TIMEOUT, MAX_BODY).await?;
        decode(PATH, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_https_host_port_only() {
        assert_eq!(
            normalize_base_url("https://cp.example:8443/").unwrap(),
            "https://cp.example:8443"
        );
        assert_eq!(
            normalize_base_url(" https://10.0.0.1:8443 ").unwrap(),
            "https://10.0.0.1:8443"
        );
        for bad in [
            "http://cp.example:8443",
            "cp.example:8443",
            "https://cp.example:8443/agent",
            "https://cp.example:8443/?x=1",
            "https://user:pw@cp.example",
            "",
        ] {
            assert!(normalize_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_reasons_are_cut_and_cleaned() {
        let long = "x".repeat(1000);
        assert_eq!(sanitize(&long).len(), MAX_REASON_CHARS);
        assert_eq!(sanitize("bad\u{1b}[31m token\n"), "bad[31m token");
    }

    #[test]
    fn transient_errors_are_the_retryable_ones() {
        let refused = |status| GatewayError::Refused {
            status,
            reason: String::new(),
        };
        assert!(refused(503).is_transient());
        assert!(refused(429).is_transient());
        assert!(!refused(400).is_transient());
        assert!(!refused(409).is_transient());
        assert!(GatewayError::Unreachable {
            url: String::new(),
            detail: String::new()
        }
        .is_transient());
        assert!(!GatewayError::PinMismatch.is_transient());
    }
}
