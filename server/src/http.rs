//! HTTP edge protections applied to every request: client address, security
//! headers with a per-response CSP nonce, cross-origin refusal for state
//! changes, and clean error statuses for server functions.
//!
//! What an attacker on another origin cannot do past this layer: make a
//! signed-in browser submit a state-changing request (the Origin check, on top
//! of SameSite=Lax cookies), frame the dashboard, or run injected inline script
//! (CSP with a nonce; only our own scripts and wasm run).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use app::context::{ClientIp, CspNonce};
use app::AppError;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// What the edge layers need to know.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    pub trusted_proxies: Arc<Vec<IpAddr>>,
    /// `scheme://host[:port]` of the configured public URL.
    pub public_origin: String,
    pub tls: bool,
}

fn client_ip(req: &Request, cfg: &EdgeConfig) -> String {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    match peer {
        Some(peer) if cfg.trusted_proxies.contains(&peer) => req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next_back())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
            .unwrap_or(peer)
            .to_string(),
        Some(peer) => peer.to_string(),
        None => String::new(),
    }
}

fn nonce() -> String {
    control::crypto::random_token(16)
}

/// Client address, CSP nonce and security headers.
pub async fn edge(State(cfg): State<EdgeConfig>, mut req: Request, next: Next) -> Response {
    let ip = client_ip(&req, &cfg);
    let nonce = nonce();
    req.extensions_mut().insert(ClientIp(ip));
    req.extensions_mut().insert(CspNonce(nonce.clone()));
    let is_asset = req.uri().path().starts_with("/pkg/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let csp = format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // same-origin keeps the Referer that plain (no-JS) form posts are sent back to.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    if cfg.tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    if !is_asset && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

fn plain_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.to_string(),
    )
        .into_response()
}

/// Refuses cross-origin state-changing requests. Browsers send `Origin` on
/// every POST; it must be our own origin (the configured public URL, or the
/// origin the request was addressed to). Without `Origin`, a browser's
/// `Sec-Fetch-Site: cross-site` is refused too; clients that send neither are
/// not browsers and cannot carry a victim's cookies.
pub async fn same_origin(State(cfg): State<EdgeConfig>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let headers = req.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let scheme = if cfg.tls { "https" } else { "http" };
        let own = !host.is_empty() && origin == format!("{scheme}://{host}");
        if !(own || origin == cfg.public_origin) {
            tracing::warn!(origin = %origin.chars().take(100).collect::<String>(), "refused a cross-origin request");
            return plain_error(StatusCode::FORBIDDEN, "Cross-origin request refused.");
        }
    } else if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
        return plain_error(StatusCode::FORBIDDEN, "Cross-origin request refused.");
    }
    next.run(req).await
}

/// Gives server-function errors their real HTTP status (4xx with the message,
/// `Retry-After` when throttled). A plain form post without JavaScript is sent
/// back to its page with the message in `?error=`, so it can be shown there.
pub async fn server_fn_errors(req: Request, next: Next) -> Response {
    let plain_form = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    let back_to = req
        .headers()
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(same_site_path);
    let res = next.run(req).await;
    if !res.headers().contains_key("serverfnerror") {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let err: AppError = serde_json::from_slice(&bytes).unwrap_or(AppError::Internal);
    if let (true, Some(path)) = (plain_form, back_to) {
        let location = with_error_param(&path, &err.to_string());
        let mut res = Response::new(Body::empty());
        *res.status_mut() = StatusCode::SEE_OTHER;
        if let Ok(v) = HeaderValue::from_str(&location) {
            res.headers_mut().insert(header::LOCATION, v);
        }
        return res;
    }
    parts.status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    parts.headers.remove(header::LOCATION);
    if let AppError::Throttled(secs) = err {
        parts
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The path and query of a Referer, only if it is a plain absolute URL; we
/// never redirect to another host.
fn same_site_path(referer: &str) -> Option<String> {
    let rest = referer
        .strip_prefix("http://")
        .or_else(|| referer.strip_prefix("https://"))?;
    let slash = rest.find('/')?;
    let path = &rest[slash..];
    (path.starts_with('/') && !path.starts_with("//")).then(|| path.to_string())
}

fn with_error_param(path: &str, message: &str) -> String {
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != "error" {
            q.append_pair(&k, &v);
        }
    }
    q.append_pair("error", message);
    format!("{base}?{}", q.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referers_only_give_local_paths() {
        assert_eq!(
            same_site_path("http://h:1/login?x=1").as_deref(),
            Some("/login?x=1")
        );
        assert_eq!(same_site_path("https://h//evil.com"), None);
        assert_eq!(same_site_path("javascript:alert(1)"), None);
        assert_eq!(
            with_error_param("/login?error=old&a=b", "Bad & wrong"),
            "/login?a=b&error=Bad+%26+wrong"
        );
    }
}
