//! The agent's state directory: its keys, its registration, its replay journal and
//! its buffers, and how they are written.
//!
//! Layout (directory mode 0700, every file 0600; `bin/` is the one subdirectory,
//! 0700, its binaries 0700):
//!
//! | file | content |
//! |---|---|
//! | `agent.json` | agent id, server URL, CA pin, control plane keys, certificate expiry, times |
//! | `identity.key` | Ed25519 identity seed, hex |
//! | `kem.key` | X-Wing seed, hex (absent in classical fallback) |
//! | `tls.key`, `tls.crt` | TLS client key (PKCS#8 PEM) and certificate |
//! | `ca.crt` | the agent CA, the only root the agent trusts |
//! | `replay.json` | the replay guard |
//! | `pending-results.json` | sealed results the control plane has not yet accepted |
//! | `metrics-backlog.json` | samples not yet uploaded |
//! | `status.json` | last contact with the control plane |
//! | `update-report.json` | what became of the last self-update, until the control plane took it |
//! | `agent.lock` | held while a process uses the directory |
//! | `bin/` | the self-updated agent binary and its launcher's files, see [`crate::update`] |
//!
//! Invariants: files are created with mode 0600 (never widened afterwards) and
//! replaced atomically (temporary file, fsync, rename, fsync of the directory). A
//! change to several files goes through a commit journal (`commit.json`): new files
//! are written as `NAME.next`, the journal is written, the renames follow; an
//! interrupted commit is finished on the next start, one without a journal is
//! discarded. The agent refuses to start if the directory, `bin/` or any file in
//! them is accessible to group or others, or if a file does not parse; errors name
//! the file.
//!
//! Past this module a local user other than the agent's cannot read keys or roll the
//! replay journal back, unless they can already write the directory (root can).

use crate::token::CaPin;
use channel::{KemPublicKey, KemSecretKey, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

pub const AGENT_FILE: &str = "agent.json";
pub const IDENTITY_KEY: &str = "identity.key";
pub const KEM_KEY: &str = "kem.key";
pub const TLS_KEY: &str = "tls.key";
pub const TLS_CERT: &str = "tls.crt";
pub const CA_CERT: &str = "ca.crt";
pub const REPLAY: &str = "replay.json";
pub const PENDING_RESULTS: &str = "pending-results.json";
/// Results the control plane refused (kept for the operator, newest last).
pub const REJECTED_RESULTS: &str = "rejected-results.json";
pub const METRICS_BACKLOG: &str = "metrics-backlog.json";
pub const STATUS: &str = "status.json";
/// The operation running now (its header): if the agent stops mid-task, the
/// next start reports it failed instead of running it again.
pub const IN_FLIGHT: &str = "in-flight.json";
/// What became of the last self-update ([`channel::api::UpdateReport`]), kept
/// until the control plane accepted it.
pub const UPDATE_REPORT: &str = "update-report.json";
/// The self-updated binary and its launcher's files (mode 0700).
pub const BIN_DIR: &str = "bin";
const COMMIT: &str = "commit.json";
const LOCK: &str = "agent.lock";
const NEXT_SUFFIX: &str = ".next";
const TMP_SUFFIX: &str = ".tmp";

/// Default location, created by systemd's `StateDirectory=`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/pilothouse-agent";

/// Version of the `agent.json` layout.
const RECORD_FORMAT: u32 = 1;

/// Everything that can go wrong with the state directory. Each variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "this agent is not registered ({path} does not exist); register it first with \
         `pilothouse-agent register --server https://HOST:PORT --token TOKEN`"
    )]
    NotRegistered { path: PathBuf },
    #[error(
        "this agent is already registered as {agent_id} ({path}); pass --force to replace \
         that registration"
    )]
    AlreadyRegistered { path: PathBuf, agent_id: String },
    #[error(
        "{path} is accessible to group or others (mode {mode:04o}); the agent keeps its keys \
         there and refuses to use it: run `chmod {want:o} {path}` after checking who changed it"
    )]
    Permissions { path: PathBuf, mode: u32, want: u32 },
    #[error("{path} is not a regular file; the state directory must hold only the agent's files")]
    NotAFile { path: PathBuf },
    #[error(
        "state file {path} is corrupt or unparsable ({reason}); restore it from a backup, or \
         register the agent again with `pilothouse-agent register --force`"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another pilothouse-agent process is using {path}; stop it first")]
    Locked { path: PathBuf },
}

