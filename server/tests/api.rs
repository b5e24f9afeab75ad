//! The HTTP surface of `pilothouse serve`, run against the real server on
//! port 0 with a fresh SQLite or PostgreSQL database.

// Test bodies are shared by both backends through a macro, so they are not
// `#[test]` functions themselves; a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod helpers;

use control::testing::TestDb;
use control::Role;
use helpers::{TestApp, PASSWORD};

async fn health_and_server_rendered_login(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let c = app.client();
    assert_eq!(
        c.get(app.url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(app.url("/readyz")).send().await.unwrap().status(),
        200
    );
    // A fresh installation points people to /setup.
    let html = app.page(&c, "/login").await.text().await.unwrap();
    assert!(html.contains("href=\"/setup\""), "{html}");
    app.add_user("Acme", "owner@example.com", Role::Owner).await;

    let res = app.page(&c, "/login").await;
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    let html = res.text().await.unwrap();
    assert!(
        html.contains("name=\"email\"")
            && html.contains("name=\"password\"")
            && html.contains("Sign in"),
        "{html}"
    );
    assert!(
        !html.contains("href=\"/setup\""),
        "no setup hint once an account exists"
    );
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("'nonce-"),
        "{csp}"
    );
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert!(
        html.contains(&format!("nonce=\"{nonce}\"")),
        "hydration scripts carry the CSP nonce"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "same-origin");
    assert!(
        h.get("strict-transport-security").is_none(),
        "no HSTS over plain HTTP"
    );

    let res = app.page(&c, "/no-such-page").await;
    assert_eq!(res.status(), 404);
    let res = app.page(&c, "/team").await;
    assert_eq!(res.status(), 302, "signed-out visitors are sent to sign in");
    assert_eq!(res.headers()["location"], "/login");
}

async fn login_failures_are_identical_then_throttled(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "ada@example.com", Role::Member).await;
    let c = app.client();
    let unknown = app
        .call(
            &c,
            "login",
            &[
                ("email", "nobody@example.com"),
                ("password", "wrong password here"),
            ],
        )
        .await;
    let (s1, b1) = (unknown.status(), unknown.text().await.unwrap());
    let wrong = app
        .call(
            &c,
            "login",
            &[
                ("email", "ada@example.com"),
                ("password", "wrong password here"),
            ],
        )
        .await;
    let (s2, b2) = (wrong.status(), wrong.text().await.unwrap());
    assert_eq!(s1, 401);
    assert_eq!(
        (s1, &b1),
        (s2, &b2),
        "unknown user and wrong password must look the same"
    );
    assert!(b1.contains("Incorrect email or password."));

    for _ in 2..=20 {
        let res = app
            .call(
                &c,
                "login",
                &[
                    ("email", "ada@example.com"),
                    ("password", "wrong password here"),
                ],
            )
            .await;
        assert_eq!(res.status(), 401);
    }
    let res = app
        .call(
            &c,
            "login",
            &[("email", "ada@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(
        res.status(),
        429,
        "the 21st attempt in an hour is refused, even with the right password"
    );
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 3000 && retry <= 3600, "{retry}");
    assert!(res.text().await.unwrap().contains("Throttled"));
}

