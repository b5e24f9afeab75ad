//! Two-factor sign-in over HTTP against the real server, on both backends:
//! set up from Settings, then a password sign-in is only a pending one (no
//! page or call is open to it) until `/login/code` takes a right code; a
//! wrong code, a code without a password first, and a used code are refused
//! with a message. An organisation's requirement shows on every page of an
//! Admin without it and closes every call but setting it up. A password
//! change ends the account's other sessions, and of two racing from the same
//! old password exactly one wins.

#![allow(clippy::unwrap_used)]

mod helpers;

use control::testing::TestDb;
use control::{Role, Timestamp, TotpSetup};
use helpers::{TestApp, PASSWORD};

/// The code of the step after now: later than the one that confirmed the
/// set-up however fast the test runs, and inside the accepted window.
fn next_code(seed: &[u8]) -> String {
    let step = control::mfa::step_at(Timestamp::now()) + 1;
    control::mfa::hotp(seed, step as u64)
}

/// Where a server function's answer sends the browser (a 200 with the
/// redirect's `location`, as Leptos answers a call from script).
fn location(res: &reqwest::Response) -> &str {
    assert_eq!(res.status(), 200, "{:?}", res.headers());
    res.headers()
        .get("location")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("(none)")
}

async fn a_password_sign_in_waits_for_the_code(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let owner = app.signed_in("owner@example.com").await;

    // Settings shows the section; setting up returns the QR code and the key.
    let page = app.page(&owner, "/settings").await.text().await.unwrap();
    assert!(page.contains("Two-factor sign-in"), "{page}");
    let res = app.call(&owner, "mfa-begin", &[]).await;
    assert_eq!(res.status(), 200);
    let setup: TotpSetup = res.json().await.unwrap();
    assert!(setup.qr_svg.starts_with("<svg "));
    let seed = control::mfa::decode_base32(&setup.secret).unwrap();
    let now_code = control::mfa::hotp(&seed, control::mfa::step_at(Timestamp::now()) as u64);
    let res = app
        .call(&owner, "mfa-confirm", &[("code", &now_code)])
        .await;
    assert_eq!(res.status(), 200);
    let recovery: Vec<String> = res.json().await.unwrap();
    assert_eq!(recovery.len(), 10);

    // A new browser: the right password leads to the code page, not in.
    let browser = app.client();
    let res = app
        .call(
            &browser,
            "login",
            &[("email", "owner@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(location(&res), "/login/code");
    let me: Option<serde_json::Value> = app
        .call(&browser, "current-user", &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me, None, "a pending sign-in is signed out");
    assert_eq!(app.call(&browser, "team", &[]).await.status(), 401);
    let code_page = app
        .page(&browser, "/login/code")
        .await
        .text()
        .await
        .unwrap();
    assert!(code_page.contains("authenticator app"), "{code_page}");

    // A wrong code: 401 with a sentence, still pending.
    let res = app
        .call(&browser, "sign-in-code", &[("code", "12345x")])
        .await;
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("not right"));
    assert_eq!(app.call(&browser, "team", &[]).await.status(), 401);

    // The right one signs in.
    let code = next_code(&seed);
    let res = app.call(&browser, "sign-in-code", &[("code", &code)]).await;
    assert_eq!(location(&res), "/");
    assert_eq!(app.call(&browser, "team", &[]).await.status(), 200);

    // The same code in another browser, after the right password: refused.
    let other = app.client();
    app.call(
        &other,
        "login",
        &[("email", "owner@example.com"), ("password", PASSWORD)],
    )
    .await;
    let res = app.call(&other, "sign-in-code", &[("code", &code)]).await;
    assert_eq!(res.status(), 401);
    // A recovery code works there.
    let res = app
        .call(&other, "sign-in-code", &[("code", &recovery[0])])
        .await;
    assert_eq!(location(&res), "/");
    assert_eq!(app.call(&other, "team", &[]).await.status(), 200);

    // No password first: nothing to finish.
    let stranger = app.client();
    let res = app
        .call(&stranger, "sign-in-code", &[("code", &recovery[1])])
        .await;
    assert_eq!(res.status(), 401);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("Enter your email and password first"));
    // The recovery code was not spent by that.
    let status: control::MfaView = app
        .call(&owner, "mfa-status", &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status.recovery_codes_left, 9);
}

/// Sets up two-factor for a signed-in client; returns the seed.
async fn enrol(app: &TestApp, client: &reqwest::Client) -> Vec<u8> {
    let setup: TotpSetup = app
        .call(client, "mfa-begin", &[])
        .await
        .json()
        .await
        .unwrap();
    let seed = control::mfa::decode_base32(&setup.secret).unwrap();
    let now_code = control::mfa::hotp(&seed, control::mfa::step_at(Timestamp::now()) as u64);
    let res = app
        .call(client, "mfa-confirm", &[("code", &now_code)])
        .await;
    assert_eq!(res.status(), 200);
    seed
}

async fn a_required_second_factor_holds_an_admin_until_set_up(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    app.add_user("Acme", "admin@example.com", Role::Admin).await;
    let owner = app.signed_in("owner@example.com").await;
    let admin = app.signed_in("admin@example.com").await;

    // An Admin cannot set the rule; an Owner without two-factor is told to
    // set it up first.
    let res = app.call(&admin, "mfa-require", &[("on", "true")]).await;
    assert_eq!(res.status(), 403);
    let res = app.call(&owner, "mfa-require", &[("on", "true")]).await;
    assert_eq!(res.status(), 409);
    assert!(res.text().await.unwrap().contains("for yourself first"));
    enrol(&app, &owner).await;
    let res = app.call(&owner, "mfa-require", &[("on", "true")]).await;
    assert_eq!(res.status(), 200);

    // The Admin's pages say why, and every call but setting it up is refused.
    let page = app.page(&admin, "/servers").await.text().await.unwrap();
    assert!(page.contains("data-testid=\"mfa-due\""), "{page}");
    let res = app.call(&admin, "team", &[]).await;
    assert_eq!(res.status(), 403);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("requires two-factor sign-in"));
    let me: serde_json::Value = app
        .call(&admin, "current-user", &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["mfa_due"], true);
    enrol(&app, &admin).await;
    assert_eq!(app.call(&admin, "team", &[]).await.status(), 200);
    let page = app.page(&admin, "/servers").await.text().await.unwrap();
    assert!(!page.contains("data-testid=\"mfa-due\""));
    // While required, the Admin cannot turn it off.
    let res = app
        .call(&admin, "mfa-disable", &[("password", PASSWORD)])
        .await;
    assert_eq!(res.status(), 409);
    assert!(res.text().await.unwrap().contains("Acme requires"));
}

