//! Fleet simulator: many agents in one process, speaking the real agent
//! protocol (TLS 1.3 with client certificates, JWTs, sealed commands and
//! results from `channel`, long-polls, metrics) to a real `pilothouse serve`
//! child process. Prints figures; asserts nothing about time.
//!
//! Run: `cargo bench -p server --bench fleet -- [AGENTS]` (default 1000).
//! For 10,000 agents the process needs about 2 × AGENTS file descriptors
//! (`ulimit -n`).
//!
//! Measures: the server's RSS with every agent holding a long-poll; the time
//! from queueing a command (the dashboard's request, whose response follows
//! the commit) to its receipt at the agent; and registration-to-first-command.
//!
//! With `ops` (`cargo bench -p server --bench fleet -- 1000 ops`), also
//! operations: from a Member's approve request to the first output chunk
//! accepted by the server (each simulated agent posts a chunk as soon as it
//! opens an operation, then its result), and a fan-out of one low-risk
//! operation to every agent at once, timed from the approve request until
//! every result was accepted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde_json::json;
use tokio::sync::Semaphore;

const PASSWORD: &str = "correct horse battery staple";

struct Server {
    child: Child,
    base: String,
    agent_url: String,
    data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> (Server, String) {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pilothouse"))
        .args([
            "serve",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info,sqlx=warn")
        .env("LEPTOS_SITE_ROOT", "target/site")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start pilothouse serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut base, mut agent_url, mut code) = (None, None, None);
    while base.is_none() || agent_url.is_none() || code.is_none() {
        let line = lines.next().expect("server output").unwrap();
        let clean: String = strip_ansi(&line);
        if let Some(i) = clean.find("agent gateway listening on ") {
            agent_url = Some(clean[i + 27..].trim().to_string());
        } else if let Some(i) = clean.find("listening on http://") {
            base = Some(clean[i + 13..].trim().to_string());
        }
        if let Some(i) = clean.find("setup code: ") {
            code = Some(clean[i + 12..i + 44].to_string());
        }
    }
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (
        Server {
            child,
            base: base.unwrap(),
            agent_url: agent_url.unwrap(),
            data,
        },
        code.unwrap(),
    )
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

/// CPU time (user + system) the process has used, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    field(11) + field(12)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[path = "../tests/helpers/agent_tls.rs"]
mod agent_tls;

fn tls_client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(agent_tls::client_config(ca_pem, identity))
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

struct SimAgent {
    id: String,
    client: reqwest::Client,
    jwt: String,
    kem: channel::KemSecretKey,
    identity: channel::SigningKey,
    server_verifying: channel::VerifyingKey,
    control_kem: channel::KemPublicKey,
    replay: channel::ReplayGuard,
}

async fn enrol(base: &str, ca_pem: &str, anonymous: &reqwest::Client, token: &str) -> SimAgent {
    let identity = channel::SigningKey::generate();
    let kem = channel::KemSecretKey::generate();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let body = json!({
        "token": token, "csr_pem": csr, "identity_key": identity.verifying_key(),
        "kem_key": kem.public_key(), "hostname": "sim", "agent_version": "sim",
    });
    let res = anonymous
        .post(format!("{base}/agent/v1/enrol"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success(),
        "enrol: {}",
        res.text().await.unwrap()
    );
    let e: channel::api::EnrolResponse = res.json().await.unwrap();
    let client = tls_client(ca_pem, Some((&e.client_cert_pem, &key.serialize_pem())));
    let jwt: channel::api::TokenResponse = client
        .post(format!("{base}/agent/v1/token"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    SimAgent {
        id: e.agent_id,
        client,
        jwt: jwt.token,
        kem,
        identity,
        server_verifying: e.command_verifying_key,
        control_kem: e.control_kem_key,
        replay: channel::ReplayGuard::new(),
    }
}

type Receipts = Arc<Mutex<HashMap<String, Instant>>>;

/// Per operation id: when its first output chunk was accepted, and how many
/// results were accepted (with the time of the last).
#[derive(Default)]
struct OpMarks {
    first_chunk: HashMap<String, Instant>,
    results: HashMap<String, (usize, Instant)>,
}

type Ops = Arc<Mutex<OpMarks>>;

impl SimAgent {
    /// One poll; opens, answers and records every command received.
    async fn poll_once(
        &mut self,
        base: &str,
        wait: u64,
        receipts: &Receipts,
        ops: &Ops,
    ) -> Result<usize, String> {
        let res = self
            .client
            .post(format!("{base}/agent/v1/poll"))
            .bearer_auth(&self.jwt)
            .json(&json!({ "wait_secs": wait }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("poll: {}", res.status()));
        }
        let body: channel::api::PollResponse = res.json().await.map_err(|e| e.to_string())?;
        let received = Instant::now();
        let n = body.commands.len();
        for delivered in body.commands {
            let channel::api::DeliveredCommand::Sealed { envelope } = delivered else {
                continue;
            };
            let opened = match channel::open_command(
                &envelope,
                &self.id,
                &self.kem,
                &self.server_verifying,
                &self.replay,
                now_ms(),
            ) {
                Ok(o) => o,
                Err(_) => continue,
            };
            receipts
                .lock()
                .unwrap()
                .entry(opened.header().command_id.clone())
                .or_insert(received);
            let operation = opened
                .header()
                .operation
                .as_ref()
                .map(|o| o.approval.operation_id.clone());
            if let Some(op) = &operation {
                let chunk = channel::ChunkHeader {
                    agent_id: self.id.clone(),
                    command_id: opened.header().command_id.clone(),
                    sequence: opened.header().sequence,
                    index: 0,
                    at: now_ms(),
                };
                let sealed = channel::seal_chunk(
                    &chunk,
                    b"started\n",
                    &self.control_kem,
                    &self.identity,
                    &mut channel::os_rng(),
                )
                .unwrap();
                let posted = self
                    .client
                    .post(format!("{base}/agent/v1/output"))
                    .bearer_auth(&self.jwt)
                    .json(&json!({ "chunk": sealed }))
                    .send()
                    .await;
                if posted.is_ok_and(|r| r.status().is_success()) {
                    ops.lock()
                        .unwrap()
                        .first_chunk
                        .entry(op.clone())
                        .or_insert_with(Instant::now);
                }
            }
            let header = channel::ResultHeader {
                agent_id: self.id.clone(),
                command_id: opened.header().command_id.clone(),
                sequence: opened.header().sequence,
                finished_at: now_ms(),
                status: channel::ResultStatus::Succeeded,
            };
            let sealed = channel::seal_result(
                &header,
                b"pong",
                &self.control_kem,
                &self.identity,
                &mut channel::os_rng(),
            )
            .unwrap();
            let posted = self
                .client
                .post(format!("{base}/agent/v1/result"))
                .bearer_auth(&self.jwt)
                .json(&json!({ "result": sealed }))
                .send()
                .await;
            if let (Some(op), true) = (operation, posted.is_ok_and(|r| r.status().is_success())) {
                let mut marks = ops.lock().unwrap();
                let entry = marks.results.entry(op).or_insert((0, Instant::now()));
                entry.0 += 1;
                entry.1 = Instant::now();
            }
            self.replay.commit(&opened);
        }
        Ok(n)
    }

    /// Declares what a simulated agent runs: status reports of one unit.
    async fn send_capabilities(&self, base: &str) {
        let res = self
            .client
            .post(format!("{base}/agent/v1/capabilities"))
            .bearer_auth(&self.jwt)
            .json(&json!({ "capabilities": {
                "kinds": ["service_status", "disk_usage", "run_plan"], "units": ["nginx.service"],
                "watched_units": [], "backup_profiles": [], "package_tool": null,
                "file_access": false, "production": false,
            }}))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "capabilities: {}", res.status());
    }

    async fn send_metrics(&self, base: &str) {
        let sample = json!({ "samples": [{
            "at": now_ms(), "cpu_pct": 12.5, "mem_used_bytes": 1u64 << 30, "mem_total_bytes": 4u64 << 30,
            "disks": [{ "mount": "/", "used_bytes": 10u64 << 30, "total_bytes": 50u64 << 30 }],
            "net_rx_bytes_per_sec": 2048.0, "net_tx_bytes_per_sec": 1024.0, "load": [0.3, 0.2, 0.1]
        }]});
        let _ = self
            .client
            .post(format!("{base}/agent/v1/metrics"))
            .bearer_auth(&self.jwt)
            .json(&sample)
            .send()
            .await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn owner_session(base: &str, code: &str) -> reqwest::Client {
    let c = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = c
        .post(format!("{base}/api/complete-setup"))
        .form(&[
            ("code", code),
            ("org_name", "Fleet"),
            ("email", "owner@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success() || res.status().is_redirection(),
        "setup: {}",
        res.status()
    );
    c
}

async fn ping(owner: &reqwest::Client, base: &str, agent: &str) -> String {
    owner
        .post(format!("{base}/api/ping-server"))
        .form(&[("id", agent)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn main() {
    let agents: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let ops = std::env::args().any(|a| a == "ops");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(agents, ops));
}

async fn run(n: usize, with_ops: bool) {
    let (server, code) = start_server();
    let pid = server.child.id();
    let base = server.agent_url.clone();
    println!("fleet simulator: {n} agents against pilothouse serve (pid {pid}), gateway {base}");
    let owner = owner_session(&server.base, &code).await;
    let ca_pem = std::fs::read_to_string(server.data.path().join("agent-ca.crt")).unwrap();
    let ca_pin = {
        use rustls::pki_types::pem::PemObject as _;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
        control::crypto::sha256_hex(&der)
    };
    let store =
        control::store::Store::connect(&control::store::Store::sqlite_url(server.data.path()))
            .await
            .unwrap();
    let operator = control::access::Operator::command_line(store.clone());
    for email in ["member@example.com", "member2@example.com"] {
        control::accounts::add_user_cli(
            &operator,
            "Fleet",
            email,
            control::Role::Member,
            secrecy::SecretString::from(PASSWORD),
            control::Timestamp::now(),
        )
        .await
        .unwrap();
    }
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        let t = control::agents::create_registration_token_cli(
            &operator,
            "Fleet",
            &ca_pin,
            3600,
            control::Timestamp::now(),
        )
        .await
        .unwrap();
        tokens.push(t.token.expose_secret().to_string());
    }
    store.close().await;
    let anonymous = tls_client(&ca_pem, None);
    let receipts: Receipts = Arc::new(Mutex::new(HashMap::new()));
    let ops: Ops = Arc::default();

    // Registration to first command, one agent at a time on an idle server.
    let mut first_cmd = Vec::new();
    let mut enrolled = Vec::with_capacity(n);
    for token in tokens.drain(..10.min(n)) {
        let t0 = Instant::now();
        let mut a = enrol(&base, &ca_pem, &anonymous, &token).await;
        let command = ping(&owner, &server.base, &a.id).await;
        while !receipts.lock().unwrap().contains_key(&command) {
            a.poll_once(&base, 5, &receipts, &ops).await.unwrap();
        }
        first_cmd.push(t0.elapsed().as_secs_f64() * 1000.0);
        enrolled.push(a);
    }
    first_cmd.sort_by(f64::total_cmp);
    println!(
        "registration to first command (enrol + token + queue + poll), n={}: median {:.1} ms, max {:.1} ms",
        first_cmd.len(),
        percentile(&first_cmd, 0.5),
        first_cmd.last().unwrap()
    );

    // Enrol the rest, 64 at a time.
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(64));
    let mut handles = Vec::new();
    for token in tokens {
        let (base, ca_pem, anonymous, limit) = (
            base.clone(),
            ca_pem.clone(),
            anonymous.clone(),
            limit.clone(),
        );
        handles.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            let a = enrol(&base, &ca_pem, &anonymous, &token).await;
            if with_ops {
                a.send_capabilities(&base).await;
            }
            a
        }));
    }
    for h in handles {
        enrolled.push(h.await.unwrap());
    }
    println!(
        "enrolled {} agents in {:.1} s",
        enrolled.len(),
        started.elapsed().as_secs_f64()
    );

    // Every agent holds a long-poll; metrics every 60 s, spread over the minute.
    let polling = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let ids: Vec<String> = enrolled.iter().map(|a| a.id.clone()).collect();
    if with_ops {
        for a in &enrolled[..10.min(enrolled.len())] {
            a.send_capabilities(&base).await;
        }
    }
    for (i, mut a) in enrolled.into_iter().enumerate() {
        let (base, receipts, polling, errors, ops) = (
            base.clone(),
            receipts.clone(),
            polling.clone(),
            errors.clone(),
            ops.clone(),
        );
        tokio::spawn(async move {
            let mut next_metrics =
                Instant::now() + Duration::from_millis((i as u64 * 60_000) / n.max(1) as u64);
            polling.fetch_add(1, Ordering::Relaxed);
            loop {
                if Instant::now() >= next_metrics {
                    a.send_metrics(&base).await;
                    next_metrics += Duration::from_secs(60);
                }
                if a.poll_once(&base, 25, &receipts, &ops).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss = rss_kib(pid);
    println!(
        "{} agents polling, {} poll errors so far; server RSS {:.1} MiB",
        polling.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        rss as f64 / 1024.0
    );
    // The idle fleet: every agent holding its long-poll, metrics every 60 s.
    let idle_secs = 60;
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let used = (cpu_ticks(pid) - c0) as f64 / 100.0;
    println!(
        "server CPU with {} idle agents over {:.0} s: {:.1} s, {:.1}% of one core; poll errors so far {}",
        n,
        t0.elapsed().as_secs_f64(),
        used,
        100.0 * used / t0.elapsed().as_secs_f64(),
        errors.load(Ordering::Relaxed)
    );

    // Command latency at this load: queue a ping for a random agent, wait for its receipt.
    let mut latencies = Vec::new();
    let mut commit = Vec::new();
    // From the dashboard's response (sent after the commit and the wake-up) to
    // the agent's receipt; negative when the agent had it first. The commit
    // lies between the request and the response, so commit-to-receipt lies
    // between this and the request-to-receipt figure.
    let mut after_response = Vec::new();
    for k in 0..200usize {
        let agent = &ids[(k * 7919) % ids.len()];
        let t0 = Instant::now();
        let command = ping(&owner, &server.base, agent).await;
        let responded = Instant::now();
        commit.push(responded.duration_since(t0).as_secs_f64() * 1000.0);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(at) = receipts.lock().unwrap().get(&command) {
                latencies.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                after_response.push(if *at >= responded {
                    ms(at.duration_since(responded))
                } else {
                    -ms(responded.duration_since(*at))
                });
                break;
            }
            if Instant::now() > deadline {
                println!("command {command} not received within 30 s");
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    latencies.sort_by(f64::total_cmp);
    commit.sort_by(f64::total_cmp);
    after_response.sort_by(f64::total_cmp);
    println!(
        "queue request (auth + commit + wake), n={}: p50 {:.1} ms, p99 {:.1} ms",
        commit.len(),
        percentile(&commit, 0.5),
        percentile(&commit, 0.99)
    );
    println!(
        "commands received by their agent: {} of {}",
        latencies.len(),
        commit.len()
    );
    println!(
        "queue request to receipt at the agent, n={}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "queue response to receipt at the agent, n={}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        after_response.len(),
        percentile(&after_response, 0.5),
        percentile(&after_response, 0.99),
        after_response.last().copied().unwrap_or(f64::NAN)
    );
    if with_ops {
        operations(&server.base, pid, &ids, &ops).await;
    }
    println!(
        "server RSS after the run {:.1} MiB; poll errors {}",
        rss_kib(pid) as f64 / 1024.0,
        errors.load(Ordering::Relaxed)
    );
}

async fn signed_in(base: &str, email: &str) -> reqwest::Client {
    let c = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = c
        .post(format!("{base}/api/login"))
        .form(&[("email", email), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success() || res.status().is_redirection());
    c
}

async fn call(
    client: &reqwest::Client,
    base: &str,
    endpoint: &str,
    form: &[(&str, &str)],
) -> serde_json::Value {
    let res = client
        .post(format!("{base}/api/{endpoint}"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    assert!(status.is_success(), "{endpoint}: {status} {body}");
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

/// Approve-to-first-chunk latency, then a fan-out to every agent.
async fn operations(base: &str, server_pid: u32, ids: &[String], ops: &Ops) {
    let proposer = signed_in(base, "member2@example.com").await;
    let approver = signed_in(base, "member@example.com").await;
    let propose =
        |targets: String, kind: &'static str, args: &'static str, concurrency: &'static str| {
            let proposer = proposer.clone();
            async move {
                call(
                    &proposer,
                    base,
                    "propose-operation",
                    &[
                        ("targets", &targets),
                        ("kind", kind),
                        ("args", args),
                        ("reason", "benchmark"),
                        ("concurrency", concurrency),
                    ],
                )
                .await
                .as_str()
                .unwrap()
                .to_string()
            }
        };
    let mut latencies = Vec::new();
    for k in 0..200usize {
        let agent = ids[(k * 7919) % ids.len()].clone();
        let id = propose(agent, "service_status", r#"{"unit":"nginx.service"}"#, "1").await;
        let t0 = Instant::now();
        call(
            &approver,
            base,
            "approve-operation",
            &[("id", &id), ("reason", "ok")],
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(at) = ops.lock().unwrap().first_chunk.get(&id) {
                latencies.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                break;
            }
            if Instant::now() > deadline {
                println!("operation {id}: no output chunk within 30 s");
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "approve request to the first output chunk at the server ({} agents connected), n={}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ids.len(),
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );

    let id = propose(ids.join(","), "disk_usage", "{}", "all").await;
    let (server_cpu, own_cpu) = (cpu_ticks(server_pid), cpu_ticks(std::process::id()));
    let t0 = Instant::now();
    call(
        &approver,
        base,
        "approve-operation",
        &[("id", &id), ("reason", "ok")],
    )
    .await;
    let approved = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        if let Some((n, at)) = ops.lock().unwrap().results.get(&id) {
            if *n >= ids.len() {
                break Some(at.duration_since(t0));
            }
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    // CPU seconds spent meanwhile by the server and by the simulator (its
    // 1,000 agents open, seal and sign on the same two cores).
    let server_cpu = (cpu_ticks(server_pid) - server_cpu) as f64 / 100.0;
    let own_cpu = (cpu_ticks(std::process::id()) - own_cpu) as f64 / 100.0;
    match done {
        Some(d) => println!(
            "fan-out of one low-risk operation to {} agents at once: approve request answered in {:.0} ms, every result in after {:.0} ms; CPU meanwhile: server {:.2} s, simulator {:.2} s",
            ids.len(),
            approved.as_secs_f64() * 1000.0,
            d.as_secs_f64() * 1000.0,
            server_cpu,
            own_cpu
        ),
        None => println!(
            "fan-out to {} agents: only {} results within 120 s",
            ids.len(),
            ops.lock().unwrap().results.get(&id).map_or(0, |r| r.0)
        ),
    }
}
