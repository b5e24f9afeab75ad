//! The agent against a stand-in gateway over real TLS: registration, the command
//! round trip, replay handling, the local allowlist, key rotation, post-quantum
//! activation, token refresh, renewal, metrics backlog and a server restart.
#![allow(clippy::unwrap_used)]

mod common;

use agent::agent::Handled;
use agent::config::Config;
use agent::register::{register, RegisterOptions};
use agent::run::{start, Running};
use agent::AgentError;
use channel::ResultStatus;
use common::{Server, Shared, AGENT_ID};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

struct Setup {
    fake: Shared,
    server: Server,
    dir: tempfile::TempDir,
}

impl Setup {
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn start(&self, config: Config) -> Running {
        start(&self.state(), config).unwrap()
    }
}

fn options(s: &Setup, no_pqc: bool) -> RegisterOptions {
    RegisterOptions {
        server: s.server.url(),
        token: s.fake.token(),
        state_dir: s.state(),
        hostname: Some("web-1".into()),
        no_pqc,
        force: false,
    }
}

async fn serve() -> (Shared, Server) {
    let fake = common::fake();
    let server = common::serve(fake.clone(), "127.0.0.1:0".parse().unwrap()).await;
    (fake, server)
}

async fn registered(no_pqc: bool, cert_window: Option<(i64, i64)>) -> Setup {
    let (fake, server) = serve().await;
    if let Some(w) = cert_window {
        fake.with(|s| s.cert_window = w);
    }
    let s = Setup {
        fake,
        server,
        dir: tempfile::tempdir().unwrap(),
    };
    let r = register(options(&s, no_pqc)).await.unwrap();
    assert_eq!(r.agent_id, AGENT_ID);
    assert_eq!(r.post_quantum, !no_pqc);
    s
}

