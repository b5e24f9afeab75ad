//! HTTPS for the dashboard from certificate files, on a real `pilothouse
//! serve` process configured through its environment
//! (`PILOTHOUSE_TLS_CERT_FILE`, `PILOTHOUSE_TLS_KEY_FILE`,
//! `PILOTHOUSE_HTTP_REDIRECT_LISTEN`), no stand-in: TLS 1.3 with
//! X25519MLKEM768, TLS 1.2 refused, a Secure session cookie and HSTS, the
//! certificate reloaded when its files change (and kept when the new files do
//! not load), plain HTTP that only redirects to the public URL, and clear
//! refusals of half a configuration.

#![allow(clippy::unwrap_used)]

#[path = "helpers/cli.rs"]
mod cli_helpers;
#[path = "helpers/process.rs"]
mod process;
#[path = "helpers/tls.rs"]
mod tls;

use std::time::{Duration, Instant};

use cli_helpers::add_owner;
use process::{refused_start, serve_with, PASSWORD};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tls::{handshake, test_pki};

fn leaf_der(cert_pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_serves_tls_13_from_files_and_reloads_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    add_owner(&data, PASSWORD);
    let (ca, cert, key) = test_pki("first");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    let (cert_path, key_path) = (
        cert_file.to_str().unwrap().to_string(),
        key_file.to_str().unwrap().to_string(),
    );

    // Half a configuration, or a redirect without TLS, is refused at start
    // with a sentence (exit 2).
    for (env, says) in [
        (
            vec![("PILOTHOUSE_TLS_CERT_FILE", cert_path.as_str())],
            "tls_cert_file and tls_key_file go together",
        ),
        (
            vec![("PILOTHOUSE_HTTP_REDIRECT_LISTEN", "127.0.0.1:0")],
            "http_redirect_listen redirects to HTTPS",
        ),
        (
            vec![
                ("PILOTHOUSE_TLS_CERT_FILE", cert_path.as_str()),
                ("PILOTHOUSE_TLS_KEY_FILE", cert_path.as_str()),
            ],
            "holds no PEM private key",
        ),
    ] {
        let (code, err) = refused_start(&data, &env);
        assert_eq!(code, Some(2), "{env:?}: {err}");
        assert!(err.contains(says), "{env:?}: {err}");
    }

    let server = serve_with(
        &data,
        &[
            ("PILOTHOUSE_TLS_CERT_FILE", &cert_path),
            ("PILOTHOUSE_TLS_KEY_FILE", &key_path),
            ("PILOTHOUSE_HTTP_REDIRECT_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert!(
        server.web.starts_with("https://127.0.0.1:"),
        "{}",
        server.web
    );
    let host_port = server.web.trim_start_matches("https://").to_string();

    // TLS 1.3 with the post-quantum hybrid group; TLS 1.2 alone is refused.
    let h = handshake(&host_port, "localhost", &ca, &[&rustls::version::TLS13])
        .await
        .unwrap();
    assert_eq!(h.version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(h.group, "X25519MLKEM768");
    assert_eq!(h.leaf, leaf_der(&cert));
    assert!(
        handshake(&host_port, "localhost", &ca, &[&rustls::version::TLS12])
            .await
            .is_err(),
        "a TLS 1.2-only client got in"
    );

    // Over HTTPS: HSTS on every answer, and the session cookie is Secure.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client
        .get(format!("{}/login", server.web))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    let res = client
        .post(format!("{}/api/login", server.web))
        .form(&[("email", "owner@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success() || res.status().is_redirection(),
        "{}",
        res.status()
    );
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("pilothouse_session="))
        .expect("a session cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("; HttpOnly"), "{cookie}");

    // Plain HTTP only redirects, to the public URL whatever Host says.
    let redirect = server.redirect.clone().expect("the redirect listener");
    let res = client
        .get(format!("{redirect}/servers?version=1.2.3"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(
        res.headers()["location"],
        format!("{}/servers?version=1.2.3", server.web).as_str()
    );

    // New files are picked up without a restart.
    let (ca2, cert2, key2) = test_pki("second");
    std::fs::write(&key_file, &key2).unwrap();
    std::fs::write(&cert_file, &cert2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        match handshake(&host_port, "localhost", &ca2, &[&rustls::version::TLS13]).await {
            Ok(h) if h.leaf == leaf_der(&cert2) => break,
            _ => assert!(
                Instant::now() < deadline,
                "the new certificate was never served"
            ),
        }
    }
    // A replacement that does not load (a key of another certificate) is
    // logged and the certificate in use stays.
    std::fs::write(&key_file, &key).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let h = handshake(&host_port, "localhost", &ca2, &[&rustls::version::TLS13])
        .await
        .unwrap();
    assert_eq!(
        h.leaf,
        leaf_der(&cert2),
        "a mismatched pair replaced the certificate"
    );
}
