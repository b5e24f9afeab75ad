//! The Audit page's reads: filtered, keyset-paginated lists of an
//! organisation's events (newest first, stable while new events arrive), and
//! one event with every field and its hashes.

use sqlx::Row;

use crate::access::{Authorized, ReadOrg};
use crate::audit::AuditAction;
use crate::audit_export::parse_time;
use crate::store::Backend;
use crate::{
    AgentId, AuditEventDetail, AuditEventView, AuditFilterText, AuditResults, ControlError,
    OperationId, Timestamp,
};

/// Events per page.
pub const PAGE: i64 = 50;
/// Longest free text searched.
pub const MAX_TEXT: usize = 200;

/// The actions of a group (see [`crate::AUDIT_GROUPS`]).
pub fn group_actions(group: &str) -> Option<Vec<&'static str>> {
    use AuditAction as A;
    let actions: &[AuditAction] = match group {
        "sign-in" => &[
            A::LoginSucceeded,
            A::LoginFailed,
            A::LoggedOut,
            A::OtherSessionsRevoked,
            A::MfaEnabled,
            A::MfaDisabled,
            A::MfaRequirementChanged,
            A::PasswordChanged,
            A::PasswordResetRequested,
            A::PasswordReset,
            A::SignInDisowned,
            A::IdentityLinked,
            A::IdentityUnlinked,
            A::JoinDomainAdded,
            A::JoinDomainRemoved,
            A::SsoRequirementChanged,
        ],
        "team" => &[
            A::SetupCompleted,
            A::OrgCreated,
            A::UserCreated,
            A::MemberAdded,
            A::InviteCreated,
            A::InviteRevoked,
            A::InviteAccepted,
            A::RoleChanged,
            A::MemberRemoved,
            A::AccessRefused,
        ],
        "servers" => &[
            A::RegistrationTokenCreated,
            A::RegistrationTokenRevoked,
            A::AgentRegistered,
            A::AgentRegistrationRefused,
            A::AgentRevoked,
            A::AgentCapabilitiesChanged,
            A::ServerProductionChanged,
            A::ServerFileAccessChanged,
            A::ServerDeletionScheduled,
            A::ServerRestored,
            A::ServerPurged,
            A::ServerLabelsChanged,
            A::SelfUpdateOffered,
            A::SelfUpdateApplied,
            A::SelfUpdateReverted,
            A::SelfUpdateRefused,
        ],
        "keys" => &[
            A::KeyRotationRequested,
            A::PqcActivationRequested,
            A::KeysRotated,
            A::KeysRegistered,
            A::PqcActivated,
            A::CertRenewed,
            A::SecretSet,
            A::SecretDeleted,
            A::SecretDelivered,
            A::MasterKeyRotated,
        ],
        "operations" => &[
            A::CommandQueued,
            A::CommandFinished,
            A::AgentCommandRefused,
            A::OperationProposed,
            A::OperationRefused,
            A::OperationCancelled,
            A::OperationHalted,
            A::OperationResumed,
            A::OperationFinished,
            A::OperationExpired,
            A::PolicyChanged,
        ],
        "approvals" => &[A::OperationApproved, A::OperationRejected],
        "audit" => &[
            A::AuditExported,
            A::ForwardingAdded,
            A::ForwardingRemoved,
            A::NotificationChannelAdded,
            A::NotificationChannelRemoved,
        ],
        _ => return None,
    };
    Some(actions.iter().map(|a| a.as_str()).collect())
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// `%` and `_` match themselves in a LIKE pattern (escaped with `\`).
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[derive(Clone)]
enum Bind {
    Int(i64),
    Text(String),
}

/// The searched fields joined as the PostgreSQL trigram index
/// `audit_events_text` (migration 0013) indexes them; a string found in one
/// field is found in this.
const TEXT_EXPR: &str = "(actor || chr(10) || action || chr(10) || target || chr(10) || details)";

