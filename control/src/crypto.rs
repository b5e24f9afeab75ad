//! The one place that makes random secrets, hashes tokens and compares secrets.
//!
//! Invariant: every token handed to a person (setup code, invite link, session
//! id) has at least 128 bits from the OS RNG, and only its SHA-256 is stored, so
//! a copy of the database does not let anyone use a live token.

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A random token of `bytes` bytes, hex-encoded.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: impl AsRef<[u8]>) -> String {
    hex::encode(Sha256::digest(data.as_ref()))
}

/// Hash used to store a token: SHA-256 with a domain label so that a hash from
/// one kind of token can never be replayed as another.
pub fn token_hash(kind: &str, token: &str) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0u8]);
    h.update(token.trim().as_bytes());
    hex::encode(h.finalize())
}

/// Constant-time equality for secrets of equal length.
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_domain_separated() {
        let a = random_token(16);
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_token(16));
        assert_ne!(token_hash("invite", &a), token_hash("setup", &a));
        assert_eq!(
            token_hash("invite", &a),
            token_hash("invite", &format!(" {a}\n"))
        );
        assert!(secret_eq(b"abc", b"abc") && !secret_eq(b"abc", b"abd") && !secret_eq(b"a", b"ab"));
    }
}
