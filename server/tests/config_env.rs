//! Settings whose names end in `_file` are read from the environment like
//! any other (`PILOTHOUSE_MASTER_KEY_FILE`, `PILOTHOUSE_TLS_CERT_FILE`, ...);
//! only `PILOTHOUSE_DATABASE_URL_FILE`, `PILOTHOUSE_SMTP_PASSWORD_FILE`,
//! `PILOTHOUSE_OIDC_CLIENT_SECRET_FILE` and
//! `PILOTHOUSE_GITHUB_CLIENT_SECRET_FILE` name files holding a secret's
//! value. On a real `pilothouse serve` process (and, for SMTP, a real SMTP
//! server: helpers/smtp.rs; for GitHub, the stand-in for its endpoints:
//! helpers/github.rs).

#![allow(clippy::unwrap_used)]

#[path = "helpers/cli.rs"]
mod cli_helpers;
#[path = "helpers/github.rs"]
mod github;
#[path = "helpers/oidc.rs"]
mod oidc;
#[path = "helpers/process.rs"]
mod process;
#[path = "helpers/smtp.rs"]
mod smtp;
#[path = "helpers/tls.rs"]
mod tls;

#[test]
fn the_master_key_file_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("keys").join("master.key");
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let server = process::serve_with(
        &data,
        &[("PILOTHOUSE_MASTER_KEY_FILE", key.to_str().unwrap())],
    );
    assert!(
        key.is_file(),
        "the master key was not made where the variable says"
    );
    assert!(
        !data.join("master.key").exists(),
        "the variable was ignored: the default master key was made"
    );
    drop(server);
}

#[test]
fn the_database_url_file_holds_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("db-url");
    let db = dir.path().join("elsewhere.db");
    std::fs::write(&url_file, format!("sqlite://{}?mode=rwc\n", db.display())).unwrap();
    let server = process::serve_with(
        &dir.path().join("data"),
        &[("PILOTHOUSE_DATABASE_URL_FILE", url_file.to_str().unwrap())],
    );
    assert!(
        db.is_file(),
        "the database is not where the file's URL says"
    );
    drop(server);
}

#[tokio::test]
async fn the_smtp_password_file_holds_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut sink = smtp::SmtpSink::start(
        &dir.path().join("smtp"),
        0,
        smtp::SinkTls::StartTls,
        Some(("mailer", "from-a-file-123")),
    )
    .await;
    let password_file = dir.path().join("smtp-password");
    std::fs::write(&password_file, "from-a-file-123\n").unwrap();
    cli_helpers::add_owner(&data, "correct horse battery staple");
    let server = process::serve_with(
        &data,
        &[
            (
                "PILOTHOUSE_SMTP_SERVER",
                &format!("localhost:{}", sink.port),
            ),
            ("PILOTHOUSE_SMTP_USERNAME", "mailer"),
            (
                "PILOTHOUSE_SMTP_PASSWORD_FILE",
                password_file.to_str().unwrap(),
            ),
            ("PILOTHOUSE_SMTP_CA_FILE", sink.ca_file.to_str().unwrap()),
            (
                "PILOTHOUSE_MAIL_FROM",
                "Pilothouse <pilothouse@example.com>",
            ),
        ],
    );
    let res = reqwest::Client::new()
        .post(format!("{}/api/request-password-reset", server.web))
        .form(&[("email", "owner@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let message = sink
        .next(std::time::Duration::from_secs(30))
        .await
        .expect("the reset email, sent with the password from the file");
    assert_eq!(message.user.as_deref(), Some("mailer"));
    assert!(message.secure);
    drop(server);
}

#[tokio::test]
async fn the_github_client_secret_file_holds_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret_file = dir.path().join("github-secret");
    std::fs::write(&secret_file, "from-a-file-456\n").unwrap();
    cli_helpers::add_owner(&data, "correct horse battery staple");
    let port = oidc::free_port();
    let server = process::serve_with(
        &data,
        &[
            ("PILOTHOUSE_GITHUB_CLIENT_ID", "Iv1.env"),
            (
                "PILOTHOUSE_GITHUB_CLIENT_SECRET_FILE",
                secret_file.to_str().unwrap(),
            ),
            ("PILOTHOUSE_GITHUB_URL", &format!("http://127.0.0.1:{port}")),
        ],
    );
    let stand_in = github::GitHubStandIn::start(
        port,
        "Iv1.env",
        "from-a-file-456",
        &format!("{}/auth/github/callback", server.web),
        vec![github::user(
            7,
            "owner",
            &[("owner@example.com", true, true)],
            &[],
        )],
    )
    .await;
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = browser
        .get(format!("{}/auth/github/start", server.web))
        .send()
        .await
        .unwrap();
    let to = res.headers()["location"].to_str().unwrap().to_string();
    let back = oidc::authorize(&browser, &to, "owner").await;
    browser.get(&back).send().await.unwrap();
    // The code was exchanged with the secret from the file (a wrong one gets
    // incorrect_client_credentials): the sign-in reached the account rules,
    // which refuse an identity not linked to the existing account.
    let page = browser
        .get(format!("{}/login", server.web))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("not linked to this GitHub account"), "{page}");
    stand_in.stop().await;
    drop(server);
}
