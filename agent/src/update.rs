//! Signed self-update with crash-loop rollback: the `update_agent` command, the
//! launcher at the start of `pilothouse-agent run`, and marking a new version
//! stable once it has proved itself.
//!
//! Files in `<state>/bin/` (directory 0700; binaries 0700, the rest 0600):
//!
//! | file | content |
//! |---|---|
//! | `pilothouse-agent` | the binary the launcher starts (absent: the installed one runs) |
//! | `pilothouse-agent.version` | its release version |
//! | `pilothouse-agent.stable` | present once it ran healthy (its version, for people) |
//! | `pilothouse-agent.trial` | starts of a version not yet stable: `0` staged, `1` started |
//! | `pilothouse-agent.bak`, `.bak.version` | the binary that ran before, to revert to |
//! | `pilothouse-agent.new` | a verified release while it is being staged |
//!
//! `update_agent` ([`apply`]) refuses a release for another platform, the running
//! version, an older one without `allow_downgrade`, and anything the pinned
//! release key ([`crate::config::Config::release_key`]) did not sign; the
//! signature is checked before the download, the digest after it. Only then is
//! the binary staged ([`stage`] takes a [`VerifiedRelease`], which only
//! [`VerifiedRelease::verify`] makes) and the process ends once its result was
//! posted, so that systemd starts it again.
//!
//! The launcher ([`launch`], decided by [`decide_launch`]) runs in the installed
//! binary before anything else and execs `bin/pilothouse-agent` with
//! [`LAUNCHED_ENV`] and [`VERSION_ENV`] set. A version that is not yet stable gets
//! one start: if the process is back in the launcher before [`mark_stable`] ran
//! (it crashed, exited or was stopped; a reboot counts too), or the exec itself
//! fails, the previous
//! binary is restored and marked stable, and `update-report.json` says so. The
//! report (and the `applied` one) goes out with the next capabilities declaration.
//!
//! Past this module a control plane (or anyone who can queue commands) can make
//! the agent switch only to a binary the release key signed for this platform, and
//! to an older one only when the command says so; it cannot keep a version that
//! does not stay up. Whoever can write the state directory can replace the binary
//! (as they can the keys).

use crate::gateway::GatewayError;
use crate::state::{self, StateDir, StateError};
use channel::api::{UpdateAgentArgs, UpdateOutcome, UpdateReport};
use channel::release::{self, Manifest, ReleaseError, ReleasePublicKey};
use std::cmp::Ordering;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Set by the launcher in the environment of the binary it starts.
pub const LAUNCHED_ENV: &str = "PILOTHOUSE_AGENT_LAUNCHED";
/// The release version of the binary the launcher started.
pub const VERSION_ENV: &str = "PILOTHOUSE_AGENT_VERSION";

/// The binary the launcher starts.
pub const BINARY: &str = "pilothouse-agent";
pub const VERSION_FILE: &str = "pilothouse-agent.version";
pub const STABLE: &str = "pilothouse-agent.stable";
pub const TRIAL: &str = "pilothouse-agent.trial";
pub const BACKUP: &str = "pilothouse-agent.bak";
pub const BACKUP_VERSION: &str = "pilothouse-agent.bak.version";
pub const NEW: &str = "pilothouse-agent.new";
const TMP_SUFFIX: &str = ".tmp";

/// Why an update was refused or failed. Each is a sentence for the operator.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("the update_agent arguments are invalid: {0}")]
    Arguments(String),
    #[error(
        "no release key is pinned at {}; updates need one (the install script puts it there)",
        .path.display()
    )]
    NoReleaseKey { path: PathBuf },
    #[error("the release key pinned at {} cannot be used: {source}", .path.display())]
    BadReleaseKey {
        path: PathBuf,
        #[source]
        source: ReleaseError,
    },
    /// The manifest, its signature, the binary's digest or its platform.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error("already running {0}")]
    SameVersion(String),
    #[error("{offered} is older than the running {running}; an older version is installed only with allow_downgrade")]
    Downgrade { offered: String, running: String },
    #[error("version {version} is still on trial (it is kept once it has run {after_secs} s and reached the control plane); send the update again after that")]
    OnTrial { version: String, after_secs: u64 },
    #[error("cannot download the release: {0}")]
    Download(#[source] GatewayError),
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

impl UpdateError {
    /// The agent's policy refused the update (as opposed to: trying it failed).
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            UpdateError::Download(_) | UpdateError::Io { .. } | UpdateError::State(_)
        )
    }

    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| UpdateError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The agent binary this process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    /// The release version it reports.
    pub version: String,
    /// Started by the launcher from `<state>/bin`.
    pub launched: bool,
}

impl Binary {
    /// From the launcher's environment: [`VERSION_ENV`] when it is a valid
    /// version, else this build's version.
    pub fn from_env() -> Self {
        let version = std::env::var(VERSION_ENV)
            .ok()
            .filter(|v| release::valid_version(v))
            .unwrap_or_else(|| crate::VERSION.to_string());
        Self {
            version,
            launched: std::env::var_os(LAUNCHED_ENV).is_some(),
        }
    }

