//! Sign-in with an OpenID Connect provider, over HTTP against the real
//! server and a real OpenID Provider: npm `oidc-provider` (an OpenID
//! Certified implementation) on loopback over HTTPS. `oidc_rogue.mjs` plays
//! an attacker's provider for the bad-token cases (wrong audience, issuer,
//! expiry, nonce, signature, an unsigned token, an unverified or missing
//! email), which a certified provider will not produce.
//!
//! Covered: the sign-in page offers the provider; a first sign-in with the
//! email of a password account is refused with the way to link, then linked
//! from Settings while signed in, then signs in; a replayed callback, a
//! callback in another browser, a wrong `state` and a replayed code are
//! refused with a sentence on the sign-in page and recorded; a joinable
//! domain makes a member; the hosted-domain restriction; a provider that
//! cannot be reached.

#![allow(clippy::unwrap_used)]

mod helpers;

use control::testing::TestDb;
use control::Role;
use helpers::oidc::{self, Account, Client, OidcProvider};
use helpers::{follow, location, query_param, TestApp};
use std::path::Path;

const CLIENT_ID: &str = "pilothouse";
const CLIENT_SECRET: &str = "an oidc client secret for the tests";

/// The server, configured for a provider that will listen on `port`.
async fn spawn(db: TestDb, pki: &Path, port: u16, hosted_domain: Option<&str>) -> TestApp {
    let ca = oidc::pki(pki);
    let hd = hosted_domain.map(String::from);
    TestApp::spawn_with(db, move |c| {
        c.oidc_client_id = Some(CLIENT_ID.into());
        c.oidc_client_secret = Some(CLIENT_SECRET.into());
        c.oidc_issuer = Some(format!("https://localhost:{port}"));
        c.oidc_ca_file = Some(ca);
        c.oidc_hosted_domain = hd;
    })
    .await
}

fn client_for(app: &TestApp) -> Client {
    Client::new(CLIENT_ID, CLIENT_SECRET, &app.url("/auth/oidc/callback"))
}

/// Starts a sign-in (or a link, from `start`) in `browser`, signs in at the
/// provider as `login`, and returns the callback URL the provider sent the
/// browser to, without following it.
async fn at_provider(app: &TestApp, browser: &reqwest::Client, start: &str, login: &str) -> String {
    let res = browser.get(app.url(start)).send().await.unwrap();
    let to = location(&res);
    assert!(to.starts_with("https://localhost:"), "{to}");
    assert!(to.contains("code_challenge_method=S256"), "{to}");
    assert!(to.contains("nonce="), "{to}");
    let back = oidc::authorize(browser, &to, login).await;
    assert!(back.starts_with(&app.url("/auth/oidc/callback")), "{back}");
    back
}

async fn failures(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT details FROM audit_events WHERE action = 'user.login_failed' ORDER BY seq",
    )
    .fetch_all(app.db.store.pool())
    .await
    .unwrap()
}

