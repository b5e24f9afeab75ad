//! What the agent tells the control plane about itself with every metrics
//! batch ([`channel::api::AgentHealth`]): how long it has been up, its clock
//! (the batch's send time, which the control plane compares with its own) and
//! the last warning or error it logged.
//!
//! [`LastErrorLayer`] is a tracing layer `main` installs next to the log
//! output, at WARN whatever `RUST_LOG` says: it keeps the last WARN or ERROR
//! event's message with its `error` and `reason` fields, in memory only. The
//! agent never logs key material, tokens or command payloads, so what it keeps
//! and sends is what its own log already shows, cut to
//! [`channel::api::MAX_ERROR_CHARS`] characters.

use channel::api::{AgentHealth, LastError, MAX_ERROR_CHARS};
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

static STARTED: OnceLock<Instant> = OnceLock::new();
static LAST_ERROR: Mutex<Option<(Instant, String)>> = Mutex::new(None);

/// Marks the process start (the first call wins); `main` calls it first thing,
/// and `run` again for callers that start the agent in-process.
pub fn mark_started() {
    STARTED.get_or_init(Instant::now);
}

/// The health report as of now, `now_ms` being the agent's wall clock.
pub fn report(now_ms: i64) -> AgentHealth {
    let started = *STARTED.get_or_init(Instant::now);
    let last = LAST_ERROR.lock().ok().and_then(|last| last.clone());
    report_at(now_ms, started, last, Instant::now())
}

/// The report at `now` for a process started at `started`. An error logged
/// before the start was marked (by the launcher, say) is as old as the
/// process: the control plane refuses one older than the uptime.
fn report_at(
    now_ms: i64,
    started: Instant,
    last: Option<(Instant, String)>,
    now: Instant,
) -> AgentHealth {
    let uptime_secs = now.saturating_duration_since(started).as_secs();
    AgentHealth {
        sent_at: now_ms,
        uptime_secs,
        last_error: last.map(|(at, message)| LastError {
            age_secs: now.saturating_duration_since(at).as_secs().min(uptime_secs),
            message,
        }),
    }
}

/// Keeps `message` as the last error (what [`LastErrorLayer`] does for a log event).
pub fn note_error(message: &str) {
    let clean: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_CHARS)
        .collect();
    if let Ok(mut last) = LAST_ERROR.lock() {
        *last = Some((Instant::now(), clean));
    }
}

/// Keeps the last WARN or ERROR event for [`report`].
pub struct LastErrorLayer;

impl<S: Subscriber> tracing_subscriber::Layer<S> for LastErrorLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // Levels order by verbosity: INFO, DEBUG and TRACE are above WARN.
        if *event.metadata().level() > Level::WARN {
            return;
        }
        let mut line = Line::default();
        event.record(&mut line);
        note_error(&line.text());
    }
}

/// The parts of an event that make its sentence.
#[derive(Default)]
struct Line {
    message: String,
    details: Vec<String>,
}

impl Line {
    fn text(&self) -> String {
        let mut out = self.message.clone();
        for d in &self.details {
            let _ = write!(out, ": {d}");
        }
        out
    }
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "error" | "reason" => self.details.push(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "error" | "reason" => self.details.push(format!("{value:?}")),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    // One test of the process-wide last error (tests run in parallel).
    #[test]
    fn keeps_the_last_warning_or_error_with_its_reason() {
        let subscriber = tracing_subscriber::registry().with(LastErrorLayer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(error = %"connection refused", "poll failed");
            let first = report(1_000).last_error.expect("a warning is kept");
            assert_eq!(first.message, "poll failed: connection refused");
            tracing::info!("agent started");
            tracing::debug!(error = %"ignored", "noise");
            assert_eq!(
                report(1_000).last_error.map(|e| e.message),
                Some("poll failed: connection refused".into()),
                "info and debug events are not errors"
            );
            let long = "x".repeat(2 * MAX_ERROR_CHARS);
            tracing::error!(reason = %long, "command refused\nby policy");
            let last = report(2_000).last_error.unwrap();
            assert!(last.message.starts_with("command refused by policy: xxx"));
            assert_eq!(last.message.chars().count(), MAX_ERROR_CHARS);
        });
        let r = report(5_000);
        assert_eq!(r.sent_at, 5_000);
        assert!(r.uptime_secs < 3600);
        let age = r.last_error.map(|e| e.age_secs).unwrap();
        assert!(
            age <= r.uptime_secs,
            "an error older than the process: {age}"
        );
    }

    #[test]
    fn an_error_from_before_the_start_is_as_old_as_the_process() {
        let logged = Instant::now();
        let started = logged + std::time::Duration::from_secs(5);
        let now = started + std::time::Duration::from_secs(60);
        let r = report_at(7, started, Some((logged, "revert".into())), now);
        assert_eq!(r.uptime_secs, 60);
        assert_eq!(
            r.last_error.unwrap().age_secs,
            60,
            "never older than the uptime"
        );
        let later = started + std::time::Duration::from_secs(30);
        let r = report_at(7, started, Some((later, "poll failed".into())), now);
        assert_eq!(r.last_error.unwrap().age_secs, 30);
    }
}
