//! `pilothouse release keygen` and `pilothouse release sign`: the release key
//! and the signed agent releases the gateway serves (see [`crate::install`]).
//!
//! The release key belongs to whoever builds releases, not to the control
//! plane: `keygen` writes it where it is told (mode 0600) and nothing on the
//! control plane reads it. `sign` puts a binary, its manifest and the public
//! key into a releases directory, then reads them back and verifies them.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use channel::release::{
    current_platform, valid_platform, valid_version, ReleaseKey, ReleasePublicKey,
};

use crate::install::{check_releases, BINARY, MANIFEST, RELEASE_KEY};

/// What went wrong: `Usage` is for what the operator can fix (exit 2), the
/// rest is exit 1.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseCliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

fn io(action: &str, path: &Path, e: std::io::Error) -> ReleaseCliError {
    ReleaseCliError::Failed(format!("cannot {action} {}: {e}", path.display()))
}

/// Makes a release key at `out` (which must not exist); returns its public key.
pub fn keygen(out: &Path) -> Result<ReleasePublicKey, ReleaseCliError> {
    let key = ReleaseKey::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => ReleaseCliError::Usage(format!(
                "{} already exists; a release key is never overwritten (agents pin it)",
                out.display()
            )),
            _ => io("create", out, e),
        })?;
    f.write_all(key.to_pem().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io("write", out, e))?;
    Ok(key.public())
}

/// What `sign` was asked to do.
#[derive(Debug, Clone)]
pub struct SignRequest {
    pub key: PathBuf,
    pub binary: PathBuf,
    pub out: PathBuf,
    /// Default: what the binary says with `--version` (this platform only).
    pub version: Option<String>,
    /// Default: this machine's platform.
    pub platform: Option<String>,
}

/// What `sign` did.
#[derive(Debug, Clone)]
pub struct Signed {
    pub version: String,
    pub platform: String,
    pub sha256: String,
    pub fingerprint: String,
}

fn read_key(path: &Path) -> Result<ReleaseKey, ReleaseCliError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ReleaseCliError::Usage(format!(
            "no release key at {}; make one with `pilothouse release keygen --out {}`",
            path.display(),
            path.display()
        )),
        _ => io("read", path, e),
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ReleaseCliError::Usage(format!(
            "the release key {} is readable by others (mode {mode:04o}); run `chmod 600 {}` after checking who read it",
            path.display(),
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| io("read", path, e))?;
    ReleaseKey::from_pem(&text)
        .map_err(|e| ReleaseCliError::Usage(format!("{}: {e}", path.display())))
}

/// The version a binary of this platform reports: `NAME VERSION` on stdout.
fn version_of(binary: &Path) -> Result<String, ReleaseCliError> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| {
            ReleaseCliError::Usage(format!(
                "cannot run {} --version ({e}); give --version",
                binary.display()
            ))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .filter(|v| out.status.success() && valid_version(v))
        .map(str::to_string)
        .ok_or_else(|| {
            ReleaseCliError::Usage(format!(
                "{} --version did not print NAME VERSION; give --version",
                binary.display()
            ))
        })
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ReleaseCliError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io("create", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io("write", &tmp, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("set the mode of", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("rename", &tmp, e))
}

/// Signs a binary into a releases directory. See the module documentation.
pub fn sign(req: &SignRequest) -> Result<Signed, ReleaseCliError> {
    let key = read_key(&req.key)?;
    let platform = req.platform.clone().unwrap_or_else(current_platform);
    if !valid_platform(&platform) {
        return Err(ReleaseCliError::Usage(format!(
            "platform {platform:?} is not <arch>-<os>, such as x86_64-linux"
        )));
    }
    let version = match &req.version {
        Some(v) if valid_version(v) => v.clone(),
        Some(v) => {
            return Err(ReleaseCliError::Usage(format!(
                "version {v:?} is not 1 to 64 of [0-9A-Za-z.+-] starting with a digit"
            )))
        }
        None if platform == current_platform() => version_of(&req.binary)?,
        None => {
            return Err(ReleaseCliError::Usage(format!(
                "give --version for a {platform} binary (it cannot run here)"
            )))
        }
    };
    let binary = std::fs::read(&req.binary).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            ReleaseCliError::Usage(format!("no binary at {}", req.binary.display()))
        }
        _ => io("read", &req.binary, e),
    })?;
    let manifest = key
        .sign(&version, &platform, &binary)
        .map_err(|e| ReleaseCliError::Usage(e.to_string()))?;
    let public = key.public();

    let key_path = req.out.join(RELEASE_KEY);
    match std::fs::read_to_string(&key_path) {
        Ok(existing) => {
            let same = ReleasePublicKey::from_pem(&existing).is_ok_and(|k| k == public);
            if !same {
                return Err(ReleaseCliError::Usage(format!(
                    "{} holds another release key than {} ({}); agents that pinned it would refuse this release. Remove that file to change keys deliberately.",
                    key_path.display(),
                    req.key.display(),
                    public.fingerprint()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("read", &key_path, e)),
    }
    let dir = req.out.join(&platform);
    std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
    replace(&key_path, public.to_pem().as_bytes(), 0o644)?;
    // The binary before its manifest: an install between the two sees a
    // digest mismatch and refuses, never an unsigned binary.
    replace(&dir.join(BINARY), &binary, 0o755)?;
    replace(&dir.join(MANIFEST), manifest.to_text().as_bytes(), 0o644)?;

    let checked = check_releases(&req.out).map_err(ReleaseCliError::Failed)?;
    match checked.iter().find(|(p, _)| *p == platform) {
        Some((_, Ok(v))) if *v == version => {}
        Some((_, Err(e))) => {
            return Err(ReleaseCliError::Failed(format!(
                "the release written to {} does not verify: {e}",
                dir.display()
            )))
        }
        _ => {
            return Err(ReleaseCliError::Failed(format!(
                "the release written to {} changed while it was checked",
                dir.display()
            )))
        }
    }
    Ok(Signed {
        version,
        platform,
        sha256: manifest.sha256,
        fingerprint: public.fingerprint(),
    })
}
