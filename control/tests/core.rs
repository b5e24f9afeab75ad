//! The sound core on both backends: rechecks inside the write transaction,
//! the last-Owner rule under concurrency, agent sessions that lose their
//! rights at revocation, derived state that cannot drift, bounded enrolment
//! refusals, and names without invisible characters.

// Test bodies are shared by both backends through a macro, so they are not
// `#[test]` functions themselves; a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use control::access::{Actor, ManageMembers, Operator, ReadOrg, RequestMeta};
use control::agents::{self, Enrolment, ManageAgents};
use control::ca::AgentCa;
use control::commands::{self, Report};
use control::delivery::{Delivery, KEY_ACTION_TTL_SECS};
use control::testing::TestDb;
use control::throttle::MemoryThrottle;
use control::{accounts, audit, team, ControlError, PqcState, Role, Timestamp};
use secrecy::{ExposeSecret, SecretString};

mod common;
use common::{actor, add, csr, delivery, meta};

async fn actions(actor: &Actor) -> Vec<String> {
    audit::latest(&actor.authorize::<ReadOrg>().unwrap(), 200)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

/// A role lowered after the actor was built no longer counts: every write
/// re-reads it inside its own transaction, including the Owner-level checks.
async fn writes_recheck_the_role_inside_their_transaction(db: TestDb) {
    let now = Timestamp::now();
    let (a, org) = add(&db, "Acme", "a@example.com", Role::Owner).await;
    let (b, _) = add(&db, "Acme", "b@example.com", Role::Owner).await;
    let (m, _) = add(&db, "Acme", "m@example.com", Role::Member).await;
    let a_stale = actor(&db, a, org).await;
    let b = actor(&db, b, org).await;
    // B demotes A to Admin; A's actor still says Owner.
    team::change_role(&b.authorize().unwrap(), a, Role::Admin, now)
        .await
        .unwrap();
    let manage = a_stale.authorize::<ManageMembers>().unwrap();
    let promoted = team::change_role(&manage, m, Role::Owner, now).await;
    assert!(
        matches!(promoted, Err(ControlError::Forbidden(_))),
        "an ex-Owner made an Owner: {promoted:?}"
    );
    let invited = team::invite(&manage, "new@example.com", Role::Owner, now).await;
    assert!(
        matches!(invited, Err(ControlError::Forbidden(_))),
        "an ex-Owner invited an Owner: {invited:?}"
    );

    // An Admin demoted to Member can no longer create registration tokens.
    let ca = AgentCa::generate(now).unwrap();
    let a_admin = actor(&db, a, org).await;
    let agents_auth = a_admin.authorize::<ManageAgents>().unwrap();
    team::change_role(&b.authorize().unwrap(), a, Role::Member, now)
        .await
        .unwrap();
    let token = agents::create_registration_token(&agents_auth, &ca.pin(), 3600, now).await;
    assert!(
        matches!(token, Err(ControlError::Forbidden(_))),
        "a demoted Admin created a registration token: {token:?}"
    );
}

/// Two Owners demoting each other at the same moment: one wins, the other is
/// refused, and the organisation keeps an Owner.
async fn the_last_owner_survives_concurrent_demotions(db: TestDb) {
    for round in 0..5 {
        let org_name = format!("Acme {round}");
        let (a, org) = add(
            &db,
            &org_name,
            &format!("a{round}@example.com"),
            Role::Owner,
        )
        .await;
        let (b, _) = add(
            &db,
            &org_name,
            &format!("b{round}@example.com"),
            Role::Owner,
        )
        .await;
        let a_actor = actor(&db, a, org).await;
        let b_actor = actor(&db, b, org).await;
        let now = Timestamp::now();
        let t1 = tokio::spawn(async move {
            team::change_role(&a_actor.authorize().unwrap(), b, Role::Admin, now).await
        });
        let t2 = tokio::spawn(async move {
            team::change_role(&b_actor.authorize().unwrap(), a, Role::Admin, now).await
        });
        let (r1, r2) = (t1.await.unwrap(), t2.await.unwrap());
        let ok = [&r1, &r2].iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: {r1:?} / {r2:?}");
        let viewer = actor(&db, if r1.is_ok() { a } else { b }, org).await;
        let members = team::team(&viewer.authorize().unwrap(), now)
            .await
            .unwrap()
            .members;
        let owners = members.iter().filter(|m| m.role == Role::Owner).count();
        assert_eq!(owners, 1, "round {round}: {members:?}");
    }
}

struct Fleet {
    ca: Arc<AgentCa>,
    delivery: Delivery,
    owner: Actor,
}

async fn fleet(db: &TestDb) -> Fleet {
    let ca = Arc::new(AgentCa::generate(Timestamp::now()).unwrap());
    let delivery = delivery(db);
    let (owner, org) = add(db, "Acme", "owner@example.com", Role::Owner).await;
    let owner = actor(db, owner, org).await;
    Fleet {
        ca,
        delivery,
        owner,
    }
}

/// Enrols one agent; returns its id, certificate fingerprint and identity key.
async fn enrol(
    db: &TestDb,
    f: &Fleet,
    kem: bool,
) -> (control::AgentId, String, channel::SigningKey) {
    let now = Timestamp::now();
    let token =
        agents::create_registration_token(&f.owner.authorize().unwrap(), &f.ca.pin(), 3600, now)
            .await
            .unwrap();
    let identity = channel::SigningKey::generate();
    let enrolled = agents::enrol(
        &db.store,
        &f.ca,
        &MemoryThrottle::new(100, 600),
        Enrolment {
            token: token.token.expose_secret().parse().unwrap(),
            csr_pem: csr().1,
            identity_key: identity.verifying_key().clone(),
            kem_key: kem.then(|| channel::KemSecretKey::generate().public_key().clone()),
            hostname: "web-1".into(),
            agent_version: "0.1.0".into(),
        },
        &meta(),
        now,
    )
    .await
    .unwrap();
    (enrolled.agent, enrolled.cert.fingerprint, identity)
}

/// A session taken before a revocation commits cannot get a certificate or
/// record a key round afterwards.
async fn a_revoked_agent_gets_no_certificate_and_no_event(db: TestDb) {
    let f = fleet(&db).await;
    let now = Timestamp::now();
    let (agent, fp, identity) = enrol(&db, &f, false).await;
    let session = agents::authenticate(&db.store, &fp, now).await.unwrap();
    f.delivery
        .revoke(&f.owner.authorize().unwrap(), &agent, now)
        .await
        .unwrap();

    let (_, renewal_csr) = csr();
    let renewal = channel::sign_renewal(&agent.0, &renewal_csr, &identity, now.0).unwrap();
    let renewed = agents::renew_cert(&db.store, &f.ca, &session, &renewal_csr, &renewal, now).await;
    assert!(
        matches!(renewed, Err(ControlError::Unauthenticated(_))),
        "{renewed:?}"
    );

    let (_, new_csr) = csr();
    let new_identity = channel::SigningKey::generate();
    let signed = channel::sign_registration(
        channel::KeyRegistration {
            agent_id: agent.0.clone(),
            kem_public_key: channel::KemSecretKey::generate().public_key().clone(),
            identity_key: new_identity.verifying_key().clone(),
            tls_cert_fingerprint: Some(control::crypto::sha256_hex(&new_csr)),
            issued_at: now.0,
        },
        &identity,
        &new_identity,
    )
    .unwrap();
    let registered =
        agents::accept_key_registration(&db.store, &f.ca, &session, &signed, Some(&new_csr), now)
            .await;
    assert!(
        matches!(registered, Err(ControlError::Unauthenticated(_))),
        "{registered:?}"
    );
    let actions = actions(&f.owner).await;
    for refused in [
        "agent.cert_renewed",
        "agent.keys_rotated",
        "agent.pqc_activated",
    ] {
        assert!(
            !actions.iter().any(|a| a == refused),
            "{refused} in {actions:?}"
        );
    }
    assert!(agents::authenticate(&db.store, &fp, now).await.is_err());
}

/// Renewal takes the agent's identity key: a session (the TLS key) alone
/// cannot renew, neither with a signature by another key nor by replaying a
/// signature over another CSR.
async fn renewal_needs_the_identity_key(db: TestDb) {
    let f = fleet(&db).await;
    let now = Timestamp::now();
    let (agent, fp, identity) = enrol(&db, &f, true).await;
    let session = agents::authenticate(&db.store, &fp, now).await.unwrap();
    let (_, thief_csr) = csr();
    let thief = channel::SigningKey::generate();
    let forged = channel::sign_renewal(&agent.0, &thief_csr, &thief, now.0).unwrap();
    let refused = agents::renew_cert(&db.store, &f.ca, &session, &thief_csr, &forged, now).await;
    assert!(
        matches!(refused, Err(ControlError::Invalid(_))),
        "{refused:?}"
    );
    let (_, real_csr) = csr();
    let signed = channel::sign_renewal(&agent.0, &real_csr, &identity, now.0).unwrap();
    let replayed = agents::renew_cert(&db.store, &f.ca, &session, &thief_csr, &signed, now).await;
    assert!(
        matches!(replayed, Err(ControlError::Invalid(_))),
        "{replayed:?}"
    );
    let renewed = agents::renew_cert(&db.store, &f.ca, &session, &real_csr, &signed, now)
        .await
        .unwrap();
    assert_ne!(renewed.fingerprint, fp);
    let events = actions(&f.owner).await;
    assert_eq!(
        events.iter().filter(|a| *a == "agent.cert_renewed").count(),
        1
    );
}

/// "Pending key registration" follows the key command: it ends when the
/// command fails or expires, not only when keys arrive.
async fn pending_key_registration_follows_its_command(db: TestDb) {
    let f = fleet(&db).await;
    let now = Timestamp::now();
    let read = f.owner.authorize::<ReadOrg>().unwrap();
    let manage = f.owner.authorize::<ManageAgents>().unwrap();
    let (agent, fp, _) = enrol(&db, &f, false).await;

    // Failure: the agent reports the round failed.
    let command = f
        .delivery
        .request_key_action(&manage, &agent, agents::KeyAction::RotateKeys, now)
        .await
        .unwrap();
    let session = agents::authenticate(&db.store, &fp, now).await.unwrap();
    let pending = commands::take_pending(&db.store, &session, now)
        .await
        .unwrap()
        .commands;
    let seq = pending.iter().find(|c| c.id == command).unwrap().seq;
    commands::finish(
        &db.store,
        &session,
        Report {
            command: &command.0,
            sequence: seq,
            succeeded: false,
            refused: false,
            text: "disk full",
        },
        now,
    )
    .await
    .unwrap();
    let view = agents::get(&read, &agent, now).await.unwrap();
    assert_eq!(view.pqc, PqcState::ClassicalFallback, "{view:?}");
    // Expiry: a week later the round is over and the state with it.
    f.delivery
        .request_key_action(&manage, &agent, agents::KeyAction::ActivatePqc, now)
        .await
        .unwrap();
    assert_eq!(
        agents::get(&read, &agent, now).await.unwrap().pqc,
        PqcState::PendingKeyRegistration
    );
    let later = now.plus_secs(KEY_ACTION_TTL_SECS + 1);
    assert_eq!(
        agents::get(&read, &agent, later).await.unwrap().pqc,
        PqcState::ClassicalFallback
    );

    // The expired round shows as such in the list.
    let recent = commands::recent_commands(&read, &agent, 10, later)
        .await
        .unwrap();
    assert!(recent
        .iter()
        .all(|c| c.state != control::CommandState::Queued
            && c.state != control::CommandState::Delivered));
}

/// A used token is audited once however often it is tried; random tokens
/// are not audited at all and run into the per-address limit, even when the
/// attempts arrive all at once.
async fn enrolment_refusals_are_bounded(db: TestDb) {
    let f = fleet(&db).await;
    let now = Timestamp::now();
    let manage = f.owner.authorize::<ManageAgents>().unwrap();
    let token = agents::create_registration_token(&manage, &f.ca.pin(), 3600, now)
        .await
        .unwrap();
    let throttle = MemoryThrottle::new(1000, 600);
    let attempt = |token: String| Enrolment {
        token: token.parse().unwrap(),
        csr_pem: csr().1,
        identity_key: channel::SigningKey::generate().verifying_key().clone(),
        kem_key: None,
        hostname: "web-1".into(),
        agent_version: "0.1.0".into(),
    };
    let whole = token.token.expose_secret().to_string();
    agents::enrol(
        &db.store,
        &f.ca,
        &throttle,
        attempt(whole.clone()),
        &meta(),
        now,
    )
    .await
    .unwrap();
    for _ in 0..10 {
        let again = agents::enrol(
            &db.store,
            &f.ca,
            &throttle,
            attempt(whole.clone()),
            &meta(),
            now,
        )
        .await;
        assert!(matches!(again, Err(ControlError::Conflict(_))), "{again:?}");
    }
    let refused = actions(&f.owner)
        .await
        .into_iter()
        .filter(|a| a == "agent.registration_refused")
        .count();
    assert_eq!(refused, 1, "one audit event per refused token");
    let listed = agents::list_registration_tokens(&f.owner.authorize().unwrap(), now)
        .await
        .unwrap();
    assert_eq!(listed[0].refusals, 10);
    assert_eq!(listed[0].state, control::TokenState::Used);

    // Random tokens from one address, 60 at once, against a limit of 20.
    let limited = Arc::new(MemoryThrottle::new(20, 600));
    let pin = f.ca.pin();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (store, limited) = (db.store.clone(), limited.clone());
        let forged = format!("pht1_{i:032x}_{pin}");
        let e = attempt(forged);
        let ca = f.ca.clone();
        tasks.push(tokio::spawn(async move {
            agents::enrol(&store, &ca, &limited, e, &meta(), now).await
        }));
    }
    let mut invalid = 0;
    let mut throttled = 0;
    for t in tasks {
        match t.await.unwrap() {
            Err(ControlError::Unauthenticated(_)) => invalid += 1,
            Err(ControlError::Throttled(_)) => throttled += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((invalid, throttled), (20, 40));
    let other = RequestMeta::new("192.0.2.99", "test");
    let elsewhere = agents::enrol(
        &db.store,
        &f.ca,
        &limited,
        attempt(format!("pht1_{:032x}_{pin}", 999)),
        &other,
        now,
    )
    .await;
    assert!(
        matches!(elsewhere, Err(ControlError::Unauthenticated(_))),
        "another address is not throttled: {elsewhere:?}"
    );
    assert_eq!(
        actions(&f.owner)
            .await
            .into_iter()
            .filter(|a| a == "agent.registration_refused")
            .count(),
        1,
        "unknown tokens write nothing"
    );

    // A revoked token is refused.
    let revoked = agents::create_registration_token(&manage, &f.ca.pin(), 3600, now)
        .await
        .unwrap();
    agents::revoke_registration_token(&manage, revoked.id, now)
        .await
        .unwrap();
    let late = agents::enrol(
        &db.store,
        &f.ca,
        &throttle,
        attempt(revoked.token.expose_secret().to_string()),
        &meta(),
        now,
    )
    .await;
    assert!(
        matches!(late, Err(ControlError::Conflict(ref m)) if m.contains("revoked")),
        "{late:?}"
    );
}

/// Hostnames and organisation names with bidi overrides or zero-width
/// characters are refused.
async fn names_refuse_invisible_characters(db: TestDb) {
    let f = fleet(&db).await;
    let now = Timestamp::now();
    let token =
        agents::create_registration_token(&f.owner.authorize().unwrap(), &f.ca.pin(), 3600, now)
            .await
            .unwrap();
    let e = Enrolment {
        token: token.token.expose_secret().parse().unwrap(),
        csr_pem: csr().1,
        identity_key: channel::SigningKey::generate().verifying_key().clone(),
        kem_key: None,
        hostname: "web\u{202E}1-prod".into(),
        agent_version: "0.1.0".into(),
    };
    let refused = agents::enrol(
        &db.store,
        &f.ca,
        &MemoryThrottle::new(10, 60),
        e,
        &meta(),
        now,
    )
    .await;
    assert!(
        matches!(refused, Err(ControlError::Invalid(_))),
        "{refused:?}"
    );
    let org = accounts::add_user_cli(
        &Operator::command_line(db.store.clone()),
        "Acme\u{2066}Evil",
        "x@example.com",
        Role::Owner,
        SecretString::from("correct horse battery staple"),
        now,
    )
    .await;
    assert!(matches!(org, Err(ControlError::Invalid(_))), "{org:?}");
}

/// 200 wrong passwords for one account at once: at most the account's limit
/// get as far as a hash, the rest are throttled, and no more hashes run at
/// once than the semaphore allows.
async fn parallel_wrong_passwords_stop_at_the_limit(db: TestDb) {
    let (_, _) = add(&db, "Acme", "target@example.com", Role::Owner).await;
    let now = Timestamp::now();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            accounts::login(
                &store,
                "target@example.com",
                SecretString::from("wrong wrong wrong"),
                &meta(),
                now,
            )
            .await
        }));
    }
    let (mut wrong, mut throttled) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Err(ControlError::Unauthenticated(_)) => wrong += 1,
            Err(ControlError::Throttled(_)) => throttled += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let limit = control::throttle::ACCOUNT.max_failures;
    assert_eq!(wrong, limit, "exactly the limit got past the throttle");
    assert_eq!(throttled, 200 - limit);
    assert!(
        control::password::peak_parallel_hashes() <= control::password::max_parallel_hashes(),
        "peak {} > {}",
        control::password::peak_parallel_hashes(),
        control::password::max_parallel_hashes()
    );
    // The right password is throttled too now: the account is locked for the window.
    let right = accounts::login(
        &db.store,
        "target@example.com",
        SecretString::from("correct horse battery staple"),
        &meta(),
        now,
    )
    .await;
    assert!(
        matches!(right, Err(ControlError::Throttled(_))),
        "{right:?}"
    );
}

