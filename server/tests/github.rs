//! Sign-in with GitHub over HTTP against the real server and a stand-in for
//! GitHub's OAuth and REST API endpoints (`helpers/github_standin.mjs`):
//! GitHub's servers cannot be reached from this machine. The stand-in is
//! configured as a GitHub Enterprise Server (`github_url`, its API under
//! `/api/v3`).
//!
//! Covered: the sign-in page offers GitHub; linking from Settings, then
//! signing in by the account's numeric id; the primary email must be
//! verified; a joinable domain makes a member; a replayed code and a wrong
//! `state` are refused with a sentence and recorded; with `github_org` set,
//! only active members of the organisation sign in.

#![allow(clippy::unwrap_used)]

mod helpers;

use control::testing::TestDb;
use control::Role;
use helpers::github::{user, GitHubStandIn};
use helpers::{follow, location, oidc, query_param, TestApp};

const CLIENT_ID: &str = "Iv1.pilothouse";
const CLIENT_SECRET: &str = "a github client secret for the tests";

async fn spawn(db: TestDb, port: u16, org: Option<&str>) -> TestApp {
    let org = org.map(String::from);
    TestApp::spawn_with(db, move |c| {
        c.github_client_id = Some(CLIENT_ID.into());
        c.github_client_secret = Some(CLIENT_SECRET.into());
        c.github_url = Some(format!("http://127.0.0.1:{port}"));
        c.github_org = org;
    })
    .await
}

async fn stand_in(app: &TestApp, port: u16, users: Vec<serde_json::Value>) -> GitHubStandIn {
    GitHubStandIn::start(
        port,
        CLIENT_ID,
        CLIENT_SECRET,
        &app.url("/auth/github/callback"),
        users,
    )
    .await
}

/// Starts at `start` in `browser`, signs in at the stand-in as `login`, and
/// returns the callback URL without following it.
async fn at_github(app: &TestApp, browser: &reqwest::Client, start: &str, login: &str) -> String {
    let res = browser.get(app.url(start)).send().await.unwrap();
    let to = location(&res);
    assert!(to.contains("/login/oauth/authorize?"), "{to}");
    assert!(to.contains("code_challenge_method=S256"), "{to}");
    let back = oidc::authorize(browser, &to, login).await;
    assert!(
        back.starts_with(&app.url("/auth/github/callback")),
        "{back}"
    );
    back
}

