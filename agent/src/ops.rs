//! Catalogued operations on this host: the `[operations]` part of
//! `agent.toml` maps each kind to what runs locally, and this module checks a
//! delivered operation against it before anything runs.
//!
//! ```toml
//! production = true                      # refuse everything the AI Pilot proposed
//!
//! [operations]
//! work_dir = "/var/lib/pilothouse-agent/tasks"
//! run_as = "pilothouse-task"             # a non-root user for tasks
//! timeout_secs = 300
//! vault = "/etc/pilothouse/vault.toml"   # vault://local/NAME references resolve here
//! units = ["nginx.service"]              # what service_status / restart_service may name
//! watched_units = ["nginx.service"]      # reported with each metrics sample
//! unit_state = ["systemctl", "is-active", "{unit}"]   # how a unit's state is read (the default)
//! service_status = ["systemctl", "status", "--no-pager", "{unit}"]
//! restart_service = ["systemctl", "restart", "{unit}"]
//! disk_usage = ["df", "-hP"]
//! install_package = { tool = "apt-get", command = ["apt-get", "install", "-y", "{package}"] }
//! read_file = { allow_prefixes = ["/var/log/"] }
//!
//! [operations.backup_profiles.nightly]
//! command = ["/usr/local/bin/backup", "--profile", "nightly"]
//! env = { AWS_SECRET_ACCESS_KEY = "vault://local/aws_secret", DB_PASSWORD = "secret://DB_PASSWORD" }
//! stamp = "/var/lib/backup/nightly.ok"  # touched by the backup on success; watched
//! ```
//!
//! A profile's `env` values may refer to the local vault (`vault://local/NAME`,
//! never leaves this host) and to the control plane's secrets
//! (`secret://NAME`, set in Settings -> Secrets). The agent declares which
//! control-plane secrets each profile uses; the control plane sends their
//! values sealed with the operation, to this agent only, at delivery. Either
//! kind of value is redacted from the task's output.
//!
//! A profile with a `stamp` is watched: each metrics sample reports the
//! stamp file's modification time as the profile's last success, and the AI
//! Pilot proposes the backup when it is 26 hours old (or missing for 26 hours).
//!
//! A kind without an entry is not offered and refused. `{unit}`, `{package}`
//! (`name` or `name=version`) are the only placeholders; their values passed
//! the catalogue's patterns ([`channel::ops`]) and no shell ever sees them.
//!
//! Checks on every operation, in order, each refusing with a sentence the
//! control plane shows (the agent's own rules, whatever the control plane says):
//! 1. the arguments parse under the catalogue's rules;
//! 2. the command carries an approval record (an operation without one is refused);
//! 3. a host with `production = true` refuses anything the AI Pilot proposed;
//! 4. the plan hash recomputed from what would run equals the signed one;
//! 5. the local allowlist: the kind is configured, the unit is listed, the
//!    backup profile exists, the file is under an allowed prefix.

