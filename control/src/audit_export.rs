//! Exporting the audit log, and verifying an export offline.
//!
//! An export is JSON Lines, one [`ExportedEvent`] per line in sequence
//! order, carrying every field the chain hash covers (`details` as the exact
//! stored JSON text) with `prev_hash` and `hash`; or CSV with the same
//! columns, for spreadsheets. Exports are read from the database in pages and
//! written as they are read, never held whole in memory.
//!
//! [`verify_export`] needs neither the database nor the server: it recomputes
//! each line's hash from its fields, checks that each line links to the one
//! before and that sequence numbers have no gaps, and checks signed
//! checkpoints (`channel::Checkpoint`, signed by the audit key) against the
//! events they name. It reports the first event that breaks, a tail missing
//! against a later checkpoint, or a checkpoint whose signature or hash does
//! not match.

use std::borrow::Cow;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::audit::GENESIS;
use crate::store::Store;
use crate::{ControlError, OrgId, Timestamp};

/// One event as an export line carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedEvent<'a> {
    pub org: i64,
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub actor_user_id: Option<i64>,
    #[serde(borrow)]
    pub actor: Cow<'a, str>,
    #[serde(borrow)]
    pub ip: Cow<'a, str>,
    #[serde(borrow)]
    pub user_agent: Cow<'a, str>,
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    #[serde(borrow)]
    pub target: Cow<'a, str>,
    /// The event's details as stored: JSON text.
    #[serde(borrow)]
    pub details: Cow<'a, str>,
    #[serde(borrow)]
    pub prev_hash: Cow<'a, str>,
    #[serde(borrow)]
    pub hash: Cow<'a, str>,
}

/// The chain hash of an event: hex SHA-256 of `prev_hash`, a newline, and
/// the JSON array `[org, seq, at, actor_user_id, actor, ip, user_agent,
/// action, target, details]` (compact, as `serde_json` writes it). The one
/// definition the database's chain ([`crate::audit`]) and the offline
/// verifier share.
#[allow(clippy::too_many_arguments)]
pub fn chain_hash(
    prev_hash: &str,
    org: i64,
    seq: i64,
    at: i64,
    actor_user_id: Option<i64>,
    actor: &str,
    ip: &str,
    user_agent: &str,
    action: &str,
    target: &str,
    details: &str,
) -> String {
    let mut content = Vec::with_capacity(256);
    chain_content(
        &mut content,
        (
            org,
            seq,
            at,
            actor_user_id,
            actor,
            ip,
            user_agent,
            action,
            target,
            details,
        ),
    );
    let mut h = sha2::Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(&content);
    hex::encode(h.finalize())
}

type Content<'a> = (
    i64,
    i64,
    i64,
    Option<i64>,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
);

fn chain_content(out: &mut Vec<u8>, fields: Content<'_>) {
    // Writing a tuple of numbers and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &fields);
}

impl ExportedEvent<'_> {
    /// The hash this event's fields give after `prev_hash`.
    pub fn computed_hash(&self, prev_hash: &str) -> String {
        chain_hash(
            prev_hash,
            self.org,
            self.seq,
            self.at,
            self.actor_user_id,
            &self.actor,
            &self.ip,
            &self.user_agent,
            &self.action,
            &self.target,
            &self.details,
        )
    }
}

/// The export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    JsonLines,
    Csv,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JsonLines => "jsonl",
            Self::Csv => "csv",
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "jsonl" => Ok(Self::JsonLines),
            "csv" => Ok(Self::Csv),
            other => Err(format!(
                "`{other}` is not an export format: use jsonl or csv"
            )),
        }
    }
}

/// The CSV header: the export line's fields, in order.
pub const CSV_HEADER: &str =
    "org,seq,at,actor_user_id,actor,ip,user_agent,action,target,details,prev_hash,hash";

