//! Runs one approved task as a child process with bounded resources, and streams
//! its redacted output.
//!
//! For each task, [`Sandbox::run`]:
//! - creates a fresh working directory (mode 0700, owned by the task's user) under
//!   the sandbox's work root and removes it afterwards, whatever happened (exit,
//!   timeout, cancellation, or the `run` future being dropped);
//! - clears the environment and passes only `PATH` ([`SAFE_PATH`]), `LANG=C.UTF-8`,
//!   `HOME` (the working directory) and the spec's variables, whose names must
//!   match `[A-Z_][A-Z0-9_]*` and may not be `PATH`, `HOME`, a dynamic loader
//!   variable (`LD_*`) or another variable glibc ignores for set-uid programs
//!   ([`LOADER_ENV`]): `prlimit` and `setpriv` run with this environment as the
//!   agent's user (root) before the task's user takes over;
//! - applies limits with `prlimit --cpu --as --fsize --nproc` and, when the spec
//!   names another user and the agent is root, switches to it with `setpriv
//!   --reuid --regid --init-groups --no-new-privs` (`--clear-groups` for a numeric
//!   uid with no account). Not being root, the agent runs tasks only as itself;
//! - puts the task in its own process group; a timeout or a cancellation kills the
//!   whole group, and so does the task's main process exiting (whatever it left
//!   running in its group is killed then);
//! - reads stdout and stderr concurrently, each through its own [`Redactor`], and
//!   passes the redacted chunks to the caller's sink, capped at
//!   [`Limits::output_cap_bytes`] (then one [`TRUNCATED_MARKER`]); past the cap the
//!   output is read and discarded, so the task never blocks on a full pipe.
//!
//! What it does not defend against (it has no namespaces, cgroups or seccomp):
//! - `RLIMIT_NPROC` counts every process of the task's real uid on the host, and
//!   root ignores it. It bounds a fork bomb only when the task runs as a user of
//!   its own (a dedicated uid per task is best). For a task running as root, the
//!   only bound on processes is time: the timeout (and the main process exiting)
//!   kills the group, which the kernel applies atomically with respect to forks,
//!   so a fork bomb is stopped but may exhaust the host's pids meanwhile;
//! - a process that leaves the group (`setsid`, daemonizing) escapes the group
//!   kill; the agent stops reading its output [`DRAIN_GRACE`] after the task
//!   ends. If the agent dies without unwinding (SIGKILL, abort), its tasks keep
//!   running. Under systemd, stopping the unit kills both (its cgroup);
//! - `RLIMIT_AS` bounds address space per process, not the task's total memory;
//!   `RLIMIT_CPU` is per process too, the timeout bounds the task's wall time;
//! - a task running as root (no `run_as` on a root agent), or as a user with sudo
//!   rights, can undo all of this. Arguments are visible to every local user in
//!   `/proc/PID/cmdline`: pass secrets through the environment (readable only by
//!   the task's user);
//! - the umask is the agent's; the task's files are the task's business.

use crate::redact::Redactor;
use std::fmt;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::watch;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// The only `PATH` a task sees.
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// util-linux `prlimit`, which applies the limits.
pub const PRLIMIT: &str = "/usr/bin/prlimit";
/// util-linux `setpriv`, which switches to the task's user.
pub const SETPRIV: &str = "/usr/bin/setpriv";
/// Account database read to resolve `run_as`.
const PASSWD: &str = "/etc/passwd";
/// Emitted once when the output cap is reached.
pub const TRUNCATED_MARKER: &[u8] = b"\n[output truncated]\n";
/// How long output is still read after the task's main process is gone (a
/// process that left the group can hold the pipes open forever).
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Environment variables refused in a spec besides `LD_*`: glibc's list of
/// variables it drops for set-uid programs (`unsecvars.h`), minus `TMPDIR`.
pub const LOADER_ENV: &[&str] = &[
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_TRACE",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TZDIR",
];
/// Variables the sandbox sets itself.
const RESERVED_ENV: &[&str] = &["PATH", "HOME"];
const READ_CHUNK: usize = 16 * 1024;
const MAX_ENV_NAME: usize = 128;
const MAX_USER_NAME: usize = 32;

/// Resource limits of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// CPU seconds per process (`RLIMIT_CPU`; SIGXCPU, then SIGKILL a second later).
    pub cpu_secs: u64,
    /// Address space per process (`RLIMIT_AS`).
    pub address_space_bytes: u64,
    /// Largest file a process may write (`RLIMIT_FSIZE`; SIGXFSZ).
    pub file_size_bytes: u64,
    /// Processes of the task's real uid (`RLIMIT_NPROC`; see the module doc).
    pub processes: u64,
    /// Wall time of the whole task.
    pub timeout: Duration,
    /// Output delivered to the sink, after redaction.
    pub output_cap_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cpu_secs: 60,
            address_space_bytes: 1 << 30,
            file_size_bytes: 256 << 20,
            processes: 64,
            timeout: Duration::from_secs(300),
            output_cap_bytes: 1 << 20,
        }
    }
}

/// What to run. `env` values are already resolved (they may hold vault secrets),
/// so they are zeroized on drop and `Debug` shows neither them nor the arguments.
#[derive(Clone, Default)]
pub struct TaskSpec {
    /// Absolute path of the program.
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, Zeroizing<String>)>,
    /// A user name, or a numeric uid (which need not have an account); `None`
    /// runs the task as the agent's user.
    pub run_as: Option<String>,
    pub limits: Limits,
}

