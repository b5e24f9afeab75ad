//! `pilothouse-agent status`: what this agent is, from its state directory alone
//! (no network). Reads without taking the lock, so it works next to a running agent;
//! it prints public key ids only, never key material.

use crate::state::{self, StateDir, StatusFile};
use crate::x509::{format_utc, CertInfo};
use crate::AgentError;
use std::fmt::Write as _;
use std::path::Path;

fn ago(now_ms: i64, then_ms: i64) -> String {
    let secs = (now_ms - then_ms) / 1000;
    match secs {
        s if s < 0 => "in the future".into(),
        s if s < 120 => format!("{s} s ago"),
        s if s < 2 * 3600 => format!("{} min ago", s / 60),
        s if s < 2 * 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// The status report, one `Label: value` per line.
pub fn status(state_dir: &Path, now_ms: i64) -> Result<String, AgentError> {
    let dir = StateDir::new(state_dir);
    dir.ensure_registered()?;
    dir.check_permissions()?;
    let record = dir.load_record()?;
    let keys = dir.load_keys(&record)?;
    let cert = CertInfo::from_pem(&keys.tls_cert_pem).map_err(|r| state::StateError::Corrupt {
        path: dir.file(state::TLS_CERT),
        reason: r.into(),
    })?;
    let last: StatusFile = dir.read_json_opt(state::STATUS)?.unwrap_or_default();
    let pending: Vec<serde_json::Value> = dir
        .read_json_opt(state::PENDING_RESULTS)?
        .unwrap_or_default();
    let backlog: Vec<serde_json::Value> = dir
        .read_json_opt(state::METRICS_BACKLOG)?
        .unwrap_or_default();

    let expiry = if cert.not_after_ms <= now_ms {
        "EXPIRED: register the agent again".to_string()
    } else {
        let left_h = (cert.not_after_ms - now_ms) / 3_600_000;
        if left_h < 48 {
            format!("{left_h} h left")
        } else {
            format!("{} days left", left_h / 24)
        }
    };
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<18}{value}");
    };
    line("Agent id:", record.agent_id.clone());
    line("Server:", record.server_url.clone());
    line("Hostname:", record.hostname.clone());
    line("PQC state:", crate::pqc_state(keys.kem.is_some()).into());
    line("Identity key id:", keys.identity.key_id().to_string());
    line(
        "KEM key id:",
        keys.kem
            .as_ref()
            .map_or_else(|| "none".into(), |k| k.key_id().to_string()),
    );
    line("Certificate:", format!("serial {}", cert.serial_hex));
    line(
        "  valid until:",
        format!("{} ({expiry})", format_utc(cert.not_after_ms)),
    );
    line("Registered:", format_utc(record.registered_at));
    line("Keys registered:", format_utc(record.keys_registered_at));
    line(
        "Last contact:",
        last.last_contact.map_or_else(
            || "never".into(),
            |t| format!("{} ({})", format_utc(t), ago(now_ms, t)),
        ),
    );
    line("Pending results:", pending.len().to_string());
    line("Metrics backlog:", format!("{} samples", backlog.len()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(61_000, 1_000), "60 s ago");
        assert_eq!(ago(3_600_000, 0), "60 min ago");
        assert_eq!(ago(3 * 86_400_000, 0), "3 days ago");
        assert_eq!(ago(0, 1_000), "in the future");
    }
}