/// A CSV field: quoted when it holds a comma, quote, CR or LF (RFC 4180);
/// a field a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab or
/// CR first) gets a leading `'` inside the quotes, so opening an export never
/// runs what an actor typed.
fn csv_field(out: &mut Vec<u8>, value: &str) {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || value.contains([',', '"', '\r', '\n']);
    if !quote {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    out.push(b'"');
    if formula {
        out.push(b'\'');
    }
    for b in value.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Writes one event in `format`, with its line end.
pub fn write_event(
    out: &mut Vec<u8>,
    e: &ExportedEvent<'_>,
    format: ExportFormat,
) -> Result<(), ControlError> {
    match format {
        ExportFormat::JsonLines => {
            serde_json::to_writer(&mut *out, e).map_err(ControlError::internal)?;
        }
        ExportFormat::Csv => {
            let user = e.actor_user_id.map(|u| u.to_string()).unwrap_or_default();
            let fields: [&str; 12] = [
                &e.org.to_string(),
                &e.seq.to_string(),
                &e.at.to_string(),
                &user,
                &e.actor,
                &e.ip,
                &e.user_agent,
                &e.action,
                &e.target,
                &e.details,
                &e.prev_hash,
                &e.hash,
            ];
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                csv_field(out, f);
            }
        }
    }
    out.push(b'\n');
    Ok(())
}

/// A time range of events (the CLI's `--since` and `--until`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ExportRange {
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
    /// Only events before this time.
    pub until: Option<Timestamp>,
}

/// Which events an export holds: every event, a time range, or the Audit
/// page's filter (all of it but the page cursor).
pub struct ExportFilter {
    query: crate::audit_search::Query,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    /// The filter as given, recorded with the export.
    given: serde_json::Map<String, serde_json::Value>,
}

impl ExportFilter {
    /// The Audit page's filter; each bad field is refused naming it, as
    /// the page refuses it. The page cursor (`before`) is not part of it.
    pub fn parse(filter: &crate::AuditFilterText) -> Result<Self, ControlError> {
        let filter = crate::AuditFilterText {
            before: None,
            ..filter.clone()
        };
        let (query, since, until) = crate::audit_search::Query::parse(&filter)?;
        let mut out = ExportFilter::from(ExportRange { since, until });
        out.query = query;
        for (k, v) in [
            ("actor", &filter.actor),
            ("group", &filter.group),
            ("server", &filter.server),
            ("operation", &filter.operation),
            ("text", &filter.text),
        ] {
            if let Some(v) = v.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                out.given.insert(k.into(), v.into());
            }
        }
        Ok(out)
    }
}

impl From<ExportRange> for ExportFilter {
    fn from(range: ExportRange) -> Self {
        let mut given = serde_json::Map::new();
        given.insert("since".into(), range.since.map(|t| t.0).into());
        given.insert("until".into(), range.until.map(|t| t.0).into());
        ExportFilter {
            query: crate::audit_search::Query::times(range.since, range.until),
            since: range.since,
            until: range.until,
            given,
        }
    }
}

/// Parses `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM[:SS]Z` (UTC).
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    let s = s.trim();
    if s.len() > 32 {
        return Err(
            "the value is not a date like 2026-12-01 or 2026-12-01T14:30Z (too long)".into(),
        );
    }
    let bad = || format!("`{s}` is not a date like 2026-12-01 or 2026-12-01T14:30Z");
    let (date, clock) = match s.split_once('T') {
        Some((d, c)) => (d, Some(c.strip_suffix('Z').ok_or_else(bad)?)),
        None => (s, None),
    };
    let num = |p: &str| p.parse::<i32>().map_err(|_| bad());
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts[..] else {
        return Err(bad());
    };
    let month =
        time::Month::try_from(u8::try_from(num(m)?).map_err(|_| bad())?).map_err(|_| bad())?;
    let date =
        time::Date::from_calendar_date(num(y)?, month, u8::try_from(num(d)?).map_err(|_| bad())?)
            .map_err(|_| bad())?;
    let (h, min, sec) = match clock {
        None => (0, 0, 0),
        Some(c) => {
            let parts: Vec<&str> = c.split(':').collect();
            match parts[..] {
                [h, m] => (num(h)?, num(m)?, 0),
                [h, m, s] => (num(h)?, num(m)?, num(s)?),
                _ => return Err(bad()),
            }
        }
    };
    let small = |v: i32| u8::try_from(v).map_err(|_| bad());
    let t = time::Time::from_hms(small(h)?, small(min)?, small(sec)?).map_err(|_| bad())?;
    let at = time::PrimitiveDateTime::new(date, t).assume_utc();
    Ok(Timestamp(
        i64::try_from(at.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad())?,
    ))
}

/// Rows read per page while exporting.
const EXPORT_PAGE: i64 = 2000;

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    at: i64,
    actor_user_id: Option<i64>,
    actor: String,
    ip: String,
    user_agent: String,
    action: String,
    target: String,
    details: String,
    prev_hash: String,
    hash: String,
}

