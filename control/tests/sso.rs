//! The account rules of sign-in with an identity provider, on both backends:
//! a started flow answers once (of many racing callbacks exactly one gets
//! it), only in the browser that started it and before it expires; a linked
//! identity signs in its account whatever its email says now; a first SSO
//! sign-in never takes over an existing account; an unverified email is
//! refused; a joinable domain makes a password-less account with the domain's
//! role (never Owner), exempt from the two-factor requirement of password
//! accounts; linking needs the account's own verified email; unlinking the
//! only way in is refused; failures are recorded, those naming no account at
//! most once a minute per organisation even under a burst. The identities
//! here stand in for what the server's OpenID Connect and GitHub clients
//! pass on after checking a provider's answer (server/tests/oidc.rs drives
//! the real protocol).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{actor, meta};
use control::access::ManageSignIn;
use control::sso::{self, Identity, Provider, SsoFailure};
use control::testing::TestDb;
use control::{ControlError, Role, Timestamp};
use secrecy::SecretString;

fn google(subject: &str, email: &str) -> Identity {
    Identity {
        provider: Provider::Oidc,
        subject: subject.into(),
        email: email.into(),
        email_verified: true,
        label: "Google".into(),
    }
}

/// Links the Google identity `subject` with `email` to `user`.
async fn link(
    db: &TestDb,
    user: control::UserId,
    subject: &str,
    email: &str,
) -> Result<(), ControlError> {
    sso::link(
        &db.store,
        user,
        &google(subject, email),
        &meta(),
        Timestamp::now(),
    )
    .await
}

async fn actions(db: &TestDb, action: &str) -> Vec<(String, String)> {
    sqlx::query_as::<_, (String, String)>(
        "SELECT target, details FROM audit_events WHERE action = $1 ORDER BY seq",
    )
    .bind(action)
    .fetch_all(db.store.pool())
    .await
    .unwrap()
}

async fn start(db: &TestDb, state: &str, browser: &str, now: Timestamp) {
    start_from(&db.store, state, browser, "192.0.2.7", now)
        .await
        .unwrap();
}

async fn start_from(
    store: &control::store::Store,
    state: &str,
    browser: &str,
    ip: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    sso::begin_flow(
        store,
        Provider::Oidc,
        state,
        browser,
        &SecretString::from("verifier-1"),
        &SecretString::from("nonce-1"),
        None,
        None,
        ip,
        now,
    )
    .await
}

async fn a_flow_answers_once_in_its_own_browser(db: TestDb) {
    let now = Timestamp::now();
    start(&db, "state-a", "browser-a", now).await;
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = db.store.clone();
            tokio::spawn(async move {
                sso::take_flow(&store, Provider::Oidc, "state-a", Some("browser-a"), now).await
            })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(flow) => {
                won += 1;
                use secrecy::ExposeSecret;
                assert_eq!(flow.verifier.expose_secret(), "verifier-1");
                assert_eq!(flow.nonce.expose_secret(), "nonce-1");
                assert_eq!(flow.link_user, None);
            }
            Err(ControlError::Unauthenticated(m)) => assert_eq!(m, sso::UNKNOWN_STATE),
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one callback takes the flow");

    // Another browser (or none) cannot take it, and the attempt spends it:
    // the right browser is refused afterwards too.
    start(&db, "state-b", "browser-b", now).await;
    for browser in [Some("browser-a"), None] {
        start(&db, "state-c", "browser-c", now).await;
        assert!(matches!(
            sso::take_flow(&db.store, Provider::Oidc, "state-c", browser, now).await,
            Err(ControlError::Unauthenticated(_))
        ));
        assert!(
            sso::take_flow(&db.store, Provider::Oidc, "state-c", Some("browser-c"), now)
                .await
                .is_err()
        );
    }
    // Another provider's callback cannot take it.
    assert!(sso::take_flow(
        &db.store,
        Provider::GitHub,
        "state-b",
        Some("browser-b"),
        now
    )
    .await
    .is_err());
    // Expired: refused, and swept by the next start.
    start(&db, "state-d", "browser-d", now).await;
    let late = now.plus_secs(sso::FLOW_TTL_SECS + 1);
    assert!(sso::take_flow(
        &db.store,
        Provider::Oidc,
        "state-d",
        Some("browser-d"),
        late
    )
    .await
    .is_err());
    start(&db, "state-e", "browser-e", now).await;
    start(&db, "state-f", "browser-f", late).await;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sso_flows")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(left, 1, "only the flow started at `late` is left");
    // The database holds no state or browser value, only their hashes.
    let dump = common::dump(&db);
    for secret in ["state-f", "browser-f"] {
        assert!(!common::contains(&dump, secret), "{secret} in the dump");
    }
}

