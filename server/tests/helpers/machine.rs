//! What a test needs from this machine: a free loopback port, and a visible
//! SKIP when a tool it runs is missing.

#![allow(dead_code, clippy::unwrap_used)]

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Says why a test did not run: fails in CI (scripts/install.sh installs
/// what the tests need), else prints SKIP and lists it in `make test`'s
/// skips.
pub fn skip(what: &str, why: &str) {
    assert!(
        !matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1")),
        "{what} cannot run: {why}"
    );
    eprintln!("SKIP {what}: {why}");
    if let Ok(path) = std::env::var("PILOTHOUSE_TEST_SKIP_LOG") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{what} ({why})");
        }
    }
}
