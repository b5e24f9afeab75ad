//! The agent gateway over real TLS: enrolment with a one-time token, mutual
//! TLS with certificates from the agent CA, JWTs bound to agent and
//! certificate, the long-poll woken by a committed command, results, and
//! revocation. Every refusal is tried.

// Test bodies are shared by both backends through a macro, so they are not
// `#[test]` functions themselves; a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod helpers;

use std::time::{Duration, Instant};

use control::testing::TestDb;
use control::{Role, Timestamp};
use helpers::TestApp;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

struct Agent {
    id: String,
    /// The agent's certificate (PEM), public like any certificate.
    cert_pem: String,
    client: reqwest::Client,
    base: String,
    jwt: String,
    ca_pem: String,
    identity: channel::SigningKey,
    kem: Option<channel::KemSecretKey>,
    server_verifying: channel::VerifyingKey,
    control_kem: channel::KemPublicKey,
    replay: channel::ReplayGuard,
}

fn channel_now() -> i64 {
    Timestamp::now().0
}

fn tls_client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(helpers::agent_tls::client_config(ca_pem, identity))
        .build()
        .unwrap()
}

fn csr() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (csr, key.serialize_pem())
}

fn enrol_body(
    token: &str,
    identity: &channel::SigningKey,
    kem: Option<&channel::KemSecretKey>,
) -> (Value, String) {
    let (csr, key) = csr();
    let body = json!({
        "token": token,
        "csr_pem": csr,
        "identity_key": identity.verifying_key(),
        "kem_key": kem.map(|k| k.public_key()),
        "hostname": "web-1",
        "agent_version": "0.1.0",
    });
    (body, key)
}

async fn token_for(app: &TestApp) -> String {
    control::agents::create_registration_token_cli(
        &control::access::Operator::command_line(app.db.store.clone()),
        "Acme",
        &app.ca_pin,
        3600,
        Timestamp::now(),
    )
    .await
    .unwrap()
    .token
    .expose_secret()
    .to_string()
}

impl Agent {
    /// A renewal request for `csr_pem`, signed by the agent's identity key.
    fn renew_body(&self, csr_pem: &str) -> Value {
        let renewal =
            channel::sign_renewal(&self.id, csr_pem, &self.identity, channel_now()).unwrap();
        json!({ "csr_pem": csr_pem, "renewal": renewal })
    }

    async fn enrol(app: &TestApp) -> Agent {
        Agent::enrol_with(app, true).await
    }