impl fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskSpec")
            .field("program", &self.program)
            .field("args", &self.args.len())
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("run_as", &self.run_as)
            .field("limits", &self.limits)
            .finish()
    }
}

/// A limit whose signal killed the task's main process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceededLimit {
    /// SIGXCPU: `cpu_secs` used up.
    Cpu,
    /// SIGXFSZ: a write past `file_size_bytes`.
    FileSize,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// The main process exited with this code.
    Exited(i32),
    /// The main process was killed by this signal (other than the limit signals).
    Signalled(i32),
    /// The main process was killed by a limit's signal. A shell that reports its
    /// child's death as `128 + signal` shows up as [`TaskStatus::Exited`] instead.
    LimitExceeded(ExceededLimit),
    /// The timeout elapsed; the group was killed.
    TimedOut,
    /// The task was cancelled; the group was killed.
    Cancelled,
}

/// What a finished task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    pub status: TaskStatus,
    /// From the start to the end (or the kill) of the main process.
    pub duration: Duration,
    /// Bytes delivered to the sink, the truncation marker not counted.
    pub output_bytes: u64,
    /// Output beyond the cap was discarded.
    pub truncated: bool,
}

/// Why a task did not run. Messages never carry argument or environment values.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the task is invalid: {0}")]
    InvalidSpec(String),
    #[error("cannot run the task as `{user}`: {reason}")]
    RunAs { user: String, reason: String },
    #[error("cannot prepare the task's working directory {path}: {source}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot wait for the task: {0}")]
    Wait(#[source] io::Error),
}

/// Cancels a running task: see [`cancellation`].
#[derive(Debug, Clone)]
pub struct CancelHandle(watch::Sender<bool>);

impl CancelHandle {
    /// Kills the task's group; `run` then returns [`TaskStatus::Cancelled`]. Has no
    /// effect once the task has ended.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
}

/// The receiving side of a [`CancelHandle`], given to [`Sandbox::run`].
#[derive(Debug, Clone)]
pub struct CancelToken(watch::Receiver<bool>);

impl CancelToken {
    /// A token nobody can cancel.
    pub fn never() -> Self {
        cancellation().1
    }

