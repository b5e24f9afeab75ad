//! What the agent gateway serves to install an agent, without a client
//! certificate: the install script, the agent CA certificate, the systemd
//! unit, the release key and each platform's signed agent binary with its
//! manifest, from the releases directory that `pilothouse release sign` fills:
//!
//! ```text
//! releases/release-key.pem
//! releases/<platform>/pilothouse-agent
//! releases/<platform>/release.txt
//! ```
//!
//! The control plane cannot sign a release: it only passes on what the release
//! key signed, and the install script checks the signature before it installs
//! anything. What it can do, since it serves the script, is in docs/agent-install.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use channel::release::valid_platform;

/// The systemd unit the install script writes.
pub const UNIT: &str = include_str!("../../agent/pilothouse-agent.service");
const SCRIPT: &str = include_str!("install/agent.sh");
/// The `agent.toml` the install script writes when there is none.
const AGENT_TOML: &str = include_str!("../../agent/agent.toml");
/// The agent binary's file name in a platform's release directory.
pub const BINARY: &str = "pilothouse-agent";
/// The manifest's file name in a platform's release directory.
pub const MANIFEST: &str = "release.txt";
/// The release public key's file name in the releases directory.
pub const RELEASE_KEY: &str = "release-key.pem";

#[derive(Clone)]
pub struct InstallState {
    inner: Arc<Inner>,
}

struct Inner {
    releases: PathBuf,
    ca_pem: String,
    script: String,
}

/// The gateway URL holds only what a host and port need; anything else could
/// break out of the script's quoting.
fn shell_safe_url(url: &str) -> bool {
    url.starts_with("https://")
        && url
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".:-[]/".contains(&c))
}

impl InstallState {
    /// `agent_url` is the gateway's `https://HOST:PORT`, which the script
    /// talks to.
    pub fn new(releases: PathBuf, ca_pem: &str, agent_url: &str) -> Result<Self, String> {
        if !shell_safe_url(agent_url) {
            return Err(format!(
                "the agent gateway URL {agent_url:?} holds characters a host name cannot"
            ));
        }
        let script = SCRIPT
            .replace("@SERVER_URL@", agent_url)
            .replace("@UNIT@", UNIT.trim_end())
            .replace("@AGENT_TOML@", AGENT_TOML.trim_end());
        Ok(Self {
            inner: Arc::new(Inner {
                releases,
                ca_pem: ca_pem.to_string(),
                script,
            }),
        })
    }

    /// Logs the releases this server can hand out, checking each one's
    /// signature and digest, so a release that no install would accept is
    /// noticed at start rather than on a customer's server.
    pub async fn log_releases(&self) {
        let dir = self.inner.releases.clone();
        let found = tokio::task::spawn_blocking(move || check_releases(&dir)).await;
        match found {
            Ok(Ok(list)) if list.is_empty() => tracing::warn!(
                dir = %self.inner.releases.display(),
                "no signed agent release to install from: `make agent` or `pilothouse release sign` puts one there"
            ),
            Ok(Ok(list)) => {
                for (platform, outcome) in list {
                    match outcome {
                        Ok(version) => {
                            tracing::info!(%platform, %version, "agent release ready to install")
                        }
                        Err(e) => {
                            tracing::warn!(%platform, error = %e, "agent release will not install")
                        }
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "agent releases not readable"),
            Err(e) => tracing::warn!(error = %e, "agent release check failed"),
        }
    }
}

type Checked = Vec<(String, Result<String, String>)>;

/// Each platform directory under `dir` and what its release is: its version,
/// or why it does not verify.
pub fn check_releases(dir: &Path) -> Result<Checked, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let platform = entry.file_name().to_string_lossy().into_owned();
        if !valid_platform(&platform) {
            continue;
        }
        match control::agents::install::read_release(dir, &platform, true) {
            Ok(None) => {}
            Ok(Some(r)) => out.push((platform, Ok(r.manifest.version))),
            Err(e) => out.push((platform, Err(e))),
        }
    }
    out.sort();
    Ok(out)
}

pub fn routes(state: InstallState) -> Router {
    Router::new()
        .route("/install/agent.sh", get(script))
        .route("/install/ca.pem", get(ca))
        .route("/install/pilothouse-agent.service", get(unit))
        .route("/install/release-key.pem", get(release_key))
        .route("/install/{platform}/{file}", get(release_file))
        .with_state(state)
}

fn text(content_type: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn not_found(message: String) -> Response {
    (StatusCode::NOT_FOUND, message + "\n").into_response()
}

async fn script(State(s): State<InstallState>) -> Response {
    text("text/x-shellscript; charset=utf-8", s.inner.script.clone())
}

async fn ca(State(s): State<InstallState>) -> Response {
    text("application/x-pem-file", s.inner.ca_pem.clone())
}

async fn unit() -> Response {
    text("text/plain; charset=utf-8", UNIT.to_string())
}

async fn release_key(State(s): State<InstallState>) -> Response {
    match tokio::fs::read_to_string(s.inner.releases.join(RELEASE_KEY)).await {
        Ok(pem) => text("application/x-pem-file", pem),
        Err(_) => not_found(
            "this control plane has no agent release key: whoever builds releases signs one with `pilothouse release sign`"
                .into(),
        ),
    }
}

async fn release_file(
    State(s): State<InstallState>,
    UrlPath((platform, file)): UrlPath<(String, String)>,
) -> Response {
    if !valid_platform(&platform) || (file != BINARY && file != MANIFEST) {
        return not_found(format!(
            "no such file: /install/<platform>/ holds {BINARY} and {MANIFEST}"
        ));
    }
    let path = s.inner.releases.join(&platform).join(&file);
    let f = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => {
            return not_found(format!(
                "this control plane has no agent release for {platform}"
            ))
        }
    };
    if file == MANIFEST {
        use tokio::io::AsyncReadExt as _;
        let mut body = String::new();
        let mut f = f.take(64 * 1024);
        return match f.read_to_string(&mut body).await {
            Ok(_) => text("text/plain; charset=utf-8", body),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read a release manifest");
                not_found(format!("the release manifest for {platform} is unreadable"))
            }
        };
    }
    file_response(f).await
}

/// The file at `path`, streamed as `application/octet-stream`; `None` when it
/// cannot be opened.
pub async fn stream_file(path: &Path) -> Option<Response> {
    let f = tokio::fs::File::open(path).await.ok()?;
    Some(file_response(f).await)
}

async fn file_response(f: tokio::fs::File) -> Response {
    let len = f.metadata().await.map(|m| m.len()).ok();
    // Streamed in 64 KiB reads: an install never holds the binary in memory.
    let stream = futures_util::stream::unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let mut res = Response::new(Body::from_stream(stream));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, len.into());
    }
    res
}