/// Events older than an event's time by this much (ms) are taken to be
/// older in sequence too. Events written since migration 0013 never go back
/// in time; before it, an event could precede the one before it by the time
/// its writer waited for the organisation's lock, well under this.
const TIME_SLACK_MS: i64 = 60_000;

/// Free text is searched newest first in slices of sequence numbers, the
/// first this wide, each next one twice as wide up to [`TEXT_SLICE_MAX`] and
/// to what the rest of the page's budget scans at the last slice's pace.
const TEXT_SLICE: i64 = 4_096;
const TEXT_SLICE_MAX: i64 = 65_536;
/// The narrowest slice after the first, when little of the budget is left.
const TEXT_SLICE_MIN: i64 = 1_024;
/// How long one page searches free text by scanning, or reading SQLite's
/// text index, before it answers with what it found and where it stopped
/// ([`AuditResults::searched_to`]).
const TEXT_BUDGET: std::time::Duration = std::time::Duration::from_millis(30);

/// SQLite's text index keys an event by `org_id << TEXT_KEY_BITS | seq`
/// (migration 0024, whose trigger refuses a sequence number that does not fit).
const TEXT_KEY_BITS: i64 = 40;
/// Candidates read from SQLite's text index at first, then four times as
/// many per chunk up to [`INDEX_CHUNK_MAX`].
const INDEX_CHUNK: i64 = 256;
const INDEX_CHUNK_MAX: i64 = 16_384;

/// An FTS5 query for the events holding every trigram of `text` (each a
/// quoted string, `"` doubled), which every event containing `text` does.
/// `text` has at least three characters.
fn trigram_query(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut seen = std::collections::HashSet::new();
    let mut terms = Vec::new();
    for w in chars.windows(3) {
        let t: String = w.iter().collect();
        if seen.insert(t.clone()) {
            terms.push(format!("\"{}\"", t.replace('"', "\"\"")));
        }
    }
    terms.join(" AND ")
}

/// A parsed filter: SQL conditions (with `?` for their values) that apply to
/// any slice of the log, the action group, and bounds on sequence numbers.
pub(crate) struct Query {
    conds: Vec<(String, Vec<Bind>)>,
    actions: Option<Vec<&'static str>>,
    text: Option<String>,
    /// Only events with a sequence number below this (exclusive).
    upper: Option<i64>,
    /// Only events with a sequence number above this (exclusive).
    lower: i64,
    /// An actor, server or operation is asked for: the page walks that
    /// column's own index, which holds few events of the log.
    narrow: bool,
}

