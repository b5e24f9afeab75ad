//! Operations end to end with no stand-in, on both backends: the real server
//! on port 0, people signed in over HTTP, and the real agent library whose
//! `agent.toml` maps `restart_service` to a harmless local script, a backup
//! profile to one that prints a local-vault secret, and another to one that
//! is given a control-plane secret (Settings -> Secrets) sealed with the
//! operation.
//!
//! Then the agent's own refusals, each tested by sending it a command sealed
//! and signed with the control plane's real command key (read from the
//! server's data directory), as a control plane that ignored its rules would:
//! a plan-hash mismatch, a pilot's command on a `production = true` host, an
//! argument outside the agent's allowlist, and `read_file` with file access off.

#![allow(clippy::unwrap_used)]

mod helpers;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use agent::agent::Handled;
use agent::config::Config;
use agent::register::{register, RegisterOptions};
use channel::ops::{ApprovalRecord, Approver, Operation, Origin};
use channel::ResultStatus;
use control::testing::TestDb;
use control::{AgentId, Role, Timestamp};
use helpers::TestApp;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

const SECRET: &str = "vault-secret-7d1e2f9a";
/// Control-plane secrets (Settings -> Secrets) for the `db` profile.
const ORG_DB_PASSWORD: &str = "org-wide-db-password-51c0e2";
const SERVER_DB_PASSWORD: &str = "server-only-db-password-a83d";

struct Setup {
    app: TestApp,
    dir: tempfile::TempDir,
}

/// The agent's config: a script for restarts, a backup profile whose command
/// prints a vault secret, a vault file (0600), tasks under the temp dir.
fn agent_config(dir: &Path, production: bool) -> Config {
    let script = dir.join("restart.sh");
    let ran = dir.join("ran.log");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1\" >> {}\necho \"restarting $1\"\n",
            ran.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let vault = dir.join("vault.toml");
    std::fs::write(&vault, format!("backup_token = \"{SECRET}\"\n")).unwrap();
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o600)).unwrap();
    let work = dir.join("tasks");
    let state = dir.join("state.sh");
    let state_file = dir.join("unit-state");
    if !state_file.exists() {
        std::fs::write(&state_file, "active\n").unwrap();
    }
    std::fs::write(&state, format!("#!/bin/sh\ncat {}\n", state_file.display())).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = format!(
        r#"
poll_wait_secs = 1
production = {production}
[operations]
work_dir = "{work}"
vault = "{vault}"
timeout_secs = 30
units = ["nginx.service"]
watched_units = ["nginx.service"]
unit_state = ["{state}", "{{unit}}"]
restart_service = ["{script}", "{{unit}}"]
[operations.backup_profiles.slow]
command = ["/bin/sh", "-c", "echo run >> {slow_log}; echo started; sleep 30; echo never"]
[operations.backup_profiles.nightly]
command = ["/bin/sh", "-c", "echo uploading with token $BACKUP_TOKEN"]
env = {{ BACKUP_TOKEN = "vault://local/backup_token" }}
[operations.backup_profiles.db]
command = ["/bin/sh", "-c", "printf %s \"$DB_URL\" > {got}; echo dumping with $DB_URL"]
env = {{ DB_URL = "postgres://app:secret://DB_PASSWORD@db/app" }}
"#,
        got = dir.join("db-url").display(),
        work = work.display(),
        vault = vault.display(),
        script = script.display(),
        state = state.display(),
        slow_log = dir.join("slow.log").display(),
    );
    Config::parse(&text, Path::new("agent.toml")).unwrap()
}