impl StateError {
    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| StateError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The registration record (`agent.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRecord {
    pub format: u32,
    pub agent_id: String,
    /// Base URL given at registration, `https://HOST:PORT`.
    pub server_url: String,
    /// Hex SHA-256 of the agent CA's DER.
    pub ca_pin: String,
    /// Commands must verify under this key.
    pub command_verifying_key: VerifyingKey,
    /// Results are sealed to this key.
    pub control_kem_key: KemPublicKey,
    /// Unix ms.
    pub cert_not_after: i64,
    /// Unix ms.
    pub registered_at: i64,
    /// When the current identity/KEM keys were registered, Unix ms.
    pub keys_registered_at: i64,
    pub hostname: String,
}

impl AgentRecord {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        agent_id: String,
        server_url: String,
        ca_pin: CaPin,
        command_verifying_key: VerifyingKey,
        control_kem_key: KemPublicKey,
        cert_not_after: i64,
        now_ms: i64,
        hostname: String,
    ) -> Self {
        Self {
            format: RECORD_FORMAT,
            agent_id,
            server_url,
            ca_pin: ca_pin.to_hex(),
            command_verifying_key,
            control_kem_key,
            cert_not_after,
            registered_at: now_ms,
            keys_registered_at: now_ms,
            hostname,
        }
    }
}

/// The agent's private keys and certificates, as loaded from the directory.
pub struct Keys {
    pub identity: SigningKey,
    pub kem: Option<KemSecretKey>,
    pub tls_key_pem: Zeroizing<String>,
    pub tls_cert_pem: String,
    pub ca_pem: String,
}

/// Last contact with the control plane (`status.json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusFile {
    /// Unix ms of the last successful exchange.
    pub last_contact: Option<i64>,
}

/// Hex text of a 32-byte secret, for `identity.key` and `kem.key`.
pub fn secret_hex(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut s = Zeroizing::new(hex::encode(bytes).into_bytes());
    s.push(b'\n');
    s
}

/// The agent's state directory. Cheap to clone; holds only the path.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

