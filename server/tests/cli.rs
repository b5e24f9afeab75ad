//! The `pilothouse` binary's command line: scripted user creation and clear
//! refusals (exit 2 with a sentence) for bad input.

#![allow(clippy::unwrap_used)]

#[path = "helpers/cli.rs"]
mod cli_helpers;
use cli_helpers::{pilothouse, text};

#[test]
fn admin_add_user_creates_accounts_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let add = |email: &str, role: &str, password: &str| {
        pilothouse(
            &[
                "admin",
                "add-user",
                "--data-dir",
                data,
                "--org",
                "Acme",
                "--email",
                email,
                "--role",
                role,
            ],
            password,
        )
    };

    let ok = add("ops@example.com", "admin", "correct horse battery staple\n");
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(
        text(&ok.stdout).contains("created user"),
        "{}",
        text(&ok.stdout)
    );

    for (email, role, password, says) in [
        (
            "ops@example.com",
            "admin",
            "correct horse battery staple\n",
            "already exists",
        ),
        (
            "weak@example.com",
            "member",
            "password\n",
            "at least 12 characters",
        ),
        (
            "bad-email",
            "member",
            "correct horse battery staple\n",
            "valid email",
        ),
        (
            "x@example.com",
            "root",
            "correct horse battery staple\n",
            "unknown role",
        ),
        ("x@example.com", "member", "", "no password on stdin"),
    ] {
        let out = add(email, role, password);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{email} {role}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(says),
            "{email} {role}: {}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).contains("panicked"));
    }
}

#[test]
fn serve_refuses_an_unusable_database_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = pilothouse(
        &[
            "serve",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--database-url",
            "mysql://db/x",
            "--listen",
            "127.0.0.1:0",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot open the database") && err.contains("sqlite:// or postgres://"),
        "{err}"
    );

    let out = pilothouse(&["serve", "--listen", "not-an-address"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("invalid value"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn admin_registration_token_prints_the_token_last() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let add = pilothouse(
        &[
            "admin",
            "add-user",
            "--data-dir",
            data,
            "--org",
            "Acme",
            "--email",
            "ops@example.com",
            "--role",
            "owner",
        ],
        "correct horse battery staple\n",
    );
    assert!(add.status.success(), "{}", text(&add.stderr));
    let out = pilothouse(
        &[
            "admin",
            "registration-token",
            "--data-dir",
            data,
            "--org",
            "Acme",
            "--ttl",
            "30m",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap();
    let parts: Vec<&str> = last.split('_').collect();
    assert_eq!(
        (parts.len(), parts[0], parts[1].len(), parts[2].len()),
        (3, "pht1", 32, 64),
        "{last}"
    );
    let pin = control::crypto::sha256_hex(
        control::ca::AgentCa::load_or_create(dir.path(), control::Timestamp::now())
            .unwrap()
            .cert_der(),
    );
    assert_eq!(parts[2], pin, "the token carries the CA pin");

    for (args, says) in [
        (vec!["--org", "Nope"], "No organisation named"),
        (
            vec!["--org", "Acme", "--ttl", "10s"],
            "between 1 minute and 7 days",
        ),
        (vec!["--org", "Acme", "--ttl", "soon"], "not a duration"),
    ] {
        let mut all = vec!["admin", "registration-token", "--data-dir", data];
        all.extend(args);
        let out = pilothouse(&all, "");
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }

    // Listed (never the secret), revoked once, then refused.
    let listed = pilothouse(
        &[
            "admin",
            "registration-tokens",
            "--data-dir",
            data,
            "--org",
            "Acme",
        ],
        "",
    );
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listing = text(&listed.stdout);
    assert!(
        !listing.contains(parts[1]),
        "the secret is never shown: {listing}"
    );
    let row = listing.lines().nth(1).unwrap();
    assert!(row.contains("Active"), "{listing}");
    let id = row.split('\t').next().unwrap().to_string();
    let revoke = |id: &str| {
        pilothouse(
            &[
                "admin",
                "revoke-registration-token",
                "--data-dir",
                data,
                "--org",
                "Acme",
                id,
            ],
            "",
        )
    };
    let out = revoke(&id);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = revoke(&id);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("No such unused registration token"));
    let listed = pilothouse(
        &[
            "admin",
            "registration-tokens",
            "--data-dir",
            data,
            "--org",
            "Acme",
        ],
        "",
    );
    assert!(
        text(&listed.stdout).contains("Revoked"),
        "{}",
        text(&listed.stdout)
    );
    let out = revoke("not-a-number");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn secrets_rotate_master_key_replaces_the_key_file_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let key = dir.path().join("master.key");
    let rotate = || pilothouse(&["secrets", "rotate-master-key", "--data-dir", data], "");

    let first = rotate();
    assert!(first.status.success(), "{}", text(&first.stderr));
    let said = text(&first.stdout);
    assert!(said.contains("master key rotated: mk_"), "{said}");
    let before = std::fs::read_to_string(&key).unwrap();
    let again = rotate();
    assert!(again.status.success(), "{}", text(&again.stderr));
    let after = std::fs::read_to_string(&key).unwrap();
    assert_ne!(before, after, "the key file holds the new key");
    assert!(!dir.path().join("master.key.next").exists());
    // The second rotation starts from the key the first one made.
    let new_id = said.split("-> ").nth(1).unwrap().split(',').next().unwrap();
    assert!(text(&again.stdout).contains(&format!("rotated: {new_id} ->")));

    std::fs::write(&key, "not a key\n").unwrap();
    let bad = rotate();
    assert_eq!(bad.status.code(), Some(2));
    let err = text(&bad.stderr);
    assert!(
        err.contains("master key file") && err.contains("not a master key file"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
