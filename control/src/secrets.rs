//! Secrets at rest: environment variables, cloud API keys and credentials an
//! organisation keeps for its servers, encrypted in the database.
//!
//! Envelope encryption. Each value is sealed with ChaCha20-Poly1305 under its
//! own data key (32 random bytes, new whenever the value is set). The data key
//! is wrapped (ChaCha20-Poly1305 again) by a master key that is never in the
//! database: a 0600 file, `master.key` in the data directory unless configured
//! otherwise, or a systemd credential ([`MasterKeySource`]). Each row stores the id of the master key that wrapped its data
//! key. The associated data binds a value to its secret's id, organisation,
//! scope and name, and a wrapped key to its secret's id and master key id, so
//! neither opens in another row.
//!
//! Write-only. A secret can be set, replaced or deleted and its metadata
//! listed; nothing here hands a value to a page or an API. Only
//! [`reveal`], for the control plane's own use of a secret, decrypts.
//! Changes are audited without values.
//!
//! Master-key rotation ([`rotate_master_key`]) runs beside a live server:
//! 1. the new key is written next to the current one (`master.key.next`);
//! 2. the database's current key id (`secret_keyring`) becomes the new key's,
//!    under a row lock every write of a secret takes, so from then on every
//!    new secret is wrapped by the new key;
//! 3. every data key still wrapped by another key is re-wrapped, a batch per
//!    transaction, in every table of [`WRAPPED_TABLES`]: the secrets, and
//!    what [`crate::mfa`] (TOTP seeds), [`crate::mail`] (queued messages),
//!    [`crate::notifications`] (channel secrets), [`crate::forwarding`] (SIEM
//!    webhook keys) and [`crate::key_vault`] (the control plane's own keys)
//!    seal the same way through [`seal_own`];
//! 4. `master.key.next` replaces `master.key`. The old key wraps nothing and
//!    is gone.
//!
//! A server that meets a key id it does not hold re-reads both files, so it
//! goes on working through a rotation; an interrupted rotation leaves both
//! files, and running it again finishes it.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use rand::rngs::OsRng;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;
use zeroize::{Zeroize as _, Zeroizing};

use crate::access::{Authorized, Capability, ReadOrg};
use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::crypto::random_token;
use crate::store::{Store, Tx};
use crate::{AgentId, ControlError, OrgId, Role, SecretView, Timestamp};

/// Longest secret value, in bytes.
pub const MAX_VALUE: usize = 32 * 1024;
/// Longest secret name.
pub const MAX_NAME: usize = 128;
/// Secrets per organisation.
pub const MAX_SECRETS: i64 = 10_000;
/// Data keys re-wrapped per transaction during a rotation.
const ROTATE_BATCH: i64 = 500;

const FILE_PREFIX: &str = "pilothouse-master-key-v1:";
const VALUE_AAD: &[u8] = b"pilothouse secret value v1\0";
const KEY_AAD: &[u8] = b"pilothouse data key v1\0";
const OWN_AAD: &[u8] = b"pilothouse sealed value v1\0";
/// The tables whose rows hold a wrapped data key (`id`, `master_key_id`,
/// `wrapped_key`): secrets, the TOTP seeds of [`crate::mfa`], the queued
/// messages of [`crate::mail`], the channel secrets of
/// [`crate::notifications`], the SIEM webhooks' keys of
/// [`crate::forwarding`] and the control plane's own keys
/// ([`crate::key_vault`]).
const WRAPPED_TABLES: [&str; 6] = [
    "secrets",
    "user_totp",
    "mail_bodies",
    "notification_secrets",
    "audit_destination_secrets",
    "control_keys",
];
const NONCE: usize = 12;

/// Who may set, replace and delete secrets: Owners and Admins.
pub struct ManageSecrets;
impl Capability for ManageSecrets {
    const DESCRIPTION: &'static str = "manage secrets";
    fn allows(role: Role) -> bool {
        role.manages_members()
    }
}

/// Why a secret or the master key could not be used. Each names the secret
/// or the file; none carries a value or a key.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("master key file {path}: {reason}", path = .path.display())]
    KeyFile { path: PathBuf, reason: String },
    #[error("secret {id} is wrapped by master key {key_id}, which this server does not hold: wrong or missing master key file")]
    UnknownMasterKey { id: String, key_id: String },
    #[error("secret {id} does not decrypt: its ciphertext or wrapped key was altered, or it was made under another master key with the same id")]
    Tampered { id: String },
    #[error("no secret {id} in this organisation")]
    NotFound { id: String },
    #[error("the database's secrets are under master key {in_db}, but {path} holds {held}: wrong master key file", path = .path.display())]
    WrongMasterKey {
        path: PathBuf,
        in_db: String,
        held: String,
    },
    #[error(transparent)]
    Store(#[from] ControlError),
}

impl From<crate::StoreError> for SecretError {
    fn from(e: crate::StoreError) -> Self {
        SecretError::Store(e.into())
    }
}

