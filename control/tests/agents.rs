//! Agent enrolment, gateway authentication, revocation and the command queue
//! on both backends.

// Test bodies are shared by both backends through a macro, so they are not
// `#[test]` functions themselves; a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use control::access::{self, ReadOrg};
use control::agents::{self, Enrolment, ManageAgents};
use control::ca::AgentCa;
use control::commands::{self, Report};
use control::testing::TestDb;
use control::throttle::MemoryThrottle;
use control::{audit, metrics, AgentId, CommandState, ControlError, PqcState, Role, Timestamp};
use secrecy::ExposeSecret;

mod common;
use common::{add, csr, delivery, meta};

fn throttle() -> MemoryThrottle {
    MemoryThrottle::new(1000, 600)
}

fn ping_report<'a>(
    command: &'a control::CommandId,
    sequence: u64,
    succeeded: bool,
    text: &'a str,
) -> Report<'a> {
    Report {
        command: &command.0,
        sequence,
        succeeded,
        refused: false,
        text,
    }
}

fn enrolment(token: &str, kem: bool) -> Enrolment {
    Enrolment {
        token: token.parse().unwrap(),
        csr_pem: csr().1,
        identity_key: channel::SigningKey::generate().verifying_key().clone(),
        kem_key: kem.then(|| channel::KemSecretKey::generate().public_key().clone()),
        hostname: "web-1".into(),
        agent_version: "0.1.0".into(),
    }
}

async fn enrolment_tokens_are_one_time_and_audited(db: TestDb) {
    let now = Timestamp::now();
    let ca = AgentCa::generate(now).unwrap();
    let (owner, org) = add(&db, "Acme", "owner@example.com", Role::Owner).await;
    let (member, _) = add(&db, "Acme", "member@example.com", Role::Member).await;
    let owner = access::actor(&db.store, owner, Some(org), meta())
        .await
        .unwrap();
    let member = access::actor(&db.store, member, Some(org), meta())
        .await
        .unwrap();
    assert!(matches!(
        member.authorize::<ManageAgents>(),
        Err(ControlError::Forbidden(_))
    ));
    let manage = owner.authorize::<ManageAgents>().unwrap();
    assert!(matches!(
        agents::create_registration_token(&manage, &ca.pin(), 10, now).await,
        Err(ControlError::Invalid(_))
    ));

    let token = agents::create_registration_token(&manage, &ca.pin(), 3600, now)
        .await
        .unwrap();
    let token = token.token.expose_secret().to_string();
    assert_eq!(
        token
            .parse::<channel::token::RegistrationToken>()
            .unwrap()
            .pin()
            .to_hex(),
        ca.pin(),
        "the token carries the CA pin"
    );

    let enrolled = agents::enrol(
        &db.store,
        &ca,
        &throttle(),
        enrolment(&token, false),
        &meta(),
        now,
    )
    .await
    .unwrap();
    assert_eq!(enrolled.org, org);
    let again = agents::enrol(
        &db.store,
        &ca,
        &throttle(),
        enrolment(&token, false),
        &meta(),
        now,
    )
    .await;
    assert!(
        matches!(again, Err(ControlError::Conflict(ref m)) if m.contains("already been used")),
        "{again:?}"
    );

    let expired = agents::create_registration_token(&manage, &ca.pin(), 60, now)
        .await
        .unwrap();
    let late = agents::enrol(
        &db.store,
        &ca,
        &throttle(),
        enrolment(expired.token.expose_secret(), true),
        &meta(),
        now.plus_secs(61),
    )
    .await;
    assert!(
        matches!(late, Err(ControlError::Conflict(ref m)) if m.contains("expired")),
        "{late:?}"
    );
    let forged = format!("pht1_{}_{}", "0".repeat(32), ca.pin());
    let unknown = agents::enrol(
        &db.store,
        &ca,
        &throttle(),
        enrolment(&forged, true),
        &meta(),
        now,
    )
    .await;
    assert!(
        matches!(unknown, Err(ControlError::Unauthenticated(_))),
        "{unknown:?}"
    );

    // Another organisation's token enrols there, never here.
    let (stranger, other) = add(&db, "Globex", "stranger@example.com", Role::Owner).await;
    let stranger = access::actor(&db.store, stranger, Some(other), meta())
        .await
        .unwrap();
    let theirs =
        agents::create_registration_token(&stranger.authorize().unwrap(), &ca.pin(), 3600, now)
            .await
            .unwrap();
    let elsewhere = agents::enrol(
        &db.store,
        &ca,
        &throttle(),
        enrolment(theirs.token.expose_secret(), true),
        &meta(),
        now,
    )
    .await
    .unwrap();
    assert_eq!(elsewhere.org, other);

    let read = owner.authorize::<ReadOrg>().unwrap();
    let servers = agents::list(&read, now).await.unwrap();
    assert_eq!(servers.len(), 1, "Acme sees only its own server");
    assert_eq!(servers[0].pqc, PqcState::ClassicalFallback);
    assert!(servers[0].online);
    assert!(servers[0].last_seen_at.is_some());
    let listed = agents::list(&read, now.plus_secs(91)).await.unwrap();
    assert!(!listed[0].online, "silent for 90 s means offline");
    let actions: Vec<String> = audit::latest(&read, 20)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "agent.registration_refused")
            .count(),
        2,
        "{actions:?}"
    );
    assert!(actions.contains(&"agent.registered".to_string()));
}

