//! Helpers shared by the control crate's integration tests: people in an
//! organisation, request metadata, a certificate request, the delivery.

// Each test file uses only some of these.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use control::access::{self, Actor, Operator, RequestMeta};
use control::accounts;
use control::delivery::Delivery;
use control::server_keys::ServerKeys;
use control::testing::TestDb;
use control::{OrgId, Role, Timestamp, UserId};
use secrecy::SecretString;

pub const PASSWORD: &str = "correct horse battery staple";

/// Adds a person with `role` to the organisation named `org` (made if new).
pub async fn add(db: &TestDb, org: &str, email: &str, role: Role) -> (UserId, OrgId) {
    accounts::add_user_cli(
        &Operator::command_line(db.store.clone()),
        org,
        email,
        role,
        SecretString::from(PASSWORD),
        Timestamp::now(),
    )
    .await
    .unwrap()
}

pub fn meta() -> RequestMeta {
    RequestMeta::new("192.0.2.7", "test")
}

pub async fn actor(db: &TestDb, user: UserId, org: OrgId) -> Actor {
    access::actor(&db.store, user, Some(org), meta())
        .await
        .unwrap()
}

/// A fresh key and a certificate request for it.
pub fn csr() -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (key, csr)
}

/// The delivery with new server keys.
pub fn delivery(db: &TestDb) -> Delivery {
    Delivery::new(db.store.clone(), Arc::new(ServerKeys::generate()))
}

/// Everything the database holds, as a dump would show it: the SQLite file
/// and its write-ahead log, or `pg_dump` of the PostgreSQL database.
pub fn dump(db: &TestDb) -> Vec<u8> {
    if let Some(rest) = db.url.strip_prefix("sqlite://") {
        let path = rest.split('?').next().unwrap();
        let mut out = std::fs::read(path).unwrap();
        for ext in ["-wal", "-shm"] {
            if let Ok(more) = std::fs::read(format!("{path}{ext}")) {
                out.extend(more);
            }
        }
        out
    } else {
        let res = std::process::Command::new("pg_dump")
            .arg("--data-only")
            .arg(&db.url)
            .output()
            .expect("run pg_dump");
        assert!(
            res.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        res.stdout
    }
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}
