//! The master key as a systemd credential (`master_key_credential`, read at
//! `$CREDENTIALS_DIRECTORY/NAME` as systemd's `LoadCredential=` lays it out;
//! the test makes that directory itself), and its rotation in three steps.
//!
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

/// `pilothouse ARGS` with `env`, outside any systemd unit.
fn pilothouse_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pilothouse"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Lays out `key` as systemd does for `LoadCredential=NAME:key`: a copy in
/// the credentials directory, mode 0400.
fn load_credential(creds: &std::path::Path, name: &str, key: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let to = creds.join(name);
    if to.exists() {
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::copy(key, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o400)).unwrap();
}

#[tokio::test]
async fn the_master_key_can_be_a_systemd_credential_and_rotates_without_a_failed_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creds = dir.path().join("credentials");
    let source = dir.path().join("etc").join("master.key");
    std::fs::create_dir_all(source.parent().unwrap()).unwrap();
    control::files::private_dir(&creds).unwrap();
    // The operator's key file, and the credential systemd makes of it.
    let first = control::secrets::Keyring::open(&source).unwrap().key_ids()[0].clone();
    load_credential(&creds, "pilothouse-master-key", &source);
    let creds_dir = creds.to_str().unwrap();
    let env = [
        ("PILOTHOUSE_MASTER_KEY_CREDENTIAL", "pilothouse-master-key"),
        ("CREDENTIALS_DIRECTORY", creds_dir),
    ];

    // Bad settings are refused with a sentence.
    let (code, err) = process::refused_start(
        &data,
        &[("PILOTHOUSE_MASTER_KEY_CREDENTIAL", "pilothouse-master-key")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("CREDENTIALS_DIRECTORY is not set"), "{err}");
    let (code, err) = process::refused_start(
        &data,
        &[
            ("PILOTHOUSE_MASTER_KEY_CREDENTIAL", "../master.key"),
            ("CREDENTIALS_DIRECTORY", creds_dir),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no `/`"), "{err}");
    let (_, err) = process::refused_start(
        &data,
        &[
            ("PILOTHOUSE_MASTER_KEY_CREDENTIAL", "not-loaded"),
            ("CREDENTIALS_DIRECTORY", creds_dir),
        ],
    );
    assert!(err.contains("is the credential loaded"), "{err}");

    // Served with the credential: nothing is written beside it or in the
    // data directory, and the database is under its key.
    cli_helpers::add_owner(&data, process::PASSWORD);
    let server = process::serve_with(&data, &env);
    assert!(!data.join("master.key").exists(), "no key file was made");
    assert_eq!(
        std::fs::read_dir(&creds).unwrap().count(),
        1,
        "the credentials directory is not written"
    );
    let store = control::store::Store::connect(&control::store::Store::sqlite_url(&data))
        .await
        .unwrap();
    let current = || async {
        sqlx::query_scalar::<_, String>("SELECT current_key_id FROM secret_keyring WHERE id = 1")
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    assert_eq!(current().await, first);

    // The rotation command cannot change a credential, and says what to do.
    let data_arg = data.to_str().unwrap();
    let out = pilothouse_env(
        &["secrets", "rotate-master-key", "--data-dir", data_arg],
        &[
            ("PILOTHOUSE_MASTER_KEY_CREDENTIAL", "pilothouse-master-key"),
            ("CREDENTIALS_DIRECTORY", creds_dir),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        cli_helpers::text(&out.stderr).contains("PILOTHOUSE_MASTER_KEY_FILE"),
        "{}",
        cli_helpers::text(&out.stderr)
    );

    // 1. The next key, beside the source file.
    let on_source = [("PILOTHOUSE_MASTER_KEY_FILE", source.to_str().unwrap())];
    let prepared = cli_helpers::ok(pilothouse_env(
        &[
            "secrets",
            "rotate-master-key",
            "--prepare",
            "--data-dir",
            data_arg,
        ],
        &on_source,
    ));
    let next = dir.path().join("etc").join("master.key.next");
    let next_id = control::secrets::Keyring::open(&next).unwrap().key_ids()[0].clone();
    assert!(prepared.contains(&next_id), "{prepared}");
    assert_eq!(current().await, first, "--prepare switches nothing");
    // 2. Each server is given it as NAME.next and restarted.
    load_credential(&creds, "pilothouse-master-key.next", &next);
    drop(server);
    let server = process::serve_with(&data, &env);
    // 3. The switch and the re-wrap, while that server runs.
    let rotated = cli_helpers::ok(pilothouse_env(
        &["secrets", "rotate-master-key", "--data-dir", data_arg],
        &on_source,
    ));
    assert!(rotated.contains(&next_id), "{rotated}");
    assert_eq!(current().await, next_id);
    assert!(!next.exists(), "the next key replaced the source file");
    // The running server wraps a new secret under the new key.
    let owner = process::sign_in(&server.web).await;
    let res = owner
        .post(format!("{}/api/set-secret", server.web))
        .form(&[
            ("name", "AFTER_ROTATION"),
            ("kind", "env"),
            ("value", "set after the switch"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    drop(server);

    // Afterwards the credential is the new key alone; the old one opens
    // nothing and the server says so.
    std::fs::remove_file(creds.join("pilothouse-master-key.next")).unwrap();
    let (code, err) = process::refused_start(&data, &env);
    assert_ne!(code, Some(0));
    assert!(err.contains("wrong master key"), "{err}");
    load_credential(&creds, "pilothouse-master-key", &source);
    let server = process::serve_with(&data, &env);
    let owner = process::sign_in(&server.web).await;
    let listed = process::call(&owner, &server.web, "secrets").await;
    assert!(listed.to_string().contains("AFTER_ROTATION"), "{listed}");
    store.close().await;
}

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
