//! Running the `pilothouse` binary from a test, with stdin, and the set-ups
//! several tests share: an owner account, a release key, a signed release.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub fn pilothouse(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pilothouse"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The command's stdout; panics with its stderr when it failed.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// `admin add-user`: owner@example.com, Owner of Acme, with `password`.
pub fn add_owner(data: &Path, password: &str) {
    ok(pilothouse(
        &[
            "admin",
            "add-user",
            "--data-dir",
            data.to_str().unwrap(),
            "--org",
            "Acme",
            "--email",
            "owner@example.com",
            "--role",
            "owner",
        ],
        &format!("{password}\n"),
    ));
}

/// `release keygen --out key`.
pub fn release_keygen(key: &Path) {
    ok(pilothouse(
        &["release", "keygen", "--out", key.to_str().unwrap()],
        "",
    ));
}

/// `release sign` of `binary` into `out`, as `version` (default: the
/// binary's own).
pub fn release_sign(key: &Path, binary: &Path, out: &Path, version: Option<&str>) {
    let mut args = vec![
        "release",
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--binary",
        binary.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(v) = version {
        args.extend(["--version", v]);
    }
    ok(pilothouse(&args, ""));
}