async fn a_first_sign_in_never_takes_over_an_account(db: TestDb) {
    let (owner, org) = common::add(&db, "Acme", "ada@example.com", Role::Owner).await;
    let now = Timestamp::now();
    let err = sso::sign_in(&db.store, &google("g-1", "Ada@Example.com"), &meta(), now)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ControlError::Conflict(m) if m.contains("link Google in Settings")),
        "{err:?}"
    );
    let failed = actions(&db, "user.login_failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, format!("user:{}", owner.0));
    assert!(failed[0].1.contains("sso_not_linked"), "{:?}", failed[0]);

    // Unverified: refused before anything else, and recorded.
    let mut unverified = google("g-1", "ada@example.com");
    unverified.email_verified = false;
    let err = sso::sign_in(&db.store, &unverified, &meta(), now)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ControlError::Forbidden(m) if m.contains("verified")),
        "{err:?}"
    );
    let failed = actions(&db, "user.login_failed").await;
    assert!(failed[1].1.contains("sso_unverified_email"), "{failed:?}");

    // Linked while signed in: the identity now signs in, by its subject,
    // even after its email at the provider changed.
    link(&db, owner, "g-1", "ada@example.com").await.unwrap();
    assert_eq!(actions(&db, "user.identity_linked").await.len(), 1);
    let done = sso::sign_in(&db.store, &google("g-1", "ada@example.com"), &meta(), now)
        .await
        .unwrap();
    assert_eq!((done.user, done.org, done.method), (owner, org, "oidc"));
    let login = actions(&db, "user.login").await;
    assert!(
        login.last().unwrap().1.contains("\"method\":\"oidc\""),
        "{login:?}"
    );
    let done = sso::sign_in(
        &db.store,
        &google("g-1", "ada@elsewhere.example"),
        &meta(),
        now,
    )
    .await
    .unwrap();
    assert_eq!(done.user, owner);
    // Another subject with Ada's email is not Ada.
    assert!(
        sso::sign_in(&db.store, &google("g-2", "ada@example.com"), &meta(), now)
            .await
            .is_err()
    );
    // Nobody else at all: refused, with the way in.
    let err = sso::sign_in(&db.store, &google("g-3", "eve@example.org"), &meta(), now)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ControlError::Forbidden(m) if m.contains("invitation")),
        "{err:?}"
    );
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(users, 1, "no account was made");
}

async fn linking_needs_the_accounts_own_verified_email(db: TestDb) {
    let (ada, _) = common::add(&db, "Acme", "ada@example.com", Role::Admin).await;
    let (bob, _) = common::add(&db, "Acme", "bob@example.com", Role::Member).await;
    let now = Timestamp::now();
    // Someone else's address: refused.
    let err = link(&db, ada, "g-9", "bob@example.com").await.unwrap_err();
    assert!(
        matches!(&err, ControlError::Forbidden(m) if m.contains("your own address")),
        "{err:?}"
    );
    let mut unverified = google("g-1", "ada@example.com");
    unverified.email_verified = false;
    assert!(matches!(
        sso::link(&db.store, ada, &unverified, &meta(), now).await,
        Err(ControlError::Forbidden(_))
    ));
    link(&db, ada, "g-1", "ada@example.com").await.unwrap();
    // Twice: a clear conflict. Bob cannot take Ada's identity, and Ada cannot
    // link a second Google account.
    assert!(matches!(
        link(&db, ada, "g-1", "ada@example.com").await,
        Err(ControlError::Conflict(_))
    ));
    assert!(matches!(
        link(&db, bob, "g-1", "bob@example.com").await,
        Err(ControlError::Conflict(_))
    ));
    assert!(matches!(
        link(&db, ada, "g-5", "ada@example.com").await,
        Err(ControlError::Conflict(_))
    ));
    let (_, org) = common::add(&db, "Acme", "carol@example.com", Role::Viewer).await;
    let a = actor(&db, ada, org).await;
    let methods = sso::methods(&a).await.unwrap();
    assert!(methods.password);
    assert_eq!(methods.identities.len(), 1);
    assert_eq!(methods.identities[0].email, "ada@example.com");
    // Ada has a password, so unlinking is fine, once.
    sso::unlink(&a, Provider::Oidc, now).await.unwrap();
    assert!(matches!(
        sso::unlink(&a, Provider::Oidc, now).await,
        Err(ControlError::NotFound(_))
    ));
    assert_eq!(actions(&db, "user.identity_unlinked").await.len(), 1);
}

