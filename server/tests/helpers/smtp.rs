//! The SMTP server email tests send to: `smtp_sink.mjs`, npm `smtp-server`
//! run by node on loopback (installed by scripts/install.sh), with a
//! certificate from a test CA for STARTTLS or TLS. Each message it accepts
//! comes back to the test as a [`Received`].

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How the sink secures sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkTls {
    /// Offers STARTTLS.
    StartTls,
    /// TLS from the first byte.
    Tls,
    /// Plain only: STARTTLS is not offered.
    Plain,
}

pub struct SmtpSink {
    pub port: u16,
    /// The CA the sink's certificate (for localhost and 127.0.0.1) chains to.
    pub ca_file: PathBuf,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

/// A message the sink accepted.
#[derive(Debug, serde::Deserialize)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The session was encrypted.
    pub secure: bool,
    /// Who authenticated, if anyone.
    pub user: Option<String>,
    /// The message as received.
    pub data: String,
}

impl Received {
    /// A header's value (unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// The body as text: quoted-printable undone when the message says so.
    pub fn text(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let qp = self
            .header("Content-Transfer-Encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("quoted-printable"));
        if !qp {
            return body.replace("\r\n", "\n");
        }
        let joined = body.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' && i + 2 < bytes.len() {
                let hex = |b: u8| (b as char).to_digit(16);
                if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8(out).unwrap().replace("\r\n", "\n")
    }
}

/// The sink's certificate and key in `dir`, made by a new test CA unless
/// there already (so a sink started later in `dir` is trusted by a server
/// configured before); returns the CA's file.
pub fn pki(dir: &Path) -> PathBuf {
    let ca_file = dir.join("smtp-ca.pem");
    if !ca_file.exists() {
        let (ca, cert, key) = super::tls::test_pki("smtp");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("smtp-cert.pem"), cert).unwrap();
        std::fs::write(dir.join("smtp-key.pem"), key).unwrap();
        std::fs::write(&ca_file, ca).unwrap();
    }
    ca_file
}

impl SmtpSink {
    /// Starts the sink on `port` (0: any) in `dir`, requiring `auth`
    /// (user, password) when given.
    pub async fn start(
        dir: &Path,
        port: u16,
        tls: SinkTls,
        auth: Option<(&str, &str)>,
    ) -> SmtpSink {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/smtp_sink.mjs");
        let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node_modules/smtp-server");
        assert!(
            modules.is_dir(),
            "npm smtp-server is not installed in node_modules: run scripts/install.sh"
        );
        let ca_file = pki(dir);
        let mut cmd = Command::new("node");
        cmd.arg(&script).arg("--port").arg(port.to_string());
        if tls != SinkTls::Plain {
            cmd.arg("--cert")
                .arg(dir.join("smtp-cert.pem"))
                .arg("--key")
                .arg(dir.join("smtp-key.pem"));
        }
        match tls {
            SinkTls::Tls => {
                cmd.arg("--tls");
            }
            SinkTls::Plain => {
                cmd.arg("--no-starttls");
            }
            SinkTls::StartTls => {}
        }
        if let Some((user, pass)) = auth {
            cmd.arg("--user").arg(user).arg("--pass").arg(pass);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node (the SMTP sink)");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, mut lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = tokio::time::timeout(Duration::from_secs(20), lines.recv())
            .await
            .expect("the SMTP sink did not start within 20 s")
            .expect("the SMTP sink exited at start");
        let port = first
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the SMTP sink said {first:?}"));
        SmtpSink {
            port,
            ca_file,
            child,
            lines,
        }
    }

    /// The next message accepted, waiting up to `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Received> {
        let line = tokio::time::timeout(within, self.lines.recv())
            .await
            .ok()??;
        Some(serde_json::from_str(&line).unwrap())
    }

    /// Stops the sink (nothing listens on its port afterwards).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
