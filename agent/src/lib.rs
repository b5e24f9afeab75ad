//! The Pilothouse agent: registers with the control plane, then dials out to it
//! (HTTPS long-poll over mutual TLS, no inbound ports), runs the commands the
//! control plane signs and seals for it, and reports host metrics.
//!
//! - [`cli`]: the command line, parsed into a [`cli::Command`].
//! - [`token`]: the registration token and its CA pin.
//! - [`pki`]: rustls configurations, the pinned-CA verifier, TLS keys and CSRs.
//! - [`x509`]: the few certificate fields the agent reads.
//! - [`state`]: the state directory (keys, registration, journals), atomic writes.
//! - [`config`]: the local configuration and command allowlist.
//! - [`gateway`]: the HTTP client of `/agent/v1/*`, with the JWT.
//! - [`register`]: `pilothouse-agent register`.
//! - [`agent`]: opening, executing and reporting commands; key rotation; renewal.
//! - [`ops`]: catalogued operations: the local policy and how each runs here.
//! - [`metrics`]: `/proc` sampling and the offline backlog.
//! - [`health`]: uptime, clock and last error, sent with the metrics.
//! - [`run`]: `pilothouse-agent run`, the loops around [`agent`] and [`metrics`].
//! - [`status`]: `pilothouse-agent status`.
//! - [`backoff`]: retry pacing.
//! - [`sandbox`]: running one task with limits, a scrubbed environment and a timeout.
//! - [`vault`]: the local vault and `vault://local/NAME` references.
//! - [`redact`]: removing secrets from task output, as a stream.
//! - [`update`]: signed self-update, the launcher and crash-loop rollback.
//!
//! The protocol and its cryptography live in the `channel` crate; this crate adds
//! transport, storage and policy.

pub mod agent;
pub mod backoff;
pub mod cli;
pub mod config;
mod error;
pub mod gateway;
pub mod health;
pub mod metrics;
pub mod ops;
pub mod pki;
pub mod redact;
pub mod register;
pub mod run;
pub mod sandbox;
pub mod state;
pub mod status;
pub mod token;
pub mod update;
pub mod vault;
pub mod x509;

pub use error::AgentError;

/// This build's version, sent at enrolment. A binary the launcher started
/// reports its release version instead ([`update::Binary`]).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Wall-clock time as Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The PQC state's name, as the dashboard's Security tab shows it.
pub fn pqc_state(has_kem_key: bool) -> &'static str {
    channel::PqcState::of_agent(has_kem_key).label()
}

/// Makes this process non-dumpable (`PR_SET_DUMPABLE` 0): no core file, and no
/// ptrace or `/proc/PID/mem` access by other processes of its user. It holds its
/// keys and the local vault's values in memory, and the shipped build aborts on a
/// panic, which would otherwise dump core. Tasks it starts are not affected (the
/// flag is reset when they exec).
///
/// # Errors
/// The `prctl` call's error (it does not fail on Linux for this value).
pub fn forbid_core_dumps() -> std::io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_is_made_non_dumpable() {
        super::forbid_core_dumps().unwrap();
        assert_eq!(
            rustix::process::dumpable_behavior().unwrap(),
            rustix::process::DumpableBehavior::NotDumpable
        );
    }
}
