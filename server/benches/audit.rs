//! The audit log at scale, against a real `pilothouse serve` child process,
//! on SQLite and (with `PILOTHOUSE_BENCH_PG_URL=postgres://HOST:PORT`, where a
//! fresh database is made and dropped) on PostgreSQL. Prints figures; asserts
//! nothing about time.
//!
//! Run: `cargo bench -p server --bench audit -- [EVENTS]` (default 1,000,000).
//!
//! - **viewer**: an organisation holding EVENTS events (written straight
//!   into the database with their real chain hashes, a mix of actions,
//!   actors, servers and operations); the Audit page (`GET /audit?...`,
//!   rendered on the server, as a browser without JavaScript gets it) is
//!   requested 40 times per kind of filter after 3 warm-ups: p50, p95, max.
//!   The first request also verifies the chain up to the head (once; later
//!   pages verify only what is new), reported on its own.
//! - **export**: `GET /audit/export?format=jsonl` of the whole log: events/s.
//! - **forwarding**: in a second organisation, events appended at 1,000/s
//!   (ten per 10 ms, each batch its own transaction, from this process) for
//!   20 s, forwarded by the server to an HTTPS webhook in this process; the
//!   lag from each event's time to its arrival: p50, p95, p99, max.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control::audit::{AuditAction, AuditActor, Event};
use control::audit_export::chain_hash;
use control::store::Store;
use control::{OrgId, Timestamp};

const PASSWORD: &str = "correct horse battery staple";
const OWNER: &str = "owner@example.com";
const LAG_OWNER: &str = "lag@example.com";

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pilothouse(data: &str, db: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pilothouse"));
    c.env("PILOTHOUSE_DATA_DIR", data)
        .env("PILOTHOUSE_DATABASE_URL", db)
        .env("RUST_LOG", "warn");
    c
}

