//! The one error type of the channel.
//!
//! Owns the mapping from every way a message can fail to a variant the agent and the
//! control plane can act on. Invariant: no message (Display or Debug) ever carries key
//! material, plaintext payloads, or pieces of attacker-supplied input; at most a static
//! field name or a protocol version number.

/// Why a replayed command was refused. See [`ChannelError::Replay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayKind {
    /// The command id is in the journal of executed commands. At-least-once delivery
    /// makes this expected after a lost result: the agent should resend the result it
    /// already produced instead of executing again.
    AlreadyExecuted,
    /// The sequence number is not above the last one committed: an old command
    /// replayed, or a command overtaken by a newer one.
    StaleSequence,
}

/// Every failure of sealing, opening, parsing or verifying a channel message.
///
/// Opening checks run in a fixed order: size, version, structure, signature, addressee,
/// validity window, replay, and only then decryption. A message that fails several
/// checks reports the first.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelError {
    /// The input is larger than the limit for its message type
    /// ([`MAX_ENVELOPE_BYTES`](crate::envelope::MAX_ENVELOPE_BYTES),
    /// [`MAX_REGISTRATION_BYTES`](crate::registration::MAX_REGISTRATION_BYTES)).
    /// Checked before any parsing.
    #[error("message exceeds the size limit")]
    TooLarge,

    /// The input is not a well-formed message: not JSON, missing or extra fields, a
    /// byte field with the wrong length or bad base64, an id with forbidden characters.
    /// The string names the part that failed, never its content.
    #[error("malformed message ({0})")]
    Malformed(&'static str),

    /// The message declares a protocol version this build does not speak.
    #[error("unsupported protocol version {0}")]
    UnknownVersion(u64),

    /// The signature does not verify under the key the caller trusts, or the message
    /// names a different signing key. Nothing was decrypted.
    #[error("signature verification failed")]
    BadSignature,

    /// A correctly signed message addressed to a different agent.
    #[error("message addressed to another agent")]
    WrongAgent,

    /// A correctly signed message sealed to a KEM key other than the one supplied
    /// (for example a key that has since been rotated).
    #[error("message sealed to a different KEM key")]
    WrongRecipientKey,

    /// The current time is past the message's expiry.
    #[error("message expired")]
    Expired,

    /// The message is dated more than
    /// [`MAX_CLOCK_SKEW_MS`](crate::envelope::MAX_CLOCK_SKEW_MS) in the future, or its
    /// validity window is inverted (expires before it was issued).
    #[error("message not yet valid (clock skew or inverted validity window)")]
    NotYetValid,

    /// The command was already executed or is older than the last executed one.
    #[error("replayed command refused: {0:?}")]
    Replay(ReplayKind),

    /// Decapsulation or authenticated decryption failed: the KEM ciphertext, nonce or
    /// AEAD ciphertext was altered after a valid signature was made, or the message
    /// was sealed to another key with the same id.
    #[error("decryption failed")]
    DecryptionFailed,

    /// Key bytes of the wrong length or not a valid key (for example an ML-KEM
    /// encapsulation key that fails its modulus check, or a small-order Ed25519 key).
    #[error("invalid key")]
    InvalidKey,

    /// The caller asked to seal or sign something the protocol forbids: an empty or
    /// over-long id, forbidden characters, an inverted validity window, or a
    /// registration whose new identity key does not match the new signing key.
    /// The string names the field.
    #[error("invalid field: {0}")]
    InvalidField(&'static str),

    /// The payload is larger than [`MAX_PAYLOAD_BYTES`](crate::envelope::MAX_PAYLOAD_BYTES).
    #[error("payload exceeds the size limit")]
    PayloadTooLarge,

    /// A command of a kind that must be sealed (its arguments may be secret) was
    /// offered for, or arrived in, a signed-only envelope. See
    /// [`kinds::may_travel_unsealed`](crate::api::kinds::may_travel_unsealed).
    #[error("this command kind must travel sealed")]
    MustBeSealed,
}