async fn last_failure(app: &TestApp) -> String {
    sqlx::query_scalar(
        "SELECT details FROM audit_events WHERE action = 'user.login_failed' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(app.db.store.pool())
    .await
    .unwrap()
}

async fn link_then_sign_in(db: TestDb) {
    let port = oidc::free_port();
    let app = spawn(db, port, None).await;
    let gh = stand_in(
        &app,
        port,
        vec![
            user(
                583231,
                "ada",
                &[
                    ("ada@old.example", false, true),
                    ("ada@example.com", true, true),
                ],
                &[],
            ),
            user(
                9001,
                "mallory",
                &[("newbie@acme.example", true, false)],
                &[],
            ),
            user(9002, "newbie", &[("newbie@acme.example", true, true)], &[]),
        ],
    )
    .await;
    app.add_user("Acme", "ada@example.com", Role::Owner).await;
    let login = app.text(&app.client(), "/login").await;
    assert!(login.contains("Sign in with GitHub"), "{login}");

    // Not linked yet: refused with the way to link.
    let browser = app.client();
    let back = at_github(&app, &browser, "/auth/github/start", "ada").await;
    assert_eq!(follow(&browser, &back).await, "/login");
    assert!(app
        .text(&browser, "/login")
        .await
        .contains("not linked to this GitHub account"));

    // Linked from Settings while signed in with the password.
    let ada = app.signed_in("ada@example.com").await;
    let settings = app.text(&ada, "/settings").await;
    let at = settings
        .find("/auth/github/start?link=")
        .expect("a Link GitHub link");
    let link = settings[at..at + settings[at..].find('"').unwrap()].to_string();
    let back = at_github(&app, &ada, &link, "ada").await;
    assert_eq!(follow(&ada, &back).await, "/settings");
    let linked: (String, String) =
        sqlx::query_as("SELECT subject, email FROM user_identities WHERE provider = 'github'")
            .fetch_one(app.db.store.pool())
            .await
            .unwrap();
    assert_eq!(linked, ("583231".into(), "ada@example.com".into()));

    // A new browser signs in with GitHub alone.
    let other = app.client();
    let back = at_github(&app, &other, "/auth/github/start", "ada").await;
    assert_eq!(follow(&other, &back).await, "/");
    assert_eq!(app.me(&other).await["email"], "ada@example.com");

    // The code again, under a fresh state: GitHub refuses it.
    let code = query_param(&back, "code").unwrap();
    let attacker = app.client();
    let to = location(
        &attacker
            .get(app.url("/auth/github/start"))
            .send()
            .await
            .unwrap(),
    );
    let state = query_param(&to, "state").unwrap();
    let forged = app.url(&format!("/auth/github/callback?code={code}&state={state}"));
    assert_eq!(follow(&attacker, &forged).await, "/login");
    let shown = app.text(&attacker, "/login").await;
    assert!(
        shown.contains("GitHub did not accept the sign-in code (bad_verification_code)"),
        "{shown}"
    );
    assert!(app.me(&attacker).await.is_null());
    assert!(last_failure(&app).await.contains("sso_provider_error"));

    // A wrong state.
    let res = attacker
        .get(app.url("/auth/github/callback?code=x&state=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&res), "/login");
    assert!(last_failure(&app).await.contains("sso_unknown_state"));

    // An unverified primary email cannot join, even at an allowed domain.
    let res = app
        .call(
            &ada,
            "add-join-domain",
            &[("domain", "acme.example"), ("role", "viewer")],
        )
        .await;
    assert_eq!(res.status(), 200);
    let m = app.client();
    let back = at_github(&app, &m, "/auth/github/start", "mallory").await;
    assert_eq!(follow(&m, &back).await, "/login");
    assert!(app.text(&m, "/login").await.contains("verified address"));
    assert!(app.me(&m).await.is_null());

    // A verified one joins as the domain says.
    let n = app.client();
    let back = at_github(&app, &n, "/auth/github/start", "newbie").await;
    assert_eq!(follow(&n, &back).await, "/");
    let who = app.me(&n).await;
    assert_eq!(who["email"], "newbie@acme.example");
    assert_eq!(who["org"]["role"], "viewer");
    gh.stop().await;
}

async fn only_members_of_the_organisation(db: TestDb) {
    let port = oidc::free_port();
    let app = spawn(db, port, Some("acme-corp")).await;
    let gh = stand_in(
        &app,
        port,
        vec![
            user(
                1,
                "member",
                &[("member@acme.example", true, true)],
                &[("acme-corp", "active")],
            ),
            user(
                2,
                "invited",
                &[("invited@acme.example", true, true)],
                &[("acme-corp", "pending")],
            ),
            user(
                3,
                "outsider",
                &[("outsider@acme.example", true, true)],
                &[("other", "active")],
            ),
        ],
    )
    .await;
    let (owner, _) = app
        .add_user("Acme", "owner@acme.example", Role::Owner)
        .await;
    let _ = owner;
    let o = app.signed_in("owner@acme.example").await;
    let res = app
        .call(
            &o,
            "add-join-domain",
            &[("domain", "acme.example"), ("role", "member")],
        )
        .await;
    assert_eq!(res.status(), 200);
    let b = app.client();
    let to = location(&b.get(app.url("/auth/github/start")).send().await.unwrap());
    assert!(to.contains("read%3Aorg"), "{to}");
    for login in ["invited", "outsider"] {
        let b = app.client();
        let back = at_github(&app, &b, "/auth/github/start", login).await;
        assert_eq!(follow(&b, &back).await, "/login", "{login}");
        assert!(
            app.text(&b, "/login")
                .await
                .contains("Only members of the GitHub organisation acme-corp"),
            "{login}"
        );
        assert!(app.me(&b).await.is_null(), "{login}");
        assert!(
            last_failure(&app).await.contains("sso_not_allowed"),
            "{login}"
        );
    }
    let b = app.client();
    let back = at_github(&app, &b, "/auth/github/start", "member").await;
    assert_eq!(follow(&b, &back).await, "/");
    assert_eq!(app.me(&b).await["email"], "member@acme.example");
    gh.stop().await;
}

control::both_backends!(link_then_sign_in, only_members_of_the_organisation);