use crate::redact::Redactor;
use crate::sandbox::{CancelToken, Limits, Sandbox, TaskOutcome, TaskSpec, TaskStatus};
use crate::vault::Vault;
use channel::ops::{Capabilities, OpKind, Operation, Origin, MAX_READ_BYTES};
use channel::CommandHeader;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// The `[operations]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    pub work_dir: PathBuf,
    pub run_as: Option<String>,
    pub timeout_secs: u64,
    pub output_cap_bytes: usize,
    pub vault: PathBuf,
    pub units: Vec<String>,
    pub watched_units: Vec<String>,
    /// How a watched unit's state is read: the first word of its output.
    pub unit_state: Vec<String>,
    pub service_status: Option<Vec<String>>,
    pub restart_service: Option<Vec<String>>,
    pub disk_usage: Option<Vec<String>>,
    pub install_package: Option<PackageConfig>,
    pub read_file: Option<ReadFileConfig>,
    pub backup_profiles: BTreeMap<String, ProfileConfig>,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            work_dir: PathBuf::from("/var/lib/pilothouse-agent/tasks"),
            run_as: None,
            timeout_secs: 300,
            output_cap_bytes: 1 << 20,
            vault: PathBuf::from(crate::vault::DEFAULT_VAULT),
            units: Vec::new(),
            watched_units: Vec::new(),
            unit_state: ["systemctl", "is-active", "{unit}"]
                .map(String::from)
                .to_vec(),
            service_status: None,
            restart_service: None,
            disk_usage: None,
            install_package: None,
            read_file: None,
            backup_profiles: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageConfig {
    /// The tool's name as the dashboard shows it (`apt-get`, `dnf`).
    pub tool: String,
    pub command: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFileConfig {
    pub allow_prefixes: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A file the backup touches when it succeeds: its modification time is
    /// the profile's last success, reported with each metrics sample.
    #[serde(default)]
    pub stamp: Option<PathBuf>,
}

impl OpsConfig {
    /// Checks the table once at load: commands are non-empty with an absolute
    /// program or one found on the safe `PATH`, names follow the catalogue.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=86_400).contains(&self.timeout_secs) {
            return Err("operations.timeout_secs must be between 1 and 86400".into());
        }
        if !(1024..=(16 << 20)).contains(&self.output_cap_bytes) {
            return Err("operations.output_cap_bytes must be between 1 KiB and 16 MiB".into());
        }
        for (what, cmd) in [
            ("service_status", &self.service_status),
            ("restart_service", &self.restart_service),
            ("disk_usage", &self.disk_usage),
        ] {
            if let Some(cmd) = cmd {
                check_command(what, cmd)?;
            }
        }
        if let Some(p) = &self.install_package {
            check_command("install_package.command", &p.command)?;
        }
        if !self.watched_units.is_empty() {
            check_command("unit_state", &self.unit_state)?;
        }
        if self.watched_units.len() > channel::api::MAX_SAMPLE_UNITS {
            return Err(format!(
                "operations.watched_units lists more than {} units",
                channel::api::MAX_SAMPLE_UNITS
            ));
        }
        for (name, p) in &self.backup_profiles {
            channel::ops::check_profile(name)
                .map_err(|e| format!("operations.backup_profiles: `{name}`: {}", e.message))?;
            check_command(&format!("backup_profiles.{name}.command"), &p.command)?;
            let secrets = profile_secrets(p)
                .map_err(|e| format!("operations.backup_profiles.{name}.env: {e}"))?;
            if secrets.len() > channel::ops::MAX_PROFILE_SECRETS {
                return Err(format!(
                    "operations.backup_profiles.{name}.env names more than {} secrets",
                    channel::ops::MAX_PROFILE_SECRETS
                ));
            }
            if p.stamp.as_ref().is_some_and(|s| !s.is_absolute()) {
                return Err(format!(
                    "operations.backup_profiles.{name}.stamp must be an absolute path"
                ));
            }
        }
        if self.backup_profiles.len() > channel::api::MAX_SAMPLE_BACKUPS {
            return Err(format!(
                "operations.backup_profiles lists more than {} profiles",
                channel::api::MAX_SAMPLE_BACKUPS
            ));
        }
        for unit in self.units.iter().chain(&self.watched_units) {
            channel::ops::check_unit(unit)
                .map_err(|e| format!("operations.units: `{unit}`: {}", e.message))?;
        }
        if let Some(r) = &self.read_file {
            if r.allow_prefixes.iter().any(|p| !p.is_absolute()) {
                return Err("operations.read_file.allow_prefixes must be absolute paths".into());
            }
        }
        Ok(())
    }

    /// What this agent declares to the control plane.
    pub fn capabilities(&self, production: bool) -> Capabilities {
        let mut kinds = Vec::new();
        if self.service_status.is_some() {
            kinds.push(OpKind::ServiceStatus);
        }
        if self.disk_usage.is_some() {
            kinds.push(OpKind::DiskUsage);
        }
        if self.restart_service.is_some() {
            kinds.push(OpKind::RestartService);
        }
        if !self.backup_profiles.is_empty() {
            kinds.push(OpKind::RunBackup);
        }
        if self.install_package.is_some() {
            kinds.push(OpKind::InstallPackage);
        }
        if self.read_file.is_some() {
            kinds.push(OpKind::ReadFile);
        }
        if !kinds.is_empty() {
            kinds.push(OpKind::RunPlan);
        }
        Capabilities {
            kinds,
            units: self.units.clone(),
            watched_units: self.watched_units.clone(),
            backup_profiles: self.backup_profiles.keys().cloned().collect(),
            package_tool: self.install_package.as_ref().map(|p| p.tool.clone()),
            file_access: self.read_file.is_some(),
            production,
            profile_secrets: self
                .backup_profiles
                .iter()
                .filter_map(|(name, p)| {
                    let names = profile_secrets(p).ok()?;
                    (!names.is_empty()).then(|| (name.clone(), names))
                })
                .collect(),
        }
    }

    /// Whether a kind is configured here.
    pub fn offers(&self, kind: OpKind) -> bool {
        self.capabilities(false).kinds.contains(&kind)
    }
}