    /// The installed binary, not started by the launcher.
    pub fn installed() -> Self {
        Self {
            version: crate::VERSION.to_string(),
            launched: false,
        }
    }
}

/// The running executable, to be kept as the binary to revert to. Linux's
/// `/proc/self/exe` opens even if the file was replaced since the start.
pub fn running_exe() -> PathBuf {
    let proc = PathBuf::from("/proc/self/exe");
    if proc.exists() {
        return proc;
    }
    std::env::current_exe().unwrap_or(proc)
}

/// A binary the pinned release key signed, with its version, for this platform.
/// The only thing [`stage`] installs.
pub struct VerifiedRelease {
    version: String,
    bytes: Vec<u8>,
}

impl VerifiedRelease {
    /// Checks `bytes` against `manifest`: signed by `key`, the digest it names,
    /// for `platform`.
    pub fn verify(
        manifest: &Manifest,
        key: &ReleasePublicKey,
        bytes: Vec<u8>,
        platform: &str,
    ) -> Result<Self, ReleaseError> {
        manifest.verify_for(key, &bytes, platform)?;
        Ok(Self {
            version: manifest.version.clone(),
            bytes,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }
}

fn load_release_key(path: &Path) -> Result<ReleasePublicKey, UpdateError> {
    let text = fs::read_to_string(path).map_err(|e| {
        tracing::debug!(error = %e, path = %path.display(), "cannot read the release key");
        UpdateError::NoReleaseKey {
            path: path.to_path_buf(),
        }
    })?;
    ReleasePublicKey::from_pem(&text).map_err(|source| UpdateError::BadReleaseKey {
        path: path.to_path_buf(),
        source,
    })
}

/// `update_agent`: checks the request, downloads the binary with `download`
/// (given the platform), verifies and stages it. Returns the result text; the
/// caller ends the process once that result was posted. A refusal writes
/// nothing; a staging that fails part-way (a full disk) removes the new binary
/// and leaves the running one to start next.
pub async fn apply<F, Fut>(
    dir: &StateDir,
    args: &UpdateAgentArgs,
    release_key: &Path,
    running: &Binary,
    running_exe: &Path,
    download: F,
) -> Result<String, UpdateError>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<Vec<u8>, GatewayError>>,
{
    let manifest = Manifest::parse(&args.manifest)?;
    let key = load_release_key(release_key)?;
    let platform = release::current_platform();
    if manifest.platform != platform {
        return Err(ReleaseError::Platform {
            release: manifest.platform,
            this: platform,
        }
        .into());
    }
    match release::compare_versions(&manifest.version, &running.version) {
        Ordering::Equal => return Err(UpdateError::SameVersion(running.version.clone())),
        Ordering::Less if !args.allow_downgrade => {
            return Err(UpdateError::Downgrade {
                offered: manifest.version,
                running: running.version.clone(),
            })
        }
        _ => {}
    }
    // An early refusal that saves the download; `VerifiedRelease::verify`
    // checks the signature again with the bytes and decides.
    manifest.verify_signature(&key)?;
    let bytes = download(platform.clone())
        .await
        .map_err(UpdateError::Download)?;
    let release = VerifiedRelease::verify(&manifest, &key, bytes, &platform)?;
    stage(dir, &release, running, running_exe)?;
    Ok(format!("switching to {}; restarting", release.version))
}

/// `<state>/bin` and its files. Small files are replaced atomically (temporary
/// file, fsync, rename); the directory is synced by the callers at the end.
struct Bin {
    path: PathBuf,
}

impl Bin {
    fn of(dir: &StateDir) -> Self {
        Self {
            path: dir.file(state::BIN_DIR),
        }
    }

    fn create(dir: &StateDir) -> Result<Self, UpdateError> {
        let bin = Self::of(dir);
        match fs::DirBuilder::new().mode(0o700).create(&bin.path) {
            Ok(()) => sync_dir(dir.path())?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let meta =
                    fs::symlink_metadata(&bin.path).map_err(UpdateError::io("read", &bin.path))?;
                if !meta.file_type().is_dir() {
                    return Err(UpdateError::io("use", &bin.path)(io::Error::other(
                        "it is not a directory",
                    )));
                }
            }
            Err(e) => return Err(UpdateError::io("create", &bin.path)(e)),
        }
        Ok(bin)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn exists(&self, name: &str) -> bool {
        fs::symlink_metadata(self.file(name)).is_ok()
    }

    /// A version file's content, if it holds a valid version.
    fn version(&self, name: &str) -> Option<String> {
        let text = fs::read_to_string(self.file(name)).ok()?;
        let v = text.trim();
        release::valid_version(v).then(|| v.to_string())
    }

    /// The trial file's start count (`None`: missing or unreadable).
    fn trial_starts(&self) -> Option<u32> {
        fs::read_to_string(self.file(TRIAL))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Writes `name` from `content` with `mode`, fsynced, replacing it whole.
    fn write_from(&self, name: &str, content: &mut dyn Read, mode: u32) -> Result<(), UpdateError> {
        let tmp = self.file(&format!("{name}{TMP_SUFFIX}"));
        remove_if_exists(&tmp)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(UpdateError::io("create", &tmp))?;
        io::copy(content, &mut f).map_err(UpdateError::io("write", &tmp))?;
        f.flush().map_err(UpdateError::io("write", &tmp))?;
        f.sync_all().map_err(UpdateError::io("write", &tmp))?;
        drop(f);
        let path = self.file(name);
        fs::rename(&tmp, &path).map_err(UpdateError::io("replace", &path))
    }

    fn write_text(&self, name: &str, text: &str) -> Result<(), UpdateError> {
        self.write_from(name, &mut format!("{text}\n").as_bytes(), 0o600)
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), UpdateError> {
        let to = self.file(to);
        fs::rename(self.file(from), &to).map_err(UpdateError::io("replace", &to))
    }

    fn remove(&self, name: &str) -> Result<(), UpdateError> {
        remove_if_exists(&self.file(name))
    }

    fn sync(&self) -> Result<(), UpdateError> {
        sync_dir(&self.path)
    }
}

fn remove_if_exists(path: &Path) -> Result<(), UpdateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(UpdateError::io("remove", path)(e)),
    }
}

fn sync_dir(path: &Path) -> Result<(), UpdateError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(UpdateError::io("sync", path))
}

