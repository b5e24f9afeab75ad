//! The agent gateway's HTTP messages (`/agent/v1/*`), shared by the agent and
//! the control plane. JSON bodies; unknown fields are refused so a typo or a
//! newer peer is noticed rather than silently ignored.

use serde::{Deserialize, Serialize};

/// `POST /agent/v1/enrol` (TLS without a client certificate).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// The whole registration token (`pht1_<secret>_<CA pin>`).
    pub token: String,
    /// PEM CSR for the agent's TLS client key.
    pub csr_pem: String,
    /// The agent's Ed25519 identity key (base64url).
    pub identity_key: String,
    /// The agent's X-Wing public key (base64url), absent in classical fallback.
    pub kem_key: Option<String>,
    pub kem_key_id: Option<String>,
    pub hostname: String,
    pub agent_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolResponse {
    pub agent_id: String,
    pub client_cert_pem: String,
    pub ca_cert_pem: String,
    /// Unix milliseconds.
    pub cert_not_after: i64,
}

/// `POST /agent/v1/token` (mTLS): a short-lived JWT for the other endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenResponse {
    pub token: String,
    pub expires_in_secs: i64,
}

/// `POST /agent/v1/poll` (mTLS + JWT): held until a command is queued or the timeout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    /// How long the agent is willing to wait, capped by the server.
    pub wait_secs: Option<u64>,
}

/// A command as delivered (the sealed form replaces this in the next protocol step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireCommand {
    pub id: String,
    pub seq: i64,
    pub kind: String,
    pub args: serde_json::Value,
    pub issued_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollResponse {
    pub commands: Vec<WireCommand>,
}

/// `POST /agent/v1/result` (mTLS + JWT).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultRequest {
    pub command_id: String,
    pub succeeded: bool,
    pub output: String,
}

/// Usage of one mounted filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskUsage {
    pub mount: String,
    pub used_bytes: u64,
    pub total_bytes: u64,
}

/// One metrics sample, taken every 60 s by the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSample {
    /// Unix milliseconds.
    pub at: i64,
    pub cpu_pct: f64,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
    pub disks: Vec<DiskUsage>,
    pub net_rx_bytes_per_sec: f64,
    pub net_tx_bytes_per_sec: f64,
    pub load: [f64; 3],
}

/// `POST /agent/v1/metrics` (mTLS + JWT): one sample, or a backlog after an
/// outage (oldest first). Written in one transaction; resending is harmless.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsBatch {
    pub samples: Vec<MetricSample>,
}

/// The most samples one batch may carry (three hours at one a minute, well
/// under the gateway's body limit); a longer backlog goes in several batches.
pub const MAX_BATCH_SAMPLES: usize = 180;
