//! Notification channels end to end, on both backends, with real
//! counterparts: the real server on port 0 with its notifier and mailer
//! running; a real SMTP server on loopback (npm `smtp-server`,
//! helpers/smtp.rs) for the email channel; a real HTTPS receiver
//! (helpers/https_hook.rs: hyper over rustls, certificate from a test CA)
//! standing where a Slack workspace's incoming webhook and an HMAC webhook
//! would be. The Slack URL is a secret the control plane must never show;
//! here it is the receiver's URL with a token in its path.
//!
//! Checked: an Owner adds the three kinds over the dashboard's API; a role
//! change to Owner reaches each, once, with who, what and when, and without
//! any secret or the session cookie of the Owner who made it; what is not
//! announced (a sign-in) is not sent; a receiver
//! that is down is retried and gets the events in order when it is back;
//! the Slack URL and the HMAC key are sealed (absent from the database's
//! rows and from every page); a channel's cursor moves past events that are
//! not announced; the channel limit holds under concurrent adds.

#![allow(clippy::unwrap_used)]

mod helpers;

use std::time::Duration;

use control::testing::TestDb;
use control::{NotificationChannelView, Role};
use helpers::https_hook;
use helpers::smtp::{SinkTls, SmtpSink};
use helpers::TestApp;

const HMAC_KEY: &str = "notification webhook key, long enough";
const SLACK_TOKEN: &str = "T000/B000/slack-token-8c1f2e";

async fn channels(app: &TestApp, who: &reqwest::Client) -> Vec<NotificationChannelView> {
    app.call(who, "notification-channels", &[])
        .await
        .json()
        .await
        .unwrap()
}

async fn add(app: &TestApp, who: &reqwest::Client, form: &[(&str, &str)]) -> reqwest::Response {
    app.call(who, "add-notification-channel", form).await
}

/// Waits until `check` holds, up to 30 s.
async fn eventually<F: Fn() -> bool>(what: &str, check: F) {
    for _ in 0..300 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 30 s");
}

