//! The operation catalogue: what the control plane may ask an agent to run.
//!
//! The control plane never sends a command line. It sends an [`Operation`]: a
//! catalogued kind with arguments that [`Operation::parse`] has checked against
//! the rules here, and the agent parses the same bytes with the same function
//! before its own config (unit allowlist, backup profiles, file prefixes) maps
//! the kind to what runs locally. Both sides refuse anything else, naming the
//! field: an unknown kind, an unknown or missing argument, a unit name with a
//! slash, a package name with a space, a relative path, a plan of more than
//! [`MAX_PLAN_STEPS`] steps.
//!
//! Each kind has a [`Risk`] that the approval rules read; a plan's risk is the
//! highest of its steps.
//!
//! This module is pure (no crypto, no I/O) so the dashboard's browser build
//! shares it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most steps a plan may hold.
pub const MAX_PLAN_STEPS: usize = 20;
/// Longest unit name.
pub const MAX_UNIT_CHARS: usize = 128;
/// Longest package name.
pub const MAX_PACKAGE_CHARS: usize = 128;
/// Longest package version.
pub const MAX_VERSION_CHARS: usize = 64;
/// Longest backup profile name.
pub const MAX_PROFILE_CHARS: usize = 64;
/// Longest path for `read_file`.
pub const MAX_PATH_CHARS: usize = 1024;
/// Most bytes of a file `read_file` sends back.
pub const MAX_READ_BYTES: usize = 64 * 1024;
/// How an agent's config names a control-plane secret (Settings -> Secrets)
/// in a backup profile's environment: `secret://NAME`.
pub const SECRET_REF: &str = "secret://";
/// Longest secret name (as the control plane's secrets allow).
pub const MAX_SECRET_NAME_CHARS: usize = 128;
/// Most control-plane secrets one backup profile may use.
pub const MAX_PROFILE_SECRETS: usize = 32;

/// How much harm an operation can do, weakest first. Policy reads it: who may
/// approve, and whether the two-person rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Low,
    Medium,
    High,
    Destructive,
}

impl Risk {
    pub const ALL: [Risk; 4] = [Risk::Low, Risk::Medium, Risk::High, Risk::Destructive];

    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::Destructive => "destructive",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Risk::Low => "Low risk",
            Risk::Medium => "Medium risk",
            Risk::High => "High risk",
            Risk::Destructive => "Destructive",
        }
    }
}

impl FromStr for Risk {
    type Err = OpError;

    fn from_str(s: &str) -> Result<Self, OpError> {
        Risk::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| OpError::new("risk", "must be low, medium, high or destructive"))
    }
}

/// The kinds an agent can run, by their wire names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    ServiceStatus,
    DiskUsage,
    RestartService,
    RunBackup,
    InstallPackage,
    ReadFile,
    RunPlan,
}

impl OpKind {
    pub const ALL: [OpKind; 7] = [
        OpKind::ServiceStatus,
        OpKind::DiskUsage,
        OpKind::RestartService,
        OpKind::RunBackup,
        OpKind::InstallPackage,
        OpKind::ReadFile,
        OpKind::RunPlan,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::ServiceStatus => "service_status",
            OpKind::DiskUsage => "disk_usage",
            OpKind::RestartService => "restart_service",
            OpKind::RunBackup => "run_backup",
            OpKind::InstallPackage => "install_package",
            OpKind::ReadFile => "read_file",
            OpKind::RunPlan => "run_plan",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            OpKind::ServiceStatus => "Service status",
            OpKind::DiskUsage => "Disk usage",
            OpKind::RestartService => "Restart service",
            OpKind::RunBackup => "Run backup",
            OpKind::InstallPackage => "Install package",
            OpKind::ReadFile => "Read file",
            OpKind::RunPlan => "Run plan",
        }
    }

    /// The kind's own risk. A plan's is the highest of its steps
    /// ([`Operation::risk`]); this answers `Low` for it.
    pub fn risk(self) -> Risk {
        match self {
            OpKind::ServiceStatus | OpKind::DiskUsage | OpKind::RunPlan => Risk::Low,
            OpKind::RestartService | OpKind::RunBackup => Risk::Medium,
            // A file's contents can be secrets; the agent redacts what it can.
            OpKind::ReadFile => Risk::Medium,
            OpKind::InstallPackage => Risk::High,
        }
    }

    /// Whether running it changes nothing on the server.
    pub fn read_only(self) -> bool {
        matches!(
            self,
            OpKind::ServiceStatus | OpKind::DiskUsage | OpKind::ReadFile
        )
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OpKind {
    type Err = OpError;

    fn from_str(s: &str) -> Result<Self, OpError> {
        OpKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = OpKind::ALL.iter().map(|k| k.as_str()).collect();
                OpError::new(
                    "kind",
                    format!(
                        "is not a catalogued operation (known: {})",
                        known.join(", ")
                    ),
                )
            })
    }
}