/// Held while a process uses the directory; released on drop.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Creates the directory (mode 0700) if it does not exist. Parents are created
    /// with the default mode.
    pub fn create(&self) -> Result<(), StateError> {
        if !self.path.exists() {
            if let Some(parent) = self.path.parent() {
                fs::create_dir_all(parent).map_err(StateError::io("create", parent))?;
            }
            match fs::DirBuilder::new().mode(0o700).create(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StateError::io("create", &self.path)(e)),
            }
        }
        Ok(())
    }

    /// Takes the directory's lock, so that two agents never share it.
    pub fn lock(&self) -> Result<DirLock, StateError> {
        let path = self.file(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(StateError::io("open", &path))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(StateError::Locked {
                path: self.path.clone(),
            }),
            Err(e) => Err(StateError::io("lock", &path)(e.into())),
        }
    }

    /// Fails with [`StateError::NotRegistered`] unless `agent.json` exists. Looks
    /// at no content, so it may run before [`check_permissions`](Self::check_permissions).
    pub fn ensure_registered(&self) -> Result<(), StateError> {
        let path = self.file(AGENT_FILE);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StateError::NotRegistered { path })
            }
            Err(e) => Err(StateError::io("read", &path)(e)),
        }
    }

    /// Refuses a directory or file that group or others can access, or anything that
    /// is not a regular file. Call before reading anything.
    pub fn check_permissions(&self) -> Result<(), StateError> {
        let meta = fs::metadata(&self.path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StateError::NotRegistered {
                    path: self.file(AGENT_FILE),
                }
            } else {
                StateError::io("read", &self.path)(e)
            }
        })?;
        check_mode(&self.path, meta.permissions().mode(), 0o700)?;
        check_files(&self.path, Some(BIN_DIR))
    }

    /// Finishes or discards an interrupted multi-file commit. Run with the lock held.
    pub fn recover(&self) -> Result<(), StateError> {
        let journal = self.file(COMMIT);
        if let Some(bytes) = self.read_opt(COMMIT)? {
            let plan: CommitPlan = parse_json(&journal, &bytes)?;
            self.apply(&plan)?;
            remove_if_exists(&journal)?;
            sync_dir(&self.path)?;
        }
        let entries = fs::read_dir(&self.path).map_err(StateError::io("list", &self.path))?;
        for entry in entries {
            let entry = entry.map_err(StateError::io("list", &self.path))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(NEXT_SUFFIX) || name.ends_with(TMP_SUFFIX) {
                remove_if_exists(&entry.path())?;
            }
        }
        Ok(())
    }

    /// The bytes of a file, or `None` if it does not exist.
    pub fn read_opt(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StateError> {
        let path = self.file(name);
        match fs::read(&path) {
            Ok(b) => Ok(Some(Zeroizing::new(b))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::io("read", &path)(e)),
        }
    }

    /// The bytes of a file that must exist.
    pub fn read(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, StateError> {
        self.read_opt(name)?.ok_or_else(|| StateError::Corrupt {
            path: self.file(name),
            reason: "the file is missing".into(),
        })
    }

    /// A JSON file, or `None` if it does not exist.
    pub fn read_json_opt<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StateError> {
        match self.read_opt(name)? {
            Some(bytes) => parse_json(&self.file(name), &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Replaces one file atomically.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let tmp = self.file(&format!("{name}{TMP_SUFFIX}"));
        write_new_file(&tmp, bytes)?;
        let path = self.file(name);
        fs::rename(&tmp, &path).map_err(StateError::io("replace", &path))?;
        sync_dir(&self.path)
    }

    /// Replaces one file with the JSON of `value`.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StateError::Corrupt {
            path: self.file(name),
            reason: format!("cannot encode: {e}"),
        })?;
        self.write(name, &bytes)
    }

    /// Removes one file if it exists.
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        remove_if_exists(&self.file(name))?;
        sync_dir(&self.path)
    }

    /// Writes several files and removes others as one change: either all of it is
    /// visible after a crash (finished by [`recover`](Self::recover)) or none of it.
    pub fn commit(&self, writes: &[(&str, &[u8])], removes: &[&str]) -> Result<(), StateError> {
        for (name, bytes) in writes {
            let next = self.file(&format!("{name}{NEXT_SUFFIX}"));
            remove_if_exists(&next)?;
            write_new_file(&next, bytes)?;
        }
        sync_dir(&self.path)?;
        let plan = CommitPlan {
            writes: writes.iter().map(|(n, _)| (*n).to_string()).collect(),
            removes: removes.iter().map(|n| (*n).to_string()).collect(),
        };
        self.write_json(COMMIT, &plan)?;
        self.apply(&plan)?;
        remove_if_exists(&self.file(COMMIT))?;
        sync_dir(&self.path)
    }

    fn apply(&self, plan: &CommitPlan) -> Result<(), StateError> {
        for name in plan.writes.iter().chain(&plan.removes) {
            if !is_state_file_name(name) {
                return Err(StateError::Corrupt {
                    path: self.file(COMMIT),
                    reason: "names a file outside the state layout".into(),
                });
            }
        }
        for name in &plan.writes {
            let next = self.file(&format!("{name}{NEXT_SUFFIX}"));
            let path = self.file(name);
            match fs::rename(&next, &path) {
                Ok(()) => {}
                // Renamed before an interruption.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StateError::io("replace", &path)(e)),
            }
        }
        for name in &plan.removes {
            remove_if_exists(&self.file(name))?;
        }
        Ok(())
    }

    /// Reads the registration record.
    pub fn load_record(&self) -> Result<AgentRecord, StateError> {
        let path = self.file(AGENT_FILE);
        let bytes = self
            .read_opt(AGENT_FILE)?
            .ok_or(StateError::NotRegistered { path: path.clone() })?;
        let record: AgentRecord = parse_json(&path, &bytes)?;
        if record.format != RECORD_FORMAT {
            return Err(StateError::Corrupt {
                path,
                reason: format!("unknown format {}", record.format),
            });
        }
        Ok(record)
    }

    /// Reads every key and certificate and checks they belong together.
    pub fn load_keys(&self, record: &AgentRecord) -> Result<Keys, StateError> {
        let identity = self.load_secret(IDENTITY_KEY, |b| SigningKey::from_bytes(b).ok())?;
        let kem = match self.read_opt(KEM_KEY)? {
            Some(bytes) => Some(parse_secret(&self.file(KEM_KEY), &bytes, |b| {
                KemSecretKey::from_bytes(b).ok()
            })?),
            None => None,
        };
        let tls_key_pem = self.load_text(TLS_KEY)?;
        {
            use rustls_pki_types::pem::PemObject as _;
            rustls_pki_types::PrivateKeyDer::from_pem_slice(tls_key_pem.as_bytes()).map_err(
                |_| StateError::Corrupt {
                    path: self.file(TLS_KEY),
                    reason: "not a PEM private key".into(),
                },
            )?;
        }
        let tls_cert_pem = self.load_text(TLS_CERT)?.to_string();
        crate::x509::CertInfo::from_pem(&tls_cert_pem).map_err(|r| StateError::Corrupt {
            path: self.file(TLS_CERT),
            reason: r.into(),
        })?;
        let ca_pem = self.load_text(CA_CERT)?.to_string();
        let ca_path = self.file(CA_CERT);
        let ca_der = crate::pki::first_cert_der(&ca_pem).ok_or_else(|| StateError::Corrupt {
            path: ca_path.clone(),
            reason: "not a PEM certificate".into(),
        })?;
        let pin = CaPin::from_hex(&record.ca_pin).ok_or_else(|| StateError::Corrupt {
            path: self.file(AGENT_FILE),
            reason: "ca_pin is not 64 hex characters".into(),
        })?;
        if CaPin::of_der(&ca_der) != pin {
            return Err(StateError::Corrupt {
                path: ca_path,
                reason: "its SHA-256 does not match the CA pin in agent.json".into(),
            });
        }
        Ok(Keys {
            identity,
            kem,
            tls_key_pem,
            tls_cert_pem,
            ca_pem,
        })
    }

    fn load_text(&self, name: &str) -> Result<Zeroizing<String>, StateError> {
        let bytes = self.read(name)?;
        match std::str::from_utf8(&bytes) {
            Ok(s) => Ok(Zeroizing::new(s.to_owned())),
            Err(_) => Err(StateError::Corrupt {
                path: self.file(name),
                reason: "not UTF-8 text".into(),
            }),
        }
    }

    fn load_secret<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Result<T, StateError> {
        let bytes = self.read(name)?;
        parse_secret(&self.file(name), &bytes, parse)
    }
}

