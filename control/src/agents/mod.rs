//! Agents: registration tokens and enrolment ([`tokens`]), the agent session
//! that every agent request is authenticated into ([`session`]), key rounds and
//! certificate renewal ([`keys`]), the servers list ([`fleet`]) and safe
//! delete with a grace period ([`deletion`]), and the commands that install an
//! agent ([`install`]), and what agents report of their version and
//! self-updates ([`updates`]).
//!
//! An agent is recognised on the gateway only by the SHA-256 fingerprint of the
//! certificate this control plane issued to it, and never once it is revoked.
//! Commands for agents live in [`crate::commands`]; waking their polls in
//! [`crate::delivery`].

pub mod deletion;
pub(crate) mod fleet;
pub mod install;
mod keys;
pub(crate) mod session;
mod tokens;
pub mod updates;

pub(crate) use fleet::revoke;
pub use fleet::{get, list, summary};
pub use keys::{accept_key_registration, register_keys, renew_cert, KeyAction};
pub use session::{
    authenticate, touch, AgentSession, Handover, Heartbeats, HANDOVER_SECS, TOUCH_EVERY_SECS,
};
pub use tokens::{
    create_registration_token, create_registration_token_cli, enrol, list_registration_tokens,
    list_registration_tokens_cli, revoke_registration_token, revoke_registration_token_cli,
    Enrolled, Enrolment, NewToken, DEFAULT_TOKEN_TTL_SECS, ENROL_FAILURES_PER_CLIENT,
    ENROL_WINDOW_SECS, MAX_TOKEN_TTL_SECS,
};

use crate::access::Capability;
use crate::Role;

/// A server not heard from for this long shows Offline.
pub const OFFLINE_AFTER_SECS: i64 = 90;

/// Register, rotate, activate and revoke agents (Owner, Admin).
pub struct ManageAgents;
impl Capability for ManageAgents {
    const DESCRIPTION: &'static str = "manage servers and agents";
    fn allows(role: Role) -> bool {
        role.manages_members()
    }
}
