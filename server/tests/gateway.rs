//! The agent gateway over real TLS: enrolment with a one-time token, mutual
//! TLS with certificates from the agent CA, JWTs bound to agent and
//! certificate, the long-poll woken by a committed command, results, and
//! revocation. Every refusal is tried.

// Test bodies are shared by both backends through a macro, so they are not
// `#[test]` functions themselves; a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod helpers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use control::testing::TestDb;
use control::{Role, Timestamp};
use helpers::TestApp;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

struct Agent {
    id: String,
    client: reqwest::Client,
    base: String,
    jwt: String,
}

fn tls_client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .unwrap()
}

fn enrol_body(token: &str) -> (Value, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let body = json!({
        "token": token,
        "csr_pem": csr,
        "identity_key": "ed25519-public-key",
        "kem_key": null,
        "kem_key_id": null,
        "hostname": "web-1",
        "agent_version": "0.1.0",
    });
    (body, key.serialize_pem())
}

async fn token_for(app: &TestApp) -> String {
    control::agents::create_registration_token_cli(
        &app.db.store,
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
    async fn enrol(app: &TestApp) -> Agent {
        let ca_pem = std::fs::read_to_string(app.dir.path().join("agent-ca.crt")).unwrap();
        let base = format!("https://127.0.0.1:{}", app.agent_addr.port());
        let anonymous = tls_client(&ca_pem, None);
        let (body, key) = enrol_body(&token_for(app).await);
        let res = anonymous
            .post(format!("{base}/agent/v1/enrol"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let enrolled: Value = res.json().await.unwrap();
        let cert = enrolled["client_cert_pem"].as_str().unwrap();
        let client = tls_client(&ca_pem, Some((cert, &key)));
        let jwt: Value = client
            .post(format!("{base}/agent/v1/token"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Agent {
            id: enrolled["agent_id"].as_str().unwrap().to_string(),
            client,
            base,
            jwt: jwt["token"].as_str().unwrap().to_string(),
        }
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
}

async fn enrol_poll_ping_and_revoke(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.add_user("Acme", "owner@example.com", Role::Owner).await;
    let owner = app.signed_in("owner@example.com").await;
    let agent = Agent::enrol(&app).await;

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
                .json::<Value>()
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
        .unwrap();
    assert_eq!(delivered["commands"][0]["id"], command.as_str());
    assert_eq!(delivered["commands"][0]["kind"], "ping");

    let res = agent
        .post(
            "/agent/v1/result",
            json!({ "command_id": command, "succeeded": true, "output": "pong" }),
        )
        .await;
    assert_eq!(res.status(), 204);
    let state: Value = app
        .call(&owner, "command-state", &[("id", &command)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(state, json!(["succeeded", "pong"]));

    let view: Value = app
        .call(&owner, "server-detail", &[("id", &agent.id)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["online"], true);
    assert_eq!(
        view["tls_group"], "X25519MLKEM768",
        "post-quantum hybrid TLS was negotiated"
    );
    assert_eq!(view["pqc"], "ClassicalFallback");

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

    // Revocation refuses the certificate at once.
    assert_eq!(
        app.call(&owner, "revoke-server", &[("id", &agent.id)])
            .await
            .status(),
        200
    );
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
    let res = a.post("/agent/v1/result", json!({ "command_id": "cmd_000000000000000000000000", "succeeded": true, "output": "" })).await;
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
            .json(
                &json!({ "command_id": "x", "succeeded": true, "output": "a".repeat(200 * 1024) }),
            ),
    )
    .await;
    // Enrolment: malformed token, reused token.
    let (body, _) = enrol_body("pht1_nope");
    let res = anonymous
        .post(url("/agent/v1/enrol"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let token = token_for(&app).await;
    let (body, _) = enrol_body(&token);
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
    let (mut body, _) = enrol_body(&token_for(&app).await);
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

control::both_backends!(
    enrol_poll_ping_and_revoke,
    the_gateway_refuses_what_it_should
);
