//! The real agent library against the real server on port 0, on both
//! backends: registration with a token from the control plane, a ping round
//! trip, metrics, key rotation, post-quantum activation from classical
//! fallback, certificate renewal signed by the identity key, revocation, and
//! one HTTP/2 connection for the long-poll and the uploads. No stand-in on
//! either side (the connection counter only forwards bytes).

#![allow(clippy::unwrap_used)]

mod helpers;

use agent::config::Config;
use agent::register::{register, RegisterOptions};
use control::access::{self, ReadOrg, RequestMeta};
use control::agents;
use control::testing::TestDb;
use control::{AgentId, CommandState, PqcState, Role, Timestamp};
use helpers::TestApp;
use secrecy::ExposeSecret;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

struct Fleet {
    app: TestApp,
    owner: reqwest::Client,
    owner_id: control::UserId,
    org: control::OrgId,
    dir: tempfile::TempDir,
}

impl Fleet {
    async fn start(db: TestDb) -> Fleet {
        Fleet::start_with(db, |_| {}).await
    }

    async fn start_with(db: TestDb, configure: impl FnOnce(&mut server::Config)) -> Fleet {
        let app = TestApp::spawn_with(db, configure).await;
        let (owner_id, org) = app.add_user("Acme", "owner@example.com", Role::Owner).await;
        let owner = app.signed_in("owner@example.com").await;
        Fleet {
            app,
            owner,
            owner_id,
            org,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Registers a real agent with a fresh token; returns its state directory.
    async fn register(&self, name: &str, no_pqc: bool) -> (std::path::PathBuf, AgentId) {
        self.register_at(self.app.agent_addr.port(), name, no_pqc)
            .await
    }

    /// Like [`Fleet::register`], with the agent told the gateway is at `port`.
    async fn register_at(
        &self,
        port: u16,
        name: &str,
        no_pqc: bool,
    ) -> (std::path::PathBuf, AgentId) {
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
            server: format!("https://localhost:{port}"),
            token: token.token.expose_secret().to_string(),
            state_dir: state.clone(),
            hostname: Some(name.into()),
            no_pqc,
            force: false,
        })
        .await
        .unwrap();
        assert_eq!(r.post_quantum, !no_pqc);
        (state, AgentId::parse(&r.agent_id).unwrap())
    }

