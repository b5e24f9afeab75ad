//! Operations and approval gates on both backends: the role and risk matrix,
//! own proposals and the two-person rule, the AI Pilot and Production
//! Protection, expiry, fleet rate controls, idempotency, bad input, what the
//! delivered command carries, and concurrent decisions.

// Test bodies are shared by both backends through a macro, so they are not
// `#[test]` functions themselves; a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

use control::access::{Actor, Capability, ReadOrg};
use control::agents::{self, Enrolment, ManageAgents};
use control::ca::AgentCa;
use control::commands::{self, Report};
use control::delivery::Delivery;
use control::operations::{
    self, dispatch, pilot, settings, DecideOperations, Parallel, Proposal, ProposeOperations,
    SuperviseOperations,
};
use control::testing::TestDb;
use control::throttle::MemoryThrottle;
use control::{
    audit, AgentId, Capabilities, CommandState, ControlError, OpKind, Operation, OperationId,
    OperationState, OrgPolicy, Origin, Risk, Role, TargetState, Timestamp,
};
use secrecy::ExposeSecret;
use serde_json::json;

mod common;
use common::{actor, add, csr, delivery, meta};

struct Org {
    _dir: tempfile::TempDir,
    ca: AgentCa,
    delivery: Delivery,
    owner: Actor,
    admin: Actor,
    member: Actor,
    member2: Actor,
    viewer: Actor,
}

async fn org(db: &TestDb) -> Org {
    let dir = tempfile::tempdir().unwrap();
    let ca = AgentCa::generate(Timestamp::now()).unwrap();
    let delivery = delivery(db);
    let mut people = Vec::new();
    for (email, role) in [
        ("owner@example.com", Role::Owner),
        ("admin@example.com", Role::Admin),
        ("member@example.com", Role::Member),
        ("member2@example.com", Role::Member),
        ("viewer@example.com", Role::Viewer),
    ] {
        let (user, org) = add(db, "Acme", email, role).await;
        people.push(actor(db, user, org).await);
    }
    let mut p = people.into_iter();
    Org {
        _dir: dir,
        ca,
        delivery,
        owner: p.next().unwrap(),
        admin: p.next().unwrap(),
        member: p.next().unwrap(),
        member2: p.next().unwrap(),
        viewer: p.next().unwrap(),
    }
}

fn caps() -> Capabilities {
    Capabilities {
        kinds: vec![
            OpKind::ServiceStatus,
            OpKind::DiskUsage,
            OpKind::RestartService,
            OpKind::RunBackup,
            OpKind::InstallPackage,
            OpKind::RunPlan,
        ],
        units: vec!["nginx.service".into()],
        watched_units: vec!["nginx.service".into()],
        backup_profiles: vec!["nightly".into()],
        package_tool: Some("apt-get".into()),
        file_access: false,
        production: false,
        profile_secrets: Default::default(),
    }
}

struct Server {
    agent: AgentId,
    fingerprint: String,
    kem: channel::KemSecretKey,
    identity: channel::SigningKey,
}

/// Enrols a server with a KEM key and the capabilities above.
async fn server(db: &TestDb, o: &Org) -> Server {
    enrol_server(db, o, true).await
}

/// Enrols a server, in classical fallback when `kem` is false.
async fn enrol_server(db: &TestDb, o: &Org, kem_on: bool) -> Server {
    let now = Timestamp::now();
    let token = agents::create_registration_token(
        &o.owner.authorize::<ManageAgents>().unwrap(),
        &o.ca.pin(),
        3600,
        now,
    )
    .await
    .unwrap();
    let kem = channel::KemSecretKey::generate();
    let identity = channel::SigningKey::generate();
    let enrolled = agents::enrol(
        &db.store,
        &o.ca,
        &MemoryThrottle::new(1000, 600),
        Enrolment {
            token: token.token.expose_secret().parse().unwrap(),
            csr_pem: csr().1,
            identity_key: identity.verifying_key().clone(),
            kem_key: kem_on.then(|| kem.public_key().clone()),
            hostname: "web-1".into(),
            agent_version: "0.1.0".into(),
        },
        &meta(),
        now,
    )
    .await
    .unwrap();
    let s = Server {
        agent: enrolled.agent,
        fingerprint: enrolled.cert.fingerprint,
        kem,
        identity,
    };
    let session = agents::authenticate(&db.store, &s.fingerprint, now)
        .await
        .unwrap();
    settings::record_capabilities(&db.store, &session, &caps(), now)
        .await
        .unwrap();
    s
}

fn restart() -> Operation {
    Operation::parse("restart_service", &json!({"unit": "nginx.service"})).unwrap()
}

fn install() -> Operation {
    Operation::parse("install_package", &json!({"name": "curl"})).unwrap()
}

async fn propose(by: &Actor, op: Operation, agent: &AgentId) -> OperationId {
    operations::propose(
        &by.authorize::<ProposeOperations>().unwrap(),
        Proposal::single(op, agent.clone(), "nginx keeps failing"),
        Timestamp::now(),
    )
    .await
    .unwrap()
}

async fn approve(
    o: &Org,
    by: &Actor,
    id: &OperationId,
    now: Timestamp,
) -> Result<(), ControlError> {
    let auth = by.authorize::<DecideOperations>()?;
    operations::approve(&o.delivery, &auth, id, "looks right", now).await
}

async fn state(by: &Actor, id: &OperationId) -> control::OperationView {
    operations::get(&by.authorize::<ReadOrg>().unwrap(), id)
        .await
        .unwrap()
}

async fn set_production(o: &Org, s: &Server, on: bool) {
    settings::set_production(
        &o.owner.authorize::<ManageAgents>().unwrap(),
        &s.agent,
        on,
        Timestamp::now(),
    )
    .await
    .unwrap();
}

