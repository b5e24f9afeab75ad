//! The post-quantum state of a server's command channel: one set of names for
//! the dashboard's Security tab and the agent's `status` command.

use serde::{Deserialize, Serialize};

/// The post-quantum state of a server's command channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PqcState {
    /// A registration token was issued but no agent has enrolled with it.
    AgentNotInstalled,
    /// A key round (activation or rotation) is open.
    PendingKeyRegistration,
    /// The agent has no ML-KEM key: commands travel signed only, and only the
    /// kinds that may (`api::kinds::UNSEALED`).
    ClassicalFallback,
    /// Commands are sealed to the agent's X-Wing key.
    PostQuantumActive,
}

impl PqcState {
    /// The state of an enrolled agent with no key round open.
    pub fn of_agent(has_kem_key: bool) -> Self {
        if has_kem_key {
            PqcState::PostQuantumActive
        } else {
            PqcState::ClassicalFallback
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            PqcState::AgentNotInstalled => "Agent not installed",
            PqcState::PendingKeyRegistration => "Pending key registration",
            PqcState::ClassicalFallback => "Classical fallback",
            PqcState::PostQuantumActive => "Post-quantum encryption active",
        }
    }
}