fn parse_secret<T>(
    path: &Path,
    text: &[u8],
    parse: impl FnOnce(&[u8]) -> Option<T>,
) -> Result<T, StateError> {
    let corrupt = || StateError::Corrupt {
        path: path.to_path_buf(),
        reason: "expected 64 hex characters".into(),
    };
    let trimmed = text.trim_ascii();
    if trimmed.len() != 64 {
        return Err(corrupt());
    }
    let mut raw = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(trimmed, raw.as_mut_slice()).map_err(|_| corrupt())?;
    parse(raw.as_slice()).ok_or_else(corrupt)
}

/// Parses JSON, reporting the position of an error but never the content.
pub fn parse_json<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        reason: format!(
            "invalid {} at line {} column {}",
            match e.classify() {
                serde_json::error::Category::Data => "content",
                serde_json::error::Category::Eof => "JSON (truncated)",
                _ => "JSON",
            },
            e.line(),
            e.column()
        ),
    })
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitPlan {
    writes: Vec<String>,
    removes: Vec<String>,
}

fn is_state_file_name(name: &str) -> bool {
    [
        AGENT_FILE,
        IDENTITY_KEY,
        KEM_KEY,
        TLS_KEY,
        TLS_CERT,
        CA_CERT,
        REPLAY,
        PENDING_RESULTS,
        METRICS_BACKLOG,
        STATUS,
        IN_FLIGHT,
    ]
    .contains(&name)
}