impl From<sqlx::Error> for SecretError {
    fn from(e: sqlx::Error) -> Self {
        SecretError::Store(e.into())
    }
}

struct MasterKey {
    id: String,
    key: Zeroizing<[u8; 32]>,
}

impl MasterKey {
    fn new(key: [u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"pilothouse master key id\0");
        h.update(key);
        let id = format!("mk_{}", &hex::encode(h.finalize())[..16]);
        MasterKey {
            id,
            key: Zeroizing::new(key),
        }
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        cipher_for(&self.key)
    }
}

/// A ChaCha20-Poly1305 instance for `key`, the stack copy wiped.
fn cipher_for(key: &[u8; 32]) -> ChaCha20Poly1305 {
    let mut k = chacha20poly1305::Key::default();
    k.as_mut_slice().copy_from_slice(key);
    let cipher = ChaCha20Poly1305::new(&k);
    k.as_mut_slice().zeroize();
    cipher
}

/// Where the master key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterKeySource {
    /// A file the server may create (mode 0600) and a rotation replaces.
    File(PathBuf),
    /// A systemd credential (`LoadCredential=NAME:SOURCE`, read at
    /// `$CREDENTIALS_DIRECTORY/NAME`): read-only, never created or replaced
    /// here; a rotation works on its source file instead (docs/secrets.md).
    Credential { name: String, path: PathBuf },
}

impl MasterKeySource {
    /// Opens the keyring of this source.
    pub fn open(&self) -> Result<Keyring, SecretError> {
        match self {
            MasterKeySource::File(path) => Keyring::open(path),
            MasterKeySource::Credential { path, .. } => Keyring::open_existing(path),
        }
    }
}

/// The master keys this process holds: the current one (the file) and, while
/// a rotation runs or after one was interrupted, the next one.
pub struct Keyring {
    path: PathBuf,
    keys: RwLock<Vec<MasterKey>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .field("keys", &self.key_ids())
            .finish()
    }
}

impl Keyring {
    /// Reads the master key file at `path` (and `path.next` if a rotation
    /// left one), creating `path` with a fresh key (mode 0600) if it does not
    /// exist. A file that others can read, or that is not a key, is refused.
    pub fn open(path: &Path) -> Result<Keyring, SecretError> {
        if !path.exists() {
            let text = new_key_file_text();
            crate::files::write_new_private(path, text.as_bytes()).map_err(|e| {
                SecretError::KeyFile {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?;
        }
        let ring = Keyring {
            path: path.to_path_buf(),
            keys: RwLock::new(Vec::new()),
        };
        ring.reload()?;
        Ok(ring)
    }

    /// Reads the master key at `path` (and `path.next` if there is one),
    /// which must exist: a systemd credential, never created here.
    pub fn open_existing(path: &Path) -> Result<Keyring, SecretError> {
        if !path.exists() {
            return Err(SecretError::KeyFile {
                path: path.to_path_buf(),
                reason: "no such file: is the credential loaded (LoadCredential= in the unit)?"
                    .into(),
            });
        }
        let ring = Keyring {
            path: path.to_path_buf(),
            keys: RwLock::new(Vec::new()),
        };
        ring.reload()?;
        Ok(ring)
    }

    /// The path of the next key during a rotation.
    fn next_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".next");
        PathBuf::from(p)
    }

    /// Re-reads the key files.
    fn reload(&self) -> Result<(), SecretError> {
        let mut keys = vec![read_key(&self.path)?];
        let next = self.next_path();
        if next.exists() {
            keys.push(read_key(&next)?);
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(())
    }

    /// The ids of the keys held, the file's first.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|k| k.id.clone())
            .collect()
    }

    /// Runs `f` with the key `id`, re-reading the files once if it is not
    /// held (a rotation may have run since).
    fn with_key<T>(&self, id: &str, f: impl Fn(&MasterKey) -> T) -> Option<T> {
        let find = |ring: &Self| {
            ring.keys
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|k| k.id == id)
                .map(&f)
        };
        find(self).or_else(|| {
            self.reload().ok()?;
            find(self)
        })
    }
}

/// A fresh master key, as its file holds it.
fn new_key_file_text() -> Zeroizing<String> {
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(key.as_mut_slice());
    Zeroizing::new(format!("{FILE_PREFIX}{}\n", hex::encode(key.as_slice())))
}

fn read_key(path: &Path) -> Result<MasterKey, SecretError> {
    let bad = |reason: String| SecretError::KeyFile {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = Zeroizing::new(crate::files::read_private(path).map_err(|e| bad(e.to_string()))?);
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("not a master key file".into()))?;
    let hex_key = text
        .trim()
        .strip_prefix(FILE_PREFIX)
        .ok_or_else(|| bad("not a master key file".into()))?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut key)
        .map_err(|_| bad("not a master key file (the key must be 64 hex digits)".into()))?;
    let k = MasterKey::new(key);
    key.fill(0);
    Ok(k)
}

