//! The agent gateway's HTTP messages (`/agent/v1/*`), shared by the agent and
//! the control plane. JSON bodies; unknown fields are refused so a typo or a
//! newer peer is noticed rather than silently ignored.

use serde::{Deserialize, Serialize};

use crate::{
    KemPublicKey, SealedCommand, SealedResult, SignedCommand, SignedKeyRegistration, VerifyingKey,
};

/// `POST /agent/v1/enrol` (TLS without a client certificate). `Debug` leaves
/// the token out.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// The whole registration token (`pht1_<secret>_<CA pin>`).
    pub token: String,
    /// PEM CSR for the agent's TLS client key.
    pub csr_pem: String,
    /// The agent's Ed25519 identity key.
    pub identity_key: VerifyingKey,
    /// The agent's X-Wing public key, absent in classical fallback.
    pub kem_key: Option<KemPublicKey>,
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
    /// The control plane's command-signing key: every command must verify under it.
    pub command_verifying_key: VerifyingKey,
    /// The control plane's KEM key: results are sealed to it.
    pub control_kem_key: KemPublicKey,
}

/// `POST /agent/v1/token` (mTLS): a short-lived JWT for the other endpoints.
/// `Debug` leaves the token out.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenResponse {
    pub token: String,
    pub expires_in_secs: i64,
}

impl std::fmt::Debug for EnrolRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolRequest")
            .field("token", &"[redacted]")
            .field("identity_key", &self.identity_key)
            .field("kem_key", &self.kem_key)
            .field("hostname", &self.hostname)
            .field("agent_version", &self.agent_version)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token", &"[redacted]")
            .field("expires_in_secs", &self.expires_in_secs)
            .finish()
    }
}

/// `POST /agent/v1/poll` (mTLS + JWT): held until a command is queued or the timeout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    /// How long the agent is willing to wait, capped by the server.
    pub wait_secs: Option<u64>,
}

/// A command as delivered: sealed to the agent's KEM key, or only signed while
/// the agent has none (classical fallback).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "form", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeliveredCommand {
    Sealed { envelope: SealedCommand },
    Signed { envelope: SignedCommand },
}

impl DeliveredCommand {
    pub fn header(&self) -> &crate::CommandHeader {
        match self {
            DeliveredCommand::Sealed { envelope } => envelope.header(),
            DeliveredCommand::Signed { envelope } => envelope.header(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollResponse {
    pub commands: Vec<DeliveredCommand>,
}

/// Command kinds of this protocol version.
pub mod kinds {
    /// Round trip; the agent answers "pong".
    pub const PING: &str = "ping";
    /// Make new identity, KEM and TLS keys and register them ([`super::KeysRequest`]).
    pub const ROTATE_KEYS: &str = "rotate_keys";
    /// Make an X-Wing key if there is none and register it.
    pub const REGISTER_PQC_KEY: &str = "register_pqc_key";
    /// Download, check and switch to a signed agent release ([`super::UpdateAgentArgs`]).
    pub const UPDATE_AGENT: &str = "update_agent";

    /// The kinds that may travel signed but not encrypted, to an agent in
    /// classical fallback: those whose arguments are never secret. Both ends
    /// enforce it: [`crate::sign_command`] refuses to sign any other kind and
    /// [`crate::open_signed_command`] refuses to open one.
    pub const UNSEALED: [&str; 4] = [PING, ROTATE_KEYS, REGISTER_PQC_KEY, UPDATE_AGENT];

    /// Whether `kind` may travel signed but not sealed.
    pub fn may_travel_unsealed(kind: &str) -> bool {
        UNSEALED.contains(&kind)
    }
}

/// `POST /agent/v1/result` (mTLS + JWT).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultRequest {
    /// Sealed to the control plane's KEM key, signed by the agent's identity key.
    pub result: SealedResult,
}

/// `POST /agent/v1/keys` (mTLS + JWT): new keys, signed by the current identity
/// key and by the new one. With `csr_pem` the TLS certificate is replaced too;
/// the registration's `tls_cert_fingerprint` is then the hex SHA-256 of the
/// CSR's PEM text, binding the CSR to the signed registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysRequest {
    pub registration: SignedKeyRegistration,
    pub csr_pem: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysResponse {
    /// The new client certificate when a CSR was sent.
    pub client_cert_pem: Option<String>,
    pub cert_not_after: Option<i64>,
}

/// `POST /agent/v1/renew` (mTLS + JWT): a new certificate for the same key
/// pair or a new one, before the current one expires. The CSR is signed by
/// the agent's identity key: the TLS key alone cannot renew.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr_pem: String,
    pub renewal: crate::SignedRenewal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewResponse {
    pub client_cert_pem: String,
    pub cert_not_after: i64,
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
    /// The watched units' states (`systemctl is-active`), when the agent watches any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<UnitStatus>,
    /// The watched backup profiles' last successful runs (the mtime of each
    /// profile's stamp file), when the agent watches any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupStatus>,
}

/// One watched backup profile in a sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupStatus {
    pub profile: String,
    /// Unix milliseconds of the last success; `None` when the stamp file
    /// does not exist (no successful run yet).
    pub last_success_at: Option<i64>,
}

/// One watched unit's state in a sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitStatus {
    pub unit: String,
    /// `active`, `failed`, `inactive`, `activating`, ... or `unknown`.
    pub state: String,
}

/// Most watched units one sample reports.
pub const MAX_SAMPLE_UNITS: usize = 64;
/// Most watched backup profiles one sample reports.
pub const MAX_SAMPLE_BACKUPS: usize = 64;

/// `POST /agent/v1/metrics` (mTLS + JWT): one sample, or a backlog after an
/// outage (oldest first). Written in one transaction; resending is harmless.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsBatch {
    pub samples: Vec<MetricSample>,
    /// How the agent itself is doing, as of sending the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<AgentHealth>,
}