async fn a_joinable_domain_makes_a_passwordless_member(db: TestDb) {
    let (owner, org) = common::add(&db, "Acme", "owner@acme.example", Role::Owner).await;
    let (admin, _) = common::add(&db, "Acme", "admin@acme.example", Role::Admin).await;
    let now = Timestamp::now();
    let o = actor(&db, owner, org).await;
    let a = actor(&db, admin, org).await;
    // Owners only; never Owner as the role; a domain is checked.
    assert!(matches!(
        a.authorize::<ManageSignIn>(),
        Err(ControlError::Forbidden(_))
    ));
    let auth = o.authorize::<ManageSignIn>().unwrap();
    assert!(matches!(
        sso::add_join_domain(&auth, "acme.example", Role::Owner, now).await,
        Err(ControlError::Invalid(_))
    ));
    for bad in [
        "acme",
        "-acme.example",
        "acme..example",
        "a cme.example",
        "acme.example/x",
    ] {
        assert!(
            matches!(
                sso::add_join_domain(&auth, bad, Role::Member, now).await,
                Err(ControlError::Invalid(_))
            ),
            "{bad}"
        );
    }
    sso::add_join_domain(&auth, "@ACME.example", Role::Member, now)
        .await
        .unwrap();
    assert!(matches!(
        sso::add_join_domain(&auth, "acme.example", Role::Admin, now).await,
        Err(ControlError::Conflict(_))
    ));
    assert_eq!(actions(&db, "org.join_domain_added").await.len(), 1);

    // Turn on the two-factor requirement: it holds password accounts only.
    sqlx::query("UPDATE orgs SET require_mfa = 1")
        .execute(db.store.pool())
        .await
        .unwrap();

    let done = sso::sign_in(
        &db.store,
        &google("g-new", "newcomer@acme.example"),
        &meta(),
        now,
    )
    .await
    .unwrap();
    assert_eq!(done.org, org);
    let newcomer = actor(&db, done.user, org).await;
    assert_eq!(newcomer.role(), Role::Member);
    assert!(
        !newcomer.mfa_due(),
        "an SSO-only account is not held for two-factor"
    );
    let methods = sso::methods(&newcomer).await.unwrap();
    assert!(!methods.password);
    // Its only way in cannot be unlinked.
    assert!(matches!(
        sso::unlink(&newcomer, Provider::Oidc, now).await,
        Err(ControlError::Conflict(m)) if m.contains("only way")
    ));
    // Its password sign-in fails like a wrong password.
    assert!(matches!(
        control::accounts::login(
            &db.store,
            "newcomer@acme.example",
            SecretString::from(common::PASSWORD),
            &meta(),
            now
        )
        .await,
        Err(ControlError::Unauthenticated(_))
    ));
    let added = actions(&db, "member.added").await;
    assert!(added.last().unwrap().1.contains("join_domain"), "{added:?}");
    // Signing in again is the same account.
    let again = sso::sign_in(
        &db.store,
        &google("g-new", "newcomer@acme.example"),
        &meta(),
        now,
    )
    .await
    .unwrap();
    assert_eq!(again.user, done.user);

    // A password account of an Admin stays held until two-factor is set up.
    assert!(actor(&db, admin, org).await.mfa_due());
    // ... and so is the Owner: each change rechecks, so the requirement
    // goes before the Owner changes anything else.
    assert!(matches!(
        sso::remove_join_domain(&auth, "acme.example", now).await,
        Err(ControlError::Forbidden(_))
    ));
    sqlx::query("UPDATE orgs SET require_mfa = 0")
        .execute(db.store.pool())
        .await
        .unwrap();

    // Removed: others from the domain no longer join; the member stays.
    sso::remove_join_domain(&auth, "acme.example", now)
        .await
        .unwrap();
    assert!(matches!(
        sso::remove_join_domain(&auth, "acme.example", now).await,
        Err(ControlError::NotFound(_))
    ));
    assert!(sso::sign_in(
        &db.store,
        &google("g-late", "late@acme.example"),
        &meta(),
        now
    )
    .await
    .is_err());
    assert!(sso::sign_in(
        &db.store,
        &google("g-new", "newcomer@acme.example"),
        &meta(),
        now
    )
    .await
    .is_ok());
    assert_eq!(
        sso::join_domains(&o.authorize().unwrap())
            .await
            .unwrap()
            .len(),
        0
    );
}

