//! Plain types shared by the server and the wasm front end: ids, roles, time
//! stamps and the view structs the UI renders. Nothing here can touch the
//! database or carry a secret.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.trim().parse().map(Self)
            }
        }
    };
}

id_type!(
    /// An organisation (tenant). Every resource belongs to exactly one.
    OrgId
);
id_type!(
    /// A person who can sign in.
    UserId
);
id_type!(
    /// A pending invitation to join an organisation.
    InviteId
);

/// Milliseconds since the Unix epoch, UTC. Stored as a 64-bit integer on both
/// database backends so that comparisons and hashing never depend on a
/// dialect's time type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn plus_secs(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs.saturating_mul(1000)))
    }

    /// `YYYY-MM-DD HH:MM UTC` (`out of range` past the years -9999..=9999).
    pub fn display_utc(self) -> String {
        match time::OffsetDateTime::from_unix_timestamp(self.0.div_euclid(1000)) {
            Ok(t) => format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            ),
            Err(_) => "out of range".to_string(),
        }
    }
}

impl Timestamp {
    /// Milliseconds now, on the server or in the browser; used only for
    /// drawing (chart edges), never for a security decision.
    pub fn now_browser_or_server() -> i64 {
        #[cfg(target_arch = "wasm32")]
        {
            js_sys::Date::now() as i64
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or_default()
        }
    }
}

#[cfg(feature = "server")]
impl Timestamp {
    pub fn now() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A member's role inside one organisation, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Member, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::Owner => "Owner",
            Role::Admin => "Admin",
            Role::Member => "Member",
            Role::Viewer => "Viewer",
        }
    }

    /// Higher is stronger.
    pub fn rank(self) -> u8 {
        match self {
            Role::Owner => 3,
            Role::Admin => 2,
            Role::Member => 1,
            Role::Viewer => 0,
        }
    }

    /// Owners and Admins manage members, invitations and destructive actions.
    pub fn manages_members(self) -> bool {
        self.rank() >= Role::Admin.rank()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: expected owner, admin, member or viewer")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            "viewer" => Ok(Role::Viewer),
            _ => Err(UnknownRole(s.chars().take(32).collect())),
        }
    }
}

/// An organisation as seen by one of its members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgView {
    pub id: OrgId,
    pub name: String,
    pub role: Role,
}

