//! The control plane's own channel keys: the Ed25519 command-signing key that
//! every command carries a signature from, and the X-Wing key that agents seal
//! their results to. Both live in the data directory, mode 0600, created on
//! first start; start-up refuses key files that others can read.
//!
//! Whoever holds these files can issue commands that agents accept, so they
//! are as sensitive as the CA key beside them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use channel::{KemSecretKey, SigningKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read or write {path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`", path = .path.display())]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} is not a valid key file", path = .path.display())]
    Corrupt { path: PathBuf },
}

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

pub(crate) fn read_or_create(
    path: &Path,
    fresh: impl FnOnce() -> Vec<u8>,
) -> Result<Vec<u8>, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        let bytes = fresh();
        crate::files::write_new_private(path, hex::encode(&bytes).as_bytes()).map_err(io)?;
    }
    let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(io)?;
    hex::decode(text.trim()).map_err(|_| KeyFileError::Corrupt {
        path: path.to_path_buf(),
    })
}

impl ServerKeys {
    pub fn load_or_create(dir: &Path) -> Result<ServerKeys, KeyFileError> {
        let signing_path = dir.join("command-signing.key");
        let kem_path = dir.join("result-kem.key");
        let signing = read_or_create(&signing_path, || SigningKey::generate().to_bytes().to_vec())?;
        let signing = SigningKey::from_bytes(&signing)
            .map_err(|_| KeyFileError::Corrupt { path: signing_path })?;
        let kem = read_or_create(&kem_path, || KemSecretKey::generate().to_bytes().to_vec())?;
        let kem =
            KemSecretKey::from_bytes(&kem).map_err(|_| KeyFileError::Corrupt { path: kem_path })?;
        Ok(ServerKeys { signing, kem })
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
    fn keys_are_created_once_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let a = ServerKeys::load_or_create(dir.path()).unwrap();
        let b = ServerKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(a.signing.key_id(), b.signing.key_id());
        assert_eq!(a.kem.key_id(), b.kem.key_id());
        let vk = encode_key(a.signing.verifying_key());
        assert_eq!(
            decode_key::<channel::VerifyingKey>(&vk).unwrap().key_id(),
            a.signing.key_id()
        );
        fs::write(dir.path().join("result-kem.key"), "zz").unwrap();
        assert!(matches!(
            ServerKeys::load_or_create(dir.path()),
            Err(KeyFileError::Corrupt { .. })
        ));
        fs::set_permissions(
            dir.path().join("command-signing.key"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        assert!(matches!(
            ServerKeys::load_or_create(dir.path()),
            Err(KeyFileError::Permissions { .. })
        ));
    }
}