/// Streams an organisation's events that `filter` selects to `out` in
/// sequence order, a page at a time ([`export_page`]). Returns how many.
pub async fn export(
    store: &Store,
    org: OrgId,
    filter: &ExportFilter,
    format: ExportFormat,
    out: &mut (dyn Write + Send),
) -> Result<u64, ControlError> {
    let io = |e: std::io::Error| ControlError::Internal(Box::new(e));
    out.write_all(&export_header(format)).map_err(io)?;
    let mut after = 0i64;
    let mut written = 0u64;
    while let Some(page) = export_page(store, org, filter, format, after).await? {
        out.write_all(&page.bytes).map_err(io)?;
        written += page.events;
        after = page.last_seq;
    }
    out.flush().map_err(io)?;
    Ok(written)
}

/// What an export starts with: the CSV header line, or nothing.
pub fn export_header(format: ExportFormat) -> Vec<u8> {
    match format {
        ExportFormat::Csv => format!("{CSV_HEADER}\n").into_bytes(),
        ExportFormat::JsonLines => Vec::new(),
    }
}

/// One page of an export.
pub struct ExportPage {
    pub bytes: Vec<u8>,
    pub events: u64,
    /// The last event's sequence number: the next page starts after it.
    pub last_seq: i64,
}

/// The events `filter` selects after sequence number `after`, at most a
/// page of them, written in `format`; `None` when there are no more.
pub async fn export_page(
    store: &Store,
    org: OrgId,
    filter: &ExportFilter,
    format: ExportFormat,
    after: i64,
) -> Result<Option<ExportPage>, ControlError> {
    let rows = crate::audit_search::export_rows(
        store,
        org.0,
        &filter.query,
        filter.since,
        filter.until,
        after,
        EXPORT_PAGE,
        ROW_COLUMNS,
    )
    .await?
    .iter()
    .map(<Row as sqlx::FromRow<'_, sqlx::any::AnyRow>>::from_row)
    .collect::<Result<Vec<Row>, sqlx::Error>>()?;
    let Some(last) = rows.last() else {
        return Ok(None);
    };
    let mut bytes = Vec::with_capacity(rows.len() * 512);
    for r in &rows {
        write_event(
            &mut bytes,
            &ExportedEvent {
                org: org.0,
                seq: r.seq,
                at: r.at,
                actor_user_id: r.actor_user_id,
                actor: Cow::Borrowed(&r.actor),
                ip: Cow::Borrowed(&r.ip),
                user_agent: Cow::Borrowed(&r.user_agent),
                action: Cow::Borrowed(&r.action),
                target: Cow::Borrowed(&r.target),
                details: Cow::Borrowed(&r.details),
                prev_hash: Cow::Borrowed(&r.prev_hash),
                hash: Cow::Borrowed(&r.hash),
            },
            format,
        )?;
    }
    Ok(Some(ExportPage {
        bytes,
        events: rows.len() as u64,
        last_seq: last.seq,
    }))
}

/// The columns of a [`Row`].
const ROW_COLUMNS: &str =
    "seq, at, actor_user_id, actor, ip, user_agent, action, target, details, prev_hash, hash";

/// An organisation's events after sequence number `after`, at most `limit`,
/// in sequence order.
async fn rows_after(
    store: &Store,
    org: OrgId,
    after: i64,
    limit: i64,
) -> Result<Vec<Row>, ControlError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ROW_COLUMNS} FROM audit_events WHERE org_id = $1 AND seq > $2 \
         ORDER BY seq LIMIT $3"
    ))
    .bind(org.0)
    .bind(after)
    .bind(limit)
    .fetch_all(store.pool())
    .await?)
}

/// An organisation's events after sequence number `after`, at most `limit`,
/// in sequence order, as export lines carry them (for forwarding).
pub async fn events_after(
    store: &Store,
    org: OrgId,
    after: i64,
    limit: i64,
) -> Result<Vec<ExportedEvent<'static>>, ControlError> {
    let rows = rows_after(store, org, after, limit).await?;
    Ok(rows
        .into_iter()
        .map(|r| ExportedEvent {
            org: org.0,
            seq: r.seq,
            at: r.at,
            actor_user_id: r.actor_user_id,
            actor: Cow::Owned(r.actor),
            ip: Cow::Owned(r.ip),
            user_agent: Cow::Owned(r.user_agent),
            action: Cow::Owned(r.action),
            target: Cow::Owned(r.target),
            details: Cow::Owned(r.details),
            prev_hash: Cow::Owned(r.prev_hash),
            hash: Cow::Owned(r.hash),
        })
        .collect())
}

/// Who may export the audit log: Owners and Admins.
pub struct ExportAudit;
impl crate::access::Capability for ExportAudit {
    const DESCRIPTION: &'static str = "export the audit log";
    fn allows(role: crate::Role) -> bool {
        role.manages_members()
    }
}

