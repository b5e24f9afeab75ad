//! The command line as an operator meets it: exit codes and the sentences printed.
//! Exit codes: 0 success (and `--help`/`--version`), 2 bad usage (including no
//! arguments at all, which prints the usage), 1 runtime failures.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pilothouse-agent"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn no_arguments_print_usage_and_exit_2() {
    let o = agent(&[]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("Usage: pilothouse-agent"), "{e}");
    for sub in ["register", "run", "status"] {
        assert!(e.contains(sub), "{e}");
    }
}

#[test]
fn help_and_version_exit_0() {
    assert_eq!(agent(&["--help"]).status.code(), Some(0));
    assert_eq!(agent(&["register", "--help"]).status.code(), Some(0));
    let v = agent(&["--version"]);
    assert_eq!(v.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&v.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn unknown_subcommands_and_missing_options_exit_2() {
    let o = agent(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unrecognized subcommand"),
        "{}",
        stderr(&o)
    );
    assert_eq!(agent(&["register", "--token", "x"]).status.code(), Some(2));
}

#[test]
fn a_malformed_token_or_url_is_bad_usage() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("s");
    let dir = dir.to_str().unwrap();
    let o = agent(&[
        "register",
        "--server",
        "https://cp.example:8443",
        "--token",
        "pht1_short",
        "--state-dir",
        dir,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("32 hex characters"), "{}", stderr(&o));
    let token = format!("pht1_{}_{}", "a".repeat(32), "b".repeat(64));
    let o = agent(&[
        "register",
        "--server",
        "cp.example:8443",
        "--token",
        &token,
        "--state-dir",
        dir,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains(&token), "the token must not be echoed");
}

#[test]
fn run_and_status_without_a_registration_exit_1_with_a_sentence() {
    let t = tempfile::tempdir().unwrap();
    let empty = t.path().to_str().unwrap();
    for args in [
        vec!["run", "--state-dir", empty, "--config", "/dev/null"],
        vec!["status", "--state-dir", empty],
        vec![
            "run",
            "--state-dir",
            "/nonexistent/pilothouse",
            "--config",
            "/dev/null",
        ],
    ] {
        let o = agent(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let e = stderr(&o);
        assert!(e.contains("not registered"), "{e}");
        assert!(e.contains("pilothouse-agent register"), "{e}");
    }
}

#[test]
fn a_missing_explicit_config_file_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("nope.toml");
    let o = agent(&[
        "run",
        "--state-dir",
        t.path().to_str().unwrap(),
        "--config",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nope.toml"), "{}", stderr(&o));
}

fn state_with(dir: &Path, file: &str, content: &str, mode: u32) {
    std::fs::create_dir(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_state_file_others_can_read_is_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("state");
    state_with(&dir, "identity.key", &"00".repeat(32), 0o644);
    let record = dir.join("agent.json");
    std::fs::write(&record, "{}").unwrap();
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o600)).unwrap();
    for args in [vec!["run", "--config", "/dev/null"], vec!["status"]] {
        let mut args = args;
        args.extend(["--state-dir", dir.to_str().unwrap()]);
        let o = agent(&args);
        assert_eq!(o.status.code(), Some(1));
        let e = stderr(&o);
        assert!(
            e.contains(&dir.join("identity.key").display().to_string()),
            "{e}"
        );
        assert!(e.contains("group or others"), "{e}");
    }
}

#[test]
fn a_corrupt_state_file_is_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("state");
    state_with(&dir, "agent.json", "{\"agent_id\": ", 0o600);
    let o = agent(&[
        "run",
        "--config",
        "/dev/null",
        "--state-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&dir.join("agent.json").display().to_string()),
        "{e}"
    );
    assert!(e.contains("corrupt"), "{e}");
}

#[test]
fn the_token_can_come_from_a_file_or_stdin_and_not_from_argv() {
    use std::io::Write as _;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("s");
    let dir = dir.to_str().unwrap();
    // An unreadable file is bad usage, with a sentence naming the file.
    let o = agent(&[
        "register",
        "--server",
        "https://127.0.0.1:1",
        "--token-file",
        "/nonexistent/token",
        "--state-dir",
        dir,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/token"), "{}", stderr(&o));
    // The token is read from the file (here a malformed one, refused as such).
    let file = t.path().join("token");
    std::fs::write(&file, "pht1_not-a-token\n").unwrap();
    let o = agent(&[
        "register",
        "--server",
        "https://127.0.0.1:1",
        "--token-file",
        file.to_str().unwrap(),
        "--state-dir",
        dir,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("registration token"), "{}", stderr(&o));
    // And from standard input with `-`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pilothouse-agent"))
        .args([
            "register",
            "--server",
            "https://127.0.0.1:1",
            "--token-file",
            "-",
            "--state-dir",
            dir,
        ])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pht2_wrong\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("pht1_"), "{}", stderr(&o));
    // Both at once is refused.
    let o = agent(&[
        "register",
        "--server",
        "https://127.0.0.1:1",
        "--token",
        "x",
        "--token-file",
        "-",
    ]);
    assert_eq!(o.status.code(), Some(2));
}
