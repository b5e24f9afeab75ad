//! Plain types of operations and approvals, shared with the wasm front end:
//! ids, states, the approval rule and the views the pages render.
//!
//! The catalogue itself (kinds, risk levels, argument rules) is the
//! channel's [`channel::ops`], so the control plane, the agent and the pages
//! read one definition.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

pub use channel::ops::{Capabilities, OpError, OpKind, Operation, Origin, Risk};

use crate::{AgentId, Role, Timestamp, UnknownValue, UserId};

/// An operation's id: `op_` and 24 hex digits. Random, never reused.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OperationId(pub String);

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl OperationId {
    pub fn parse(s: &str) -> Option<OperationId> {
        let hex = s.strip_prefix("op_")?;
        (hex.len() == 24
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| OperationId(s.to_string()))
    }
}

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $str:literal, $label:literal;)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name in the database and in URLs.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $str,)+
                }
            }

            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownValue::new($what, s))
            }
        }
    };
}

named_enum!(
    /// Where an operation is in its life. proposed -> approved -> dispatched
    /// -> running -> succeeded | failed; or rejected, expired, cancelled or
    /// halted (a fleet operation stopped by its error threshold or an Admin).
    OperationState, "operation state" {
        Proposed => "proposed", "Awaiting approval";
        Approved => "approved", "Approved";
        Rejected => "rejected", "Rejected";
        Expired => "expired", "Expired";
        Dispatched => "dispatched", "Dispatched";
        Running => "running", "Running";
        Succeeded => "succeeded", "Succeeded";
        Failed => "failed", "Failed";
        Cancelled => "cancelled", "Cancelled";
        Halted => "halted", "Halted";
    }
);

impl OperationState {
    /// Nothing more will happen to it.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OperationState::Rejected
                | OperationState::Expired
                | OperationState::Succeeded
                | OperationState::Failed
                | OperationState::Cancelled
        )
    }
}

named_enum!(
    /// One target server of an operation.
    TargetState, "target state" {
        /// Approved, not yet sent (offline agent, or a later wave).
        Waiting => "waiting", "Waiting";
        /// Its command is queued or with the agent.
        Dispatched => "dispatched", "Dispatched";
        Succeeded => "succeeded", "Succeeded";
        Failed => "failed", "Failed";
        /// The approval ran out before the agent took the command.
        Expired => "expired", "Expired";
        Cancelled => "cancelled", "Cancelled";
        /// Never sent: the operation was halted first.
        Skipped => "skipped", "Skipped";
    }
);

impl TargetState {
    pub fn is_final(self) -> bool {
        !matches!(self, TargetState::Waiting | TargetState::Dispatched)
    }
}

/// Who may approve what: a Member approves low and medium risk on servers
/// that are not production; high risk, destructive, and anything on a
/// production server needs an Admin or Owner; a Viewer approves nothing.
/// The control plane applies it inside the approving transaction, with the
/// role read there; the pages use it only to decide which buttons to show.
pub fn approval_refusal(role: Role, risk: Risk, production: bool) -> Option<&'static str> {
    match role {
        Role::Viewer => Some("A Viewer approves nothing."),
        Role::Member if production => {
            Some("Operations on a production server need an Admin or Owner to approve them.")
        }
        Role::Member if risk >= Risk::High => {
            Some("High-risk and destructive operations need an Admin or Owner to approve them.")
        }
        _ => None,
    }
}

/// An organisation's rules for operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgPolicy {
    /// How long an approval holds: an approved operation that has not reached
    /// its agent by then expires instead of arriving late.
    pub approval_ttl_secs: i64,
    /// The two-person rule applies from this risk upwards (`None`: off):
    /// nobody runs such an operation on their own approval.
    pub two_person_from: Option<Risk>,
    /// Whether the built-in AI Pilot proposes anything.
    pub pilot_enabled: bool,
    /// Whether new servers start with Production Protection on.
    pub production_default: bool,
    /// How long a deleted server can be restored.
    pub delete_grace_secs: i64,
}

impl Default for OrgPolicy {
    fn default() -> Self {
        Self {
            approval_ttl_secs: 3600,
            two_person_from: Some(Risk::High),
            pilot_enabled: true,
            production_default: false,
            delete_grace_secs: 7 * 86_400,
        }
    }
}

