//! `update_agent` against the stand-in gateway over real TLS: a signed release is
//! downloaded, verified and staged, and the agent asks to end only after its
//! result was delivered; refusals leave nothing behind; a launched version is
//! marked stable after its trial and the reports reach the control plane.
#![allow(clippy::unwrap_used)]

mod common;

use agent::config::Config;
use agent::register::{register, RegisterOptions};
use agent::run::{start_as, Running};
use agent::update::{self, Binary};
use channel::api::{kinds, UpdateAgentArgs, UpdateOutcome};
use channel::release::{current_platform, ReleaseKey};
use channel::ResultStatus;
use common::{Server, Shared};
use std::path::PathBuf;
use std::time::Duration;

/// Newer than any version this workspace will build.
const NEXT: &str = "999.0.0";
const NEXT_BINARY: &[u8] = b"\x7fELF the next release";

struct Setup {
    fake: Shared,
    _server: Server,
    dir: tempfile::TempDir,
    key: ReleaseKey,
}

impl Setup {
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.state().join("bin").join(name)
    }

    fn config(&self, stable_after_secs: u64) -> Config {
        let key = self.dir.path().join("release-key.pem");
        let text = format!(
            "poll_wait_secs = 1\nrelease_key = \"{}\"\nupdate_stable_after_secs = {stable_after_secs}\n",
            key.display()
        );
        Config::parse(&text, "agent.toml".as_ref()).unwrap()
    }

    fn start(&self, binary: Binary) -> Running {
        start_as(&self.state(), self.config(1), binary).unwrap()
    }

    /// Queues `update_agent` for `version` signed with the pinned key, and serves `served`.
    fn offer(&self, version: &str, served: &[u8]) -> String {
        let manifest = self
            .key
            .sign(version, &current_platform(), NEXT_BINARY)
            .unwrap();
        self.fake.with(|s| s.release = Some(served.to_vec()));
        let args = UpdateAgentArgs {
            manifest: manifest.to_text(),
            allow_downgrade: false,
        };
        let payload = serde_json::to_vec(&args).unwrap();
        self.fake
            .queue_payload(kinds::UPDATE_AGENT, &payload, false, None)
            .0
    }

    fn last_result(&self) -> common::Received {
        self.fake.with(|s| s.results.last().unwrap().clone())
    }
}

