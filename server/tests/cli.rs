//! The `pilothouse` binary's command line: scripted user creation and clear
//! refusals (exit 2 with a sentence) for bad input.

#![allow(clippy::unwrap_used)]

#[path = "helpers/cli.rs"]
mod cli_helpers;
use cli_helpers::{add_owner, pilothouse, text};
use rustls::pki_types::pem::PemObject as _;

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
fn admin_set_password_sets_it_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    add_owner(dir.path(), "correct horse battery staple");
    let set = |email: &str, password: &str| {
        pilothouse(
            &[
                "admin",
                "set-password",
                "--data-dir",
                data,
                "--email",
                email,
            ],
            password,
        )
    };
    let ok = set("OWNER@example.com", "a new passphrase for the operator\n");
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("set a new password for owner@example.com"));
    for (email, password, says) in [
        (
            "nobody@example.com",
            "a fresh passphrase of some length\n",
            "No account",
        ),
        ("owner@example.com", "short\n", "at least 12 characters"),
        ("owner@example.com", "", "no password on stdin"),
        (
            "not-an-address",
            "a fresh passphrase of some length\n",
            "valid email",
        ),
    ] {
        let out = set(email, password);
        assert_eq!(out.status.code(), Some(2), "{email}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(says),
            "{email}: {}",
            text(&out.stderr)
        );
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
    add_owner(dir.path(), "correct horse battery staple");
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
    // The CA's key is in the database, sealed; its certificate is copied
    // into the data directory for proxies.
    let pem = std::fs::read(dir.path().join("agent-ca.crt")).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    let pin = control::crypto::sha256_hex(&der);
    assert_eq!(parts[2], pin, "the token carries the CA pin");
    assert!(
        !dir.path().join("agent-ca.key").exists(),
        "no CA key file in the data directory"
    );

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

#[test]
fn release_keygen_and_sign_refuse_bad_input_with_exit_2() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (key, other, out) = (p("release.key"), p("other.key"), p("releases"));
    let binary = p("pilothouse-agent");
    std::fs::write(&binary, b"not really an agent").unwrap();

    let made = pilothouse(&["release", "keygen", "--out", &key], "");
    assert!(made.status.success(), "{}", text(&made.stderr));
    assert!(text(&made.stdout).starts_with("-----BEGIN PUBLIC KEY-----"));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = pilothouse(&["release", "keygen", "--out", &key], "");
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("never overwritten"));
    assert!(pilothouse(&["release", "keygen", "--out", &other], "")
        .status
        .success());

    let sign = |key: &str, extra: &[&str]| {
        let mut args = vec![
            "release", "sign", "--key", key, "--binary", &binary, "--out", &out,
        ];
        args.extend_from_slice(extra);
        pilothouse(&args, "")
    };
    let ok = sign(&key, &["--version", "1.2.3"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("signed pilothouse-agent 1.2.3 for"));

    for (key, extra, says) in [
        (&other, &["--version", "1.2.4"][..], "another release key"),
        (&key, &["--version", "v1"][..], "starting with a digit"),
        (
            &key,
            &["--version", "1", "--platform", "../x"][..],
            "<arch>-<os>",
        ),
        (&key, &["--platform", "aarch64-linux"][..], "give --version"),
        (&p("missing.key"), &["--version", "1"][..], "release keygen"),
    ] {
        let r = sign(key, extra);
        assert_eq!(r.status.code(), Some(2), "{extra:?}: {}", text(&r.stderr));
        assert!(
            text(&r.stderr).contains(says),
            "{extra:?}: {}",
            text(&r.stderr)
        );
    }
    // The binary cannot tell its version: --version is needed.
    let r = sign(&key, &[]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r.stderr));
    assert!(
        text(&r.stderr).contains("give --version"),
        "{}",
        text(&r.stderr)
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = sign(&key, &["--version", "1.2.5"]);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        text(&r.stderr).contains("readable by others"),
        "{}",
        text(&r.stderr)
    );
    // Nothing of the refused attempts was written: the release is still 1.2.3.
    let manifest = std::fs::read_to_string(dir.path().join(format!(
        "releases/{}/release.txt",
        channel::release::current_platform()
    )))
    .unwrap();
    assert!(manifest.starts_with("version=1.2.3\n"), "{manifest}");
}
