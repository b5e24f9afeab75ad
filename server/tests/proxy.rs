//! The agent gateway behind a real nginx that terminates the agents' TLS:
//! the real agent registers and runs through nginx, and nobody else can use
//! the forwarded-certificate header. nginx (Debian's package) is started by
//! the test on a loopback port with its own configuration, and stopped after.
//!
//! Attacks tried from an address the gateway trusts as a proxy: another
//! agent's certificate without the proxy's secret, with a wrong secret, and a
//! certificate the agent CA never issued with the right secret.

#![allow(clippy::unwrap_used)]

mod helpers;

use helpers::machine::free_port;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::config::Config;
use agent::register::{register, RegisterOptions};
use control::testing::TestDb;
use control::{Role, Timestamp};
use helpers::TestApp;
use secrecy::ExposeSecret;
use serde_json::Value;

const SECRET: &str = "proxy-secret-0123456789abcdef0123456789abcdef";
const CERT_HEADER: &str = "x-client-cert";
const SECRET_HEADER: &str = "x-pilothouse-proxy-secret";

/// nginx, or `None` (with a visible SKIP) where it is not installed outside CI.
fn nginx_binary() -> Option<PathBuf> {
    let found = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        helpers::machine::skip(
            "proxy tests",
            "nginx is not installed (scripts/install.sh installs it)",
        );
    }
    found
}

struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_nginx(binary: &Path, app: &TestApp) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = app.control_keys().await.ca;
    let (cert, key) = ca
        .issue_server(&["localhost".to_string()], Timestamp::now())
        .unwrap();
    // The chain up to the agent CA, as the gateway sends it: the agent checks
    // its pin against the CA certificate the server presents.
    std::fs::write(d.join("server.crt"), format!("{cert}{}", ca.cert_pem())).unwrap();
    std::fs::write(d.join("server.key"), key).unwrap();
    std::fs::write(d.join("ca.crt"), ca.cert_pem()).unwrap();
    let port = free_port();
    let gateway = app.agent_addr.port();
    let dd = d.display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dd}/nginx.pid;
error_log {dd}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {dd}/access.log;
    client_body_temp_path {dd}/body;
    proxy_temp_path {dd}/proxy;
    fastcgi_temp_path {dd}/fastcgi;
    uwsgi_temp_path {dd}/uwsgi;
    scgi_temp_path {dd}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate {dd}/server.crt;
        ssl_certificate_key {dd}/server.key;
        ssl_client_certificate {dd}/ca.crt;
        ssl_verify_client optional;
        location / {{
            proxy_pass https://127.0.0.1:{gateway};
            proxy_http_version 1.1;
            proxy_read_timeout 60s;
            proxy_ssl_trusted_certificate {dd}/ca.crt;
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_set_header {CERT_HEADER} $ssl_client_escaped_cert;
            proxy_set_header {SECRET_HEADER} "{SECRET}";
        }}
    }}
}}
"#
    );
    std::fs::write(d.join("nginx.conf"), conf).unwrap();
    let child = Command::new(binary)
        .arg("-p")
        .arg(d)
        .arg("-c")
        .arg(d.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx { child, port, dir }
}

fn tls_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(helpers::agent_tls::client_config(ca_pem, None))
        .build()
        .unwrap()
}

/// Escapes as nginx's `$ssl_client_escaped_cert` does: `%XX` for everything
/// but unreserved characters.
fn escaped(pem: &str) -> String {
    pem.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn the_real_agent_runs_through_nginx_and_nobody_else_can(db: TestDb) {
    let Some(nginx_bin) = nginx_binary() else {
        return;
    };
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), format!("{SECRET}\n")).unwrap();
    let secret_path = secret_file.path().to_path_buf();
    let app = TestApp::spawn_with(db, move |c| {
        c.agent_cert_header = Some(CERT_HEADER.into());
        c.agent_trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.agent_proxy_secret_file = Some(secret_path);
    })
    .await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let owner = app.signed_in("owner@example.com").await;
    let nginx = start_nginx(&nginx_bin, &app).await;

    // The real agent registers and runs through nginx.
    let token = control::agents::create_registration_token_cli(
        &control::access::Operator::command_line(app.db.store.clone()),
        "Acme",
        &app.ca_pin,
        600,
        Timestamp::now(),
    )
    .await
    .unwrap();
    let state = nginx.dir.path().join("agent");
    let registered = register(RegisterOptions {
        server: format!("https://localhost:{}", nginx.port),
        token: token.token.expose_secret().to_string(),
        state_dir: state.clone(),
        hostname: Some("web-1".into()),
        no_pqc: false,
        force: false,
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "registration through nginx: {e}\n{}",
            std::fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default()
        )
    });
    let mut running = agent::run::start(&state, Config::default()).unwrap();
    let res = app
        .call(&owner, "ping-server", &[("id", &registered.agent_id)])
        .await;
    let ping = res
        .json::<Value>()
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let outcome = running.agent.poll_once().await.unwrap();
    assert_eq!(outcome.executed, 1, "{outcome:?}");
    let state_json: Value = app
        .call(&owner, "command-state", &[("id", &ping)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(state_json["state"], "succeeded");

    // Straight to the gateway from the trusted address, with the agent's
    // (public) certificate: refused without the proxy's secret.
    let cert_pem = std::fs::read_to_string(state.join("tls.crt")).unwrap();
    let ca_pem = std::fs::read_to_string(app.dir.path().join("agent-ca.crt")).unwrap();
    let direct = tls_client(&ca_pem);
    let token_url = format!("https://127.0.0.1:{}/agent/v1/token", app.agent_addr.port());
    let try_with = |secret: Option<&str>, pem: &str| {
        let mut req = direct.post(&token_url).header(CERT_HEADER, escaped(pem));
        if let Some(s) = secret {
            req = req.header(SECRET_HEADER, s);
        }
        req.send()
    };
    assert_eq!(try_with(None, &cert_pem).await.unwrap().status(), 401);
    assert_eq!(
        try_with(Some("proxy-secret-guess"), &cert_pem)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        try_with(Some(&SECRET[..SECRET.len() - 1]), &cert_pem)
            .await
            .unwrap()
            .status(),
        401
    );
    // A certificate the agent CA never issued, with the right secret.
    let key = rcgen::KeyPair::generate().unwrap();
    let forged = rcgen::CertificateParams::new(vec!["web-1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem();
    assert_eq!(try_with(Some(SECRET), &forged).await.unwrap().status(), 401);
    assert_eq!(
        try_with(Some(SECRET), "not a certificate")
            .await
            .unwrap()
            .status(),
        401
    );
    // The secret and an issued certificate are what the proxy vouches with.
    assert_eq!(
        try_with(Some(SECRET), &cert_pem).await.unwrap().status(),
        200
    );
    drop(nginx);
}

#[tokio::test]
async fn a_cert_header_without_a_proxy_secret_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite().await;
    let mut config = server::Config::load(
        None,
        server::Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            database_url: Some(db.url.clone()),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            agent_listen: Some("127.0.0.1:0".parse().unwrap()),
        },
    )
    .unwrap();
    config.agent_cert_header = Some(CERT_HEADER.into());
    config.agent_trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let err = server::Application::build(config).await.err().unwrap();
    assert!(err.to_string().contains("agent_proxy_secret_file"), "{err}");
}

control::both_backends!(the_real_agent_runs_through_nginx_and_nobody_else_can);