/// Installs `release` as `<state>/bin/pilothouse-agent` for the launcher's next
/// start, keeping the binary running now as the one to revert to. Until the
/// final rename there is no `bin/pilothouse-agent`, so a crash in between leaves
/// the installed binary to run.
pub fn stage(
    dir: &StateDir,
    release: &VerifiedRelease,
    running: &Binary,
    running_exe: &Path,
) -> Result<(), UpdateError> {
    let bin = Bin::create(dir)?;
    bin.write_from(NEW, &mut release.bytes.as_slice(), 0o700)?;
    let staged = switch_to_new(&bin, release, running, running_exe);
    if staged.is_err() {
        let _ = bin.remove(NEW);
        if running.launched && !bin.exists(BINARY) && bin.exists(BACKUP) {
            // Best effort: the launched binary moved aside goes back as the
            // stable one, rather than leaving the installed binary to run.
            let _ = bin.rename(BACKUP, BINARY);
            let _ = bin.write_text(VERSION_FILE, &running.version);
            let _ = bin.write_text(STABLE, &running.version);
            let _ = bin.remove(TRIAL);
            let _ = bin.sync();
        }
    }
    staged
}

fn switch_to_new(
    bin: &Bin,
    release: &VerifiedRelease,
    running: &Binary,
    running_exe: &Path,
) -> Result<(), UpdateError> {
    if running.launched && bin.exists(BINARY) {
        // The launcher started this process from it: it is what runs now.
        bin.rename(BINARY, BACKUP)?;
    } else {
        let mut exe = File::open(running_exe).map_err(UpdateError::io("read", running_exe))?;
        bin.write_from(BACKUP, &mut exe, 0o700)?;
        // A binary there is not the one running (the launcher could not start
        // it): it is replaced, not kept.
        bin.remove(BINARY)?;
    }
    bin.write_text(BACKUP_VERSION, &running.version)?;
    bin.write_text(VERSION_FILE, &release.version)?;
    bin.remove(STABLE)?;
    bin.write_text(TRIAL, "0")?;
    bin.rename(NEW, BINARY)?;
    bin.sync()
}

/// What the launcher does at the start of `run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// Run on in this process (the installed binary).
    Here,
    /// Replace this process with `<state>/bin/pilothouse-agent`.
    Exec {
        /// Its release version (`None`: unreadable; it then reports its build's).
        version: Option<String>,
        /// A new version's first start: if the exec fails, revert.
        trial: bool,
    },
}

/// Decides what the launcher starts, from the files in `<state>/bin`, and
/// records the start: a new version's first start sets its trial count to 1;
/// a second start of a version that never became stable reverts to the
/// previous binary and writes `update-report.json`. Never execs.
pub fn decide_launch(dir: &StateDir) -> Result<Launch, UpdateError> {
    let bin = Bin::of(dir);
    if !bin.exists(BINARY) {
        return Ok(Launch::Here);
    }
    // Never start a binary others could have replaced; `start` then names the problem.
    dir.check_permissions()?;
    if bin.exists(STABLE) {
        return Ok(Launch::Exec {
            version: bin.version(VERSION_FILE),
            trial: false,
        });
    }
    match bin.trial_starts() {
        Some(0) => {
            bin.write_text(TRIAL, "1")?;
            bin.sync()?;
            Ok(Launch::Exec {
                version: bin.version(VERSION_FILE),
                trial: true,
            })
        }
        // Started before and not stable: it did not stay up. An unreadable count
        // is treated the same, in favour of the binary known to work.
        _ => {
            let failed = bin
                .version(VERSION_FILE)
                .unwrap_or_else(|| "unknown".into());
            revert(
                dir,
                &format!("version {failed} did not stay up after an update"),
            )
        }
    }
}