/// Checks every entry of `dir`: regular files only, not accessible to group or
/// others, except `subdir`, a directory (not a link) checked the same way.
fn check_files(dir: &Path, subdir: Option<&str>) -> Result<(), StateError> {
    let entries = fs::read_dir(dir).map_err(StateError::io("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(StateError::io("list", dir))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(StateError::io("read", &path))?;
        if meta.file_type().is_dir() && subdir.is_some_and(|d| entry.file_name() == d) {
            check_mode(&path, meta.permissions().mode(), 0o700)?;
            check_files(&path, None)?;
            continue;
        }
        if !meta.file_type().is_file() {
            return Err(StateError::NotAFile { path });
        }
        check_mode(&path, meta.permissions().mode(), 0o600)?;
    }
    Ok(())
}

fn check_mode(path: &Path, mode: u32, want: u32) -> Result<(), StateError> {
    if mode & 0o077 != 0 {
        return Err(StateError::Permissions {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
            want,
        });
    }
    Ok(())
}

fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    remove_if_exists(path)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(StateError::io("create", path))?;
    f.write_all(bytes).map_err(StateError::io("write", path))?;
    f.sync_all().map_err(StateError::io("write", path))
}

fn remove_if_exists(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StateError::io("remove", path)(e)),
    }
}

