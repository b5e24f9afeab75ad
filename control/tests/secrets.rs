//! Secrets at rest, on both backends: write-only, sealed (a dump of the
//! database holds no value), tampering and a wrong master key named by the
//! secret's id, the per-organisation limit under concurrent writes, and a
//! master-key rotation while a server keeps reading and writing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{contains, dump};

use std::path::Path;
use std::sync::Arc;

use control::secrets::{self, Keyring, ManageSecrets, NewSecret, Scope, SecretError, SecretKind};
use control::testing::TestDb;
use control::{ControlError, OrgId, Role, Timestamp};
use secrecy::{ExposeSecret, SecretString};

const PLAIN: &str = "hunter2-plaintext-Zq8vX1";

fn env(name: &str, value: &str) -> NewSecret {
    NewSecret {
        scope: Scope::Org,
        kind: SecretKind::Env,
        name: name.into(),
        value: SecretString::from(value.to_string()),
    }
}

async fn ring_in(db: &TestDb, dir: &Path) -> Keyring {
    let ring = Keyring::open(&dir.join("master.key")).unwrap();
    secrets::adopt(&db.store, &ring).await.unwrap();
    ring
}

async fn secrets_are_write_only_and_sealed_at_rest(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring_in(&db, dir.path()).await;
    let (owner, org) = common::add(&db, "Acme", "owner@example.com", Role::Owner).await;
    let (member, _) = common::add(&db, "Acme", "member@example.com", Role::Member).await;
    let owner = common::actor(&db, owner, org).await;
    let auth = owner.authorize::<ManageSecrets>().unwrap();
    let now = Timestamp::now();

    let id = secrets::set(&auth, &ring, env("DB_PASSWORD", PLAIN), now)
        .await
        .unwrap();
    let listed = secrets::list(&owner.authorize().unwrap()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (&*listed[0].id, &*listed[0].name, &*listed[0].kind),
        (&*id, "DB_PASSWORD", "env")
    );
    assert_eq!(listed[0].last_used_at, None);
    assert!(!format!("{listed:?}").contains(PLAIN));

    let value = secrets::reveal(&db.store, &ring, org, &id, now)
        .await
        .unwrap();
    assert_eq!(value.expose_secret(), PLAIN);
    let listed = secrets::list(&owner.authorize().unwrap()).await.unwrap();
    assert_eq!(listed[0].last_used_at, Some(now));

    // Replacing keeps the id; the new value is what opens.
    let again = secrets::set(&auth, &ring, env("DB_PASSWORD", "second-value"), now)
        .await
        .unwrap();
    assert_eq!(again, id);
    let value = secrets::reveal(&db.store, &ring, org, &id, now)
        .await
        .unwrap();
    assert_eq!(value.expose_secret(), "second-value");
    let other = secrets::set(&auth, &ring, env("API_TOKEN", PLAIN), now)
        .await
        .unwrap();

    // Neither value, nor the master key, is in a dump of the database.
    let key_file = std::fs::read_to_string(dir.path().join("master.key")).unwrap();
    let key_hex = key_file.trim().rsplit(':').next().unwrap().to_string();
    let dumped = dump(&db);
    assert!(
        contains(&dumped, "DB_PASSWORD"),
        "the dump holds the secrets' rows"
    );
    for plain in [PLAIN, "second-value", key_hex.as_str()] {
        assert!(!contains(&dumped, plain), "the dump holds {plain}");
    }

    // Audited without values.
    let events: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, details FROM audit_events WHERE org_id = $1 AND action LIKE 'secret%' ORDER BY seq",
    )
    .bind(org.0)
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    assert_eq!(
        events.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(),
        ["secret.set", "secret.set", "secret.set"]
    );
    assert!(events[1].1.contains("\"replaced\":true"), "{events:?}");
    assert!(events
        .iter()
        .all(|(_, d)| !d.contains(PLAIN) && !d.contains("second-value")));

    // Members and Viewers may not set or delete; bad input is refused by name.
    let member = common::actor(&db, member, org).await;
    assert!(matches!(
        member.authorize::<ManageSecrets>(),
        Err(ControlError::Forbidden(_))
    ));
    for (secret, field) in [
        (env("1BAD", "x"), "name:"),
        (env("HAS SPACE", "x"), "name:"),
        (env(&"N".repeat(129), "x"), "name:"),
        (env("EMPTY", ""), "value:"),
        (env("HUGE", &"x".repeat(secrets::MAX_VALUE + 1)), "value:"),
        (
            NewSecret {
                scope: Scope::Server(control::AgentId(format!("agt_{}", "0".repeat(24)))),
                ..env("ON_A_SERVER", "x")
            },
            "server:",
        ),
    ] {
        match secrets::set(&auth, &ring, secret, now).await {
            Err(ControlError::Invalid(m)) => assert!(m.starts_with(field), "{m}"),
            other => panic!("{field}: {other:?}"),
        }
    }

    secrets::delete(&auth, &other, now).await.unwrap();
    assert!(matches!(
        secrets::reveal(&db.store, &ring, org, &other, now).await,
        Err(SecretError::NotFound { .. })
    ));
    assert!(matches!(
        secrets::delete(&auth, &other, now).await,
        Err(ControlError::NotFound(_))
    ));
    // Another organisation's secret is not found.
    assert!(matches!(
        secrets::reveal(&db.store, &ring, OrgId(org.0 + 100), &id, now).await,
        Err(SecretError::NotFound { .. })
    ));
}