/// The signed-in person and the organisation they are working in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    pub user_id: UserId,
    pub email: String,
    pub org: OrgView,
    pub orgs: Vec<OrgView>,
    /// The organisation requires two-factor sign-in of this person, who has
    /// not set it up: everything else is refused until they do.
    pub mfa_due: bool,
    /// The organisation requires SSO and this session signed in with a
    /// password: everything is refused until they sign in through it.
    pub sso_due: bool,
    /// Sign-ins from new devices or networks not yet acknowledged.
    pub unread_notices: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
    pub joined_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteView {
    pub id: InviteId,
    pub email: String,
    pub role: Role,
    pub invited_by: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// An invitation as shown to the person who holds its link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitePreview {
    pub org_name: String,
    pub email: String,
    pub role: Role,
    pub expires_at: Timestamp,
    /// Whether an account with the invited email already exists.
    pub account_exists: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamView {
    pub members: Vec<MemberView>,
    pub invites: Vec<InviteView>,
    /// Whether the viewer may manage members (Owner or Admin).
    pub can_manage: bool,
    /// Whether the viewer may create or change Owners.
    pub can_manage_owners: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// Opaque handle (a prefix of the stored hash), never the session id.
    pub handle: String,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    pub ip: String,
    pub user_agent: String,
    pub current: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEventView {
    pub seq: i64,
    pub at: Timestamp,
    pub actor: String,
    pub ip: String,
    pub user_agent: String,
    pub action: String,
    pub target: String,
    pub details: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    pub events_checked: i64,
    /// The hash of the last event checked: recorded elsewhere, it lets a
    /// customer notice a rewritten or truncated history later.
    pub head_hash: Option<String>,
    /// The first sequence number whose row does not match the chain, if any.
    pub first_broken_seq: Option<i64>,
}

impl ChainReport {
    pub fn intact(&self) -> bool {
        self.first_broken_seq.is_none()
    }
}

/// An enrolled agent (one per managed server). Random, never reused.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(pub String);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AgentId {
    /// Agent ids are `agt_` and 24 lower-case hex digits.
    pub fn parse(s: &str) -> Option<AgentId> {
        let hex = s.strip_prefix("agt_")?;
        (hex.len() == 24
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| AgentId(s.to_string()))
    }
}

pub use channel::PqcState;

/// A server as the Servers pages show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub id: AgentId,
    pub hostname: String,
    pub agent_version: String,
    pub online: bool,
    pub revoked: bool,
    pub last_seen_at: Option<Timestamp>,
    pub pqc: PqcState,
    pub keys_registered_at: Timestamp,
    pub cert_serial: String,
    pub cert_fingerprint: String,
    pub cert_not_after: Timestamp,
    pub kem_key_id: Option<String>,
    pub tls_group: String,
    /// Production Protection: the AI Pilot's operations never run here.
    pub production: bool,
    /// AI File Access (`read_file`) is on for this server.
    pub file_access: bool,
    /// What the agent declared it can run; `None` before it declared anything.
    pub capabilities: Option<crate::Capabilities>,
    /// The watched units' states from the latest heartbeat.
    pub units: crate::UnitStates,
    /// The fullest disk's usage while above 90 %.
    pub disk_high_pct: Option<f64>,
    /// Scheduled for deletion at this time (read-only until then, restorable).
    pub delete_after: Option<Timestamp>,
    /// `key=value` labels an Owner or Admin set, for selecting servers.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The latest sample, if any.
    pub cpu_pct: Option<f64>,
    pub mem_used: Option<i64>,
    pub mem_total: Option<i64>,
    /// What the agent last said about itself; `None` before its first report.
    pub health: Option<AgentHealthView>,
}

/// An agent's last health report, on the control plane's clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHealthView {
    /// When the report arrived.
    pub reported_at: Timestamp,
    /// When the agent process started.
    pub started_at: Timestamp,
    /// The agent's clock minus this one's, in milliseconds, as of the report.
    pub clock_skew_ms: i64,
    /// The last warning or error the agent logged since it started.
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
}

impl AgentHealthView {
    /// The agent's clock is further off than signed commands allow
    /// ([`channel::MAX_CLOCK_SKEW_MS`]): commands may be refused.
    pub fn clock_off(&self) -> bool {
        self.clock_skew_ms.unsigned_abs() > channel::MAX_CLOCK_SKEW_MS.unsigned_abs()
    }

    /// How long the agent had been up at its last report ("3 h 12 min").
    pub fn uptime_text(&self) -> String {
        let secs = (self.reported_at.0 - self.started_at.0).max(0) / 1000;
        match secs {
            s if s < 120 => format!("{s} s"),
            s if s < 2 * 3600 => format!("{} min", s / 60),
            s if s < 2 * 86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
            s => format!("{} days {} h", s / 86_400, s % 86_400 / 3600),
        }
    }

    /// "in sync", or how far and which way the agent's clock is off, in words.
    pub fn clock_text(&self) -> String {
        let secs = self.clock_skew_ms.unsigned_abs() as f64 / 1000.0;
        let way = if self.clock_skew_ms >= 0 {
            "ahead"
        } else {
            "behind"
        };
        if self.clock_off() {
            format!("{secs:.0} s {way}: signed commands may be refused")
        } else {
            format!("in sync ({secs:.1} s {way})")
        }
    }
}

/// The dashboard's Servers card.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetSummary {
    pub online: i64,
    pub offline: i64,
    /// Servers added with a registration token whose agent has not enrolled
    /// yet ("Agent not installed").
    pub awaiting_agent: i64,
}