    async fn call(&self, endpoint: &str, id: &str) -> String {
        let res = self.app.call(&self.owner, endpoint, &[("id", id)]).await;
        assert_eq!(res.status(), 200, "{endpoint}");
        res.json::<Value>()
            .await
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn command(&self, id: &str) -> Value {
        self.app
            .call(&self.owner, "command-state", &[("id", id)])
            .await
            .json()
            .await
            .unwrap()
    }

    async fn view(&self, agent: &AgentId) -> control::AgentView {
        let owner = access::actor(
            &self.app.db.store,
            self.owner_id,
            Some(self.org),
            RequestMeta::default(),
        )
        .await
        .unwrap();
        agents::get(
            &owner.authorize::<ReadOrg>().unwrap(),
            agent,
            Timestamp::now(),
        )
        .await
        .unwrap()
    }
}

async fn the_real_agent_meets_the_real_server(db: TestDb) {
    let f = Fleet::start(db).await;
    let (state, id) = f.register("web-1", false).await;
    let mut running = agent::run::start(&state, Config::default()).unwrap();
    assert_eq!(f.view(&id).await.pqc, PqcState::PostQuantumActive);

    // A ping, sealed to the agent's X-Wing key, runs once and reports "pong".
    let ping = f.call("ping-server", &id.0).await;
    let outcome = running.agent.poll_once().await.unwrap();
    assert_eq!(
        (outcome.executed, outcome.results_sent),
        (1, 1),
        "{outcome:?}"
    );
    assert_eq!(
        f.command(&ping).await,
        serde_json::json!({ "state": "succeeded", "result": "pong" })
    );

    // Metrics reach the servers list.
    running.metrics.collect_sample(agent::now_ms());
    assert_eq!(running.metrics.flush_metrics().await.unwrap(), 1);
    let view = f.view(&id).await;
    assert!(view.cpu_pct.is_some());
    // With them its health: up since this test started it, clock in step.
    let health = view
        .health
        .expect("the agent reports its health with its metrics");
    assert!(health.clock_skew_ms.abs() < 5_000, "{health:?}");
    assert!(!health.clock_off());
    assert!(health.started_at <= health.reported_at, "{health:?}");

    // Rotate keys: new identity, KEM and TLS keys, then a ping on the new certificate.
    let before = f.view(&id).await;
    let rotate = f.call("rotate-keys", &id.0).await;
    assert_eq!(f.view(&id).await.pqc, PqcState::PendingKeyRegistration);
    let outcome = running.agent.poll_once().await.unwrap();
    assert_eq!(outcome.executed, 1, "{outcome:?}");
    assert_eq!(f.command(&rotate).await["state"], "succeeded");
    let after = f.view(&id).await;
    assert_eq!(after.pqc, PqcState::PostQuantumActive);
    assert_ne!(after.cert_fingerprint, before.cert_fingerprint);
    assert_ne!(after.kem_key_id, before.kem_key_id);
    let ping = f.call("ping-server", &id.0).await;
    running.agent.poll_once().await.unwrap();
    assert_eq!(f.command(&ping).await["state"], "succeeded");

    // Renewal, signed by the identity key, replaces the certificate.
    let renewal_time = agent::now_ms() + 60 * 86_400_000;
    assert!(running.agent.maybe_renew(renewal_time).await.unwrap());
    let renewed = f.view(&id).await;
    assert_ne!(renewed.cert_fingerprint, after.cert_fingerprint);
    let ping = f.call("ping-server", &id.0).await;
    running.agent.poll_once().await.unwrap();
    assert_eq!(f.command(&ping).await["state"], "succeeded");

    // Revocation: the next poll is refused, and queued work is cancelled.
    let queued = f.call("ping-server", &id.0).await;
    let res = f
        .app
        .call(&f.owner, "revoke-server", &[("id", &id.0)])
        .await;
    assert_eq!(res.status(), 200);
    assert!(running.agent.poll_once().await.is_err());
    assert_eq!(
        f.command(&queued).await["state"],
        CommandState::Cancelled.as_str()
    );
}

async fn classical_fallback_activates_post_quantum(db: TestDb) {
    let f = Fleet::start(db).await;
    let (state, id) = f.register("db-1", true).await;
    let mut running = agent::run::start(&state, Config::default()).unwrap();
    assert_eq!(f.view(&id).await.pqc, PqcState::ClassicalFallback);
    // Signed-only delivery for the kinds that may travel that way.
    let ping = f.call("ping-server", &id.0).await;
    running.agent.poll_once().await.unwrap();
    assert_eq!(f.command(&ping).await["state"], "succeeded");
    let activate = f.call("activate-pqc", &id.0).await;
    let outcome = running.agent.poll_once().await.unwrap();
    assert_eq!(outcome.executed, 1, "{outcome:?}");
    assert_eq!(f.command(&activate).await["state"], "succeeded");
    assert_eq!(f.view(&id).await.pqc, PqcState::PostQuantumActive);
    // From now on commands arrive sealed.
    let ping = f.call("ping-server", &id.0).await;
    running.agent.poll_once().await.unwrap();
    assert_eq!(f.command(&ping).await["state"], "succeeded");
}

/// Forwards every TCP connection made to the port it returns to `to`, and
/// counts them.
async fn counting_forwarder(to: std::net::SocketAddr) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (port, count)
}

/// The agent keeps one connection to the gateway, over HTTP/2: a metrics
/// upload made while a long-poll is held rides along on it, and a long-poll
/// held longer than the server's idle limit keeps it (the idle limit counts
/// time with no request in progress). A new connection per upload was most of
/// an idle agent's CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_one_connection_for_polls_and_uploads() {
    let f = Fleet::start_with(TestDb::sqlite().await, |c| {
        c.header_read_timeout_secs = 1;
        c.poll_timeout_secs = 3;
    })
    .await;
    let (port, connections) = counting_forwarder(f.app.agent_addr).await;
    let (state, id) = f.register_at(port, "web-1", false).await;
    let registration = connections.load(Ordering::SeqCst);
    let config = Config {
        poll_wait_secs: 3,
        ..Config::default()
    };
    let mut running = agent::run::start(&state, config).unwrap();
    let (agent, metrics) = (&mut running.agent, &mut running.metrics);
    let polls = async {
        for _ in 0..2 {
            let started = std::time::Instant::now();
            let outcome = agent.poll_once().await.unwrap();
            assert_eq!(outcome.executed, 0, "{outcome:?}");
            assert!(
                started.elapsed() >= std::time::Duration::from_millis(2500),
                "the long-poll was not held: {:?}",
                started.elapsed()
            );
        }
    };
    let uploads = async {
        for _ in 0..2 {
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            metrics.collect_sample(agent::now_ms());
            assert_eq!(metrics.flush_metrics().await.unwrap(), 1);
        }
    };
    tokio::join!(polls, uploads);
    assert!(f.view(&id).await.cpu_pct.is_some());
    assert_eq!(
        connections.load(Ordering::SeqCst) - registration,
        1,
        "two long-polls and two uploads in between took more than one connection"
    );
}

control::both_backends!(
    the_real_agent_meets_the_real_server,
    classical_fallback_activates_post_quantum,
);
