//! The control plane's own private keys, kept in the database sealed under
//! the master key, as the organisations' secrets are ([`crate::secrets`]).
//!
//! The keys ([`ControlKey`]): the agent CA's key, the command-signing key,
//! the result key agents seal to, the key of the agents' access tokens and
//! the audit key. Each is a row of `control_keys`: its secret part sealed
//! with [`crate::secrets`]'s envelope (a data key of its own, wrapped by the
//! master key; a master-key rotation re-wraps it with the rest), and its
//! public part (the CA certificate, a public key) in the clear.
//!
//! Several replicas that share a database and a master key therefore share
//! these keys. Whichever starts first makes each missing key; the others read
//! it (the insert does nothing where a row exists, then everyone reads the
//! row), so concurrent first starts agree on one key.
//!
//! Keys an earlier version kept as files in the data directory (`agent-ca.key`
//! with `agent-ca.crt`, `command-signing.key`, `result-kem.key`,
//! `agent-jwt.key`, `audit-signing.key`) are imported on first start and the
//! private file is removed once the database holds the same key. A file that
//! holds another key than the database's stops the start, naming both: no
//! key is dropped silently. `agent-ca.crt` is then kept as a public copy of
//! the CA certificate, rewritten at each start, for proxies and operators.

use std::path::{Path, PathBuf};

use sqlx::Row;
use zeroize::Zeroizing;

use crate::ca::{AgentCa, CaError};
use crate::checkpoints::AuditKey;
use crate::secrets::{open_own, seal_own, Keyring, MasterKeySource, Sealed, SecretError};
use crate::server_keys::{encode_key, ServerKeys};
use crate::store::Store;
use crate::{ControlError, Timestamp};

/// One of the control plane's own keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlKey {
    /// The agent CA's signing key (its certificate is the public part).
    AgentCa,
    /// The Ed25519 key every command is signed with.
    CommandSigning,
    /// The X-Wing key agents seal their results to.
    ResultKem,
    /// The HMAC key of the agents' short-lived access tokens.
    AgentJwt,
    /// The Ed25519 key audit checkpoints are signed with.
    AuditSigning,
}

impl ControlKey {
    pub const ALL: [ControlKey; 5] = [
        ControlKey::AgentCa,
        ControlKey::CommandSigning,
        ControlKey::ResultKem,
        ControlKey::AgentJwt,
        ControlKey::AuditSigning,
    ];

    /// The key's name in `control_keys`.
    pub fn name(self) -> &'static str {
        match self {
            ControlKey::AgentCa => "agent-ca",
            ControlKey::CommandSigning => "command-signing",
            ControlKey::ResultKem => "result-kem",
            ControlKey::AgentJwt => "agent-jwt",
            ControlKey::AuditSigning => "audit-signing",
        }
    }

    /// The private file an earlier version kept the key in, in the data
    /// directory.
    pub fn legacy_file(self) -> &'static str {
        match self {
            ControlKey::AgentCa => "agent-ca.key",
            ControlKey::CommandSigning => "command-signing.key",
            ControlKey::ResultKem => "result-kem.key",
            ControlKey::AgentJwt => "agent-jwt.key",
            ControlKey::AuditSigning => "audit-signing.key",
        }
    }

    fn row_id(self) -> String {
        format!("ck_{}", self.name())
    }
}

/// The public copy of the agent CA certificate in the data directory.
pub const CA_CERT_FILE: &str = "agent-ca.crt";