async fn registered() -> Setup {
    let fake = common::fake();
    let server = common::serve(fake.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let key = ReleaseKey::generate();
    std::fs::write(dir.path().join("release-key.pem"), key.public().to_pem()).unwrap();
    register(RegisterOptions {
        server: server.url(),
        token: fake.token(),
        state_dir: dir.path().join("state"),
        hostname: Some("web-1".into()),
        no_pqc: false,
        force: false,
    })
    .await
    .unwrap();
    Setup {
        fake,
        _server: server,
        dir,
        key,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_signed_release_is_staged_and_the_agent_restarts_after_its_result() {
    let s = registered().await;
    let mut running = s.start(Binary::installed());
    let id = s.offer(NEXT, NEXT_BINARY);
    s.fake.queue("ping");

    let outcome = running.agent.poll_once().await.unwrap();
    assert_eq!((outcome.executed, outcome.results_sent), (1, 1));
    let r = s.last_result();
    assert_eq!(r.command_id, id);
    assert_eq!(r.status, ResultStatus::Succeeded, "{}", r.output);
    assert_eq!(r.output, format!("switching to {NEXT}; restarting"));
    assert!(running.agent.restart_due());
    // The ping after it is left for the new version.
    assert_eq!(s.fake.with(|st| st.queue.len()), 1);

    assert_eq!(
        std::fs::read(s.bin("pilothouse-agent")).unwrap(),
        NEXT_BINARY
    );
    assert!(s.bin("pilothouse-agent.bak").exists());
    let version = |name: &str| std::fs::read_to_string(s.bin(name)).unwrap();
    assert_eq!(version("pilothouse-agent.version").trim(), NEXT);
    assert_eq!(
        version("pilothouse-agent.bak.version").trim(),
        agent::VERSION
    );
    assert_eq!(version("pilothouse-agent.trial").trim(), "0");
    agent::status::status(&s.state(), agent::now_ms()).unwrap();

    // The declaration at start named the running version.
    let caps = s.fake.with(|st| st.capabilities.clone());
    assert_eq!(caps.len(), 1);
    assert_eq!(caps[0].agent_version.as_deref(), Some(agent::VERSION));
    assert!(caps[0].update.is_none());

    // Nothing more runs in this process.
    let outcome = running.agent.poll_once().await.unwrap();
    assert_eq!(outcome.delivered, 0);
    assert_eq!(s.fake.with(|st| st.queue.len()), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_tampered_or_missing_release_is_refused_and_the_agent_runs_on() {
    let s = registered().await;
    let mut running = s.start(Binary::installed());
    let mut tampered = NEXT_BINARY.to_vec();
    tampered[6] ^= 1;
    s.offer(NEXT, &tampered);
    running.agent.poll_once().await.unwrap();
    let r = s.last_result();
    assert_eq!(r.status, ResultStatus::Refused);
    assert!(
        r.output.starts_with("the binary's SHA-256 is"),
        "{}",
        r.output
    );
    assert_eq!(s.fake.with(|st| st.release_downloads), 1);
    assert!(!running.agent.restart_due());
    assert!(!s.state().join("bin").exists());

    // The gateway's plain-text 404 reaches the operator.
    s.offer(NEXT, NEXT_BINARY);
    s.fake.with(|st| st.release = None);
    running.agent.poll_once().await.unwrap();
    let r = s.last_result();
    assert_eq!(r.status, ResultStatus::Failed);
    assert!(
        r.output.contains("HTTP 404") && r.output.contains("no agent release for"),
        "{}",
        r.output
    );
    assert!(!s.state().join("bin").exists());

    s.fake.queue("ping");
    running.agent.poll_once().await.unwrap();
    assert_eq!(s.last_result().output, "pong");
}

#[tokio::test(flavor = "current_thread")]
async fn a_launched_version_is_kept_after_its_trial_and_says_so() {
    let s = registered().await;
    let mut running = s.start(Binary::installed());
    s.offer(NEXT, NEXT_BINARY);
    running.agent.poll_once().await.unwrap();
    assert!(running.agent.restart_due());
    drop(running);

    // systemd starts the agent again; the launcher starts the new binary.
    let dir = agent::state::StateDir::new(s.state());
    assert_eq!(
        update::decide_launch(&dir).unwrap(),
        update::Launch::Exec {
            version: Some(NEXT.into()),
            trial: true
        }
    );
    let launched = Binary {
        version: NEXT.into(),
        launched: true,
    };
    let mut running = s.start(launched.clone());
    assert!(running.agent.on_trial());
    // No update while on trial: this version would become the one to revert to.
    s.offer("1000.0.0", NEXT_BINARY);
    running.agent.poll_once().await.unwrap();
    let r = s.last_result();
    assert_eq!(r.status, ResultStatus::Refused);
    assert!(r.output.contains("still on trial"), "{}", r.output);
    assert!(running.agent.on_trial());

    tokio::time::sleep(Duration::from_millis(1100)).await;
    running.agent.poll_once().await.unwrap();
    assert!(!running.agent.on_trial());
    assert!(s.bin("pilothouse-agent.stable").exists());
    assert!(!s.bin("pilothouse-agent.trial").exists());
    // The next round declares the outcome, then forgets it.
    running.agent.poll_once().await.unwrap();
    let last = s.fake.with(|st| st.capabilities.last().unwrap().clone());
    assert_eq!(last.agent_version.as_deref(), Some(NEXT));
    let report = last.update.unwrap();
    assert_eq!(report.outcome, UpdateOutcome::Applied);
    assert_eq!(
        (report.from_version.as_str(), report.to_version.as_str()),
        (agent::VERSION, NEXT)
    );
    assert!(!s.state().join("update-report.json").exists());
    assert_eq!(
        update::decide_launch(&dir).unwrap(),
        update::Launch::Exec {
            version: Some(NEXT.into()),
            trial: false
        }
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_version_that_did_not_stay_up_is_reverted_and_reported() {
    let s = registered().await;
    let mut running = s.start(Binary::installed());
    s.offer(NEXT, NEXT_BINARY);
    running.agent.poll_once().await.unwrap();
    drop(running);
    let dir = agent::state::StateDir::new(s.state());
    update::decide_launch(&dir).unwrap();
    // The new version died before its trial ended; the launcher runs again.
    assert_eq!(
        update::decide_launch(&dir).unwrap(),
        update::Launch::Exec {
            version: Some(agent::VERSION.into()),
            trial: false
        }
    );
    let restored = Binary {
        version: agent::VERSION.into(),
        launched: true,
    };
    let mut running = s.start(restored);
    assert!(!running.agent.on_trial());
    running.agent.poll_once().await.unwrap();
    let caps = s.fake.with(|st| st.capabilities.clone());
    let report = caps[caps.len() - 1].update.clone().unwrap();
    assert_eq!(report.outcome, UpdateOutcome::Reverted);
    assert_eq!(
        (report.from_version.as_str(), report.to_version.as_str()),
        (NEXT, agent::VERSION)
    );
    assert_eq!(
        report.reason.as_deref(),
        Some(format!("version {NEXT} did not stay up after an update").as_str())
    );
    assert!(!s.state().join("update-report.json").exists());
}
