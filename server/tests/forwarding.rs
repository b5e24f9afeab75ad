//! Audit forwarding with real receivers, on both backends:
//!
//! - syslog over TLS to rsyslog (Debian's, with its GnuTLS driver; started
//!   here on a loopback port with its own config, never as a service). It is
//!   stopped for a while, the log grows, and once it is back it has every
//!   event once, in order, then the checkpoint over them.
//! - an HTTPS webhook: a real HTTPS server in this test (hyper over rustls)
//!   that checks the HMAC signature itself (with the `hmac` crate, not the
//!   forwarder's code) and answers 503 while "down".
//!
//! Certificates come from a CA made here. No fake counterpart: both
//! receivers are the real protocol over real TLS.

#![allow(clippy::unwrap_used)]

#[path = "helpers/https_hook.rs"]
mod https_hook;
#[path = "helpers/machine.rs"]
mod machine;
#[path = "helpers/tls.rs"]
mod tls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use control::access::{self, Operator, RequestMeta};
use control::accounts;
use control::checkpoints::{self, AuditKey, CheckpointCadence};
use control::forwarding::{self, DestinationKind, NewDestination};
use control::secrets::Keyring;
use control::testing::TestDb;
use control::{OrgId, Role, Timestamp, UserId};
use machine::{free_port, skip};
use secrecy::SecretString;
use server::forwarder::Forwarder;

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

async fn add(db: &TestDb, email: &str, role: Role) -> (UserId, OrgId) {
    accounts::add_user_cli(
        &Operator::command_line(db.store.clone()),
        "Acme",
        email,
        role,
        SecretString::from("correct horse battery staple"),
        Timestamp::now(),
    )
    .await
    .unwrap()
}

async fn owner(db: &TestDb) -> access::Actor {
    let (user, org) = add(db, "owner@example.com", Role::Owner).await;
    access::actor(
        &db.store,
        user,
        Some(org),
        RequestMeta::new("192.0.2.7", "test"),
    )
    .await
    .unwrap()
}

/// The master key in `dir`, adopted by the database, as the server opens it.
async fn ring(db: &TestDb, dir: &Path) -> Arc<Keyring> {
    Arc::new(
        control::key_vault::open_ring(
            &db.store,
            &control::secrets::MasterKeySource::File(dir.join("master.key")),
        )
        .await
        .unwrap(),
    )
}

async fn head(db: &TestDb, org: OrgId) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_events WHERE org_id = $1")
        .bind(org.0)
        .fetch_one(db.store.pool())
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------
// rsyslog

struct Rsyslog {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    starts: u32,
}

impl Rsyslog {
    /// Writes the config (TLS with the given certificate; every message as
    /// "MSGID MSG" on a line of `out.log`) and starts it.
    fn start(dir: &Path, cert: &str, key: &str, ca: &str) -> Rsyslog {
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca).unwrap();
        let port = free_port();
        let d = dir.display();
        let config = format!(
            r#"global(workDirectory="{d}"
  DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile="{d}/ca.pem"
  DefaultNetstreamDriverCertFile="{d}/cert.pem"
  DefaultNetstreamDriverKeyFile="{d}/key.pem")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="seen" type="string" string="%msgid% %msg%\n")