#[tokio::test(flavor = "current_thread")]
async fn registration_stores_private_state_and_a_ping_round_trips() {
    let s = registered(false, None).await;
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(s.state()), 0o700);
    let mut names = vec![];
    for e in std::fs::read_dir(s.state()).unwrap() {
        let e = e.unwrap();
        assert_eq!(mode(e.path()), 0o600, "{:?}", e.path());
        names.push(e.file_name().into_string().unwrap());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "agent.json",
            "agent.lock",
            "ca.crt",
            "identity.key",
            "kem.key",
            "replay.json",
            "tls.crt",
            "tls.key"
        ]
    );
    let status = agent::status::status(&s.state(), agent::now_ms()).unwrap();
    assert!(
        status.contains("Post-quantum encryption active"),
        "{status}"
    );
    assert!(status.contains(AGENT_ID), "{status}");

    let mut running = s.start(Config::default());
    let id = s.fake.queue("ping");
    let outcome = running.agent.poll_once().await.unwrap();
    assert_eq!((outcome.executed, outcome.results_sent), (1, 1));
    let results = s.fake.with(|st| st.results.clone());
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].command_id, id);
    assert_eq!(results[0].status, ResultStatus::Succeeded);
    assert_eq!(results[0].output, "pong");
    assert!(running.agent.pending().is_empty());
    let status = agent::status::status(&s.state(), agent::now_ms()).unwrap();
    assert!(!status.contains("Last contact:     never"), "{status}");

    // Every connection was TLS 1.3 with the hybrid post-quantum key exchange.
    let handshakes = s.fake.with(|st| st.handshakes.clone());
    assert!(handshakes.len() >= 2);
    for (version, group) in handshakes {
        assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
        assert_eq!(group, rustls::NamedGroup::X25519MLKEM768);
    }

    // A second registration needs --force.
    drop(running);
    let err = register(options(&s, false)).await.unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_redelivered_command_runs_once_and_its_stored_result_is_resent() {
    let s = registered(false, None).await;
    let mut running = s.start(Config::default());
    let (id, delivered) = s.fake.queue_cmd("ping", false, None);
    s.fake.with(|st| st.switches.result_status = Some(503));

    // Executed, but the control plane did not take the result.
    let err = running.agent.poll_once().await.unwrap_err();
    assert!(
        matches!(err, AgentError::Gateway(ref g) if g.is_transient()),
        "{err}"
    );
    assert_eq!(running.agent.executions(), 1);
    assert_eq!(running.agent.pending().len(), 1);
    let stored = serde_json::to_string(&running.agent.pending()[0].result).unwrap();

    // Delivered again: recognised, not run again.
    let again = running
        .agent
        .handle(&delivered, agent::now_ms())
        .await
        .unwrap();
    assert_eq!(
        again,
        Handled::Resent {
            command_id: id.clone()
        }
    );
    assert_eq!(running.agent.executions(), 1);

    // Also after a restart: the journal and the stored result are on disk.
    drop(running);
    let mut running = s.start(Config::default());
    let again = running
        .agent
        .handle(&delivered, agent::now_ms())
        .await
        .unwrap();
    assert_eq!(
        again,
        Handled::Resent {
            command_id: id.clone()
        }
    );
    assert_eq!(running.agent.executions(), 0);
    assert_eq!(
        serde_json::to_string(&running.agent.pending()[0].result).unwrap(),
        stored
    );

    // The control plane is back: the same result is delivered, nothing is re-run.
    s.fake.with(|st| st.switches.result_status = None);
    let outcome = running.agent.poll_once().await.unwrap();
    assert_eq!(
        (outcome.results_sent, outcome.delivered, outcome.executed),
        (1, 0, 0)
    );
    let results = s.fake.with(|st| st.results.clone());
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].output, "pong");

    // Once accepted, a late redelivery is ignored; so is an older sequence number.
    let late = running
        .agent
        .handle(&delivered, agent::now_ms())
        .await
        .unwrap();
    assert!(matches!(late, Handled::Ignored { .. }), "{late:?}");
    let (_, stale) = s.fake.queue_cmd("ping", false, Some(1));
    let stale = running.agent.handle(&stale, agent::now_ms()).await.unwrap();
    assert!(
        matches!(stale, Handled::Ignored { ref reason } if reason.contains("Stale")),
        "{stale:?}"
    );
    assert_eq!(running.agent.executions(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_kind_outside_the_allowlist_is_refused_and_answered() {
    let s = registered(false, None).await;
    let config = Config::parse("allow = [\"ping\"]", "agent.toml".as_ref()).unwrap();
    let mut running = s.start(config);
    let identity = running.agent.identity().clone();
    s.fake.queue("rotate_keys");
    let outcome = running.agent.poll_once().await.unwrap();
    assert_eq!((outcome.executed, outcome.results_sent), (1, 1));
    let r = s.fake.with(|st| st.results[0].clone());
    assert_eq!(r.status, ResultStatus::Refused);
    assert!(r.output.contains("not allowed"), "{}", r.output);
    assert_eq!(running.agent.identity(), &identity);
}

#[tokio::test(flavor = "current_thread")]
async fn rotate_keys_replaces_every_key_and_reports_under_the_new_identity() {
    let s = registered(false, None).await;
    let mut running = s.start(Config::default());
    let old_identity = running.agent.identity().clone();
    let old_kem = running.agent.kem_key_id().unwrap();
    let old_serial = running.agent.certificate().serial_hex.clone();
    let old_key_file = std::fs::read(s.state().join("identity.key")).unwrap();

    s.fake.queue("rotate_keys");
    let outcome = running.agent.poll_once().await.unwrap();
    assert_eq!((outcome.executed, outcome.results_sent), (1, 1));
    let r = s.fake.with(|st| st.results[0].clone());
    assert_eq!(r.status, ResultStatus::Succeeded, "{}", r.output);
    assert!(r.output.starts_with("keys rotated"), "{}", r.output);
    assert_ne!(running.agent.identity(), &old_identity);
    assert_eq!(&r.signer, running.agent.identity());
    assert_ne!(running.agent.kem_key_id().unwrap(), old_kem);
    assert_ne!(running.agent.certificate().serial_hex, old_serial);
    assert_ne!(
        std::fs::read(s.state().join("identity.key")).unwrap(),
        old_key_file
    );

    // The next round goes over the new client certificate (the old one is refused).
    s.fake.queue("ping");
    let outcome = running.agent.poll_once().await.unwrap();
    assert_eq!(outcome.executed, 1);
    assert_eq!(s.fake.with(|st| st.results[1].output.clone()), "pong");

    // And the new keys are what a restart loads.
    let identity = running.agent.identity().clone();
    drop(running);
    let running = s.start(Config::default());
    assert_eq!(running.agent.identity(), &identity);
}

#[tokio::test(flavor = "current_thread")]
async fn pqc_activation_moves_a_classical_agent_to_sealed_commands() {
    let s = registered(true, None).await;
    let status = agent::status::status(&s.state(), agent::now_ms()).unwrap();
    assert!(status.contains("Classical fallback"), "{status}");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("KEM key id:") && l.ends_with(" none")),
        "{status}"
    );

    let mut running = s.start(Config::default());
    assert!(!running.agent.has_kem_key());
    s.fake.queue("register_pqc_key");
    running.agent.poll_once().await.unwrap();
    let r = s.fake.with(|st| st.results[0].clone());
    assert_eq!(r.status, ResultStatus::Succeeded, "{}", r.output);
    assert!(running.agent.has_kem_key());
    let server_kem = s
        .fake
        .with(|st| st.agent.as_ref().unwrap().kem.clone())
        .unwrap();
    assert_eq!(Some(server_kem.key_id()), running.agent.kem_key_id());
    let status = agent::status::status(&s.state(), agent::now_ms()).unwrap();
    assert!(
        status.contains("Post-quantum encryption active"),
        "{status}"
    );

    // Commands now arrive sealed; an unencrypted one is a downgrade and is refused.
    s.fake.queue("ping");
    let outcome = running.agent.poll_once().await.unwrap();
    assert_eq!(outcome.executed, 1);
    s.fake.with(|st| st.queue.clear());
    s.fake.queue_signed("ping");
    let outcome = running.agent.poll_once().await.unwrap();
    assert!(outcome.only_ignored(), "{outcome:?}");
    assert_eq!(s.fake.with(|st| st.results.len()), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_token_is_refreshed_once_and_the_call_retried() {
    let s = registered(false, None).await;
    let mut running = s.start(Config::default());
    running.agent.poll_once().await.unwrap();
    assert_eq!(s.fake.with(|st| st.token_calls), 1);
    s.fake.with(|st| st.switches.forget_tokens = true);
    running.agent.poll_once().await.unwrap();
    assert_eq!(s.fake.with(|st| st.token_calls), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn the_certificate_is_renewed_after_two_thirds_of_its_life() {
    // Issued two hours ago, valid for another half hour: 80 % of its life is gone.
    let s = registered(false, Some((120, 30))).await;
    let mut running = s.start(Config::default());
    let old_serial = running.agent.certificate().serial_hex.clone();
    assert!(running.agent.renewal_due(agent::now_ms()));
    s.fake.with(|st| st.cert_window = (1, 24 * 60));
    assert!(running.agent.maybe_renew(agent::now_ms()).await.unwrap());
    assert_eq!(s.fake.with(|st| st.renewals), 1);
    assert_ne!(running.agent.certificate().serial_hex, old_serial);
    assert!(!running.agent.renewal_due(agent::now_ms()));
    assert!(!running.agent.maybe_renew(agent::now_ms()).await.unwrap());
    // The renewed certificate is in use and on disk.
    s.fake.queue("ping");
    assert_eq!(running.agent.poll_once().await.unwrap().executed, 1);
    let on_disk = std::fs::read_to_string(s.state().join("tls.crt")).unwrap();
    let info = agent::x509::CertInfo::from_pem(&on_disk).unwrap();
    assert_eq!(&info, running.agent.certificate());
}

#[tokio::test(flavor = "current_thread")]
async fn metrics_wait_in_a_persisted_backlog_while_the_server_refuses_them() {
    let s = registered(false, None).await;
    let mut running = s.start(Config::default());
    s.fake.with(|st| st.switches.metrics_status = Some(503));
    running.metrics.collect_sample(1_000);
    assert!(running.metrics.flush_metrics().await.is_err());
    running.metrics.collect_sample(2_000);
    assert!(running.metrics.flush_metrics().await.is_err());
    assert_eq!(running.metrics.backlog().len(), 2);
    assert!(s.state().join("metrics-backlog.json").exists());

    drop(running);
    let mut running = s.start(Config::default());
    assert_eq!(running.metrics.backlog().len(), 2);
    s.fake.with(|st| st.switches.metrics_status = None);
    running.metrics.collect_sample(3_000);
    assert_eq!(running.metrics.flush_metrics().await.unwrap(), 3);
    let at: Vec<i64> = s.fake.with(|st| st.samples.iter().map(|m| m.at).collect());
    assert_eq!(at, [1_000, 2_000, 3_000]);
    assert!(!s.state().join("metrics-backlog.json").exists());
}

#[tokio::test(flavor = "current_thread")]
async fn a_restarted_server_is_picked_up_again() {
    let s = registered(false, None).await;
    let mut running = s.start(Config::default());
    running.agent.poll_once().await.unwrap();
    let addr = s.server.addr;
    s.server.stop();
    let err = running.agent.poll_once().await.unwrap_err();
    assert!(
        matches!(err, AgentError::Gateway(ref g) if g.is_transient()),
        "{err}"
    );
    let _again = common::serve(s.fake.clone(), addr).await;
    s.fake.queue("ping");
    assert_eq!(running.agent.poll_once().await.unwrap().executed, 1);
}

fn binary() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_pilothouse-agent"))
}

/// Runs the binary off the runtime thread, so the stand-in server keeps serving.
async fn run_binary(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || binary().args(args).output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn the_binary_refuses_a_server_whose_ca_does_not_match_the_pin() {
    let (fake, server) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let wrong_pin = "ab".repeat(32);
    let args = |token: String| {
        vec![
            "register".to_string(),
            "--server".into(),
            server.url(),
            "--token".into(),
            token,
            "--state-dir".into(),
            state.clone(),
        ]
    };
    let out = run_binary(args(format!("pht1_{}_{wrong_pin}", common::TOKEN_SECRET))).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the server's CA does not match the pin in the token"),
        "{stderr}"
    );
    assert!(!dir.path().join("state/agent.json").exists());

    // The right pin but a token the control plane does not know: its reason, exit 1.
    let out = run_binary(args(format!(
        "pht1_{}_{}",
        "f".repeat(32),
        fake.pki.pin_hex()
    )))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unknown registration token"), "{stderr}");

    // The right token: the agent id on stdout, then `status` describes it.
    let out = run_binary(args(fake.token())).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), AGENT_ID);
    let out = run_binary(vec!["status".into(), "--state-dir".into(), state.clone()]).await;
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        AGENT_ID,
        "Post-quantum encryption active",
        "Last contact:     never",
    ] {
        assert!(stdout.contains(want), "{stdout}");
    }

    // The token was single use.
    let mut force = args(fake.token());
    force.push("--force".into());
    let out = run_binary(force).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already used or has expired"), "{stderr}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_result_is_kept_and_reported_as_failed() {
    let s = registered(false, None).await;
    let mut running = s.start(Config::default());
    let id = s.fake.queue("ping");
    s.fake.with(|st| st.switches.refuse_results = 1);
    let outcome = running.agent.poll_once().await.unwrap();
    assert_eq!(outcome.executed, 1, "{outcome:?}");
    assert!(running.agent.pending().is_empty());
    // The control plane heard that the command ran and its result was refused.
    let results = s.fake.with(|st| st.results.clone());
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].command_id, id);
    assert_eq!(results[0].status, ResultStatus::Failed);
    assert!(
        results[0].output.contains("refused its result"),
        "{}",
        results[0].output
    );
    // And the result itself is kept on the server for the operator.
    let kept = std::fs::read_to_string(s.state().join("rejected-results.json")).unwrap();
    assert!(kept.contains(&id), "{kept}");
    let mode = std::fs::metadata(s.state().join("rejected-results.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}