fn add_user(data: &str, db: &str, org: &str, email: &str) {
    let mut child = pilothouse(data, db)
        .args([
            "admin", "add-user", "--org", org, "--email", email, "--role", "owner",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success(), "admin add-user failed");
}

fn start(data: &str, db: &str) -> Server {
    let mut child = pilothouse(data, db)
        .args([
            "serve",
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
    let base = loop {
        let line = lines.next().expect("server output").unwrap();
        let clean: String = line
            .split('\u{1b}')
            .map(|p| p.split_once('m').map_or(p, |x| x.1))
            .collect();
        if let Some(i) = clean.find("listening on http://") {
            break clean[i + 13..].trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server { child, base }
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

async fn org_of(store: &Store, email: &str) -> OrgId {
    OrgId(
        sqlx::query_scalar(
            "SELECT m.org_id FROM memberships m JOIN users u ON u.id = m.user_id WHERE u.email = $1",
        )
        .bind(email)
        .fetch_one(store.pool())
        .await
        .unwrap(),
    )
}

fn agent(i: i64) -> String {
    format!("agt_{:024x}", i % 1000)
}

fn operation(i: i64) -> String {
    format!("op_{:024x}", i % 50_000)
}

/// Event `i`'s command id, of the form the control plane gives one: `cmd_`
/// and 24 hex digits of 96 random bits (here a fixed mix of `i`, so a run
/// can name one). Numbers padded with zeros would not do: the trigrams of
/// `cmd_000000000000000000000008` are in 7 % of these events, against a
/// handful for a real id.
fn command(i: i64) -> String {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let a = mix((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let b = mix(a ^ 0x5851_f42d_4c95_7f2d);
    format!("cmd_{a:016x}{:08x}", b >> 32)
}

/// Writes events up to `total` into `org`'s chain, continuing from its head,
/// 1,000 rows per statement.
async fn fill(store: &Store, org: OrgId, total: i64) -> i64 {
    let (mut seq, head_at, mut prev): (i64, i64, String) = {
        let row: Option<(i64, i64, String)> = sqlx::query_as(
            "SELECT seq, at, hash FROM audit_events WHERE org_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(org.0)
        .fetch_optional(store.pool())
        .await
        .unwrap();
        row.unwrap_or((0, Timestamp::now().0, control::audit::GENESIS.to_string()))
    };
    // Ten milliseconds apart from the head on (times never go back along a
    // chain), so the newest are a few hours ahead of the clock.
    let start = head_at - seq * 10;
    const ROWS: i64 = 1000;
    while seq < total {
        let n = ROWS.min(total - seq);
        let mut sql = String::from(
            "INSERT INTO audit_events (org_id, seq, at, actor_user_id, actor, ip, user_agent, action, target, details, prev_hash, hash) VALUES ",
        );
        let mut rows = Vec::with_capacity(n as usize);
        for k in 0..n {
            let s = seq + 1 + k;
            let at = start + (s - 1) * 10;
            let (actor, action, target, details) = match s % 40 {
                0 | 1 => (
                    format!("user{}@example.com", s % 20),
                    "user.login",
                    format!("user:{}", s % 20),
                    "{}".to_string(),
                ),
                2 => (
                    format!("user{}@example.com", s % 20),
                    "member.role_changed",
                    format!("user:{}", s % 97),
                    r#"{"from":"member","to":"admin"}"#.to_string(),
                ),
                3 | 4 => (
                    format!("agent {}", agent(s)),
                    "agent.keys_rotated",
                    format!("agent:{}", agent(s)),
                    r#"{"kem_key_id":"k_0123456789abcdef"}"#.to_string(),
                ),
                5 => (
                    format!("user{}@example.com", s % 20),
                    "operation.approved",
                    format!("operation:{}", operation(s)),
                    r#"{"reason":"looks right"}"#.to_string(),
                ),
                6 | 7 => (
                    "AI Pilot".to_string(),
                    "operation.proposed",
                    format!("operation:{}", operation(s)),
                    r#"{"kind":"restart_service","risk":"medium","evidence":"nginx.service failed"}"#
                        .to_string(),
                ),
                _ => (
                    format!("agent {}", agent(s)),
                    "command.finished",
                    format!("agent:{}", agent(s)),
                    format!(
                        r#"{{"command":"{}","kind":"disk_usage","state":"succeeded"}}"#,
                        command(s)
                    ),
                ),
            };
            let hash = chain_hash(
                &prev,
                org.0,
                s,
                at,
                None,
                &actor,
                "192.0.2.7",
                "bench",
                action,
                &target,
                &details,
            );
            rows.push((
                s,
                at,
                actor,
                action,
                target,
                details,
                prev.clone(),
                hash.clone(),
            ));
            prev = hash;
        }
        for i in 0..rows.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            let p: Vec<String> = (1..=9).map(|k| format!("${}", i * 9 + k)).collect();
            sql.push_str(&format!(
                "({}, {}, {}, NULL, {}, '192.0.2.7', 'bench', {}, {}, {}, {}, {})",
                p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]
            ));
        }
        let mut q = sqlx::query(&sql);
        for (s, at, actor, action, target, details, prev_hash, hash) in &rows {
            q = q
                .bind(org.0)
                .bind(*s)
                .bind(*at)
                .bind(actor.as_str())
                .bind(*action)
                .bind(target.as_str())
                .bind(details.as_str())
                .bind(prev_hash.as_str())
                .bind(hash.as_str());
        }
        q.execute(store.pool()).await.unwrap();
        seq += n;
    }
    seq
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

async fn viewer(base: &str, store: &Store, org: OrgId, head: i64) {
    let client = signed_in(base, OWNER).await;
    let get = |q: String| {
        let client = client.clone();
        let url = format!("{base}/audit{q}");
        async move {
            let t = Instant::now();
            let res = client.get(&url).send().await.unwrap();
            let status = res.status();
            let body = res.text().await.unwrap();
            assert!(status.is_success(), "{url}: {status}");
            assert!(
                body.contains("data-testid=\"audit-row\"")
                    || body.contains("No events")
                    || body.contains("data-testid=\"audit-partial\""),
                "{url}: no rows"
            );
            (t.elapsed().as_secs_f64() * 1000.0, body)
        }
    };
    let (first, _) = get(String::new()).await;
    println!("  first page, verifying the chain of {head} events once: {first:.0} ms");
    let first_at: i64 =
        sqlx::query_scalar("SELECT at FROM audit_events WHERE org_id = $1 AND seq = 1")
            .bind(org.0)
            .fetch_one(store.pool())
            .await
            .unwrap();
    let mid_at: i64 =
        sqlx::query_scalar("SELECT at FROM audit_events WHERE org_id = $1 AND seq = $2")
            .bind(org.0)
            .bind(head / 2)
            .fetch_one(store.pool())
            .await
            .unwrap();
    let iso = |ms: i64| {
        let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        )
    };
    let cases: Vec<(&str, String)> = vec![
        ("newest page, no filter", String::new()),
        (
            "page at the middle (before=)",
            format!("?before={}", head / 2),
        ),
        ("group: keys (5%)", "?group=keys".into()),
        ("group: approvals (2.5%)", "?group=approvals".into()),
        ("server (0.08%)", format!("?server={}", agent(123))),
        (
            "actor: a person (0.4%)",
            "?actor=user7%40example.com".into(),
        ),
        (
            "operation (a few events)",
            format!("?operation={}", operation(4245)),
        ),
        (
            "time range: 1 h in the middle",
            format!("?since={}&until={}", iso(mid_at), iso(mid_at + 3_600_000)),
        ),
        ("text: common (disk_usage)", "?text=disk_usage".into()),
        (
            "group + server + text",
            format!("?group=operations&server={}&text=succeeded", agent(321)),
        ),
        ("text: one event (rare)", format!("?text={}", command(8))),
        ("text: a person (0.4%)", "?text=user7%40example.com".into()),
        (
            "time range: 1 h at the start",
            format!(
                "?since={}&until={}",
                iso(first_at),
                iso(first_at + 3_600_000)
            ),
        ),
        ("group: operations (88%)", "?group=operations".into()),
    ];
    for (name, q) in cases {
        for _ in 0..3 {
            get(q.clone()).await;
        }
        let mut times = Vec::new();
        let n = 40;
        for _ in 0..n {
            times.push(get(q.clone()).await.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "  {name:<34} n={n}  p50 {:7.1} ms  p95 {:7.1} ms  max {:7.1} ms",
            quantile(&times, 0.5),
            quantile(&times, 0.95),
            times[times.len() - 1]
        );
    }
    // Where a page stops searching to answer in time, the rare text is
    // followed from page to page ("Search older events") until it shows.
    let rare = format!("?text={}", command(8));
    let started = Instant::now();
    let mut q = rare.clone();
    let mut pages = 0;
    loop {
        pages += 1;
        let (_, body) = get(q.clone()).await;
        if body.contains("data-testid=\"audit-row\"") {
            break;
        }
        let Some(i) = body.rfind("before=") else {
            panic!("{q}: neither the event nor a next page");
        };
        let before: String = body[i + 7..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        q = format!("{rare}&before={before}");
    }
    println!(
        "  text: one event, followed to it     {pages} page(s), {:.0} ms in all",
        started.elapsed().as_secs_f64() * 1000.0
    );
}

async fn export(base: &str) {
    let client = signed_in(base, OWNER).await;
    let t = Instant::now();
    let mut res = client
        .get(format!("{base}/audit/export?format=jsonl"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let (mut bytes, mut lines) = (0usize, 0usize);
    while let Some(chunk) = res.chunk().await.unwrap() {
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "  export (JSON Lines over HTTP): {lines} events, {:.0} MiB in {secs:.2} s: {:.0} events/s, {:.1} MiB/s",
        bytes as f64 / 1048576.0,
        lines as f64 / secs,
        bytes as f64 / 1048576.0 / secs
    );
}

/// The webhook receiver: records each event's lag on arrival.
async fn receiver(lags: Arc<Mutex<Vec<i64>>>) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::pem::PemObject as _;
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let lags = lags.clone();
            async move {
                let now = Timestamp::now().0;
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let mut lags = lags.lock().unwrap();
                for e in v["events"].as_array().unwrap() {
                    if e["action"] == "command.finished" {
                        lags.push(now - e["at"].as_i64().unwrap());
                    }
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(
                    hyper_util::rt::TokioIo::new(tls),
                    hyper_util::service::TowerToHyperService::new(app),
                )
                .await;
            });
        }
    });
    (format!("https://localhost:{port}/hook"), ca_pem)
}

async fn forwarding(base: &str, store: &Store) {
    let lags = Arc::new(Mutex::new(Vec::new()));
    let (url, ca) = receiver(lags.clone()).await;
    let client = signed_in(base, LAG_OWNER).await;
    let res = client
        .post(format!("{base}/api/add-audit-destination"))
        .form(&[
            ("kind", "webhook"),
            ("name", "siem"),
            ("address", url.as_str()),
            ("secret", "a webhook key for the benchmark"),
            ("ca_pem", ca.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success(),
        "add destination: {}",
        res.status()
    );
    let org = org_of(store, LAG_OWNER).await;
    let actor = AuditActor::cli();
    let seconds = 20;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sent = 0usize;
    for batch in 0..(seconds * 100) {
        tick.tick().await;
        let mut tx = store.begin().await.unwrap();
        tx.lock_org(org).await.unwrap();
        for k in 0..10 {
            let n = batch * 10 + k;
            control::audit::append(
                &mut tx,
                &actor,
                Event::new(
                    org,
                    AuditAction::CommandFinished,
                    format!("agent:{}", agent(n)),
                    serde_json::json!({ "command": command(n), "kind": "disk_usage", "state": "succeeded" }),
                ),
                Timestamp::now(),
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        sent += 10;
    }
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    for _ in 0..300 {
        if lags.lock().unwrap().len() >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut l: Vec<f64> = lags.lock().unwrap().iter().map(|v| *v as f64).collect();
    l.sort_by(f64::total_cmp);
    println!(
        "  forwarding to an HTTPS webhook, {sent} events appended at {rate:.0}/s: received {}; lag p50 {:.0} ms  p95 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        l.len(),
        quantile(&l, 0.5),
        quantile(&l, 0.95),
        quantile(&l, 0.99),
        l[l.len() - 1]
    );
}

async fn run(backend: &str, db: String, events: i64) {
    let data = tempfile::tempdir().unwrap();
    let data_s = data.path().to_str().unwrap().to_string();
    let db = if db.is_empty() {
        Store::sqlite_url(data.path())
    } else {
        db
    };
    println!("{backend}:");
    add_user(&data_s, &db, "Acme", OWNER);
    add_user(&data_s, &db, "Lagco", LAG_OWNER);
    let store = Store::connect(&db).await.unwrap();
    let org = org_of(&store, OWNER).await;
    let t = Instant::now();
    let head = fill(&store, org, events).await;
    println!(
        "  wrote {head} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if store.backend() == control::store::Backend::Postgres {
        // Statistics for the planner, as autovacuum gathers them after a bulk
        // load: without any, PostgreSQL plans a range of a 1,000,000-row
        // table as a bitmap scan and a sort (hundreds of ms a page). Events
        // that arrive over months are analysed as they grow.
        let t = Instant::now();
        sqlx::query("ANALYZE audit_events")
            .execute(store.pool())
            .await
            .unwrap();
        println!(
            "  ANALYZE audit_events in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let server = start(&data_s, &db);
    viewer(&server.base, &store, org, head).await;
    export(&server.base).await;
    forwarding(&server.base, &store).await;
    drop(server);
    store.close().await;
}

#[tokio::main]
async fn main() {
    let events: i64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    sqlx::any::install_default_drivers();
    run("SQLite", String::new(), events).await;
    if let Ok(base) = std::env::var("PILOTHOUSE_BENCH_PG_URL") {
        let name = format!("ph_bench_{}", std::process::id());
        let admin = format!("{}/postgres", base.trim_end_matches('/'));
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
            .await
            .unwrap();
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap();
        run(
            "PostgreSQL",
            format!("{}/{name}", base.trim_end_matches('/')),
            events,
        )
        .await;
        sqlx::Executor::execute(
            &mut conn,
            format!("DROP DATABASE \"{name}\" WITH (FORCE)").as_str(),
        )
        .await
        .unwrap();
    } else {
        println!(
            "PostgreSQL: SKIP (set PILOTHOUSE_BENCH_PG_URL=postgres://127.0.0.1:5432 to run it)"
        );
    }
}