async fn sign_in_link_and_join(db: TestDb) {
    let pki = tempfile::tempdir().unwrap();
    let port = oidc::free_port();
    let app = spawn(db, pki.path(), port, None).await;
    let mut eve = Account::new("3003", "eve@acme.example");
    eve.email_verified = false;
    let provider = OidcProvider::start(
        pki.path(),
        port,
        client_for(&app),
        &[
            Account::new("1001", "ada@example.com"),
            Account::new("2002", "newbie@acme.example"),
            Account::new("4004", "invitee@else.example"),
            eve,
        ],
    )
    .await;
    let (ada, _) = app.add_user("Acme", "ada@example.com", Role::Owner).await;

    // The sign-in page offers the provider.
    let login = app.text(&app.client(), "/login").await;
    assert!(login.contains("Sign in with Google"), "{login}");
    assert!(login.contains("href=\"/auth/oidc/start\""), "{login}");

    // A first sign-in with the email of a password account: refused, with
    // the way to link, on the sign-in page; recorded.
    let browser = provider.browser();
    let back = at_provider(&app, &browser, "/auth/oidc/start", "1001").await;
    assert_eq!(follow(&browser, &back).await, "/login");
    let shown = app.text(&browser, "/login").await;
    assert!(shown.contains("already exists"), "{shown}");
    assert!(
        shown.contains("Settings -&gt; Sign-in methods")
            || shown.contains("Settings -> Sign-in methods"),
        "{shown}"
    );
    assert!(app.me(&browser).await.is_null(), "nobody is signed in");
    // Shown once.
    assert!(!app
        .text(&browser, "/login")
        .await
        .contains("already exists"));
    assert!(failures(&app)
        .await
        .last()
        .unwrap()
        .contains("sso_not_linked"));

    // The callback again: the flow was used.
    assert_eq!(follow(&browser, &back).await, "/login");
    assert!(app
        .text(&browser, "/login")
        .await
        .contains("already used, has expired"));

    // Signed in with the password, Ada links Google from Settings.
    let res = app
        .call(
            &browser,
            "login",
            &[
                ("email", "ada@example.com"),
                ("password", helpers::PASSWORD),
            ],
        )
        .await;
    assert!(res.status().is_success() || res.status().is_redirection());
    let settings = app.text(&browser, "/settings").await;
    let at = settings
        .find("/auth/oidc/start?link=")
        .expect("a Link link");
    let link = &settings[at..at + settings[at..].find('"').unwrap()];
    // Another site cannot start a link: a made-up token is refused.
    let res = browser
        .get(app.url("/auth/oidc/start?link=0123456789abcdef"))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&res), "/settings");
    assert!(app
        .text(&browser, "/settings")
        .await
        .contains("was not from this Settings page"));
    // ... and that spent the real one: the page offers a new one.
    let settings = app.text(&browser, "/settings").await;
    let at = settings
        .find("/auth/oidc/start?link=")
        .expect("a Link link");
    let fresh = settings[at..at + settings[at..].find('"').unwrap()].to_string();
    assert_ne!(fresh, link);
    let back = at_provider(&app, &browser, &fresh, "1001").await;
    assert_eq!(follow(&browser, &back).await, "/settings");
    let methods: serde_json::Value = app
        .call(&browser, "sign-in-methods", &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(methods["password"], true);
    let google = methods["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["provider"] == "Oidc")
        .unwrap()
        .clone();
    assert_eq!(google["linked"]["email"], "ada@example.com", "{methods}");

    // Now a new browser signs in as Ada with Google alone.
    let other = provider.browser();
    let back = at_provider(&app, &other, "/auth/oidc/start", "1001").await;
    assert_eq!(follow(&other, &back).await, "/");
    let who = app.me(&other).await;
    assert_eq!(who["email"], "ada@example.com", "{who}");
    assert_eq!(who["user_id"], ada.0);
    let method: String = sqlx::query_scalar(
        "SELECT details FROM audit_events WHERE action = 'user.login' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(app.db.store.pool())
    .await
    .unwrap();
    assert!(method.contains("\"method\":\"oidc\""), "{method}");
    // The device cookie was set, as for a password sign-in.
    let notices: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM known_devices")
        .fetch_one(app.db.store.pool())
        .await
        .unwrap();
    assert!(notices >= 1);

    // A callback taken to another browser (no flow cookie) is refused, and
    // the flow is spent for its own browser too.
    let third = provider.browser();
    let back = at_provider(&app, &third, "/auth/oidc/start", "1001").await;
    let stranger = app.client();
    assert_eq!(follow(&stranger, &back).await, "/login");
    assert!(app.me(&stranger).await.is_null());
    assert_eq!(follow(&third, &back).await, "/login");
    assert!(app.me(&third).await.is_null());

    // A replayed code under a fresh state of the attacker's own browser: the
    // provider refuses it (used once, and bound to another PKCE verifier).
    let code = query_param(&back, "code").unwrap();
    let attacker = provider.browser();
    let res = attacker
        .get(app.url("/auth/oidc/start"))
        .send()
        .await
        .unwrap();
    let to = location(&res);
    let state = query_param(&to, "state").unwrap();
    let forged = app.url(&format!("/auth/oidc/callback?code={code}&state={state}"));
    assert_eq!(follow(&attacker, &forged).await, "/login");
    let shown = app.text(&attacker, "/login").await;
    assert!(shown.contains("did not accept the sign-in code"), "{shown}");
    assert!(app.me(&attacker).await.is_null());
    assert!(failures(&app)
        .await
        .iter()
        .any(|d| d.contains("sso_provider_error")));

    // A wrong state: refused and recorded.
    let res = attacker
        .get(app.url("/auth/oidc/callback?code=x&state=not-a-state"))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&res), "/login");
    assert!(failures(&app)
        .await
        .iter()
        .any(|d| d.contains("sso_unknown_state")));

    // An unverified email is refused, whoever it is.
    let unverified = provider.browser();
    let back = at_provider(&app, &unverified, "/auth/oidc/start", "3003").await;
    assert_eq!(follow(&unverified, &back).await, "/login");
    assert!(app
        .text(&unverified, "/login")
        .await
        .contains("verified address"));

    // Nobody from acme.example joins until an Owner allows the domain.
    let newbie = provider.browser();
    let back = at_provider(&app, &newbie, "/auth/oidc/start", "2002").await;
    assert_eq!(follow(&newbie, &back).await, "/login");
    assert!(app.text(&newbie, "/login").await.contains("invitation"));
    let res = app
        .call(
            &browser,
            "add-join-domain",
            &[("domain", "acme.example"), ("role", "member")],
        )
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let newbie = provider.browser();
    let back = at_provider(&app, &newbie, "/auth/oidc/start", "2002").await;
    assert_eq!(follow(&newbie, &back).await, "/");
    let who = app.me(&newbie).await;
    assert_eq!(who["email"], "newbie@acme.example");
    assert_eq!(who["org"]["role"], "member", "{who}");
    // A Member cannot change who joins.
    let res = app
        .call(
            &newbie,
            "add-join-domain",
            &[("domain", "other.example"), ("role", "viewer")],
        )
        .await;
    assert_eq!(res.status(), 403);

    // An invitation is accepted with Google: the invited address only.
    let res = app
        .call(
            &browser,
            "invite-member",
            &[("email", "invitee@else.example"), ("role", "viewer")],
        )
        .await;
    assert_eq!(res.status(), 200);
    let link: String = res.json().await.unwrap();
    let token = link.rsplit('/').next().unwrap().to_string();
    let invitee = provider.browser();
    let page = app.text(&invitee, &format!("/invite/{token}")).await;
    assert!(page.contains("Accept with Google"), "{page}");
    let dead = invitee
        .get(app.url("/auth/oidc/start?invite=0000"))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&dead), "/login");
    assert!(app
        .text(&invitee, "/login")
        .await
        .contains("This invitation link is not valid"));
    let back = at_provider(
        &app,
        &invitee,
        &format!("/auth/oidc/start?invite={token}"),
        "4004",
    )
    .await;
    assert_eq!(follow(&invitee, &back).await, "/");
    let who = app.me(&invitee).await;
    assert_eq!(who["email"], "invitee@else.example");
    assert_eq!(who["org"]["role"], "viewer");

    // The Owner requires SSO: a Member's password session is refused
    // everything (and says why); the SSO session and the Owner's password
    // session go on.
    app.add_user("Acme", "pat@acme.example", Role::Member).await;
    let pat = app.signed_in("pat@acme.example").await;
    assert_eq!(app.call(&pat, "team", &[]).await.status(), 200);
    let res = app
        .call(&browser, "set-sso-required", &[("on", "true")])
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let res = app.call(&pat, "team", &[]).await;
    assert_eq!(res.status(), 403);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("requires signing in through its identity provider"));
    assert_eq!(app.me(&pat).await["sso_due"], true);
    assert_eq!(app.call(&newbie, "team", &[]).await.status(), 200);
    assert_eq!(app.me(&newbie).await["sso_due"], false);
    assert_eq!(app.call(&browser, "team", &[]).await.status(), 200);
    let changed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'org.sso_requirement_changed'",
    )
    .fetch_one(app.db.store.pool())
    .await
    .unwrap();
    assert_eq!(changed, 1);
    provider.stop().await;
}

