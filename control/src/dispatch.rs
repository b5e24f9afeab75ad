//! In-memory wake-ups for agents' long-polls: a command committed for an
//! agent wakes the poll that agent holds, with no database polling loop.
//! With SQLite the process is alone, so memory is enough.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::AgentId;

/// Wakes the long-poll of an agent when a command for it is committed.
/// In memory: with SQLite the process is alone.
#[derive(Default, Debug)]
pub struct Dispatcher {
    waiters: Mutex<HashMap<AgentId, Arc<Notify>>>,
}

impl Dispatcher {
    pub fn slot(&self, agent: &AgentId) -> Arc<Notify> {
        let mut map = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(agent.clone()).or_default().clone()
    }

    /// Wakes the agent's poll now, or the next one if none is waiting.
    pub fn wake(&self, agent: &AgentId) {
        self.slot(agent).notify_one();
    }
}