async fn tampering_and_a_wrong_master_key_name_the_secret(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring_in(&db, dir.path()).await;
    let (owner, org) = common::add(&db, "Acme", "owner@example.com", Role::Owner).await;
    let owner = common::actor(&db, owner, org).await;
    let auth = owner.authorize::<ManageSecrets>().unwrap();
    let now = Timestamp::now();
    let a = secrets::set(&auth, &ring, env("A", "value-a"), now)
        .await
        .unwrap();
    let b = secrets::set(&auth, &ring, env("B", "value-b"), now)
        .await
        .unwrap();

    let column = |id: &str, col: &str| {
        let (id, col) = (id.to_string(), col.to_string());
        let pool = db.store.pool().clone();
        async move {
            sqlx::query_scalar::<_, String>(&format!("SELECT {col} FROM secrets WHERE id = $1"))
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let write = |id: &str, col: &str, v: String| {
        let (id, col) = (id.to_string(), col.to_string());
        let pool = db.store.pool().clone();
        async move {
            sqlx::query(&format!("UPDATE secrets SET {col} = $1 WHERE id = $2"))
                .bind(v)
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    for col in ["ciphertext", "wrapped_key"] {
        let good = column(&a, col).await;
        // One bit flipped near the end (the tag), then the other secret's.
        let mut bad = good.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
        for v in [
            String::from_utf8(bad).unwrap(),
            column(&b, col).await,
            "zz".into(),
        ] {
            write(&a, col, v).await;
            match secrets::reveal(&db.store, &ring, org, &a, now).await {
                Err(e @ SecretError::Tampered { .. }) => {
                    assert!(e.to_string().contains(&a), "{e}")
                }
                other => panic!("{col}: {other:?}"),
            }
        }
        write(&a, col, good).await;
        assert_eq!(
            secrets::reveal(&db.store, &ring, org, &a, now)
                .await
                .unwrap()
                .expose_secret(),
            "value-a"
        );
    }

    // Another master key file: the secret is named, nothing decrypts.
    let other_dir = tempfile::tempdir().unwrap();
    let wrong = Keyring::open(&other_dir.path().join("master.key")).unwrap();
    match secrets::reveal(&db.store, &wrong, org, &b, now).await {
        Err(e @ SecretError::UnknownMasterKey { .. }) => {
            assert!(e.to_string().contains(&b), "{e}")
        }
        other => panic!("{other:?}"),
    }
    match secrets::adopt(&db.store, &wrong).await {
        Err(e @ SecretError::WrongMasterKey { .. }) => {
            assert!(e.to_string().contains("wrong master key file"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // A key file others can read, or one that is not a key, is refused.
    let loose = other_dir.path().join("loose.key");
    std::fs::copy(dir.path().join("master.key"), &loose).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        Keyring::open(&loose),
        Err(SecretError::KeyFile { .. })
    ));
    let junk = other_dir.path().join("junk.key");
    control::files::write_new_private(&junk, b"not a key\n").unwrap();
    assert!(matches!(
        Keyring::open(&junk),
        Err(SecretError::KeyFile { .. })
    ));
}

/// The per-organisation limit holds when many new secrets arrive at once.
async fn the_secret_limit_holds_under_concurrent_writes(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(ring_in(&db, dir.path()).await);
    let (owner, org) = common::add(&db, "Acme", "owner@example.com", Role::Owner).await;
    // All but two places taken (rows written directly; their contents are
    // never opened).
    let mut tx = db.store.begin().await.unwrap();
    for i in 0..secrets::MAX_SECRETS - 2 {
        sqlx::query(
            "INSERT INTO secrets (id, org_id, scope, kind, name, master_key_id, wrapped_key, ciphertext, created_at, updated_at) \
             VALUES ($1, $2, 'org', 'env', $3, 'mk_x', '00', '00', 0, 0)",
        )
        .bind(format!("sec_fill{i}"))
        .bind(org.0)
        .bind(format!("FILL_{i}"))
        .execute(tx.conn())
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let owner = Arc::new(common::actor(&db, owner, org).await);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (owner, ring) = (owner.clone(), ring.clone());
        tasks.push(tokio::spawn(async move {
            let auth = owner.authorize::<ManageSecrets>().unwrap();
            secrets::set(
                &auth,
                &ring,
                env(&format!("NEW_{i}"), "v"),
                Timestamp::now(),
            )
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(ControlError::Conflict(m)) => assert!(m.contains("at most"), "{m}"),
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok, 2);
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets WHERE org_id = $1")
        .bind(org.0)
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(count, secrets::MAX_SECRETS);
}

/// A rotation re-wraps every data key while a running server (its own
/// keyring, opened before) keeps reading and writing; afterwards every
/// secret opens, and the old key opens none.
async fn rotation_leaves_every_secret_readable_and_the_old_key_useless(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("master.key");
    let server_ring = Arc::new(ring_in(&db, dir.path()).await);
    let (owner, org) = common::add(&db, "Acme", "owner@example.com", Role::Owner).await;
    let owner = Arc::new(common::actor(&db, owner, org).await);
    let auth = owner.authorize::<ManageSecrets>().unwrap();
    let mut ids = Vec::new();
    for i in 0..600 {
        ids.push((
            secrets::set(
                &auth,
                &server_ring,
                env(&format!("S{i}"), &format!("value-{i}")),
                Timestamp::now(),
            )
            .await
            .unwrap(),
            format!("value-{i}"),
        ));
    }
    // A notification channel's secret is sealed under the same key.
    let channel = control::notifications::add(
        &owner
            .authorize::<control::notifications::ManageNotifications>()
            .unwrap(),
        &server_ring,
        control::notifications::NewChannel {
            kind: control::notifications::ChannelKind::Webhook,
            name: "pager".into(),
            address: "https://hooks.example.com/pilothouse".into(),
            ca_pem: None,
            secret: Some(SecretString::from("a channel key that is long enough")),
        },
        Timestamp::now(),
    )
    .await
    .unwrap();
    let old_copy = tempfile::tempdir().unwrap();
    std::fs::copy(&key_path, old_copy.path().join("master.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        old_copy.path().join("master.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    // The server keeps working while the CLI rotates.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let (store, ring, owner, stop, ids) = (
            db.store.clone(),
            server_ring.clone(),
            owner.clone(),
            stop.clone(),
            ids.clone(),
        );
        tokio::spawn(async move {
            let mut written = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 20 {
                let (id, want) = &ids[n % ids.len()];
                let got = secrets::reveal(&store, &ring, org, id, Timestamp::now())
                    .await
                    .unwrap_or_else(|e| panic!("during the rotation: {e}"));
                assert_eq!(got.expose_secret(), want);
                let auth = owner.authorize::<ManageSecrets>().unwrap();
                let value = format!("during-{n}");
                let id = secrets::set(
                    &auth,
                    &ring,
                    env(&format!("D{n}"), &value),
                    Timestamp::now(),
                )
                .await
                .unwrap();
                written.push((id, value));
                n += 1;
            }
            written
        })
    };
    let cli_ring = Keyring::open(&key_path).unwrap();
    let rotation = secrets::rotate_master_key(&db.store, &cli_ring)
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = worker.await.unwrap();
    assert_ne!(rotation.old_key_id, rotation.new_key_id);
    assert!(rotation.rewrapped >= 600, "{rotation:?}");
    assert!(!dir.path().join("master.key.next").exists());

    let under: Vec<String> = sqlx::query_scalar("SELECT DISTINCT master_key_id FROM secrets")
        .fetch_all(db.store.pool())
        .await
        .unwrap();
    assert_eq!(under, std::slice::from_ref(&rotation.new_key_id));
    let old_ring = Keyring::open(&old_copy.path().join("master.key")).unwrap();
    assert_eq!(
        old_ring.key_ids(),
        std::slice::from_ref(&rotation.old_key_id)
    );
    for (id, want) in ids.iter().chain(&written) {
        let got = secrets::reveal(&db.store, &server_ring, org, id, Timestamp::now())
            .await
            .unwrap();
        assert_eq!(got.expose_secret(), want);
        assert!(matches!(
            secrets::reveal(&db.store, &old_ring, org, id, Timestamp::now()).await,
            Err(SecretError::UnknownMasterKey { .. })
        ));
    }
    // The channel's secret was re-wrapped too: readable with the new key
    // only, and the error names the channel.
    let key = control::notifications::secret(&db.store, &server_ring, &channel)
        .await
        .unwrap();
    assert_eq!(key.expose_secret(), "a channel key that is long enough");
    let refused = control::notifications::secret(&db.store, &old_ring, &channel)
        .await
        .unwrap_err();
    assert!(refused.contains(&channel), "{refused}");
    let rotated: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE org_id = $1 AND action = 'secrets.master_key_rotated'",
    )
    .bind(org.0)
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!(rotated, 1);

    // A second rotation works from the new file.
    let again = secrets::rotate_master_key(&db.store, &cli_ring)
        .await
        .unwrap();
    assert_eq!(again.old_key_id, rotation.new_key_id);
}

/// An SSH key pair made here: the public key is shown and is what OpenSSH's
/// own `ssh-keygen` derives from the private key, which is sealed (absent
/// from a dump), never listed, and given to a task that names it. It cannot
/// be pasted in as a value, and a Member cannot make one.
async fn ssh_keys_are_generated_here_and_only_the_public_key_is_shown(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring_in(&db, dir.path()).await;
    let (owner, org) = common::add(&db, "Acme", "owner@example.com", Role::Owner).await;
    let (member, _) = common::add(&db, "Acme", "member@example.com", Role::Member).await;
    let owner = common::actor(&db, owner, org).await;
    let auth = owner.authorize::<ManageSecrets>().unwrap();
    let now = Timestamp::now();
    let (id, public) = secrets::generate_ssh_key(&auth, &ring, Scope::Org, "DEPLOY_KEY", now)
        .await
        .unwrap();
    assert!(public.starts_with("ssh-ed25519 AAAA"), "{public}");
    assert!(public.ends_with(" pilothouse:DEPLOY_KEY"), "{public}");
    let listed = secrets::list(&owner.authorize().unwrap()).await.unwrap();
    assert_eq!(listed[0].kind, "ssh_key");
    assert_eq!(listed[0].public_key.as_deref(), Some(public.as_str()));
    assert!(!format!("{listed:?}").contains("PRIVATE KEY"));

    // The private key, as a task gets it, is the pair of the public key by
    // ssh-keygen's own reading.
    let agent = control::AgentId::parse("agt_0123456789abcdef01234567").unwrap();
    let given = secrets::for_task(&db.store, &ring, org, &agent, &["DEPLOY_KEY".into()], now)
        .await
        .unwrap();
    assert_eq!(given.len(), 1);
    let private = given[0].value.expose_secret().to_string();
    assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    let file = dir.path().join("id_ed25519");
    std::fs::write(&file, &private).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let derived = std::process::Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&file)
        .output()
        .expect("ssh-keygen (openssh-client, scripts/install.sh)");
    assert!(derived.status.success(), "{derived:?}");
    let derived = String::from_utf8(derived.stdout).unwrap();
    let blob = |k: &str| k.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(blob(&derived), blob(&public));
    // The audit event names its fingerprint, as ssh-keygen -l prints it.
    let printed = std::process::Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    let fingerprint = String::from_utf8(printed.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let details: String = sqlx::query_scalar(
        "SELECT details FROM audit_events WHERE org_id = $1 AND action = 'secret.set' AND target = $2",
    )
    .bind(org.0)
    .bind(format!("secret:{id}"))
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert_eq!(details["fingerprint"], fingerprint);
    assert_eq!(details["kind"], "ssh_key");

    // Sealed: no line of the private key's body is in a dump.
    let dumped = dump(&db);
    for line in private.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!contains(&dumped, line), "the dump holds the private key");
    }
    // Generated again: a new pair in its place.
    let (again, second) = secrets::generate_ssh_key(&auth, &ring, Scope::Org, "DEPLOY_KEY", now)
        .await
        .unwrap();
    assert_eq!(again, id);
    assert_ne!(blob(&second), blob(&public));

    // Never pasted in; never made by a Member.
    let mut pasted = env("OTHER_KEY", "-----BEGIN OPENSSH PRIVATE KEY-----");
    pasted.kind = SecretKind::SshKey;
    let refused = secrets::set(&auth, &ring, pasted, now).await.unwrap_err();
    assert!(refused.to_string().contains("generated here"), "{refused}");
    let member = common::actor(&db, member, org).await;
    assert!(member.authorize::<ManageSecrets>().is_err());
}

control::both_backends!(
    ssh_keys_are_generated_here_and_only_the_public_key_is_shown,
    secrets_are_write_only_and_sealed_at_rest,
    tampering_and_a_wrong_master_key_name_the_secret,
    the_secret_limit_holds_under_concurrent_writes,
    rotation_leaves_every_secret_readable_and_the_old_key_useless,
);
