//! The agent channel shared by the `pilothouse-agent` binary and the control plane.
//!
//! It owns the wire format between them and every cryptographic decision on it:
//!
//! - [`keys`]: X-Wing (ML-KEM-768 + X25519) and Ed25519 key types.
//! - [`envelope`]: commands sealed to one agent and signed by the control plane, and
//!   results sealed to the control plane and signed by the agent.
//! - [`replay`]: the agent's replay guard (exactly-once execution over at-least-once
//!   delivery).
//! - [`registration`]: signed key registrations for activation and rotation.
//! - [`renewal`]: certificate renewals signed by the agent's identity key.
//! - [`release`]: agent releases signed by the release key (not the control plane's).
//! - [`api`]: the agent gateway's HTTP request and response bodies.
//! - [`token`]: the one-time registration token (`pht1_...`) and the CA pin it carries.
//! - [`ops`]: the operation catalogue: kinds, risk levels and the rules for
//!   their arguments, checked by the control plane and again by the agent.
//! - [`pqc`]: the post-quantum states of a server's command channel.
//! - [`version`]: the order of agent versions.
//!
//! All but [`ops`], [`pqc`], [`version`] and [`ChannelError`] sit behind feature `crypto`
//! (on by default); the dashboard's browser build uses the crate without it.
//!
//! Everything is synchronous and pure: no I/O, no clock and no global RNG inside the
//! protocol functions. Time is a parameter (`now_ms`, Unix milliseconds) and so is
//! randomness (any [`CryptoRng`]; [`os_rng`] for production, a seeded RNG in tests).
//!
//! Past this crate an attacker who controls the network between control plane and
//! agent (or a relay in between) cannot read payloads, alter or redirect messages,
//! or get an agent to run an expired or replayed command. See each module for what
//! it does and does not defend against.

#[cfg(feature = "crypto")]
pub mod api;
#[cfg(feature = "crypto")]
pub mod checkpoint;
#[cfg(feature = "crypto")]
pub mod envelope;
mod error;
#[cfg(feature = "crypto")]
pub mod keys;
pub mod ops;
pub mod pqc;
#[cfg(feature = "crypto")]
pub mod registration;
#[cfg(feature = "crypto")]
pub mod release;
#[cfg(feature = "crypto")]
pub mod renewal;
#[cfg(feature = "crypto")]
pub mod replay;
#[cfg(feature = "crypto")]
pub mod token;
pub mod version;
#[cfg(feature = "crypto")]
mod wire;

pub use error::{ChannelError, ReplayKind};
pub use pqc::PqcState;

/// How far in the future a message may be dated before it is refused: the
/// agent's and the control plane's clocks may differ by this much.
pub const MAX_CLOCK_SKEW_MS: i64 = 30_000;

#[cfg(feature = "crypto")]
pub use checkpoint::{sign_checkpoint, verify_checkpoint, Checkpoint};
#[cfg(feature = "crypto")]
pub use envelope::{
    open_chunk, open_command, open_result, open_signed_command, seal_chunk, seal_command,
    seal_result, sign_command, ChunkHeader, CommandHeader, Envelope, EnvelopeHeader, OpenedChunk,
    OpenedCommand, OpenedResult, OperationHeader, ResultHeader, ResultStatus, SealedChunk,
    SealedCommand, SealedResult, SignedCommand,
};
#[cfg(feature = "crypto")]
pub use keys::{KemPublicKey, KemSecretKey, KeyId, SigningKey, VerifyingKey};
#[cfg(feature = "crypto")]
pub use registration::{
    sign_registration, verify_registration, KeyRegistration, SignedKeyRegistration,
    VerifiedKeyRegistration,
};
#[cfg(feature = "crypto")]
pub use renewal::{sign_renewal, verify_renewal, SignedRenewal};
#[cfg(feature = "crypto")]
pub use replay::ReplayGuard;

/// The `rand_core` version the RNG parameters use, so callers name the same traits.
#[cfg(feature = "crypto")]
pub use rand_core;
#[cfg(feature = "crypto")]
pub use rand_core::CryptoRng;

/// Version of the agent wire protocol. Every message carries it; a peer refuses
/// versions it does not know instead of guessing.
pub const PROTOCOL_VERSION: u16 = 1;

/// The operating system's RNG as a [`CryptoRng`].
#[cfg(feature = "crypto")]
pub type OsRng = rand_core::UnwrapErr<getrandom::SysRng>;

/// The operating system's RNG, for key generation and sealing in production.
///
/// Panics (inside a draw) if the OS cannot supply randomness at all. On Linux that
/// means `getrandom(2)` itself failing, which it does not after boot (it blocks until
/// the pool is seeded). There is no safe way to seal or generate keys without
/// randomness, so stopping is the right outcome.
#[cfg(feature = "crypto")]
pub fn os_rng() -> OsRng {
    rand_core::UnwrapErr(getrandom::SysRng)
}