fn sync_dir(path: &Path) -> Result<(), StateError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(StateError::io("sync", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, StateDir) {
        let t = tempfile::tempdir().unwrap();
        let d = StateDir::new(t.path().join("state"));
        d.create().unwrap();
        (t, d)
    }

    #[test]
    fn files_are_created_private_and_replaced_atomically() {
        let (_t, d) = dir();
        let mode = fs::metadata(d.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        d.write("status.json", b"{}").unwrap();
        d.write("status.json", b"{\"last_contact\":1}").unwrap();
        let mode = fs::metadata(d.file("status.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let s: StatusFile = d.read_json_opt(STATUS).unwrap().unwrap();
        assert_eq!(s.last_contact, Some(1));
        d.check_permissions().unwrap();
    }

    #[test]
    fn group_readable_files_are_refused_by_name() {
        let (_t, d) = dir();
        d.write(IDENTITY_KEY, b"x").unwrap();
        fs::set_permissions(d.file(IDENTITY_KEY), fs::Permissions::from_mode(0o640)).unwrap();
        let err = d.check_permissions().unwrap_err();
        assert!(matches!(err, StateError::Permissions { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains(&d.file(IDENTITY_KEY).display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("0640"), "{msg}");

        fs::set_permissions(d.file(IDENTITY_KEY), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let msg = d.check_permissions().unwrap_err().to_string();
        assert!(msg.contains("chmod 700"), "{msg}");
    }

    #[test]
    fn the_bin_directory_is_checked_like_the_rest() {
        let (_t, d) = dir();
        let bin = d.file(BIN_DIR);
        fs::DirBuilder::new().mode(0o700).create(&bin).unwrap();
        let binary = bin.join("pilothouse-agent");
        fs::write(&binary, b"elf").unwrap();
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o700)).unwrap();
        d.check_permissions().unwrap();

        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
        let err = d.check_permissions().unwrap_err();
        assert!(matches!(err, StateError::Permissions { .. }), "{err}");
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o750)).unwrap();
        assert!(d.check_permissions().is_err());
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o700)).unwrap();

        // Only `bin` may be a directory, and nothing inside it.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(bin.join("sub"))
            .unwrap();
        assert!(matches!(
            d.check_permissions(),
            Err(StateError::NotAFile { .. })
        ));
        fs::remove_dir(bin.join("sub")).unwrap();
        fs::DirBuilder::new()
            .mode(0o700)
            .create(d.file("other"))
            .unwrap();
        assert!(matches!(
            d.check_permissions(),
            Err(StateError::NotAFile { .. })
        ));
    }

    #[test]
    fn corrupt_json_names_the_file_without_echoing_it() {
        let (_t, d) = dir();
        d.write(STATUS, b"{\"last_contact\": \"s3cret\"}").unwrap();
        let err = d.read_json_opt::<StatusFile>(STATUS).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("status.json"), "{msg}");
        assert!(msg.contains("corrupt"), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
    }

    #[test]
    fn interrupted_commit_rolls_forward_and_unjournaled_files_are_dropped() {
        let (_t, d) = dir();
        d.write(TLS_KEY, b"old key").unwrap();
        d.write(TLS_CERT, b"old cert").unwrap();
        // A commit that stopped after writing its journal and one rename.
        write_new_file(&d.file("tls.crt.next"), b"new cert").unwrap();
        fs::rename(d.file("tls.crt.next"), d.file(TLS_CERT)).unwrap();
        write_new_file(&d.file("tls.key.next"), b"new key").unwrap();
        d.write_json(
            COMMIT,
            &CommitPlan {
                writes: vec![TLS_KEY.into(), TLS_CERT.into()],
                removes: vec![KEM_KEY.into()],
            },
        )
        .unwrap();
        d.write(KEM_KEY, b"gone").unwrap();
        d.recover().unwrap();
        assert_eq!(&*d.read(TLS_KEY).unwrap(), b"new key");
        assert_eq!(&*d.read(TLS_CERT).unwrap(), b"new cert");
        assert!(d.read_opt(KEM_KEY).unwrap().is_none());
        assert!(d.read_opt(COMMIT).unwrap().is_none());

        // Without a journal the half-written change is discarded.
        write_new_file(&d.file("tls.key.next"), b"newer key").unwrap();
        d.recover().unwrap();
        assert_eq!(&*d.read(TLS_KEY).unwrap(), b"new key");
        assert!(!d.file("tls.key.next").exists());
    }

    #[test]
    fn commit_writes_and_removes_together() {
        let (_t, d) = dir();
        d.write(KEM_KEY, b"k").unwrap();
        d.commit(&[(TLS_KEY, b"a"), (TLS_CERT, b"b")], &[KEM_KEY])
            .unwrap();
        assert_eq!(&*d.read(TLS_KEY).unwrap(), b"a");
        assert!(d.read_opt(KEM_KEY).unwrap().is_none());
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        d.check_permissions().unwrap();
    }

    #[test]
    fn a_journal_naming_other_files_is_refused() {
        let (_t, d) = dir();
        d.write_json(
            COMMIT,
            &CommitPlan {
                writes: vec!["../../etc/passwd".into()],
                removes: vec![],
            },
        )
        .unwrap();
        assert!(matches!(d.recover(), Err(StateError::Corrupt { .. })));
    }

    #[test]
    fn the_lock_is_exclusive() {
        let (_t, d) = dir();
        let held = d.lock().unwrap();
        assert!(matches!(d.lock(), Err(StateError::Locked { .. })));
        drop(held);
        d.lock().unwrap();
    }

    #[test]
    fn secret_files_must_be_64_hex() {
        let p = Path::new("identity.key");
        let key = parse_secret(p, &secret_hex(&[7; 32]), |b| SigningKey::from_bytes(b).ok());
        assert!(key.is_ok());
        for bad in [&b""[..], b"zz", &[b'a'; 63], &[b'g'; 64]] {
            let err = parse_secret(p, bad, |b| SigningKey::from_bytes(b).ok()).unwrap_err();
            assert!(err.to_string().contains("identity.key"));
        }
    }
}
