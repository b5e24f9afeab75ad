//! Signed audit checkpoints: the control plane's audit key (Ed25519, its own
//! key, not the command key) signs an organisation's event count and the hash
//! of its last event at a time. A customer who keeps the checkpoints outside
//! the control plane can later check an export of the audit log against them
//! offline: a truncated or rewritten tail no longer matches a checkpoint it
//! already holds, which an internal hash chain alone cannot show.
//!
//! The signed message is the label [`CHECKPOINT_LABEL`], then the fields in
//! order, each length-prefixed (see `wire::Canonical`). Serialize with
//! `serde_json`: one checkpoint per line in a checkpoints file.

use serde::{Deserialize, Serialize};

use crate::error::ChannelError;
use crate::keys::{KeyId, SigningKey, VerifyingKey, SIGNATURE_BYTES};
use crate::wire::{self, Canonical};
use crate::PROTOCOL_VERSION;

/// Label of a signed checkpoint.
pub const CHECKPOINT_LABEL: &str = "pilothouse/audit-checkpoint/v1";

/// One organisation's chain at a moment: `count` events, the last one's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub v: u16,
    /// The organisation's id in the control plane.
    pub org: i64,
    /// Events in the chain: the last one's sequence number.
    pub count: i64,
    /// The hash of event `count` (64 zeros for an empty chain).
    pub head_hash: String,
    /// Unix milliseconds when it was signed.
    pub at: i64,
    pub signer_key_id: KeyId,
    #[serde(
        serialize_with = "wire::ser_b64",
        deserialize_with = "wire::de_b64_array::<_, SIGNATURE_BYTES>"
    )]
    pub signature: [u8; SIGNATURE_BYTES],
}

fn message(v: u16, org: i64, count: i64, head_hash: &str, at: i64, signer: &KeyId) -> Vec<u8> {
    Canonical::new(CHECKPOINT_LABEL)
        .u16(v)
        .i64(org)
        .i64(count)
        .str(head_hash)
        .i64(at)
        .str(signer.as_str())
        .finish()
}

/// Signs a checkpoint with the audit key.
///
/// # Errors
/// [`ChannelError::InvalidField`] for a negative count or a head hash that is
/// not 64 lowercase hex digits.
pub fn sign_checkpoint(
    key: &SigningKey,
    org: i64,
    count: i64,
    head_hash: &str,
    at: i64,
) -> Result<Checkpoint, ChannelError> {
    if count < 0 {
        return Err(ChannelError::InvalidField("count"));
    }
    if head_hash.len() != 64
        || !head_hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ChannelError::InvalidField("head_hash"));
    }
    let signer_key_id = key.key_id();
    let signature = key.sign(&message(
        PROTOCOL_VERSION,
        org,
        count,
        head_hash,
        at,
        &signer_key_id,
    ));
    Ok(Checkpoint {
        v: PROTOCOL_VERSION,
        org,
        count,
        head_hash: head_hash.to_string(),
        at,
        signer_key_id,
        signature,
    })
}

/// Verifies a checkpoint's signature under the pinned audit key.
///
/// # Errors
/// [`ChannelError::UnknownVersion`], or [`ChannelError::BadSignature`] for
/// another key or any changed field.
pub fn verify_checkpoint(c: &Checkpoint, key: &VerifyingKey) -> Result<(), ChannelError> {
    if c.v != PROTOCOL_VERSION {
        return Err(ChannelError::UnknownVersion(u64::from(c.v)));
    }
    if c.signer_key_id != key.key_id() {
        return Err(ChannelError::BadSignature);
    }
    key.verify(
        &message(c.v, c.org, c.count, &c.head_hash, c.at, &c.signer_key_id),
        &c.signature,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "ab00000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn a_checkpoint_verifies_under_its_key_only_and_unchanged() {
        let key = SigningKey::generate();
        let c = sign_checkpoint(&key, 7, 42, HEAD, 1_700_000_000_000).unwrap();
        verify_checkpoint(&c, key.verifying_key()).unwrap();
        let json = serde_json::to_string(&c).unwrap();
        let back: Checkpoint = serde_json::from_str(&json).unwrap();
        verify_checkpoint(&back, key.verifying_key()).unwrap();

        let other = SigningKey::generate();
        assert_eq!(
            verify_checkpoint(&c, other.verifying_key()),
            Err(ChannelError::BadSignature)
        );
        for changed in [
            Checkpoint {
                count: 41,
                ..c.clone()
            },
            Checkpoint {
                org: 8,
                ..c.clone()
            },
            Checkpoint {
                at: c.at + 1,
                ..c.clone()
            },
            Checkpoint {
                head_hash: HEAD.replace("ab", "ac"),
                ..c.clone()
            },
        ] {
            assert_eq!(
                verify_checkpoint(&changed, key.verifying_key()),
                Err(ChannelError::BadSignature)
            );
        }
        assert_eq!(
            sign_checkpoint(&key, 7, 1, "not-a-hash", 0),
            Err(ChannelError::InvalidField("head_hash"))
        );
    }
}