    /// Resolves when cancelled; never, once every handle is dropped uncancelled.
    async fn cancelled(&mut self) {
        if self.0.wait_for(|&c| c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A linked cancel handle and token.
pub fn cancellation() -> (CancelHandle, CancelToken) {
    let (tx, rx) = watch::channel(false);
    (CancelHandle(tx), CancelToken(rx))
}

/// Runs tasks with working directories under one root.
#[derive(Debug, Clone)]
pub struct Sandbox {
    work_root: PathBuf,
}

impl Sandbox {
    /// A sandbox whose tasks get directories under `work_root` (created 0711 if
    /// missing). Tasks running as another user need to traverse it: it must be
    /// searchable by others, and so must its parents.
    pub fn new(work_root: impl Into<PathBuf>) -> Self {
        Self {
            work_root: work_root.into(),
        }
    }

    pub fn work_root(&self) -> &Path {
        &self.work_root
    }

    /// Runs `spec`, passing its redacted output to `sink`, until it ends, times
    /// out or is cancelled through `cancel`. Dropping the returned future kills the
    /// task's group and removes its working directory.
    pub async fn run<F: FnMut(&[u8])>(
        &self,
        spec: &TaskSpec,
        redactor: &Redactor,
        mut cancel: CancelToken,
        sink: F,
    ) -> Result<TaskOutcome, SandboxError> {
        validate(spec)?;
        let account = match &spec.run_as {
            Some(user) => switch_to(
                user,
                &fs::read_to_string(PASSWD).unwrap_or_default(),
                euid(),
            )?,
            None => None,
        };
        let workdir = WorkDir::create(&self.work_root, account.as_ref())?;
        let mut child = command(spec, &workdir.path, account.as_ref())
            .spawn()
            .map_err(|source| SandboxError::Spawn {
                program: spec.program.clone(),
                source,
            })?;
        let started = Instant::now();
        let mut group = ProcessGroup::of(child.id());
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        // Raw output may hold secrets: the read buffers are wiped when done.
        let mut out_buf = Zeroizing::new(vec![0u8; READ_CHUNK]);
        let mut err_buf = Zeroizing::new(vec![0u8; READ_CHUNK]);
        let mut output = Output::new(redactor, spec.limits.output_cap_bytes, sink);
        let deadline = tokio::time::sleep(spec.limits.timeout);
        tokio::pin!(deadline);
        let mut killed: Option<TaskStatus> = None;
        let mut exit: Option<(ExitStatus, Duration)> = None;
        let mut drain_until: Option<Instant> = None;

        while exit.is_none() || stdout.is_some() || stderr.is_some() {
            tokio::select! {
                read = read_some(&mut stdout, &mut out_buf) => match read {
                    Ok(n) if n > 0 => output.push(0, &out_buf[..n]),
                    _ => {
                        output.finish(0);
                        stdout = None;
                    }
                },
                read = read_some(&mut stderr, &mut err_buf) => match read {
                    Ok(n) if n > 0 => output.push(1, &err_buf[..n]),
                    _ => {
                        output.finish(1);
                        stderr = None;
                    }
                },
                status = child.wait(), if exit.is_none() => {
                    // Whatever the task left running in its group goes with it.
                    group.kill();
                    exit = Some((status.map_err(SandboxError::Wait)?, started.elapsed()));
                    drain_until = Some(Instant::now() + DRAIN_GRACE);
                }
                () = &mut deadline, if killed.is_none() && exit.is_none() => {
                    group.kill();
                    killed = Some(TaskStatus::TimedOut);
                }
                () = cancel.cancelled(), if killed.is_none() && exit.is_none() => {
                    group.kill();
                    killed = Some(TaskStatus::Cancelled);
                }
                () = sleep_until(drain_until), if drain_until.is_some() => {
                    tracing::warn!("a task's output pipes stayed open after it ended (a process left its group); no longer reading them");
                    output.finish(0);
                    output.finish(1);
                    break;
                }
            }
        }
        // The loop ends only once the exit status is known.
        let (status, duration) = exit.ok_or_else(|| {
            SandboxError::Wait(io::Error::other("the task's exit status was not collected"))
        })?;
        workdir.remove();
        Ok(TaskOutcome {
            status: killed.unwrap_or_else(|| classify(status)),
            duration,
            output_bytes: output.emitted as u64,
            truncated: output.truncated,
        })
    }
}

/// Reads from `pipe`, or waits forever once it is closed.
async fn read_some<R: AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn classify(status: ExitStatus) -> TaskStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => TaskStatus::Exited(code),
        (None, Some(sig)) if sig == rustix::process::Signal::XCPU.as_raw() => {
            TaskStatus::LimitExceeded(ExceededLimit::Cpu)
        }
        (None, Some(sig)) if sig == rustix::process::Signal::XFSZ.as_raw() => {
            TaskStatus::LimitExceeded(ExceededLimit::FileSize)
        }
        (None, Some(sig)) => TaskStatus::Signalled(sig),
        // Neither an exit nor a signal is not a status `wait` returns.
        (None, None) => TaskStatus::Exited(-1),
    }
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Builds `prlimit ... -- [setpriv ... --] program args`.
fn command(spec: &TaskSpec, workdir: &Path, account: Option<&Account>) -> tokio::process::Command {
    let l = &spec.limits;
    let mut cmd = tokio::process::Command::new(PRLIMIT);
    cmd.arg(format!(
        "--cpu={}:{}",
        l.cpu_secs,
        l.cpu_secs.saturating_add(1)
    ))
    .arg(format!("--as={}", l.address_space_bytes))
    .arg(format!("--fsize={}", l.file_size_bytes))
    .arg(format!("--nproc={}", l.processes))
    .arg("--");
    if let Some(a) = account {
        let groups = if a.named {
            "--init-groups"
        } else {
            "--clear-groups"
        };
        cmd.arg(SETPRIV)
            .arg(format!("--reuid={}", a.uid))
            .arg(format!("--regid={}", a.gid))
            .args([groups, "--no-new-privs", "--"]);
    }
    cmd.arg(&spec.program)
        .args(&spec.args)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("LANG", "C.UTF-8")
        .env("HOME", workdir);
    for (name, value) in &spec.env {
        cmd.env(name, value.as_str());
    }
    cmd.current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// Checks everything in `spec` that does not need the system.
fn validate(spec: &TaskSpec) -> Result<(), SandboxError> {
    let invalid = |s: String| Err(SandboxError::InvalidSpec(s));
    let program = &spec.program;
    if !program.is_absolute() {
        return invalid(format!(
            "the program {} is not an absolute path",
            program.display()
        ));
    }
    if program.as_os_str().as_encoded_bytes().contains(&0)
        || spec.args.iter().any(|a| a.contains('\0'))
    {
        return invalid("the program or an argument contains a NUL byte".into());
    }
    if !fs::metadata(program).is_ok_and(|m| m.is_file()) {
        return invalid(format!(
            "the program {} is not an existing file",
            program.display()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in &spec.env {
        if !valid_env_name(name) {
            return invalid(format!(
                "`{}` is not a valid environment variable name ([A-Z_][A-Z0-9_]*)",
                name.escape_debug()
            ));
        }
        if RESERVED_ENV.contains(&name.as_str()) {
            return invalid(format!(
                "{name} is set by the sandbox and cannot be overridden"
            ));
        }
        if name.starts_with("LD_") || LOADER_ENV.contains(&name.as_str()) {
            return invalid(format!(
                "{name} is read by the dynamic loader or libc at start-up and is not allowed"
            ));
        }
        if !seen.insert(name.as_str()) {
            return invalid(format!("{name} is given twice"));
        }
        if value.contains('\0') {
            return invalid(format!("the value of {name} contains a NUL byte"));
        }
    }
    let l = &spec.limits;
    if l.cpu_secs == 0 || l.processes == 0 || l.timeout.is_zero() {
        return invalid("cpu_secs, processes and timeout must be greater than zero".into());
    }
    if l.address_space_bytes < 1 << 20 {
        return invalid("address_space_bytes must be at least 1 MiB".into());
    }
    Ok(())
}

fn valid_env_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_ENV_NAME
        && (b[0].is_ascii_uppercase() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
}

/// The user a task runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    uid: u32,
    gid: u32,
    /// Has an entry in the account database (so supplementary groups exist).
    named: bool,
}

/// Resolves `user` against `passwd` (the text of `/etc/passwd`) and decides whether
/// an agent running as `euid` switches to it (`Some`), needs no switch (`None`) or
/// cannot (an error). A numeric `user` is a uid, with or without an account.
fn switch_to(user: &str, passwd: &str, euid: u32) -> Result<Option<Account>, SandboxError> {
    let refuse = |reason: String| SandboxError::RunAs {
        user: user.escape_debug().to_string(),
        reason,
    };
    let b = user.as_bytes();
    let well_formed = !b.is_empty()
        && b.len() <= MAX_USER_NAME
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().enumerate().all(|(i, &c)| {
            c.is_ascii_alphanumeric()
                || matches!(c, b'_' | b'.' | b'-')
                || (c == b'$' && i == b.len() - 1)
        });
    if !well_formed {
        return Err(refuse("not a valid user name".into()));
    }
    let numeric = user.parse::<u32>().ok();
    let entry = passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let (name, _, uid, gid) = (f.next()?, f.next()?, f.next()?, f.next()?);
        let uid: u32 = uid.parse().ok()?;
        (name == user || numeric == Some(uid)).then_some((uid, gid.parse::<u32>().ok()?))
    });
    let account = match (entry, numeric) {
        (Some((uid, gid)), _) => Account {
            uid,
            gid,
            named: true,
        },
        (None, Some(uid)) if uid != u32::MAX => Account {
            uid,
            gid: uid,
            named: false,
        },
        _ => return Err(refuse(format!("no such user in {PASSWD}"))),
    };
    if account.uid == euid {
        Ok(None)
    } else if euid == 0 {
        Ok(Some(account))
    } else {
        Err(refuse(format!(
            "the agent runs as uid {euid}, not root, so it runs tasks only as itself"
        )))
    }
}

/// The task's working directory, removed on drop if [`WorkDir::remove`] was not reached.
struct WorkDir {
    path: PathBuf,
    removed: bool,
}

impl WorkDir {
    fn create(root: &Path, owner: Option<&Account>) -> Result<Self, SandboxError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SandboxError::WorkDir { path, source }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .map_err(err(root))?;
        if owner.is_some() {
            let mode = fs::metadata(root).map_err(err(root))?.mode();
            if mode & 0o001 == 0 {
                return Err(err(root)(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "mode {:04o} does not let the task's user reach its directory (needs o+x, e.g. 0711)",
                        mode & 0o7777
                    ),
                )));
            }
        }
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let path = loop {
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            let path = root.join(format!("task-{}-{seq}", std::process::id()));
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => break path,
                // Left behind by an earlier agent process with the same pid.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(err(&path)(e)),
            }
        };
        let dir = Self {
            path,
            removed: false,
        };
        // The umask may have taken bits away, never added any; this makes it exact.
        fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o700))
            .map_err(err(&dir.path))?;
        if let Some(a) = owner {
            std::os::unix::fs::chown(&dir.path, Some(a.uid), Some(a.gid))
                .map_err(err(&dir.path))?;
        }
        Ok(dir)
    }

    fn remove(mut self) {
        self.remove_now();
    }

    fn remove_now(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        if fs::remove_dir_all(&self.path).is_ok() {
            return;
        }
        // Not root, the agent may lack rights on directories the task made
        // unreadable. Those belong to the agent's own uid, so it can restore them.
        if euid() != 0 {
            unlock_dirs(&self.path);
        }
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a task's working directory");
            }
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        self.remove_now();
    }
}