/// One point of a server's metrics chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub at: Timestamp,
    pub cpu_pct: f64,
    pub mem_used: i64,
    pub mem_total: i64,
    pub disk_used: i64,
    pub disk_total: i64,
    pub net_rx_bps: f64,
    pub net_tx_bps: f64,
    pub load1: f64,
}

/// Where a registration token is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenState {
    Active,
    Used,
    Expired,
    Revoked,
}

impl TokenState {
    pub fn label(self) -> &'static str {
        match self {
            TokenState::Active => "Active",
            TokenState::Used => "Used",
            TokenState::Expired => "Expired",
            TokenState::Revoked => "Revoked",
        }
    }
}

/// A registration token as the Servers page and the CLI list it (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationTokenView {
    pub id: i64,
    pub created_by: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub state: TokenState,
    /// The agent that enrolled with it.
    pub agent: Option<AgentId>,
    /// Refused enrolment attempts after it stopped being usable.
    pub refusals: i64,
}

/// A command queued for one agent: `cmd_` and 24 lower-case hex digits.
/// Random, never reused.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandId(pub String);

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl CommandId {
    pub fn parse(s: &str) -> Option<CommandId> {
        let hex = s.strip_prefix("cmd_")?;
        (hex.len() == 24
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| CommandId(s.to_string()))
    }
}

/// What a command asks an agent to do. The wire names are the channel's
/// `kinds` (a test in `control` keeps them equal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// A round trip: the agent answers "pong".
    Ping,
    /// New identity, KEM and TLS keys.
    RotateKeys,
    /// Register an X-Wing key (for an agent in classical fallback).
    RegisterPqcKey,
    /// Switch to a signed agent release (`channel::api::UpdateAgentArgs`).
    UpdateAgent,
    /// A catalogued operation that people approved.
    Operation(channel::ops::OpKind),
}

impl CommandKind {
    /// The control plane's own kinds (operations are [`CommandKind::Operation`]).
    pub const SYSTEM: [CommandKind; 4] = [
        CommandKind::Ping,
        CommandKind::RotateKeys,
        CommandKind::RegisterPqcKey,
        CommandKind::UpdateAgent,
    ];

    /// The name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Ping => "ping",
            CommandKind::RotateKeys => "rotate_keys",
            CommandKind::RegisterPqcKey => "register_pqc_key",
            CommandKind::UpdateAgent => "update_agent",
            CommandKind::Operation(kind) => kind.as_str(),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CommandKind::Ping => "Ping",
            CommandKind::RotateKeys => "Rotate keys",
            CommandKind::RegisterPqcKey => "Activate post-quantum encryption",
            CommandKind::UpdateAgent => "Update agent",
            CommandKind::Operation(kind) => kind.label(),
        }
    }

    /// Whether the command is one round of the agent's key registration.
    pub fn is_key_round(self) -> bool {
        matches!(self, CommandKind::RotateKeys | CommandKind::RegisterPqcKey)
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CommandKind {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CommandKind::SYSTEM
            .into_iter()
            .find(|k| k.as_str() == s)
            .or_else(|| s.parse().ok().map(CommandKind::Operation))
            .ok_or_else(|| UnknownValue::new("command kind", s))
    }
}

/// Where a command is in its life:
/// queued -> delivered -> succeeded | failed, or expired | cancelled on the way.
/// A delivered command whose result has not arrived by its deadline is expired;
/// a result that arrives later still records the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    Queued,
    Delivered,
    Succeeded,
    Failed,
    Expired,
    Cancelled,
}

impl CommandState {
    pub const ALL: [CommandState; 6] = [
        CommandState::Queued,
        CommandState::Delivered,
        CommandState::Succeeded,
        CommandState::Failed,
        CommandState::Expired,
        CommandState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Queued => "queued",
            CommandState::Delivered => "delivered",
            CommandState::Succeeded => "succeeded",
            CommandState::Failed => "failed",
            CommandState::Expired => "expired",
            CommandState::Cancelled => "cancelled",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CommandState::Queued => "Queued",
            CommandState::Delivered => "Delivered",
            CommandState::Succeeded => "Succeeded",
            CommandState::Failed => "Failed",
            CommandState::Expired => "Expired",
            CommandState::Cancelled => "Cancelled",
        }
    }

    /// Still waiting for the agent (queued or delivered, no result yet).
    pub fn is_open(self) -> bool {
        matches!(self, CommandState::Queued | CommandState::Delivered)
    }
}