/// Why an operation was refused: the field (`unit`, `steps[2].name`) and what
/// is wrong with it. The message never repeats the refused value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct OpError {
    pub field: String,
    pub message: String,
}

impl OpError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    fn within(self, prefix: &str) -> Self {
        Self {
            field: format!("{prefix}.{}", self.field),
            message: self.message,
        }
    }
}

/// A catalogued operation whose arguments passed the catalogue's rules. Built
/// only by [`Operation::parse`] (or the checked constructors), so holding one
/// means its arguments are valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "args", rename_all = "snake_case")]
pub enum Operation {
    ServiceStatus {
        unit: String,
    },
    DiskUsage {},
    RestartService {
        unit: String,
    },
    RunBackup {
        profile: String,
    },
    InstallPackage {
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    ReadFile {
        path: String,
    },
    RunPlan {
        steps: Vec<Operation>,
    },
}

impl Operation {
    /// Parses and checks an operation from its kind and its arguments (a JSON
    /// object). Unknown kinds, unknown, missing or mistyped arguments and
    /// values outside the catalogue's patterns are refused.
    pub fn parse(kind: &str, args: &Value) -> Result<Operation, OpError> {
        let kind: OpKind = kind.parse()?;
        Self::parse_kind(kind, args, true)
    }

    /// Parses the wire form: a command's kind and its payload bytes (JSON).
    pub fn from_wire(kind: &str, payload: &[u8]) -> Result<Operation, OpError> {
        let args: Value = serde_json::from_slice(payload)
            .map_err(|_| OpError::new("args", "are not a JSON object"))?;
        Self::parse(kind, &args)
    }

    fn parse_kind(kind: OpKind, args: &Value, top: bool) -> Result<Operation, OpError> {
        let empty = Map::new();
        let map = match args {
            Value::Object(m) => m,
            Value::Null => &empty,
            _ => return Err(OpError::new("args", "must be a JSON object")),
        };
        let mut fields = Fields { map, used: 0 };
        let op = match kind {
            OpKind::ServiceStatus => Operation::ServiceStatus {
                unit: check_unit(fields.required("unit")?)?,
            },
            OpKind::DiskUsage => Operation::DiskUsage {},
            OpKind::RestartService => Operation::RestartService {
                unit: check_unit(fields.required("unit")?)?,
            },
            OpKind::RunBackup => Operation::RunBackup {
                profile: check_profile(fields.required("profile")?)?,
            },
            OpKind::InstallPackage => Operation::InstallPackage {
                name: check_package(fields.required("name")?)?,
                version: fields.optional("version")?.map(check_version).transpose()?,
            },
            OpKind::ReadFile => Operation::ReadFile {
                path: check_path(fields.required("path")?)?,
            },
            OpKind::RunPlan => {
                if !top {
                    return Err(OpError::new("kind", "a plan cannot contain a plan"));
                }
                Operation::RunPlan {
                    steps: parse_steps(fields.value("steps")?)?,
                }
            }
        };
        fields.no_others()?;
        Ok(op)
    }

    pub fn kind(&self) -> OpKind {
        match self {
            Operation::ServiceStatus { .. } => OpKind::ServiceStatus,
            Operation::DiskUsage {} => OpKind::DiskUsage,
            Operation::RestartService { .. } => OpKind::RestartService,
            Operation::RunBackup { .. } => OpKind::RunBackup,
            Operation::InstallPackage { .. } => OpKind::InstallPackage,
            Operation::ReadFile { .. } => OpKind::ReadFile,
            Operation::RunPlan { .. } => OpKind::RunPlan,
        }
    }

    /// The kind's risk; for a plan, the highest of its steps.
    pub fn risk(&self) -> Risk {
        match self {
            Operation::RunPlan { steps } => {
                steps.iter().map(Operation::risk).max().unwrap_or(Risk::Low)
            }
            op => op.kind().risk(),
        }
    }