/// Makes sure the database names a master key this process holds, at
/// start-up. A database with nothing sealed (no secret, two-factor seed,
/// queued message, channel or webhook key, or control-plane key) adopts the
/// file's key; one whose sealed rows are under a
/// key the files do not hold is refused, naming both.
pub async fn adopt(store: &Store, ring: &Keyring) -> Result<(), SecretError> {
    let held = ring.key_ids();
    let mut tx = store.begin().await?;
    let current: Option<String> =
        sqlx::query_scalar("SELECT current_key_id FROM secret_keyring WHERE id = 1")
            .fetch_optional(tx.conn())
            .await?;
    match current {
        Some(id) if held.contains(&id) => return Ok(()),
        Some(id) => {
            let mut count = 0i64;
            for table in WRAPPED_TABLES {
                count += sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
                    .fetch_one(tx.conn())
                    .await?;
            }
            if count > 0 {
                return Err(SecretError::WrongMasterKey {
                    path: ring.path.clone(),
                    in_db: id,
                    held: held.join(", "),
                });
            }
            sqlx::query("UPDATE secret_keyring SET current_key_id = $1 WHERE id = 1")
                .bind(&held[0])
                .execute(tx.conn())
                .await?;
        }
        None => {
            sqlx::query("INSERT INTO secret_keyring (id, current_key_id) VALUES (1, $1)")
                .bind(&held[0])
                .execute(tx.conn())
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Which servers a secret is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every server of the organisation.
    Org,
    /// One server.
    Server(AgentId),
}

impl Scope {
    fn as_db(&self) -> String {
        match self {
            Scope::Org => "org".into(),
            Scope::Server(a) => format!("agent:{}", a.0),
        }
    }

    /// `org`, or a server's id (`agt_...`), as a form sends it.
    pub fn parse(s: &str) -> Result<Scope, ControlError> {
        match s.trim() {
            "" | "org" => Ok(Scope::Org),
            s => AgentId::parse(s.strip_prefix("agent:").unwrap_or(s))
                .map(Scope::Server)
                .ok_or_else(|| ControlError::invalid("server: not a server id.")),
        }
    }
}

/// What a secret is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// An environment variable for operations on the servers in scope.
    Env,
    /// A cloud provider's API key.
    ApiKey,
    /// A credential of a notification channel or an integration.
    Credential,
    /// An SSH private key Pilothouse generated ([`generate_ssh_key`]); its
    /// public half is shown.
    SshKey,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Env => "env",
            SecretKind::ApiKey => "api_key",
            SecretKind::Credential => "credential",
            SecretKind::SshKey => "ssh_key",
        }
    }
}

impl std::str::FromStr for SecretKind {
    type Err = ControlError;
    fn from_str(s: &str) -> Result<Self, ControlError> {
        match s {
            "env" => Ok(SecretKind::Env),
            "api_key" => Ok(SecretKind::ApiKey),
            "credential" => Ok(SecretKind::Credential),
            "ssh_key" => Ok(SecretKind::SshKey),
            _ => Err(ControlError::invalid(
                "kind: one of env, api_key, credential.",
            )),
        }
    }
}

/// A new value for a secret.
pub struct NewSecret {
    pub scope: Scope,
    pub kind: SecretKind,
    pub name: String,
    pub value: SecretString,
}

/// A name: a letter or `_`, then letters, digits and `_` (an environment
/// variable's name), at most [`MAX_NAME`].
fn check_name(name: &str) -> Result<(), ControlError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME;
    if ok {
        Ok(())
    } else {
        Err(ControlError::invalid(format!(
            "name: letters, digits and _, not starting with a digit, at most {MAX_NAME} characters."
        )))
    }
}

fn value_aad(id: &str, org: OrgId, scope: &str, name: &str) -> Vec<u8> {
    let mut aad = VALUE_AAD.to_vec();
    for part in [id, &org.0.to_string(), scope, name] {
        aad.extend_from_slice(part.as_bytes());
        aad.push(0);
    }
    aad
}

fn key_aad(id: &str, key_id: &str) -> Vec<u8> {
    let mut aad = KEY_AAD.to_vec();
    for part in [id, key_id] {
        aad.extend_from_slice(part.as_bytes());
        aad.push(0);
    }
    aad
}