    async fn enrol_with(app: &TestApp, pqc: bool) -> Agent {
        let ca_pem = std::fs::read_to_string(app.dir.path().join("agent-ca.crt")).unwrap();
        let base = format!("https://127.0.0.1:{}", app.agent_addr.port());
        let anonymous = tls_client(&ca_pem, None);
        let identity = channel::SigningKey::generate();
        let kem = pqc.then(channel::KemSecretKey::generate);
        let (body, key) = enrol_body(&token_for(app).await, &identity, kem.as_ref());
        let res = anonymous
            .post(format!("{base}/agent/v1/enrol"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let enrolled: channel::api::EnrolResponse = res.json().await.unwrap();
        let mut agent = Agent {
            id: enrolled.agent_id,
            cert_pem: enrolled.client_cert_pem.clone(),
            client: tls_client(&ca_pem, Some((&enrolled.client_cert_pem, &key))),
            base,
            jwt: String::new(),
            ca_pem,
            identity,
            kem,
            server_verifying: enrolled.command_verifying_key,
            control_kem: enrolled.control_kem_key,
            replay: channel::ReplayGuard::new(),
        };
        agent.refresh_jwt().await;
        agent
    }

    async fn refresh_jwt(&mut self) {
        let jwt: Value = self
            .client
            .post(format!("{}/agent/v1/token", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        self.jwt = jwt["token"].as_str().unwrap().to_string();
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.jwt)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn poll(&self, wait_secs: u64) -> Vec<channel::api::DeliveredCommand> {
        let res = self
            .post("/agent/v1/poll", json!({ "wait_secs": wait_secs }))
            .await;
        assert_eq!(res.status(), 200);
        res.json::<channel::api::PollResponse>()
            .await
            .unwrap()
            .commands
    }

    /// Opens a delivered command as the agent does.
    fn open(
        &self,
        delivered: &channel::api::DeliveredCommand,
    ) -> Result<channel::OpenedCommand, channel::ChannelError> {
        let now = Timestamp::now().0;
        match delivered {
            channel::api::DeliveredCommand::Sealed { envelope } => channel::open_command(
                envelope,
                &self.id,
                self.kem.as_ref().expect("a sealed command needs a KEM key"),
                &self.server_verifying,
                &self.replay,
                now,
            ),
            channel::api::DeliveredCommand::Signed { envelope } => channel::open_signed_command(
                envelope,
                &self.id,
                &self.server_verifying,
                &self.replay,
                now,
            ),
        }
    }

    fn sealed_result(
        &self,
        cmd: &channel::OpenedCommand,
        output: &str,
        signer: &channel::SigningKey,
    ) -> Value {
        let header = channel::ResultHeader {
            agent_id: self.id.clone(),
            command_id: cmd.header().command_id.clone(),
            sequence: cmd.header().sequence,
            finished_at: Timestamp::now().0,
            status: channel::ResultStatus::Succeeded,
        };
        let sealed = channel::seal_result(
            &header,
            output.as_bytes(),
            &self.control_kem,
            signer,
            &mut channel::os_rng(),
        )
        .unwrap();
        json!({ "result": sealed })
    }

    async fn report(&mut self, cmd: &channel::OpenedCommand, output: &str) {
        let body = self.sealed_result(cmd, output, &self.identity);
        let res = self.post("/agent/v1/result", body).await;
        assert_eq!(res.status(), 204);
        self.replay.commit(cmd);
    }

    /// Answers a key-registration command: new KEM key (and for a rotation new
    /// identity and TLS keys, with the new certificate taking over).
    async fn register_keys(&mut self, rotate: bool) -> reqwest::Response {
        let new_identity = if rotate {
            channel::SigningKey::generate()
        } else {
            channel::SigningKey::from_bytes(&*self.identity.to_bytes()).unwrap()
        };
        let new_kem = channel::KemSecretKey::generate();
        let (csr, key) = csr();
        let registration = channel::KeyRegistration {
            agent_id: self.id.clone(),
            kem_public_key: new_kem.public_key().clone(),
            identity_key: new_identity.verifying_key().clone(),
            tls_cert_fingerprint: rotate.then(|| control::crypto::sha256_hex(&csr)),
            issued_at: Timestamp::now().0,
        };
        let signed =
            channel::sign_registration(registration, &self.identity, &new_identity).unwrap();
        let res = self
            .post(
                "/agent/v1/keys",
                json!({ "registration": signed, "csr_pem": rotate.then_some(csr) }),
            )
            .await;
        if res.status() != 200 {
            return res;
        }
        let body: channel::api::KeysResponse = res.json().await.unwrap();
        if let Some(cert) = body.client_cert_pem {
            self.client = tls_client(&self.ca_pem, Some((&cert, &key)));
        }
        self.identity = new_identity;
        self.kem = Some(new_kem);
        self.refresh_jwt().await;
        self.post("/agent/v1/poll", json!({ "wait_secs": 0 })).await
    }
}

async fn enrol_poll_ping_and_revoke(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let owner = app.signed_in("owner@example.com").await;
    let mut agent = Agent::enrol(&app).await;

    // Nothing queued: the poll is held and answers empty at its timeout.
    let started = Instant::now();
    let res = agent
        .post("/agent/v1/poll", json!({ "wait_secs": 1 }))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["commands"], json!([]));
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A held poll returns as soon as a ping is committed from the dashboard.
    let poll = {
        let (client, base, jwt) = (agent.client.clone(), agent.base.clone(), agent.jwt.clone());
        tokio::spawn(async move {
            client
                .post(format!("{base}/agent/v1/poll"))
                .bearer_auth(jwt)
                .json(&json!({ "wait_secs": 20 }))
                .send()
                .await
                .unwrap()
                .json::<channel::api::PollResponse>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let command: String = app
        .call(&owner, "ping-server", &[("id", &agent.id)])
        .await
        .json()
        .await
        .unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the poll was woken")
        .unwrap()
        .commands;
    assert_eq!(delivered.len(), 1);
    assert!(
        matches!(delivered[0], channel::api::DeliveredCommand::Sealed { .. }),
        "sealed to the agent's X-Wing key"
    );
    let opened = agent.open(&delivered[0]).unwrap();
    assert_eq!(opened.header().command_id, command);
    assert_eq!(opened.header().kind, "ping");

    // A result signed by some other key is refused; the real one is recorded.
    let forged = agent.sealed_result(&opened, "pong", &channel::SigningKey::generate());
    let res = agent.post("/agent/v1/result", forged).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("signature"));
    // Until reported, the command is delivered again (at-least-once), and the agent's guard keeps it to once.
    let again = agent.poll(0).await;
    assert_eq!(again[0].header().command_id, command);
    agent.report(&opened, "pong").await;
    assert!(matches!(
        agent.open(&again[0]),
        Err(channel::ChannelError::Replay(_))
    ));
    let state: Value = app
        .call(&owner, "command-state", &[("id", &command)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(state, json!({ "state": "succeeded", "result": "pong" }));
    // A result up to the channel's payload limit is accepted (the web side's
    // 64 KiB body limit does not apply here); the stored text is capped.
    let res = app.call(&owner, "ping-server", &[("id", &agent.id)]).await;
    let big: String = res.json().await.unwrap();
    let delivered = agent.poll(0).await;
    let opened_big = agent.open(&delivered[0]).unwrap();
    assert_eq!(opened_big.header().command_id, big);
    let output = "x".repeat(channel::envelope::MAX_PAYLOAD_BYTES - 1024);
    agent.report(&opened_big, &output).await;
    let state: Value = app
        .call(&owner, "command-state", &[("id", &big)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(state["state"], "succeeded");
    assert_eq!(
        state["result"].as_str().unwrap().len(),
        control::commands::MAX_RESULT_CHARS
    );
    assert!(
        agent.poll(0).await.is_empty(),
        "a reported command is not delivered again"
    );

    // The server page's data, as the owner reads it.
    let detail = || async {
        app.call(&owner, "server-detail", &[("id", &agent.id)])
            .await
            .json::<Value>()
            .await
            .unwrap()
    };
    let view = detail().await;
    assert_eq!(view["online"], true);
    assert_eq!(
        view["tls_group"], "X25519MLKEM768",
        "post-quantum hybrid TLS was negotiated"
    );
    assert_eq!(view["pqc"], "PostQuantumActive");

    // Metrics: one batch, one transaction; impossible samples are dropped, resending is harmless.
    let now = Timestamp::now().0;
    let sample = |at: i64, cpu: f64| {
        json!({
            "at": at, "cpu_pct": cpu, "mem_used_bytes": 1_000_000_000u64, "mem_total_bytes": 4_000_000_000u64,
            "disks": [{ "mount": "/", "used_bytes": 10u64, "total_bytes": 100u64 }],
            "net_rx_bytes_per_sec": 1500.0, "net_tx_bytes_per_sec": 700.0, "load": [0.5, 0.4, 0.3]
        })
    };
    let batch = json!({ "samples": [sample(now - 120_000, 10.0), sample(now - 60_000, 20.0), sample(now, 30.0), sample(now, 150.0)] });
    let res = agent.post("/agent/v1/metrics", batch.clone()).await;
    assert_eq!(res.json::<Value>().await.unwrap()["accepted"], 3);
    agent.post("/agent/v1/metrics", batch).await;
    let points: Value = app
        .call(
            &owner,
            "server-metrics",
            &[("id", &agent.id), ("range", "hour")],
        )
        .await
        .json()
        .await
        .unwrap();
    let cpu: Vec<f64> = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["cpu_pct"].as_f64().unwrap())
        .collect();
    assert_eq!(cpu, vec![10.0, 20.0, 30.0]);
    let too_many =
        json!({ "samples": (0..181).map(|i| sample(now - i * 1000, 1.0)).collect::<Vec<_>>() });
    assert_eq!(
        agent.post("/agent/v1/metrics", too_many).await.status(),
        400
    );
    let res = app
        .call(
            &owner,
            "server-metrics",
            &[("id", &agent.id), ("range", "year")],
        )
        .await;
    assert_eq!(res.status(), 400);

    // Health: the agent's clock is compared with the control plane's on
    // receipt. This machine's clock cannot be moved, so the skewed agent is
    // played by a batch stamped 90 s behind; the real agent's report is in
    // real_agent.rs and self_update.rs.
    let now = Timestamp::now().0;
    let healthy = |sent_at: i64, message: String, age: u64, uptime: u64| {
        json!({
            "samples": [sample(now, 5.0)],
            "health": {
                "sent_at": sent_at,
                "uptime_secs": uptime,
                "last_error": { "age_secs": age, "message": message }
            }
        })
    };
    let res = agent
        .post(
            "/agent/v1/metrics",
            healthy(
                now - 90_000,
                "poll failed: connection reset".into(),
                60,
                3600,
            ),
        )
        .await;
    assert_eq!(res.status(), 200);
    let view = detail().await;
    let health = &view["health"];
    let skew = health["clock_skew_ms"].as_i64().unwrap();
    assert!((-95_000..=-89_000).contains(&skew), "{health}");
    assert_eq!(health["last_error"], "poll failed: connection reset");
    let started = health["started_at"].as_i64().unwrap();
    assert!(
        (now - 3_605_000..=now - 3_595_000).contains(&started),
        "{health}"
    );
    let shown: control::AgentView = serde_json::from_value(view.clone()).unwrap();
    let h = shown.health.unwrap();
    assert!(h.clock_off());
    assert!(
        h.clock_text().starts_with("90 s behind"),
        "{}",
        h.clock_text()
    );
    let page = app.page(&owner, "/servers").await.text().await.unwrap();
    assert!(
        page.contains(r#"data-testid="clock-off""#),
        "no Clock off badge"
    );
    // A report that breaks its bounds refuses the batch, samples included.
    for (bad, why) in [
        (
            healthy(now, "x".repeat(channel::api::MAX_ERROR_CHARS + 1), 1, 10),
            "at most 500 characters",
        ),
        (
            healthy(now, "e".into(), 20, 10),
            "older than the agent's uptime",
        ),
        (healthy(now, "e".into(), 1, u64::MAX), "at most a century"),
    ] {
        let res = agent.post("/agent/v1/metrics", bad).await;
        assert_eq!(res.status(), 400);
        assert!(res.text().await.unwrap().contains(why), "{why}");
    }
    // A clock back in step clears the warning; the last error stays.
    agent
        .post(
            "/agent/v1/metrics",
            healthy(
                Timestamp::now().0,
                "poll failed: connection reset".into(),
                70,
                3610,
            ),
        )
        .await;
    let view = detail().await;
    let shown: control::AgentView = serde_json::from_value(view).unwrap();
    assert!(!shown.health.unwrap().clock_off());

    // Revocation refuses the certificate at once, even on a poll already held.
    let held = {
        let (client, base, jwt) = (agent.client.clone(), agent.base.clone(), agent.jwt.clone());
        tokio::spawn(async move {
            client
                .post(format!("{base}/agent/v1/poll"))
                .bearer_auth(jwt)
                .json(&json!({ "wait_secs": 20 }))
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.call(&owner, "revoke-server", &[("id", &agent.id)])
            .await
            .status(),
        200
    );
    let res = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the held poll ended at the revocation")
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = agent
        .post("/agent/v1/poll", json!({ "wait_secs": 1 }))
        .await;
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("revoked"));
}

async fn the_gateway_refuses_what_it_should(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let a = Agent::enrol(&app).await;
    let b = Agent::enrol(&app).await;
    let ca_pem = std::fs::read_to_string(app.dir.path().join("agent-ca.crt")).unwrap();
    let anonymous = tls_client(&ca_pem, None);
    let url = |p: &str| format!("{}{p}", a.base);

    // No client certificate.
    let res = anonymous.post(url("/agent/v1/token")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = anonymous
        .post(url("/agent/v1/poll"))
        .bearer_auth(&a.jwt)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // A certificate from another CA does not even complete the handshake.
    let rogue_key = rcgen::KeyPair::generate().unwrap();
    let rogue = rcgen::CertificateParams::new(vec!["rogue".to_string()])
        .unwrap()
        .self_signed(&rogue_key)
        .unwrap();
    let rogue_client = tls_client(&ca_pem, Some((&rogue.pem(), &rogue_key.serialize_pem())));
    assert!(rogue_client
        .post(url("/agent/v1/token"))
        .send()
        .await
        .is_err());
    // Missing, garbage, and another agent's JWT.
    let res = a
        .client
        .post(url("/agent/v1/poll"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = a
        .client
        .post(url("/agent/v1/poll"))
        .bearer_auth("not.a.jwt")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = a
        .client
        .post(url("/agent/v1/poll"))
        .bearer_auth(&b.jwt)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("another agent"));
    // Another agent's command cannot be reported.
    let header = channel::ResultHeader {
        agent_id: b.id.clone(),
        command_id: "cmd_000000000000000000000000".into(),
        sequence: 1,
        finished_at: Timestamp::now().0,
        status: channel::ResultStatus::Succeeded,
    };
    let sealed = channel::seal_result(
        &header,
        b"",
        &b.control_kem,
        &b.identity,
        &mut channel::os_rng(),
    )
    .unwrap();
    let res = a
        .post("/agent/v1/result", json!({ "result": sealed }))
        .await;
    assert_eq!(
        res.status(),
        400,
        "a result made by another agent is refused"
    );
    // A result for a command that does not exist.
    let header = channel::ResultHeader {
        agent_id: a.id.clone(),
        ..header
    };
    let sealed = channel::seal_result(
        &header,
        b"",
        &a.control_kem,
        &a.identity,
        &mut channel::os_rng(),
    )
    .unwrap();
    let res = a
        .post("/agent/v1/result", json!({ "result": sealed }))
        .await;
    assert_eq!(res.status(), 404);
    // Malformed, truncated, wrong content type, unknown fields, oversized.
    let res = a
        .client
        .post(url("/agent/v1/poll"))
        .bearer_auth(&a.jwt)
        .header("content-type", "application/json")
        .body("{\"wait_secs\":")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = a
        .client
        .post(url("/agent/v1/poll"))
        .bearer_auth(&a.jwt)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    let res = a
        .post("/agent/v1/poll", json!({ "wait_secs": 1, "sneaky": true }))
        .await;
    assert_eq!(res.status(), 422);
    helpers::expect_too_large(
        a.client
            .post(url("/agent/v1/result"))
            .bearer_auth(&a.jwt)
            .json(&json!({ "result": "a".repeat(server::gateway::MAX_BODY_BYTES) })),
    )
    .await;
    // Enrolment: malformed token, reused token.
    let some_key = channel::SigningKey::generate();
    let (body, _) = enrol_body("pht1_nope", &some_key, None);
    let res = anonymous
        .post(url("/agent/v1/enrol"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let token = token_for(&app).await;
    let (body, _) = enrol_body(&token, &some_key, None);
    assert_eq!(
        anonymous
            .post(url("/agent/v1/enrol"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let res = anonymous
        .post(url("/agent/v1/enrol"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    assert!(res.text().await.unwrap().contains("already been used"));
    let (mut body, _) = enrol_body(&token_for(&app).await, &some_key, None);
    body["csr_pem"] =
        json!("-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n");
    let res = anonymous
        .post(url("/agent/v1/enrol"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

async fn activate_pqc_and_rotate_keys(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let owner = app.signed_in("owner@example.com").await;
    let mut agent = Agent::enrol_with(&app, false).await;
    let detail = |app: &TestApp, owner: &reqwest::Client, id: String| {
        let owner = owner.clone();
        let url = app.url("/api/server-detail");
        async move {
            owner
                .post(url)
                .form(&[("id", id)])
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        detail(&app, &owner, agent.id.clone()).await["pqc"],
        "ClassicalFallback"
    );

    // Activate PQC: pending until the agent registers its X-Wing key.
    assert_eq!(
        app.call(&owner, "activate-pqc", &[("id", &agent.id)])
            .await
            .status(),
        200
    );
    assert_eq!(
        detail(&app, &owner, agent.id.clone()).await["pqc"],
        "PendingKeyRegistration"
    );
    let delivered = agent.poll(1).await;
    assert!(
        matches!(delivered[0], channel::api::DeliveredCommand::Signed { .. }),
        "no KEM key yet: signed only"
    );
    let cmd = agent.open(&delivered[0]).unwrap();
    assert_eq!(cmd.header().kind, "register_pqc_key");
    // A registration signed by a key the server does not know is refused.
    let stranger = channel::SigningKey::generate();
    let forged = channel::sign_registration(
        channel::KeyRegistration {
            agent_id: agent.id.clone(),
            kem_public_key: channel::KemSecretKey::generate().public_key().clone(),
            identity_key: stranger.verifying_key().clone(),
            tls_cert_fingerprint: None,
            issued_at: Timestamp::now().0,
        },
        &stranger,
        &stranger,
    )
    .unwrap();
    let res = agent
        .post(
            "/agent/v1/keys",
            json!({ "registration": forged, "csr_pem": null }),
        )
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(agent.register_keys(false).await.status(), 200);
    agent.report(&cmd, "registered").await;
    let view = detail(&app, &owner, agent.id.clone()).await;
    assert_eq!(view["pqc"], "PostQuantumActive");
    let kem_id = agent.kem.as_ref().unwrap().key_id().to_string();
    assert_eq!(view["kem_key_id"], kem_id.as_str());
    let registered_at = view["keys_registered_at"].as_i64().unwrap();

    // Rotate: sealed to the current key; new identity, KEM and TLS keys; the old certificate stops working.
    let old_client = agent.client.clone();
    let old_jwt = agent.jwt.clone();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        app.call(&owner, "rotate-keys", &[("id", &agent.id)])
            .await
            .status(),
        200
    );
    let delivered = agent.poll(1).await;
    assert!(matches!(
        delivered[0],
        channel::api::DeliveredCommand::Sealed { .. }
    ));
    let cmd = agent.open(&delivered[0]).unwrap();
    assert_eq!(cmd.header().kind, "rotate_keys");
    assert_eq!(
        agent.register_keys(true).await.status(),
        200,
        "the new certificate works at once"
    );
    agent.report(&cmd, "rotated").await;
    let view = detail(&app, &owner, agent.id.clone()).await;
    assert_eq!(view["pqc"], "PostQuantumActive");
    assert_ne!(view["kem_key_id"], kem_id.as_str());
    assert!(view["keys_registered_at"].as_i64().unwrap() > registered_at);
    let res = old_client
        .post(format!("{}/agent/v1/poll", agent.base))
        .bearer_auth(old_jwt)
        .json(&json!({ "wait_secs": 0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "the replaced certificate is refused");

    // Certificate renewal: a new certificate from a new key; the old one stops working.
    let (csr, key) = csr();
    let res = agent.post("/agent/v1/renew", agent.renew_body(&csr)).await;
    assert_eq!(res.status(), 200);
    let renewed: channel::api::RenewResponse = res.json().await.unwrap();
    let before = agent.client.clone();
    agent.client = tls_client(&agent.ca_pem, Some((&renewed.client_cert_pem, &key)));
    agent.refresh_jwt().await;
    assert!(agent.poll(0).await.is_empty());
    let res = before
        .post(format!("{}/agent/v1/token", agent.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "the renewed-away certificate is refused");
    let res = agent
        .post("/agent/v1/renew", agent.renew_body("not a csr"))
        .await;
    assert_eq!(res.status(), 400);
    // Holding the TLS key is not enough: a renewal signed by any other key
    // than the agent's identity key is refused, and so is one without.
    let thief_csr = csr;
    let thief = channel::SigningKey::generate();
    let forged = channel::sign_renewal(&agent.id, &thief_csr, &thief, channel_now()).unwrap();
    let res = agent
        .post(
            "/agent/v1/renew",
            json!({ "csr_pem": &thief_csr, "renewal": forged }),
        )
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("renewal was refused"));
    let res = agent
        .post("/agent/v1/renew", json!({ "csr_pem": thief_csr }))
        .await;
    assert_eq!(
        res.status(),
        422,
        "a renewal without the identity signature"
    );

    let audit = app
        .call(&owner, "latest-audit-events", &[("limit", "100")])
        .await
        .text()
        .await
        .unwrap();
    for action in [
        "agent.pqc_activation_requested",
        "agent.pqc_activated",
        "agent.key_rotation_requested",
        "agent.keys_rotated",
        "agent.cert_renewed",
    ] {
        assert!(audit.contains(action), "{action} missing");
    }
}

/// The forwarded-certificate header from an address that is not a listed
/// proxy is ignored, even with the proxy's secret; and a server without the
/// option ignores it always. (The proxy itself is tested with a real nginx
/// in tests/proxy.rs.)
async fn the_proxy_header_is_ignored_from_other_addresses(db: TestDb) {
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "a-proxy-secret-of-at-least-32-characters").unwrap();
    let secret_path = secret.path().to_path_buf();
    let app = TestApp::spawn_with(db, move |c| {
        c.agent_cert_header = Some("x-client-cert".into());
        c.agent_trusted_proxies = vec!["192.0.2.1".parse().unwrap()];
        c.agent_proxy_secret_file = Some(secret_path);
    })
    .await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let agent = Agent::enrol(&app).await;
    let forwarded: String = form_urlencoded::byte_serialize(agent.cert_pem.as_bytes()).collect();
    let res = tls_client(&agent.ca_pem, None)
        .post(format!("{}/agent/v1/token", agent.base))
        .header("x-client-cert", &forwarded)
        .header(
            "x-pilothouse-proxy-secret",
            "a-proxy-secret-of-at-least-32-characters",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Off by default: a server without the option ignores the header too.
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let agent = Agent::enrol(&app).await;
    let res = tls_client(&agent.ca_pem, None)
        .post(format!("{}/agent/v1/token", agent.base))
        .header("x-client-cert", &forwarded)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

/// A key round whose response is lost: the agent, still on its previous
/// certificate, may repeat exactly that round within the handover window and
/// nothing else; once it uses the new certificate, the old one is gone.
async fn a_lost_key_round_response_does_not_lock_the_agent_out(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let owner = app.signed_in("owner@example.com").await;
    let agent = Agent::enrol(&app).await;
    let new_identity = channel::SigningKey::generate();
    let new_kem = channel::KemSecretKey::generate();
    let (csr_pem, key) = csr();
    let signed = channel::sign_registration(
        channel::KeyRegistration {
            agent_id: agent.id.clone(),
            kem_public_key: new_kem.public_key().clone(),
            identity_key: new_identity.verifying_key().clone(),
            tls_cert_fingerprint: Some(control::crypto::sha256_hex(&csr_pem)),
            issued_at: Timestamp::now().0,
        },
        &agent.identity,
        &new_identity,
    )
    .unwrap();
    let body = json!({ "registration": signed, "csr_pem": csr_pem });
    // The first response is "lost"; the agent repeats the same round.
    assert_eq!(
        agent.post("/agent/v1/keys", body.clone()).await.status(),
        200
    );
    let res = agent.post("/agent/v1/keys", body).await;
    assert_eq!(
        res.status(),
        200,
        "the repeated round is accepted on the old certificate"
    );
    let keys: channel::api::KeysResponse = res.json().await.unwrap();
    // Meanwhile no command reaches the old certificate.
    app.call(&owner, "ping-server", &[("id", &agent.id)]).await;
    assert!(agent.poll(0).await.is_empty());
    // Someone holding only the old keys cannot register keys of their own.
    let thief = channel::SigningKey::generate();
    let (thief_csr, _) = csr();
    let stolen = channel::sign_registration(
        channel::KeyRegistration {
            agent_id: agent.id.clone(),
            kem_public_key: channel::KemSecretKey::generate().public_key().clone(),
            identity_key: thief.verifying_key().clone(),
            tls_cert_fingerprint: Some(control::crypto::sha256_hex(&thief_csr)),
            issued_at: Timestamp::now().0,
        },
        &agent.identity,
        &thief,
    )
    .unwrap();
    let res = agent
        .post(
            "/agent/v1/keys",
            json!({ "registration": stolen, "csr_pem": thief_csr }),
        )
        .await;
    assert_eq!(res.status(), 401);
    let res = agent
        .post("/agent/v1/renew", agent.renew_body(&csr().0))
        .await;
    assert_eq!(
        res.status(),
        401,
        "no renewal on a certificate replaced by a rotation"
    );
    // The agent moves to its new certificate; the old one is refused from then on.
    let old = agent.client.clone();
    let mut moved = Agent {
        client: tls_client(
            &agent.ca_pem,
            Some((keys.client_cert_pem.as_deref().unwrap(), &key)),
        ),
        identity: new_identity,
        kem: Some(new_kem),
        ..agent
    };
    moved.refresh_jwt().await;
    let delivered = moved.poll(1).await;
    assert_eq!(
        delivered.len(),
        1,
        "the queued ping arrives on the new keys"
    );
    moved.open(&delivered[0]).unwrap();
    let res = old
        .post(format!("{}/agent/v1/token", moved.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "the previous certificate is retired");
}

async fn a_lost_renewal_response_does_not_lock_the_agent_out(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let mut agent = Agent::enrol(&app).await;
    let old = agent.client.clone();
    assert_eq!(
        agent
            .post("/agent/v1/renew", agent.renew_body(&csr().0))
            .await
            .status(),
        200
    );
    let (csr_pem, key) = csr();
    let res = agent
        .post("/agent/v1/renew", agent.renew_body(&csr_pem))
        .await;
    assert_eq!(
        res.status(),
        200,
        "renewing again on the old certificate works within the handover"
    );
    let renewed: channel::api::RenewResponse = res.json().await.unwrap();
    agent.client = tls_client(&agent.ca_pem, Some((&renewed.client_cert_pem, &key)));
    agent.refresh_jwt().await;
    assert!(agent.poll(0).await.is_empty());
    let res = old
        .post(format!("{}/agent/v1/token", agent.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        401,
        "once the new certificate is used the old one is refused"
    );
}

control::both_backends!(
    a_lost_key_round_response_does_not_lock_the_agent_out,
    a_lost_renewal_response_does_not_lock_the_agent_out,
    the_proxy_header_is_ignored_from_other_addresses,
    activate_pqc_and_rotate_keys,
    enrol_poll_ping_and_revoke,
    the_gateway_refuses_what_it_should
);