/// The control-plane secrets a profile's environment refers to, sorted, each once.
fn profile_secrets(p: &ProfileConfig) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for (var, value) in &p.env {
        names.extend(crate::vault::secret_names(value).map_err(|e| format!("{var}: {e}"))?);
    }
    names.sort();
    names.dedup();
    Ok(names)
}

fn check_command(what: &str, cmd: &[String]) -> Result<(), String> {
    match cmd.first() {
        None => Err(format!("operations.{what} must name a program")),
        Some(p) if p.is_empty() || p.contains('{') => Err(format!(
            "operations.{what}: the program must be a fixed name or path"
        )),
        Some(_) => Ok(()),
    }
}

/// How long reading one unit's state may take.
const UNIT_STATE_TIMEOUT: Duration = Duration::from_secs(5);

/// The watched units' states, read with the `unit_state` command (an empty
/// environment but the safe `PATH`, five seconds each). A unit whose state
/// cannot be read is `unknown`.
pub async fn unit_states(config: &OpsConfig) -> Vec<channel::api::UnitStatus> {
    let mut out = Vec::with_capacity(config.watched_units.len());
    for unit in &config.watched_units {
        let state = match read_unit_state(&config.unit_state, unit).await {
            Some(s) => s,
            None => "unknown".to_string(),
        };
        out.push(channel::api::UnitStatus {
            unit: unit.clone(),
            state,
        });
    }
    out
}

/// The watched backup profiles' last successes: each stamp file's
/// modification time, `None` when it cannot be read (no success yet).
pub fn backup_states(config: &OpsConfig) -> Vec<channel::api::BackupStatus> {
    config
        .backup_profiles
        .iter()
        .filter_map(|(name, p)| {
            let stamp = p.stamp.as_ref()?;
            let last_success_at = std::fs::metadata(stamp)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_millis()).ok());
            Some(channel::api::BackupStatus {
                profile: name.clone(),
                last_success_at,
            })
        })
        .collect()
}