async fn failures_naming_nobody_are_recorded_once_a_minute(db: TestDb) {
    common::add(&db, "Acme", "owner@acme.example", Role::Owner).await;
    common::add(&db, "Globex", "owner@globex.example", Role::Owner).await;
    let now = Timestamp::now();
    let burst: Vec<_> = (0..10)
        .map(|_| {
            let store = db.store.clone();
            tokio::spawn(async move {
                sso::record_unattributed(
                    &store,
                    Provider::Oidc,
                    SsoFailure::InvalidToken,
                    &meta(),
                    now,
                )
                .await
            })
        })
        .collect();
    for b in burst {
        b.await.unwrap().unwrap();
    }
    let failed = actions(&db, "user.login_failed").await;
    assert_eq!(failed.len(), 2, "one per organisation: {failed:?}");
    assert!(failed
        .iter()
        .all(|(t, d)| t == "sso:oidc" && d.contains("sso_invalid_token")));
    // Another reason is recorded; alternating reasons does not let the first
    // through again within the minute; a minute later it is recorded again.
    sso::record_unattributed(
        &db.store,
        Provider::Oidc,
        SsoFailure::UnknownState,
        &meta(),
        now,
    )
    .await
    .unwrap();
    sso::record_unattributed(
        &db.store,
        Provider::Oidc,
        SsoFailure::InvalidToken,
        &meta(),
        now,
    )
    .await
    .unwrap();
    assert_eq!(actions(&db, "user.login_failed").await.len(), 4);
    sso::record_unattributed(
        &db.store,
        Provider::Oidc,
        SsoFailure::InvalidToken,
        &meta(),
        now.plus_secs(sso::UNATTRIBUTED_RECORD_EVERY_SECS + 1),
    )
    .await
    .unwrap();
    assert_eq!(actions(&db, "user.login_failed").await.len(), 6);
}

async fn requiring_sso_holds_password_sessions(db: TestDb) {
    let (owner, org) = common::add(&db, "Acme", "owner@acme.example", Role::Owner).await;
    let (admin, _) = common::add(&db, "Acme", "admin@acme.example", Role::Admin).await;
    let now = Timestamp::now();
    let o = actor(&db, owner, org).await;
    let auth = o.authorize::<ManageSignIn>().unwrap();
    // Nobody could meet it without a provider.
    assert!(matches!(
        sso::set_required(&auth, true, false, now).await,
        Err(ControlError::Conflict(m)) if m.contains("no identity provider")
    ));
    // An Admin's password session, built before the requirement...
    let before = actor(&db, admin, org).await;
    sso::set_required(&auth, true, true, now).await.unwrap();
    assert!(matches!(
        sso::set_required(&auth, true, true, now).await,
        Err(ControlError::Conflict(_))
    ));
    let changed = actions(&db, "org.sso_requirement_changed").await;
    assert!(
        changed[0]
            .1
            .contains("\"members_without_a_linked_identity\":1"),
        "{changed:?}"
    );
    // ... is refused in the write transaction.
    let invite = before
        .authorize::<control::access::ManageMembers>()
        .unwrap();
    assert!(matches!(
        control::team::invite(&invite, "new@acme.example", Role::Viewer, now).await,
        Err(ControlError::Forbidden(m)) if m == control::access::SSO_DUE
    ));
    // A new password session is refused everything, reading included.
    let held = actor(&db, admin, org).await;
    assert!(held.sso_due());
    assert!(matches!(
        held.authorize::<control::access::ReadOrg>(),
        Err(ControlError::Forbidden(m)) if m == control::access::SSO_DUE
    ));
    // The same person signed in through a provider is not.
    let mut via_sso = common::meta();
    via_sso.sso = true;
    let free = control::access::actor(&db.store, admin, Some(org), via_sso)
        .await
        .unwrap();
    assert!(!free.sso_due());
    let invite = free.authorize::<control::access::ManageMembers>().unwrap();
    control::team::invite(&invite, "new@acme.example", Role::Viewer, now)
        .await
        .unwrap();
    // Owners keep their password (a provider outage must not lock them out).
    assert!(!actor(&db, owner, org).await.sso_due());
    sso::set_required(&auth, false, false, now).await.unwrap();
    assert!(!actor(&db, admin, org).await.sso_due());
}