    /// The arguments as the JSON object the wire carries.
    pub fn args(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut m)) => m.remove("args").unwrap_or(Value::Object(Map::new())),
            _ => Value::Object(Map::new()),
        }
    }

    /// The kinds it runs: its own, or a plan's steps'.
    pub fn kinds(&self) -> Vec<OpKind> {
        match self {
            Operation::RunPlan { steps } => steps.iter().map(Operation::kind).collect(),
            op => vec![op.kind()],
        }
    }

    /// The unit it names, if any.
    pub fn unit(&self) -> Option<&str> {
        match self {
            Operation::ServiceStatus { unit } | Operation::RestartService { unit } => Some(unit),
            _ => None,
        }
    }

    /// One line for people: `restart_service nginx.service`.
    pub fn summary(&self) -> String {
        match self {
            Operation::ServiceStatus { unit } | Operation::RestartService { unit } => {
                format!("{} {unit}", self.kind())
            }
            Operation::DiskUsage {} => self.kind().to_string(),
            Operation::RunBackup { profile } => format!("{} {profile}", self.kind()),
            Operation::InstallPackage { name, version } => match version {
                Some(v) => format!("{} {name}={v}", self.kind()),
                None => format!("{} {name}", self.kind()),
            },
            Operation::ReadFile { path } => format!("{} {path}", self.kind()),
            Operation::RunPlan { steps } => format!(
                "{} [{}]",
                self.kind(),
                steps
                    .iter()
                    .map(Operation::summary)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }

    /// The canonical text the plan hash covers: the kind, then each argument
    /// as `name=JSON string` in name order, steps in order. Independent of any
    /// JSON map ordering.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut String) {
        out.push_str(self.kind().as_str());
        out.push('(');
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
        match self {
            Operation::ServiceStatus { unit } | Operation::RestartService { unit } => {
                out.push_str(&format!("unit={}", quote(unit)));
            }
            Operation::DiskUsage {} => {}
            Operation::RunBackup { profile } => {
                out.push_str(&format!("profile={}", quote(profile)))
            }
            Operation::InstallPackage { name, version } => {
                out.push_str(&format!("name={}", quote(name)));
                if let Some(v) = version {
                    out.push_str(&format!(",version={}", quote(v)));
                }
            }
            Operation::ReadFile { path } => out.push_str(&format!("path={}", quote(path))),
            Operation::RunPlan { steps } => {
                out.push_str("steps=[");
                for (i, step) in steps.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    step.write_canonical(out);
                }
                out.push(']');
            }
        }
        out.push(')');
    }
}

/// The plan hash an approval is bound to: hex SHA-256 over a fixed label, the
/// target agent's id and the operation's [canonical](Operation::canonical)
/// form. Any change to the kind, an argument or the target makes another hash,
/// so an edited plan needs a new approval, and the agent, which recomputes it
/// from what it is about to run, refuses a command whose hash differs.
#[cfg(feature = "crypto")]
pub fn plan_hash(agent_id: &str, op: &Operation) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"pilothouse-plan-v1\n");
    h.update(agent_id.as_bytes());
    h.update(b"\n");
    h.update(op.canonical().as_bytes());
    hex::encode(h.finalize())
}

/// Who asked for a command. The agent reads it from the signed header: a
/// host whose own config says `production = true` refuses every command
/// whose origin is [`Origin::Pilot`], whatever the control plane says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The control plane itself (pings, key rounds).
    System,
    /// A person proposed it.
    Human,
    /// The AI Pilot proposed it.
    Pilot,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::System => "system",
            Origin::Human => "human",
            Origin::Pilot => "pilot",
        }
    }
}

impl FromStr for Origin {
    type Err = OpError;

    fn from_str(s: &str) -> Result<Self, OpError> {
        [Origin::System, Origin::Human, Origin::Pilot]
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| OpError::new("origin", "must be system, human or pilot"))
    }
}

/// One approval of an operation, as the signed command carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approver {
    pub user_id: i64,
    /// `owner`, `admin` or `member`: the role when they approved.
    pub role: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// The approval record a command for an operation carries, signed with it:
/// where the operation came from, who approved it and when, and until when
/// the approval holds. The agent refuses a pilot's command on a production
/// host and a command whose plan hash does not match what it would run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRecord {
    pub operation_id: String,
    pub origin: Origin,
    /// The proposer's user id; `None` for the AI Pilot.
    pub proposed_by: Option<i64>,
    /// The person ran their own operation (allowed when their role suffices
    /// and the two-person rule does not apply).
    pub self_approved: bool,
    pub approvers: Vec<Approver>,
    /// Unix milliseconds after which the approval no longer holds.
    pub expires_at: i64,
}

/// What an agent declares it can run, from its own config: sent at enrolment
/// and whenever its config changes. The dashboard offers only these.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Catalogued kinds the agent's config maps to something local.
    pub kinds: Vec<OpKind>,
    /// Units `service_status` and `restart_service` may name.
    pub units: Vec<String>,
    /// Units whose state the agent reports with each heartbeat.
    pub watched_units: Vec<String>,
    /// Backup profiles `run_backup` may name.
    pub backup_profiles: Vec<String>,
    /// The package tool `install_package` runs (`apt-get`, `dnf`), if any.
    pub package_tool: Option<String>,
    /// Whether the agent allows `read_file` at all (its own config).
    pub file_access: bool,
    /// Whether the agent's config says it is a production host.
    pub production: bool,
    /// The control-plane secrets (`secret://NAME`) each backup profile's
    /// task is given, by profile: delivered sealed with the operation.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub profile_secrets: std::collections::BTreeMap<String, Vec<String>>,
}