async fn read_unit_state(cmd: &[String], unit: &str) -> Option<String> {
    let argv: Vec<String> = cmd.iter().map(|a| a.replace("{unit}", unit)).collect();
    let prog = program(argv.first()?)?;
    let child = tokio::process::Command::new(prog)
        .args(&argv[1..])
        .env_clear()
        .env("PATH", crate::sandbox::SAFE_PATH)
        .env("LANG", "C.UTF-8")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(UNIT_STATE_TIMEOUT, child)
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let word = text.split_whitespace().next()?.to_ascii_lowercase();
    (word.len() <= 32 && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')).then_some(word)
}

/// Whether a kind is an operation of the catalogue (not ping or a key round).
pub fn is_operation(kind: &str) -> bool {
    kind.parse::<OpKind>().is_ok()
}

/// The local policy's verdict on one delivered operation: the operation to
/// run, or the sentence explaining the refusal.
pub fn admit(
    agent_id: &str,
    production: bool,
    config: &OpsConfig,
    header: &CommandHeader,
    payload: &[u8],
) -> Result<Admitted, String> {
    let (args, secrets) = channel::ops::split_payload(payload)
        .map_err(|e| format!("the operation's payload was refused: {e}"))?;
    let op = Operation::from_wire(&header.kind, &args)
        .map_err(|e| format!("the operation's arguments were refused: {e}"))?;
    let Some(signed) = &header.operation else {
        return Err("an operation must carry its approval record; this one has none".into());
    };
    if production && signed.approval.origin == Origin::Pilot {
        return Err(
            "this host is production (agent.toml): it refuses operations the AI Pilot proposed"
                .into(),
        );
    }
    if channel::ops::plan_hash(agent_id, &op) != signed.plan_hash {
        return Err("the plan hash does not match what this command would run".into());
    }
    allowed(config, &op)?;
    Ok(Admitted {
        op,
        secrets: secrets
            .into_iter()
            .map(|(name, value)| (name, Zeroizing::new(value)))
            .collect(),
    })
}

/// An operation the local policy admitted, with the control-plane secrets
/// that came sealed with it.
pub struct Admitted {
    pub op: Operation,
    pub secrets: BTreeMap<String, Zeroizing<String>>,
}

/// The local allowlist for one operation (a plan: every step).
fn allowed(config: &OpsConfig, op: &Operation) -> Result<(), String> {
    let off = |k: OpKind| format!("{k} is not configured on this agent");
    match op {
        Operation::RunPlan { steps } => steps.iter().try_for_each(|s| allowed(config, s)),
        Operation::ServiceStatus { unit } | Operation::RestartService { unit } => {
            let configured = if matches!(op, Operation::ServiceStatus { .. }) {
                config.service_status.is_some()
            } else {
                config.restart_service.is_some()
            };
            if !configured {
                return Err(off(op.kind()));
            }
            if !config.units.iter().any(|u| u == unit) {
                return Err(format!(
                    "unit `{unit}` is not in this agent's allowed units"
                ));
            }
            Ok(())
        }
        Operation::DiskUsage {} => config
            .disk_usage
            .as_ref()
            .map(|_| ())
            .ok_or_else(|| off(op.kind())),
        Operation::RunBackup { profile } => config
            .backup_profiles
            .contains_key(profile)
            .then_some(())
            .ok_or_else(|| format!("backup profile `{profile}` is not configured on this agent")),
        Operation::InstallPackage { .. } => config
            .install_package
            .as_ref()
            .map(|_| ())
            .ok_or_else(|| off(op.kind())),
        Operation::ReadFile { path } => {
            let Some(r) = &config.read_file else {
                return Err("file access is off in this agent's config".into());
            };
            let real =
                std::fs::canonicalize(path).map_err(|_| format!("`{path}` cannot be read"))?;
            let inside = r.allow_prefixes.iter().any(|p| {
                std::fs::canonicalize(p)
                    .map(|p| real.starts_with(p))
                    .unwrap_or(false)
            });
            if inside {
                Ok(())
            } else {
                Err(format!(
                    "`{path}` is outside the paths this agent allows (after resolving links)"
                ))
            }
        }
    }
}

/// How an operation ended, with its redacted output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub succeeded: bool,
    pub timed_out: bool,
    pub output: Vec<u8>,
}