/// An account that belongs to no organisation gets the wrong-password answer.
async fn an_account_without_organisation_looks_like_a_wrong_password(db: TestDb) {
    let now = Timestamp::now();
    let (owner, org) = add(&db, "Acme", "owner@example.com", Role::Owner).await;
    let (leaver, _) = add(&db, "Acme", "leaver@example.com", Role::Member).await;
    let owner = actor(&db, owner, org).await;
    team::remove_member(&owner.authorize().unwrap(), leaver, now)
        .await
        .unwrap();
    let wrong = accounts::login(
        &db.store,
        "leaver@example.com",
        SecretString::from("not the password"),
        &meta(),
        now,
    )
    .await
    .unwrap_err()
    .to_string();
    let right = accounts::login(
        &db.store,
        "leaver@example.com",
        SecretString::from("correct horse battery staple"),
        &meta(),
        now,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(right, ControlError::Unauthenticated(_)),
        "{right:?}"
    );
    assert_eq!(right.to_string(), wrong);
}

/// The audit page verifies only what is new since the last verification,
/// and still notices an edit after that point or a rewrite of the verified
/// history up to it.
async fn audit_verification_is_incremental(db: TestDb) {
    let now = Timestamp::now();
    let (owner, org) = add(&db, "Acme", "owner@example.com", Role::Owner).await;
    let owner = actor(&db, owner, org).await;
    let read = owner.authorize::<ReadOrg>().unwrap();
    let first = audit::verify(&read).await.unwrap();
    assert!(first.intact());
    let checkpoint = first.events_checked;
    assert!(checkpoint >= 1);
    for i in 0..3 {
        team::invite(
            &owner.authorize().unwrap(),
            &format!("p{i}@example.com"),
            Role::Viewer,
            now,
        )
        .await
        .unwrap();
    }
    let second = audit::verify(&read).await.unwrap();
    assert!(second.intact());
    assert_eq!(second.events_checked, checkpoint + 3);
    assert_eq!(
        second,
        audit::verify_org(&db.store, org).await.unwrap(),
        "the same answer as a full walk"
    );

    let drop = match db.store.backend() {
        control::store::Backend::Sqlite => "DROP TRIGGER audit_events_no_update",
        control::store::Backend::Postgres => "DROP TRIGGER audit_events_no_update ON audit_events",
    };
    sqlx::query(drop).execute(db.store.pool()).await.unwrap();
    // An event after the checkpoint, edited.
    team::invite(
        &owner.authorize().unwrap(),
        "p9@example.com",
        Role::Viewer,
        now,
    )
    .await
    .unwrap();
    let head = second.events_checked + 1;
    sqlx::query("UPDATE audit_events SET details = '{}' WHERE org_id = $1 AND seq = $2")
        .bind(org.0)
        .bind(head)
        .execute(db.store.pool())
        .await
        .unwrap();
    assert_eq!(
        audit::verify(&read).await.unwrap().first_broken_seq,
        Some(head)
    );
    // The verified history rewritten consistently up to the checkpoint.
    sqlx::query("UPDATE audit_events SET hash = $3 WHERE org_id = $1 AND seq = $2")
        .bind(org.0)
        .bind(second.events_checked)
        .bind("f".repeat(64))
        .execute(db.store.pool())
        .await
        .unwrap();
    assert_eq!(
        audit::verify(&read).await.unwrap().first_broken_seq,
        Some(second.events_checked)
    );
}

