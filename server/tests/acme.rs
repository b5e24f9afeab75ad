//! HTTPS for the dashboard with a certificate from an ACME CA, no stand-in:
//! Debian's `pebble` (the ACME test server) on loopback, with
//! `pebble-challtestsrv` as its DNS server (every name resolves to
//! 127.0.0.1). Challenge validation is real: pebble fetches the http-01
//! answer from the server's plain-HTTP listener (`PEBBLE_VA_ALWAYS_VALID` is
//! not set). A real `pilothouse serve` process, configured through its
//! environment (`PILOTHOUSE_ACME_*`).
//!
//! Checked: the certificate pebble issued, over TLS 1.3 with X25519MLKEM768;
//! TLS 1.2 refused; HSTS; plain HTTP only redirects (and answers a challenge
//! only while its order is open); a restart serves the stored certificate
//! without a new order; new names get a new certificate; a CA that cannot
//! validate leaves handshakes refused with the CA's reason logged; and bad
//! settings stop the start with a sentence.

#![allow(clippy::unwrap_used)]

#[path = "helpers/cli.rs"]
mod cli_helpers;
#[path = "helpers/machine.rs"]
mod machine;
#[path = "helpers/process.rs"]
mod process;
#[path = "helpers/tls.rs"]
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_helpers::add_owner;
use machine::{free_port, skip};
use process::{refused_start, serve_with, PASSWORD};
use rustls::pki_types::CertificateDer;
use tls::{handshake, Handshake};

const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";
const NAME: &str = "dashboard.pilothouse.test";
const SECOND_NAME: &str = "ops.pilothouse.test";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// pebble and its DNS server, validating http-01 on `http_port`.
struct Pebble {
    _dns: Killed,
    _pebble: Killed,
    directory: String,
    management: String,
    /// The CA of pebble's own HTTPS listener (not of what it issues).
    listener_ca: PathBuf,
    listener_ca_pem: String,
}

impl Pebble {
    fn start(dir: &Path, http_port: u16) -> Pebble {
        let (ca, cert, key) = tls::test_pki("pebble");
        let (ca_file, cert_file, key_file) = (
            dir.join("pebble-ca.pem"),
            dir.join("pebble-cert.pem"),
            dir.join("pebble-key.pem"),
        );
        std::fs::write(&ca_file, &ca).unwrap();
        std::fs::write(&cert_file, &cert).unwrap();
        std::fs::write(&key_file, &key).unwrap();
        let (acme_port, mgmt_port, tls_port, dns_port, dns_mgmt_port) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let dns = Killed(
            Command::new(CHALLTESTSRV)
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{dns_mgmt_port}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
                "certificate": cert_file,
                "privateKey": key_file,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_file = dir.join("pebble.json");
        std::fs::write(&config_file, config.to_string()).unwrap();
        let pebble = Killed(
            Command::new(PEBBLE)
                .arg("-config")
                .arg(&config_file)
                .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
                // Validate at once, and never refuse a good nonce (pebble
                // refuses 5% by default to exercise clients' retries).
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in [acme_port, dns_port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "pebble did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Pebble {
            _dns: dns,
            _pebble: pebble,
            directory: format!("https://127.0.0.1:{acme_port}/dir"),
            management: format!("https://127.0.0.1:{mgmt_port}"),
            listener_ca: ca_file,
            listener_ca_pem: ca,
        }
    }

    /// The root pebble issues under (made anew at each start).
    async fn issuing_root(&self) -> String {
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.listener_ca_pem.as_bytes()).unwrap(),
            )
            .build()
            .unwrap();
        let res = client
            .get(format!("{}/roots/0", self.management))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.text().await.unwrap()
    }
}