async fn bad_input_gets_clear_4xx(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let c = app.signed_in("owner@example.com").await;

    // Missing field.
    let res = app
        .call(&c, "invite-member", &[("email", "x@example.com")])
        .await;
    assert_eq!(res.status(), 400);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("incomplete or malformed"));
    // Unknown role, bad email, over-long email.
    let res = app
        .call(
            &c,
            "invite-member",
            &[("email", "x@example.com"), ("role", "root")],
        )
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("not a valid role"));
    let res = app
        .call(
            &c,
            "invite-member",
            &[("email", "not-an-email"), ("role", "member")],
        )
        .await;
    assert_eq!(res.status(), 400);
    let long = format!("{}@example.com", "a".repeat(300));
    let res = app
        .call(&c, "invite-member", &[("email", &long), ("role", "member")])
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("too long"));
    let res = app
        .call(&c, "change-role", &[("user_id", "abc"), ("role", "admin")])
        .await;
    assert_eq!(res.status(), 400);
    // Oversized body, on a client of its own: the server answers 413 and closes
    // the connection without reading the rest, and a pooled connection must not
    // carry that into the next request.
    let huge = "a".repeat(200 * 1024);
    helpers::expect_too_large(
        app.client()
            .post(app.url("/api/invite-member"))
            .form(&[("email", huge.as_str()), ("role", "member")]),
    )
    .await;
    // A bad setup code after setup: setup is gone.
    let res = app
        .call(
            &c,
            "complete-setup",
            &[
                ("code", "x"),
                ("org_name", "y"),
                ("email", "z@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), 409);
    // Expired/unknown invitation tokens.
    let res = app
        .call(&app.client(), "invite-details", &[("token", "deadbeef")])
        .await;
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("not valid"));
}

async fn cross_origin_posts_are_refused(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let c = app.signed_in("owner@example.com").await;
    let res = c
        .post(app.url("/api/invite-member"))
        .header("origin", "https://evil.example")
        .form(&[("email", "x@example.com"), ("role", "admin")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = c
        .post(app.url("/api/invite-member"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("email", "x@example.com"), ("role", "admin")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = c
        .post(app.url("/api/invite-member"))
        .header("origin", app.addr.clone())
        .form(&[("email", "x@example.com"), ("role", "admin")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "same-origin posts work");
}

async fn sessions_rotate_and_sign_out_everywhere_else(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    // The session id changes at login (no fixation).
    let c = app.client();
    let before = app.page(&c, "/login").await;
    assert!(
        before.headers().get("set-cookie").is_none(),
        "no session for anonymous visitors"
    );
    let res = app
        .call(
            &c,
            "login",
            &[("email", "owner@example.com"), ("password", PASSWORD)],
        )
        .await;
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
        "{cookie}"
    );

    let other = app.signed_in("owner@example.com").await;
    let list = app.call(&c, "my-sessions", &[]).await.text().await.unwrap();
    assert_eq!(list.matches("\"handle\"").count(), 2, "{list}");
    assert!(
        !list.contains(cookie.split(';').next().unwrap().split('=').nth(1).unwrap()),
        "session ids are never shown"
    );
    let res = app.call(&c, "sign-out-others", &[]).await;
    assert_eq!(res.text().await.unwrap(), "1");
    assert_eq!(
        app.call(&other, "team", &[]).await.status(),
        401,
        "the other session is gone"
    );
    assert_eq!(
        app.call(&c, "team", &[]).await.status(),
        200,
        "this one stays"
    );
    assert_eq!(app.call(&c, "logout", &[]).await.status(), 200);
    assert_eq!(app.call(&c, "team", &[]).await.status(), 401);
}

async fn forms_work_without_javascript(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let c = app.client();
    let post = |password: &'static str| {
        c.post(app.url("/api/login"))
            .header("accept", "text/html")
            .header("origin", app.addr.clone())
            .header("referer", app.url("/login?next=1"))
            .form(&[("email", "owner@example.com"), ("password", password)])
            .send()
    };
    // A refused plain form post goes back to its page with the message.
    let res = post("not the password").await.unwrap();
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(location, "/login?next=1&error=Incorrect+email+or+password.");
    let html = app.page(&c, &location).await.text().await.unwrap();
    assert!(
        html.contains("data-testid=\"form-error\"")
            && html.contains("Incorrect email or password."),
        "{html}"
    );
    // A successful one lands on the dashboard, signed in.
    let res = post(PASSWORD).await.unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], "/");
    let html = app.page(&c, "/").await.text().await.unwrap();
    assert!(html.contains("owner@example.com"), "{html}");
}

async fn a_member_of_two_orgs_switches_between_them(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "ada@example.com", Role::Owner).await;
    app.add_user("Globex", "boss@example.com", Role::Owner)
        .await;
    let boss = app.signed_in("boss@example.com").await;
    let ada = app.signed_in("ada@example.com").await;
    let link: String = app
        .call(
            &boss,
            "invite-member",
            &[("email", "ada@example.com"), ("role", "viewer")],
        )
        .await
        .json()
        .await
        .unwrap();
    let token = link.rsplit('/').next().unwrap();
    // The invitation is for Ada: the boss cannot accept it for himself.
    let res = app.call(&boss, "accept-invite", &[("token", token)]).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        app.call(&ada, "accept-invite", &[("token", token)])
            .await
            .status(),
        200
    );

    let me: serde_json::Value = app
        .call(&ada, "current-user", &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["org"]["name"], "Globex");
    assert_eq!(me["org"]["role"], "viewer");
    assert_eq!(me["orgs"].as_array().unwrap().len(), 2);
    let acme = me["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "Acme")
        .unwrap()["id"]
        .to_string();
    // As a Globex viewer Ada cannot invite; after switching to Acme, as its owner, she can.
    let res = app
        .call(
            &ada,
            "invite-member",
            &[("email", "x@example.com"), ("role", "member")],
        )
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        app.call(&ada, "switch-org", &[("org", &acme)])
            .await
            .status(),
        200
    );
    let me: serde_json::Value = app
        .call(&ada, "current-user", &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (me["org"]["name"].as_str(), me["org"]["role"].as_str()),
        (Some("Acme"), Some("owner"))
    );
    let res = app
        .call(
            &ada,
            "invite-member",
            &[("email", "x@example.com"), ("role", "member")],
        )
        .await;
    assert_eq!(res.status(), 200);
    let team = app.call(&ada, "team", &[]).await.text().await.unwrap();
    assert!(!team.contains("boss@example.com"), "{team}");
}

