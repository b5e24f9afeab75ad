//! The agent channel shared by the `pilothouse-agent` binary and the control plane.
//!
//! It owns the wire format between them. For now it carries only the protocol
//! version; the sealed command envelope (X-Wing + AEAD + Ed25519) lands with the
//! agent channel work.

/// Version of the agent wire protocol. Every message carries it; a peer refuses
/// versions it does not know instead of guessing.
pub const PROTOCOL_VERSION: u16 = 1;