async fn actions(o: &Org) -> Vec<String> {
    audit::latest(&o.owner.authorize::<ReadOrg>().unwrap(), 500)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

/// Who may approve and reject what, with the role read in the transaction:
/// Members approve low and medium risk off production; Admins and Owners
/// everything; Viewers nothing; and nobody may propose as a Viewer.
async fn the_role_and_risk_matrix_holds(db: TestDb) {
    let o = org(&db).await;
    let plain = server(&db, &o).await;
    let prod = server(&db, &o).await;
    set_production(&o, &prod, true).await;
    assert!(o.viewer.authorize::<ProposeOperations>().is_err());
    assert!(o.viewer.authorize::<DecideOperations>().is_err());
    for (op, risk) in [(restart(), Risk::Medium), (install(), Risk::High)] {
        assert_eq!(op.risk(), risk);
        for s in [&plain, &prod] {
            let production = std::ptr::eq(s, &prod);
            for approver in [&o.owner, &o.admin, &o.member] {
                let id = propose(&o.member2, op.clone(), &s.agent).await;
                let result = approve(&o, approver, &id, Timestamp::now()).await;
                let expected =
                    approver.role() != Role::Member || (risk <= Risk::Medium && !production);
                assert_eq!(
                    result.is_ok(),
                    expected,
                    "{:?} approving {risk:?} production={production}: {result:?}",
                    approver.role()
                );
                if !expected {
                    assert!(matches!(result, Err(ControlError::Forbidden(_))));
                    assert_eq!(state(&o.owner, &id).await.state, OperationState::Proposed);
                    // Rejecting needs the same authority as approving.
                    let rejected = operations::reject(
                        &approver.authorize::<DecideOperations>().unwrap(),
                        &id,
                        "no",
                        Timestamp::now(),
                    )
                    .await;
                    assert!(matches!(rejected, Err(ControlError::Forbidden(_))));
                    operations::reject(
                        &o.admin.authorize::<DecideOperations>().unwrap(),
                        &id,
                        "not now",
                        Timestamp::now(),
                    )
                    .await
                    .unwrap();
                    assert_eq!(state(&o.owner, &id).await.state, OperationState::Rejected);
                }
            }
        }
    }
    // A role lowered after the actor was built no longer approves.
    let id = propose(&o.member2, restart(), &plain.agent).await;
    let member_auth = o.member.authorize::<DecideOperations>().unwrap();
    control::team::change_role(
        &o.owner.authorize().unwrap(),
        o.member.user(),
        Role::Viewer,
        Timestamp::now(),
    )
    .await
    .unwrap();
    let stale = operations::approve(&o.delivery, &member_auth, &id, "ok", Timestamp::now()).await;
    assert!(
        matches!(stale, Err(ControlError::Forbidden(_))),
        "{stale:?}"
    );
}

async fn run_own(
    o: &Org,
    by: &Actor,
    op: Operation,
    s: &Server,
) -> Result<OperationId, ControlError> {
    operations::run_own(
        &o.delivery,
        &by.authorize::<ProposeOperations>().unwrap(),
        Proposal::single(op, s.agent.clone(), "routine restart"),
        Timestamp::now(),
    )
    .await
}

/// Nobody approves their own proposal; running your own is self-approval,
/// allowed only where your role suffices and the two-person rule is off.
async fn own_proposals_and_the_two_person_rule(db: TestDb) {
    let o = org(&db).await;
    let s = server(&db, &o).await;
    let id = propose(&o.member, restart(), &s.agent).await;
    let own = approve(&o, &o.member, &id, Timestamp::now()).await;
    assert!(
        matches!(&own, Err(ControlError::Forbidden(m)) if m.contains("own proposal")),
        "{own:?}"
    );
    let own_admin = propose(&o.admin, install(), &s.agent).await;
    assert!(approve(&o, &o.admin, &own_admin, Timestamp::now())
        .await
        .is_err());
    approve(&o, &o.owner, &own_admin, Timestamp::now())
        .await
        .unwrap();

    let mine = run_own(&o, &o.member, restart(), &s).await.unwrap();
    let view = state(&o.owner, &mine).await;
    assert!(view.self_approved);
    assert_eq!(view.state, OperationState::Dispatched);
    assert_eq!(view.approvals[0].reason, "routine restart");
    // High risk: the two-person rule (default on for high) stops even an Owner.
    let two = run_own(&o, &o.owner, install(), &s).await;
    assert!(
        matches!(&two, Err(ControlError::Forbidden(m)) if m.contains("two-person")),
        "{two:?}"
    );
    settings::set_policy(
        &o.owner.authorize::<ManageAgents>().unwrap(),
        OrgPolicy {
            two_person_from: None,
            ..OrgPolicy::default()
        },
        Timestamp::now(),
    )
    .await
    .unwrap();
    run_own(&o, &o.owner, install(), &s).await.unwrap();
    // A Member's role never suffices for high risk, rule or not.
    assert!(matches!(
        run_own(&o, &o.member, install(), &s).await,
        Err(ControlError::Forbidden(_))
    ));
    assert!(o.viewer.authorize::<ProposeOperations>().is_err());
}

/// The AI Pilot proposes with evidence, once per condition, never for a
/// production server (refused and audited), and not at all when switched off.
async fn the_pilot_and_production_protection(db: TestDb) {
    let o = org(&db).await;
    let org_id = o.owner.org();
    let s = server(&db, &o).await;
    let prod = server(&db, &o).await;
    set_production(&o, &prod, true).await;
    let finding = |agent: &AgentId, key: &str| pilot::Finding {
        agent: agent.clone(),
        op: restart(),
        reason: "nginx.service failed at 12:04".into(),
        evidence: "systemd reports nginx.service failed since 12:04".into(),
        condition_key: key.into(),
    };
    let refused = pilot::propose(
        &db.store,
        org_id,
        finding(&prod.agent, "c1"),
        Timestamp::now(),
    )
    .await
    .unwrap();
    assert!(
        matches!(&refused, pilot::Outcome::Refused(m) if m.contains("Production Protection")),
        "{refused:?}"
    );
    assert!(actions(&o).await.contains(&"operation.refused".to_string()));

    let pilot::Outcome::Proposed(id) =
        pilot::propose(&db.store, org_id, finding(&s.agent, "c2"), Timestamp::now())
            .await
            .unwrap()
    else {
        panic!("the pilot should propose for a server that is not production");
    };
    let view = state(&o.owner, &id).await;
    assert_eq!(view.origin, Origin::Pilot);
    assert_eq!(view.proposer, "AI Pilot");
    assert!(view.evidence.unwrap().contains("12:04"));
    assert_eq!(
        pilot::propose(&db.store, org_id, finding(&s.agent, "c2"), Timestamp::now())
            .await
            .unwrap(),
        pilot::Outcome::AlreadyProposed
    );
    // The server became production after the proposal: no approval lets it run.
    set_production(&o, &s, true).await;
    let late = approve(&o, &o.owner, &id, Timestamp::now()).await;
    assert!(
        matches!(&late, Err(ControlError::Forbidden(m)) if m.contains("Production Protection")),
        "{late:?}"
    );
    set_production(&o, &s, false).await;
    approve(&o, &o.member, &id, Timestamp::now()).await.unwrap();

    settings::set_policy(
        &o.owner.authorize::<ManageAgents>().unwrap(),
        OrgPolicy {
            pilot_enabled: false,
            ..OrgPolicy::default()
        },
        Timestamp::now(),
    )
    .await
    .unwrap();
    assert_eq!(
        pilot::propose(&db.store, org_id, finding(&s.agent, "c3"), Timestamp::now())
            .await
            .unwrap(),
        pilot::Outcome::PilotOff
    );
}

/// An approval that runs out before the agent takes its command expires the
/// command and the operation: nothing is delivered late.
async fn expired_approvals_are_not_delivered(db: TestDb) {
    let o = org(&db).await;
    let s = server(&db, &o).await;
    let now = Timestamp::now();
    let id = propose(&o.member2, restart(), &s.agent).await;
    approve(&o, &o.member, &id, now).await.unwrap();
    let view = state(&o.owner, &id).await;
    assert_eq!(
        view.approval_expires_at,
        Some(now.plus_secs(OrgPolicy::default().approval_ttl_secs))
    );
    let later = now.plus_secs(3601);
    let session = agents::authenticate(&db.store, &s.fingerprint, now)
        .await
        .unwrap();
    let taken = commands::take_pending(&db.store, &session, later)
        .await
        .unwrap();
    assert!(taken.commands.is_empty(), "delivered late: {taken:?}");
    let view = state(&o.owner, &id).await;
    assert_eq!(view.state, OperationState::Expired);
    assert_eq!(view.targets[0].state, TargetState::Expired);
    let command = view.targets[0].command.clone().unwrap();
    let outcome = commands::command_state(&o.owner.authorize().unwrap(), &command, later)
        .await
        .unwrap();
    assert_eq!(outcome.state, CommandState::Expired);

    // The sweep does the same for an agent that never polls again.
    let id = propose(&o.member2, restart(), &s.agent).await;
    approve(&o, &o.member, &id, now).await.unwrap();
    dispatch::sweep(&db.store, later).await.unwrap();
    assert_eq!(state(&o.owner, &id).await.state, OperationState::Expired);
}

/// 20 servers, concurrency 2, error threshold 1: the operation halts after
/// the second failure and the other 18 are never sent. With successes the
/// number in flight grows from 1 up to the concurrency.
async fn fleet_operations_halt_at_their_error_threshold(db: TestDb) {
    let o = org(&db).await;
    let mut servers = Vec::new();
    for _ in 0..20 {
        servers.push(server(&db, &o).await);
    }
    let now = Timestamp::now();
    let run = |targets: Vec<AgentId>| Proposal {
        op: restart(),
        targets,
        reason: "rolling restart".into(),
        idempotency_key: None,
        parallel: Parallel::Count(2),
        error_threshold: 1,
    };
    let id = operations::propose(
        &o.member2.authorize().unwrap(),
        run(servers.iter().map(|s| s.agent.clone()).collect()),
        now,
    )
    .await
    .unwrap();
    approve(&o, &o.member, &id, now).await.unwrap();
    let mut sent = 0;
    loop {
        let mut round = 0;
        for s in &servers {
            let session = agents::authenticate(&db.store, &s.fingerprint, now)
                .await
                .unwrap();
            for c in commands::take_pending(&db.store, &session, now)
                .await
                .unwrap()
                .commands
            {
                round += 1;
                commands::finish(
                    &db.store,
                    &session,
                    Report {
                        command: &c.id.0,
                        sequence: c.seq,
                        succeeded: false,
                        refused: false,
                        text: "unit failed",
                    },
                    now,
                )
                .await
                .unwrap();
            }
        }
        if round == 0 {
            break;
        }
        sent += round;
    }
    assert_eq!(sent, 2, "halted after the second failure");
    let view = state(&o.owner, &id).await;
    assert_eq!(view.state, OperationState::Halted);
    let count = |st: TargetState| view.targets.iter().filter(|t| t.state == st).count();
    assert_eq!(
        (count(TargetState::Failed), count(TargetState::Skipped)),
        (2, 18)
    );
    assert!(view.targets.iter().skip(2).all(|t| t.command.is_none()));
    // Halted by its threshold, nothing is left to resume.
    let resumed = operations::resume(
        &o.delivery,
        &o.admin.authorize().unwrap(),
        &id,
        "again",
        now,
    )
    .await;
    assert!(
        matches!(&resumed, Err(ControlError::Conflict(m)) if m.contains("Nothing is left")),
        "{resumed:?}"
    );

    // Successes: 1 in flight, then 2.
    let id = operations::propose(
        &o.member2.authorize().unwrap(),
        run(servers[..5].iter().map(|s| s.agent.clone()).collect()),
        now,
    )
    .await
    .unwrap();
    approve(&o, &o.member, &id, now).await.unwrap();
    let in_flight = |v: &control::OperationView| {
        v.targets
            .iter()
            .filter(|t| t.state == TargetState::Dispatched)
            .count()
    };
    assert_eq!(in_flight(&state(&o.owner, &id).await), 1);
    let first = &servers[0];
    let session = agents::authenticate(&db.store, &first.fingerprint, now)
        .await
        .unwrap();
    let c = commands::take_pending(&db.store, &session, now)
        .await
        .unwrap()
        .commands
        .remove(0);
    let wake = commands::finish(
        &db.store,
        &session,
        Report {
            command: &c.id.0,
            sequence: c.seq,
            succeeded: true,
            refused: false,
            text: "restarted",
        },
        now,
    )
    .await
    .unwrap();
    assert_eq!(wake.len(), 2, "the next wave wakes its agents");
    assert_eq!(in_flight(&state(&o.owner, &id).await), 2);

    // Every target at once: no slow start.
    let all = operations::propose(
        &o.member2.authorize().unwrap(),
        Proposal {
            parallel: Parallel::Unlimited,
            ..run(servers[5..10].iter().map(|s| s.agent.clone()).collect())
        },
        now,
    )
    .await
    .unwrap();
    approve(&o, &o.member, &all, now).await.unwrap();
    assert_eq!(in_flight(&state(&o.owner, &all).await), 5);

    // An Admin halts and resumes; a Member cannot.
    assert!(o.member.authorize::<SuperviseOperations>().is_err());
    operations::halt(&o.admin.authorize().unwrap(), &id, "checking", now)
        .await
        .unwrap();
    assert_eq!(state(&o.owner, &id).await.state, OperationState::Halted);
    operations::resume(&o.delivery, &o.admin.authorize().unwrap(), &id, "fine", now)
        .await
        .unwrap();
    assert_eq!(state(&o.owner, &id).await.state, OperationState::Dispatched);
}

/// A repeated submit creates nothing new; bad input is refused naming the field.
async fn idempotency_and_bad_input(db: TestDb) {
    let o = org(&db).await;
    let s = server(&db, &o).await;
    let auth = o.member.authorize::<ProposeOperations>().unwrap();
    let keyed = || Proposal {
        idempotency_key: Some("form-7f3a".into()),
        ..Proposal::single(restart(), s.agent.clone(), "restart")
    };
    let a = operations::propose(&auth, keyed(), Timestamp::now())
        .await
        .unwrap();
    let b = operations::propose(&auth, keyed(), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(a, b);
    let all = operations::recent(&o.owner.authorize().unwrap(), 50)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    let other =
        operations::propose(&o.member2.authorize().unwrap(), keyed(), Timestamp::now()).await;
    assert!(matches!(other, Err(ControlError::Conflict(_))), "{other:?}");

    let refused = |r: Result<OperationId, ControlError>, field: &str| match r {
        Err(ControlError::Invalid(m) | ControlError::NotFound(m) | ControlError::Forbidden(m)) => {
            assert!(m.contains(field), "{field}: {m}")
        }
        other => panic!("{field}: {other:?}"),
    };
    let huge = "x".repeat(1 << 20);
    refused(
        operations::propose(
            &auth,
            Proposal::single(restart(), s.agent.clone(), huge),
            Timestamp::now(),
        )
        .await,
        "reason",
    );
    refused(
        operations::propose(
            &auth,
            Proposal::single(restart(), s.agent.clone(), "  "),
            Timestamp::now(),
        )
        .await,
        "reason",
    );
    let many: Vec<AgentId> = (0..1001).map(|i| AgentId(format!("agt_{i}"))).collect();
    refused(
        operations::propose(
            &auth,
            Proposal {
                targets: many,
                ..Proposal::single(restart(), s.agent.clone(), "r")
            },
            Timestamp::now(),
        )
        .await,
        "targets",
    );
    refused(
        operations::propose(
            &auth,
            Proposal::single(restart(), AgentId("agt_nope".into()), "r"),
            Timestamp::now(),
        )
        .await,
        "targets",
    );
    let sshd = Operation::parse("restart_service", &json!({"unit": "sshd.service"})).unwrap();
    refused(
        operations::propose(
            &auth,
            Proposal::single(sshd, s.agent.clone(), "r"),
            Timestamp::now(),
        )
        .await,
        "unit",
    );
    let file = Operation::parse("read_file", &json!({"path": "/etc/hostname"})).unwrap();
    refused(
        operations::propose(
            &auth,
            Proposal::single(file, s.agent.clone(), "r"),
            Timestamp::now(),
        )
        .await,
        "File Access",
    );
    // Operations travel sealed: a server in classical fallback gets none, so
    // nothing can be queued behind a command its agent could not receive.
    let classical = enrol_server(&db, &o, false).await;
    let r = operations::propose(
        &auth,
        Proposal::single(restart(), classical.agent.clone(), "r"),
        Timestamp::now(),
    )
    .await;
    assert!(
        matches!(&r, Err(ControlError::Conflict(m)) if m.contains("post-quantum")),
        "{r:?}"
    );
}

/// The delivered command is sealed to the agent and carries the plan hash
/// it will recompute and the approval record; its result finishes the
/// operation, and the history keeps every state.
async fn the_command_carries_the_plan_and_its_approval(db: TestDb) {
    let o = org(&db).await;
    let s = server(&db, &o).await;
    let id = propose(&o.member2, restart(), &s.agent).await;
    approve(&o, &o.member, &id, Timestamp::now()).await.unwrap();
    let session = agents::authenticate(&db.store, &s.fingerprint, Timestamp::now())
        .await
        .unwrap();
    let polling = agents::authenticate(&db.store, &s.fingerprint, Timestamp::now())
        .await
        .unwrap();
    let delivered = o
        .delivery
        .poll(polling, "X25519MLKEM768", std::time::Duration::ZERO)
        .await
        .unwrap();
    let channel::api::DeliveredCommand::Sealed { envelope } = &delivered[0] else {
        panic!("operations travel sealed");
    };
    let opened = channel::open_command(
        envelope,
        &s.agent.0,
        &s.kem,
        o.delivery.keys().signing.verifying_key(),
        &channel::ReplayGuard::new(),
        Timestamp::now().0,
    )
    .unwrap();
    let header = opened.header();
    assert_eq!(header.kind, "restart_service");
    let run = Operation::from_wire(&header.kind, opened.payload()).unwrap();
    let op = header.operation.as_ref().unwrap();
    assert_eq!(op.plan_hash, channel::ops::plan_hash(&s.agent.0, &run));
    assert_eq!(op.approval.origin, Origin::Human);
    assert_eq!(op.approval.operation_id, id.0);
    assert_eq!(op.approval.proposed_by, Some(o.member2.user().0));
    assert_eq!(op.approval.approvers.len(), 1);
    assert_eq!(op.approval.approvers[0].user_id, o.member.user().0);
    assert_eq!(op.approval.approvers[0].role, "member");
    assert_eq!(state(&o.owner, &id).await.state, OperationState::Running);

    commands::finish(
        &db.store,
        &session,
        Report {
            command: &header.command_id,
            sequence: header.sequence,
            succeeded: true,
            refused: false,
            text: "restarted",
        },
        Timestamp::now(),
    )
    .await
    .unwrap();
    assert_eq!(state(&o.owner, &id).await.state, OperationState::Succeeded);
    let timeline = operations::timeline(&o.viewer.authorize().unwrap(), &id)
        .await
        .unwrap();
    let states: Vec<&str> = timeline.iter().map(|e| e.state.as_str()).collect();
    assert_eq!(
        states,
        [
            "proposed",
            "approved",
            "dispatched",
            "running",
            "succeeded",
            "succeeded"
        ],
        "{timeline:?}"
    );
    assert_eq!(timeline[1].reason.as_deref(), Some("looks right"));
    let acts = actions(&o).await;
    for a in [
        "operation.proposed",
        "operation.approved",
        "operation.finished",
    ] {
        assert!(acts.contains(&a.to_string()), "{a}");
    }
}

/// Two people approving at once: exactly one approval counts and exactly
/// one command is queued.
async fn concurrent_approvals_count_once(db: TestDb) {
    let o = std::sync::Arc::new(org(&db).await);
    let s = server(&db, &o).await;
    for _ in 0..3 {
        let id = propose(&o.member2, restart(), &s.agent).await;
        let mut tasks = Vec::new();
        for who in 0..3 {
            let o = o.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                let by = [&o.owner, &o.admin, &o.member][who];
                approve(&o, by, &id, Timestamp::now()).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(ControlError::Conflict(_)) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(ok, 1);
        let view = state(&o.owner, &id).await;
        assert_eq!(view.approvals.len(), 1);
        assert!(view.targets[0].command.is_some());
    }
}

/// The proposer or an Admin cancels; the command an offline agent has not
/// taken is cancelled and never delivered; nobody else may cancel.
async fn cancelling_reaches_the_queue(db: TestDb) {
    let o = org(&db).await;
    let s = server(&db, &o).await;
    let id = propose(&o.member2, restart(), &s.agent).await;
    approve(&o, &o.member, &id, Timestamp::now()).await.unwrap();
    for who in [&o.viewer, &o.member] {
        let r = operations::cancel(&who.authorize().unwrap(), &id, "stop", Timestamp::now()).await;
        assert!(matches!(r, Err(ControlError::Forbidden(_))), "{r:?}");
    }
    operations::cancel(
        &o.member2.authorize().unwrap(),
        &id,
        "wrong server",
        Timestamp::now(),
    )
    .await
    .unwrap();
    let session = agents::authenticate(&db.store, &s.fingerprint, Timestamp::now())
        .await
        .unwrap();
    assert!(
        commands::take_pending(&db.store, &session, Timestamp::now())
            .await
            .unwrap()
            .commands
            .is_empty()
    );
    let view = state(&o.owner, &id).await;
    assert_eq!(view.state, OperationState::Cancelled);
    let again = operations::cancel(&o.admin.authorize().unwrap(), &id, "x", Timestamp::now()).await;
    assert!(matches!(again, Err(ControlError::Conflict(_))));
}

fn sample(at: i64, unit_state: &str, disk_pct: u64) -> channel::api::MetricSample {
    channel::api::MetricSample {
        at,
        cpu_pct: 5.0,
        mem_used_bytes: 1,
        mem_total_bytes: 2,
        disks: vec![channel::api::DiskUsage {
            mount: "/".into(),
            used_bytes: disk_pct,
            total_bytes: 100,
        }],
        net_rx_bytes_per_sec: 0.0,
        net_tx_bytes_per_sec: 0.0,
        load: [0.0; 3],
        units: vec![channel::api::UnitStatus {
            unit: "nginx.service".into(),
            state: unit_state.into(),
        }],
        backups: Vec::new(),
    }
}

/// The rules read heartbeats: a failed watched unit gets one restart
/// proposal, with evidence, however often the rules run; a disk above 90 %
/// for 15 minutes gets a disk report; a production server gets none, and the
/// refusal is recorded and audited once.
async fn the_pilot_proposes_from_heartbeats(db: TestDb) {
    let o = org(&db).await;
    let s = server(&db, &o).await;
    let prod = server(&db, &o).await;
    set_production(&o, &prod, true).await;
    let t0 = Timestamp::now().plus_secs(-20 * 60);
    for srv in [&s, &prod] {
        let session = agents::authenticate(&db.store, &srv.fingerprint, t0)
            .await
            .unwrap();
        control::metrics::record(&db.store, &session, &[sample(t0.0, "active", 50)], t0)
            .await
            .unwrap();
        let t1 = t0.plus_secs(60);
        control::metrics::record(&db.store, &session, &[sample(t1.0, "failed", 95)], t1)
            .await
            .unwrap();
    }
    let now = t0.plus_secs(60 + 16 * 60);
    let session = agents::authenticate(&db.store, &s.fingerprint, now)
        .await
        .unwrap();
    control::metrics::record(&db.store, &session, &[sample(now.0, "failed", 96)], now)
        .await
        .unwrap();
    let first = pilot::evaluate(&db.store, now).await.unwrap();
    let proposed: Vec<&pilot::Outcome> = first
        .iter()
        .filter(|o| matches!(o, pilot::Outcome::Proposed(_)))
        .collect();
    assert_eq!(proposed.len(), 2, "{first:?}");
    let refused = first
        .iter()
        .filter(|o| matches!(o, pilot::Outcome::Refused(m) if m.contains("Production Protection")))
        .count();
    // The production server's failed unit and full disk: two refusals.
    assert_eq!(refused, 2, "{first:?}");
    let pending = operations::pending(&o.owner.authorize().unwrap(), 50)
        .await
        .unwrap();
    let kinds: Vec<OpKind> = pending.iter().map(|p| p.kind).collect();
    assert!(kinds.contains(&OpKind::RestartService) && kinds.contains(&OpKind::DiskUsage));
    let restart = pending
        .iter()
        .find(|p| p.kind == OpKind::RestartService)
        .unwrap();
    assert_eq!(restart.origin, Origin::Pilot);
    assert!(
        restart.reason.starts_with("nginx.service failed at"),
        "{}",
        restart.reason
    );
    assert!(restart.evidence.as_deref().unwrap().contains("failed"));
    // Again and again: nothing new, no new audit event.
    let audited = actions(&o).await.len();
    for _ in 0..3 {
        let again = pilot::evaluate(&db.store, now.plus_secs(60)).await.unwrap();
        assert!(
            again.iter().all(|o| *o == pilot::Outcome::AlreadyProposed),
            "{again:?}"
        );
    }
    assert_eq!(actions(&o).await.len(), audited);
    assert_eq!(
        operations::pending(&o.owner.authorize().unwrap(), 50)
            .await
            .unwrap()
            .len(),
        2
    );
    let findings = pilot::recent_findings(&o.viewer.authorize().unwrap(), &prod.agent, 10)
        .await
        .unwrap();
    assert!(findings
        .iter()
        .any(|f| f.outcome == "refused" && f.reason.contains("Production Protection")));
    // A unit that recovers and fails again is a new condition.
    let later = now.plus_secs(120);
    control::metrics::record(&db.store, &session, &[sample(later.0, "active", 50)], later)
        .await
        .unwrap();
    let again = later.plus_secs(60);
    control::metrics::record(&db.store, &session, &[sample(again.0, "failed", 50)], again)
        .await
        .unwrap();
    let outcomes = pilot::evaluate(&db.store, again).await.unwrap();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, pilot::Outcome::Proposed(_)))
            .count(),
        1,
        "{outcomes:?}"
    );
}