/// Runs an admitted operation: each command in the sandbox with the config's
/// limits and user, secrets resolved from the vault and redacted (by exact
/// value, and auth headers by pattern) from everything returned; a plan step
/// by step, stopping at the first failure; `read_file` in process, capped at
/// [`MAX_READ_BYTES`] and redacted. `sink` receives the output as it comes.
pub async fn run(
    config: &OpsConfig,
    op: &Operation,
    delivered: BTreeMap<String, Zeroizing<String>>,
    cancel: CancelToken,
    sink: &mut dyn FnMut(&[u8]),
) -> Ran {
    let vault = match Vault::load(&config.vault) {
        Ok(mut v) => {
            v.deliver(delivered);
            v
        }
        Err(e) => {
            let msg = format!("the local vault cannot be used: {e}\n");
            sink(msg.as_bytes());
            return Ran {
                succeeded: false,
                timed_out: false,
                output: msg.into_bytes(),
            };
        }
    };
    let redactor = vault.redactor();
    let mut output = Vec::new();
    let steps: Vec<&Operation> = match op {
        Operation::RunPlan { steps } => steps.iter().collect(),
        op => vec![op],
    };
    let plan = steps.len() > 1 || matches!(op, Operation::RunPlan { .. });
    let mut ran = Ran {
        succeeded: true,
        timed_out: false,
        output: Vec::new(),
    };
    for (i, step) in steps.iter().enumerate() {
        let mut emit = |bytes: &[u8]| {
            output.extend_from_slice(bytes);
            sink(bytes);
        };
        if plan {
            emit(format!("== step {} of {}: {}\n", i + 1, steps.len(), step.summary()).as_bytes());
        }
        let (ok, timed_out) = match step {
            Operation::ReadFile { path } => read_file(config, path, &redactor, &mut emit),
            _ => run_command(config, &vault, &redactor, step, cancel.clone(), &mut emit).await,
        };
        if !ok {
            ran.succeeded = false;
            ran.timed_out = timed_out;
            if plan && i + 1 < steps.len() {
                emit(b"== the plan stopped at this step\n");
            }
            break;
        }
    }
    ran.output = output;
    ran
}

/// Reads a file the policy admitted. The check is made again on the file
/// actually opened (its path as the kernel resolved it, from
/// `/proc/self/fd`), so a link swapped in after the admission check cannot
/// lead outside the allowed prefixes; and only a regular file is read.
fn read_file(
    config: &OpsConfig,
    path: &str,
    redactor: &Redactor,
    emit: &mut dyn FnMut(&[u8]),
) -> (bool, bool) {
    use std::io::Read as _;
    use std::os::fd::AsRawFd as _;
    let refuse = |emit: &mut dyn FnMut(&[u8])| {
        emit(format!("cannot read `{path}`\n").as_bytes());
        (false, false)
    };
    let Ok(file) = std::fs::File::open(path) else {
        return refuse(emit);
    };
    let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let inside = match (&opened, &config.read_file) {
        (Ok(real), Some(r)) => r.allow_prefixes.iter().any(|p| {
            std::fs::canonicalize(p)
                .map(|p| real.starts_with(p))
                .unwrap_or(false)
        }),
        _ => false,
    };
    let regular = file.metadata().map(|m| m.is_file()).unwrap_or(false);
    if !inside || !regular {
        emit(
            format!("`{path}` is outside the paths this agent allows, or not a regular file\n")
                .as_bytes(),
        );
        return (false, false);
    }
    let mut buf = Vec::new();
    if file
        .take(MAX_READ_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .is_err()
    {
        return refuse(emit);
    }
    let truncated = buf.len() > MAX_READ_BYTES;
    buf.truncate(MAX_READ_BYTES);
    let mut r = redactor.fresh();
    let mut out = r.push(&buf);
    out.extend(r.finish());
    emit(&out);
    if truncated {
        emit(b"\n[file truncated at 64 KiB]\n");
    }
    (true, false)
}

/// The argv for one non-plan step, with its environment.
fn argv(
    config: &OpsConfig,
    op: &Operation,
) -> Result<(Vec<String>, BTreeMap<String, String>), String> {
    let fill = |cmd: &[String], key: &str, value: &str| -> Vec<String> {
        cmd.iter().map(|a| a.replace(key, value)).collect()
    };
    let missing = || format!("{} is not configured on this agent", op.kind());
    Ok(match op {
        Operation::ServiceStatus { unit } => (
            fill(
                config.service_status.as_deref().ok_or_else(missing)?,
                "{unit}",
                unit,
            ),
            BTreeMap::new(),
        ),
        Operation::RestartService { unit } => (
            fill(
                config.restart_service.as_deref().ok_or_else(missing)?,
                "{unit}",
                unit,
            ),
            BTreeMap::new(),
        ),
        Operation::DiskUsage {} => (
            config.disk_usage.clone().ok_or_else(missing)?,
            BTreeMap::new(),
        ),
        Operation::InstallPackage { name, version } => {
            let p = config.install_package.as_ref().ok_or_else(missing)?;
            let package = match version {
                Some(v) => format!("{name}={v}"),
                None => name.clone(),
            };
            (fill(&p.command, "{package}", &package), BTreeMap::new())
        }
        Operation::RunBackup { profile } => {
            let p = config
                .backup_profiles
                .get(profile)
                .ok_or_else(|| format!("backup profile `{profile}` is not configured"))?;
            (p.command.clone(), p.env.clone())
        }
        Operation::ReadFile { .. } | Operation::RunPlan { .. } => {
            return Err("not a command".into())
        }
    })
}

/// Finds a program: an absolute path as is, a bare name on the safe `PATH`.
fn program(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    crate::sandbox::SAFE_PATH
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|c| c.is_file())
}