/// Gives the owner full access to every directory under `dir` (links not followed).
fn unlock_dirs(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            unlock_dirs(&entry.path());
        }
    }
}

/// The task's process group, killed once: when the task ends, times out or is
/// cancelled, or when this guard is dropped before that.
struct ProcessGroup(Option<rustix::process::Pid>);

impl ProcessGroup {
    /// The group led by the just-spawned child `pid` (`process_group(0)`).
    fn of(pid: Option<u32>) -> Self {
        Self(
            pid.and_then(|p| i32::try_from(p).ok())
                .and_then(rustix::process::Pid::from_raw),
        )
    }

    /// SIGKILLs every process in the group. Called at most once with effect: the
    /// pgid is the task's pid, which the kernel does not hand out again while the
    /// group has members, and only after the pid space wraps once it is empty.
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The redacted, capped output of a task: one redactor per stream.
struct Output<F> {
    redactors: [Redactor; 2],
    cap: usize,
    emitted: usize,
    truncated: bool,
    sink: F,
}

impl<F: FnMut(&[u8])> Output<F> {
    fn new(redactor: &Redactor, cap: usize, sink: F) -> Self {
        Self {
            redactors: [redactor.fresh(), redactor.fresh()],
            cap,
            emitted: 0,
            truncated: false,
            sink,
        }
    }

    fn push(&mut self, stream: usize, data: &[u8]) {
        if !self.truncated {
            let clean = self.redactors[stream].push(data);
            self.emit(&clean);
        }
    }

    fn finish(&mut self, stream: usize) {
        if !self.truncated {
            let clean = self.redactors[stream].finish();
            self.emit(&clean);
        }
    }

    fn emit(&mut self, clean: &[u8]) {
        if clean.is_empty() {
            return;
        }
        let take = clean.len().min(self.cap - self.emitted);
        if take > 0 {
            (self.sink)(&clean[..take]);
            self.emitted += take;
        }
        if take < clean.len() {
            (self.sink)(TRUNCATED_MARKER);
            self.truncated = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A sandbox whose work root is reachable by other users (as in production).
    struct Fixture {
        _dir: tempfile::TempDir,
        sandbox: Sandbox,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
        let sandbox = Sandbox::new(dir.path().join("tasks"));
        Fixture { _dir: dir, sandbox }
    }

    fn sh(script: &str) -> TaskSpec {
        TaskSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            ..TaskSpec::default()
        }
    }

    fn with_limits(mut spec: TaskSpec, f: impl FnOnce(&mut Limits)) -> TaskSpec {
        f(&mut spec.limits);
        spec
    }

    fn no_secrets() -> Redactor {
        Redactor::new(Vec::<&str>::new())
    }

    async fn run(sandbox: &Sandbox, spec: &TaskSpec) -> (TaskOutcome, String) {
        run_redacted(sandbox, spec, &no_secrets()).await
    }

    /// Awaits `f`, failing the test instead of hanging if it takes minutes.
    async fn bounded<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(180), f)
            .await
            .expect("the test hung")
    }