/// Safe delete: the name must be typed; during the grace period the server
/// is read-only, its agent refused, and an Owner or Admin can restore it;
/// after it, its commands and metrics are purged and the audit events stay.
async fn safe_delete_restores_within_the_grace_period_and_purges_after(db: TestDb) {
    use control::agents::deletion;
    let o = org(&db).await;
    let s = server(&db, &o).await;
    let now = Timestamp::now();
    let session = agents::authenticate(&db.store, &s.fingerprint, now)
        .await
        .unwrap();
    control::metrics::record(&db.store, &session, &[sample(now.0, "active", 10)], now)
        .await
        .unwrap();
    let id = propose(&o.member2, restart(), &s.agent).await;
    approve(&o, &o.member, &id, now).await.unwrap();
    let manage = o.admin.authorize::<ManageAgents>().unwrap();
    assert!(o.member.authorize::<ManageAgents>().is_err());
    let wrong = deletion::schedule(&manage, &s.agent, "web-2", now).await;
    assert!(
        matches!(&wrong, Err(ControlError::Invalid(m)) if m.contains("name")),
        "{wrong:?}"
    );
    let after = deletion::schedule(&manage, &s.agent, "web-1", now)
        .await
        .unwrap();
    assert_eq!(after, now.plus_secs(OrgPolicy::default().delete_grace_secs));
    // Read-only: the agent is refused, nothing new can be proposed or queued.
    assert!(matches!(
        agents::authenticate(&db.store, &s.fingerprint, now).await,
        Err(ControlError::Unauthenticated(_))
    ));
    let refused = operations::propose(
        &o.member2.authorize().unwrap(),
        Proposal::single(restart(), s.agent.clone(), "r"),
        now,
    )
    .await;
    assert!(
        matches!(refused, Err(ControlError::NotFound(_))),
        "{refused:?}"
    );
    assert!(o.delivery.ping(&manage, &s.agent, now).await.is_err());
    let view = agents::get(&o.viewer.authorize().unwrap(), &s.agent, now)
        .await
        .unwrap();
    assert_eq!(view.delete_after, Some(after));
    // Restore within the grace period.
    deletion::restore(&manage, &s.agent, now).await.unwrap();
    agents::authenticate(&db.store, &s.fingerprint, now)
        .await
        .unwrap();
    // Again, and past the grace period the purge job removes its data.
    deletion::schedule(&manage, &s.agent, "web-1", now)
        .await
        .unwrap();
    let later = after.plus_secs(1);
    assert_eq!(deletion::purge_due(&db.store, now).await.unwrap(), 0);
    assert_eq!(deletion::purge_due(&db.store, later).await.unwrap(), 1);
    let too_late = deletion::restore(&manage, &s.agent, later).await;
    assert!(too_late.is_err(), "{too_late:?}");
    for table in ["commands", "metrics_raw"] {
        let n: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE agent_id = $1"))
                .bind(&s.agent.0)
                .fetch_one(db.store.pool())
                .await
                .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    assert!(agents::list(&o.owner.authorize().unwrap(), later)
        .await
        .unwrap()
        .is_empty());
    // The operation's history and the audit events stay.
    assert_eq!(
        operations::get(&o.owner.authorize().unwrap(), &id)
            .await
            .unwrap()
            .targets
            .len(),
        1
    );
    let acts = actions(&o).await;
    for a in [
        "server.deletion_scheduled",
        "server.restored",
        "server.purged",
        "operation.approved",
    ] {
        assert!(acts.contains(&a.to_string()), "{a}");
    }
    assert!(audit::verify(&o.owner.authorize().unwrap())
        .await
        .unwrap()
        .intact());
}

/// Labels an Owner or Admin sets select a fleet operation's targets; bad
/// labels and selectors are refused naming the field.
async fn labels_select_the_targets_of_a_fleet_operation(db: TestDb) {
    use std::collections::BTreeMap;
    let o = org(&db).await;
    let mut servers = Vec::new();
    for _ in 0..4 {
        servers.push(server(&db, &o).await);
    }
    let now = Timestamp::now();
    let admin = o.admin.authorize::<ManageAgents>().unwrap();
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    for (i, s) in servers.iter().enumerate() {
        let env = if i < 3 { "staging" } else { "prod" };
        let role = if i == 0 { "db" } else { "web" };
        settings::set_labels(
            &admin,
            &s.agent,
            &labels(&[("env", env), ("role", role)]),
            now,
        )
        .await
        .unwrap();
    }
    assert!(o.member.authorize::<ManageAgents>().is_err());
    let bad =
        settings::set_labels(&admin, &servers[0].agent, &labels(&[("Env X", "a")]), now).await;
    assert!(
        matches!(&bad, Err(ControlError::Invalid(m)) if m.contains("labels")),
        "{bad:?}"
    );
    let view = agents::get(&o.viewer.authorize().unwrap(), &servers[1].agent, now)
        .await
        .unwrap();
    assert_eq!(view.labels.get("role").map(String::as_str), Some("web"));

    let auth = o.member2.authorize::<ProposeOperations>().unwrap();
    let blank = || Proposal {
        targets: Vec::new(),
        ..Proposal::single(restart(), servers[0].agent.clone(), "rolling restart")
    };
    let id = operations::propose_selected(&auth, "env=staging, role=web", blank(), now)
        .await
        .unwrap();
    let view = state(&o.owner, &id).await;
    let mut picked: Vec<&AgentId> = view.targets.iter().map(|t| &t.agent).collect();
    picked.sort();
    let mut want = vec![&servers[1].agent, &servers[2].agent];
    want.sort();
    assert_eq!(picked, want);
    assert_eq!(view.selector.as_deref(), Some("env=staging,role=web"));
    for (selector, field) in [
        ("env", "selector"),
        ("env=nowhere", "selector"),
        ("", "selector"),
    ] {
        let r = operations::propose_selected(&auth, selector, blank(), now).await;
        assert!(
            matches!(&r, Err(ControlError::Invalid(m)) if m.contains(field)),
            "{selector}: {r:?}"
        );
    }
    let both = operations::propose_selected(
        &auth,
        "env=prod",
        Proposal::single(restart(), servers[0].agent.clone(), "r"),
        now,
    )
    .await;
    assert!(
        matches!(&both, Err(ControlError::Invalid(m)) if m.contains("not both")),
        "{both:?}"
    );
}

/// The long-polls and results a fan-out brings at once are taken and
/// recorded in batches: each agent gets only its own command, each report is
/// judged on its own (another agent's command, a wrong sequence number, a
/// repeat), and the history and the audit chain hold one entry per target.
async fn batches_of_polls_and_results_keep_each_agent_apart(db: TestDb) {
    let o = org(&db).await;
    let mut servers = Vec::new();
    for _ in 0..12 {
        servers.push(server(&db, &o).await);
    }
    let idle = server(&db, &o).await;
    let now = Timestamp::now();
    let id = operations::propose(
        &o.member2.authorize().unwrap(),
        Proposal {
            op: restart(),
            targets: servers.iter().map(|s| s.agent.clone()).collect(),
            reason: "restart everywhere".into(),
            idempotency_key: None,
            parallel: Parallel::Unlimited,
            error_threshold: 100,
        },
        now,
    )
    .await
    .unwrap();
    approve(&o, &o.member, &id, now).await.unwrap();
    let before = actions(&o).await.len();

    let mut agents: Vec<AgentId> = servers.iter().map(|s| s.agent.clone()).collect();
    agents.push(idle.agent.clone());
    let taken = commands::take_pending_all(&db.store, &agents, now)
        .await
        .unwrap();
    assert_eq!(taken.len(), 13);
    assert!(taken[12].commands.is_empty(), "the idle agent gets nothing");
    let commands: Vec<_> = taken[..12]
        .iter()
        .map(|t| {
            assert_eq!(t.commands.len(), 1);
            t.commands[0].clone()
        })
        .collect();
    let mut ids: Vec<_> = commands.iter().map(|c| c.id.0.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "one command per agent");
    assert_eq!(state(&o.owner, &id).await.state, OperationState::Running);
    // Taken again in the same batch call: delivered, not marked running twice.
    commands::take_pending_all(&db.store, &agents[..1], now)
        .await
        .unwrap();

    let report = |i: usize, agent: usize, sequence: u64, succeeded: bool| commands::AgentReport {
        agent: servers[agent].agent.clone(),
        org: o.owner.org(),
        command: commands[i].id.0.clone(),
        sequence,
        succeeded,
        refused: false,
        reason: None,
        text: format!("target {i}"),
    };
    let mut reports: Vec<_> = (0..12)
        .map(|i| report(i, i, commands[i].seq, i % 2 == 0))
        .collect();
    reports.push(report(0, 0, commands[0].seq, false)); // a repeat: ignored
    reports.push(report(1, 0, commands[1].seq, true)); // another agent's command
    reports.push(report(2, 2, commands[2].seq + 1, true)); // wrong sequence
    let outcomes = commands::finish_all(&db.store, reports, now).await.unwrap();
    assert_eq!(outcomes.len(), 15);
    assert!(outcomes[..13].iter().all(|o| o.is_ok()), "{outcomes:?}");
    assert!(
        matches!(&outcomes[13], Err(ControlError::NotFound(_))),
        "{:?}",
        outcomes[13]
    );
    assert!(
        matches!(&outcomes[14], Err(ControlError::Invalid(m)) if m.contains("sequence")),
        "{:?}",
        outcomes[14]
    );

    let view = state(&o.owner, &id).await;
    assert_eq!(view.state, OperationState::Failed, "six targets failed");
    let count = |st: TargetState| view.targets.iter().filter(|t| t.state == st).count();
    assert_eq!(
        (count(TargetState::Succeeded), count(TargetState::Failed)),
        (6, 6)
    );
    let first = control::commands::output(&o.owner.authorize().unwrap(), &commands[0].id, now)
        .await
        .unwrap();
    assert_eq!(
        first.as_deref(),
        Some("target 0"),
        "the first report counts, not the repeat"
    );
    let timeline = operations::timeline(&o.owner.authorize().unwrap(), &id)
        .await
        .unwrap();
    for st in ["running", "succeeded", "failed"] {
        let n = timeline
            .iter()
            .filter(|e| e.agent.is_some() && e.state == st)
            .count();
        assert_eq!(n, if st == "running" { 12 } else { 6 }, "{st}");
    }
    let acts = actions(&o).await;
    let finished = acts[..acts.len() - before]
        .iter()
        .filter(|a| *a == "command.finished")
        .count();
    assert_eq!(finished, 12, "one audit event per result");
    assert!(audit::verify(&o.owner.authorize().unwrap())
        .await
        .unwrap()
        .intact());
}

/// A watched backup profile whose stamp is 26 hours old, or missing for 26
/// hours, gets one `run_backup` proposal per stale success; a newer success
/// that goes stale again is a new condition. Profiles the agent does not
/// offer are left alone.
async fn the_pilot_proposes_a_backup_after_26_hours(db: TestDb) {
    let o = org(&db).await;
    let (stale, missing) = (server(&db, &o).await, server(&db, &o).await);
    let hour = 3600;
    let t0 = Timestamp::now().plus_secs(-40 * hour);
    let report = |srv: &Server, at: Timestamp, last: Option<Timestamp>| {
        let fingerprint = srv.fingerprint.clone();
        let store = db.store.clone();
        async move {
            let session = agents::authenticate(&store, &fingerprint, at)
                .await
                .unwrap();
            let mut s = sample(at.0, "active", 50);
            s.backups = vec![
                channel::api::BackupStatus {
                    profile: "nightly".into(),
                    last_success_at: last.map(|t| t.0),
                },
                // Not a profile the agent offers: never proposed.
                channel::api::BackupStatus {
                    profile: "weekly".into(),
                    last_success_at: None,
                },
            ];
            control::metrics::record(&store, &session, &[s], at)
                .await
                .unwrap();
        }
    };
    let last = t0.plus_secs(-25 * hour);
    report(&stale, t0, Some(last)).await;
    report(&missing, t0.plus_secs(-23 * hour - 1800), None).await;
    report(&missing, t0, None).await;
    assert!(pilot::evaluate(&db.store, t0).await.unwrap().is_empty());

    let t1 = t0.plus_secs(2 * hour);
    report(&stale, t1, Some(last)).await;
    let outcomes = pilot::evaluate(&db.store, t1).await.unwrap();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    let pending = operations::pending(&o.owner.authorize().unwrap(), 50)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    let p = &pending[0];
    assert_eq!((p.kind, p.origin), (OpKind::RunBackup, Origin::Pilot));
    assert_eq!(p.targets[0].agent, stale.agent);
    assert_eq!(p.reason, "no successful backup (nightly) for 27 h");
    assert!(p.evidence.as_deref().unwrap().contains("stamp file"));
    // The same stale success: nothing new, however often the rules run.
    let t2 = t1.plus_secs(hour);
    report(&missing, t2, None).await;
    let outcomes = pilot::evaluate(&db.store, t2).await.unwrap();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, pilot::Outcome::Proposed(_)))
            .count(),
        1,
        "the missing stamp, first reported 26.5 h before: {outcomes:?}"
    );
    assert!(outcomes.contains(&pilot::Outcome::AlreadyProposed));
    let pending = operations::pending(&o.owner.authorize().unwrap(), 50)
        .await
        .unwrap();
    let missing_op = pending
        .iter()
        .find(|p| p.targets[0].agent == missing.agent)
        .unwrap();
    assert!(
        missing_op
            .evidence
            .as_deref()
            .unwrap()
            .contains("no stamp file"),
        "{:?}",
        missing_op.evidence
    );
    // A new success, stale in its turn 26 h later: a new condition.
    let fresh = t2.plus_secs(-hour);
    report(&stale, t2, Some(fresh)).await;
    assert!(pilot::evaluate(&db.store, t2)
        .await
        .unwrap()
        .iter()
        .all(|o| *o == pilot::Outcome::AlreadyProposed));
    let t3 = fresh.plus_secs(26 * hour);
    report(&stale, t3, Some(fresh)).await;
    let outcomes = pilot::evaluate(&db.store, t3).await.unwrap();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, pilot::Outcome::Proposed(_)))
            .count(),
        1,
        "{outcomes:?}"
    );
}

