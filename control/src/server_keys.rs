//! The control plane's own channel keys: the Ed25519 command-signing key that
//! every command carries a signature from, and the X-Wing key that agents seal
//! their results to. The server keeps them in the database, sealed under the
//! master key ([`crate::key_vault`]); they are made on first start.
//!
//! Whoever holds these keys can issue commands that agents accept, so they
//! are as sensitive as the agent CA's key.

use channel::{KemSecretKey, SigningKey};

pub struct ServerKeys {
    pub signing: SigningKey,
    pub kem: KemSecretKey,
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKeys")
            .field("signing", &self.signing.key_id())
            .field("kem", &self.kem.key_id())
            .finish()
    }
}

impl ServerKeys {
    /// New keys, held in memory only (tests; the server's come from
    /// [`crate::key_vault`]).
    pub fn generate() -> ServerKeys {
        ServerKeys {
            signing: SigningKey::generate(),
            kem: KemSecretKey::generate(),
        }
    }
}

/// A public key as stored in the database: its serde (base64url) form.
pub fn encode_key<T: serde::Serialize>(key: &T) -> String {
    match serde_json::to_value(key) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Parses a key stored by [`encode_key`].
pub fn decode_key<T: serde::de::DeserializeOwned>(stored: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(stored.to_string())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_round_trip_through_their_stored_form() {
        let a = ServerKeys::generate();
        let vk = encode_key(a.signing.verifying_key());
        assert_eq!(
            decode_key::<channel::VerifyingKey>(&vk).unwrap().key_id(),
            a.signing.key_id()
        );
        assert!(decode_key::<channel::VerifyingKey>("not a key").is_none());
    }
}