impl Query {
    pub(crate) fn parse(
        filter: &AuditFilterText,
    ) -> Result<(Self, Option<Timestamp>, Option<Timestamp>), ControlError> {
        let mut q = Query {
            conds: Vec::new(),
            actions: None,
            text: None,
            upper: None,
            lower: 0,
            narrow: false,
        };
        if let Some(before) = given(&filter.before) {
            let seq = before
                .parse::<i64>()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| {
                    ControlError::invalid(
                        "before: not a page of this log (a positive event number).",
                    )
                })?;
            q.upper = Some(seq);
        }
        if let Some(actor) = given(&filter.actor) {
            if actor.len() > 320 {
                return Err(ControlError::invalid("actor: at most 320 characters."));
            }
            q.conds
                .push(("actor = ?".into(), vec![Bind::Text(actor.to_string())]));
            q.narrow = true;
        }
        if let Some(group) = given(&filter.group) {
            q.actions =
                Some(group_actions(group).ok_or_else(|| {
                    ControlError::invalid("group: not an action group of this log.")
                })?);
        }
        if let Some(server) = given(&filter.server) {
            let agent = AgentId::parse(server)
                .ok_or_else(|| ControlError::invalid("server: not a server id."))?;
            q.conds.push((
                "target = ?".into(),
                vec![Bind::Text(format!("agent:{}", agent.0))],
            ));
            q.narrow = true;
        }
        if let Some(op) = given(&filter.operation) {
            let op = OperationId::parse(op)
                .ok_or_else(|| ControlError::invalid("operation: not an operation id."))?;
            q.conds.push((
                "target = ?".into(),
                vec![Bind::Text(format!("operation:{}", op.0))],
            ));
            q.narrow = true;
        }
        let mut times = [None, None];
        for (i, (value, name)) in [(&filter.since, "since"), (&filter.until, "until")]
            .into_iter()
            .enumerate()
        {
            if let Some(v) = given(value) {
                times[i] = Some(
                    parse_time(v).map_err(|e| ControlError::invalid(format!("{name}: {e}.")))?,
                );
            }
        }
        q.conds.extend(Query::times(times[0], times[1]).conds);
        if let Some(text) = given(&filter.text) {
            if text.chars().count() > MAX_TEXT {
                return Err(ControlError::invalid(format!(
                    "text: at most {MAX_TEXT} characters."
                )));
            }
            if text.contains('\0') {
                return Err(ControlError::invalid("text: contains a NUL character."));
            }
            q.text = Some(text.to_string());
        }
        Ok((q, times[0], times[1]))
    }

    /// Only events at or after `since` and before `until`.
    ///
    /// `at + 0`: a page walks the (org_id, seq) index between the bounds the
    /// time range gives (see `time_bounds`) and checks times on the way;
    /// PostgreSQL must not walk the (org_id, at) index instead and sort the
    /// whole range (it did when its statistics had not seen the newest
    /// times: 250 ms for an hour of 360,000 events).
    pub(crate) fn times(since: Option<Timestamp>, until: Option<Timestamp>) -> Self {
        let mut conds = Vec::new();
        if let Some(t) = since {
            conds.push(("at + 0 >= ?".into(), vec![Bind::Int(t.0)]));
        }
        if let Some(t) = until {
            conds.push(("at + 0 < ?".into(), vec![Bind::Int(t.0)]));
        }
        Query {
            conds,
            actions: None,
            text: None,
            upper: None,
            lower: 0,
            narrow: false,
        }
    }

    /// The newest events matching the query with `lower < seq < upper`
    /// (plus `extra`), at most `limit`, newest first.
    #[allow(clippy::too_many_arguments)]
    async fn fetch(
        &self,
        pool: &sqlx::AnyPool,
        backend: Backend,
        org: i64,
        lower: i64,
        upper: Option<i64>,
        extra: Option<(String, Bind)>,
        limit: i64,
    ) -> Result<Vec<AuditEventView>, ControlError> {
        let rows = self
            .rows(
                pool,
                backend,
                org,
                (lower, upper),
                extra,
                limit,
                COLUMNS,
                "DESC",
            )
            .await?;
        Ok(rows
            .iter()
            .map(view)
            .collect::<Result<Vec<_>, sqlx::Error>>()?)
    }

    /// SQLite: the newest events below `upper` matching the query, at most
    /// `need`, from the trigram index `audit_text` (migration 0024). Its
    /// candidates (events holding every trigram of `text`) are read newest
    /// first in growing chunks, each chunk's events checked against the
    /// whole query (the text itself included). Stops when `need` are found,
    /// when no candidate is left, or after a chunk that ends past `budget`
    /// (measured from `started`): then with the sequence number where it
    /// stopped, every matching event at or above it having been found.
    #[allow(clippy::too_many_arguments)]
    async fn search_sqlite_index(
        &self,
        pool: &sqlx::AnyPool,
        org: i64,
        text: &str,
        upper: i64,
        need: i64,
        started: std::time::Instant,
        budget: std::time::Duration,
    ) -> Result<(Vec<AuditEventView>, Option<i64>), ControlError> {
        let terms = trigram_query(text);
        let base = org << TEXT_KEY_BITS;
        let mut cursor = upper;
        let mut chunk = INDEX_CHUNK;
        let mut found = Vec::new();
        loop {
            let keys: Vec<i64> = sqlx::query_scalar(
                "SELECT rowid FROM audit_text WHERE audit_text MATCH $1 \
                 AND rowid > $2 AND rowid < $3 ORDER BY rowid DESC LIMIT $4",
            )
            .persistent(false)
            .bind(terms.as_str())
            .bind(base + self.lower)
            .bind(base + cursor)
            .bind(chunk)
            .fetch_all(pool)
            .await?;
            let seqs: Vec<i64> = keys.iter().map(|k| k - base).collect();
            if let Some(&oldest) = seqs.last() {
                let listed = (
                    "seq IN (SELECT value FROM json_each(?))".to_string(),
                    Bind::Text(serde_json::Value::from(seqs).to_string()),
                );
                let limit = need - found.len() as i64;
                found.extend(
                    self.fetch(
                        pool,
                        Backend::Sqlite,
                        org,
                        oldest - 1,
                        Some(cursor),
                        Some(listed),
                        limit,
                    )
                    .await?,
                );
                cursor = oldest;
            }
            if (keys.len() as i64) < chunk || found.len() as i64 >= need {
                return Ok((found, None));
            }
            if started.elapsed() >= budget {
                return Ok((found, Some(cursor)));
            }
            chunk = (chunk * 4).min(INDEX_CHUNK_MAX);
        }
    }

    /// The events matching the query with `lower < seq < upper` (plus
    /// `extra`), at most `limit`, in sequence order (`order` is "" or
    /// "DESC"). An action group is read as one index walk per action,
    /// merged, so no backend sorts the group.
    #[allow(clippy::too_many_arguments)]
    async fn rows(
        &self,
        pool: &sqlx::AnyPool,
        backend: Backend,
        org: i64,
        (lower, upper): (i64, Option<i64>),
        extra: Option<(String, Bind)>,
        limit: i64,
        columns: &str,
        order: &str,
    ) -> Result<Vec<sqlx::any::AnyRow>, ControlError> {
        let mut binds: Vec<Bind> = Vec::new();
        let mut common = String::new();
        number(
            &mut common,
            &mut binds,
            "org_id = ? AND seq > ?",
            &[Bind::Int(org), Bind::Int(lower)],
        );
        if let Some(u) = upper {
            number(&mut common, &mut binds, " AND seq < ?", &[Bind::Int(u)]);
        }
        let text = self.text.as_deref().map(|t| text_clause(backend, t));
        let conds = self
            .conds
            .iter()
            .chain(&text)
            .map(|(c, v)| (c, v.as_slice()));
        let extra = extra.iter().map(|(c, v)| (c, std::slice::from_ref(v)));
        for (clause, values) in conds.chain(extra) {
            common.push_str(" AND ");
            number(&mut common, &mut binds, clause, values);
        }
        let order = format!(" ORDER BY seq {order} LIMIT ");
        let sql = match &self.actions {
            None => {
                binds.push(Bind::Int(limit));
                format!(
                    "SELECT {columns} FROM audit_events WHERE {common}{order}${}",
                    binds.len()
                )
            }
            Some(actions) => {
                // Each branch repeats the common conditions with their values.
                let common_binds = binds.split_off(0);
                let mut branches = Vec::new();
                for (i, a) in actions.iter().enumerate() {
                    let mut branch = String::new();
                    number(&mut branch, &mut binds, &common, &common_binds);
                    number(
                        &mut branch,
                        &mut binds,
                        " AND action = ?",
                        &[Bind::Text((*a).to_string())],
                    );
                    binds.push(Bind::Int(limit));
                    branches.push(format!(
                        "SELECT * FROM (SELECT {columns} FROM audit_events WHERE {branch}{order}${}) AS a{i}",
                        binds.len()
                    ));
                }
                binds.push(Bind::Int(limit));
                format!(
                    "SELECT * FROM ({}) AS u{order}${}",
                    branches.join(" UNION ALL "),
                    binds.len()
                )
            }
        };
        // Not a named prepared statement: PostgreSQL plans each page for its
        // own values. A generic plan (what a cached statement gets after five
        // runs) cannot tell a one-hour time range or a rare text from the
        // whole log, and took 250 ms instead of 1 ms for an hour at
        // 1,000,000 events.
        let mut q = sqlx::query(&sql).persistent(false);
        for b in &binds {
            q = match b {
                Bind::Int(v) => q.bind(*v),
                Bind::Text(v) => q.bind(v.as_str()),
            };
        }
        Ok(q.fetch_all(pool).await?)
    }
}