/// Revocation ends every long-poll the agent holds, not only one, and a
/// command wakes every poll too.
async fn revocation_ends_every_held_poll(db: TestDb) {
    let f = Arc::new(fleet(&db).await);
    let (agent, fp, _) = enrol(&db, &f, true).await;
    let mut polls = Vec::new();
    for _ in 0..3 {
        let (f, fp, store) = (f.clone(), fp.clone(), db.store.clone());
        polls.push(tokio::spawn(async move {
            let session = agents::authenticate(&store, &fp, Timestamp::now())
                .await
                .unwrap();
            f.delivery
                .poll(
                    session,
                    "X25519MLKEM768",
                    std::time::Duration::from_secs(60),
                )
                .await
        }));
    }
    // Let all three reach their wait.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    f.delivery
        .revoke(&f.owner.authorize().unwrap(), &agent, Timestamp::now())
        .await
        .unwrap();
    for p in polls {
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), p)
            .await
            .expect("a held poll outlived the revocation")
            .unwrap();
        assert!(
            matches!(ended, Err(ControlError::Unauthenticated(_))),
            "{ended:?}"
        );
    }
}

/// Heartbeats: the first poll (and one over a new TLS group) is written at
/// once; later ones are noted and written together by the flush.
async fn heartbeats_are_batched(db: TestDb) {
    let f = fleet(&db).await;
    let read = f.owner.authorize::<ReadOrg>().unwrap();
    let (agent, fp, _) = enrol(&db, &f, true).await;
    let seen = || async { agents::get(&read, &agent, Timestamp::now()).await.unwrap() };
    let enrolled_at = seen().await.last_seen_at.unwrap();
    let heartbeats = agents::Heartbeats::default();
    let group = "X25519MLKEM768";
    // A new TLS group: the caller writes it at once.
    let t1 = enrolled_at.plus_secs(1);
    let session = agents::authenticate(&db.store, &fp, t1).await.unwrap();
    assert!(heartbeats.record(&session, group, t1));
    agents::touch(&db.store, &session, group, t1).await.unwrap();
    let view = seen().await;
    assert_eq!(
        (view.last_seen_at, view.tls_group.as_str()),
        (Some(t1), group)
    );
    // 30 s later: noted, not written until the flush.
    let t2 = t1.plus_secs(30);
    let session = agents::authenticate(&db.store, &fp, t2).await.unwrap();
    assert!(!heartbeats.record(&session, group, t2));
    assert_eq!(seen().await.last_seen_at, Some(t1));
    assert_eq!(heartbeats.flush(&db.store).await.unwrap(), 1);
    assert_eq!(seen().await.last_seen_at, Some(t2));
    assert_eq!(heartbeats.flush(&db.store).await.unwrap(), 0);
    // Within 10 s of the last write: nothing to note.
    let t3 = t2.plus_secs(5);
    let session = agents::authenticate(&db.store, &fp, t3).await.unwrap();
    assert!(!heartbeats.record(&session, group, t3));
    assert_eq!(heartbeats.flush(&db.store).await.unwrap(), 0);
    // The poll notes its heartbeat the same way.
    let t4 = t2.plus_secs(60);
    let session = agents::authenticate(&db.store, &fp, t4).await.unwrap();
    f.delivery
        .poll(session, group, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(f.delivery.flush_heartbeats().await.unwrap(), 1);
}

/// A Viewer sees a prefix of a server's certificate fingerprint, not all of it;
/// an expired client certificate no longer authenticates.
async fn viewers_see_no_full_fingerprint_and_expired_certificates_fail(db: TestDb) {
    let f = fleet(&db).await;
    let now = Timestamp::now();
    let (agent, fp, _) = enrol(&db, &f, true).await;
    let (viewer, org) = add(&db, "Acme", "viewer@example.com", Role::Viewer).await;
    let viewer = actor(&db, viewer, org).await;
    let shown = agents::get(&viewer.authorize().unwrap(), &agent, now)
        .await
        .unwrap()
        .cert_fingerprint;
    assert!(!shown.contains(&fp), "{shown}");
    assert!(fp.starts_with(shown.trim_end_matches('…')), "{shown}");
    assert_eq!(shown.chars().count(), 17);
    let listed = agents::list(&viewer.authorize().unwrap(), now)
        .await
        .unwrap();
    assert!(listed.iter().all(|s| !s.cert_fingerprint.contains(&fp)));
    let full = agents::get(&f.owner.authorize().unwrap(), &agent, now)
        .await
        .unwrap()
        .cert_fingerprint;
    assert_eq!(full, fp, "Owners and Admins see it whole");

    let later = now.plus_secs((control::ca::CLIENT_CERT_DAYS + 1) * 86_400);
    let expired = agents::authenticate(&db.store, &fp, later).await;
    assert!(
        matches!(expired, Err(ControlError::Unauthenticated(ref m)) if m.contains("expired")),
        "{expired:?}"
    );
}

control::both_backends!(
    viewers_see_no_full_fingerprint_and_expired_certificates_fail,
    heartbeats_are_batched,
    revocation_ends_every_held_poll,
    audit_verification_is_incremental,
    renewal_needs_the_identity_key,
    parallel_wrong_passwords_stop_at_the_limit,
    an_account_without_organisation_looks_like_a_wrong_password,
    writes_recheck_the_role_inside_their_transaction,
    the_last_owner_survives_concurrent_demotions,
    a_revoked_agent_gets_no_certificate_and_no_event,
    pending_key_registration_follows_its_command,
    enrolment_refusals_are_bounded,
    names_refuse_invisible_characters,
);