/// `nonce || ciphertext`, hex.
fn seal(cipher: &ChaCha20Poly1305, aad: &[u8], msg: &[u8]) -> Result<String, ControlError> {
    let mut nonce = [0u8; NONCE];
    OsRng.fill_bytes(&mut nonce);
    // ChaCha20-Poly1305 refuses only messages above 256 GiB.
    let ct = cipher
        .encrypt(&nonce.into(), Payload { msg, aad })
        .map_err(|_| ControlError::Internal("a secret could not be encrypted".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(hex::encode(out))
}

fn open(cipher: &ChaCha20Poly1305, aad: &[u8], sealed: &str) -> Option<Zeroizing<Vec<u8>>> {
    let bytes = hex::decode(sealed).ok()?;
    let (nonce, ct) = bytes.split_at_checked(NONCE)?;
    let nonce: [u8; NONCE] = nonce.try_into().ok()?;
    cipher
        .decrypt(&nonce.into(), Payload { msg: ct, aad })
        .ok()
        .map(Zeroizing::new)
}

/// Wraps secret `id`'s data key under master key `key_id`.
fn wrap(ring: &Keyring, id: &str, key_id: &str, data_key: &[u8]) -> Result<String, SecretError> {
    ring.with_key(key_id, |mk| {
        seal(&mk.cipher(), &key_aad(id, key_id), data_key)
    })
    .ok_or_else(|| SecretError::UnknownMasterKey {
        id: id.to_string(),
        key_id: key_id.to_string(),
    })?
    .map_err(SecretError::from)
}

/// Unwraps secret `id`'s data key, wrapped under master key `key_id`.
fn unwrap(
    ring: &Keyring,
    id: &str,
    key_id: &str,
    wrapped: &str,
) -> Result<Zeroizing<[u8; 32]>, SecretError> {
    let tampered = || SecretError::Tampered { id: id.to_string() };
    let key = ring
        .with_key(key_id, |mk| {
            open(&mk.cipher(), &key_aad(id, key_id), wrapped)
        })
        .ok_or_else(|| SecretError::UnknownMasterKey {
            id: id.to_string(),
            key_id: key_id.to_string(),
        })?
        .ok_or_else(tampered)?;
    Ok(Zeroizing::new(
        key.as_slice().try_into().map_err(|_| tampered())?,
    ))
}

/// A new data key for secret `id`, wrapped under master key `key_id`, and
/// `value` sealed under it: `(wrapped_key, ciphertext)`.
#[allow(clippy::too_many_arguments)]
fn seal_secret(
    ring: &Keyring,
    key_id: &str,
    id: &str,
    org: OrgId,
    scope: &str,
    name: &str,
    value: &[u8],
) -> Result<(String, String), SecretError> {
    let mut data_key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(data_key.as_mut_slice());
    let wrapped = wrap(ring, id, key_id, data_key.as_slice())?;
    let ciphertext = seal(
        &cipher_for(&data_key),
        &value_aad(id, org, scope, name),
        value,
    )?;
    Ok((wrapped, ciphertext))
}

/// A value the control plane keeps for itself (a person's TOTP seed, a
/// queued email), sealed
/// the way a secret is: under its own new data key, wrapped by master key
/// `key_id`. The associated data binds it to its row `id` and `context`.
#[derive(Debug)]
pub(crate) struct Sealed {
    pub key_id: String,
    pub wrapped_key: String,
    pub ciphertext: String,
}

fn own_aad(id: &str, context: &str) -> Vec<u8> {
    let mut aad = OWN_AAD.to_vec();
    for part in [id, context] {
        aad.extend_from_slice(part.as_bytes());
        aad.push(0);
    }
    aad
}

/// Seals `value` for row `id` under the database's current master key (with
/// the row lock a rotation's switch waits for, as [`set`] takes).
pub(crate) async fn seal_own(
    tx: &mut Tx,
    ring: &Keyring,
    id: &str,
    context: &str,
    value: &[u8],
) -> Result<Sealed, ControlError> {
    let key_id = current_key(tx).await?;
    let mut data_key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(data_key.as_mut_slice());
    let wrapped_key = wrap(ring, id, &key_id, data_key.as_slice()).map_err(as_control)?;
    let ciphertext = seal(&cipher_for(&data_key), &own_aad(id, context), value)?;
    Ok(Sealed {
        key_id,
        wrapped_key,
        ciphertext,
    })
}

/// Opens what [`seal_own`] sealed for row `id` and `context`.
pub(crate) fn open_own(
    ring: &Keyring,
    id: &str,
    context: &str,
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let data_key = unwrap(ring, id, &sealed.key_id, &sealed.wrapped_key)?;
    open(
        &cipher_for(&data_key),
        &own_aad(id, context),
        &sealed.ciphertext,
    )
    .ok_or_else(|| SecretError::Tampered { id: id.to_string() })
}

/// Seals `value` for row `id` and `context` ([`seal_own`]) into `table`, a
/// table of credentials keyed by their owner's id (`id`, `master_key_id`,
/// `wrapped_key`, `ciphertext`; one of [`WRAPPED_TABLES`]).
pub(crate) async fn seal_row(
    tx: &mut Tx,
    ring: &Keyring,
    table: &'static str,
    id: &str,
    context: &str,
    value: &[u8],
) -> Result<(), ControlError> {
    let sealed = seal_own(tx, ring, id, context, value).await?;
    sqlx::query(&format!(
        "INSERT INTO {table} (id, master_key_id, wrapped_key, ciphertext) VALUES ($1, $2, $3, $4)"
    ))
    .bind(id)
    .bind(&sealed.key_id)
    .bind(&sealed.wrapped_key)
    .bind(&sealed.ciphertext)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Deletes what [`seal_row`] sealed into `table` for `id` (before its
/// owner's row, which it references).
pub(crate) async fn delete_row(
    tx: &mut Tx,
    table: &'static str,
    id: &str,
) -> Result<(), ControlError> {
    sqlx::query(&format!("DELETE FROM {table} WHERE id = $1"))
        .bind(id)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Opens the text [`seal_row`] sealed into `table` for `id` and `context`.
/// The error names `what` (the channel, the destination), never the value.
pub(crate) async fn open_text_row(
    store: &Store,
    ring: &Keyring,
    (table, context): (&'static str, &str),
    id: &str,
    what: &str,
) -> Result<SecretString, String> {
    let row = sqlx::query(&format!(
        "SELECT master_key_id, wrapped_key, ciphertext FROM {table} WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(store.pool())
    .await
    .map_err(|e| format!("cannot read the key of {what}: {e}"))?
    .ok_or_else(|| format!("{what} has no key stored"))?;
    let sealed = Sealed {
        key_id: row.try_get("master_key_id").map_err(|e| e.to_string())?,
        wrapped_key: row.try_get("wrapped_key").map_err(|e| e.to_string())?,
        ciphertext: row.try_get("ciphertext").map_err(|e| e.to_string())?,
    };
    let value = open_own(ring, id, context, &sealed)
        .map_err(|e| format!("the key of {what} cannot be used: {e}"))?;
    String::from_utf8(value.to_vec())
        .map(SecretString::from)
        .map_err(|_| format!("the key of {what} is not text"))
}

/// `SHA256:<base64>` of an OpenSSH public key, as `ssh-keygen -l` prints it.
fn ssh_fingerprint(public: &str) -> String {
    ssh_key::PublicKey::from_openssh(public)
        .map(|k| k.fingerprint(ssh_key::HashAlg::Sha256).to_string())
        .unwrap_or_default()
}

/// A [`SecretError`] where a [`ControlError`] is answered.
fn as_control(e: SecretError) -> ControlError {
    match e {
        SecretError::Store(e) => e,
        e => ControlError::internal(e),
    }
}

/// The database's current master key id, with the row lock that a rotation's
/// switch to a new key waits for (so no secret is wrapped by a key that a
/// finished rotation has removed).
async fn current_key(tx: &mut Tx) -> Result<String, ControlError> {
    let id: Option<String> = sqlx::query_scalar(
        "UPDATE secret_keyring SET current_key_id = current_key_id WHERE id = 1 RETURNING current_key_id",
    )
    .fetch_optional(tx.conn())
    .await?;
    id.ok_or_else(|| {
        ControlError::Internal("no master key is recorded: the server did not adopt one".into())
    })
}

/// Sets a secret: a new one, or a new value for the one of the same scope
/// and name. Audited (`secret.set`) without its value. Returns its id.
pub async fn set(
    auth: &Authorized<'_, ManageSecrets>,
    ring: &Keyring,
    new: NewSecret,
    now: Timestamp,
) -> Result<String, ControlError> {
    if new.kind == SecretKind::SshKey {
        return Err(ControlError::invalid(
            "kind: an SSH key is generated here (Generate SSH key), never pasted in.",
        ));
    }
    let value = new.value.expose_secret();
    if value.is_empty() || value.len() > MAX_VALUE {
        return Err(ControlError::invalid(format!(
            "value: between 1 byte and {} KiB.",
            MAX_VALUE / 1024
        )));
    }
    write(auth, ring, &new, value.as_bytes(), None, now).await
}

/// Generates an Ed25519 SSH key pair (the `ssh-key` crate, the system's
/// random source) and keeps it as secret `name` of kind `ssh_key`: the
/// private key (OpenSSH format) sealed like any secret, never shown; the
/// public key (`ssh-ed25519 AAAA... pilothouse:NAME`) shown in the list. The
/// same scope and name again makes a new pair in its place. Audited
/// (`secret.set`, with the public key's SHA-256 fingerprint). Returns the id
/// and the public key.
pub async fn generate_ssh_key(
    auth: &Authorized<'_, ManageSecrets>,
    ring: &Keyring,
    scope: Scope,
    name: &str,
    now: Timestamp,
) -> Result<(String, String), ControlError> {
    let name = name.trim();
    check_name(name)?;
    let mut key = ssh_key::PrivateKey::random(&mut OsRng, ssh_key::Algorithm::Ed25519)
        .map_err(ControlError::internal)?;
    key.set_comment(format!("pilothouse:{name}"));
    let private = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(ControlError::internal)?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(ControlError::internal)?;
    let new = NewSecret {
        scope,
        kind: SecretKind::SshKey,
        name: name.to_string(),
        value: SecretString::from(String::new()),
    };
    let id = write(auth, ring, &new, private.as_bytes(), Some(&public), now).await?;
    Ok((id, public))
}

/// Writes a secret (new, or in place of the same scope and name) and its
/// `secret.set` event in one transaction.
async fn write(
    auth: &Authorized<'_, ManageSecrets>,
    ring: &Keyring,
    new: &NewSecret,
    value: &[u8],
    public_key: Option<&str>,
    now: Timestamp,
) -> Result<String, ControlError> {
    let name = new.name.trim().to_string();
    check_name(&name)?;
    let actor = auth.actor();
    let org = actor.org();
    let scope = new.scope.as_db();
    let mut tx = auth.store().begin().await?;
    tx.lock_org(org).await?;
    actor.recheck::<ManageSecrets>(&mut tx).await?;
    if let Scope::Server(agent) = &new.scope {
        let found: Option<String> =
            sqlx::query_scalar("SELECT id FROM agents WHERE id = $1 AND org_id = $2")
                .bind(&agent.0)
                .bind(org.0)
                .fetch_optional(tx.conn())
                .await?;
        if found.is_none() {
            return Err(ControlError::invalid(
                "server: no such server in this organisation.",
            ));
        }
    }
    let existing: Option<String> =
        sqlx::query_scalar("SELECT id FROM secrets WHERE org_id = $1 AND scope = $2 AND name = $3")
            .bind(org.0)
            .bind(&scope)
            .bind(&name)
            .fetch_optional(tx.conn())
            .await?;
    if existing.is_none() {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets WHERE org_id = $1")
            .bind(org.0)
            .fetch_one(tx.conn())
            .await?;
        if count >= MAX_SECRETS {
            return Err(ControlError::conflict(format!(
                "An organisation has at most {MAX_SECRETS} secrets: delete one first."
            )));
        }
    }
    let id = existing
        .clone()
        .unwrap_or_else(|| format!("sec_{}", random_token(12)));
    let key_id = current_key(&mut tx).await?;
    let (wrapped, ciphertext) =
        seal_secret(ring, &key_id, &id, org, &scope, &name, value).map_err(as_control)?;
    if existing.is_some() {
        sqlx::query(
            "UPDATE secrets SET kind = $1, master_key_id = $2, wrapped_key = $3, ciphertext = $4, updated_at = $5, \
             public_key = $6 WHERE id = $7",
        )
        .bind(new.kind.as_str())
        .bind(&key_id)
        .bind(&wrapped)
        .bind(&ciphertext)
        .bind(now.0)
        .bind(public_key)
        .bind(&id)
        .execute(tx.conn())
        .await?;
    } else {
        sqlx::query(
            "INSERT INTO secrets (id, org_id, scope, kind, name, master_key_id, wrapped_key, ciphertext, created_at, updated_at, public_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)",
        )
        .bind(&id)
        .bind(org.0)
        .bind(&scope)
        .bind(new.kind.as_str())
        .bind(&name)
        .bind(&key_id)
        .bind(&wrapped)
        .bind(&ciphertext)
        .bind(now.0)
        .bind(public_key)
        .execute(tx.conn())
        .await?;
    }
    let mut details = json!({
        "name": name,
        "scope": scope,
        "kind": new.kind.as_str(),
        "replaced": existing.is_some(),
    });
    if let Some(public) = public_key {
        details["fingerprint"] = json!(ssh_fingerprint(public));
    }
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(org, AuditAction::SecretSet, format!("secret:{id}"), details),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Deletes a secret. Audited (`secret.deleted`).
pub async fn delete(
    auth: &Authorized<'_, ManageSecrets>,
    id: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let org = actor.org();
    let mut tx = auth.store().begin().await?;
    tx.lock_org(org).await?;
    actor.recheck::<ManageSecrets>(&mut tx).await?;
    let row = sqlx::query("SELECT scope, name FROM secrets WHERE id = $1 AND org_id = $2")
        .bind(id)
        .bind(org.0)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| ControlError::not_found("No such secret in this organisation."))?;
    let (scope, name): (String, String) = (row.try_get("scope")?, row.try_get("name")?);
    sqlx::query("DELETE FROM secrets WHERE id = $1")
        .bind(id)
        .execute(tx.conn())
        .await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            org,
            AuditAction::SecretDeleted,
            format!("secret:{id}"),
            json!({ "name": name, "scope": scope }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The organisation's secrets, without their values, by scope and name.
pub async fn list(auth: &Authorized<'_, ReadOrg>) -> Result<Vec<SecretView>, ControlError> {
    let rows = sqlx::query(
        "SELECT id, scope, kind, name, created_at, updated_at, last_used_at, public_key FROM secrets \
         WHERE org_id = $1 ORDER BY scope, name",
    )
    .bind(auth.actor().org().0)
    .fetch_all(auth.store().pool())
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok(SecretView {
                id: r.try_get("id")?,
                scope: r.try_get("scope")?,
                kind: r.try_get("kind")?,
                name: r.try_get("name")?,
                created_at: Timestamp(r.try_get("created_at")?),
                updated_at: Timestamp(r.try_get("updated_at")?),
                last_used_at: r.try_get::<Option<i64>, _>("last_used_at")?.map(Timestamp),
                public_key: r.try_get("public_key")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?)
}

/// Decrypts secret `id` of `org` for the control plane's own use (never for
/// display) and records when it was last used. The error names the secret.
pub async fn reveal(
    store: &Store,
    ring: &Keyring,
    org: OrgId,
    id: &str,
    now: Timestamp,
) -> Result<SecretString, SecretError> {
    let row = sqlx::query(
        "SELECT scope, name, master_key_id, wrapped_key, ciphertext FROM secrets WHERE id = $1 AND org_id = $2",
    )
    .bind(id)
    .bind(org.0)
    .fetch_optional(store.pool())
    .await?
    .ok_or_else(|| SecretError::NotFound { id: id.to_string() })?;
    let key_id: String = row.try_get("master_key_id")?;
    let wrapped: String = row.try_get("wrapped_key")?;
    let tampered = || SecretError::Tampered { id: id.to_string() };
    let data_key = unwrap(ring, id, &key_id, &wrapped)?;
    let aad = value_aad(
        id,
        org,
        &row.try_get::<String, _>("scope")?,
        &row.try_get::<String, _>("name")?,
    );
    let value = open(
        &cipher_for(&data_key),
        &aad,
        &row.try_get::<String, _>("ciphertext")?,
    )
    .ok_or_else(tampered)?;
    let value = String::from_utf8(value.to_vec()).map_err(|_| tampered())?;
    sqlx::query("UPDATE secrets SET last_used_at = $1 WHERE id = $2")
        .bind(now.0)
        .bind(id)
        .execute(store.pool())
        .await?;
    Ok(SecretString::from(value))
}

/// One secret given to an agent's task.
pub struct TaskSecret {
    pub id: String,
    pub name: String,
    pub value: SecretString,
}

/// The values of `names` for a task on `agent` of `org`: for each name, the
/// secret scoped to that server, else the organisation's. Only environment
/// variables, API keys and SSH keys (the private key, OpenSSH format) are
/// given; a credential stays with the control plane's integrations. A name
/// without such a secret is left out (the agent then does not start the
/// task and fails the operation, naming it). Each one given records its
/// last use. The error names a secret that does not decrypt.
pub async fn for_task(
    store: &Store,
    ring: &Keyring,
    org: OrgId,
    agent: &AgentId,
    names: &[String],
    now: Timestamp,
) -> Result<Vec<TaskSecret>, SecretError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let server_scope = Scope::Server(agent.clone()).as_db();
    let placeholders: Vec<String> = (0..names.len()).map(|i| format!("${}", i + 3)).collect();
    let sql = format!(
        "SELECT id, scope, name FROM secrets WHERE org_id = $1 AND kind IN ('env', 'api_key', 'ssh_key') \
         AND (scope = 'org' OR scope = $2) AND name IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql).bind(org.0).bind(&server_scope);
    for name in names {
        query = query.bind(name);
    }
    let rows = query.fetch_all(store.pool()).await?;
    // name -> (id, scoped to this server)
    let mut chosen: std::collections::BTreeMap<String, (String, bool)> = Default::default();
    for row in rows {
        let (id, scope, name): (String, String, String) = (
            row.try_get("id")?,
            row.try_get("scope")?,
            row.try_get("name")?,
        );
        let here = scope == server_scope;
        match chosen.get(&name) {
            Some((_, true)) => {}
            Some((_, false)) if !here => {}
            _ => {
                chosen.insert(name, (id, here));
            }
        }
    }
    let mut out = Vec::with_capacity(chosen.len());
    for (name, (id, _)) in chosen {
        let value = reveal(store, ring, org, &id, now).await?;
        out.push(TaskSecret { id, name, value });
    }
    Ok(out)
}

/// Writes `n` sealed secrets named `{prefix}{i}` into `org` in one
/// transaction, without audit events: for benchmarks and tests that need
/// many secrets (a real change goes through [`set`]).
#[cfg(feature = "testing")]
pub async fn fill_unaudited(
    store: &Store,
    ring: &Keyring,
    org: OrgId,
    prefix: &str,
    n: usize,
    value: &str,
) -> Result<(), ControlError> {
    let mut tx = store.begin().await?;
    let key_id = current_key(&mut tx).await?;
    for i in 0..n {
        let id = format!("sec_{}", random_token(12));
        let name = format!("{prefix}{i}");
        let (wrapped, ciphertext) =
            seal_secret(ring, &key_id, &id, org, "org", &name, value.as_bytes())
                .map_err(as_control)?;
        sqlx::query(
            "INSERT INTO secrets (id, org_id, scope, kind, name, master_key_id, wrapped_key, ciphertext, created_at, updated_at) \
             VALUES ($1, $2, 'org', 'env', $3, $4, $5, $6, 0, 0)",
        )
        .bind(&id)
        .bind(org.0)
        .bind(&name)
        .bind(&key_id)
        .bind(&wrapped)
        .bind(&ciphertext)
        .execute(tx.conn())
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What a rotation did.
#[derive(Debug, PartialEq, Eq)]
pub struct Rotation {
    pub old_key_id: String,
    pub new_key_id: String,
    pub rewrapped: u64,
}

/// Writes the next master key beside the current one (`master.key.next`,
/// mode 0600) unless one is there already, and returns its id: the first
/// step of a rotation, on its own for a key that servers read from a systemd
/// credential (each server must hold the next key before the switch).
pub fn prepare_next_key(ring: &Keyring) -> Result<String, SecretError> {
    let next_path = ring.next_path();
    if !next_path.exists() {
        let text = new_key_file_text();
        let io = |e: std::io::Error| SecretError::KeyFile {
            path: next_path.clone(),
            reason: e.to_string(),
        };
        let tmp = {
            let mut p = next_path.clone().into_os_string();
            p.push(".tmp");
            PathBuf::from(p)
        };
        let _ = std::fs::remove_file(&tmp);
        {
            use std::io::Write as _;
            let mut f = crate::files::create_private(&tmp).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &next_path).map_err(io)?;
    }
    Ok(read_key(&next_path)?.id)
}

/// Rotates the master key (see the module's comment for the steps), from a
/// process that holds `ring` (the CLI). Every data key in
/// [`WRAPPED_TABLES`] is re-wrapped; values are not re-encrypted. Audited in
/// every organisation that holds secrets (`secrets.master_key_rotated`).
pub async fn rotate_master_key(store: &Store, ring: &Keyring) -> Result<Rotation, SecretError> {
    adopt(store, ring).await?;
    prepare_next_key(ring)?;
    ring.reload()?;
    let ids = ring.key_ids();
    let (old, new) = (ids[0].clone(), ids[ids.len() - 1].clone());

    // From this commit on, every new secret is wrapped by the new key.
    let mut tx = store.begin().await?;
    sqlx::query("UPDATE secret_keyring SET current_key_id = $1 WHERE id = 1")
        .bind(&new)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;

    let mut rewrapped = 0u64;
    for table in WRAPPED_TABLES {
        rewrapped += rewrap_table(store, ring, table, &new).await?;
    }

    // Every data key is under the new key: record the rotation, then the
    // new key file replaces the old one.
    let orgs: Vec<i64> = sqlx::query_scalar("SELECT DISTINCT org_id FROM secrets ORDER BY org_id")
        .fetch_all(store.pool())
        .await?;
    let now = Timestamp::now();
    for org in orgs {
        let mut tx = store.begin().await?;
        tx.lock_org(OrgId(org)).await?;
        audit::append(
            &mut tx,
            &AuditActor::cli(),
            Event::new(
                OrgId(org),
                AuditAction::MasterKeyRotated,
                format!("org:{org}"),
                json!({ "old_key": old, "new_key": new }),
            ),
            now,
        )
        .await?;
        tx.commit().await?;
    }
    if old != new {
        std::fs::rename(ring.next_path(), &ring.path).map_err(|e| SecretError::KeyFile {
            path: ring.path.clone(),
            reason: e.to_string(),
        })?;
    }
    ring.reload()?;
    Ok(Rotation {
        old_key_id: old,
        new_key_id: new,
        rewrapped,
    })
}

/// Re-wraps every data key in `table` (one of [`WRAPPED_TABLES`]) that is
/// not under master key `new`: one walk in id order (rows written from now on
/// are under the new key already), then a count to confirm none is left.
async fn rewrap_table(
    store: &Store,
    ring: &Keyring,
    table: &'static str,
    new: &str,
) -> Result<u64, SecretError> {
    let mut rewrapped = 0u64;
    let mut after = String::new();
    loop {
        let mut tx = store.begin().await?;
        let rows = sqlx::query(&format!(
            "SELECT id, master_key_id, wrapped_key FROM {table} WHERE id > $1 AND master_key_id <> $2 \
             ORDER BY id LIMIT $3"
        ))
        .bind(&after)
        .bind(new)
        .bind(ROTATE_BATCH)
        .fetch_all(tx.conn())
        .await?;
        if rows.is_empty() {
            let left: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM {table} WHERE master_key_id <> $1"
            ))
            .bind(new)
            .fetch_one(tx.conn())
            .await?;
            if left == 0 {
                return Ok(rewrapped);
            }
            after.clear();
            continue;
        }
        for r in &rows {
            let id: String = r.try_get("id")?;
            let key_id: String = r.try_get("master_key_id")?;
            let wrapped: String = r.try_get("wrapped_key")?;
            let data_key = unwrap(ring, &id, &key_id, &wrapped)?;
            let rewrapped_key = wrap(ring, &id, new, data_key.as_slice())?;
            sqlx::query(&format!(
                "UPDATE {table} SET master_key_id = $1, wrapped_key = $2 WHERE id = $3 AND master_key_id = $4"
            ))
            .bind(new)
            .bind(&rewrapped_key)
            .bind(&id)
            .bind(&key_id)
            .execute(tx.conn())
            .await?;
            rewrapped += 1;
            after = id;
        }
        tx.commit().await?;
    }
}