async fn a_password_change_ends_the_other_sessions(db: TestDb) {
    const NEW: &str = "a new and rather longer passphrase 7";
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let here = app.signed_in("owner@example.com").await;
    let elsewhere = app.signed_in("owner@example.com").await;

    let change = |current: &'static str, new: &'static str, repeat: &'static str| {
        let (app, here) = (&app, &here);
        async move {
            app.call(
                here,
                "change-password",
                &[
                    ("current", current),
                    ("new_password", new),
                    ("repeat", repeat),
                ],
            )
            .await
        }
    };
    // Refused with a sentence: a wrong current password, a weak new one, a
    // repetition that differs.
    for (current, new, repeat, says) in [
        ("not the password", NEW, NEW, "not right"),
        (PASSWORD, "short", "short", "at least 12"),
        (PASSWORD, NEW, "something else entirely", "differ"),
    ] {
        let res = change(current, new, repeat).await;
        assert_eq!(res.status(), 400);
        assert!(res.text().await.unwrap().contains(says), "{says}");
    }

    // Two changes at once from the same old password: one wins.
    let (a, b) = tokio::join!(
        change(PASSWORD, NEW, NEW),
        change(
            PASSWORD,
            "another long passphrase, 8 of them",
            "another long passphrase, 8 of them"
        )
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert!(
        statuses == [200, 400] || statuses == [200, 409],
        "{statuses:?}"
    );
    let winner = if a.status() == 200 {
        NEW
    } else {
        "another long passphrase, 8 of them"
    };

    // This session goes on; the other one is over.
    assert_eq!(app.call(&here, "team", &[]).await.status(), 200);
    assert_eq!(app.call(&elsewhere, "team", &[]).await.status(), 401);
    // The old password no longer signs in; the new one does.
    let res = app
        .call(
            &app.client(),
            "login",
            &[("email", "owner@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), 401);
    let res = app
        .call(
            &app.client(),
            "login",
            &[("email", "owner@example.com"), ("password", winner)],
        )
        .await;
    assert_eq!(location(&res), "/");
}

control::both_backends!(
    a_password_sign_in_waits_for_the_code,
    a_required_second_factor_holds_an_admin_until_set_up,
    a_password_change_ends_the_other_sessions,
);