/// Why a control-plane key could not be loaded. None carries key material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{path}: {reason}", path = .path.display())]
    File { path: PathBuf, reason: String },
    #[error("{path} holds another {name} key than the database's, which is in use: move the file away if the database's key is the one to keep (agents enrolled against the file's key then need new registration tokens)", path = .path.display())]
    Conflict { path: PathBuf, name: &'static str },
    #[error("the {name} key in the database is not a valid key")]
    Corrupt { name: &'static str },
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

impl From<ControlError> for VaultError {
    fn from(e: ControlError) -> Self {
        VaultError::Secret(SecretError::Store(e))
    }
}

impl From<crate::StoreError> for VaultError {
    fn from(e: crate::StoreError) -> Self {
        VaultError::Secret(e.into())
    }
}

impl From<sqlx::Error> for VaultError {
    fn from(e: sqlx::Error) -> Self {
        VaultError::Secret(e.into())
    }
}

/// A key's secret part and its public part.
struct Material {
    secret: Zeroizing<Vec<u8>>,
    public: String,
}

/// Every control-plane key, as the server uses them.
pub struct ControlKeys {
    pub ca: AgentCa,
    pub server: ServerKeys,
    pub audit: AuditKey,
    /// The HMAC key of agent access tokens.
    pub agent_jwt: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ControlKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlKeys")
            .field("ca", &self.ca)
            .field("server", &self.server)
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

/// The master key from `source` (a file is made if missing), adopted by the
/// database ([`crate::secrets::adopt`]): what the server and a command-line
/// tool open before they read a control-plane key.
pub async fn open_ring(store: &Store, source: &MasterKeySource) -> Result<Keyring, VaultError> {
    let ring = source.open()?;
    crate::secrets::adopt(store, &ring).await?;
    Ok(ring)
}

/// Loads every control-plane key (see the module's comment), making or
/// importing the missing ones. `ring` must have been adopted
/// ([`crate::secrets::adopt`]).
pub async fn load_all(
    store: &Store,
    ring: &Keyring,
    data_dir: &Path,
    now: Timestamp,
) -> Result<ControlKeys, VaultError> {
    Ok(ControlKeys {
        ca: agent_ca(store, ring, data_dir, now).await?,
        server: server_keys(store, ring, data_dir).await?,
        audit: audit_key(store, ring, data_dir).await?,
        agent_jwt: agent_jwt_key(store, ring, data_dir).await?,
    })
}

/// The agent CA. Also writes `agent-ca.crt`, its certificate, to `data_dir`.
pub async fn agent_ca(
    store: &Store,
    ring: &Keyring,
    data_dir: &Path,
    now: Timestamp,
) -> Result<AgentCa, VaultError> {
    let cert_path = data_dir.join(CA_CERT_FILE);
    let m = load(
        store,
        ring,
        data_dir,
        ControlKey::AgentCa,
        |key_path| {
            let key_pem = read_legacy(key_path)?;
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(|e| VaultError::File {
                path: cert_path.clone(),
                reason: format!("cannot read the certificate of {}: {e}", key_path.display()),
            })?;
            let key_pem = Zeroizing::new(String::from_utf8(key_pem.to_vec()).map_err(|_| {
                VaultError::File {
                    path: key_path.to_path_buf(),
                    reason: "not a PEM key".into(),
                }
            })?);
            AgentCa::from_pem(&key_pem, &cert_pem)?;
            Ok(Material {
                secret: Zeroizing::new(key_pem.as_bytes().to_vec()),
                public: cert_pem,
            })
        },
        || {
            let (key_pem, cert_pem) = AgentCa::new_pem(now)?;
            Ok(Material {
                secret: Zeroizing::new(key_pem.as_bytes().to_vec()),
                public: cert_pem,
            })
        },
    )
    .await?;
    let corrupt = || VaultError::Corrupt {
        name: ControlKey::AgentCa.name(),
    };
    let key_pem = std::str::from_utf8(&m.secret).map_err(|_| corrupt())?;
    let ca = AgentCa::from_pem(key_pem, &m.public)?;
    write_public(&cert_path, &m.public)?;
    Ok(ca)
}

/// The command-signing key and the result key.
pub async fn server_keys(
    store: &Store,
    ring: &Keyring,
    data_dir: &Path,
) -> Result<ServerKeys, VaultError> {
    let signing = load_hex(
        store,
        ring,
        data_dir,
        ControlKey::CommandSigning,
        |b| channel::SigningKey::from_bytes(b).ok(),
        || channel::SigningKey::generate().to_bytes().to_vec(),
        |k| encode_key(k.verifying_key()),
    )
    .await?;
    let kem = load_hex(
        store,
        ring,
        data_dir,
        ControlKey::ResultKem,
        |b| channel::KemSecretKey::from_bytes(b).ok(),
        || channel::KemSecretKey::generate().to_bytes().to_vec(),
        |k| encode_key(k.public_key()),
    )
    .await?;
    Ok(ServerKeys { signing, kem })
}

/// The audit checkpoint key.
pub async fn audit_key(
    store: &Store,
    ring: &Keyring,
    data_dir: &Path,
) -> Result<AuditKey, VaultError> {
    load_hex(
        store,
        ring,
        data_dir,
        ControlKey::AuditSigning,
        AuditKey::from_bytes,
        || channel::SigningKey::generate().to_bytes().to_vec(),
        |k| k.public_key(),
    )
    .await
}

/// The HMAC key of agent access tokens: 64 hex digits, used as they are
/// (the form `agent-jwt.key` held, so tokens issued before an import stay
/// valid).
pub async fn agent_jwt_key(
    store: &Store,
    ring: &Keyring,
    data_dir: &Path,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let m = load(
        store,
        ring,
        data_dir,
        ControlKey::AgentJwt,
        |path| {
            let bytes = read_legacy(path)?;
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            if text.len() < 64 {
                return Err(VaultError::File {
                    path: path.to_path_buf(),
                    reason: "too short to be a secret".into(),
                });
            }
            Ok(Material {
                secret: Zeroizing::new(text.as_bytes().to_vec()),
                public: String::new(),
            })
        },
        || {
            Ok(Material {
                secret: Zeroizing::new(crate::crypto::random_token(32).into_bytes()),
                public: String::new(),
            })
        },
    )
    .await?;
    if m.secret.len() < 64 {
        return Err(VaultError::Corrupt {
            name: ControlKey::AgentJwt.name(),
        });
    }
    Ok(m.secret)
}

/// A key whose legacy file held its secret bytes in hex.
async fn load_hex<K>(
    store: &Store,
    ring: &Keyring,
    data_dir: &Path,
    which: ControlKey,
    parse: impl Fn(&[u8]) -> Option<K>,
    fresh: impl FnOnce() -> Vec<u8>,
    public: impl Fn(&K) -> String,
) -> Result<K, VaultError> {
    let material = |secret: Zeroizing<Vec<u8>>, what: &dyn Fn() -> VaultError| {
        let key = parse(&secret).ok_or_else(what)?;
        Ok::<_, VaultError>(Material {
            public: public(&key),
            secret,
        })
    };
    let m = load(
        store,
        ring,
        data_dir,
        which,
        |path| {
            let bad = || VaultError::File {
                path: path.to_path_buf(),
                reason: "not a valid key file".into(),
            };
            let text = read_legacy(path)?;
            let bytes = Zeroizing::new(
                hex::decode(String::from_utf8_lossy(&text).trim()).map_err(|_| bad())?,
            );
            material(bytes, &bad)
        },
        || {
            material(Zeroizing::new(fresh()), &|| VaultError::Corrupt {
                name: which.name(),
            })
        },
    )
    .await?;
    parse(&m.secret).ok_or(VaultError::Corrupt { name: which.name() })
}

/// Reads `which` from the database; when it is not there, stores the legacy
/// file's key (`import`) or a new one (`fresh`), then reads it back. A legacy
/// file is removed once the database holds its key.
async fn load(
    store: &Store,
    ring: &Keyring,
    data_dir: &Path,
    which: ControlKey,
    import: impl FnOnce(&Path) -> Result<Material, VaultError>,
    fresh: impl FnOnce() -> Result<Material, VaultError>,
) -> Result<Material, VaultError> {
    let legacy = data_dir.join(which.legacy_file());
    let from_file = if legacy.exists() {
        Some(import(&legacy)?)
    } else {
        None
    };
    let stored = match read(store, ring, which).await? {
        Some(m) => m,
        None => {
            let new = match &from_file {
                Some(m) => Material {
                    secret: m.secret.clone(),
                    public: m.public.clone(),
                },
                None => fresh()?,
            };
            insert(store, ring, which, &new).await?;
            read(store, ring, which)
                .await?
                .ok_or(VaultError::Corrupt { name: which.name() })?
        }
    };
    if let Some(file) = from_file {
        if file.secret != stored.secret {
            return Err(VaultError::Conflict {
                path: legacy,
                name: which.name(),
            });
        }
        std::fs::remove_file(&legacy).map_err(|e| VaultError::File {
            path: legacy.clone(),
            reason: format!(
                "the database holds this key now, but the file could not be removed: {e}"
            ),
        })?;
        tracing::info!(
            key = which.name(),
            file = %legacy.display(),
            "moved a control-plane key from its file into the database, sealed under the master key"
        );
    }
    Ok(stored)
}

/// Stores `m` as `which` unless a row is there already (another replica's).
async fn insert(
    store: &Store,
    ring: &Keyring,
    which: ControlKey,
    m: &Material,
) -> Result<(), VaultError> {
    let id = which.row_id();
    let mut tx = store.begin().await?;
    let sealed = seal_own(&mut tx, ring, &id, which.name(), &m.secret).await?;
    sqlx::query(
        "INSERT INTO control_keys (id, name, public_part, master_key_id, wrapped_key, ciphertext, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(&id)
    .bind(which.name())
    .bind(&m.public)
    .bind(&sealed.key_id)
    .bind(&sealed.wrapped_key)
    .bind(&sealed.ciphertext)
    .bind(Timestamp::now().0)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The stored `which`, opened.
async fn read(
    store: &Store,
    ring: &Keyring,
    which: ControlKey,
) -> Result<Option<Material>, VaultError> {
    let row = sqlx::query(
        "SELECT id, public_part, master_key_id, wrapped_key, ciphertext FROM control_keys WHERE name = $1",
    )
    .bind(which.name())
    .fetch_optional(store.pool())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let id: String = row.try_get("id")?;
    let sealed = Sealed {
        key_id: row.try_get("master_key_id")?,
        wrapped_key: row.try_get("wrapped_key")?,
        ciphertext: row.try_get("ciphertext")?,
    };
    let secret = open_own(ring, &id, which.name(), &sealed)?;
    Ok(Some(Material {
        secret,
        public: row.try_get("public_part")?,
    }))
}

/// A legacy key file, refused when others can read it.
fn read_legacy(path: &Path) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    crate::files::read_private(path)
        .map(Zeroizing::new)
        .map_err(|e| VaultError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Writes a public file whole (a temporary file renamed over it).
fn write_public(path: &Path, text: &str) -> Result<(), VaultError> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    let err = |e: std::io::Error| VaultError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