/// Records an export of the audit log in the log itself, with its format
/// and filter, before its events are read (so a full export holds its own
/// record).
pub async fn record_export(
    store: &Store,
    actor: &crate::audit::AuditActor,
    org: OrgId,
    format: ExportFormat,
    filter: &ExportFilter,
    now: Timestamp,
) -> Result<(), ControlError> {
    let mut details = filter.given.clone();
    details.insert("format".into(), format.as_str().into());
    let mut tx = store.begin().await?;
    crate::audit::append(
        &mut tx,
        actor,
        crate::audit::Event::new(
            org,
            crate::audit::AuditAction::AuditExported,
            format!("org:{}", org.0),
            serde_json::Value::Object(details),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What the offline verifier found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub events: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub head_hash: Option<String>,
    /// Checkpoints that matched an exported event.
    pub checkpoints_matched: usize,
    /// Checkpoints before the export's first event (not checkable here).
    pub checkpoints_before: usize,
}

/// Why an export failed verification: the first problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// A line that is not an export line (line numbers from 1).
    Malformed { line: u64, reason: String },
    /// An event of another organisation than the first line's.
    OtherOrg { seq: i64, org: i64 },
    /// The sequence jumps: the events in between are missing (or one was
    /// inserted out of order).
    Gap { after: i64, found: i64 },
    /// The event's `prev_hash` is not the previous event's hash.
    Link { seq: i64 },
    /// The event's fields do not give its hash: a field was changed.
    Changed { seq: i64 },
    /// A checkpoint that the audit key did not sign as it reads.
    BadSignature { count: i64, at: i64 },
    /// A checkpoint of another organisation.
    CheckpointOrg { count: i64, org: i64 },
    /// The export holds event `count`, but its hash is not the one signed.
    Rewritten { count: i64 },
    /// A checkpoint names more events than the export holds.
    MissingTail {
        last_seq: Option<i64>,
        count: i64,
        at: i64,
    },
    /// A checkpoints file line that is not a checkpoint.
    MalformedCheckpoint { line: u64, reason: String },
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broken::Malformed { line, reason } => write!(f, "line {line} of the export is not an audit event: {reason}"),
            Broken::OtherOrg { seq, org } => write!(f, "event {seq} belongs to organisation {org}, not the export's"),
            Broken::Gap { after, found } => write!(
                f,
                "after event {after} comes event {found}: events {} to {} are missing",
                after + 1,
                found - 1
            ),
            Broken::Link { seq } => write!(f, "event {seq} does not link to the event before it (prev_hash differs): an event before it was changed, removed or inserted"),
            Broken::Changed { seq } => write!(f, "event {seq} was changed: its fields do not give its hash"),
            Broken::BadSignature { count, at } => write!(
                f,
                "the checkpoint of {count} events signed at {} has a bad signature: forged, altered, or not signed by this key",
                Timestamp(*at).display_utc()
            ),
            Broken::CheckpointOrg { count, org } => write!(f, "the checkpoint of {count} events is for organisation {org}, not the export's"),
            Broken::Rewritten { count } => write!(f, "event {count} is not the one the checkpoint signed: the history up to it was rewritten"),
            Broken::MissingTail { last_seq, count, at } => write!(
                f,
                "the export ends at event {} but the checkpoint signed at {} covers {count} events: the tail is missing (or the export was cut with --until)",
                last_seq.map_or("none".to_string(), |s| s.to_string()),
                Timestamp(*at).display_utc()
            ),
            Broken::MalformedCheckpoint { line, reason } => write!(f, "line {line} of the checkpoints file is not a checkpoint: {reason}"),
        }
    }
}