async fn starts_are_limited_per_client_under_a_burst(db: TestDb) {
    let now = Timestamp::now();
    let limit = sso::STARTS_PER_CLIENT.max_failures as usize;
    let burst: Vec<_> = (0..limit + 30)
        .map(|i| {
            let store = db.store.clone();
            tokio::spawn(async move {
                start_from(
                    &store,
                    &format!("state-{i}"),
                    "browser",
                    "198.51.100.9",
                    now,
                )
                .await
            })
        })
        .collect();
    let (mut ok, mut throttled) = (0, 0);
    for b in burst {
        match b.await.unwrap() {
            Ok(()) => ok += 1,
            Err(ControlError::Throttled(_)) => throttled += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!((ok, throttled), (limit, 30));
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sso_flows")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(kept as usize, limit, "a refused start keeps nothing");
    // Another address is not held; the window frees them later.
    start(&db, "other", "b", now).await;
    let later = now.plus_secs(sso::STARTS_PER_CLIENT.window_secs + 1);
    start_from(
        &db.store,
        "after-the-window",
        "browser",
        "198.51.100.9",
        later,
    )
    .await
    .unwrap();
}

async fn an_invitation_is_accepted_with_the_invited_address_only(db: TestDb) {
    let (owner, org) = common::add(&db, "Acme", "owner@acme.example", Role::Owner).await;
    let now = Timestamp::now();
    let o = actor(&db, owner, org).await;
    let invite = control::team::invite(
        &o.authorize().unwrap(),
        "dana@elsewhere.example",
        Role::Admin,
        now,
    )
    .await
    .unwrap();
    use secrecy::ExposeSecret;
    let hash = control::team::invite_hash(invite.token.expose_secret());
    // Another address, or an unverified one: refused, nothing made.
    let err = sso::accept_invite(
        &db.store,
        &hash,
        &google("g-x", "mallory@elsewhere.example"),
        &meta(),
        now,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ControlError::Forbidden(m) if m.contains("dana@elsewhere.example")),
        "{err:?}"
    );
    let mut unverified = google("g-d", "dana@elsewhere.example");
    unverified.email_verified = false;
    assert!(
        sso::accept_invite(&db.store, &hash, &unverified, &meta(), now)
            .await
            .is_err()
    );
    // The invited address: an account without a password, linked, with the
    // invitation's role, signed in.
    let done = sso::accept_invite(
        &db.store,
        &hash,
        &google("g-d", "dana@elsewhere.example"),
        &meta(),
        now,
    )
    .await
    .unwrap();
    assert_eq!((done.org, done.method), (org, "oidc"));
    let dana = actor(&db, done.user, org).await;
    assert_eq!(dana.role(), Role::Admin);
    assert!(!sso::methods(&dana).await.unwrap().password);
    assert_eq!(actions(&db, "invite.accepted").await.len(), 1);
    // Once only.
    assert!(matches!(
        sso::accept_invite(
            &db.store,
            &hash,
            &google("g-d", "dana@elsewhere.example"),
            &meta(),
            now
        )
        .await,
        Err(ControlError::Conflict(_))
    ));
    // The identity now signs in.
    assert_eq!(
        sso::sign_in(
            &db.store,
            &google("g-d", "dana@elsewhere.example"),
            &meta(),
            now
        )
        .await
        .unwrap()
        .user,
        done.user
    );
}

control::both_backends!(
    a_flow_answers_once_in_its_own_browser,
    a_first_sign_in_never_takes_over_an_account,
    linking_needs_the_accounts_own_verified_email,
    a_joinable_domain_makes_a_passwordless_member,
    failures_naming_nobody_are_recorded_once_a_minute,
    requiring_sso_holds_password_sessions,
    starts_are_limited_per_client_under_a_burst,
    an_invitation_is_accepted_with_the_invited_address_only,
);