/// The refusal a page shows.
fn shown_error(html: &str) -> &str {
    let at = html.find("data-testid=\"sso-error\"").unwrap();
    let start = at + html[at..].find('>').unwrap() + 1;
    &html[start..start + html[start..].find('<').unwrap()]
}

/// Each fault of the attacker's provider is refused with a sentence, signs
/// nobody in, and is recorded; its faultless mode signs in (so the refusals
/// are the faults', not the harness's).
async fn bad_tokens_are_refused(db: TestDb) {
    let pki = tempfile::tempdir().unwrap();
    let port = oidc::free_port();
    let app = spawn(db, pki.path(), port, None).await;
    let (ada, _) = app.add_user("Acme", "ada@example.com", Role::Owner).await;
    control::sso::link(
        &app.db.store,
        ada,
        &control::sso::Identity {
            provider: control::sso::Provider::Oidc,
            subject: "1001".into(),
            email: "ada@example.com".into(),
            email_verified: true,
            label: "Google".into(),
        },
        &control::access::RequestMeta::new("192.0.2.1", "test"),
        control::Timestamp::now(),
    )
    .await
    .unwrap();
    for (mode, says, reason) in [
        (
            "wrong_audience",
            "meant for another client",
            "sso_invalid_token",
        ),
        (
            "wrong_issuer",
            "another issuer made it",
            "sso_invalid_token",
        ),
        ("expired", "it has expired", "sso_invalid_token"),
        (
            "wrong_nonce",
            "it belongs to another sign-in",
            "sso_invalid_token",
        ),
        (
            "bad_signature",
            "signature does not verify",
            "sso_invalid_token",
        ),
        ("alg_none", "signature does not verify", "sso_invalid_token"),
        (
            "unverified_email",
            "verified address",
            "sso_unverified_email",
        ),
        ("no_email", "did not give an email", "sso_unverified_email"),
        ("ok", "", ""),
    ] {
        let rogue = OidcProvider::rogue(
            pki.path(),
            port,
            client_for(&app),
            &[Account::new("1001", "ada@example.com")],
            mode,
        )
        .await;
        let browser = rogue.browser();
        let back = at_provider(&app, &browser, "/auth/oidc/start", "1001").await;
        let to = follow(&browser, &back).await;
        if mode == "ok" {
            assert_eq!(to, "/", "{mode}");
            assert_eq!(app.me(&browser).await["email"], "ada@example.com");
        } else {
            assert_eq!(to, "/login", "{mode}");
            let shown = app.text(&browser, "/login").await;
            assert!(shown_error(&shown).contains(says), "{mode}: {shown}");
            assert!(app.me(&browser).await.is_null(), "{mode}");
            let recorded = failures(&app).await;
            let last = recorded.last().unwrap();
            assert!(last.contains(reason), "{mode}: {recorded:?}");
        }
        rogue.stop().await;
    }
}