action(type="omfile" file="{d}/out.log" template="seen")
"#
        );
        std::fs::write(dir.join("rsyslog.conf"), config).unwrap();
        let mut r = Rsyslog {
            dir: dir.to_path_buf(),
            port,
            child: None,
            starts: 0,
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        self.starts += 1;
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join(format!("pid.{}", self.starts)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        // Listening once a connection is accepted (it starts in about a second).
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("rsyslogd did not listen on {} within 10 s", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// The lines rsyslog has written.
    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("out.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until at least `n` lines are written; returns them.
    async fn wait_lines(&self, n: usize) -> Vec<String> {
        for _ in 0..100 {
            let lines = self.lines();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let lines = self.lines();
        panic!(
            "rsyslog wrote {} lines, expected {n}: {lines:#?}",
            lines.len()
        );
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// (MSGID, the message's JSON) of a line rsyslog wrote.
fn parse_line(line: &str) -> (String, serde_json::Value) {
    let (msgid, msg) = line.split_once(' ').unwrap();
    let json = msg.trim_start_matches('\u{feff}');
    (msgid.to_string(), serde_json::from_str(json).unwrap())
}

async fn a_syslog_receiver_that_was_down_gets_every_event_once_in_order(db: TestDb) {
    if !Path::new(RSYSLOGD).exists() {
        skip(
            "syslog forwarding",
            "rsyslogd is not installed (scripts/install.sh installs it)",
        );
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls::test_pki("forwarding");
    let mut rsyslog = Rsyslog::start(logs.path(), &cert, &key, &ca);
    let owner = owner(&db).await;
    let org = owner.org();
    let secrets = ring(&db, data.path()).await;
    let auth = owner.authorize::<forwarding::ManageForwarding>().unwrap();
    forwarding::add(
        &auth,
        &secrets,
        NewDestination {
            kind: DestinationKind::Syslog,
            name: "rsyslog".into(),
            address: format!("localhost:{}", rsyslog.port),
            ca_pem: Some(ca.clone()),
            secret: None,
        },
        Timestamp::now(),
    )
    .await
    .unwrap();
    let forwarder = Forwarder::new(db.store.clone(), secrets.clone(), "control.example")
        .with_timeout(Duration::from_secs(5));

    // Up: everything so far (the owner's events and the destination's own).
    let first = head(&db, org).await;
    let now = Timestamp::now();
    assert_eq!(forwarder.run_once(now).await.unwrap(), first as u64);
    rsyslog.wait_lines(first as usize).await;
    assert_eq!(forwarder.run_once(now).await.unwrap(), 0, "nothing owed");

    // Down for a while: the log grows, attempts fail and back off.
    rsyslog.stop();
    for i in 0..5 {
        add(&db, &format!("m{i}@example.com"), Role::Member).await;
    }
    let key = AuditKey::generate();
    let signed = checkpoints::sign_due(&db.store, &key, CheckpointCadence::default(), true, now)
        .await
        .unwrap();
    assert_eq!(signed.len(), 1);
    let total = head(&db, org).await;
    assert_eq!(forwarder.run_once(now).await.unwrap(), 0);
    let view = &forwarding::list(&db.store, org).await.unwrap()[0];
    assert_eq!(view.failures, 1);
    assert!(
        view.last_error
            .as_deref()
            .unwrap()
            .contains("cannot connect"),
        "{view:?}"
    );
    assert_eq!(
        view.retry_at,
        Some(now.plus_secs(2)),
        "the first retry is 2 s later"
    );
    assert_eq!(view.behind(), total - first);
    assert!(view.owed_since.is_some());
    // Not due again before its retry time; due after it, failing again.
    assert_eq!(forwarder.run_once(now).await.unwrap(), 0);
    assert_eq!(
        forwarding::list(&db.store, org).await.unwrap()[0].failures,
        1
    );
    let later = Timestamp(view.retry_at.unwrap().0 + 1);
    assert_eq!(forwarder.run_once(later).await.unwrap(), 0);
    let view = &forwarding::list(&db.store, org).await.unwrap()[0];
    assert_eq!(view.failures, 2, "{view:?}");
    assert_eq!(view.retry_at, Some(later.plus_secs(4)), "then 4 s");

    // Back: the rest, once each, in order, then the checkpoint over them.
    rsyslog.restart();
    let back = Timestamp(view.retry_at.unwrap().0 + 1);
    assert_eq!(
        forwarder.run_once(back).await.unwrap(),
        (total - first) as u64
    );
    let lines = rsyslog.wait_lines(total as usize + 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = if rsyslog.lines().len() > lines.len() {
        rsyslog.lines()
    } else {
        lines
    };
    let parsed: Vec<_> = lines.iter().map(|l| parse_line(l)).collect();
    let seqs: Vec<i64> = parsed
        .iter()
        .filter(|(id, _)| id != "audit.checkpoint")
        .map(|(_, j)| j["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "every event once, in order"
    );
    let (last_id, last) = parsed.last().unwrap();
    assert_eq!(last_id, "audit.checkpoint");
    assert_eq!(last["count"].as_i64(), Some(signed[0].count));
    // The events chain: each names the one before.
    for pair in parsed[..total as usize].windows(2) {
        assert_eq!(pair[1].1["prev_hash"], pair[0].1["hash"]);
    }
    let view = &forwarding::list(&db.store, org).await.unwrap()[0];
    assert_eq!(
        (view.failures, view.behind(), view.last_error.as_deref()),
        (0, 0, None)
    );
    assert_eq!(forwarder.run_once(back).await.unwrap(), 0);
}

#[tokio::test]
async fn syslog_sqlite() {
    a_syslog_receiver_that_was_down_gets_every_event_once_in_order(TestDb::sqlite().await).await;
}

#[tokio::test]
async fn syslog_postgres() {
    if let Some(db) = TestDb::postgres("syslog_postgres").await {
        a_syslog_receiver_that_was_down_gets_every_event_once_in_order(db).await;
    }
}

// ---------------------------------------------------------------------------
// The webhook receiver (helpers/https_hook.rs)

const HMAC_KEY: &str = "a webhook key that is long enough";

/// The event and checkpoint numbers a receiver took, in arrival order.
fn seqs_and_checkpoints(hook: &https_hook::Hook) -> (Vec<i64>, Vec<i64>) {
    let (mut seqs, mut checkpoints) = (Vec::new(), Vec::new());
    for t in hook.taken() {
        for e in t.body["events"].as_array().unwrap() {
            seqs.push(e["seq"].as_i64().unwrap());
        }
        for c in t.body["checkpoints"].as_array().unwrap() {
            checkpoints.push(c["count"].as_i64().unwrap());
        }
    }
    (seqs, checkpoints)
}

async fn a_webhook_that_was_down_gets_every_event_once_in_order(db: TestDb) {
    let data = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls::test_pki("forwarding");
    let hook = https_hook::start(&cert, &key, Some(HMAC_KEY)).await;
    let owner = owner(&db).await;
    let org = owner.org();
    let secrets = ring(&db, data.path()).await;
    let auth = owner.authorize::<forwarding::ManageForwarding>().unwrap();
    let id = forwarding::add(
        &auth,
        &secrets,
        NewDestination {
            kind: DestinationKind::Webhook,
            name: "siem".into(),
            address: hook.url("/hook"),
            ca_pem: Some(ca.clone()),
            secret: Some(SecretString::from(HMAC_KEY)),
        },
        Timestamp::now(),
    )
    .await
    .unwrap();
    // The key is sealed in the database: it opens under the master key, and
    // its row does not hold it.
    let opened = forwarding::secret(&db.store, &secrets, &id).await.unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&opened), HMAC_KEY);
    let sealed: String = sqlx::query_scalar(
        "SELECT wrapped_key || ciphertext FROM audit_destination_secrets WHERE id = $1",
    )
    .bind(&id)
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert!(!sealed.contains(HMAC_KEY));
    assert!(!data.path().join("forwarding").exists(), "no key file");
    let listed = format!("{:?}", forwarding::list(&db.store, org).await.unwrap());
    assert!(!listed.contains(HMAC_KEY));
    let dumped: Vec<String> = sqlx::query_scalar(
        "SELECT id || kind || name || address || COALESCE(ca_pem, '') FROM audit_destinations",
    )
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    assert!(!dumped.concat().contains(HMAC_KEY));
    let details: Vec<String> = sqlx::query_scalar("SELECT details FROM audit_events")
        .fetch_all(db.store.pool())
        .await
        .unwrap();
    assert!(!details.concat().contains(HMAC_KEY));

    let forwarder = Forwarder::new(db.store.clone(), secrets.clone(), "control.example")
        .with_timeout(Duration::from_secs(5));
    let first = head(&db, org).await;
    let now = Timestamp::now();
    assert_eq!(forwarder.run_once(now).await.unwrap(), first as u64);

    // Down (503) for a while, then back.
    hook.set_down(true);
    for i in 0..3 {
        add(&db, &format!("w{i}@example.com"), Role::Member).await;
    }
    let signed = checkpoints::sign_due(
        &db.store,
        &AuditKey::generate(),
        CheckpointCadence::default(),
        true,
        now,
    )
    .await
    .unwrap();
    assert_eq!(forwarder.run_once(now).await.unwrap(), 0);
    let view = &forwarding::list(&db.store, org).await.unwrap()[0];
    assert_eq!(view.failures, 1);
    assert!(
        view.last_error.as_deref().unwrap().contains("503"),
        "{view:?}"
    );
    hook.set_down(false);
    let total = head(&db, org).await;
    let back = Timestamp(view.retry_at.unwrap().0 + 1);
    assert_eq!(
        forwarder.run_once(back).await.unwrap(),
        (total - first) as u64
    );
    let (seqs, checkpoints) = seqs_and_checkpoints(&hook);
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(checkpoints, vec![signed[0].count]);
    assert_eq!(
        (
            hook.forged.load(std::sync::atomic::Ordering::SeqCst),
            hook.refused.load(std::sync::atomic::Ordering::SeqCst)
        ),
        (0, 1)
    );
}

#[tokio::test]
async fn webhook_sqlite() {
    a_webhook_that_was_down_gets_every_event_once_in_order(TestDb::sqlite().await).await;
}

#[tokio::test]
async fn webhook_postgres() {
    if let Some(db) = TestDb::postgres("webhook_postgres").await {
        a_webhook_that_was_down_gets_every_event_once_in_order(db).await;
    }
}

/// A receiver whose certificate the destination does not trust gets
/// nothing, and the failure says why.
#[tokio::test]
async fn an_untrusted_receiver_gets_nothing() {
    let db = TestDb::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let (_, cert, key) = tls::test_pki("forwarding");
    let (other_ca, _, _) = tls::test_pki("forwarding");
    let hook = https_hook::start(&cert, &key, Some(HMAC_KEY)).await;
    let owner = owner(&db).await;
    let secrets = ring(&db, data.path()).await;
    let auth = owner.authorize::<forwarding::ManageForwarding>().unwrap();
    forwarding::add(
        &auth,
        &secrets,
        NewDestination {
            kind: DestinationKind::Webhook,
            name: "siem".into(),
            address: hook.url("/hook"),
            ca_pem: Some(other_ca),
            secret: Some(SecretString::from(HMAC_KEY)),
        },
        Timestamp::now(),
    )
    .await
    .unwrap();
    let forwarder = Forwarder::new(db.store.clone(), secrets, "control.example")
        .with_timeout(Duration::from_secs(5));
    assert_eq!(forwarder.run_once(Timestamp::now()).await.unwrap(), 0);
    assert!(hook.taken().is_empty());
    let view = &forwarding::list(&db.store, owner.org()).await.unwrap()[0];
    assert_eq!(view.failures, 1);
    assert_eq!(view.delivered_seq, 0);
    let error = view.last_error.as_deref().unwrap();
    assert!(error.contains("certificate"), "{error}");
    assert!(
        !error.contains("localhost:"),
        "the URL is left out: {error}"
    );
}

/// The limit of destinations and their unique names hold when Owners add
/// them at the same moment.
async fn the_limit_holds_under_concurrent_adds(db: TestDb) {
    let data = tempfile::tempdir().unwrap();
    let owner = owner(&db).await;
    let secrets = ring(&db, data.path()).await;
    let auth = owner.authorize::<forwarding::ManageForwarding>().unwrap();
    let add = |name: String| {
        let (auth, secrets) = (&auth, &secrets);
        async move {
            forwarding::add(
                auth,
                secrets,
                NewDestination {
                    kind: DestinationKind::Syslog,
                    name,
                    address: "siem.example.com:6514".into(),
                    ca_pem: None,
                    secret: None,
                },
                Timestamp::now(),
            )
            .await
        }
    };
    // Twice the same name at once: one is added.
    let same = futures_util::future::join_all((0..4).map(|_| add("twin".into()))).await;
    assert_eq!(same.iter().filter(|r| r.is_ok()).count(), 1, "{same:?}");
    for r in same.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(r, control::ControlError::Conflict(_)), "{r:?}");
    }
    // Twelve more at once: nine fit under the limit of ten.
    let many = futures_util::future::join_all((0..12).map(|i| add(format!("siem {i}")))).await;
    assert_eq!(many.iter().filter(|r| r.is_ok()).count(), 9, "{many:?}");
    for r in many.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(r, control::ControlError::Conflict(_)), "{r:?}");
    }
    assert_eq!(
        forwarding::list(&db.store, owner.org())
            .await
            .unwrap()
            .len() as i64,
        forwarding::MAX_DESTINATIONS
    );
}

/// An earlier version's key files (`forwarding/<id>.secret`) move into the
/// database at start: the file is removed once its key is stored; a file
/// for a destination that is gone is removed; one that differs from the
/// stored key, or that others can read, stays where it is.
async fn key_files_of_an_earlier_version_move_into_the_database(db: TestDb) {
    use std::os::unix::fs::PermissionsExt as _;
    let data = tempfile::tempdir().unwrap();
    let secrets = ring(&db, data.path()).await;
    let owner = owner(&db).await;
    let auth = owner.authorize::<forwarding::ManageForwarding>().unwrap();
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(
            forwarding::add(
                &auth,
                &secrets,
                NewDestination {
                    kind: DestinationKind::Webhook,
                    name: name.into(),
                    address: "https://siem.example.com/hook".into(),
                    ca_pem: None,
                    secret: Some(SecretString::from(format!("{HMAC_KEY} {name}"))),
                },
                Timestamp::now(),
            )
            .await
            .unwrap(),
        );
    }
    // As an earlier version left it: a's key only in its file.
    sqlx::query("DELETE FROM audit_destination_secrets WHERE id = $1")
        .bind(&ids[0])
        .execute(db.store.pool())
        .await
        .unwrap();
    let dir = data.path().join("forwarding");
    control::files::private_dir(&dir).unwrap();
    let file = |id: &str| dir.join(format!("{id}.secret"));
    let write = |id: &str, text: &str| {
        control::files::write_new_private(&file(id), text.as_bytes()).unwrap()
    };
    write(&ids[0], &format!("{HMAC_KEY} a"));
    // b's file holds its stored key (an import cut short); c's another one.
    write(&ids[1], &format!("{HMAC_KEY} b"));
    write(&ids[2], "another key, long enough to be one");
    write("fwd_gone", "the key of a removed destination");
    write("fwd_loose", "a key file others can read");
    std::fs::set_permissions(file("fwd_loose"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let moved = forwarding::import_secret_files(&db.store, &secrets, data.path())
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let a = forwarding::secret(&db.store, &secrets, &ids[0])
        .await
        .unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&a),
        format!("{HMAC_KEY} a")
    );
    assert!(!file(&ids[0]).exists() && !file(&ids[1]).exists());
    assert!(!file("fwd_gone").exists());
    assert!(file(&ids[2]).exists(), "a differing key is not dropped");
    assert!(file("fwd_loose").exists(), "a loose file is not read");
    let c = forwarding::secret(&db.store, &secrets, &ids[2])
        .await
        .unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&c),
        format!("{HMAC_KEY} c")
    );
    // Run again (the next start): nothing more to move.
    assert_eq!(
        forwarding::import_secret_files(&db.store, &secrets, data.path())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn key_files_sqlite() {
    key_files_of_an_earlier_version_move_into_the_database(TestDb::sqlite().await).await;
}

#[tokio::test]
async fn key_files_postgres() {
    if let Some(db) = TestDb::postgres("key_files_postgres").await {
        key_files_of_an_earlier_version_move_into_the_database(db).await;
    }
}

#[tokio::test]
async fn limit_sqlite() {
    the_limit_holds_under_concurrent_adds(TestDb::sqlite().await).await;
}

#[tokio::test]
async fn limit_postgres() {
    if let Some(db) = TestDb::postgres("limit_postgres").await {
        the_limit_holds_under_concurrent_adds(db).await;
    }
}