impl Setup {
    async fn start(db: TestDb) -> Setup {
        let app = TestApp::spawn(db).await;
        for (email, role) in [
            ("owner@example.com", Role::Owner),
            ("member@example.com", Role::Member),
            ("member2@example.com", Role::Member),
            ("viewer@example.com", Role::Viewer),
        ] {
            app.add_user("Acme", email, role).await;
        }
        Setup {
            app,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn register(&self, name: &str) -> (PathBuf, AgentId) {
        let token = control::agents::create_registration_token_cli(
            &control::access::Operator::command_line(self.app.db.store.clone()),
            "Acme",
            &self.app.ca_pin,
            600,
            Timestamp::now(),
        )
        .await
        .unwrap();
        let state = self.dir.path().join(name);
        let r = register(RegisterOptions {
            server: format!("https://localhost:{}", self.app.agent_addr.port()),
            token: token.token.expose_secret().to_string(),
            state_dir: state.clone(),
            hostname: Some(name.into()),
            no_pqc: false,
            force: false,
        })
        .await
        .unwrap();
        (state, AgentId::parse(&r.agent_id).unwrap())
    }

    async fn call(&self, who: &reqwest::Client, endpoint: &str, form: &[(&str, &str)]) -> Value {
        let res = self.app.call(who, endpoint, form).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{endpoint}: {status} {body}");
        body
    }

    async fn propose(
        &self,
        who: &reqwest::Client,
        agent: &AgentId,
        kind: &str,
        args: Value,
    ) -> String {
        self.call(
            who,
            "propose-operation",
            &[
                ("targets", &agent.0),
                ("kind", kind),
                ("args", &args.to_string()),
                ("reason", "nginx keeps failing"),
            ],
        )
        .await
        .as_str()
        .unwrap()
        .to_string()
    }
}

async fn operations_run_on_the_real_agent(db: TestDb) {
    let s = Setup::start(db).await;
    let member = s.app.signed_in("member@example.com").await;
    let member2 = s.app.signed_in("member2@example.com").await;
    let viewer = s.app.signed_in("viewer@example.com").await;
    let (state, agent_id) = s.register("web-1").await;
    let cfg_dir = s.dir.path().join("cfg");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let mut running = agent::run::start(&state, agent_config(&cfg_dir, false)).unwrap();
    running.agent.send_capabilities().await.unwrap();

    let id = s
        .propose(
            &member2,
            &agent_id,
            "restart_service",
            json!({"unit": "nginx.service"}),
        )
        .await;
    let page = s.call(&member2, "operation", &[("id", &id)]).await;
    assert_eq!(page["can_decide"], false);
    assert!(page["decide_refusal"]
        .as_str()
        .unwrap()
        .contains("own proposal"));
    let page = s.call(&viewer, "operation", &[("id", &id)]).await;
    assert_eq!(
        (page["can_decide"].clone(), page["can_cancel"].clone()),
        (json!(false), json!(false))
    );
    let denied = s
        .app
        .call(
            &viewer,
            "approve-operation",
            &[("id", &id), ("reason", "ok")],
        )
        .await;
    assert_eq!(denied.status(), 403);
    let own = s
        .app
        .call(
            &member2,
            "approve-operation",
            &[("id", &id), ("reason", "ok")],
        )
        .await;
    assert_eq!(own.status(), 403);

    s.call(
        &member,
        "approve-operation",
        &[("id", &id), ("reason", "restart it")],
    )
    .await;
    let outcome = running.agent.poll_once().await.unwrap();
    assert_eq!(
        (outcome.executed, outcome.results_sent),
        (1, 1),
        "{outcome:?}"
    );
    let page = s.call(&member, "operation", &[("id", &id)]).await;
    assert_eq!(page["op"]["state"], "succeeded", "{page}");
    let output = page["outputs"][0].as_str().unwrap();
    assert!(output.contains("restarting nginx.service"), "{output}");
    assert!(output.contains("[exit 0]"), "{output}");

    // A vault secret the task prints is redacted before it leaves the host.
    let id = s
        .propose(
            &member2,
            &agent_id,
            "run_backup",
            json!({"profile": "nightly"}),
        )
        .await;
    s.call(
        &member,
        "approve-operation",
        &[("id", &id), ("reason", "backup now")],
    )
    .await;
    running.agent.poll_once().await.unwrap();
    let page = s.call(&member, "operation", &[("id", &id)]).await;
    assert_eq!(page["op"]["state"], "succeeded", "{page}");
    let output = page["outputs"][0].as_str().unwrap();
    assert!(
        output.contains("uploading with token [REDACTED]"),
        "{output}"
    );
    let stored: Vec<Option<String>> = sqlx::query_scalar("SELECT result FROM commands")
        .fetch_all(s.app.db.store.pool())
        .await
        .unwrap();
    assert!(stored.iter().flatten().all(|r| !r.contains(SECRET)));

    // The watched unit fails: the next heartbeat says so, the AI Pilot
    // proposes a restart with evidence, a Member approves, the agent runs it.
    std::fs::write(cfg_dir.join("unit-state"), "failed\n").unwrap();
    running
        .metrics
        .collect_with_units(agent::now_ms(), &running.config.operations)
        .await;
    assert_eq!(running.metrics.flush_metrics().await.unwrap(), 1);
    let outcomes = control::operations::pilot::evaluate(&s.app.db.store, Timestamp::now())
        .await
        .unwrap();
    let [control::operations::pilot::Outcome::Proposed(pilot_op)] = outcomes.as_slice() else {
        panic!("{outcomes:?}");
    };
    let page = s.call(&member, "operation", &[("id", &pilot_op.0)]).await;
    assert_eq!(page["op"]["origin"], "pilot");
    assert_eq!(page["op"]["proposer"], "AI Pilot");
    assert!(page["op"]["evidence"]
        .as_str()
        .unwrap()
        .contains("nginx.service"));
    assert_eq!(page["can_decide"], true, "{page}");
    s.call(
        &member,
        "approve-operation",
        &[("id", &pilot_op.0), ("reason", "yes, restart")],
    )
    .await;
    running.agent.poll_once().await.unwrap();
    let page = s.call(&member, "operation", &[("id", &pilot_op.0)]).await;
    assert_eq!(page["op"]["state"], "succeeded", "{page}");

    // Bad input is refused naming the field.
    for (kind, args, field) in [
        ("restart_service", json!({"unit": "../../etc"}), "unit"),
        ("install_package", json!({"name": "curl wget"}), "name"),
        ("reboot", json!({}), "kind"),
    ] {
        let res = s
            .app
            .call(
                &member2,
                "propose-operation",
                &[
                    ("targets", &agent_id.0),
                    ("kind", kind),
                    ("args", &args.to_string()),
                    ("reason", "r"),
                ],
            )
            .await;
        assert_eq!(res.status(), 400, "{kind}");
        assert!(res.text().await.unwrap().contains(field), "{kind}");
    }
    // A reason over the limit is refused naming the field; a 1 MiB one does
    // not get past the body limit.
    let long = "x".repeat(3000);
    let res = s
        .app
        .call(
            &member2,
            "propose-operation",
            &[
                ("targets", &agent_id.0),
                ("kind", "restart_service"),
                ("args", r#"{"unit":"nginx.service"}"#),
                ("reason", &long),
            ],
        )
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("reason"));
    let huge = "x".repeat(1 << 20);
    helpers::expect_too_large(
        s.app
            .client()
            .post(s.app.url("/api/propose-operation"))
            .form(&[("targets", agent_id.0.as_str()), ("reason", &huge)]),
    )
    .await;

    // The server page's form: the arguments as separate fields, only the
    // chosen kind's passed on; the answer leads to the new operation's page.
    let res = s
        .app
        .call(
            &member2,
            "propose-on-server",
            &[
                ("server", &agent_id.0),
                ("kind", "restart_service"),
                ("unit", "nginx.service"),
                ("package", "curl"),
                ("version", ""),
                ("reason", "from the server page"),
            ],
        )
        .await;
    let status = res.status();
    let id = match res.headers().get("location") {
        Some(to) => to
            .to_str()
            .unwrap()
            .strip_prefix("/operations/")
            .unwrap()
            .to_string(),
        None => res.json::<String>().await.unwrap(),
    };
    assert!(status.is_success() || status.is_redirection(), "{status}");
    let page = s.call(&member, "operation", &[("id", &id)]).await;
    assert_eq!(page["op"]["args"], r#"{"unit":"nginx.service"}"#, "{page}");
    assert_eq!(page["op"]["state"], "proposed", "{page}");
}

/// A running task's output reaches the operation page while it runs, and a
/// cancel from the page reaches the agent, which kills the task.
async fn live_output_and_cancel_reach_the_running_task(db: TestDb) {
    let s = Setup::start(db).await;
    let member = s.app.signed_in("member@example.com").await;
    let member2 = s.app.signed_in("member2@example.com").await;
    let (state, agent_id) = s.register("web-2").await;
    let cfg_dir = s.dir.path().join("cfg");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let mut running = agent::run::start(&state, agent_config(&cfg_dir, false)).unwrap();
    running.agent.send_capabilities().await.unwrap();
    let id = s
        .propose(
            &member2,
            &agent_id,
            "run_backup",
            json!({"profile": "slow"}),
        )
        .await;
    s.call(
        &member,
        "approve-operation",
        &[("id", &id), ("reason", "go")],
    )
    .await;
    let watch = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let page = s.call(&member, "operation", &[("id", &id)]).await;
            if page["outputs"][0]
                .as_str()
                .is_some_and(|o| o.contains("started"))
            {
                assert_eq!(page["op"]["state"], "running", "{page}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no live output: {page}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        s.call(
            &member2,
            "cancel-operation",
            &[("id", &id), ("reason", "wrong profile")],
        )
        .await;
    };
    let (outcome, ()) = tokio::join!(running.agent.poll_once(), watch);
    assert_eq!(outcome.unwrap().executed, 1);
    let page = s.call(&member, "operation", &[("id", &id)]).await;
    assert_eq!(page["op"]["state"], "cancelled", "{page}");
    assert_eq!(page["op"]["targets"][0]["state"], "cancelled", "{page}");
    let output = page["outputs"][0].as_str().unwrap();
    assert!(
        output.contains("started") && output.contains("[cancelled"),
        "{output}"
    );
    assert!(!output.contains("never"), "{output}");
}

/// An agent that stops mid-task reports the task failed when it starts
/// again, and never runs it a second time.
async fn a_restart_mid_task_fails_the_task_without_running_it_twice(db: TestDb) {
    let s = Setup::start(db).await;
    let member = s.app.signed_in("member@example.com").await;
    let member2 = s.app.signed_in("member2@example.com").await;
    let (state, agent_id) = s.register("web-3").await;
    let cfg_dir = s.dir.path().join("cfg");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let mut running = agent::run::start(&state, agent_config(&cfg_dir, false)).unwrap();
    running.agent.send_capabilities().await.unwrap();
    let id = s
        .propose(
            &member2,
            &agent_id,
            "run_backup",
            json!({"profile": "slow"}),
        )
        .await;
    s.call(
        &member,
        "approve-operation",
        &[("id", &id), ("reason", "go")],
    )
    .await;
    // The agent stops while the task runs (its poll is dropped mid-task).
    let stopped =
        tokio::time::timeout(std::time::Duration::from_secs(3), running.agent.poll_once()).await;
    assert!(stopped.is_err(), "the task should still be running");
    drop(running);
    let log = cfg_dir.join("slow.log");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "run\n");

    let mut again = agent::run::start(&state, agent_config(&cfg_dir, false)).unwrap();
    let outcome = again.agent.poll_once().await.unwrap();
    assert_eq!(outcome.executed, 0, "{outcome:?}");
    let page = s.call(&member, "operation", &[("id", &id)]).await;
    assert_eq!(page["op"]["state"], "failed", "{page}");
    assert!(
        page["outputs"][0]
            .as_str()
            .unwrap()
            .contains("agent restarted"),
        "{page}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "run\n", "ran twice");
}

/// Sends the agent commands sealed and signed with the control plane's real
/// command key, as a control plane that skipped its own checks would.
struct Forger {
    keys: control::server_keys::ServerKeys,
    agent: AgentId,
    kem: channel::KemPublicKey,
    sequence: u64,
}

impl Forger {
    fn command(
        &mut self,
        op: &Operation,
        plan_for: &Operation,
        origin: Origin,
    ) -> channel::api::DeliveredCommand {
        self.sequence += 1;
        let now = Timestamp::now().0;
        let header = channel::CommandHeader {
            agent_id: self.agent.0.clone(),
            command_id: format!("cmd_{:024x}", self.sequence),
            sequence: self.sequence,
            issued_at: now,
            expires_at: now + 60_000,
            kind: op.kind().as_str().into(),
            operation: Some(channel::OperationHeader {
                plan_hash: channel::ops::plan_hash(&self.agent.0, plan_for),
                approval: ApprovalRecord {
                    operation_id: "op_000000000000000000000001".into(),
                    origin,
                    proposed_by: None,
                    self_approved: false,
                    approvers: vec![Approver {
                        user_id: 1,
                        role: "admin".into(),
                        at: now,
                    }],
                    expires_at: now + 60_000,
                },
            }),
        };
        let envelope = channel::seal_command(
            &header,
            op.args().to_string().as_bytes(),
            &self.kem,
            &self.keys.signing,
            &mut channel::os_rng(),
        )
        .unwrap();
        channel::api::DeliveredCommand::Sealed { envelope }
    }
}

async fn the_agent_refuses_what_its_policy_forbids(db: TestDb) {
    let s = Setup::start(db).await;
    let (state, agent_id) = s.register("db-1").await;
    let cfg_dir = s.dir.path().join("cfg");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let mut production = agent::run::start(&state, agent_config(&cfg_dir, true)).unwrap();
    let kem: String = sqlx::query_scalar("SELECT kem_key FROM agents WHERE id = $1")
        .bind(&agent_id.0)
        .fetch_one(s.app.db.store.pool())
        .await
        .unwrap();
    let mut forger = Forger {
        keys: s.app.control_keys().await.server,
        agent: agent_id.clone(),
        kem: serde_json::from_value(Value::String(kem)).unwrap(),
        sequence: 1000,
    };
    let restart =
        |unit: &str| Operation::parse("restart_service", &json!({ "unit": unit })).unwrap();
    let file = Operation::parse("read_file", &json!({"path": "/etc/hostname"})).unwrap();
    let cases = [
        (
            "a plan-hash mismatch",
            forger.command(
                &restart("nginx.service"),
                &restart("nginx2.service"),
                Origin::Human,
            ),
            "plan hash",
        ),
        (
            "a pilot's command on a production host",
            forger.command(
                &restart("nginx.service"),
                &restart("nginx.service"),
                Origin::Pilot,
            ),
            "AI Pilot",
        ),
        (
            "a unit outside the allowlist",
            forger.command(
                &restart("sshd.service"),
                &restart("sshd.service"),
                Origin::Human,
            ),
            "allowed units",
        ),
        (
            "read_file with file access off",
            forger.command(&file, &file, Origin::Human),
            "local policy",
        ),
    ];
    let ran = cfg_dir.join("ran.log");
    for (what, command, says) in cases {
        let handled = production
            .agent
            .handle(&command, Timestamp::now().0)
            .await
            .unwrap();
        assert!(
            matches!(
                handled,
                Handled::Executed {
                    status: ResultStatus::Refused,
                    ..
                }
            ),
            "{what}: {handled:?}"
        );
        let pending = production.agent.pending();
        let last = pending.last().unwrap();
        let opened = channel::open_result(
            &last.result,
            &agent_id.0,
            &forger.keys.kem,
            production.agent.identity(),
            Timestamp::now().0,
        )
        .unwrap();
        let text = String::from_utf8_lossy(opened.output()).to_string();
        assert!(text.contains(says), "{what}: {text}");
    }
    assert!(!ran.exists(), "nothing ran");
    // The same pilot command on a host that is not production runs.
    drop(production);
    let mut plain = agent::run::start(&state, agent_config(&cfg_dir, false)).unwrap();
    let ok = forger.command(
        &restart("nginx.service"),
        &restart("nginx.service"),
        Origin::Pilot,
    );
    let handled = plain.agent.handle(&ok, Timestamp::now().0).await.unwrap();
    assert!(
        matches!(
            handled,
            Handled::Executed {
                status: ResultStatus::Succeeded,
                ..
            }
        ),
        "{handled:?}"
    );
}

/// Waits (bounded) for an event with `action`, written by a task of its own
/// or by the agent's report; returns its actor, ip, user agent, target and
/// details.
async fn audit_event(s: &Setup, action: &str) -> (String, String, String, String, Value) {
    for _ in 0..200 {
        let row = sqlx::query(
            "SELECT actor, ip, user_agent, target, details FROM audit_events WHERE action = $1 \
             ORDER BY org_id, seq DESC LIMIT 1",
        )
        .bind(action)
        .fetch_optional(s.app.db.store.pool())
        .await
        .unwrap();
        if let Some(r) = row {
            use sqlx::Row as _;
            return (
                r.try_get(0).unwrap(),
                r.try_get(1).unwrap(),
                r.try_get(2).unwrap(),
                r.try_get(3).unwrap(),
                serde_json::from_str(&r.try_get::<String, _>(4).unwrap()).unwrap(),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no `{action}` event");
}

/// Over HTTP with the real agent: a wrong password is recorded with the
/// request's address and browser, a Viewer's refused proposal is recorded,
/// and a queued command the agent's local policy refuses (its allowlist
/// changed after the operation was approved) is recorded as the agent's
/// refusal with its reason.
async fn refusals_reach_the_audit_log(db: TestDb) {
    let s = Setup::start(db).await;
    let browser = s.app.client();
    let res = browser
        .post(s.app.url("/api/login"))
        .header("user-agent", "AuditTest/1.0")
        .form(&[
            ("email", "member@example.com"),
            ("password", "not-the-password-42"),
        ])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
    let (actor, ip, ua, target, details) = audit_event(&s, "user.login_failed").await;
    assert_eq!(
        (actor.as_str(), ip.as_str(), ua.as_str(), target.as_str()),
        (
            "anonymous",
            "127.0.0.1",
            "AuditTest/1.0",
            "member@example.com"
        )
    );
    assert_eq!(details, json!({ "reason": "wrong_password" }));

    let member = s.app.signed_in("member@example.com").await;
    let member2 = s.app.signed_in("member2@example.com").await;
    let viewer = s.app.signed_in("viewer@example.com").await;
    let (state, agent_id) = s.register("web-1").await;
    let denied = s
        .app
        .call(
            &viewer,
            "propose-operation",
            &[
                ("targets", &agent_id.0),
                ("kind", "restart_service"),
                ("args", r#"{"unit":"nginx.service"}"#),
                ("reason", "nginx keeps failing"),
            ],
        )
        .await;
    assert_eq!(denied.status(), 403);
    let (actor, _, _, _, details) = audit_event(&s, "access.refused").await;
    assert_eq!(actor, "viewer@example.com");
    assert_eq!(
        details,
        json!({ "capability": "propose operations", "role": "viewer" })
    );

    let cfg_dir = s.dir.path().join("cfg");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let mut running = agent::run::start(&state, agent_config(&cfg_dir, false)).unwrap();
    running.agent.send_capabilities().await.unwrap();
    let id = s
        .propose(
            &member2,
            &agent_id,
            "restart_service",
            json!({"unit": "nginx.service"}),
        )
        .await;
    s.call(
        &member,
        "approve-operation",
        &[("id", &id), ("reason", "restart it")],
    )
    .await;
    // The host's operator takes nginx off the allowlist before the agent
    // takes the command.
    drop(running);
    let mut narrowed = agent_config(&cfg_dir, false);
    narrowed.operations.units.clear();
    let mut running = agent::run::start(&state, narrowed).unwrap();
    let outcome = running.agent.poll_once().await.unwrap();
    assert_eq!(
        (outcome.executed, outcome.results_sent),
        (1, 1),
        "{outcome:?}"
    );
    assert!(!cfg_dir.join("ran.log").exists(), "nothing ran");
    let (actor, _, _, target, details) = audit_event(&s, "agent.command_refused").await;
    assert_eq!(actor, format!("agent {}", agent_id.0));
    assert_eq!(target, format!("agent:{}", agent_id.0));
    assert_eq!(details["kind"], "restart_service");
    assert!(details["seq"].as_u64().is_some(), "{details}");
    assert!(
        details["reason"]
            .as_str()
            .unwrap()
            .contains("allowed units"),
        "{details}"
    );
    let page = s.call(&member, "operation", &[("id", &id)]).await;
    assert_eq!(page["op"]["state"], "failed", "{page}");
}

/// A control-plane secret set as the dashboard's form sets it reaches the
/// task of a backup whose profile names it (`secret://DB_PASSWORD`): sealed
/// with the operation at delivery, never stored with the command, redacted
/// from the output, its delivery audited by name; a server's own secret
/// wins over the organisation's; without one the agent refuses to start the
/// task and says what to set.
async fn control_plane_secrets_reach_the_task_that_uses_them(db: TestDb) {
    let s = Setup::start(db).await;
    let owner = s.app.signed_in("owner@example.com").await;
    let member = s.app.signed_in("member@example.com").await;
    let member2 = s.app.signed_in("member2@example.com").await;
    let (state, agent_id) = s.register("db-1").await;
    let cfg_dir = s.dir.path().join("cfg-secrets");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let mut running = agent::run::start(&state, agent_config(&cfg_dir, false)).unwrap();
    running.agent.send_capabilities().await.unwrap();
    let got = cfg_dir.join("db-url");

    let run_backup = |reason: &'static str| {
        let (s, agent_id, member, member2) = (&s, &agent_id, &member, &member2);
        async move {
            let id = s
                .propose(member2, agent_id, "run_backup", json!({"profile": "db"}))
                .await;
            s.call(
                member,
                "approve-operation",
                &[("id", &id), ("reason", reason)],
            )
            .await;
            id
        }
    };

    // Not set yet: the agent refuses to start the task and names it.
    let id = run_backup("no secret yet").await;
    running.agent.poll_once().await.unwrap();
    let page = s.call(&member, "operation", &[("id", &id)]).await;
    assert_eq!(page["op"]["state"], "failed", "{page}");
    let output = page["outputs"][0].as_str().unwrap();
    assert!(
        output.contains("secret://DB_PASSWORD did not come with this operation: set DB_PASSWORD in Settings -> Secrets"),
        "{output}"
    );
    assert!(!got.exists(), "the task ran without its secret");

    // Set for every server, as the Settings form does: the task gets it.
    s.call(
        &owner,
        "set-secret",
        &[
            ("name", "DB_PASSWORD"),
            ("kind", "env"),
            ("scope", "org"),
            ("value", ORG_DB_PASSWORD),
        ],
    )
    .await;
    let id = run_backup("nightly dump").await;
    running.agent.poll_once().await.unwrap();
    let page = s.call(&member, "operation", &[("id", &id)]).await;
    assert_eq!(page["op"]["state"], "succeeded", "{page}");
    assert_eq!(
        std::fs::read_to_string(&got).unwrap(),
        format!("postgres://app:{ORG_DB_PASSWORD}@db/app")
    );
    let output = page["outputs"][0].as_str().unwrap();
    assert!(
        output.contains("dumping with postgres://app:[REDACTED]@db/app"),
        "{output}"
    );
    assert!(!output.contains(ORG_DB_PASSWORD), "{output}");

    // Its delivery is audited by name, never by value.
    let (actor, _, _, target, details) = audit_event(&s, "secret.delivered").await;
    assert_eq!(actor, "system");
    assert_eq!(target, format!("agent:{}", agent_id.0));
    assert_eq!(details["kind"], "run_backup");
    assert_eq!(details["secrets"][0]["name"], "DB_PASSWORD");
    assert!(!details.to_string().contains(ORG_DB_PASSWORD));
    // And its last use shows in the list.
    let listed = s.call(&owner, "secrets", &[]).await;
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "DB_PASSWORD")
        .unwrap();
    assert!(row["last_used_at"].as_i64().is_some(), "{row}");
    assert!(!listed.to_string().contains(ORG_DB_PASSWORD));

    // This server's own value wins over the organisation's.
    s.call(
        &owner,
        "set-secret",
        &[
            ("name", "DB_PASSWORD"),
            ("kind", "env"),
            ("scope", &agent_id.0),
            ("value", SERVER_DB_PASSWORD),
        ],
    )
    .await;
    let id = run_backup("server's own").await;
    running.agent.poll_once().await.unwrap();
    let page = s.call(&member, "operation", &[("id", &id)]).await;
    assert_eq!(page["op"]["state"], "succeeded", "{page}");
    assert_eq!(
        std::fs::read_to_string(&got).unwrap(),
        format!("postgres://app:{SERVER_DB_PASSWORD}@db/app")
    );

    // No value is kept with the commands, their results or the audit log.
    for (table, column) in [
        ("commands", "args"),
        ("commands", "result"),
        ("audit_events", "details"),
    ] {
        let stored: Vec<Option<String>> =
            sqlx::query_scalar(&format!("SELECT {column} FROM {table}"))
                .fetch_all(s.app.db.store.pool())
                .await
                .unwrap();
        for value in [ORG_DB_PASSWORD, SERVER_DB_PASSWORD] {
            assert!(
                stored.iter().flatten().all(|v| !v.contains(value)),
                "{table}.{column} holds a secret value"
            );
        }
    }
}

control::both_backends!(
    control_plane_secrets_reach_the_task_that_uses_them,
    refusals_reach_the_audit_log,
    a_restart_mid_task_fails_the_task_without_running_it_twice,
    live_output_and_cancel_reach_the_running_task,
    operations_run_on_the_real_agent,
    the_agent_refuses_what_its_policy_forbids,
);