/// With a hosted domain set, only that domain's accounts sign in; a provider
/// that cannot be reached refuses with a sentence.
async fn hosted_domain_and_unreachable_provider(db: TestDb) {
    let pki = tempfile::tempdir().unwrap();
    let port = oidc::free_port();
    let app = spawn(db, pki.path(), port, Some("acme.example")).await;
    let (owner, _) = app
        .add_user("Acme", "owner@acme.example", Role::Owner)
        .await;
    let owner_client = app.signed_in("owner@acme.example").await;
    let res = app
        .call(
            &owner_client,
            "add-join-domain",
            &[("domain", "acme.example"), ("role", "viewer")],
        )
        .await;
    assert_eq!(res.status(), 200);
    let _ = owner;

    // Nothing listens yet: a sentence, not an error page.
    let browser = oidc::browser(&oidc::pki(pki.path()));
    let res = browser
        .get(app.url("/auth/oidc/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&res), "/login");
    assert!(app
        .text(&browser, "/login")
        .await
        .contains("cannot be reached right now"));

    let mut inside = Account::new("7", "viv@acme.example");
    inside.hd = Some("acme.example".into());
    let outside = Account::new("8", "viv2@acme.example");
    let provider =
        OidcProvider::start(pki.path(), port, client_for(&app), &[inside, outside]).await;
    let res = browser
        .get(app.url("/auth/oidc/start"))
        .send()
        .await
        .unwrap();
    assert!(location(&res).contains("hd=acme.example"));
    // An account outside the Workspace domain (no `hd`), though its email is
    // at the domain: refused.
    let b = provider.browser();
    let back = at_provider(&app, &b, "/auth/oidc/start", "8").await;
    assert_eq!(follow(&b, &back).await, "/login");
    assert!(app
        .text(&b, "/login")
        .await
        .contains("Only acme.example accounts"));
    assert!(failures(&app)
        .await
        .iter()
        .any(|d| d.contains("sso_not_allowed")));
    let b = provider.browser();
    let back = at_provider(&app, &b, "/auth/oidc/start", "7").await;
    assert_eq!(follow(&b, &back).await, "/");
    assert_eq!(app.me(&b).await["org"]["role"], "viewer");
    provider.stop().await;
}

/// Half a configuration, or a bad value, stops the server at start with a
/// sentence naming the setting.
#[tokio::test]
async fn bad_settings_stop_the_server() {
    type Set = fn(&mut server::Config);
    let cases: [(Set, &str); 7] = [
        (
            |c| c.oidc_client_id = Some("id".into()),
            "oidc_client_secret is not",
        ),
        (
            |c| c.oidc_client_secret = Some("s".into()),
            "oidc_client_id is not",
        ),
        (
            |c| {
                c.oidc_client_id = Some("id".into());
                c.oidc_client_secret = Some("s".into());
                c.oidc_issuer = Some("http://idp.example.com".into());
            },
            "oidc_issuer is http://idp.example.com: it must be an https:// URL",
        ),
        (
            |c| {
                c.oidc_client_id = Some("id".into());
                c.oidc_client_secret = Some("s".into());
                c.oidc_hosted_domain = Some("not a domain".into());
            },
            "oidc_hosted_domain",
        ),
        (
            |c| {
                c.oidc_client_id = Some("id".into());
                c.oidc_client_secret = Some("s".into());
                c.oidc_ca_file = Some("/nonexistent/ca.pem".into());
            },
            "cannot read oidc_ca_file /nonexistent/ca.pem",
        ),
        (
            |c| c.github_client_secret = Some("s".into()),
            "github_client_id is not",
        ),
        (
            |c| {
                c.github_client_id = Some("id".into());
                c.github_client_secret = Some("s".into());
                c.github_org = Some("bad org!".into());
            },
            "github_org is bad org!",
        ),
    ];
    for (set, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut config = server::Config::load(
            None,
            server::Overrides {
                data_dir: Some(dir.path().to_path_buf()),
                database_url: None,
                listen: Some("127.0.0.1:0".parse().unwrap()),
                agent_listen: Some("127.0.0.1:0".parse().unwrap()),
            },
        )
        .unwrap();
        set(&mut config);
        let err = match server::Application::build(config).await {
            Ok(_) => panic!("the server started despite: {says}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(says), "{says}: {err}");
    }
}

control::both_backends!(
    sign_in_link_and_join,
    bad_tokens_are_refused,
    hosted_domain_and_unreachable_provider,
);