/// The audit export download: Owners and Admins get the log streamed (CSV or
/// JSON Lines, verifiable offline), the export recorded in it first with the
/// client's address; Members, Viewers and strangers are refused; bad
/// parameters get a 400 naming the parameter.
async fn the_audit_export_is_for_owners_and_admins(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    app.add_user("Acme", "admin@example.com", Role::Admin).await;
    app.add_user("Acme", "member@example.com", Role::Member)
        .await;
    app.add_user("Acme", "viewer@example.com", Role::Viewer)
        .await;
    let admin = app.signed_in("admin@example.com").await;
    let res = admin
        .get(app.url("/audit/export?format=jsonl"))
        .header("user-agent", "export-test")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    assert!(res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .ends_with(".jsonl\""));
    let body = res.text().await.unwrap();
    let lines: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 5, "{body}");
    let last = lines.last().unwrap();
    assert_eq!(last["action"], "audit.exported");
    assert_eq!(last["actor"], "admin@example.com");
    assert_eq!(last["user_agent"], "export-test");
    assert_eq!(last["seq"].as_i64().unwrap(), lines.len() as i64);

    let csv = app
        .signed_in("owner@example.com")
        .await
        .get(app.url("/audit/export?format=csv&since=2000-01-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    let text = csv.text().await.unwrap();
    assert!(
        text.starts_with(control::audit_export::CSV_HEADER),
        "{text}"
    );

    for (who, status) in [("member@example.com", 403), ("viewer@example.com", 403)] {
        let res = app
            .signed_in(who)
            .await
            .get(app.url("/audit/export?format=csv"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{who}");
        assert!(res.text().await.unwrap().contains("export the audit log"));
    }
    let stranger = app
        .client()
        .get(app.url("/audit/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 401);
    for (query, expected) in [
        ("format=xml", "format:"),
        ("since=yesterday", "since:"),
        (&*format!("until={}", "9".repeat(10_000)), "until:"),
    ] {
        let res = admin
            .get(app.url(&format!("/audit/export?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{query}");
        let body = res.text().await.unwrap();
        assert!(body.contains(expected) && body.len() < 300, "{body}");
    }
    // The Audit page's search refuses a bad filter by name, with a 400.
    for (field, value) in [("since", "someday"), ("before", "abc"), ("group", "all")] {
        let res = app.call(&admin, "audit-search", &[(field, value)]).await;
        assert_eq!(res.status(), 400, "{field}");
        let body = res.text().await.unwrap();
        assert!(body.contains(&format!("{field}:")), "{body}");
    }
    let found = app
        .call(&admin, "audit-search", &[("group", "audit")])
        .await;
    assert_eq!(found.status(), 200);
    assert!(found.text().await.unwrap().contains("audit.exported"));
    // Only the allowed downloads were recorded: one per successful export.
    let count = |body: &str| body.matches("audit.exported").count();
    let after = admin
        .get(app.url("/audit/export?format=jsonl"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(count(&after), 3, "{after}");
}

/// A filtered export holds exactly the events the Audit page's filter
/// selects (every page of them, oldest first, the page cursor ignored), and
/// its record in the log carries the filter; a bad filter gets a 400 naming
/// the field.
async fn the_audit_export_holds_what_the_filter_selects(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    app.add_user("Acme", "member@example.com", Role::Member)
        .await;
    let owner = app.signed_in("owner@example.com").await;
    for _ in 0..3 {
        app.signed_in("member@example.com").await;
    }
    let export = |query: String| {
        let owner = owner.clone();
        let url = app.url(&format!("/audit/export?format=jsonl&{query}"));
        async move {
            let res = owner.get(url).send().await.unwrap();
            assert_eq!(res.status(), 200, "{query}");
            res.text().await.unwrap()
        }
    };
    let sign_in = control::audit_search::group_actions("sign-in").unwrap();
    type Pick = Box<dyn Fn(&serde_json::Value) -> bool>;
    let cases: Vec<(&str, &str, Pick)> = vec![
        (
            "group",
            "group=sign-in&before=2",
            Box::new(move |e| sign_in.contains(&e["action"].as_str().unwrap())),
        ),
        (
            "actor",
            "actor=member%40example.com",
            Box::new(|e| e["actor"] == "member@example.com"),
        ),
        (
            "text",
            "text=member%40",
            Box::new(|e| {
                ["actor", "action", "target", "details"]
                    .iter()
                    .any(|k| e[k].as_str().unwrap().contains("member@"))
            }),
        ),
    ];
    let mut filtered = Vec::new();
    for (name, query, _) in &cases {
        filtered.push((name, export(query.to_string()).await));
    }
    let all = export(String::new()).await;
    let events: Vec<(serde_json::Value, &str)> = all
        .lines()
        .map(|l| (serde_json::from_str(l).unwrap(), l))
        .collect();
    for ((name, got), (_, query, pick)) in filtered.iter().zip(&cases) {
        // The export's own record, which names its filter.
        let (record, _) = events
            .iter()
            .find(|(e, _)| {
                e["action"] == "audit.exported"
                    && e["details"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("\"{name}\""))
            })
            .unwrap_or_else(|| panic!("no record of the {name} export"));
        let upto = record["seq"].as_i64().unwrap();
        let want: Vec<&str> = events
            .iter()
            .filter(|(e, _)| e["seq"].as_i64().unwrap() <= upto && pick(e))
            .map(|(_, l)| *l)
            .collect();
        assert!(want.len() >= 3, "{query}: {want:?}");
        assert_eq!(got.lines().collect::<Vec<_>>(), want, "{query}");
    }
    for (query, expected) in [
        ("group=all", "group:"),
        ("server=not%20a%20server", "server:"),
        ("operation=x", "operation:"),
        (&*format!("text={}", "a".repeat(300)), "text:"),
    ] {
        let res = owner
            .get(app.url(&format!("/audit/export?format=csv&{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{query}");
        let body = res.text().await.unwrap();
        assert!(body.contains(expected) && body.len() < 300, "{body}");
    }
}

/// Secrets over HTTP: Owners and Admins set, replace and delete them; every
/// member sees their names, never a value (not in any response, the Settings
/// page or the audit log); bad input gets a 400 naming the field.
async fn secrets_are_set_over_http_and_never_shown_back(db: TestDb) {
    const VALUE: &str = "s3cr3t-value-Hq2vL9";
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    app.add_user("Acme", "member@example.com", Role::Member)
        .await;
    app.add_user("Acme", "viewer@example.com", Role::Viewer)
        .await;
    let owner = app.signed_in("owner@example.com").await;
    let set = |client: &reqwest::Client, fields: Vec<(&'static str, String)>| {
        let client = client.clone();
        let url = app.url("/api/set-secret");
        async move { client.post(url).form(&fields).send().await.unwrap() }
    };
    let fields = |name: &str, value: &str| {
        vec![
            ("name", name.to_string()),
            ("kind", "env".to_string()),
            ("scope", "org".to_string()),
            ("value", value.to_string()),
        ]
    };
    let res = set(&owner, fields("DB_PASSWORD", VALUE)).await;
    assert_eq!(res.status(), 200);
    let id: String = res.json().await.unwrap();
    assert!(id.starts_with("sec_"), "{id}");
    let res = set(&owner, fields("DB_PASSWORD", "replaced-value")).await;
    assert_eq!(res.json::<String>().await.unwrap(), id);

    let mut seen = String::new();
    for who in ["owner@example.com", "viewer@example.com"] {
        let client = app.signed_in(who).await;
        let list = app.call(&client, "secrets", &[]).await;
        assert_eq!(list.status(), 200, "{who}");
        let list = list.text().await.unwrap();
        assert!(list.contains("DB_PASSWORD"), "{list}");
        seen.push_str(&list);
        let page = client.get(app.url("/settings")).send().await.unwrap();
        seen.push_str(&page.text().await.unwrap());
    }
    let audit = app.call(&owner, "audit-search", &[("group", "keys")]).await;
    let audit = audit.text().await.unwrap();
    assert!(audit.contains("secret.set"), "{audit}");
    seen.push_str(&audit);
    for value in [VALUE, "replaced-value"] {
        assert!(!seen.contains(value), "a value was shown back");
    }

    let member = app.signed_in("member@example.com").await;
    let res = set(&member, fields("MINE", "x")).await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("manage secrets"));
    for (name, kind, scope, expected) in [
        ("1BAD", "env", "org", "name:"),
        ("OK", "password", "org", "kind:"),
        ("OK", "env", "agt_nothex", "server:"),
        ("OK", "env", &*format!("agt_{}", "0".repeat(24)), "server:"),
    ] {
        let res = set(
            &owner,
            vec![
                ("name", name.to_string()),
                ("kind", kind.to_string()),
                ("scope", scope.to_string()),
                ("value", "x".to_string()),
            ],
        )
        .await;
        assert_eq!(res.status(), 400, "{name} {kind} {scope}");
        let body = res.text().await.unwrap();
        assert!(body.contains(expected), "{body}");
    }
    let res = set(&owner, fields("BIG", &"x".repeat(40_000))).await;
    assert_eq!(res.status(), 400);

    let res = app.call(&member, "delete-secret", &[("id", &id)]).await;
    assert_eq!(res.status(), 403);
    let res = app.call(&owner, "delete-secret", &[("id", &id)]).await;
    assert_eq!(res.status(), 200);
    let res = app.call(&owner, "delete-secret", &[("id", &id)]).await;
    assert_eq!(res.status(), 404);
}

control::both_backends!(
    health_and_server_rendered_login,
    login_failures_are_identical_then_throttled,
    bad_input_gets_clear_4xx,
    cross_origin_posts_are_refused,
    sessions_rotate_and_sign_out_everywhere_else,
    forms_work_without_javascript,
    a_member_of_two_orgs_switches_between_them,
    the_audit_export_is_for_owners_and_admins,
    the_audit_export_holds_what_the_filter_selects,
    secrets_are_set_over_http_and_never_shown_back,
);