async fn run_command(
    config: &OpsConfig,
    vault: &Vault,
    redactor: &Redactor,
    op: &Operation,
    cancel: CancelToken,
    emit: &mut dyn FnMut(&[u8]),
) -> (bool, bool) {
    let (args, env) = match argv(config, op) {
        Ok(v) => v,
        Err(e) => {
            emit(format!("{e}\n").as_bytes());
            return (false, false);
        }
    };
    let Some(first) = args.first() else {
        emit(b"no command configured\n");
        return (false, false);
    };
    let Some(prog) = program(first) else {
        emit(format!("`{first}` was not found on this host\n").as_bytes());
        return (false, false);
    };
    let mut resolved = Vec::with_capacity(env.len());
    for (k, v) in &env {
        match vault.resolve(v) {
            Ok(value) => resolved.push((k.clone(), value)),
            Err(e) => {
                emit(format!("{e}\n").as_bytes());
                return (false, false);
            }
        }
    }
    let spec = TaskSpec {
        program: prog,
        args: args[1..].to_vec(),
        env: resolved
            .into_iter()
            .map(|(k, v)| (k, Zeroizing::new(v.to_string())))
            .collect(),
        run_as: config.run_as.clone(),
        limits: Limits {
            timeout: Duration::from_secs(config.timeout_secs),
            output_cap_bytes: config.output_cap_bytes,
            ..Limits::default()
        },
    };
    let sandbox = Sandbox::new(&config.work_dir);
    match sandbox
        .run(&spec, redactor, cancel, |chunk| emit(chunk))
        .await
    {
        Ok(TaskOutcome { status, .. }) => {
            let (line, ok, timed_out) = describe(status);
            emit(line.as_bytes());
            (ok, timed_out)
        }
        Err(e) => {
            emit(format!("the task did not start: {e}\n").as_bytes());
            (false, false)
        }
    }
}

