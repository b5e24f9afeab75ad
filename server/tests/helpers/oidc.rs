//! The OpenID Providers the sign-in tests use, run by node on loopback over
//! HTTPS with a certificate from a test CA (installed by scripts/install.sh):
//! `oidc_provider.mjs`, npm `oidc-provider` (an OpenID Certified
//! implementation) with a plain sign-in form and no consent page; and
//! `oidc_rogue.mjs`, an attacker that plays a provider whose ID tokens are
//! wrong in a chosen way. [`authorize`] walks a browser through a provider's
//! pages up to the redirect back to the client.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::redirect::Policy;
use reqwest::Url;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The client (relying party) the provider knows: confidential,
/// `client_secret_basic`, authorization code flow.
#[derive(Clone, Debug)]
pub struct Client {
    pub id: String,
    pub secret: String,
    /// The only redirect URI registered.
    pub redirect_uri: String,
}

impl Client {
    pub fn new(id: &str, secret: &str, redirect_uri: &str) -> Client {
        Client {
            id: id.to_string(),
            secret: secret.to_string(),
            redirect_uri: redirect_uri.to_string(),
        }
    }
}

/// Someone who can sign in at the provider (by `sub` or `email`).
#[derive(Clone, Debug)]
pub struct Account {
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
    /// The Google Workspace domain (`hd` claim), if any.
    pub hd: Option<String>,
}

impl Account {
    /// An account with a verified email and no hosted domain.
    pub fn new(sub: &str, email: &str) -> Account {
        Account {
            sub: sub.to_string(),
            email: email.to_string(),
            email_verified: true,
            hd: None,
        }
    }
}

/// The ID-token faults the attacker provider ([`OidcProvider::rogue`]) knows (its `mode`).
pub const ROGUE_MODES: &[&str] = &[
    "ok",
    "wrong_audience",
    "wrong_issuer",
    "expired",
    "wrong_nonce",
    "unverified_email",
    "no_email",
    "bad_signature",
    "alg_none",
];

/// A running provider (real or rogue); stopped when dropped.
pub struct OidcProvider {
    pub port: u16,
    /// `https://localhost:<port>`: discovery is at
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// The CA the provider's certificate (for localhost and 127.0.0.1)
    /// chains to.
    pub ca_file: PathBuf,
    child: Child,
}

/// The providers' certificate and key in `dir`, made by a new test CA unless
/// there already (so a provider started later in `dir` is trusted by a
/// server configured before); returns the CA's file.
pub fn pki(dir: &Path) -> PathBuf {
    let ca_file = dir.join("oidc-ca.pem");
    if !ca_file.exists() {
        let (ca, cert, key) = super::tls::test_pki("oidc");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("oidc-cert.pem"), cert).unwrap();
        std::fs::write(dir.join("oidc-key.pem"), key).unwrap();
        std::fs::write(&ca_file, ca).unwrap();
    }
    ca_file
}

/// A browser-like client that trusts the providers' CA in `ca_file`: keeps
/// cookies, does not follow redirects.
pub fn browser(ca_file: &Path) -> reqwest::Client {
    let ca = std::fs::read(ca_file).unwrap();
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap()
}

fn accounts_json(accounts: &[Account]) -> serde_json::Value {
    accounts
        .iter()
        .map(|a| {
            let mut v = serde_json::json!({
                "sub": a.sub,
                "email": a.email,
                "email_verified": a.email_verified,
            });
            if let Some(hd) = &a.hd {
                v["hd"] = hd.as_str().into();
            }
            v
        })
        .collect()
}

impl OidcProvider {
    /// Starts npm `oidc-provider` on `port` (0: any free port) with its
    /// certificate in `dir`, knowing `client` and `accounts`.
    pub async fn start(
        dir: &Path,
        port: u16,
        client: Client,
        accounts: &[Account],
    ) -> OidcProvider {
        OidcProvider::spawn(
            dir,
            port,
            "oidc_provider.mjs",
            "oidc-provider",
            client,
            accounts,
            None,
        )
        .await
    }

    /// Starts the attacker (`oidc_rogue.mjs`) whose ID tokens are wrong as
    /// `mode` says (one of [`ROGUE_MODES`]); the first of `accounts` is the
    /// one it signs in (with email_verified true unless `unverified_email`).
    pub async fn rogue(
        dir: &Path,
        port: u16,
        client: Client,
        accounts: &[Account],
        mode: &str,
    ) -> OidcProvider {
        assert!(ROGUE_MODES.contains(&mode), "no rogue mode {mode:?}");
        assert!(!accounts.is_empty(), "the rogue provider needs an account");
        OidcProvider::spawn(
            dir,
            port,
            "oidc_rogue.mjs",
            "jose",
            client,
            accounts,
            Some(mode),
        )
        .await
    }

