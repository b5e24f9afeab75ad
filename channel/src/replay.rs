//! The agent's replay state: the last executed sequence number and a bounded journal
//! of recently executed command ids.
//!
//! Delivery from the control plane is at-least-once; this guard makes execution
//! exactly-once in effect. [`open_command`](crate::open_command) reads it and refuses
//! anything at or below the last committed sequence, or any command id in the
//! journal. The agent calls [`ReplayGuard::commit`] after executing a command and
//! persists the guard (it is serde) before posting the result.
//!
//! Invariant: `last_sequence` never decreases and the journal never holds more than
//! [`REPLAY_JOURNAL_CAPACITY`] ids, also after loading a tampered or hand-edited file.
//!
//! An attacker who replays or reorders signed envelopes gets
//! [`ChannelError::Replay`]. An attacker who can write the agent's state file can
//! roll it back and re-enable old, still unexpired commands: the file must be as
//! protected as the agent's keys. A crash between executing and persisting the
//! commit can lead to one re-execution; commit before executing instead if the
//! operation must run at most once.

use crate::envelope::{CommandHeader, OpenedCommand, MAX_ID_BYTES};
use crate::error::{ChannelError, ReplayKind};
use crate::wire;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// How many executed command ids the journal keeps (oldest dropped first).
pub const REPLAY_JOURNAL_CAPACITY: usize = 1024;

/// Replay state of one agent. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "GuardRepr")]
pub struct ReplayGuard {
    last_sequence: u64,
    executed: VecDeque<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardRepr {
    last_sequence: u64,
    executed: Vec<String>,
}

impl TryFrom<GuardRepr> for ReplayGuard {
    type Error = ChannelError;

    fn try_from(r: GuardRepr) -> Result<Self, ChannelError> {
        if r.executed.len() > REPLAY_JOURNAL_CAPACITY {
            return Err(ChannelError::Malformed("replay journal too long"));
        }
        if !r.executed.iter().all(|id| wire::valid_id(id, MAX_ID_BYTES)) {
            return Err(ChannelError::Malformed("replay journal id"));
        }
        Ok(Self {
            last_sequence: r.last_sequence,
            executed: r.executed.into(),
        })
    }
}

impl ReplayGuard {
    /// A fresh guard for a newly registered agent: accepts sequence 1 upwards.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest committed sequence number (0 before the first command).
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// Whether `command_id` is in the journal of executed commands.
    pub fn has_executed(&self, command_id: &str) -> bool {
        self.executed.iter().any(|id| id == command_id)
    }

    /// Refuses a command that was executed or is not newer than the last one.
    ///
    /// # Errors
    /// [`ChannelError::Replay`] with [`ReplayKind::AlreadyExecuted`] (checked first,
    /// so a redelivery after a lost result is recognisable) or
    /// [`ReplayKind::StaleSequence`].
    pub fn check(&self, header: &CommandHeader) -> Result<(), ChannelError> {
        if self.has_executed(&header.command_id) {
            return Err(ChannelError::Replay(ReplayKind::AlreadyExecuted));
        }
        if header.sequence <= self.last_sequence {
            return Err(ChannelError::Replay(ReplayKind::StaleSequence));
        }
        Ok(())
    }

    /// Records that `cmd` was executed. Persist the guard afterwards.
    pub fn commit(&mut self, cmd: &OpenedCommand) {
        let h = cmd.header();
        self.last_sequence = self.last_sequence.max(h.sequence);
        if !self.has_executed(&h.command_id) {
            self.executed.push_back(h.command_id.clone());
        }
        while self.executed.len() > REPLAY_JOURNAL_CAPACITY {
            self.executed.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executed(seq: u64) -> OpenedCommand {
        OpenedCommand::unchecked_for_test(CommandHeader {
            agent_id: "a".into(),
            command_id: format!("cmd-{seq}"),
            sequence: seq,
            issued_at: 0,
            expires_at: 1,
            kind: "k".into(),
            operation: None,
        })
    }

    #[test]
    fn journal_drops_the_oldest_ids_at_capacity() {
        let mut g = ReplayGuard::new();
        let n = REPLAY_JOURNAL_CAPACITY as u64 + 5;
        for seq in 1..=n {
            g.commit(&executed(seq));
        }
        assert_eq!(g.executed.len(), REPLAY_JOURNAL_CAPACITY);
        assert!(!g.has_executed("cmd-5"));
        assert!(g.has_executed("cmd-6"));
        assert!(g.has_executed(&format!("cmd-{n}")));
        assert_eq!(g.last_sequence(), n);
        // Committing an older command never moves the sequence back.
        g.commit(&executed(3));
        assert_eq!(g.last_sequence(), n);
        let restored: ReplayGuard =
            serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(restored, g);
    }

    #[test]
    fn persisted_guard_is_bounded() {
        let ok = r#"{"last_sequence":4,"executed":["a","b"]}"#;
        let g: ReplayGuard = serde_json::from_str(ok).unwrap();
        assert_eq!(g.last_sequence(), 4);
        assert!(g.has_executed("b"));
        assert_eq!(serde_json::to_string(&g).unwrap(), ok);

        let ids: Vec<String> = (0..=REPLAY_JOURNAL_CAPACITY)
            .map(|i| i.to_string())
            .collect();
        let too_long = serde_json::json!({"last_sequence": 1, "executed": ids});
        assert!(serde_json::from_value::<ReplayGuard>(too_long).is_err());
        let bad_id = r#"{"last_sequence":4,"executed":["a b"]}"#;
        assert!(serde_json::from_str::<ReplayGuard>(bad_id).is_err());
    }
}