    async fn run_redacted(
        sandbox: &Sandbox,
        spec: &TaskSpec,
        redactor: &Redactor,
    ) -> (TaskOutcome, String) {
        let mut out = Vec::new();
        let outcome = bounded(sandbox.run(spec, redactor, CancelToken::never(), |c| {
            out.extend_from_slice(c)
        }))
        .await
        .unwrap();
        (outcome, String::from_utf8_lossy(&out).into_owned())
    }

    fn is_root() -> bool {
        euid() == 0
    }

    /// `(pid, state, pgrp, real uid)` of every process, from `/proc`.
    fn processes() -> Vec<(i32, char, i32, u32)> {
        let mut all = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let (Ok(stat), Ok(status)) = (
                fs::read_to_string(entry.path().join("stat")),
                fs::read_to_string(entry.path().join("status")),
            ) else {
                continue; // exited meanwhile
            };
            // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
            let state = fields[0].chars().next().unwrap();
            let pgrp = fields[2].parse().unwrap();
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next())
                .unwrap()
                .parse()
                .unwrap();
            all.push((pid, state, pgrp, uid));
        }
        all
    }

    /// Waits (at most 10 s) until no live process matches; returns those that remain.
    /// Zombies are dead: this container's init does not reap orphans.
    async fn survivors(matches: impl Fn(i32, u32) -> bool) -> Vec<i32> {
        let mut left = Vec::new();
        for _ in 0..200 {
            left = processes()
                .into_iter()
                .filter(|&(_, state, pgrp, uid)| state != 'Z' && matches(pgrp, uid))
                .map(|(pid, ..)| pid)
                .collect();
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        left
    }

    fn first_number(out: &str) -> i32 {
        out.split_whitespace().next().unwrap().parse().unwrap()
    }

    fn work_root_is_empty(f: &Fixture) -> bool {
        fs::read_dir(f.sandbox.work_root())
            .unwrap()
            .next()
            .is_none()
    }

    #[tokio::test]
    async fn a_task_runs_with_its_exit_code_and_merged_output() {
        let f = fixture();
        let (outcome, out) = run(&f.sandbox, &sh("echo hello; echo oops >&2; exit 7")).await;
        assert_eq!(outcome.status, TaskStatus::Exited(7));
        assert!(out.contains("hello\n") && out.contains("oops\n"), "{out:?}");
        assert_eq!(outcome.output_bytes, 11);
        assert!(!outcome.truncated);
        let (outcome, _) = run(&f.sandbox, &sh("kill -TERM $$")).await;
        assert_eq!(outcome.status, TaskStatus::Signalled(15));
        assert!(work_root_is_empty(&f));
    }

    #[tokio::test]
    async fn the_environment_is_only_the_allowlist() {
        let f = fixture();
        assert!(std::env::vars().any(|(k, _)| k != "PATH" && k != "HOME" && k != "LANG"));
        let spec = TaskSpec {
            program: "/usr/bin/env".into(),
            env: vec![
                ("FOO".into(), Zeroizing::new("bar baz".into())),
                ("_X1".into(), Zeroizing::new(String::new())),
            ],
            ..TaskSpec::default()
        };
        let (outcome, out) = run(&f.sandbox, &spec).await;
        assert_eq!(outcome.status, TaskStatus::Exited(0));
        let lines: BTreeSet<&str> = out.lines().collect();
        let home = lines.iter().find_map(|l| l.strip_prefix("HOME=")).unwrap();
        assert!(Path::new(home).starts_with(f.sandbox.work_root()), "{home}");
        let want: BTreeSet<String> = [
            format!("PATH={SAFE_PATH}"),
            "LANG=C.UTF-8".into(),
            format!("HOME={home}"),
            "FOO=bar baz".into(),
            "_X1=".into(),
        ]
        .into();
        assert_eq!(lines, want.iter().map(String::as_str).collect());
    }

    #[tokio::test]
    async fn the_working_directory_exists_during_the_run_and_is_gone_after() {
        let f = fixture();
        let script = "pwd; stat -c %a .; [ \"$HOME\" = \"$(pwd)\" ] && echo home-is-cwd; \
                      echo data > f && mkdir -p d/e && touch d/e/g && chmod 000 d && echo wrote";
        let (outcome, out) = run(&f.sandbox, &sh(script)).await;
        assert_eq!(outcome.status, TaskStatus::Exited(0), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[1..], ["700", "home-is-cwd", "wrote"], "{out}");
        let dir = Path::new(lines[0]);
        assert_eq!(dir.parent(), Some(f.sandbox.work_root()));
        assert!(!dir.exists(), "{} still exists", dir.display());
        assert!(work_root_is_empty(&f));
        // Each task gets its own directory.
        let (_, a) = run(&f.sandbox, &sh("pwd")).await;
        let (_, b) = run(&f.sandbox, &sh("pwd")).await;
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn the_task_leads_its_own_process_group() {
        let f = fixture();
        let (_, out) = run(&f.sandbox, &sh("echo $$; cut -d' ' -f5 /proc/$$/stat")).await;
        let ids: Vec<i32> = out.split_whitespace().map(|s| s.parse().unwrap()).collect();
        assert_eq!(ids[0], ids[1], "{out}");
        let ours = rustix::process::getpgid(None)
            .unwrap()
            .as_raw_nonzero()
            .get();
        assert_ne!(ids[1], ours);
    }

    #[tokio::test]
    async fn output_is_capped_and_the_rest_drained() {
        let f = fixture();
        let spec = with_limits(
            sh("head -c 5000000 /dev/zero | tr '\\0' x; echo done"),
            |l| {
                l.output_cap_bytes = 1000;
            },
        );
        let (outcome, out) = run(&f.sandbox, &spec).await;
        // The writer was never blocked: it ran to the end and exited 0.
        assert_eq!(outcome.status, TaskStatus::Exited(0));
        assert!(outcome.truncated);
        assert_eq!(outcome.output_bytes, 1000);
        let marker = std::str::from_utf8(TRUNCATED_MARKER).unwrap();
        assert_eq!(out, format!("{}{marker}", "x".repeat(1000)));
    }

    #[tokio::test]
    async fn stdout_and_stderr_are_read_concurrently() {
        let f = fixture();
        let script = "head -c 300000 /dev/zero >&2; head -c 300000 /dev/zero; \
                      i=0; while [ $i -lt 500 ]; do echo out $i; echo err $i >&2; i=$((i+1)); done";
        let mut out = Vec::new();
        let outcome =
            bounded(
                f.sandbox
                    .run(&sh(script), &no_secrets(), CancelToken::never(), |c| {
                        out.extend_from_slice(c);
                    }),
            )
            .await
            .unwrap();
        assert_eq!(outcome.status, TaskStatus::Exited(0));
        assert!(!outcome.truncated);
        assert_eq!(out.iter().filter(|&&b| b == 0).count(), 600_000);
        let text = String::from_utf8_lossy(&out).replace('\0', "");
        let lines: BTreeSet<&str> = text.lines().collect();
        for i in 0..500 {
            assert!(
                lines.contains(format!("out {i}").as_str())
                    && lines.contains(format!("err {i}").as_str())
            );
        }
    }

    #[tokio::test]
    async fn output_is_redacted_before_it_leaves() {
        let f = fixture();
        let secret = "tok_9f86d081884c7d659a2f";
        let spec = TaskSpec {
            env: vec![("API_TOKEN".into(), Zeroizing::new(secret.into()))],
            ..sh(
                "echo \"using $API_TOKEN\"; printf '%s' \"$API_TOKEN\" >&2; \
                  echo 'Authorization: Bearer abc.def.ghi'",
            )
        };
        let (outcome, out) = run_redacted(&f.sandbox, &spec, &Redactor::new([secret])).await;
        assert_eq!(outcome.status, TaskStatus::Exited(0));
        assert!(!out.contains(secret) && !out.contains("abc.def"), "{out}");
        assert!(out.contains("using [REDACTED]\n"), "{out}");
        assert!(out.contains("Authorization: Bearer [REDACTED]\n"), "{out}");
        assert_eq!(out.matches("[REDACTED]").count(), 3, "{out}");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group_including_grandchildren() {
        let f = fixture();
        // The shell prints its pid (the group's id) and the background sleep's,
        // then becomes the other sleep; the timeout only has to outlast two echoes.
        let spec = with_limits(sh("echo $$; sleep 1000 & echo $!; exec sleep 1000"), |l| {
            l.timeout = Duration::from_secs(2);
        });
        let (outcome, out) = run(&f.sandbox, &spec).await;
        assert_eq!(outcome.status, TaskStatus::TimedOut);
        let ids: Vec<i32> = out.split_whitespace().map(|s| s.parse().unwrap()).collect();
        let (pgid, grandchild) = (ids[0], ids[1]);
        assert_ne!(grandchild, pgid);
        assert_eq!(survivors(|pgrp, _| pgrp == pgid).await, Vec::<i32>::new());
        assert!(work_root_is_empty(&f));
    }

    #[tokio::test]
    async fn leftovers_are_killed_when_the_main_process_exits() {
        let f = fixture();
        let (outcome, out) = run(&f.sandbox, &sh("echo $$; sleep 1000 & exit 3")).await;
        assert_eq!(outcome.status, TaskStatus::Exited(3));
        let pgid = first_number(&out);
        assert_eq!(survivors(|pgrp, _| pgrp == pgid).await, Vec::<i32>::new());
    }

    #[tokio::test]
    async fn cancelling_kills_a_running_task() {
        let f = fixture();
        let spec = with_limits(sh("echo $$; sleep 1000 & exec sleep 1000"), |l| {
            l.timeout = Duration::from_secs(600);
        });
        let (handle, token) = cancellation();
        let (started_tx, mut started) = watch::channel(false);
        let mut out = Vec::new();
        let redactor = no_secrets();
        let (outcome, ()) = bounded(async {
            tokio::join!(
                f.sandbox.run(&spec, &redactor, token, |c| {
                    out.extend_from_slice(c);
                    started_tx.send_replace(true);
                }),
                async {
                    started.wait_for(|&s| s).await.unwrap();
                    handle.cancel();
                }
            )
        })
        .await;
        let outcome = outcome.unwrap();
        assert_eq!(outcome.status, TaskStatus::Cancelled);
        let pgid = first_number(&String::from_utf8_lossy(&out));
        assert_eq!(survivors(|pgrp, _| pgrp == pgid).await, Vec::<i32>::new());
        assert!(work_root_is_empty(&f));
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_group_and_removes_the_directory() {
        let f = fixture();
        let spec = with_limits(sh("echo $$; pwd; sleep 1000 & exec sleep 1000"), |l| {
            l.timeout = Duration::from_secs(600);
        });
        let (lines_tx, mut lines) = watch::channel(String::new());
        let redactor = no_secrets();
        let run = f.sandbox.run(&spec, &redactor, CancelToken::never(), |c| {
            lines_tx.send_modify(|s| s.push_str(&String::from_utf8_lossy(c)));
        });
        let out = bounded(async {
            tokio::select! {
                r = run => panic!("the task ended: {r:?}"),
                out = lines.wait_for(|s| s.lines().count() >= 2) => out.unwrap().clone(),
            }
        })
        .await;
        let pgid = first_number(&out);
        let dir = out.lines().nth(1).unwrap();
        assert!(!Path::new(dir).exists(), "{dir}");
        assert_eq!(survivors(|pgrp, _| pgrp == pgid).await, Vec::<i32>::new());
    }

    #[tokio::test]
    async fn a_huge_write_is_stopped_by_the_file_size_limit() {
        let f = fixture();
        let script = "head -c 10G /dev/zero > f; echo \"status=$?\"; wc -c < f; \
                      exec head -c 10G /dev/zero > g";
        let spec = with_limits(sh(script), |l| {
            l.file_size_bytes = 1 << 20;
            l.timeout = Duration::from_secs(120);
        });
        let (outcome, out) = run(&f.sandbox, &spec).await;
        // SIGXFSZ killed `head` (128 + 25 in the shell; dash says so on stderr,
        // which may land anywhere), and the file stopped at the limit.
        assert!(out.contains("status=153\n"), "{out}");
        assert!(out.lines().any(|l| l == "1048576"), "{out}");
        assert_eq!(
            outcome.status,
            TaskStatus::LimitExceeded(ExceededLimit::FileSize)
        );
    }

    #[tokio::test]
    async fn a_busy_loop_is_stopped_by_the_cpu_limit() {
        let f = fixture();
        let spec = with_limits(sh("while :; do :; done"), |l| {
            l.cpu_secs = 1;
            l.timeout = Duration::from_secs(120);
        });
        let (outcome, _) = run(&f.sandbox, &spec).await;
        assert_eq!(
            outcome.status,
            TaskStatus::LimitExceeded(ExceededLimit::Cpu)
        );
    }

    #[tokio::test]
    async fn the_limits_are_applied_to_the_task() {
        let f = fixture();
        let spec = with_limits(sh("cat /proc/self/limits"), |l| {
            l.cpu_secs = 7;
            l.address_space_bytes = 512 << 20;
            l.file_size_bytes = 12345;
            l.processes = 33;
        });
        let (outcome, out) = run(&f.sandbox, &spec).await;
        assert_eq!(outcome.status, TaskStatus::Exited(0));
        let limit = |name: &str| -> Vec<String> {
            let line = out.lines().find(|l| l.starts_with(name)).unwrap();
            line[name.len()..]
                .split_whitespace()
                .take(2)
                .map(String::from)
                .collect()
        };
        assert_eq!(limit("Max cpu time"), ["7", "8"]);
        assert_eq!(limit("Max address space"), ["536870912", "536870912"]);
        assert_eq!(limit("Max file size"), ["12345", "12345"]);
        assert_eq!(limit("Max processes"), ["33", "33"]);
    }

    #[tokio::test]
    async fn a_fork_bomb_is_contained_and_the_agent_stays_healthy() {
        if !is_root() {
            eprintln!("skipped: a fork bomb is only safe under a dedicated uid, which needs root");
            return;
        }
        let f = fixture();
        // A uid of its own, so RLIMIT_NPROC counts only the bomb (and zombies
        // left by earlier runs, which this container's init never reaps, count
        // against another uid).
        let uid = 3_000_000_000 + std::process::id();
        let spec = TaskSpec {
            run_as: Some(uid.to_string()),
            ..with_limits(sh("bomb() { bomb | bomb & }; bomb; exec sleep 1000"), |l| {
                l.processes = 16;
                l.timeout = Duration::from_secs(3);
                l.output_cap_bytes = 64 << 10;
            })
        };
        let (outcome, _) = run(&f.sandbox, &spec).await;
        assert_eq!(outcome.status, TaskStatus::TimedOut);
        assert_eq!(survivors(|_, u| u == uid).await, Vec::<i32>::new());
        let (outcome, out) = run(&f.sandbox, &sh("echo alive")).await;
        assert_eq!(
            (outcome.status, out.as_str()),
            (TaskStatus::Exited(0), "alive\n")
        );
        assert!(work_root_is_empty(&f));
    }

    #[tokio::test]
    async fn run_as_switches_user_without_new_privileges() {
        if !is_root() {
            eprintln!("skipped: switching users needs root");
            return;
        }
        let f = fixture();
        let spec = TaskSpec {
            run_as: Some("nobody".into()),
            ..sh("id -u; id -g; stat -c %u .; grep NoNewPrivs /proc/self/status; echo x > f && echo wrote")
        };
        let (outcome, out) = run(&f.sandbox, &spec).await;
        assert_eq!(outcome.status, TaskStatus::Exited(0), "{out}");
        assert_eq!(out, "65534\n65534\n65534\nNoNewPrivs:\t1\nwrote\n");
        // A uid without an account: no supplementary groups.
        let spec = TaskSpec {
            run_as: Some("3999999999".into()),
            ..sh("id -u; id -G")
        };
        let (_, out) = run(&f.sandbox, &spec).await;
        assert_eq!(out, "3999999999\n3999999999\n");
        assert!(work_root_is_empty(&f));
    }

    #[tokio::test]
    async fn a_work_root_others_cannot_reach_is_refused_for_another_user() {
        if !is_root() {
            eprintln!("skipped: switching users needs root");
            return;
        }
        let f = fixture();
        fs::create_dir(f.sandbox.work_root()).unwrap();
        fs::set_permissions(f.sandbox.work_root(), fs::Permissions::from_mode(0o700)).unwrap();
        let spec = TaskSpec {
            run_as: Some("nobody".into()),
            ..sh("true")
        };
        let e = f
            .sandbox
            .run(&spec, &no_secrets(), CancelToken::never(), |_| {})
            .await
            .unwrap_err();
        assert!(e.to_string().contains("o+x"), "{e}");
    }

    #[test]
    fn run_as_is_decided_by_the_agents_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      alice:x:1000:1001::/home/alice:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        let alice = Account {
            uid: 1000,
            gid: 1001,
            named: true,
        };
        // As root: switch to anyone but root.
        assert_eq!(switch_to("alice", passwd, 0).unwrap(), Some(alice.clone()));
        assert_eq!(switch_to("1000", passwd, 0).unwrap(), Some(alice));
        assert_eq!(
            switch_to("4000000", passwd, 0).unwrap(),
            Some(Account {
                uid: 4_000_000,
                gid: 4_000_000,
                named: false
            })
        );
        assert_eq!(switch_to("root", passwd, 0).unwrap(), None);
        // Not root: only as itself.
        assert_eq!(switch_to("alice", passwd, 1000).unwrap(), None);
        assert_eq!(switch_to("1000", passwd, 1000).unwrap(), None);
        let e = switch_to("nobody", passwd, 1000).unwrap_err().to_string();
        assert!(e.contains("`nobody`") && e.contains("not root"), "{e}");
        // Unknown or malformed names.
        assert!(switch_to("ghost", passwd, 0)
            .unwrap_err()
            .to_string()
            .contains("no such user"));
        for bad in ["", "-u0", "a b", "x:y", "alice\n", "a$b", &"a".repeat(33)] {
            let e = switch_to(bad, passwd, 0).unwrap_err().to_string();
            assert!(e.contains("not a valid user name"), "{bad:?}: {e}");
        }
    }

    #[tokio::test]
    async fn an_unknown_user_is_refused_before_anything_runs() {
        let f = fixture();
        let spec = TaskSpec {
            run_as: Some("no-such-user-pilothouse".into()),
            ..sh("true")
        };
        let e = f
            .sandbox
            .run(&spec, &no_secrets(), CancelToken::never(), |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, SandboxError::RunAs { .. }), "{e}");
        assert!(!f.sandbox.work_root().exists());
    }

    #[tokio::test]
    async fn invalid_specs_are_refused_without_showing_values() {
        let f = fixture();
        let env = |name: &str| TaskSpec {
            env: vec![(name.into(), Zeroizing::new("hunter2-value".into()))],
            ..sh("true")
        };
        let mut cases = vec![
            TaskSpec {
                program: "sh".into(),
                ..TaskSpec::default()
            },
            TaskSpec {
                program: "/no/such/program".into(),
                ..TaskSpec::default()
            },
            TaskSpec {
                program: "/tmp".into(),
                ..TaskSpec::default()
            },
            TaskSpec {
                args: vec!["a\0b".into()],
                ..sh("true")
            },
            with_limits(sh("true"), |l| l.timeout = Duration::ZERO),
            with_limits(sh("true"), |l| l.processes = 0),
            with_limits(sh("true"), |l| l.address_space_bytes = 4096),
        ];
        for name in [
            "",
            "lower",
            "1ABC",
            "A-B",
            "PATH",
            "HOME",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "GLIBC_TUNABLES",
        ] {
            cases.push(env(name));
        }
        let mut dup = env("DUP");
        dup.env.push(("DUP".into(), Zeroizing::new("other".into())));
        cases.push(dup);
        let mut nul = env("OK");
        nul.env[0].1 = Zeroizing::new("a\0b".into());
        cases.push(nul);
        for spec in &cases {
            let e = f
                .sandbox
                .run(spec, &no_secrets(), CancelToken::never(), |_| {})
                .await
                .unwrap_err();
            assert!(matches!(e, SandboxError::InvalidSpec(_)), "{spec:?}: {e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        assert!(!f.sandbox.work_root().exists());
    }

    #[tokio::test]
    async fn a_program_that_cannot_be_executed_fails_like_exec() {
        let f = fixture();
        let t = tempfile::tempdir().unwrap();
        let script = t.path().join("not-executable");
        fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        let spec = TaskSpec {
            program: script,
            ..TaskSpec::default()
        };
        let (outcome, out) = run(&f.sandbox, &spec).await;
        assert_eq!(outcome.status, TaskStatus::Exited(126), "{out}");
        assert!(out.contains("Permission denied"), "{out}");
    }

    #[test]
    fn debug_shows_neither_environment_values_nor_arguments() {
        let spec = TaskSpec {
            env: vec![("DB_PASSWORD".into(), Zeroizing::new("hunter2-value".into()))],
            ..sh("echo hunter2-arg")
        };
        let shown = format!("{spec:?}");
        assert!(
            shown.contains("DB_PASSWORD") && shown.contains("/bin/sh"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn default_limits_are_the_documented_ones() {
        let l = Limits::default();
        assert_eq!(
            (
                l.cpu_secs,
                l.address_space_bytes,
                l.file_size_bytes,
                l.processes
            ),
            (60, 1 << 30, 256 << 20, 64)
        );
        assert_eq!(
            (l.timeout, l.output_cap_bytes),
            (Duration::from_secs(300), 1 << 20)
        );
    }
}