fn describe(status: TaskStatus) -> (String, bool, bool) {
    match status {
        TaskStatus::Exited(0) => ("\n[exit 0]\n".into(), true, false),
        TaskStatus::Exited(c) => (format!("\n[exit {c}]\n"), false, false),
        TaskStatus::Signalled(s) => (format!("\n[killed by signal {s}]\n"), false, false),
        TaskStatus::LimitExceeded(l) => (format!("\n[stopped by a limit: {l:?}]\n"), false, false),
        TaskStatus::TimedOut => (
            "\n[timed out; the task's processes were killed]\n".into(),
            false,
            true,
        ),
        TaskStatus::Cancelled => (
            "\n[cancelled; the task's processes were killed]\n".into(),
            false,
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(prefix: &Path) -> OpsConfig {
        OpsConfig {
            read_file: Some(ReadFileConfig {
                allow_prefixes: vec![prefix.to_path_buf()],
            }),
            ..OpsConfig::default()
        }
    }

    fn read(config: &OpsConfig, path: &Path) -> (bool, String) {
        let mut out = Vec::new();
        let (ok, _) = read_file(
            config,
            path.to_str().unwrap(),
            &Redactor::new(["hunter2-secret"]),
            &mut |b| out.extend_from_slice(b),
        );
        (ok, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn read_file_checks_the_file_it_opened() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("logs");
        let outside = root.path().join("secrets");
        for d in [&allowed, &outside] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(allowed.join("app.log"), "line with hunter2-secret\n").unwrap();
        std::fs::write(outside.join("key"), "private").unwrap();
        let cfg = config(&allowed);
        let (ok, out) = read(&cfg, &allowed.join("app.log"));
        assert!(ok, "{out}");
        assert!(out.contains("line with [REDACTED]"), "{out}");
        // A link inside the allowed directory that leads outside it.
        let link = allowed.join("sneaky");
        std::os::unix::fs::symlink(outside.join("key"), &link).unwrap();
        let (ok, out) = read(&cfg, &link);
        assert!(!ok && !out.contains("private"), "{out}");
        // A directory is not a file.
        let (ok, _) = read(&cfg, &allowed);
        assert!(!ok);
    }

    #[test]
    fn watched_backup_profiles_report_their_stamp_files() {
        let root = tempfile::tempdir().unwrap();
        let stamp = root.path().join("nightly.ok");
        std::fs::write(&stamp, "").unwrap();
        let profile = |stamp: Option<PathBuf>| ProfileConfig {
            command: vec!["/bin/true".into()],
            env: BTreeMap::new(),
            stamp,
        };
        let mut cfg = OpsConfig::default();
        cfg.backup_profiles
            .insert("nightly".into(), profile(Some(stamp.clone())));
        cfg.backup_profiles.insert(
            "weekly".into(),
            profile(Some(root.path().join("weekly.ok"))),
        );
        cfg.backup_profiles.insert("adhoc".into(), profile(None));
        assert_eq!(cfg.check(), Ok(()));
        let states = backup_states(&cfg);
        assert_eq!(states.len(), 2, "only profiles with a stamp are watched");
        let mtime = std::fs::metadata(&stamp)
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert_eq!(states[0].profile, "nightly");
        assert_eq!(states[0].last_success_at, Some(mtime));
        assert_eq!(states[1].profile, "weekly");
        assert_eq!(states[1].last_success_at, None, "no stamp yet");
        // A relative stamp is refused at load.
        cfg.backup_profiles
            .insert("rel".into(), profile(Some(PathBuf::from("nightly.ok"))));
        let err = cfg.check().unwrap_err();
        assert!(err.contains("backup_profiles.rel.stamp"), "{err}");
    }

    #[test]
    fn profiles_declare_the_control_plane_secrets_they_use() {
        let profile = |env: &[(&str, &str)]| ProfileConfig {
            command: vec!["/bin/true".into()],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            stamp: None,
        };
        let mut cfg = OpsConfig::default();
        cfg.backup_profiles.insert(
            "nightly".into(),
            profile(&[
                ("DB_URL", "postgres://app:secret://DB_PASSWORD@db/app"),
                ("S3_KEY", "secret://S3_KEY"),
                ("LOCAL", "vault://local/token"),
            ]),
        );
        cfg.backup_profiles
            .insert("plain".into(), profile(&[("LOCAL", "vault://local/token")]));
        assert_eq!(cfg.check(), Ok(()));
        let caps = cfg.capabilities(false);
        assert_eq!(
            caps.profile_secrets,
            BTreeMap::from([(
                "nightly".to_string(),
                vec!["DB_PASSWORD".to_string(), "S3_KEY".to_string()]
            )])
        );
        caps.check().unwrap();
        // A reference that names no secret is refused at load.
        cfg.backup_profiles
            .insert("bad".into(), profile(&[("X", "secret://9lives")]));
        let err = cfg.check().unwrap_err();
        assert!(err.contains("backup_profiles.bad.env: X"), "{err}");
    }
}