/// Most entries in each list of [`Capabilities`].
pub const MAX_CAPABILITY_ENTRIES: usize = 256;

impl Capabilities {
    /// Checks what an agent declared against the catalogue's patterns, so the
    /// control plane stores nothing it would refuse to send.
    pub fn check(&self) -> Result<(), OpError> {
        for (field, list) in [
            ("units", &self.units),
            ("watched_units", &self.watched_units),
            ("backup_profiles", &self.backup_profiles),
        ] {
            if list.len() > MAX_CAPABILITY_ENTRIES {
                return Err(OpError::new(
                    field,
                    format!("lists more than {MAX_CAPABILITY_ENTRIES} entries"),
                ));
            }
            for (i, v) in list.iter().enumerate() {
                let checked = if field == "backup_profiles" {
                    check_profile(v)
                } else {
                    check_unit(v)
                };
                checked.map_err(|e| OpError::new(format!("{field}[{i}]"), e.message))?;
            }
        }
        let mut kinds = self.kinds.clone();
        kinds.sort();
        kinds.dedup();
        if kinds.len() != self.kinds.len() {
            return Err(OpError::new("kinds", "lists a kind twice"));
        }
        if let Some(tool) = &self.package_tool {
            check_package(tool).map_err(|e| OpError::new("package_tool", e.message))?;
        }
        for (profile, names) in &self.profile_secrets {
            let field = format!("profile_secrets.{profile}");
            if !self.backup_profiles.contains(profile) {
                return Err(OpError::new(field, "is not one of backup_profiles"));
            }
            if names.len() > MAX_PROFILE_SECRETS {
                return Err(OpError::new(
                    field,
                    format!("lists more than {MAX_PROFILE_SECRETS} secrets"),
                ));
            }
            for (i, name) in names.iter().enumerate() {
                check_secret_name(name)
                    .map_err(|e| OpError::new(format!("{field}[{i}]"), e.message))?;
            }
        }
        Ok(())
    }

    /// The control-plane secrets `op`'s tasks are given (a plan: every
    /// step's), sorted, each once.
    pub fn secrets_for(&self, op: &Operation) -> Vec<String> {
        let mut names: Vec<String> = match op {
            Operation::RunPlan { steps } => {
                steps.iter().flat_map(|s| self.secrets_for(s)).collect()
            }
            Operation::RunBackup { profile } => self
                .profile_secrets
                .get(profile)
                .cloned()
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        names.sort();
        names.dedup();
        names
    }

    /// Whether the agent says it runs this operation with these arguments.
    /// The agent decides again from its own config; this only keeps the
    /// dashboard from offering what would be refused.
    pub fn allows(&self, op: &Operation) -> Result<(), OpError> {
        match op {
            Operation::RunPlan { steps } => {
                for (i, step) in steps.iter().enumerate() {
                    self.allows(step)
                        .map_err(|e| e.within(&format!("steps[{i}]")))?;
                }
                Ok(())
            }
            _ => {
                if !self.kinds.contains(&op.kind()) {
                    return Err(OpError::new(
                        "kind",
                        format!("this server's agent does not offer {}", op.kind()),
                    ));
                }
                if let Some(unit) = op.unit() {
                    if !self.units.iter().any(|u| u == unit) {
                        return Err(OpError::new(
                            "unit",
                            "is not in this server's list of allowed units",
                        ));
                    }
                }
                match op {
                    Operation::RunBackup { profile } if !self.backup_profiles.contains(profile) => {
                        Err(OpError::new(
                            "profile",
                            "is not a backup profile this server's agent has",
                        ))
                    }
                    Operation::InstallPackage { .. } if self.package_tool.is_none() => Err(
                        OpError::new("kind", "this server's agent has no package tool"),
                    ),
                    Operation::ReadFile { .. } if !self.file_access => Err(OpError::new(
                        "kind",
                        "file access is off in this server's agent config",
                    )),
                    _ => Ok(()),
                }
            }
        }
    }
}

/// Reads named arguments and remembers how many were used, so unknown ones
/// can be refused.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    used: usize,
}

