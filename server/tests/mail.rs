//! Email against a real SMTP server on loopback (npm `smtp-server`, see
//! helpers/smtp.rs), on both backends: a password reset link that arrives
//! over STARTTLS with SMTP AUTH and works once (also when two tabs race with
//! it), every session ending with it; a message that waits out an SMTP
//! outage and arrives once the server is back; implicit TLS; and nothing
//! sent in the clear to a server that does not offer STARTTLS, nor to one
//! whose certificate is not trusted. A sign-in from a new browser is told
//! by email, and its "this wasn't me" link locks the account. Bad email
//! settings stop the server with a sentence naming the setting.

#![allow(clippy::unwrap_used)]

mod helpers;

use std::time::Duration;

use control::testing::TestDb;
use control::Role;
use helpers::machine::free_port;
use helpers::smtp::{SinkTls, SmtpSink};
use helpers::{TestApp, PASSWORD};
use server::Config;

const NEW: &str = "a brand new passphrase, nine words long";

fn mail_config(config: &mut Config, port: u16, security: &str, ca: Option<&std::path::Path>) {
    config.smtp_server = Some(format!("localhost:{port}"));
    config.smtp_security = Some(security.into());
    config.smtp_ca_file = ca.map(std::path::Path::to_path_buf);
    config.mail_from = Some("Pilothouse <pilothouse@example.com>".into());
}

