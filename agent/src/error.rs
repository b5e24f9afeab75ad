//! The agent's top-level error: every failure a command can end with, and the
//! process exit code it maps to (2 for bad usage and a CA pin mismatch, 1 for
//! everything else). Messages are sentences for the operator and never carry key
//! material, tokens or command payloads.

use crate::config::ConfigError;
use crate::gateway::GatewayError;
use crate::pki::PkiError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The command line was wrong in a way [`crate::cli`] does not check (a malformed
    /// token or URL).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("cannot build or check a channel message: {0}")]
    Channel(#[from] channel::ChannelError),
    #[error(transparent)]
    Update(#[from] crate::update::UpdateError),
    /// Anything else, already phrased for the operator.
    #[error("{0}")]
    Failed(String),
}

impl AgentError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Usage(_) | AgentError::Gateway(GatewayError::PinMismatch) => 2,
            _ => 1,
        }
    }
}