impl<'a> Fields<'a> {
    fn value(&mut self, name: &'static str) -> Result<&'a Value, OpError> {
        let v = self
            .map
            .get(name)
            .ok_or_else(|| OpError::new(name, "is required"))?;
        self.used += 1;
        Ok(v)
    }

    fn required(&mut self, name: &'static str) -> Result<&'a str, OpError> {
        self.value(name)?
            .as_str()
            .ok_or_else(|| OpError::new(name, "must be a string"))
    }

    fn optional(&mut self, name: &'static str) -> Result<Option<&'a str>, OpError> {
        match self.map.get(name) {
            None | Some(Value::Null) => {
                if self.map.contains_key(name) {
                    self.used += 1;
                }
                Ok(None)
            }
            Some(v) => {
                self.used += 1;
                v.as_str()
                    .map(Some)
                    .ok_or_else(|| OpError::new(name, "must be a string"))
            }
        }
    }

    fn no_others(&self) -> Result<(), OpError> {
        if self.map.len() > self.used {
            return Err(OpError::new(
                "args",
                "contain an argument this operation does not take",
            ));
        }
        Ok(())
    }
}

fn parse_steps(v: &Value) -> Result<Vec<Operation>, OpError> {
    let steps = v
        .as_array()
        .ok_or_else(|| OpError::new("steps", "must be a list"))?;
    if steps.is_empty() {
        return Err(OpError::new("steps", "must hold at least one step"));
    }
    if steps.len() > MAX_PLAN_STEPS {
        return Err(OpError::new(
            "steps",
            format!("may hold at most {MAX_PLAN_STEPS} steps"),
        ));
    }
    steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let at = format!("steps[{i}]");
            let obj = step
                .as_object()
                .ok_or_else(|| OpError::new(at.clone(), "must be an object with kind and args"))?;
            let kind = obj
                .get("kind")
                .and_then(Value::as_str)
                .ok_or_else(|| OpError::new(format!("{at}.kind"), "is required"))?;
            if obj.keys().any(|k| k != "kind" && k != "args") {
                return Err(OpError::new(at, "takes only kind and args"));
            }
            let kind: OpKind = kind.parse().map_err(|e: OpError| e.within(&at))?;
            Operation::parse_kind(kind, obj.get("args").unwrap_or(&Value::Null), false)
                .map_err(|e| e.within(&at))
        })
        .collect()
}

fn check_chars(
    field: &'static str,
    v: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    what: &str,
) -> Result<String, OpError> {
    if v.is_empty() {
        return Err(OpError::new(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(OpError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if !v.starts_with(|c: char| c.is_ascii_alphanumeric()) || !v.chars().all(allowed) {
        return Err(OpError::new(field, format!("must be {what}")));
    }
    Ok(v.to_string())
}

/// A systemd unit name: letters, digits and `@._:-`, starting with a letter
/// or digit, no `..`.
pub fn check_unit(v: &str) -> Result<String, OpError> {
    let unit = check_chars(
        "unit",
        v,
        MAX_UNIT_CHARS,
        |c| c.is_ascii_alphanumeric() || "@._:-".contains(c),
        "a unit name (letters, digits and @._:- only, starting with a letter or digit)",
    )?;
    if unit.contains("..") {
        return Err(OpError::new("unit", "must not contain `..`"));
    }
    Ok(unit)
}

/// A package name as Debian and RPM spell them: lowercase letters, digits and `+.-`.
pub fn check_package(v: &str) -> Result<String, OpError> {
    check_chars(
        "name",
        v,
        MAX_PACKAGE_CHARS,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c),
        "a package name (lowercase letters, digits and +.- only)",
    )
}

/// A package version: letters, digits and `.+~:-`.
pub fn check_version(v: &str) -> Result<String, OpError> {
    check_chars(
        "version",
        v,
        MAX_VERSION_CHARS,
        |c| c.is_ascii_alphanumeric() || ".+~:-".contains(c),
        "a package version (letters, digits and .+~:- only)",
    )
}

/// A backup profile name from the agent's config: lowercase letters, digits, `_` and `-`.
pub fn check_profile(v: &str) -> Result<String, OpError> {
    check_chars(
        "profile",
        v,
        MAX_PROFILE_CHARS,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c),
        "a profile name (lowercase letters, digits, _ and - only)",
    )
}

/// A control-plane secret's name: a letter or `_`, then letters, digits and
/// `_` (an environment variable's name).
pub fn check_secret_name(v: &str) -> Result<String, OpError> {
    if v.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(OpError::new("secret", "must not start with a digit"));
    }
    check_chars(
        "secret",
        v,
        MAX_SECRET_NAME_CHARS,
        |c| c.is_ascii_alphanumeric() || c == '_',
        "a secret name (letters, digits and _ only)",
    )
}

/// The sealed payload of an operation whose task is given control-plane
/// secrets: its arguments as they were approved (the plan hash covers them,
/// not the values) and each secret's value. Only ever inside a sealed
/// command; the control plane never stores it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WithSecrets {
    args: Value,
    secrets: std::collections::BTreeMap<String, String>,
}

/// The payload that carries `args` (an operation's JSON arguments) with
/// `secrets` (name -> value). With no secrets the payload is `args` itself.
pub fn payload_with_secrets(
    args: &[u8],
    secrets: std::collections::BTreeMap<String, String>,
) -> Result<Vec<u8>, OpError> {
    if secrets.is_empty() {
        return Ok(args.to_vec());
    }
    let args: Value =
        serde_json::from_slice(args).map_err(|_| OpError::new("args", "are not a JSON object"))?;
    serde_json::to_vec(&WithSecrets { args, secrets })
        .map_err(|e| OpError::new("secrets", e.to_string()))
}

/// Splits a payload into the operation's arguments and the secrets that came
/// with them (none for a payload of plain arguments). No operation has an
/// argument named `secrets`, so the two forms cannot be confused.
pub fn split_payload(
    payload: &[u8],
) -> Result<(Vec<u8>, std::collections::BTreeMap<String, String>), OpError> {
    let value: Value = serde_json::from_slice(payload)
        .map_err(|_| OpError::new("args", "are not a JSON object"))?;
    if !value.get("secrets").is_some_and(Value::is_object) {
        return Ok((payload.to_vec(), Default::default()));
    }
    let wrapped: WithSecrets = serde_json::from_value(value)
        .map_err(|_| OpError::new("secrets", "the payload's secrets are malformed"))?;
    for name in wrapped.secrets.keys() {
        check_secret_name(name)?;
    }
    let args =
        serde_json::to_vec(&wrapped.args).map_err(|e| OpError::new("args", e.to_string()))?;
    Ok((args, wrapped.secrets))
}

/// An absolute, normalised file path: starts with `/`, no empty, `.` or `..`
/// components, no trailing `/`, no control characters. (The agent also
/// resolves symlinks before it checks its allowed prefixes.)
pub fn check_path(v: &str) -> Result<String, OpError> {
    if !v.starts_with('/') {
        return Err(OpError::new("path", "must be an absolute path"));
    }
    if v.chars().count() > MAX_PATH_CHARS {
        return Err(OpError::new(
            "path",
            format!("must be at most {MAX_PATH_CHARS} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(OpError::new("path", "must not contain control characters"));
    }
    if v.len() == 1
        || v[1..]
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(OpError::new(
            "path",
            "must name a file with no empty, `.` or `..` components",
        ));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_each_kind_and_round_trips_its_args() {
        for (kind, args) in [
            ("service_status", json!({"unit": "nginx.service"})),
            ("disk_usage", json!({})),
            ("restart_service", json!({"unit": "getty@tty1.service"})),
            ("run_backup", json!({"profile": "nightly-db"})),
            (
                "install_package",
                json!({"name": "libssl3", "version": "3.0.11-1~deb12u2"}),
            ),
            ("install_package", json!({"name": "g++"})),
            ("read_file", json!({"path": "/var/log/nginx/error.log"})),
            (
                "run_plan",
                json!({"steps": [{"kind": "disk_usage", "args": {}}, {"kind": "restart_service", "args": {"unit": "nginx.service"}}]}),
            ),
        ] {
            let op = Operation::parse(kind, &args).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(op.kind().as_str(), kind);
            assert_eq!(op.args(), args, "{kind}");
            let again = Operation::from_wire(kind, op.args().to_string().as_bytes()).unwrap();
            assert_eq!(again, op);
        }
    }

    #[test]
    fn refuses_bad_input_naming_the_field() {
        let cases = [
            ("reboot", json!({}), "kind"),
            ("restart_service", json!({"unit": "../../etc"}), "unit"),
            ("restart_service", json!({"unit": "a..b"}), "unit"),
            ("restart_service", json!({"unit": "-x"}), "unit"),
            ("restart_service", json!({"unit": "a b"}), "unit"),
            ("restart_service", json!({}), "unit"),
            ("restart_service", json!({"unit": 5}), "unit"),
            ("restart_service", json!({"unit": "a", "extra": 1}), "args"),
            ("install_package", json!({"name": "lib ssl"}), "name"),
            ("install_package", json!({"name": "curl; rm -rf /"}), "name"),
            (
                "install_package",
                json!({"name": "curl", "version": "1 2"}),
                "version",
            ),
            ("read_file", json!({"path": "etc/passwd"}), "path"),
            ("read_file", json!({"path": "/etc/../shadow"}), "path"),
            ("read_file", json!({"path": "/etc//shadow"}), "path"),
            ("read_file", json!({"path": "/etc/"}), "path"),
            ("read_file", json!({"path": "/"}), "path"),
            ("read_file", json!({"path": "/etc/x\n"}), "path"),
            ("run_backup", json!({"profile": "Nightly"}), "profile"),
            ("run_plan", json!({"steps": []}), "steps"),
            ("run_plan", json!({"steps": "x"}), "steps"),
            (
                "run_plan",
                json!({"steps": [{"kind": "restart_service", "args": {"unit": "../x"}}]}),
                "steps[0].unit",
            ),
            (
                "run_plan",
                json!({"steps": [{"kind": "run_plan", "args": {"steps": []}}]}),
                "steps[0].kind",
            ),
            (
                "run_plan",
                json!({"steps": [{"kind": "nope"}]}),
                "steps[0].kind",
            ),
            (
                "run_plan",
                json!({"steps": [{"args": {}}]}),
                "steps[0].kind",
            ),
            ("disk_usage", json!([1]), "args"),
        ];
        for (kind, args, field) in cases {
            let err = Operation::parse(kind, &args).expect_err(&format!("{kind} {args}"));
            assert_eq!(err.field, field, "{kind} {args}: {err}");
        }
        let steps: Vec<Value> = (0..10_000)
            .map(|_| json!({"kind": "disk_usage", "args": {}}))
            .collect();
        let err = Operation::parse("run_plan", &json!({ "steps": steps })).unwrap_err();
        assert_eq!(err.field, "steps");
        assert!(err.message.contains("at most 20"), "{err}");
        let err = Operation::from_wire("disk_usage", b"not json").unwrap_err();
        assert_eq!(err.field, "args");
    }

    #[test]
    fn the_error_never_repeats_the_refused_value() {
        let err =
            Operation::parse("restart_service", &json!({"unit": "evil<script>"})).unwrap_err();
        assert!(!err.to_string().contains("evil"), "{err}");
    }

    #[test]
    fn a_plans_risk_is_its_highest_step() {
        let plan = Operation::parse(
            "run_plan",
            &json!({"steps": [{"kind": "disk_usage", "args": {}}, {"kind": "install_package", "args": {"name": "curl"}}]}),
        )
        .unwrap();
        assert_eq!(plan.risk(), Risk::High);
        let low =
            Operation::parse("run_plan", &json!({"steps": [{"kind": "disk_usage"}]})).unwrap();
        assert_eq!(low.risk(), Risk::Low);
        assert!(Risk::Destructive > Risk::High && Risk::High > Risk::Medium);
    }

    #[test]
    fn the_canonical_form_is_fixed() {
        let op = Operation::parse(
            "run_plan",
            &json!({"steps": [{"kind": "install_package", "args": {"version": "1.2", "name": "curl"}}, {"kind": "service_status", "args": {"unit": "a\"b"}}]}),
        );
        // A quote is not a unit character: the plan is refused first.
        assert!(op.is_err());
        let op = Operation::parse(
            "run_plan",
            &json!({"steps": [{"kind": "install_package", "args": {"version": "1.2", "name": "curl"}}, {"kind": "disk_usage"}]}),
        )
        .unwrap();
        assert_eq!(
            op.canonical(),
            r#"run_plan(steps=[install_package(name="curl",version="1.2"),disk_usage()])"#
        );
    }

    #[cfg(feature = "crypto")]
    #[test]
    fn the_plan_hash_binds_kind_arguments_and_target() {
        let op = Operation::parse("restart_service", &json!({"unit": "nginx.service"})).unwrap();
        let other =
            Operation::parse("restart_service", &json!({"unit": "nginx2.service"})).unwrap();
        let status = Operation::parse("service_status", &json!({"unit": "nginx.service"})).unwrap();
        let h = plan_hash("agt_1", &op);
        assert_eq!(h.len(), 64);
        assert_eq!(h, plan_hash("agt_1", &op.clone()));
        assert_ne!(h, plan_hash("agt_2", &op));
        assert_ne!(h, plan_hash("agt_1", &other));
        assert_ne!(h, plan_hash("agt_1", &status));
    }

    #[test]
    fn capabilities_gate_what_the_dashboard_offers() {
        let caps = Capabilities {
            kinds: vec![
                OpKind::RestartService,
                OpKind::ServiceStatus,
                OpKind::ReadFile,
            ],
            units: vec!["nginx.service".into()],
            ..Capabilities::default()
        };
        caps.check().unwrap();
        let ok = Operation::parse("restart_service", &json!({"unit": "nginx.service"})).unwrap();
        caps.allows(&ok).unwrap();
        let other = Operation::parse("restart_service", &json!({"unit": "sshd.service"})).unwrap();
        assert_eq!(caps.allows(&other).unwrap_err().field, "unit");
        let disk = Operation::parse("disk_usage", &json!({})).unwrap();
        assert_eq!(caps.allows(&disk).unwrap_err().field, "kind");
        let file = Operation::parse("read_file", &json!({"path": "/var/log/syslog"})).unwrap();
        assert!(caps
            .allows(&file)
            .unwrap_err()
            .message
            .contains("file access"));
        let plan = Operation::parse(
            "run_plan",
            &json!({"steps": [{"kind": "restart_service", "args": {"unit": "nginx.service"}}, {"kind": "restart_service", "args": {"unit": "x.service"}}]}),
        )
        .unwrap();
        assert_eq!(caps.allows(&plan).unwrap_err().field, "steps[1].unit");
        let bad = Capabilities {
            units: vec!["../x".into()],
            ..Capabilities::default()
        };
        assert_eq!(bad.check().unwrap_err().field, "units[0]");
    }

    #[test]
    fn secrets_go_with_the_backups_that_use_them() {
        let mut caps = Capabilities {
            kinds: vec![OpKind::RunBackup, OpKind::RunPlan, OpKind::DiskUsage],
            backup_profiles: vec!["nightly".into(), "weekly".into()],
            ..Capabilities::default()
        };
        caps.profile_secrets.insert(
            "nightly".into(),
            vec!["DB_PASSWORD".into(), "S3_KEY".into()],
        );
        caps.profile_secrets
            .insert("weekly".into(), vec!["S3_KEY".into()]);
        caps.check().unwrap();
        let nightly = Operation::parse("run_backup", &json!({"profile": "nightly"})).unwrap();
        assert_eq!(caps.secrets_for(&nightly), vec!["DB_PASSWORD", "S3_KEY"]);
        let plan = Operation::parse(
            "run_plan",
            &json!({"steps": [{"kind": "run_backup", "args": {"profile": "weekly"}}, {"kind": "disk_usage"}, {"kind": "run_backup", "args": {"profile": "nightly"}}]}),
        )
        .unwrap();
        assert_eq!(caps.secrets_for(&plan), vec!["DB_PASSWORD", "S3_KEY"]);
        let disk = Operation::parse("disk_usage", &json!({})).unwrap();
        assert!(caps.secrets_for(&disk).is_empty());

        // What an agent may declare.
        let mut bad = caps.clone();
        bad.profile_secrets
            .insert("hourly".into(), vec!["X".into()]);
        assert_eq!(bad.check().unwrap_err().field, "profile_secrets.hourly");
        for name in ["1PASSWORD", "DB-PASSWORD", "", "A B"] {
            let mut bad = caps.clone();
            bad.profile_secrets
                .insert("weekly".into(), vec![name.into()]);
            assert_eq!(
                bad.check().unwrap_err().field,
                "profile_secrets.weekly[0]",
                "{name}"
            );
        }
        let mut bad = caps.clone();
        bad.profile_secrets.insert(
            "weekly".into(),
            (0..=MAX_PROFILE_SECRETS).map(|i| format!("S{i}")).collect(),
        );
        assert!(bad.check().is_err());
        // An agent that declares none sends what it always sent.
        let plain = Capabilities::default();
        let wire = serde_json::to_string(&plain).unwrap();
        assert!(!wire.contains("profile_secrets"), "{wire}");
        assert_eq!(serde_json::from_str::<Capabilities>(&wire).unwrap(), plain);
    }

    #[test]
    fn a_payload_carries_secrets_beside_the_approved_arguments() {
        let args = br#"{"profile":"nightly"}"#;
        // None: the payload is the arguments, as before.
        assert_eq!(
            payload_with_secrets(args, Default::default()).unwrap(),
            args.to_vec()
        );
        let (back, secrets) = split_payload(args).unwrap();
        assert_eq!(back, args.to_vec());
        assert!(secrets.is_empty());

        let mut values = std::collections::BTreeMap::new();
        values.insert("DB_PASSWORD".to_string(), "hunter2-but-longer".to_string());
        let payload = payload_with_secrets(args, values.clone()).unwrap();
        let (back, secrets) = split_payload(&payload).unwrap();
        assert_eq!(secrets, values);
        // The arguments parse to the same operation, so the plan hash holds.
        assert_eq!(
            Operation::from_wire("run_backup", &back).unwrap(),
            Operation::from_wire("run_backup", args).unwrap()
        );

        // Malformed: refused, never half read.
        for bad in [
            json!({"args": {"profile": "nightly"}, "secrets": {"A": 1}}),
            json!({"args": {"profile": "nightly"}, "secrets": {"1A": "x"}}),
            json!({"args": {"profile": "nightly"}, "secrets": {}, "more": 1}),
            json!({"secrets": {"A": "x"}}),
        ] {
            assert!(split_payload(bad.to_string().as_bytes()).is_err(), "{bad}");
        }
    }
}