/// Restores the binary that ran before the update (or, without one, leaves the
/// installed binary to run), marks it stable and writes `update-report.json`.
/// Returns what to start now.
pub fn revert(dir: &StateDir, reason: &str) -> Result<Launch, UpdateError> {
    let bin = Bin::of(dir);
    let failed = bin.version(VERSION_FILE);
    let (launch, restored) = if bin.exists(BACKUP) {
        bin.rename(BACKUP, BINARY)?;
        let restored = bin.version(BACKUP_VERSION);
        if bin.exists(BACKUP_VERSION) {
            bin.rename(BACKUP_VERSION, VERSION_FILE)?;
        } else {
            bin.remove(VERSION_FILE)?;
        }
        bin.write_text(STABLE, restored.as_deref().unwrap_or("unknown"))?;
        bin.remove(TRIAL)?;
        let launch = Launch::Exec {
            version: restored.clone(),
            trial: false,
        };
        (launch, restored)
    } else {
        for name in [BINARY, VERSION_FILE, TRIAL, BACKUP_VERSION] {
            bin.remove(name)?;
        }
        (Launch::Here, Some(crate::VERSION.to_string()))
    };
    bin.sync()?;
    tracing::warn!(
        failed = failed.as_deref().unwrap_or("unknown"),
        restored = restored.as_deref().unwrap_or("unknown"),
        %reason,
        "self-update reverted"
    );
    if let (Some(from_version), Some(to_version)) = (failed, restored) {
        let report = UpdateReport {
            outcome: UpdateOutcome::Reverted,
            from_version,
            to_version,
            reason: Some(reason.chars().take(500).collect()),
        };
        dir.write_json(state::UPDATE_REPORT, &report)?;
    }
    Ok(launch)
}

/// The launcher, at the start of `pilothouse-agent run`: unless this process was
/// itself launched, execs `<state>/bin/pilothouse-agent` as [`decide_launch`]
/// says. Returns only to run on in this process, which it then always may: a
/// launcher problem is logged, never fatal.
pub fn launch(state_dir: &Path) {
    if std::env::var_os(LAUNCHED_ENV).is_some() {
        return;
    }
    launch_with(&StateDir::new(state_dir), exec);
}

/// [`launch`] with the exec given (it returns only on failure).
pub fn launch_with(dir: &StateDir, exec: impl FnOnce(&Path, Option<&str>) -> io::Error) {
    let launch = match decide_launch(dir) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "the launcher cannot use {}: running the installed binary", Bin::of(dir).path.display());
            return;
        }
    };
    let Launch::Exec { version, trial } = launch else {
        return;
    };
    let binary = Bin::of(dir).file(BINARY);
    let shown = version.as_deref().unwrap_or("unknown");
    tracing::info!(version = shown, trial, "starting the updated agent binary");
    let error = exec(&binary, version.as_deref());
    if trial {
        tracing::warn!(version = shown, %error, "cannot start the new agent version: reverting, and running the installed binary");
        let reason = format!("version {shown} could not be started: {error}");
        if let Err(e) = revert(dir, &reason) {
            tracing::warn!(error = %e, "cannot revert the self-update");
        }
    } else {
        tracing::warn!(%error, binary = %binary.display(), "cannot start the agent binary: running the installed one");
    }
}

/// Replaces this process with `binary` and the same arguments. Returns only on failure.
fn exec(binary: &Path, version: Option<&str>) -> io::Error {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = std::process::Command::new(binary);
    cmd.args(std::env::args_os().skip(1)).env(LAUNCHED_ENV, "1");
    match version {
        Some(v) => cmd.env(VERSION_ENV, v),
        None => cmd.env_remove(VERSION_ENV),
    };
    cmd.exec()
}

/// A launched version's probation: it is marked stable once it has run
/// `update_stable_after_secs` and polled the control plane successfully.
#[derive(Debug, Clone, Copy)]
pub struct Trial {
    started: Instant,
    after: Duration,
}

impl Trial {
    /// `Some` when `running` was launched from `<state>/bin` and that binary is
    /// not stable yet.
    pub fn begin(dir: &StateDir, running: &Binary, after: Duration, now: Instant) -> Option<Self> {
        let bin = Bin::of(dir);
        (running.launched && bin.exists(BINARY) && !bin.exists(STABLE)).then_some(Self {
            started: now,
            after,
        })
    }

