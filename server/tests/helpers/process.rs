//! A real `pilothouse serve` process for tests, its owner signed in over
//! HTTP, and the real agent binary.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const PASSWORD: &str = "correct horse battery staple";

/// The agent binary, built if missing or stale (it belongs to another package).
pub fn agent_binary() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_pilothouse"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "--quiet",
        "-p",
        "agent",
        "--bin",
        "pilothouse-agent",
    ]);
    // The same profile as this test's own binaries.
    if exe.parent().and_then(Path::file_name) == Some("release".as_ref()) {
        build.arg("--release");
    }
    let status = build.status().unwrap();
    assert!(status.success(), "cargo build -p agent failed");
    exe.with_file_name("pilothouse-agent")
}

pub struct Serve {
    pub child: Child,
    pub web: String,
    pub gateway: String,
    /// The plain-HTTP redirect listener, when one was configured.
    pub redirect: Option<String>,
    /// What the server has logged since it printed its addresses.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    /// Waits up to `within` for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve(data: &Path) -> Serve {
    serve_with(data, &[])
}

/// [`serve`] with more environment (`PILOTHOUSE_*` settings).
pub fn serve_with(data: &Path, env: &[(&str, &str)]) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pilothouse"))
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "server=info,warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut web, mut gateway, mut redirect) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while web.is_none() || gateway.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the server printed its addresses");
        let clean: String = line.chars().filter(|c| !c.is_control()).collect();
        if let Some(i) = clean.find("agent gateway listening on https://") {
            gateway = Some(
                clean[i + "agent gateway listening on ".len()..]
                    .trim()
                    .to_string(),
            );
        } else if let Some(i) = clean.find("listening on http") {
            let url = clean[i + "listening on ".len()..].split_whitespace().next();
            web = url.map(str::to_string);
        } else if let Some(i) = clean.find("redirecting http://") {
            let url = clean[i + "redirecting ".len()..].split_whitespace().next();
            redirect = url.map(str::to_string);
        }
        assert!(
            !clean.contains("will not install"),
            "the server found the signed release unusable: {clean}"
        );
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    let log = Arc::new(Mutex::new(Vec::new()));
    let kept = log.clone();
    std::thread::spawn(move || {
        while let Ok(line) = rx.recv() {
            kept.lock().unwrap().push(strip_ansi(&line));
        }
    });
    Serve {
        child,
        web: web.unwrap(),
        gateway: gateway.unwrap(),
        redirect,
        log,
    }
}

/// `pilothouse serve` with `env`, expected to refuse to start: its exit code
/// and what it printed.
pub fn refused_start(data: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pilothouse"))
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `line` without its terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The body of a GET of `url` as a browser asks for a page (`Accept: text/html`).
pub async fn page(client: &reqwest::Client, url: &str) -> String {
    client
        .get(url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn sign_in(web: &str) -> reqwest::Client {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client
        .post(format!("{web}/api/login"))
        .form(&[("email", "owner@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success() || res.status().is_redirection());
    client
}

pub async fn call(client: &reqwest::Client, web: &str, endpoint: &str) -> Value {
    let res = client
        .post(format!("{web}/api/{endpoint}"))
        .form(&[] as &[(&str, &str)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{endpoint}");
    res.json().await.unwrap()
}