impl OrgPolicy {
    /// Whether the two-person rule covers this risk.
    pub fn needs_second_person(&self, risk: Risk) -> bool {
        self.two_person_from.is_some_and(|from| risk >= from)
    }
}

/// A watched unit's state and since when it has been in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitState {
    pub state: String,
    pub since: Timestamp,
}

/// Watched units by name.
pub type UnitStates = std::collections::BTreeMap<String, UnitState>;

/// A watched backup profile: its last success as the agent reports it, and
/// when the control plane first heard of the profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupState {
    pub last_success: Option<Timestamp>,
    pub seen: Timestamp,
}

impl BackupState {
    /// Since when no success is known: the last one, or else when the
    /// profile was first reported.
    pub fn since(&self) -> Timestamp {
        self.last_success.unwrap_or(self.seen)
    }
}

/// Watched backup profiles by name.
pub type BackupStates = std::collections::BTreeMap<String, BackupState>;

/// What the AI Pilot found on a server, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingView {
    pub at: Timestamp,
    pub kind: OpKind,
    /// `proposed` or `refused`.
    pub outcome: String,
    pub operation: Option<OperationId>,
    pub reason: String,
    pub evidence: String,
}

/// A target of an operation as its pages show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetView {
    pub agent: AgentId,
    pub hostname: String,
    pub production: bool,
    pub state: TargetState,
    pub plan_hash: String,
    pub command: Option<crate::CommandId>,
}

/// An approval as the operation page shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalView {
    pub user: UserId,
    pub label: String,
    pub role: Role,
    pub reason: String,
    pub at: Timestamp,
}

/// One entry of an operation's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: Timestamp,
    /// The operation's state, or a target's (then `agent` says which).
    pub state: String,
    pub agent: Option<AgentId>,
    pub actor: String,
    pub reason: Option<String>,
}

/// An operation as the Approvals page and the operation page show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationView {
    pub id: OperationId,
    pub kind: OpKind,
    /// One line: `restart_service nginx.service`.
    pub summary: String,
    /// The arguments as JSON, for the plan view.
    pub args: String,
    pub risk: Risk,
    pub state: OperationState,
    pub origin: Origin,
    pub proposed_by: Option<UserId>,
    pub proposer: String,
    pub reason: String,
    pub evidence: Option<String>,
    pub self_approved: bool,
    /// The label selector the targets were chosen by, if any.
    pub selector: Option<String>,
    /// Targets in flight at most (0: all at once).
    pub max_parallel: i64,
    pub error_threshold: i64,
    pub created_at: Timestamp,
    pub approval_expires_at: Option<Timestamp>,
    pub targets: Vec<TargetView>,
    pub approvals: Vec<ApprovalView>,
}

impl OperationView {
    /// Whether any target is a production server.
    pub fn touches_production(&self) -> bool {
        self.targets.iter().any(|t| t.production)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_approval_rule_matrix() {
        for role in Role::ALL {
            for risk in Risk::ALL {
                for production in [false, true] {
                    let allowed = approval_refusal(role, risk, production).is_none();
                    let expected = match role {
                        Role::Owner | Role::Admin => true,
                        Role::Member => risk <= Risk::Medium && !production,
                        Role::Viewer => false,
                    };
                    assert_eq!(
                        allowed, expected,
                        "{role:?} {risk:?} production={production}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_two_person_rule_applies_from_its_level() {
        let p = OrgPolicy::default();
        assert!(!p.needs_second_person(Risk::Medium));
        assert!(p.needs_second_person(Risk::High) && p.needs_second_person(Risk::Destructive));
        let off = OrgPolicy {
            two_person_from: None,
            ..OrgPolicy::default()
        };
        assert!(!off.needs_second_person(Risk::Destructive));
    }

    #[test]
    fn names_round_trip() {
        for s in OperationState::ALL {
            assert_eq!(s.as_str().parse::<OperationState>().unwrap(), *s);
        }
        for s in TargetState::ALL {
            assert_eq!(s.as_str().parse::<TargetState>().unwrap(), *s);
        }
        assert!(OperationId::parse("op_0123456789abcdef01234567").is_some());
        assert!(OperationId::parse("op_../../x").is_none());
    }
}