/// Appends `clause` to `sql`, each `?` (or `$n` already numbered, for a
/// clause built by this function) replaced by the next bind's number, and
/// `values` to `binds`.
fn number(sql: &mut String, binds: &mut Vec<Bind>, clause: &str, values: &[Bind]) {
    let mut values = values.iter();
    let mut rest = clause;
    while let Some(i) = rest.find(['?', '$']) {
        sql.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        // A `$n` placeholder: skip its digits.
        let skip = if rest.as_bytes()[i] == b'$' {
            after.bytes().take_while(u8::is_ascii_digit).count()
        } else {
            0
        };
        if let Some(v) = values.next() {
            binds.push(v.clone());
            sql.push_str(&format!("${}", binds.len()));
        }
        rest = &after[skip..];
    }
    sql.push_str(rest);
}

const COLUMNS: &str = "seq, at, actor, ip, user_agent, action, target, details";

/// The free-text condition: `text` found, as it is (case-sensitive), in the
/// actor, action, target or details. On PostgreSQL a LIKE, which the
/// trigram index can answer; on SQLite `instr`, which scans faster than a
/// LIKE and matches case the same way.
fn text_clause(backend: Backend, text: &str) -> (String, Vec<Bind>) {
    let (one, value) = match backend {
        Backend::Postgres => ("{c} LIKE ? ESCAPE '\\'", like_pattern(text)),
        Backend::Sqlite => ("instr({c}, ?) > 0", text.to_string()),
    };
    let clause = ["actor", "action", "target", "details"]
        .map(|c| one.replace("{c}", c))
        .join(" OR ");
    (
        format!("({clause})"),
        (0..4).map(|_| Bind::Text(value.clone())).collect(),
    )
}