impl fmt::Display for CommandState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CommandState {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CommandState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownValue::new("command state", s))
    }
}

/// A stored or submitted name that is not one of an enum's values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

impl UnknownValue {
    pub(crate) fn new(what: &'static str, value: &str) -> Self {
        Self {
            what,
            value: value.chars().take(32).collect(),
        }
    }
}

/// A command as the server page lists it (never its arguments or output).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandView {
    pub id: CommandId,
    pub kind: CommandKind,
    /// The state as of the view: an open command past its deadline shows
    /// as expired even before the queue records it.
    pub state: CommandState,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// The state of one command and, once finished, the agent's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcome {
    pub state: CommandState,
    pub result: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_render_in_utc() {
        assert_eq!(Timestamp(0).display_utc(), "1970-01-01 00:00 UTC");
        assert_eq!(
            Timestamp(1_795_305_600_000).display_utc(),
            "2026-11-22 00:00 UTC"
        );
        assert_eq!(
            Timestamp(951_782_400_000).display_utc(),
            "2000-02-29 00:00 UTC"
        );
    }

    #[test]
    fn command_names_round_trip() {
        let ops = channel::ops::OpKind::ALL.map(CommandKind::Operation);
        for k in CommandKind::SYSTEM.into_iter().chain(ops) {
            assert_eq!(k.as_str().parse::<CommandKind>(), Ok(k));
        }
        for s in CommandState::ALL {
            assert_eq!(s.as_str().parse::<CommandState>(), Ok(s));
        }
        assert!("reboot".parse::<CommandKind>().is_err());
        assert!(CommandId::parse("cmd_0123456789abcdef01234567").is_some());
        assert!(CommandId::parse("cmd_0123456789ABCDEF01234567").is_none());
        assert!(CommandId::parse("cmd_1").is_none());
    }

    #[test]
    fn roles_parse_and_rank() {
        assert_eq!("Admin".parse::<Role>(), Ok(Role::Admin));
        assert!("root".parse::<Role>().is_err());
        assert!(Role::Owner.manages_members() && Role::Admin.manages_members());
        assert!(!Role::Member.manages_members() && !Role::Viewer.manages_members());
    }
}