/// Verifies an export (JSON Lines) against signed checkpoints (JSON Lines,
/// one `channel::Checkpoint` each) and the pinned audit key, offline.
///
/// Reads the export once, a block of lines at a time: the lines of a block
/// are parsed and hashed on every core (each line's hash depends only on its
/// own fields and `prev_hash`), then checked in order (links, sequence,
/// checkpoints). Memory stays at a few blocks whatever the export's size.
pub fn verify_export(
    export: &mut dyn BufRead,
    checkpoints: &mut dyn BufRead,
    key: &channel::VerifyingKey,
) -> Result<Result<Verified, Broken>, std::io::Error> {
    let mut wanted: Vec<channel::Checkpoint> = Vec::new();
    let mut line = String::new();
    let mut n = 0u64;
    loop {
        line.clear();
        if checkpoints.read_line(&mut line)? == 0 {
            break;
        }
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<channel::Checkpoint>(line.trim_end()) {
            Ok(c) => {
                if channel::verify_checkpoint(&c, key).is_err() {
                    return Ok(Err(Broken::BadSignature {
                        count: c.count,
                        at: c.at,
                    }));
                }
                wanted.push(c);
            }
            Err(e) => {
                return Ok(Err(Broken::MalformedCheckpoint {
                    line: n,
                    reason: e.to_string(),
                }))
            }
        }
    }
    wanted.sort_by_key(|c| c.count);

    let mut state = Chain {
        verified: Verified {
            events: 0,
            first_seq: None,
            last_seq: None,
            head_hash: None,
            checkpoints_matched: 0,
            checkpoints_before: 0,
        },
        org: None,
        prev_hash: [0; 64],
        next_checkpoint: 0,
        wanted,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut block: Vec<u8> = Vec::with_capacity(BLOCK_BYTES + 4096);
    let mut first_line = 1u64;
    loop {
        block.clear();
        // A block of whole lines.
        while block.len() < BLOCK_BYTES {
            if export.read_until(b'\n', &mut block)? == 0 {
                break;
            }
        }
        if block.is_empty() {
            break;
        }
        let lines: Vec<&[u8]> = block.split(|b| *b == b'\n').collect();
        let lines = match lines.last() {
            Some([]) => &lines[..lines.len() - 1],
            _ => &lines[..],
        };
        let per = lines.len().div_ceil(threads).max(1);
        let checked: Vec<Vec<Line>> = std::thread::scope(|scope| {
            let handles: Vec<_> = lines
                .chunks(per)
                .map(|part| scope.spawn(move || part.iter().map(|l| check_line(l)).collect()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut line_no = first_line;
        for l in checked.into_iter().flatten() {
            if let Err(broken) = state.next(l, line_no) {
                return Ok(Err(broken));
            }
            line_no += 1;
        }
        if line_no - first_line != lines.len() as u64 {
            return Ok(Err(Broken::Malformed {
                line: line_no,
                reason: "could not be checked".into(),
            }));
        }
        first_line = line_no;
    }
    Ok(state.finish())
}

/// Bytes of export read per block.
const BLOCK_BYTES: usize = 8 << 20;

/// One export line, parsed and hashed on its own.
enum Line {
    Blank,
    Malformed(String),
    Event {
        org: i64,
        seq: i64,
        prev_hash: [u8; 64],
        /// The stored hash, as written.
        hash: [u8; 64],
        /// Whether the fields give the stored hash after the stored `prev_hash`.
        fields_match: bool,
    },
}

fn hex64(s: &str) -> Option<[u8; 64]> {
    s.as_bytes().try_into().ok()
}

/// The hex SHA-256 of `prev_hash`, a newline and `content`.
fn digest_hex(prev_hash: &[u8; 64], content: &[u8]) -> [u8; 64] {
    let mut h = sha2::Sha256::new();
    h.update(prev_hash);
    h.update(b"\n");
    h.update(content);
    let mut out = [0u8; 64];
    // 32 bytes always fit 64 hex digits.
    let _ = hex::encode_to_slice(h.finalize(), &mut out);
    out
}

fn check_line(raw: &[u8]) -> Line {
    let text = trim_line(raw);
    if text.is_empty() {
        return Line::Blank;
    }
    if let Some(line) = check_raw_line(text) {
        return line;
    }
    let e: ExportedEvent<'_> = match serde_json::from_slice(text) {
        Ok(e) => e,
        Err(err) => return Line::Malformed(err.to_string()),
    };
    let (Some(prev_hash), Some(hash)) = (hex64(&e.prev_hash), hex64(&e.hash)) else {
        return Line::Malformed("prev_hash and hash must be 64 hex digits".into());
    };
    let mut content = Vec::with_capacity(text.len());
    chain_content(
        &mut content,
        (
            e.org,
            e.seq,
            e.at,
            e.actor_user_id,
            &e.actor,
            &e.ip,
            &e.user_agent,
            &e.action,
            &e.target,
            &e.details,
        ),
    );
    let fields_match = digest_hex(&prev_hash, &content) == hash;
    Line::Event {
        org: e.org,
        seq: e.seq,
        prev_hash,
        hash,
        fields_match,
    }
}

/// The fast path for a line as `pilothouse audit export` writes it: the
/// fields in their written order, each string escaped exactly as the chain's
/// content escapes it. The content is hashed from the line's own bytes (the
/// line without its keys), with no decoding and re-encoding. Only a line
/// whose hash this confirms is answered here: bytes that give the stored
/// hash are the content the chain hashed, so a JSON reader finds the same
/// values in them. Any other line (other field order or escaping, malformed,
/// or changed) is left to the decoding path, which decides.
fn check_raw_line(text: &[u8]) -> Option<Line> {
    let mut s = Scan { b: text, i: 0 };
    s.lit(b"{\"org\":")?;
    let (org, org_raw) = s.int()?;
    s.lit(b",\"seq\":")?;
    let (seq, seq_raw) = s.int()?;
    s.lit(b",\"at\":")?;
    let (_, at_raw) = s.int()?;
    s.lit(b",\"actor_user_id\":")?;
    let user_raw = match s.lit(b"null") {
        Some(()) => &b"null"[..],
        None => s.int()?.1,
    };
    let mut strings: [&[u8]; 6] = [&[]; 6];
    for (key, slot) in [
        &b",\"actor\":"[..],
        b",\"ip\":",
        b",\"user_agent\":",
        b",\"action\":",
        b",\"target\":",
        b",\"details\":",
    ]
    .into_iter()
    .zip(strings.iter_mut())
    {
        s.lit(key)?;
        *slot = s.string()?;
    }
    s.lit(b",\"prev_hash\":\"")?;
    let prev_hash: [u8; 64] = s.take(64)?.try_into().ok()?;
    s.lit(b"\",\"hash\":\"")?;
    let hash: [u8; 64] = s.take(64)?.try_into().ok()?;
    s.lit(b"\"}")?;
    if s.i != text.len() {
        return None;
    }

    let mut h = sha2::Sha256::new();
    h.update(prev_hash);
    h.update(b"\n[");
    for part in [org_raw, seq_raw, at_raw, user_raw] {
        h.update(part);
        h.update(b",");
    }
    for (i, part) in strings.into_iter().enumerate() {
        if i > 0 {
            h.update(b",");
        }
        h.update(part);
    }
    h.update(b"]");
    let mut digest = [0u8; 64];
    // 32 bytes always fit 64 hex digits.
    let _ = hex::encode_to_slice(h.finalize(), &mut digest);
    (digest == hash).then_some(Line::Event {
        org,
        seq,
        prev_hash,
        hash,
        fields_match: true,
    })
}

/// A cursor over one export line for [`check_raw_line`]. Each step answers
/// `None` where the line is not as the export writes it.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    /// Steps over `lit`, which must come next.
    fn lit(&mut self, lit: &[u8]) -> Option<()> {
        let end = self.i.checked_add(lit.len())?;
        (self.b.get(self.i..end)? == lit).then(|| self.i = end)
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.i.checked_add(n)?;
        let out = self.b.get(self.i..end)?;
        self.i = end;
        Some(out)
    }

    /// An integer as `serde_json` writes one (`-`, then digits without a
    /// leading zero), with its bytes.
    fn int(&mut self) -> Option<(i64, &'a [u8])> {
        let start = self.i;
        let negative = self.lit(b"-").is_some();
        let digits = self.i;
        let mut n: i64 = 0;
        while let Some(d) = self.b.get(self.i).filter(|b| b.is_ascii_digit()) {
            let d = i64::from(d - b'0');
            n = n.checked_mul(10)?;
            n = if negative {
                n.checked_sub(d)?
            } else {
                n.checked_add(d)?
            };
            self.i += 1;
        }
        let len = self.i - digits;
        if len == 0 || (len > 1 && self.b[digits] == b'0') {
            return None;
        }
        Some((n, &self.b[start..self.i]))
    }

    /// A JSON string, quotes included: no control characters, and every
    /// backslash escapes the byte after it.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        self.lit(b"\"")?;
        loop {
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(&self.b[start..self.i]);
                }
                b'\\' => self.i += 2,
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }
}

/// The ordered checks, line after line.
struct Chain {
    verified: Verified,
    org: Option<i64>,
    prev_hash: [u8; 64],
    next_checkpoint: usize,
    wanted: Vec<channel::Checkpoint>,
}

impl Chain {
    fn next(&mut self, line: Line, line_no: u64) -> Result<(), Broken> {
        let (org, seq, prev_hash, hash, fields_match) = match line {
            Line::Blank => return Ok(()),
            Line::Malformed(reason) => {
                return Err(Broken::Malformed {
                    line: line_no,
                    reason,
                })
            }
            Line::Event {
                org,
                seq,
                prev_hash,
                hash,
                fields_match,
            } => (org, seq, prev_hash, hash, fields_match),
        };
        match (self.org, self.verified.last_seq) {
            (Some(o), Some(last)) => {
                if org != o {
                    return Err(Broken::OtherOrg { seq, org });
                }
                if seq != last + 1 {
                    return Err(Broken::Gap {
                        after: last,
                        found: seq,
                    });
                }
            }
            _ => {
                self.org = Some(org);
                self.verified.first_seq = Some(seq);
                // The first line's link can only be checked when the export
                // starts at the beginning of the chain.
                self.prev_hash = match hex64(GENESIS) {
                    Some(genesis) if seq == 1 => genesis,
                    _ => prev_hash,
                };
                while let Some(c) = self
                    .wanted
                    .get(self.next_checkpoint)
                    .filter(|c| c.count < seq)
                {
                    if c.count > 0 {
                        self.verified.checkpoints_before += 1;
                    }
                    self.next_checkpoint += 1;
                }
            }
        }
        if prev_hash != self.prev_hash {
            return Err(Broken::Link { seq });
        }
        if !fields_match {
            return Err(Broken::Changed { seq });
        }
        while let Some(c) = self
            .wanted
            .get(self.next_checkpoint)
            .filter(|c| c.count == seq)
        {
            if c.org != org {
                return Err(Broken::CheckpointOrg {
                    count: c.count,
                    org: c.org,
                });
            }
            if c.head_hash.as_bytes() != hash {
                return Err(Broken::Rewritten { count: c.count });
            }
            self.verified.checkpoints_matched += 1;
            self.next_checkpoint += 1;
        }
        self.verified.events += 1;
        self.verified.last_seq = Some(seq);
        self.prev_hash = hash;
        Ok(())
    }

    fn finish(mut self) -> Result<Verified, Broken> {
        let rest = &self.wanted[self.next_checkpoint..];
        if let Some(o) = self.org {
            if let Some(c) = rest.iter().find(|c| c.org != o) {
                return Err(Broken::CheckpointOrg {
                    count: c.count,
                    org: c.org,
                });
            }
        }
        if let Some(c) = rest.iter().find(|c| c.count > 0) {
            return Err(Broken::MissingTail {
                last_seq: self.verified.last_seq,
                count: c.count,
                at: c.at,
            });
        }
        self.verified.head_hash = self
            .verified
            .last_seq
            .map(|_| String::from_utf8_lossy(&self.prev_hash).into_owned());
        Ok(self.verified)
    }
}

fn trim_line(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && matches!(b[end - 1], b'\n' | b'\r' | b' ') {
        end -= 1;
    }
    &b[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chain hash must stay what chains already stored were built with:
    /// SHA-256 over `prev`, a newline and the `serde_json::json!` array.
    #[test]
    fn the_chain_hash_is_the_stored_chains_formula() {
        let tricky = [
            "plain",
            "quote \" backslash \\ slash /",
            "line\nbreak\ttab\u{1}control",
            "ünïcödé ✓ 🚀",
            "",
        ];
        for (i, s) in tricky.iter().enumerate() {
            let user = (i % 2 == 0).then_some(i as i64);
            let old = crate::crypto::sha256_hex(format!(
                "{GENESIS}\n{}",
                serde_json::json!([7, i, -5, user, s, s, s, "user.login", s, s])
            ));
            assert_eq!(
                chain_hash(GENESIS, 7, i as i64, -5, user, s, s, s, "user.login", s, s),
                old,
                "{s:?}"
            );
        }
    }

    /// An export of `n` events with tricky strings, as `write_event` writes it.
    fn export_of(n: i64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_string();
        for seq in 1..=n {
            let actor = format!("ünï \"{seq}\" \\ / \u{1}");
            let details = format!(r#"{{"n":{seq},"note":"a\tb"}}"#);
            let user = (seq % 2 == 0).then_some(-seq);
            let at = -1_000 + seq;
            let hash = chain_hash(
                &prev,
                3,
                seq,
                at,
                user,
                &actor,
                "",
                "",
                "user.login",
                "x",
                &details,
            );
            let e = ExportedEvent {
                org: 3,
                seq,
                at,
                actor_user_id: user,
                actor: Cow::Borrowed(&actor),
                ip: Cow::Borrowed(""),
                user_agent: Cow::Borrowed(""),
                action: Cow::Borrowed("user.login"),
                target: Cow::Borrowed("x"),
                details: Cow::Borrowed(&details),
                prev_hash: Cow::Borrowed(&prev),
                hash: Cow::Borrowed(&hash),
            };
            write_event(&mut out, &e, ExportFormat::JsonLines).unwrap();
            prev = hash;
        }
        out
    }

    fn verify(export: &[u8]) -> Result<Verified, Broken> {
        let key = channel::SigningKey::generate();
        verify_export(&mut &export[..], &mut &b""[..], key.verifying_key()).unwrap()
    }

    /// Lines as the export writes them verify on the fast path; a line whose
    /// strings are escaped another way (the same values) still verifies on
    /// the decoding path, and a changed value is reported on either.
    #[test]
    fn lines_verify_however_their_strings_are_escaped() {
        let export = export_of(5);
        let text = String::from_utf8(export.clone()).unwrap();
        for line in text.lines() {
            assert!(
                matches!(check_raw_line(line.as_bytes()), Some(Line::Event { .. })),
                "the fast path takes {line}"
            );
        }
        assert_eq!(verify(&export).unwrap().events, 5);
        // `"user.login"` written as `"\u0075ser.login"`: the same string.
        let escaped = text.replacen("\"user.login\"", "\"\\u0075ser.login\"", 3);
        assert_ne!(escaped, text);
        assert!(check_raw_line(escaped.lines().next().unwrap().as_bytes()).is_none());
        assert_eq!(verify(escaped.as_bytes()).unwrap().events, 5);
        // A changed value on the third line, escaped either way.
        for changed in [
            text.replacen("\"n\\\":3", "\"n\\\":4", 1),
            escaped.replacen("\"target\":\"x\"", "\"target\":\"\\u0079\"", 3),
        ] {
            assert_ne!(changed, text);
            let broken = verify(changed.as_bytes()).unwrap_err();
            assert!(
                matches!(
                    broken,
                    Broken::Changed { seq: 3 } | Broken::Changed { seq: 1 }
                ),
                "{broken}"
            );
        }
    }

    #[test]
    fn integers_are_read_as_serde_json_writes_them() {
        for n in [0, 7, -7, 10, 1_764_000_000_000, i64::MAX, i64::MIN] {
            let written = serde_json::to_vec(&n).unwrap();
            let mut s = Scan { b: &written, i: 0 };
            assert_eq!(s.int(), Some((n, &written[..])), "{n}");
        }
        for not in [
            "",
            "-",
            "01",
            "x",
            "9223372036854775808",
            "-9223372036854775809",
        ] {
            let mut s = Scan {
                b: not.as_bytes(),
                i: 0,
            };
            assert_eq!(s.int(), None, "{not}");
        }
    }

    #[test]
    fn lines_written_otherwise_are_decided_by_decoding() {
        let export = export_of(4);
        let text = String::from_utf8(export).unwrap();
        // The same events with their keys in another (sorted) order.
        let sorted: String = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{v}\n")
            })
            .collect();
        assert!(check_raw_line(sorted.lines().next().unwrap().as_bytes()).is_none());
        assert_eq!(verify(sorted.as_bytes()).unwrap().events, 4);
        // Anything after the closing brace, or a field too many, is malformed.
        for bad in [
            text.replacen("\"}\n", "\"} x\n", 1),
            text.replacen("{\"org\":3,", "{\"org\":3,\"extra\":1,", 1),
        ] {
            assert!(check_raw_line(bad.lines().next().unwrap().as_bytes()).is_none());
            let broken = verify(bad.as_bytes()).unwrap_err();
            assert!(
                matches!(broken, Broken::Malformed { line: 1, .. }),
                "{broken}"
            );
        }
    }

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        let cell = |v: &str| {
            let mut out = Vec::new();
            csv_field(&mut out, v);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+1"), "\"'+1\"");
        assert_eq!(cell("@SUM(A1)"), "\"'@SUM(A1)\"");
    }

    #[test]
    fn dates_parse_in_utc_and_nonsense_is_refused() {
        assert_eq!(parse_time("1970-01-02"), Ok(Timestamp(86_400_000)));
        assert_eq!(parse_time("1970-01-01T01:02Z"), Ok(Timestamp(3_720_000)));
        assert_eq!(parse_time("1970-01-01T00:00:03Z"), Ok(Timestamp(3_000)));
        for bad in [
            "yesterday",
            "2026-02-30",
            "2026-13-01",
            "2026-12-01T25:00Z",
            "2026-12-01T10:00",
            "2026-12-01T10:00+02:00",
            &"9".repeat(10_000),
        ] {
            let err = parse_time(bad).unwrap_err();
            assert!(err.contains("is not a date") && err.len() < 200, "{err}");
        }
    }
}