/// The sequence-number bounds a time range implies: every event at or after
/// `since` comes after the newest event more than [`TIME_SLACK_MS`] before
/// it, and every event before `until` comes before the oldest event more
/// than [`TIME_SLACK_MS`] after it. One probe of `audit_events_org_at` each.
async fn time_bounds(
    pool: &sqlx::AnyPool,
    org: i64,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
) -> Result<(Option<i64>, Option<i64>), ControlError> {
    let lower = match since {
        Some(t) => sqlx::query_scalar(
            "SELECT seq FROM audit_events WHERE org_id = $1 AND at < $2 ORDER BY at DESC, seq DESC LIMIT 1",
        )
        .bind(org)
        .bind(t.0.saturating_sub(TIME_SLACK_MS))
        .fetch_optional(pool)
        .await?,
        None => None,
    };
    let upper = match until {
        Some(t) => sqlx::query_scalar(
            "SELECT seq FROM audit_events WHERE org_id = $1 AND at >= $2 ORDER BY at, seq LIMIT 1",
        )
        .bind(org)
        .bind(t.0.saturating_add(TIME_SLACK_MS))
        .fetch_optional(pool)
        .await?,
        None => None,
    };
    Ok((lower, upper))
}

/// The events matching `q` (whose time range is `since`..`until`) after
/// sequence number `after`, at most `limit`, oldest first, with `columns`.
/// The time range is first turned into bounds on sequence numbers, as for
/// the pages.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn export_rows(
    store: &crate::store::Store,
    org: i64,
    q: &Query,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    after: i64,
    limit: i64,
    columns: &str,
) -> Result<Vec<sqlx::any::AnyRow>, ControlError> {
    let pool = store.pool();
    let (lower, upper) = time_bounds(pool, org, since, until).await?;
    let after = after.max(lower.unwrap_or(0));
    if upper.is_some_and(|u| u <= after + 1) {
        return Ok(Vec::new());
    }
    q.rows(
        pool,
        store.backend(),
        org,
        (after, upper),
        None,
        limit,
        columns,
        "",
    )
    .await
}