    async fn spawn(
        dir: &Path,
        port: u16,
        script: &str,
        package: &str,
        client: Client,
        accounts: &[Account],
        mode: Option<&str>,
    ) -> OidcProvider {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let modules = manifest.join("../node_modules").join(package);
        assert!(
            modules.is_dir(),
            "npm {package} is not installed in node_modules: run scripts/install.sh"
        );
        let ca_file = pki(dir);
        let mut config = serde_json::json!({
            "port": port,
            "cert": dir.join("oidc-cert.pem"),
            "key": dir.join("oidc-key.pem"),
            "client": {
                "client_id": client.id,
                "client_secret": client.secret,
                "redirect_uris": [client.redirect_uri],
            },
            "accounts": accounts_json(accounts),
        });
        if let Some(mode) = mode {
            config["mode"] = mode.into();
        }
        let (child, ready) = spawn_script(script, &config).await;
        let port = u16::try_from(ready["port"].as_u64().unwrap()).unwrap();
        let issuer = ready["issuer"].as_str().unwrap().to_string();
        assert_eq!(issuer, format!("https://localhost:{port}"));
        OidcProvider {
            port,
            issuer,
            ca_file,
            child,
        }
    }

    /// `path` on the provider, e.g. `/.well-known/openid-configuration`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// The CA's PEM.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(&self.ca_file).unwrap()
    }

    /// A browser-like client that trusts this provider: see [`browser`].
    pub fn browser(&self) -> reqwest::Client {
        browser(&self.ca_file)
    }

    /// Stops the provider (nothing listens on its port afterwards).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A port nothing listens on now, for a provider whose issuer URL the
/// server must be configured with before the provider can start (the
/// provider must know the server's redirect URI).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `tests/helpers/<script>` with node and `config` (JSON) as its one
/// argument; waits for its ready line (a JSON object with `port`) on
/// stdout, then passes what it says later to the test's stderr.
pub async fn spawn_script(script: &str, config: &serde_json::Value) -> (Child, serde_json::Value) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script_path = manifest.join("tests/helpers").join(script);
    let mut child = Command::new("node")
        .arg(&script_path)
        .arg(config.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start node ({script}): {e}"));
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let line = out
                .next_line()
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{script} exited at start"));
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) if v.get("port").is_some() => break v,
                _ => eprintln!("{script}: {line}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{script} did not start within 30 s"));
    let name = script.to_string();
    tokio::spawn(async move {
        while let Ok(Some(line)) = out.next_line().await {
            eprintln!("{name}: {line}");
        }
    });
    (child, ready)
}

/// Where a redirect goes, resolved against the request's URL.
fn location(res: &reqwest::Response, base: &Url) -> Url {
    let loc = res
        .headers()
        .get(reqwest::header::LOCATION)
        .unwrap_or_else(|| panic!("{} from {base} has no Location", res.status()))
        .to_str()
        .unwrap();
    base.join(loc).unwrap()
}

/// The `action` of the first form in `html`.
fn form_action(html: &str) -> Option<String> {
    let form = &html[html.find("<form")?..];
    let tag = &form[..form.find('>')?];
    let start = tag.find("action=\"")? + "action=\"".len();
    let end = start + tag[start..].find('"')?;
    Some(tag[start..end].replace("&amp;", "&"))
}

/// Walks a browser from the provider's authorization URL `auth_url`: follows
/// the provider's redirects, signs in as `login` (an account's sub or email)
/// on its sign-in page if it shows one, and returns the first redirect that
/// leaves the provider's origin (the callback into the client, with code
/// and state, or error) without requesting it. `http` keeps cookies, trusts
/// the provider's CA and follows no redirects (see [`browser`]). Panics if
/// the provider refuses the request or the sign-in.
pub async fn authorize(http: &reqwest::Client, auth_url: &str, login: &str) -> String {
    let mut url = Url::parse(auth_url).unwrap();
    let origin = url.origin();
    let mut signed_in = false;
    for _ in 0..20 {
        let res = http
            .get(url.clone())
            .header("accept", "text/html")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let next = if res.status().is_redirection() {
            location(&res, &url)
        } else {
            let status = res.status();
            let body = res.text().await.unwrap();
            assert!(
                status.is_success(),
                "the provider answered GET {url} with {status}: {body}"
            );
            let action =
                form_action(&body).unwrap_or_else(|| panic!("no sign-in form at {url}: {body}"));
            assert!(
                !signed_in,
                "the provider asked to sign in again after {login:?}: {body}"
            );
            let post = url.join(&action).unwrap();
            let res = http
                .post(post.clone())
                .form(&[("login", login)])
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {post}: {e}"));
            signed_in = true;
            if !res.status().is_redirection() {
                let status = res.status();
                let body = res.text().await.unwrap();
                panic!("the provider did not sign in {login:?} ({status}): {body}");
            }
            location(&res, &post)
        };
        if next.origin() != origin {
            return next.to_string();
        }
        url = next;
    }
    panic!("more than 20 redirects within the provider from {auth_url}");
}