    /// Whether it has run long enough (the caller knows it polled successfully).
    pub fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) >= self.after
    }

    pub fn after(&self) -> Duration {
        self.after
    }
}

/// Marks the launched binary stable and writes the `applied` report to
/// `update-report.json` (sent with the next capabilities declaration, retried at
/// every start until the control plane took it). `None` without a readable
/// previous version to report.
pub fn mark_stable(dir: &StateDir, running: &Binary) -> Result<Option<UpdateReport>, UpdateError> {
    let bin = Bin::of(dir);
    // Stable first: a crash before the report loses the report, not the version.
    bin.write_text(STABLE, &running.version)?;
    bin.remove(TRIAL)?;
    bin.sync()?;
    let Some(from_version) = bin.version(BACKUP_VERSION) else {
        return Ok(None);
    };
    let report = UpdateReport {
        outcome: UpdateOutcome::Applied,
        from_version,
        to_version: running.version.clone(),
        reason: None,
    };
    dir.write_json(state::UPDATE_REPORT, &report)?;
    Ok(Some(report))
}

/// The report waiting in `update-report.json`. One that cannot be read is
/// dropped (and logged): it must not block the capabilities declaration.
pub fn pending_report(dir: &StateDir) -> Option<UpdateReport> {
    match dir.read_json_opt(state::UPDATE_REPORT) {
        Ok(report) => report,
        Err(e) => {
            tracing::warn!(error = %e, "dropping an unreadable self-update report");
            if let Err(e) = dir.remove(state::UPDATE_REPORT) {
                tracing::warn!(error = %e, "cannot remove the self-update report");
            }
            None
        }
    }
}