/// Whether this PostgreSQL database has the trigram index over the searched
/// fields (migration 0013 builds it where pg_trgm is available).
async fn has_text_index(pool: &sqlx::AnyPool) -> Result<bool, ControlError> {
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM pg_indexes WHERE tablename = 'audit_events' AND indexname = 'audit_events_text'",
    )
    .fetch_optional(pool)
    .await?;
    Ok(found.is_some())
}

/// The caller's organisation's events matching `filter`, newest first, a
/// page at a time. Each bad filter is refused naming it.
///
/// Every filter but free text is answered by walking one index backwards
/// from the page's start and stopping after a page (a time range is first
/// turned into bounds on sequence numbers). Free text is searched in slices
/// of sequence numbers, newest first: text that matches often fills the page
/// in the first slice. What the first slice did not find comes from the
/// trigram index: PostgreSQL's `audit_events_text` (where pg_trgm is
/// available) in one query; SQLite's `audit_text`, read in chunks for at most
/// [`TEXT_BUDGET`], unless an actor, server or operation is asked for. Text
/// shorter than three characters (no trigram), SQLite with those filters and
/// PostgreSQL without the index go on scanning slices for at most
/// [`TEXT_BUDGET`]. A page that stopped early says where
/// ([`AuditResults::searched_to`]) and continues from there.
pub async fn search(
    auth: &Authorized<'_, ReadOrg>,
    filter: &AuditFilterText,
) -> Result<AuditResults, ControlError> {
    search_within(auth, filter, TEXT_BUDGET).await
}