async fn channels_announce_what_matters(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start(dir.path(), 0, SinkTls::StartTls, None).await;
    let (port, smtp_ca) = (sink.port, sink.ca_file.clone());
    let app = TestApp::spawn_with(db, |c| {
        c.smtp_server = Some(format!("localhost:{port}"));
        c.smtp_security = Some("starttls".into());
        c.smtp_ca_file = Some(smtp_ca.clone());
        c.mail_from = Some("Pilothouse <pilothouse@example.com>".into());
    })
    .await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let (bob, _) = app.add_user("Acme", "bob@example.com", Role::Member).await;
    // Signed in by hand, to keep the session cookie: no message may carry it.
    let owner = app.client();
    let res = app
        .call(
            &owner,
            "login",
            &[
                ("email", "owner@example.com"),
                ("password", helpers::PASSWORD),
            ],
        )
        .await;
    let session = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("pilothouse_session="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();
    assert!(session.len() >= 16, "{session}");
    let (ca, cert, key) = helpers::tls::test_pki("notifications");
    let slack = https_hook::start(&cert, &key, None).await;
    let hook = https_hook::start(&cert, &key, Some(HMAC_KEY)).await;
    let slack_url = slack.url(&format!("/services/{SLACK_TOKEN}"));

    // Bad input is refused with the field named.
    for (form, says) in [
        (
            vec![
                ("kind", "email"),
                ("name", "sec"),
                ("address", "not an address"),
            ],
            "address: an email address",
        ),
        (
            vec![("kind", "slack"), ("name", "chat")],
            "secret: paste the incoming webhook's URL",
        ),
        (
            vec![
                ("kind", "webhook"),
                ("name", "hook"),
                ("address", "http://localhost/x"),
                ("secret", HMAC_KEY),
            ],
            "address: a webhook URL starts with https://",
        ),
        (
            vec![("kind", "pager"), ("name", "x")],
            "kind: choose email, slack or webhook",
        ),
    ] {
        let res = add(&app, &owner, &form).await;
        assert_eq!(res.status(), 400, "{form:?}");
        let body = res.text().await.unwrap();
        assert!(body.contains(says), "{form:?}: {body}");
    }

    for form in [
        vec![
            ("kind", "email"),
            ("name", "security team"),
            ("address", "security@example.com"),
        ],
        vec![
            ("kind", "slack"),
            ("name", "ops chat"),
            ("secret", slack_url.as_str()),
            ("ca_pem", ca.as_str()),
        ],
        vec![
            ("kind", "webhook"),
            ("name", "pager"),
            ("address", &hook.url("/hook")),
            ("secret", HMAC_KEY),
            ("ca_pem", ca.as_str()),
        ],
    ] {
        let res = add(&app, &owner, &form).await;
        assert_eq!(res.status(), 200, "{form:?}: {}", res.text().await.unwrap());
    }
    let listed = channels(&app, &owner).await;
    assert_eq!(listed.len(), 3);
    let slack_view = listed.iter().find(|c| c.kind == "slack").unwrap();
    assert_eq!(
        slack_view.address,
        slack.base.trim_start_matches("https://")
    );

    // Each channel was told the others were added after it (in order), and
    // now a role change to Owner; the sign-in just before is not announced.
    let _ = app.signed_in("bob@example.com").await;
    let res = app
        .call(
            &owner,
            "change-role",
            &[("user_id", &bob.0.to_string()), ("role", "owner")],
        )
        .await;
    assert_eq!(res.status(), 200);

    eventually("the role change reached the webhook", || {
        hook.taken().iter().any(|t| {
            t.body["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == "member.role_changed")
        })
    })
    .await;
    let hooked: Vec<serde_json::Value> = hook
        .taken()
        .iter()
        .flat_map(|t| t.body["events"].as_array().unwrap().clone())
        .collect();
    let actions: Vec<&str> = hooked
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["notification.channel_added", "member.role_changed"],
        "the webhook's own addition, then the role change; no sign-in"
    );
    assert_eq!(hook.forged.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Each event comes with its text, at the same index.
    let texts = hook
        .taken()
        .iter()
        .find_map(|t| {
            let events = t.body["events"].as_array().unwrap();
            let i = events
                .iter()
                .position(|e| e["action"] == "member.role_changed")?;
            Some(t.body["texts"][i].as_str().unwrap().to_string())
        })
        .unwrap();
    assert!(
        texts.starts_with(
            "Acme: a member's role changed (member.role_changed) by owner@example.com at "
        ),
        "{texts}"
    );
    assert!(texts.contains("from: member, to: owner"), "{texts}");

    eventually("the role change reached Slack", || {
        slack.taken().iter().any(|t| {
            t.body["text"]
                .as_str()
                .unwrap()
                .contains("member.role_changed")
        })
    })
    .await;
    let said: Vec<String> = slack
        .taken()
        .iter()
        .map(|t| t.body["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(said.len(), 3, "{said:#?}");
    // Neither webhook carries the session or a channel secret.
    for t in hook.taken().iter().chain(slack.taken().iter()) {
        let body = t.body.to_string();
        for secret in [HMAC_KEY, SLACK_TOKEN, session.as_str()] {
            assert!(
                !body.contains(secret),
                "a webhook body carries a secret: {body}"
            );
        }
    }
    assert!(said[0].contains("notification.channel_added") && said[0].contains("ops chat"));
    assert!(said[1].contains("notification.channel_added") && said[1].contains("pager"));
    assert!(said[2].contains("member.role_changed"));
    assert!(slack
        .taken()
        .iter()
        .all(|t| t.path == format!("/services/{SLACK_TOKEN}")));

    // Email: one message per event, to the channel's address, over TLS (it
    // was added first, so it was told of all three additions).
    let mut subjects = Vec::new();
    while subjects.len() < 4 {
        let m = sink
            .next(Duration::from_secs(30))
            .await
            .expect("the announcements by email");
        assert_eq!(m.to, vec!["security@example.com"]);
        assert!(m.secure, "sent without TLS");
        let text = m.text();
        for secret in [HMAC_KEY, SLACK_TOKEN, session.as_str()] {
            assert!(!m.data.contains(secret) && !text.contains(secret), "{text}");
        }
        assert!(text.contains("Audit event #"), "{text}");
        subjects.push(m.header("Subject").unwrap());
    }
    // The outbox sends messages side by side: their order is not kept, so
    // compare them sorted (each body names its audit event's number).
    subjects.sort();
    assert_eq!(
        subjects,
        vec![
            "[Pilothouse] Acme: a member's role changed",
            "[Pilothouse] Acme: a notification channel was added",
            "[Pilothouse] Acme: a notification channel was added",
            "[Pilothouse] Acme: a notification channel was added",
        ]
    );

    // Down for a while: the failure shows, then everything arrives in order.
    hook.set_down(true);
    for role in ["admin", "member"] {
        let res = app
            .call(
                &owner,
                "change-role",
                &[("user_id", &bob.0.to_string()), ("role", role)],
            )
            .await;
        assert_eq!(res.status(), 200);
    }
    eventually("the webhook refused", || {
        hook.refused.load(std::sync::atomic::Ordering::SeqCst) > 0
    })
    .await;
    let failing = {
        let mut found = None;
        for _ in 0..100 {
            let listed = channels(&app, &owner).await;
            let pager = listed.iter().find(|c| c.name == "pager").unwrap().clone();
            if pager.failures > 0 {
                found = Some(pager);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found.expect("the failure is shown")
    };
    let error = failing.last_error.clone().unwrap();
    assert!(error.contains("503"), "{error}");
    assert!(
        !error.contains("localhost:"),
        "the URL is left out: {error}"
    );
    assert_eq!(failing.pending, 2);
    hook.set_down(false);
    eventually("the webhook caught up", || {
        hook.taken()
            .iter()
            .flat_map(|t| t.body["events"].as_array().unwrap().clone())
            .filter(|e| e["action"] == "member.role_changed")
            .count()
            == 3
    })
    .await;
    let roles: Vec<String> = hook
        .taken()
        .iter()
        .flat_map(|t| t.body["events"].as_array().unwrap().clone())
        .filter(|e| e["action"] == "member.role_changed")
        .map(|e| {
            let d: serde_json::Value =
                serde_json::from_str(e["details"].as_str().unwrap()).unwrap();
            d["to"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        roles,
        vec!["owner", "admin", "member"],
        "in order, once each"
    );

    // The secrets are sealed: not in the channel rows, the sealed rows, the
    // audit log, the list or the Settings page.
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT id || kind || name || address || COALESCE(ca_pem, '') || COALESCE(last_error, '') FROM notification_channels",
    )
    .fetch_all(app.db.store.pool())
    .await
    .unwrap();
    let sealed: Vec<String> = sqlx::query_scalar(
        "SELECT id || master_key_id || wrapped_key || ciphertext FROM notification_secrets",
    )
    .fetch_all(app.db.store.pool())
    .await
    .unwrap();
    assert_eq!(sealed.len(), 2, "the Slack URL and the HMAC key");
    let details: Vec<String> = sqlx::query_scalar("SELECT details FROM audit_events")
        .fetch_all(app.db.store.pool())
        .await
        .unwrap();
    let settings = app.page(&owner, "/settings").await.text().await.unwrap();
    let listed = format!("{:?}", channels(&app, &owner).await);
    for secret in [HMAC_KEY, SLACK_TOKEN] {
        for (what, text) in [
            ("channel rows", rows.concat()),
            ("sealed rows", sealed.concat()),
            ("audit log", details.concat()),
            ("Settings", settings.clone()),
            ("list", listed.clone()),
        ] {
            assert!(!text.contains(secret), "{what} holds a channel secret");
        }
    }
    // Events that are not announced (sign-ins, page views of the audit log)
    // do not hold a channel back: its cursor moves past them, so the
    // notifier's look each second stays short however long the log grows.
    for _ in 0..5 {
        let _ = app.signed_in("bob@example.com").await;
    }
    let mut caught_up = false;
    for _ in 0..100 {
        let lag: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM notification_channels c WHERE c.delivered_seq < \
             (SELECT MAX(seq) FROM audit_events e WHERE e.org_id = c.org_id)",
        )
        .fetch_one(app.db.store.pool())
        .await
        .unwrap();
        if lag == 0 {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        caught_up,
        "a channel's cursor stays behind unannounced events"
    );
    sink.stop().await;
}

/// At most ten channels, and unique names, when Owners add them at the same
/// moment.
async fn the_channel_limit_holds_under_concurrent_adds(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let owner = app.signed_in("owner@example.com").await;
    let adds = (0..16).map(|i| {
        let (app, owner) = (&app, &owner);
        async move {
            let name = format!("channel {}", i % 13);
            let address = format!("sec{i}@example.com");
            add(
                app,
                owner,
                &[("kind", "email"), ("name", &name), ("address", &address)],
            )
            .await
            .status()
            .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(adds).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 10, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    let listed = channels(&app, &owner).await;
    assert_eq!(listed.len(), 10);
    let mut names: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 10, "a name twice");
}

control::both_backends!(
    channels_announce_what_matters,
    the_channel_limit_holds_under_concurrent_adds,
);
