//! The cost of a sign-in by each method, against the real server (in this
//! process, on SQLite, port 0) and the real counterparts the tests use:
//! npm `oidc-provider` over HTTPS on loopback for OpenID Connect, and the
//! stand-in for GitHub's endpoints (GitHub cannot be reached from here).
//! Prints figures; asserts nothing about time.
//!
//! Run: `cargo bench -p server --bench sign_in -- [N]` (default 20 per method;
//! above 59, the SSO starts from this one address reach
//! `control::sso::STARTS_PER_CLIENT`).
//!
//! Each sign-in is a new browser (cookie-keeping client) from the first
//! request to a signed-in session, timed end to end on the client:
//! - **password**: `POST /api/login`.
//! - **password + TOTP**: `POST /api/login`, then `POST /api/sign-in-code`
//!   (N accounts, each with its authenticator set up).
//! - **Google (OpenID Connect)**: `GET /auth/oidc/start`, the provider's
//!   authorization and sign-in form, `GET /auth/oidc/callback` (the server
//!   exchanges the code and checks the ID token). The callback alone, the
//!   server's own share, is reported too.
//! - **GitHub**: the same through `/auth/github/...` (the server exchanges
//!   the code and reads `/user` and `/user/emails`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/helpers/mod.rs"]
mod helpers;

use std::time::{Duration, Instant};

use control::testing::TestDb;
use control::{Role, Timestamp};
use helpers::github::{user, GitHubStandIn};
use helpers::oidc::{self, Account, Client, OidcProvider};
use helpers::{location, TestApp, PASSWORD};

fn report(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = times.len();
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / n as f64;
    println!(
        "{name:<38} n={n:<3} median {:>8.2} ms  mean {:>8.2} ms  p90 {:>8.2} ms  min {:>8.2} ms",
        ms(times[n / 2]),
        mean,
        ms(times[(n * 9 / 10).min(n - 1)]),
        ms(times[0]),
    );
}

/// One SSO sign-in in a new browser: (whole, callback alone).
async fn sso(
    app: &TestApp,
    browser: &reqwest::Client,
    provider: &str,
    login: &str,
) -> (Duration, Duration) {
    let started = Instant::now();
    let to = location(
        &browser
            .get(app.url(&format!("/auth/{provider}/start")))
            .send()
            .await
            .unwrap(),
    );
    let back = oidc::authorize(browser, &to, login).await;
    let at = Instant::now();
    let res = browser.get(&back).send().await.unwrap();
    let callback = at.elapsed();
    assert_eq!(location(&res), "/", "{provider} sign-in of {login}");
    (started.elapsed(), callback)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let pki = tempfile::tempdir().unwrap();
    let oidc_port = oidc::free_port();
    let github_port = oidc::free_port();
    let ca = oidc::pki(pki.path());
    let app = TestApp::spawn_with(TestDb::sqlite().await, |c| {
        c.oidc_client_id = Some("pilothouse".into());
        c.oidc_client_secret = Some("bench secret".into());
        c.oidc_issuer = Some(format!("https://localhost:{oidc_port}"));
        c.oidc_ca_file = Some(ca.clone());
        c.github_client_id = Some("Iv1.bench".into());
        c.github_client_secret = Some("bench github secret".into());
        c.github_url = Some(format!("http://127.0.0.1:{github_port}"));
    })
    .await;
    let provider = OidcProvider::start(
        pki.path(),
        oidc_port,
        Client::new(
            "pilothouse",
            "bench secret",
            &app.url("/auth/oidc/callback"),
        ),
        &[Account::new("g-1", "ada@example.com")],
    )
    .await;
    let github = GitHubStandIn::start(
        github_port,
        "Iv1.bench",
        "bench github secret",
        &app.url("/auth/github/callback"),
        vec![user(1, "ada", &[("ada@example.com", true, true)], &[])],
    )
    .await;
    let (ada, org) = app.add_user("Acme", "ada@example.com", Role::Owner).await;
    let meta = control::access::RequestMeta::new("192.0.2.1", "bench");
    for (provider, subject) in [
        (control::sso::Provider::Oidc, "g-1"),
        (control::sso::Provider::GitHub, "1"),
    ] {
        control::sso::link(
            &app.db.store,
            ada,
            &control::sso::Identity {
                provider,
                subject: subject.into(),
                email: "ada@example.com".into(),
                email_verified: true,
                label: "bench".into(),
            },
            &meta,
            Timestamp::now(),
        )
        .await
        .unwrap();
    }

    // Password. The client address is the same for every attempt: at most
    // 100 failures per client and hour, but these succeed.
    let mut times = Vec::new();
    for _ in 0..n {
        let c = app.client();
        let t = Instant::now();
        let res = app
            .call(
                &c,
                "login",
                &[("email", "ada@example.com"), ("password", PASSWORD)],
            )
            .await;
        times.push(t.elapsed());
        assert_eq!(res.status(), 200);
    }
    report("password", times);

    // Password + TOTP: N accounts with their authenticator set up.
    let ring = control::secrets::Keyring::open(&app.dir.path().join("master.key")).unwrap();
    let mut seeds = Vec::new();
    for i in 0..n {
        let email = format!("totp{i}@example.com");
        let (user, _) = app.add_user("Acme", &email, Role::Member).await;
        let actor = control::access::actor(&app.db.store, user, Some(org), meta.clone())
            .await
            .unwrap();
        let now = Timestamp::now();
        let setup = control::mfa::begin_enrolment(&actor, &ring, now)
            .await
            .unwrap();
        let seed = control::mfa::decode_base32(&setup.secret).unwrap();
        let code = control::mfa::hotp(&seed, control::mfa::step_at(now) as u64);
        control::mfa::confirm_enrolment(&actor, &ring, &code, now)
            .await
            .unwrap();
        seeds.push((email, seed));
    }
    let mut times = Vec::new();
    for (email, seed) in &seeds {
        // The next step's code: later than the one that confirmed the set-up.
        let code = control::mfa::hotp(seed, (control::mfa::step_at(Timestamp::now()) + 1) as u64);
        let c = app.client();
        let t = Instant::now();
        let res = app
            .call(&c, "login", &[("email", email), ("password", PASSWORD)])
            .await;
        assert_eq!(res.status(), 200);
        let res = app.call(&c, "sign-in-code", &[("code", &code)]).await;
        times.push(t.elapsed());
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }
    report("password + TOTP", times);

    for (name, path, login) in [
        ("Google (OpenID Connect)", "oidc", "g-1"),
        ("GitHub", "github", "ada"),
    ] {
        let mut whole = Vec::new();
        let mut callbacks = Vec::new();
        // One warm-up (discovery and the provider's keys are fetched once).
        sso(&app, &oidc::browser(&ca), path, login).await;
        for _ in 0..n {
            let (w, c) = sso(&app, &oidc::browser(&ca), path, login).await;
            whole.push(w);
            callbacks.push(c);
        }
        report(&format!("{name}, whole"), whole);
        report(&format!("{name}, callback only"), callbacks);
    }
    provider.stop().await;
    github.stop().await;
}