/// [`search`] with another time budget for scanning free text (tests use
/// none, to see a search continue over several pages).
pub async fn search_within(
    auth: &Authorized<'_, ReadOrg>,
    filter: &AuditFilterText,
    budget: std::time::Duration,
) -> Result<AuditResults, ControlError> {
    let org = auth.actor().org().0;
    let store = auth.store();
    let pool = store.pool();
    let backend = store.backend();
    let (mut q, since, until) = Query::parse(filter)?;
    let (time_lower, time_upper) = time_bounds(pool, org, since, until).await?;
    if let Some(l) = time_lower {
        q.lower = q.lower.max(l);
    }
    if let Some(u) = time_upper {
        q.upper = Some(q.upper.map_or(u, |b| b.min(u)));
    }
    let mut searched_to = None;
    let mut events = match q.text.clone() {
        None => {
            q.fetch(pool, backend, org, q.lower, q.upper, None, PAGE + 1)
                .await?
        }
        Some(text) => {
            let head: Option<i64> = sqlx::query_scalar(
                "SELECT seq FROM audit_events WHERE org_id = $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(org)
            .fetch_optional(pool)
            .await?;
            let mut upper = q.upper.unwrap_or(i64::MAX).min(head.unwrap_or(0) + 1);
            let indexed = text.chars().count() >= 3
                && match backend {
                    Backend::Postgres => has_text_index(pool).await?,
                    // Migration 0024 builds it on every SQLite database.
                    // With an actor, server or operation the slices walk
                    // that column's index, which is faster than checking
                    // every event that holds the text's trigrams: for one
                    // server and a common word at 1,000,000 events, the
                    // index ran out of a page's budget where the slices
                    // answered in 24 ms. PostgreSQL's planner makes this
                    // choice itself.
                    // Organisations whose key does not fit have no events
                    // (the trigger refuses them).
                    Backend::Sqlite => !q.narrow && org < 1 << (63 - TEXT_KEY_BITS),
                };
            let started = std::time::Instant::now();
            let mut slice = TEXT_SLICE;
            let mut found = Vec::new();
            while upper - 1 > q.lower && found.len() as i64 <= PAGE {
                let need = PAGE + 1 - found.len() as i64;
                if indexed && slice > TEXT_SLICE {
                    // The first slice did not fill the page: the rest comes
                    // from the trigram index.
                    match backend {
                        Backend::Postgres => {
                            let clause = (
                                format!("{TEXT_EXPR} LIKE ? ESCAPE '\\'"),
                                Bind::Text(like_pattern(&text)),
                            );
                            found.extend(
                                q.fetch(
                                    pool,
                                    backend,
                                    org,
                                    q.lower,
                                    Some(upper),
                                    Some(clause),
                                    need,
                                )
                                .await?,
                            );
                        }
                        Backend::Sqlite => {
                            let (more, stopped) = q
                                .search_sqlite_index(pool, org, &text, upper, need, started, budget)
                                .await?;
                            found.extend(more);
                            searched_to = stopped;
                        }
                    }
                    break;
                }
                let lower = q.lower.max(upper - 1 - slice);
                let slice_started = std::time::Instant::now();
                found.extend(
                    q.fetch(pool, backend, org, lower, Some(upper), None, need)
                        .await?,
                );
                // The next slice is twice as wide (with the trigram index, the
                // index answers next), but no wider than the rest of the
                // budget scans at this slice's pace, so a page does not
                // overrun its budget by a whole slice.
                let scanned = (upper - 1 - lower).max(1) as f64;
                let pace = slice_started.elapsed().as_secs_f64().max(1e-6) / scanned;
                let left = budget.saturating_sub(started.elapsed()).as_secs_f64();
                upper = lower + 1;
                slice = (slice * 2).min(TEXT_SLICE_MAX);
                if !indexed {
                    slice = slice.min(((left / pace) as i64).max(TEXT_SLICE_MIN));
                }
                if (found.len() as i64) <= PAGE
                    && upper - 1 > q.lower
                    && started.elapsed() >= budget
                    && !indexed
                {
                    searched_to = Some(upper);
                    break;
                }
            }
            found
        }
    };
    let next = if events.len() as i64 > PAGE {
        events.truncate(PAGE as usize);
        searched_to = None;
        events.last().map(|e| e.seq)
    } else {
        searched_to
    };
    Ok(AuditResults {
        events,
        next,
        searched_to,
    })
}

/// An event row as the pages show it.
pub(crate) fn view(r: &sqlx::any::AnyRow) -> Result<AuditEventView, sqlx::Error> {
    Ok(AuditEventView {
        seq: r.try_get("seq")?,
        at: Timestamp(r.try_get("at")?),
        actor: r.try_get("actor")?,
        ip: r.try_get("ip")?,
        user_agent: r.try_get("user_agent")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        details: r.try_get("details")?,
    })
}

/// One event of the caller's organisation, with its hashes.
pub async fn event(
    auth: &Authorized<'_, ReadOrg>,
    seq: i64,
) -> Result<AuditEventDetail, ControlError> {
    let r = sqlx::query(
        "SELECT seq, at, actor_user_id, actor, ip, user_agent, action, target, details, prev_hash, hash \
         FROM audit_events WHERE org_id = $1 AND seq = $2",
    )
    .bind(auth.actor().org().0)
    .bind(seq)
    .fetch_optional(auth.store().pool())
    .await?
    .ok_or_else(|| ControlError::not_found("No such event in this organisation's log."))?;
    Ok(AuditEventDetail {
        event: view(&r)?,
        actor_user_id: r.try_get("actor_user_id")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// When the caller's organisation's oldest event was recorded.
pub async fn oldest(auth: &Authorized<'_, ReadOrg>) -> Result<Option<Timestamp>, ControlError> {
    let at: Option<i64> =
        sqlx::query_scalar("SELECT at FROM audit_events WHERE org_id = $1 ORDER BY seq LIMIT 1")
            .bind(auth.actor().org().0)
            .fetch_optional(auth.store().pool())
            .await?;
    Ok(at.map(Timestamp))
}