/// The Audit page's filters as the URL carries them: every field optional,
/// unparsed (the control plane checks them and names the bad one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilterText {
    pub actor: Option<String>,
    /// An action group: `sign-in`, `team`, `servers`, `keys`, `operations`,
    /// `approvals`, `audit`.
    pub group: Option<String>,
    /// A server (agent id).
    pub server: Option<String>,
    /// An operation id.
    pub operation: Option<String>,
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM[:SS]Z`, UTC.
    pub since: Option<String>,
    pub until: Option<String>,
    /// Free text over the actor, action, target and details.
    pub text: Option<String>,
    /// The page cursor: events before this sequence number.
    pub before: Option<String>,
}

/// The action groups the Audit page filters by, with their labels.
pub const AUDIT_GROUPS: [(&str, &str); 7] = [
    ("sign-in", "Sign-in"),
    ("team", "Team"),
    ("servers", "Servers"),
    ("keys", "Keys"),
    ("operations", "Operations"),
    ("approvals", "Approvals"),
    ("audit", "Audit log"),
];

/// A page of audit events, newest first, and the cursor of the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditResults {
    pub events: Vec<AuditEventView>,
    /// `before` for the next (older) page, when there is one.
    pub next: Option<i64>,
    /// Set when a free-text search stopped before reading the whole log to
    /// answer in time: events from this sequence number down were not
    /// searched yet (the next page, `before` = this, goes on from here).
    pub searched_to: Option<i64>,
}

/// One audit event with everything it records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEventDetail {
    pub event: AuditEventView,
    pub actor_user_id: Option<i64>,
    pub prev_hash: String,
    pub hash: String,
}

/// The signed-in person's two-factor sign-in, for their account page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaView {
    pub enabled: bool,
    /// Unused recovery codes (0 while two-factor is off).
    pub recovery_codes_left: i64,
    /// The organisation requires it of its Owners and Admins.
    pub org_requires: bool,
    /// ... and that includes this person's role.
    pub required: bool,
    /// This person may change the requirement (an Owner).
    pub can_require: bool,
}

/// A sign-in from a device or network new for the account, as its owner
/// sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInNotice {
    pub id: String,
    pub at: Timestamp,
    pub ip: String,
    pub user_agent: String,
    /// `password` or `password+totp` / `password+recovery_code`.
    pub method: String,
    /// "a new device", "a new network", or both.
    pub what: String,
    /// Acknowledged ("this was me"), or reported.
    pub read: bool,
    /// Reported as "this wasn't me".
    pub disowned: bool,
}

/// A new authenticator seed, shown to its owner once while they set it up:
/// the QR code their app scans (an SVG document drawn by the server) and the
/// same seed as text for typing in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpSetup {
    pub qr_svg: String,
    pub secret: String,
}

/// A secret as everyone in the organisation may see it: everything but its
/// value, which no page or API ever returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretView {
    pub id: String,
    /// `org` (every server) or `agent:<id>` (one server).
    pub scope: String,
    /// `env`, `api_key` or `credential`.
    pub kind: String,
    pub name: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    /// An SSH key's public half (OpenSSH format); `None` for other kinds.
    pub public_key: Option<String>,
}

/// A notification channel and how its delivery stands (never its secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotificationChannelView {
    pub id: String,
    /// `email`, `slack` or `webhook`.
    pub kind: String,
    pub name: String,
    /// The email address, the webhook's URL, or a Slack URL's host only.
    pub address: String,
    /// Whether it trusts a CA of its own rather than the public web roots.
    pub own_ca: bool,
    /// Announced events it has not been told yet.
    pub pending: i64,
    /// Failed attempts since the last success.
    pub failures: i64,
    /// When the next attempt is, while failing.
    pub retry_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_success_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// An audit forwarding destination and how its delivery stands (never its
/// secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DestinationView {
    pub id: String,
    /// `syslog` or `webhook`.
    pub kind: String,
    pub name: String,
    /// `host:port` or the webhook's URL.
    pub address: String,
    /// Whether it trusts a CA of its own rather than the public web roots.
    pub own_ca: bool,
    /// The last event the receiver has taken.
    pub delivered_seq: i64,
    /// The organisation's last event.
    pub head_seq: i64,
    /// When the oldest event it is still owed happened.
    pub owed_since: Option<Timestamp>,
    /// Failed attempts since the last success.
    pub failures: i64,
    /// When the next attempt is, while failing.
    pub retry_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_success_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl DestinationView {
    /// Events the receiver has yet to take.
    pub fn behind(&self) -> i64 {
        (self.head_seq - self.delivered_seq).max(0)
    }
}

/// The identity providers an installation can offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SsoProvider {
    /// The configured OpenID Connect provider (Google by default).
    Oidc,
    GitHub,
}

impl SsoProvider {
    /// The stored name, also the sign-in method the audit log records.
    pub fn as_str(self) -> &'static str {
        match self {
            SsoProvider::Oidc => "oidc",
            SsoProvider::GitHub => "github",
        }
    }

    pub fn parse(raw: &str) -> Option<SsoProvider> {
        match raw {
            "oidc" => Some(SsoProvider::Oidc),
            "github" => Some(SsoProvider::GitHub),
            _ => None,
        }
    }
}

/// A provider identity linked to the signed-in account, as Settings lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedIdentity {
    pub provider: SsoProvider,
    pub email: String,
    pub linked_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

/// An email domain whose people join the organisation at their first SSO
/// sign-in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinDomain {
    pub domain: String,
    pub role: Role,
    pub added_at: Timestamp,
}