/// Removes `update-report.json` once the control plane took it.
pub fn clear_report(dir: &StateDir) -> Result<(), StateError> {
    dir.remove(state::UPDATE_REPORT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel::release::ReleaseKey;
    use std::os::unix::fs::PermissionsExt as _;

    struct Fixture {
        _t: tempfile::TempDir,
        dir: StateDir,
        key: ReleaseKey,
        key_path: PathBuf,
        exe: PathBuf,
    }

    const RUNNING: &[u8] = b"\x7fELF the binary running now";
    const NEW_BINARY: &[u8] = b"\x7fELF release 0.2.0";

    fn fixture() -> Fixture {
        let t = tempfile::tempdir().unwrap();
        let dir = StateDir::new(t.path().join("state"));
        dir.create().unwrap();
        let key = ReleaseKey::generate();
        let key_path = t.path().join("release-key.pem");
        fs::write(&key_path, key.public().to_pem()).unwrap();
        let exe = t.path().join("installed-agent");
        fs::write(&exe, RUNNING).unwrap();
        Fixture {
            _t: t,
            dir,
            key,
            key_path,
            exe,
        }
    }

    fn running(version: &str, launched: bool) -> Binary {
        Binary {
            version: version.into(),
            launched,
        }
    }

    fn bin(f: &Fixture) -> PathBuf {
        f.dir.file(state::BIN_DIR)
    }

    fn read(f: &Fixture, name: &str) -> String {
        fs::read_to_string(bin(f).join(name)).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn args(manifest: &Manifest, allow_downgrade: bool) -> UpdateAgentArgs {
        UpdateAgentArgs {
            manifest: manifest.to_text(),
            allow_downgrade,
        }
    }

    /// Runs `apply` serving `served`; returns its result and whether it downloaded.
    fn run_apply(
        f: &Fixture,
        args: &UpdateAgentArgs,
        key_path: &Path,
        running: &Binary,
        served: &[u8],
    ) -> (Result<String, UpdateError>, bool) {
        let downloaded = std::cell::Cell::new(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let result = rt.block_on(apply(&f.dir, args, key_path, running, &f.exe, |platform| {
            downloaded.set(true);
            assert_eq!(platform, release::current_platform());
            let bytes = served.to_vec();
            async move { Ok(bytes) }
        }));
        (result, downloaded.get())
    }

    /// A staged update from 0.1.0 (the installed binary) to 0.2.0.
    fn staged(f: &Fixture) {
        let m = f
            .key
            .sign("0.2.0", &release::current_platform(), NEW_BINARY)
            .unwrap();
        let (r, _) = run_apply(
            f,
            &args(&m, false),
            &f.key_path,
            &running("0.1.0", false),
            NEW_BINARY,
        );
        assert_eq!(r.unwrap(), "switching to 0.2.0; restarting");
    }

    #[test]
    fn a_verified_release_is_staged_with_the_running_binary_kept() {
        let f = fixture();
        staged(&f);
        let b = bin(&f);
        assert_eq!(mode(&b), 0o700);
        assert_eq!(fs::read(b.join(BINARY)).unwrap(), NEW_BINARY);
        assert_eq!(fs::read(b.join(BACKUP)).unwrap(), RUNNING);
        assert_eq!(mode(&b.join(BINARY)), 0o700);
        assert_eq!(mode(&b.join(BACKUP)), 0o700);
        assert_eq!(read(&f, VERSION_FILE).trim(), "0.2.0");
        assert_eq!(read(&f, BACKUP_VERSION).trim(), "0.1.0");
        assert_eq!(read(&f, TRIAL).trim(), "0");
        for name in [VERSION_FILE, BACKUP_VERSION, TRIAL] {
            assert_eq!(mode(&b.join(name)), 0o600, "{name}");
        }
        let mut names: Vec<String> = fs::read_dir(&b)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [BINARY, BACKUP, BACKUP_VERSION, TRIAL, VERSION_FILE]);
        // The state directory's own check accepts `bin/`.
        f.dir.check_permissions().unwrap();
    }

    const NEXT_030: &[u8] = b"\x7fELF release 0.3.0";

    /// Running 0.2.0 from bin/, stable, and applying 0.3.0.
    fn update_launched_020_to_030(f: &Fixture) -> Result<String, UpdateError> {
        fs::write(bin(f).join(STABLE), "0.2.0\n").unwrap();
        fs::remove_file(bin(f).join(TRIAL)).unwrap();
        let m = f
            .key
            .sign("0.3.0", &release::current_platform(), NEXT_030)
            .unwrap();
        run_apply(
            f,
            &args(&m, false),
            &f.key_path,
            &running("0.2.0", true),
            NEXT_030,
        )
        .0
    }

    #[test]
    fn a_launched_binary_is_kept_by_renaming_it() {
        let f = fixture();
        staged(&f);
        update_launched_020_to_030(&f).unwrap();
        let next = NEXT_030;
        assert_eq!(fs::read(bin(&f).join(BINARY)).unwrap(), next);
        assert_eq!(fs::read(bin(&f).join(BACKUP)).unwrap(), NEW_BINARY);
        assert_eq!(read(&f, BACKUP_VERSION).trim(), "0.2.0");
        assert_eq!(read(&f, VERSION_FILE).trim(), "0.3.0");
        assert!(!bin(&f).join(STABLE).exists());
        assert_eq!(read(&f, TRIAL).trim(), "0");
    }

    #[test]
    fn a_staging_that_fails_part_way_keeps_the_launched_binary() {
        let f = fixture();
        staged(&f);
        // A write after the running binary was moved aside fails.
        fs::create_dir(bin(&f).join(format!("{BACKUP_VERSION}{TMP_SUFFIX}"))).unwrap();
        let e = update_launched_020_to_030(&f).unwrap_err();
        assert!(!e.is_refusal(), "{e}");
        assert_eq!(fs::read(bin(&f).join(BINARY)).unwrap(), NEW_BINARY);
        assert_eq!(read(&f, VERSION_FILE).trim(), "0.2.0");
        assert!(bin(&f).join(STABLE).exists());
        assert!(!bin(&f).join(NEW).exists());
        assert!(!bin(&f).join(TRIAL).exists());
    }

    #[test]
    fn refused_updates_write_nothing() {
        let f = fixture();
        let platform = release::current_platform();
        let sign = |v: &str, p: &str| f.key.sign(v, p, NEW_BINARY).unwrap();
        let good = sign("0.2.0", &platform);
        let other_platform = if platform == "aarch64-linux" {
            "x86_64-linux"
        } else {
            "aarch64-linux"
        };
        let stranger = ReleaseKey::generate()
            .sign("0.2.0", &platform, NEW_BINARY)
            .unwrap();
        let mut other_version = good.clone();
        other_version.version = "0.3.0".into();
        let mut tampered = NEW_BINARY.to_vec();
        tampered[5] ^= 1;
        let missing_key = f.dir.path().join("no-such-key.pem");
        let v1 = running("0.1.0", false);
        let v2 = running("0.2.0", false);
        let v3 = running("0.3.0", false);
        // Refused, with nothing under bin/; returns the reason and whether it downloaded.
        let refused = |a: &UpdateAgentArgs, key: &Path, run: &Binary, served: &[u8]| {
            let (r, downloaded) = run_apply(&f, a, key, run, served);
            let e = r.unwrap_err();
            assert!(e.is_refusal(), "{e}");
            assert!(!bin(&f).exists(), "{e}: something was written");
            (e.to_string(), downloaded)
        };
        let key = f.key_path.as_path();

        let (e, downloaded) = refused(&args(&good, false), key, &v1, &tampered);
        assert!(e.starts_with("the binary's SHA-256 is"), "{e}");
        assert!(downloaded, "the digest is checked on the downloaded bytes");
        for (m, what) in [
            (&stranger, "another key"),
            (&other_version, "another version"),
        ] {
            let (e, downloaded) = refused(&args(m, false), key, &v1, NEW_BINARY);
            assert!(
                e.contains("does not verify with release key SHA256:"),
                "{what}: {e}"
            );
            assert!(!downloaded, "{what}: the signature is checked first");
        }
        let (e, downloaded) = refused(
            &args(&sign("0.2.0", other_platform), false),
            key,
            &v1,
            NEW_BINARY,
        );
        assert_eq!(
            e,
            format!("the release is for {other_platform}, this machine is {platform}")
        );
        assert!(!downloaded);
        let (e, _) = refused(&args(&good, false), key, &v2, NEW_BINARY);
        assert_eq!(e, "already running 0.2.0");
        let (e, downloaded) = refused(&args(&good, false), key, &v3, NEW_BINARY);
        assert!(
            e.starts_with("0.2.0 is older than the running 0.3.0"),
            "{e}"
        );
        assert!(e.contains("allow_downgrade"), "{e}");
        assert!(!downloaded);
        let (e, downloaded) = refused(&args(&good, false), &missing_key, &v1, NEW_BINARY);
        assert_eq!(
            e,
            format!(
                "no release key is pinned at {}; updates need one (the install script puts it there)",
                missing_key.display()
            )
        );
        assert!(!downloaded);
        let truncated = UpdateAgentArgs {
            manifest: "version=0.2.0\n".into(),
            allow_downgrade: false,
        };
        let (e, _) = refused(&truncated, key, &v1, NEW_BINARY);
        assert!(e.contains("malformed"), "{e}");
        // A key file that is not a public key is named too.
        let bad_key = f.dir.path().join("bad.pem");
        fs::write(&bad_key, f.key.to_pem().as_bytes()).unwrap();
        let (r, _) = run_apply(&f, &args(&good, false), &bad_key, &v1, NEW_BINARY);
        assert!(r.unwrap_err().to_string().contains("cannot be used"));
        assert!(!bin(&f).exists());
        // A downgrade goes through when asked for.
        let (r, _) = run_apply(
            &f,
            &args(&good, true),
            f.key_path.as_path(),
            &v3,
            NEW_BINARY,
        );
        r.unwrap();
        assert_eq!(read(&f, VERSION_FILE).trim(), "0.2.0");
    }

    #[test]
    fn a_failed_download_is_a_failure_not_a_refusal() {
        let f = fixture();
        let m = f
            .key
            .sign("0.2.0", &release::current_platform(), NEW_BINARY)
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = rt
            .block_on(apply(
                &f.dir,
                &args(&m, false),
                &f.key_path,
                &running("0.1.0", false),
                &f.exe,
                |_| async {
                    Err(GatewayError::Refused {
                        status: 404,
                        reason: "no release for this platform".into(),
                    })
                },
            ))
            .unwrap_err();
        assert!(!e.is_refusal());
        assert!(
            e.to_string().contains("no release for this platform"),
            "{e}"
        );
        assert!(!bin(&f).exists());
    }

    #[test]
    fn without_a_staged_binary_the_installed_one_runs() {
        let f = fixture();
        assert_eq!(decide_launch(&f.dir).unwrap(), Launch::Here);
        let mut called = false;
        launch_with(&f.dir, |_, _| {
            called = true;
            io::Error::other("unreachable")
        });
        assert!(!called);
    }

    #[test]
    fn a_new_version_gets_one_start_then_is_reverted_with_a_report() {
        let f = fixture();
        staged(&f);
        // First start: counted, then exec'd as a trial.
        let first = decide_launch(&f.dir).unwrap();
        assert_eq!(
            first,
            Launch::Exec {
                version: Some("0.2.0".into()),
                trial: true
            }
        );
        assert_eq!(read(&f, TRIAL).trim(), "1");
        assert!(pending_report(&f.dir).is_none());
        // Back in the launcher without having been marked stable: revert.
        let second = decide_launch(&f.dir).unwrap();
        assert_eq!(
            second,
            Launch::Exec {
                version: Some("0.1.0".into()),
                trial: false
            }
        );
        assert_eq!(fs::read(bin(&f).join(BINARY)).unwrap(), RUNNING);
        assert_eq!(read(&f, VERSION_FILE).trim(), "0.1.0");
        assert_eq!(read(&f, STABLE).trim(), "0.1.0");
        for gone in [TRIAL, BACKUP, BACKUP_VERSION] {
            assert!(!bin(&f).join(gone).exists(), "{gone}");
        }
        assert_eq!(
            pending_report(&f.dir).unwrap(),
            UpdateReport {
                outcome: UpdateOutcome::Reverted,
                from_version: "0.2.0".into(),
                to_version: "0.1.0".into(),
                reason: Some("version 0.2.0 did not stay up after an update".into()),
            }
        );
        assert_eq!(
            mode(&f.dir.file(state::UPDATE_REPORT)),
            0o600,
            "the report is a state file"
        );
        // From then on the restored binary starts as the stable one.
        assert_eq!(decide_launch(&f.dir).unwrap(), second);
        f.dir.check_permissions().unwrap();
    }

    #[test]
    fn a_stable_version_is_started_as_it_is() {
        let f = fixture();
        staged(&f);
        decide_launch(&f.dir).unwrap();
        let report = mark_stable(&f.dir, &running("0.2.0", true))
            .unwrap()
            .unwrap();
        assert_eq!(
            report,
            UpdateReport {
                outcome: UpdateOutcome::Applied,
                from_version: "0.1.0".into(),
                to_version: "0.2.0".into(),
                reason: None,
            }
        );
        assert_eq!(pending_report(&f.dir), Some(report));
        assert!(!bin(&f).join(TRIAL).exists());
        for _ in 0..3 {
            assert_eq!(
                decide_launch(&f.dir).unwrap(),
                Launch::Exec {
                    version: Some("0.2.0".into()),
                    trial: false
                }
            );
        }
        assert_eq!(fs::read(bin(&f).join(BINARY)).unwrap(), NEW_BINARY);
        clear_report(&f.dir).unwrap();
        assert!(pending_report(&f.dir).is_none());
    }

    #[test]
    fn a_failed_exec_of_a_new_version_reverts_and_runs_here() {
        let f = fixture();
        staged(&f);
        let mut calls = vec![];
        launch_with(&f.dir, |binary, version| {
            calls.push((binary.to_path_buf(), version.map(str::to_string)));
            io::Error::from(io::ErrorKind::PermissionDenied)
        });
        assert_eq!(calls, [(bin(&f).join(BINARY), Some("0.2.0".to_string()))]);
        assert_eq!(fs::read(bin(&f).join(BINARY)).unwrap(), RUNNING);
        assert!(bin(&f).join(STABLE).exists());
        let report = pending_report(&f.dir).unwrap();
        assert_eq!(report.outcome, UpdateOutcome::Reverted);
        assert_eq!(
            (report.from_version.as_str(), report.to_version.as_str()),
            ("0.2.0", "0.1.0")
        );
        assert!(report
            .reason
            .unwrap()
            .starts_with("version 0.2.0 could not be started"),);
    }

    #[test]
    fn a_failed_exec_of_a_stable_version_changes_nothing() {
        let f = fixture();
        staged(&f);
        decide_launch(&f.dir).unwrap();
        mark_stable(&f.dir, &running("0.2.0", true)).unwrap();
        clear_report(&f.dir).unwrap();
        launch_with(&f.dir, |_, _| {
            io::Error::from(io::ErrorKind::PermissionDenied)
        });
        assert_eq!(fs::read(bin(&f).join(BINARY)).unwrap(), NEW_BINARY);
        assert!(bin(&f).join(STABLE).exists());
        assert!(pending_report(&f.dir).is_none());
    }

    #[test]
    fn without_a_backup_a_failed_version_gives_way_to_the_installed_binary() {
        let f = fixture();
        staged(&f);
        decide_launch(&f.dir).unwrap();
        fs::remove_file(bin(&f).join(BACKUP)).unwrap();
        assert_eq!(decide_launch(&f.dir).unwrap(), Launch::Here);
        assert!(!bin(&f).join(BINARY).exists());
        let report = pending_report(&f.dir).unwrap();
        assert_eq!(report.to_version, crate::VERSION);
        assert_eq!(decide_launch(&f.dir).unwrap(), Launch::Here);
    }

    #[test]
    fn a_binary_others_could_replace_is_not_started() {
        let f = fixture();
        staged(&f);
        fs::set_permissions(bin(&f).join(BINARY), fs::Permissions::from_mode(0o775)).unwrap();
        assert!(matches!(
            decide_launch(&f.dir),
            Err(UpdateError::State(StateError::Permissions { .. }))
        ));
        assert_eq!(read(&f, TRIAL).trim(), "0", "not counted as a start");
    }

    #[test]
    fn a_trial_is_due_after_its_time_and_only_for_a_launched_unstable_binary() {
        let f = fixture();
        let now = Instant::now();
        let after = Duration::from_secs(5);
        assert!(Trial::begin(&f.dir, &running("0.2.0", true), after, now).is_none());
        staged(&f);
        assert!(Trial::begin(&f.dir, &running("0.1.0", false), after, now).is_none());
        let trial = Trial::begin(&f.dir, &running("0.2.0", true), after, now).unwrap();
        assert!(!trial.due(now + Duration::from_secs(4)));
        assert!(trial.due(now + after));
        mark_stable(&f.dir, &running("0.2.0", true)).unwrap();
        assert!(Trial::begin(&f.dir, &running("0.2.0", true), after, now).is_none());
    }

    #[test]
    fn an_unreadable_report_is_dropped() {
        let f = fixture();
        f.dir.write(state::UPDATE_REPORT, b"{not json").unwrap();
        assert!(pending_report(&f.dir).is_none());
        assert!(!f.dir.file(state::UPDATE_REPORT).exists());
    }
}