/// The organisation's events with `action`, oldest first, waiting (bounded)
/// until there are `n`: refusals are recorded by a task of their own.
async fn wait_for_events(o: &Org, action: &str, n: usize) -> Vec<control::AuditEventView> {
    for _ in 0..200 {
        let mut got: Vec<_> = audit::latest(&o.owner.authorize::<ReadOrg>().unwrap(), 500)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.action == action)
            .collect();
        if got.len() >= n {
            got.reverse();
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} `{action}` events");
}

fn details(e: &control::AuditEventView) -> serde_json::Value {
    serde_json::from_str(&e.details).unwrap()
}

/// A Member approving a high-risk operation and a Viewer proposing are
/// refused, and each refusal is recorded with the capability and the role;
/// refusals no role would lift (your own proposal, the two-person rule) are
/// not `access.refused`.
async fn refused_authorizations_are_recorded(db: TestDb) {
    let o = org(&db).await;
    let s = server(&db, &o).await;
    let id = propose(&o.member2, install(), &s.agent).await;
    let refused = approve(&o, &o.member, &id, Timestamp::now()).await;
    assert!(
        matches!(&refused, Err(ControlError::Forbidden(m)) if m.contains("High-risk")),
        "{refused:?}"
    );
    assert_eq!(state(&o.owner, &id).await.state, OperationState::Proposed);
    let viewer = o.viewer.authorize::<ProposeOperations>().err().unwrap();
    assert!(matches!(viewer, ControlError::Forbidden(_)), "{viewer:?}");
    let rotate = o
        .member
        .authorize_on::<ManageAgents>(&format!("agent:{}", s.agent.0))
        .err()
        .unwrap();
    assert!(matches!(rotate, ControlError::Forbidden(_)), "{rotate:?}");

    let got = wait_for_events(&o, "access.refused", 3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    let approval = got
        .iter()
        .find(|e| e.target == format!("operation:{}", id.0))
        .unwrap();
    assert_eq!(approval.actor, "member@example.com");
    assert_eq!(approval.ip, "192.0.2.7");
    assert_eq!(
        details(approval)["capability"],
        DecideOperations::DESCRIPTION
    );
    assert_eq!(details(approval)["role"], "member");
    assert!(details(approval)["reason"]
        .as_str()
        .unwrap()
        .contains("High-risk"));
    let proposal = got
        .iter()
        .find(|e| e.actor == "viewer@example.com")
        .unwrap();
    assert_eq!(
        details(proposal),
        json!({ "capability": ProposeOperations::DESCRIPTION, "role": "viewer" })
    );
    let keys = got
        .iter()
        .find(|e| e.target == format!("agent:{}", s.agent.0))
        .unwrap();
    assert_eq!(
        details(keys),
        json!({ "capability": ManageAgents::DESCRIPTION, "role": "member" })
    );

    // Not about a role: the proposer approving their own, and running a
    // high-risk operation alone under the two-person rule.
    let own = approve(&o, &o.member2, &id, Timestamp::now()).await;
    assert!(matches!(own, Err(ControlError::Forbidden(_))), "{own:?}");
    let alone = run_own(&o, &o.admin, install(), &s).await;
    assert!(
        matches!(alone, Err(ControlError::Forbidden(_))),
        "{alone:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        actions(&o)
            .await
            .iter()
            .filter(|a| *a == "access.refused")
            .count(),
        3
    );
}

/// An agent's refusal comes back as a result with the refused status: the
/// command fails, and `agent.command_refused` records the agent's reason
/// (bounded), the kind and the sequence number.
async fn agent_refusals_are_recorded(db: TestDb) {
    let o = org(&db).await;
    let s = server(&db, &o).await;
    let id = propose(&o.member2, restart(), &s.agent).await;
    approve(&o, &o.member, &id, Timestamp::now()).await.unwrap();
    let session = agents::authenticate(&db.store, &s.fingerprint, Timestamp::now())
        .await
        .unwrap();
    let polling = agents::authenticate(&db.store, &s.fingerprint, Timestamp::now())
        .await
        .unwrap();
    let delivered = o
        .delivery
        .poll(polling, "X25519MLKEM768", std::time::Duration::ZERO)
        .await
        .unwrap();
    let header = delivered[0].header().clone();
    let why = format!(
        "Refused by this agent: unit `nginx.service` is not in this agent's allowed units.{}",
        "x".repeat(2000)
    );
    let result = channel::seal_result(
        &channel::ResultHeader {
            agent_id: s.agent.0.clone(),
            command_id: header.command_id.clone(),
            sequence: header.sequence,
            finished_at: Timestamp::now().0,
            status: channel::ResultStatus::Refused,
        },
        why.as_bytes(),
        o.delivery.keys().kem.public_key(),
        &s.identity,
        &mut channel::os_rng(),
    )
    .unwrap();
    o.delivery.accept_result(&session, &result).await.unwrap();
    // Sent again (a lost reply): recorded once.
    o.delivery.accept_result(&session, &result).await.unwrap();

    let acts = actions(&o).await;
    assert_eq!(
        acts.iter()
            .filter(|a| *a == "agent.command_refused")
            .count(),
        1,
        "{acts:?}"
    );
    let e = wait_for_events(&o, "agent.command_refused", 1)
        .await
        .remove(0);
    assert_eq!(e.actor, format!("agent {}", s.agent.0));
    assert_eq!(e.target, format!("agent:{}", s.agent.0));
    let d = details(&e);
    assert_eq!(d["command"], header.command_id);
    assert_eq!(d["kind"], "restart_service");
    assert_eq!(d["seq"], header.sequence);
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("Refused by this agent: unit `nginx.service`"),
        "{reason}"
    );
    assert_eq!(reason.chars().count(), commands::MAX_REFUSAL_REASON_CHARS);
    let target = state(&o.owner, &id).await;
    assert_eq!(target.state, OperationState::Failed, "{target:?}");
}

control::both_backends!(
    refused_authorizations_are_recorded,
    agent_refusals_are_recorded,
    the_pilot_proposes_a_backup_after_26_hours,
    batches_of_polls_and_results_keep_each_agent_apart,
    labels_select_the_targets_of_a_fleet_operation,
    safe_delete_restores_within_the_grace_period_and_purges_after,
    the_pilot_proposes_from_heartbeats,
    the_role_and_risk_matrix_holds,
    own_proposals_and_the_two_person_rule,
    the_pilot_and_production_protection,
    expired_approvals_are_not_delivered,
    fleet_operations_halt_at_their_error_threshold,
    idempotency_and_bad_input,
    the_command_carries_the_plan_and_its_approval,
    concurrent_approvals_count_once,
    cancelling_reaches_the_queue,
);