/// How the agent itself is doing: sent with every metrics batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentHealth {
    /// The agent's wall clock when it sent the batch (Unix milliseconds). The
    /// control plane compares it with its own clock on receipt and shows a
    /// difference beyond [`crate::MAX_CLOCK_SKEW_MS`]: the agent
    /// checks the validity window of signed commands against this clock.
    pub sent_at: i64,
    /// Seconds since the agent process started.
    pub uptime_secs: u64,
    /// The last warning or error the agent logged since it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

/// The last warning or error an agent logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastError {
    /// Seconds between the error and sending the batch (an age, so that a
    /// skewed agent clock does not move it).
    pub age_secs: u64,
    /// The log line's message and error, at most [`MAX_ERROR_CHARS`] characters.
    pub message: String,
}

/// Longest [`LastError::message`] an agent sends and the control plane takes.
pub const MAX_ERROR_CHARS: usize = 500;

/// `POST /agent/v1/output`: one live output chunk (or an empty keep-alive)
/// of a running command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRequest {
    pub chunk: crate::SealedChunk,
}

/// The answer to an output chunk: whether the command was cancelled (the
/// agent then kills the task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputResponse {
    pub cancel: bool,
}

/// `POST /agent/v1/capabilities`: what the agent's config lets it run. Sent at
/// every start; the control plane stores it when it changed. Also carries the
/// version the agent runs and, once, what became of its last self-update.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesRequest {
    pub capabilities: crate::ops::Capabilities,
    /// The release version this agent runs (what its release manifest names,
    /// or its own build's version when it runs the binary it was installed with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// What became of the last self-update, sent until the control plane took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateReport>,
}

/// The arguments of an `update_agent` command. Not secret: the command may
/// travel signed but unsealed to an agent in classical fallback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgentArgs {
    /// The release manifest (`release.txt`, see [`crate::release`]) exactly as
    /// the release key signed it. The agent checks it against the release key
    /// it pinned, never one the control plane sends.
    pub manifest: String,
    /// Switch even to an older version than the one running.
    #[serde(default)]
    pub allow_downgrade: bool,
}

/// `GET /agent/v1/release/{platform}` (mTLS + JWT): the agent binary of the
/// release the control plane offers for `platform`, as bytes.
pub const RELEASE_DOWNLOAD_PREFIX: &str = "/agent/v1/release/";

/// The most bytes an agent binary may have; a longer download is refused.
pub const MAX_RELEASE_BYTES: u64 = 64 * 1024 * 1024;

/// What became of a self-update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateOutcome {
    /// The new version ran healthy long enough and was marked stable.
    Applied,
    /// The new version did not stay up; the previous one was restored.
    Reverted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateReport {
    pub outcome: UpdateOutcome,
    pub from_version: String,
    pub to_version: String,
    /// Why, for a revert (at most 500 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The most samples one batch may carry (three hours at one a minute, well
/// under the gateway's body limit); a longer backlog goes in several batches.
pub const MAX_BATCH_SAMPLES: usize = 180;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_tokens() {
        let r = TokenResponse {
            token: "eyJsecret".into(),
            expires_in_secs: 300,
        };
        assert!(!format!("{r:?}").contains("eyJsecret"));
        let e = EnrolRequest {
            token: "pht1_secretsecret".into(),
            csr_pem: String::new(),
            identity_key: crate::SigningKey::generate().verifying_key().clone(),
            kem_key: None,
            hostname: "web".into(),
            agent_version: "1".into(),
        };
        assert!(!format!("{e:?}").contains("secretsecret"));
    }
}