async fn revocation_refuses_the_certificate_and_cancels_commands(db: TestDb) {
    let now = Timestamp::now();
    let ca = AgentCa::generate(now).unwrap();
    let (owner, org) = add(&db, "Acme", "owner@example.com", Role::Owner).await;
    let owner = access::actor(&db.store, owner, Some(org), meta())
        .await
        .unwrap();
    let manage = owner.authorize::<ManageAgents>().unwrap();
    let token = agents::create_registration_token(&manage, &ca.pin(), 3600, now)
        .await
        .unwrap();
    let enrolled = agents::enrol(
        &db.store,
        &ca,
        &throttle(),
        enrolment(token.token.expose_secret(), true),
        &meta(),
        now,
    )
    .await
    .unwrap();
    let identity = agents::authenticate(&db.store, &enrolled.cert.fingerprint, now)
        .await
        .unwrap();
    assert_eq!(identity.agent(), &enrolled.agent);
    assert!(agents::authenticate(&db.store, &"0".repeat(64), now)
        .await
        .is_err());

    // The queue: delivered until reported, reported once.
    let delivery = delivery(&db);
    let first = delivery.ping(&manage, &enrolled.agent, now).await.unwrap();
    let second = delivery.ping(&manage, &enrolled.agent, now).await.unwrap();
    let pending = commands::take_pending(&db.store, &identity, now)
        .await
        .unwrap()
        .commands;
    assert_eq!(
        pending.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(
        commands::take_pending(&db.store, &identity, now)
            .await
            .unwrap()
            .commands
            .len(),
        2,
        "at-least-once"
    );
    let wrong_seq = commands::finish(
        &db.store,
        &identity,
        ping_report(&first, 2, true, "pong"),
        now,
    )
    .await;
    assert!(
        matches!(wrong_seq, Err(ControlError::Invalid(_))),
        "a result must carry its command's sequence: {wrong_seq:?}"
    );
    commands::finish(
        &db.store,
        &identity,
        ping_report(&first, 1, true, "pong"),
        now,
    )
    .await
    .unwrap();
    commands::finish(
        &db.store,
        &identity,
        ping_report(&first, 1, false, "late duplicate"),
        now,
    )
    .await
    .unwrap();
    let read = owner.authorize::<ReadOrg>().unwrap();
    let outcome = commands::command_state(&read, &first, now).await.unwrap();
    assert_eq!(
        (outcome.state, outcome.result),
        (CommandState::Succeeded, Some("pong".to_string()))
    );
    let later = commands::take_pending(&db.store, &identity, now.plus_secs(301))
        .await
        .unwrap();
    assert!(
        later.commands.is_empty(),
        "past its deadline a command is not delivered"
    );
    assert_eq!(
        commands::command_state(&read, &second, now.plus_secs(301))
            .await
            .unwrap()
            .state,
        CommandState::Expired
    );
    let third = delivery.ping(&manage, &enrolled.agent, now).await.unwrap();

    // Another organisation cannot touch it.
    let (stranger, other) = add(&db, "Globex", "stranger@example.com", Role::Owner).await;
    let stranger = access::actor(&db.store, stranger, Some(other), meta())
        .await
        .unwrap();
    let s = stranger.authorize::<ManageAgents>().unwrap();
    assert!(matches!(
        delivery.revoke(&s, &enrolled.agent, now).await,
        Err(ControlError::NotFound(_))
    ));
    assert!(matches!(
        delivery.ping(&s, &enrolled.agent, now).await,
        Err(ControlError::NotFound(_))
    ));

    delivery
        .revoke(&manage, &enrolled.agent, now)
        .await
        .unwrap();
    let refused = agents::authenticate(&db.store, &enrolled.cert.fingerprint, now).await;
    assert!(
        matches!(refused, Err(ControlError::Unauthenticated(ref m)) if m.contains("revoked")),
        "{refused:?}"
    );
    assert_eq!(
        commands::command_state(&read, &third, now)
            .await
            .unwrap()
            .state,
        CommandState::Cancelled
    );
    let view = agents::get(&read, &enrolled.agent, now).await.unwrap();
    assert!(view.revoked && !view.online);
    assert!(AgentId::parse(&enrolled.agent.0).is_some());

    // The same host enrols again as a new identity.
    let token = agents::create_registration_token(&manage, &ca.pin(), 3600, now)
        .await
        .unwrap();
    let again = agents::enrol(
        &db.store,
        &ca,
        &throttle(),
        enrolment(token.token.expose_secret(), true),
        &meta(),
        now,
    )
    .await
    .unwrap();
    assert_ne!(again.agent, enrolled.agent);
    assert_eq!(
        agents::get(&read, &again.agent, now).await.unwrap().pqc,
        PqcState::PostQuantumActive
    );
}

async fn metrics_are_batched_rolled_up_and_expired(db: TestDb) {
    use channel::api::{DiskUsage, MetricSample};
    // 10 s into a 5-minute bucket.
    let now = Timestamp(1_800_000_010_000);
    let ca = AgentCa::generate(now).unwrap();
    let (owner, org) = add(&db, "Acme", "owner@example.com", Role::Owner).await;
    let owner = access::actor(&db.store, owner, Some(org), meta())
        .await
        .unwrap();
    let manage = owner.authorize::<ManageAgents>().unwrap();
    let token = agents::create_registration_token(&manage, &ca.pin(), 3600, now)
        .await
        .unwrap();
    let enrolled = agents::enrol(
        &db.store,
        &ca,
        &throttle(),
        enrolment(token.token.expose_secret(), true),
        &meta(),
        now,
    )
    .await
    .unwrap();
    let identity = agents::authenticate(&db.store, &enrolled.cert.fingerprint, now)
        .await
        .unwrap();
    let sample = |at: i64, cpu: f64| MetricSample {
        at,
        cpu_pct: cpu,
        mem_used_bytes: 100,
        mem_total_bytes: 400,
        disks: vec![DiskUsage {
            mount: "/".into(),
            used_bytes: 1,
            total_bytes: 2,
        }],
        net_rx_bytes_per_sec: 1.0,
        net_tx_bytes_per_sec: 2.0,
        load: [0.1, 0.2, 0.3],
        units: Vec::new(),
        backups: Vec::new(),
    };
    // Two samples in one 5-minute bucket, one in the next, one too old, one impossible.
    let b0 = now.0 - 10_000 - 600_000;
    let batch = vec![
        sample(b0 + 1_000, 10.0),
        sample(b0 + 61_000, 30.0),
        sample(b0 + 301_000, 50.0),
        sample(now.0 - 49 * 3_600_000, 5.0),
        sample(b0 + 2_000, f64::NAN),
    ];
    assert_eq!(
        metrics::record(&db.store, &identity, &batch, now)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        metrics::record(&db.store, &identity, &batch, now)
            .await
            .unwrap(),
        3,
        "resending is harmless"
    );
    let too_many: Vec<_> = (0..181).map(|i| sample(now.0 - i * 1000, 1.0)).collect();
    assert!(matches!(
        metrics::record(&db.store, &identity, &too_many, now).await,
        Err(ControlError::Invalid(_))
    ));
    let read = owner.authorize::<ReadOrg>().unwrap();
    let hour = metrics::series(&read, &enrolled.agent, 3600, now)
        .await
        .unwrap();
    assert_eq!(
        hour.iter().map(|p| p.cpu_pct).collect::<Vec<_>>(),
        vec![10.0, 30.0, 50.0]
    );
    let day = metrics::series(&read, &enrolled.agent, 86_400, now)
        .await
        .unwrap();
    assert_eq!(
        day.iter().map(|p| p.cpu_pct).collect::<Vec<_>>(),
        vec![20.0, 50.0],
        "5-minute averages"
    );

    // Two days later the raw samples are gone and the averages remain.
    metrics::maintain(&db.store, now).await.unwrap();
    let later = now.plus_secs(49 * 3600);
    metrics::maintain(&db.store, later).await.unwrap();
    assert!(metrics::series(&read, &enrolled.agent, 3600, later)
        .await
        .unwrap()
        .is_empty());
    let week = metrics::series(&read, &enrolled.agent, 7 * 86_400, later)
        .await
        .unwrap();
    assert_eq!(
        week.iter().map(|p| p.cpu_pct).collect::<Vec<_>>(),
        vec![20.0, 50.0]
    );
    // And after 90 days those go too.
    metrics::maintain(&db.store, now.plus_secs(91 * 86_400))
        .await
        .unwrap();
    assert!(metrics::series(
        &read,
        &enrolled.agent,
        90 * 86_400,
        now.plus_secs(91 * 86_400)
    )
    .await
    .unwrap()
    .is_empty());
}

/// Heartbeats (single statements) and queueing (read-then-write
/// transactions) at the same time must all succeed: on SQLite a deferred
/// transaction would fail at its first write when a heartbeat slipped in.
async fn concurrent_heartbeats_and_commands_all_succeed(db: TestDb) {
    let now = Timestamp::now();
    let ca = AgentCa::generate(now).unwrap();
    let (owner, org) = add(&db, "Acme", "owner@example.com", Role::Owner).await;
    let owner = access::actor(&db.store, owner, Some(org), meta())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let manage = owner.authorize::<ManageAgents>().unwrap();
        let token = agents::create_registration_token(&manage, &ca.pin(), 3600, now)
            .await
            .unwrap();
        let enrolled = agents::enrol(
            &db.store,
            &ca,
            &throttle(),
            enrolment(token.token.expose_secret(), true),
            &meta(),
            now,
        )
        .await
        .unwrap();
        ids.push((enrolled.agent, enrolled.cert.fingerprint));
    }
    let delivery = Arc::new(delivery(&db));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (store, owner, (id, fp), delivery) = (
            db.store.clone(),
            owner.clone(),
            ids[i % ids.len()].clone(),
            delivery.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let session = agents::authenticate(&store, &fp, Timestamp::now())
                    .await
                    .unwrap();
                agents::touch(&store, &session, "X25519MLKEM768", Timestamp::now())
                    .await
                    .unwrap();
                let manage = owner.authorize::<ManageAgents>().unwrap();
                delivery.ping(&manage, &id, Timestamp::now()).await.unwrap();
                commands::take_pending(&store, &session, Timestamp::now())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let read = owner.authorize::<ReadOrg>().unwrap();
    assert!(audit::verify(&read).await.unwrap().intact());
}

/// Enrols one agent reporting `version` with a fresh token.
async fn enrol_as(
    db: &TestDb,
    ca: &AgentCa,
    manage: &control::access::Authorized<'_, ManageAgents>,
    version: &str,
    now: Timestamp,
) -> AgentId {
    let token = agents::create_registration_token(manage, &ca.pin(), 3600, now)
        .await
        .unwrap();
    let mut e = enrolment(token.token.expose_secret(), true);
    e.agent_version = version.into();
    agents::enrol(&db.store, ca, &throttle(), e, &meta(), now)
        .await
        .unwrap()
        .agent
}

/// "Update agent" on a selection: one transaction; every server that can take
/// the release gets its command and audit event; the others are skipped with
/// the reason (revoked, another organisation's, already on the version).
async fn an_update_offered_to_a_selection_skips_who_cannot_take_it(db: TestDb) {
    let now = Timestamp::now();
    let ca = AgentCa::generate(now).unwrap();
    let (owner, org) = add(&db, "Acme", "owner@example.com", Role::Owner).await;
    let (stranger, other) = add(&db, "Globex", "owner@globex.example", Role::Owner).await;
    let owner = access::actor(&db.store, owner, Some(org), meta())
        .await
        .unwrap();
    let stranger = access::actor(&db.store, stranger, Some(other), meta())
        .await
        .unwrap();
    let manage = || owner.authorize::<ManageAgents>().unwrap();
    let old = enrol_as(&db, &ca, &manage(), "0.1.0", now).await;
    let current = enrol_as(&db, &ca, &manage(), "0.2.0", now).await;
    let revoked = enrol_as(&db, &ca, &manage(), "0.1.0", now).await;
    let stranger_manages = stranger.authorize::<ManageAgents>().unwrap();
    let foreign = enrol_as(&db, &ca, &stranger_manages, "0.1.0", now).await;
    let delivery = delivery(&db);
    delivery.revoke(&manage(), &revoked, now).await.unwrap();
    let release = channel::release::ReleaseKey::generate()
        .sign("0.2.0", "x86_64-linux", b"agent")
        .unwrap();
    let read = owner.authorize::<ReadOrg>().unwrap();
    let events_before = audit::verify(&read).await.unwrap().events_checked;

    let offers = delivery
        .offer_updates(
            &manage(),
            &[
                old.clone(),
                current.clone(),
                revoked.clone(),
                foreign.clone(),
                old.clone(),
            ],
            &release,
            false,
            now,
        )
        .await
        .unwrap();
    let outcome: Vec<(&AgentId, Result<(), &str>)> = offers
        .iter()
        .map(|o| {
            (
                &o.agent,
                o.outcome.as_ref().map(|_| ()).map_err(String::as_str),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        vec![
            (&old, Ok(())),
            (&current, Err("This server already runs agent 0.2.0.")),
            (&revoked, Err("No such active server.")),
            (&foreign, Err("No such active server.")),
        ]
    );
    let identity = |agent: &AgentId| {
        let store = db.store.clone();
        let agent = agent.clone();
        async move {
            let fp: String =
                sqlx::query_scalar("SELECT cert_fingerprint FROM agents WHERE id = $1")
                    .bind(&agent.0)
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            agents::authenticate(&store, &fp, now).await.unwrap()
        }
    };
    let queued = commands::take_pending(&db.store, &identity(&old).await, now)
        .await
        .unwrap()
        .commands;
    assert_eq!(queued.len(), 1, "one command for the server ticked twice");
    assert!(
        commands::take_pending(&db.store, &identity(&current).await, now)
            .await
            .unwrap()
            .commands
            .is_empty()
    );
    let report = audit::verify(&read).await.unwrap();
    assert!(report.intact());
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE org_id = $1 AND seq > $2 ORDER BY seq",
    )
    .bind(org.0)
    .bind(events_before)
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    assert_eq!(
        actions,
        ["command.queued", "agent.self_update_offered"],
        "one command and one offer, for the one server that takes it"
    );

    // Bounds: an empty selection, and more than the limit, are refused.
    let refused = delivery
        .offer_updates(&manage(), &[], &release, false, now)
        .await;
    assert!(
        matches!(refused, Err(ControlError::Invalid(_))),
        "{refused:?}"
    );
    let many = vec![old.clone(); control::delivery::MAX_UPDATE_SELECTION + 1];
    let refused = delivery
        .offer_updates(&manage(), &many, &release, false, now)
        .await;
    assert!(
        matches!(refused, Err(ControlError::Invalid(_))),
        "{refused:?}"
    );
}

control::both_backends!(
    an_update_offered_to_a_selection_skips_who_cannot_take_it,
    concurrent_heartbeats_and_commands_all_succeed,
    metrics_are_batched_rolled_up_and_expired,
    enrolment_tokens_are_one_time_and_audited,
    revocation_refuses_the_certificate_and_cancels_commands,
);