/// The token of the reset link in a message's text.
fn token_in(text: &str) -> String {
    let at = text.find("/reset-password/").expect("a reset link") + "/reset-password/".len();
    let token: String = text[at..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(token.len(), 64, "{text}");
    token
}

async fn ask(app: &TestApp, email: &str) -> reqwest::Response {
    app.call(&app.client(), "request-password-reset", &[("email", email)])
        .await
}

/// Waits until the outbox's newest message has failed at least once;
/// returns its last error.
async fn first_failure(app: &TestApp) -> String {
    for _ in 0..100 {
        let entries = control::mail::entries(&app.db.store, 1).await.unwrap();
        if let Some(e) = entries.first().filter(|e| e.attempts > 0) {
            assert!(e.sent_at.is_none());
            return e.last_error.clone().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the message did not fail within 20 s");
}

/// Waits until the outbox's only message is recorded as sent (the sink
/// reports a message before the mailer's session with it has ended).
async fn sent(app: &TestApp) -> control::mail::OutboxEntry {
    for _ in 0..100 {
        let entries = control::mail::entries(&app.db.store, 10).await.unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
        if entries[0].sent_at.is_some() {
            return entries[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the message was not recorded as sent within 10 s");
}

async fn a_reset_link_arrives_and_works_once(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start(
        dir.path(),
        0,
        SinkTls::StartTls,
        Some(("mailer", "smtp-pass-123")),
    )
    .await;
    let (port, ca) = (sink.port, sink.ca_file.clone());
    let app = TestApp::spawn_with(db, |c| {
        mail_config(c, port, "starttls", Some(&ca));
        c.smtp_username = Some("mailer".into());
        c.smtp_password = Some(secrecy::SecretString::from("smtp-pass-123"));
    })
    .await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let before = app.signed_in("owner@example.com").await;
    let login = app
        .page(&app.client(), "/login")
        .await
        .text()
        .await
        .unwrap();
    assert!(login.contains("Forgot your password?"), "{login}");

    // The same answer for an address with no account, and no message.
    let unknown = ask(&app, "nobody@example.com").await;
    assert_eq!(unknown.status(), 200);
    let unknown: String = unknown.json().await.unwrap();
    let known = ask(&app, "Owner@Example.com").await;
    assert_eq!(known.status(), 200);
    assert_eq!(known.json::<String>().await.unwrap(), unknown);

    let message = sink
        .next(Duration::from_secs(30))
        .await
        .expect("the reset email");
    assert_eq!(message.to, vec!["owner@example.com"]);
    assert!(message.secure, "sent without TLS");
    assert_eq!(message.user.as_deref(), Some("mailer"));
    assert_eq!(
        message.header("Subject").as_deref(),
        Some("Reset your Pilothouse password")
    );
    assert!(message
        .header("From")
        .unwrap()
        .contains("pilothouse@example.com"));
    let text = message.text();
    assert!(
        text.contains(&format!("{}/reset-password/", app.addr)),
        "{text}"
    );
    let token = token_in(&text);
    assert!(
        sink.next(Duration::from_secs(3)).await.is_none(),
        "a message for an address with no account"
    );
    // Sent: recorded, and its sealed body is gone.
    let entry = sent(&app).await;
    assert_eq!((entry.kind.as_str(), entry.attempts), ("password_reset", 0));
    let bodies: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mail_bodies")
        .fetch_one(app.db.store.pool())
        .await
        .unwrap();
    assert_eq!(bodies, 0);

    // The page shows whose password it sets; bad new passwords are refused.
    let details = app
        .call(&app.client(), "reset-details", &[("token", &token)])
        .await;
    assert_eq!(details.json::<String>().await.unwrap(), "owner@example.com");
    let page = app
        .page(&app.client(), &format!("/reset-password/{token}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("owner@example.com"), "{page}");
    let reset = |new: &'static str, repeat: &'static str| {
        let (app, token) = (&app, token.clone());
        async move {
            app.call(
                &app.client(),
                "reset-password",
                &[
                    ("token", token.as_str()),
                    ("new_password", new),
                    ("repeat", repeat),
                ],
            )
            .await
        }
    };
    assert_eq!(reset("short", "short").await.status(), 400);
    assert_eq!(reset(NEW, "not the same at all, no").await.status(), 400);

    // Two tabs at once with the one link: one sets the password.
    let (a, b) = tokio::join!(
        reset(NEW, NEW),
        reset(
            "another passphrase, also long",
            "another passphrase, also long"
        )
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 404]);
    let winner = if a.status() == 200 {
        NEW
    } else {
        "another passphrase, also long"
    };
    let again = app
        .call(&app.client(), "reset-details", &[("token", &token)])
        .await;
    assert_eq!(again.status(), 404);
    assert!(again
        .text()
        .await
        .unwrap()
        .contains("expired or was already used"));

    // Every session ended; the old password is dead, the new one works.
    assert_eq!(app.call(&before, "team", &[]).await.status(), 401);
    let old = app
        .call(
            &app.client(),
            "login",
            &[("email", "owner@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(old.status(), 401);
    let new = app
        .call(
            &app.client(),
            "login",
            &[("email", "owner@example.com"), ("password", winner)],
        )
        .await;
    assert_eq!(new.status(), 200);
    assert_eq!(new.headers().get("location").unwrap(), "/");

    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_events ORDER BY seq")
        .fetch_all(app.db.store.pool())
        .await
        .unwrap();
    for a in ["user.password_reset_requested", "user.password_reset"] {
        assert!(actions.iter().any(|x| x == a), "{a} missing: {actions:?}");
    }
}

async fn a_message_waits_out_an_smtp_outage(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ca_path = helpers::smtp::pki(dir.path());
    let app = TestApp::spawn_with(db, |c| mail_config(c, port, "starttls", Some(&ca_path))).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    // Nothing listens on the port yet.
    assert_eq!(ask(&app, "owner@example.com").await.status(), 200);
    let error = first_failure(&app).await;
    assert!(error.contains("SMTP") || error.contains("smtp"), "{error}");

    let mut sink = SmtpSink::start(dir.path(), port, SinkTls::StartTls, None).await;
    let message = sink
        .next(Duration::from_secs(60))
        .await
        .expect("the message after the outage");
    assert_eq!(message.to, vec!["owner@example.com"]);
    assert!(message.secure);
    token_in(&message.text());
    let entry = sent(&app).await;
    assert!(entry.attempts >= 1, "{entry:?}");
}

async fn implicit_tls_works_and_nothing_goes_out_unprotected(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    // TLS from the first byte.
    let mut tls = SmtpSink::start(&dir.path().join("tls"), 0, SinkTls::Tls, None).await;
    // A server that does not offer STARTTLS, and one whose certificate the
    // mailer is not told to trust.
    let mut plain = SmtpSink::start(&dir.path().join("plain"), 0, SinkTls::Plain, None).await;
    let mut untrusted =
        SmtpSink::start(&dir.path().join("untrusted"), 0, SinkTls::StartTls, None).await;
    let (tls_port, tls_ca) = (tls.port, tls.ca_file.clone());
    let app = TestApp::spawn_with(db, |c| mail_config(c, tls_port, "tls", Some(&tls_ca))).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    assert_eq!(ask(&app, "owner@example.com").await.status(), 200);
    let message = tls.next(Duration::from_secs(30)).await.expect("over TLS");
    assert!(message.secure);

    for (sink, ca, what) in [
        (&mut plain, None, "without STARTTLS"),
        (&mut untrusted, None, "with an untrusted certificate"),
    ] {
        let port = sink.port;
        let other = TestDb::sqlite().await;
        let app = TestApp::spawn_with(other, |c| mail_config(c, port, "starttls", ca)).await;
        app.add_user("Acme", "owner@example.com", Role::Owner).await;
        assert_eq!(ask(&app, "owner@example.com").await.status(), 200);
        let error = first_failure(&app).await;
        assert!(
            sink.next(Duration::from_secs(2)).await.is_none(),
            "a message went to a server {what}"
        );
        assert!(!error.contains("reset-password"), "{error}");
        eprintln!("refused {what}: {error}");
    }
}

async fn a_sign_in_from_a_new_browser_is_told_and_can_be_disowned(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start(dir.path(), 0, SinkTls::StartTls, None).await;
    let (port, ca) = (sink.port, sink.ca_file.clone());
    let app = TestApp::spawn_with(db, |c| mail_config(c, port, "starttls", Some(&ca))).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let creds = [("email", "owner@example.com"), ("password", PASSWORD)];

    // The first sign-in, and the same browser again: nothing to tell.
    let laptop = app.client();
    assert_eq!(app.call(&laptop, "login", &creds).await.status(), 200);
    assert_eq!(app.call(&laptop, "login", &creds).await.status(), 200);
    assert!(sink.next(Duration::from_secs(3)).await.is_none());

    // Another browser: the owner is told, by email and in the dashboard.
    let other = app.client();
    assert_eq!(app.call(&other, "login", &creds).await.status(), 200);
    let message = sink
        .next(Duration::from_secs(30))
        .await
        .expect("the notice");
    assert_eq!(
        message.header("Subject").as_deref(),
        Some("New sign-in to your Pilothouse account")
    );
    let text = message.text();
    for part in ["127.0.0.1", "a new device", "Method: password", "/not-me/"] {
        assert!(text.contains(part), "{part}: {text}");
    }
    let at = text.find("/not-me/").unwrap() + "/not-me/".len();
    let token: String = text[at..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    let me: serde_json::Value = app
        .call(&laptop, "current-user", &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["unread_notices"], 1);
    let settings = app.page(&laptop, "/settings").await.text().await.unwrap();
    assert!(
        settings.contains("data-testid=\"sign-in-notice\""),
        "{settings}"
    );

    // Opening the link only asks; confirming signs out everywhere and locks
    // the password, and a reset link follows.
    let page = app
        .page(&app.client(), &format!("/not-me/{token}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Sign out everywhere"), "{page}");
    assert_eq!(app.call(&laptop, "team", &[]).await.status(), 200);
    let res = app
        .call(&app.client(), "not-me", &[("token", &token)])
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<String>().await.unwrap(), "owner@example.com");
    assert_eq!(app.call(&laptop, "team", &[]).await.status(), 401);
    assert_eq!(app.call(&other, "team", &[]).await.status(), 401);
    assert_eq!(app.call(&app.client(), "login", &creds).await.status(), 401);
    let again = app
        .call(&app.client(), "not-me", &[("token", &token)])
        .await;
    assert_eq!(again.status(), 404);
    let reset = sink
        .next(Duration::from_secs(30))
        .await
        .expect("the reset link");
    token_in(&reset.text());
}

/// Bad email settings stop the server with a sentence naming the setting.
#[tokio::test]
async fn bad_email_settings_are_refused_at_start() {
    for (change, says) in [
        (
            (|c: &mut Config| {
                mail_config(c, 25, "none", None);
                c.smtp_server = Some("mail.example.com:25".into());
            }) as fn(&mut Config),
            "sends email unencrypted",
        ),
        (|c| mail_config(c, 25, "sometimes", None), "smtp_security"),
        (
            |c| {
                mail_config(c, 25, "starttls", None);
                c.mail_from = None;
            },
            "mail_from",
        ),
        (
            |c| {
                mail_config(c, 25, "starttls", None);
                c.smtp_server = Some("localhost".into());
            },
            "smtp_server",
        ),
        (
            |c| {
                mail_config(c, 25, "starttls", None);
                c.smtp_username = Some("mailer".into());
            },
            "smtp_username and smtp_password",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load(
            None,
            server::Overrides {
                data_dir: Some(dir.path().to_path_buf()),
                listen: Some("127.0.0.1:0".parse().unwrap()),
                agent_listen: Some("127.0.0.1:0".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        change(&mut config);
        let Err(e) = server::Application::build(config).await else {
            panic!("started with bad email settings ({says})");
        };
        assert!(e.to_string().contains(says), "{e}");
    }
}

control::both_backends!(
    a_reset_link_arrives_and_works_once,
    a_message_waits_out_an_smtp_outage,
    implicit_tls_works_and_nothing_goes_out_unprotected,
    a_sign_in_from_a_new_browser_is_told_and_can_be_disowned,
);