/// Waits for a handshake that presents a leaf other than `not`.
async fn wait_for_certificate(
    addr: &str,
    name: &str,
    root_pem: &str,
    not: Option<&CertificateDer<'static>>,
) -> Handshake {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(h) = handshake(addr, name, root_pem, &[&rustls::version::TLS13]).await {
            if Some(&h.leaf) != not {
                return h;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no certificate from pebble within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn dns_names(leaf: &CertificateDer<'_>) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).unwrap();
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    names.sort();
    names
}

/// A client that reaches `NAME` (and the second name) at `web` and trusts
/// only `root_pem`.
fn https_client(web: &str, root_pem: &str) -> reqwest::Client {
    let addr: SocketAddr = web.trim_start_matches("https://").parse().unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .resolve(NAME, addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn pebble_missing() -> bool {
    if Path::new(PEBBLE).exists() && Path::new(CHALLTESTSRV).exists() {
        return false;
    }
    skip(
        "ACME against pebble",
        "pebble is not installed (scripts/install.sh installs it)",
    );
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_gets_its_certificate_from_pebble_and_keeps_it() {
    if pebble_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    add_owner(&data, PASSWORD);
    let http_port = free_port();
    let pebble = Pebble::start(dir.path(), http_port);
    let redirect_listen = format!("127.0.0.1:{http_port}");
    let ca_file = pebble.listener_ca.to_str().unwrap().to_string();
    let env = |domains: &str| -> Vec<(&'static str, String)> {
        vec![
            ("PILOTHOUSE_ACME_DOMAINS", domains.to_string()),
            ("PILOTHOUSE_ACME_DIRECTORY", pebble.directory.clone()),
            ("PILOTHOUSE_ACME_CA_FILE", ca_file.clone()),
            ("PILOTHOUSE_ACME_CONTACT", "ops@example.com".to_string()),
            ("PILOTHOUSE_HTTP_REDIRECT_LISTEN", redirect_listen.clone()),
        ]
    };
    let first_env = env(NAME);
    let first_env = refs(&first_env);
    let server = serve_with(&data, &first_env);
    let addr = server.web.trim_start_matches("https://").to_string();
    let root = pebble.issuing_root().await;

    // pebble validated the name over http-01 and issued; the dashboard
    // presents that certificate over TLS 1.3 with the hybrid group.
    let first = wait_for_certificate(&addr, NAME, &root, None).await;
    assert_eq!(first.version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(first.group, "X25519MLKEM768");
    assert_eq!(dns_names(&first.leaf), vec![NAME.to_string()]);
    assert!(server
        .wait_for_log(
            "the dashboard's ACME certificate is in use",
            Duration::from_secs(5)
        )
        .is_some());

    // TLS 1.2 alone is refused.
    assert!(
        handshake(&addr, NAME, &root, &[&rustls::version::TLS12])
            .await
            .is_err(),
        "a TLS 1.2-only client got in"
    );

    // A page over HTTPS, with HSTS and a Secure session cookie.
    let public = format!("https://{NAME}:{}", addr.rsplit(':').next().unwrap());
    let client = https_client(&server.web, &root);
    let res = client.get(format!("{public}/login")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let hsts = res.headers()["strict-transport-security"].to_str().unwrap();
    assert!(hsts.contains("max-age="), "{hsts}");
    let res = client
        .post(format!("{public}/api/login"))
        .form(&[("email", "owner@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("pilothouse_session="))
        .unwrap_or_else(|| panic!("no session cookie: {:?}", res.headers()));
    assert!(cookie.contains("; Secure"), "{cookie}");

    // Plain HTTP only redirects to the public HTTPS URL; the challenge path
    // answers nothing once the order is done.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = plain
        .get(format!("http://{redirect_listen}/servers?tab=security"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(
        res.headers()["location"],
        format!("{public}/servers?tab=security").as_str()
    );
    let res = plain
        .get(format!(
            "http://{redirect_listen}/.well-known/acme-challenge/anything"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // The account key and the certificate's key are kept 0600 in a 0700
    // directory.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data.join("acme")), 0o700);
    for file in ["account.json", "key.pem", "cert.pem"] {
        assert_eq!(mode(data.join("acme").join(file)), 0o600, "{file}");
    }

    // A restart serves the stored certificate at once, without a new order.
    drop(server);
    let server = serve_with(&data, &first_env);
    let addr = server.web.trim_start_matches("https://").to_string();
    let again = handshake(&addr, NAME, &root, &[&rustls::version::TLS13])
        .await
        .unwrap();
    assert_eq!(
        again.leaf, first.leaf,
        "the restart did not reuse the stored certificate"
    );
    assert!(server
        .wait_for_log(
            "ordering the dashboard's certificate",
            Duration::from_secs(2)
        )
        .is_none());

    // New names: a new certificate for both, ordered at the next start.
    drop(server);
    let both = env("dashboard.pilothouse.test, ops.pilothouse.test");
    let server = serve_with(&data, &refs(&both));
    let addr = server.web.trim_start_matches("https://").to_string();
    let second = wait_for_certificate(&addr, SECOND_NAME, &root, Some(&first.leaf)).await;
    assert_eq!(
        dns_names(&second.leaf),
        vec![NAME.to_string(), SECOND_NAME.to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_the_ca_cannot_validate_leaves_the_dashboard_without_a_certificate() {
    if pebble_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    add_owner(&data, PASSWORD);
    // pebble checks http-01 on a port where nothing answers: the server's
    // plain-HTTP listener is elsewhere.
    let pebble = Pebble::start(dir.path(), free_port());
    let ca_file = pebble.listener_ca.to_str().unwrap().to_string();
    let server = serve_with(
        &data,
        &[
            ("PILOTHOUSE_ACME_DOMAINS", NAME),
            ("PILOTHOUSE_ACME_DIRECTORY", &pebble.directory),
            ("PILOTHOUSE_ACME_CA_FILE", &ca_file),
            ("PILOTHOUSE_HTTP_REDIRECT_LISTEN", "127.0.0.1:0"),
        ],
    );
    let failure = server
        .wait_for_log(
            "could not get the dashboard's certificate by ACME",
            Duration::from_secs(90),
        )
        .expect("the failed order was not logged");
    assert!(failure.contains(NAME), "{failure}");
    assert!(failure.contains("retry_in_secs=60"), "{failure}");
    // Nothing to present: every handshake is refused, none gets a
    // certificate the server made up.
    let addr = server.web.trim_start_matches("https://").to_string();
    let root = pebble.issuing_root().await;
    assert!(handshake(&addr, NAME, &root, &[&rustls::version::TLS13])
        .await
        .is_err());
    assert!(!data.join("acme").join("cert.pem").exists());
}

#[test]
fn bad_acme_settings_stop_the_start_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_, cert, key) = tls::test_pki("acme-settings");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    let not_pem = dir.path().join("not-a-cert.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let redirect = ("PILOTHOUSE_HTTP_REDIRECT_LISTEN", "127.0.0.1:0");
    let domain = ("PILOTHOUSE_ACME_DOMAINS", NAME);
    for (env, says) in [
        (vec![domain], "acme_domains needs http_redirect_listen"),
        (
            vec![
                domain,
                redirect,
                ("PILOTHOUSE_TLS_CERT_FILE", cert_file.to_str().unwrap()),
                ("PILOTHOUSE_TLS_KEY_FILE", key_file.to_str().unwrap()),
            ],
            "acme_domains and tls_cert_file both give the dashboard a certificate",
        ),
        (
            vec![("PILOTHOUSE_ACME_DOMAINS", "localhost"), redirect],
            "\"localhost\" is not a DNS name",
        ),
        (
            vec![("PILOTHOUSE_ACME_DOMAINS", "*.example.com"), redirect],
            "is not a DNS name",
        ),
        (
            vec![
                domain,
                redirect,
                ("PILOTHOUSE_ACME_DIRECTORY", "http://127.0.0.1:14000/dir"),
            ],
            "is not an https:// URL",
        ),
        (
            vec![
                domain,
                redirect,
                ("PILOTHOUSE_ACME_CONTACT", "ops at example"),
            ],
            "is not an email address",
        ),
        (
            vec![
                domain,
                redirect,
                ("PILOTHOUSE_ACME_CA_FILE", not_pem.to_str().unwrap()),
            ],
            "is not a PEM certificate",
        ),
        (
            vec![("PILOTHOUSE_ACME_DIRECTORY", "https://acme.example/dir")],
            "acme_directory is set but acme_domains is empty",
        ),
    ] {
        let (code, err) = refused_start(&data, &env);
        assert_eq!(code, Some(2), "{env:?}: {err}");
        assert!(err.contains(says), "{env:?}: {err}");
    }
}
