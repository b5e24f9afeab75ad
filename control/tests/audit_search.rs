//! The Audit page's search on both backends, checked against a full read of
//! the log: every filter answers exactly the events a plain scan finds, in
//! pages, whatever plan answers it (time ranges turned into sequence bounds,
//! action groups merged from one index walk per action, free text searched
//! in slices, from the trigram index on PostgreSQL, or over several pages
//! when a page runs out of time). Event times never go back, even when the
//! writer's clock does.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use control::access::{Authorized, ReadOrg};
use control::audit::{self, AuditAction, AuditActor, Event};
use control::audit_search::{self, PAGE};
use control::store::Backend;
use control::testing::TestDb;
use control::{AuditFilterText, OrgId, Role, Timestamp};
use sqlx::Row;

/// Events written: more than one slice of the text search (4,096).
const EVENTS: i64 = 6_000;
const BATCH: i64 = 100;
const MINUTE: i64 = 60_000;

#[derive(Debug, Clone)]
struct Stored {
    seq: i64,
    at: i64,
    actor: String,
    action: String,
    target: String,
    details: String,
}

fn action_of(n: i64) -> AuditAction {
    match n % 10 {
        0 => AuditAction::KeysRotated,
        1 => AuditAction::OperationApproved,
        2 => AuditAction::LoginSucceeded,
        _ => AuditAction::CommandFinished,
    }
}

/// Batches of 100 events, each batch a minute after the one before, except
/// batch 30, written with a clock that stepped back ten minutes.
async fn fill(db: &TestDb, org: OrgId, base: i64) {
    for b in 0..EVENTS / BATCH {
        let now = if b == 30 {
            base + (b - 10) * MINUTE
        } else {
            base + b * MINUTE
        };
        let events = (0..BATCH)
            .map(|i| {
                let n = b * BATCH + i;
                let agent = format!("agt_{:024x}", n % 7);
                (
                    AuditActor::agent(&control::AgentId(agent.clone())),
                    Event::new(
                        org,
                        action_of(n),
                        format!("agent:{agent}"),
                        serde_json::json!({ "n": n, "tag": format!("tag-{:05}", n), "kind": "disk_usage" }),
                    ),
                )
            })
            .collect();
        let mut tx = db.store.begin().await.unwrap();
        audit::append_many(&mut tx, events, Timestamp(now))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

async fn all_events(db: &TestDb, org: OrgId) -> Vec<Stored> {
    sqlx::query(
        "SELECT seq, at, actor, action, target, details FROM audit_events WHERE org_id = $1 ORDER BY seq DESC",
    )
    .bind(org.0)
    .fetch_all(db.store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| Stored {
        seq: r.get("seq"),
        at: r.get("at"),
        actor: r.get("actor"),
        action: r.get("action"),
        target: r.get("target"),
        details: r.get("details"),
    })
    .collect()
}

/// Every page of a filter, followed to its end: the sequence numbers found,
/// and how many pages said they stopped early.
async fn walk(
    auth: &Authorized<'_, ReadOrg>,
    filter: &AuditFilterText,
    budget: Duration,
) -> (Vec<i64>, usize) {
    let mut f = filter.clone();
    let mut seqs: Vec<i64> = Vec::new();
    let mut partial = 0;
    for _ in 0..1_000 {
        let page = control::audit_search::search_within(auth, &f, budget)
            .await
            .unwrap();
        assert!(page.events.len() as i64 <= PAGE);
        for e in &page.events {
            assert!(seqs.last().is_none_or(|l| e.seq < *l), "newest first");
            seqs.push(e.seq);
        }
        if page.searched_to.is_some() {
            partial += 1;
            assert_eq!(
                page.next, page.searched_to,
                "a stopped search goes on from there"
            );
        }
        match page.next {
            Some(n) => f.before = Some(n.to_string()),
            None => return (seqs, partial),
        }
    }
    panic!("a search that never ends: {filter:?}");
}

fn minute(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

async fn every_filter_answers_what_a_full_read_finds(db: TestDb) {
    let (owner, org) = common::add(&db, "Acme", "owner@example.com", Role::Owner).await;
    // The next whole minute, so batches fall on minute boundaries after the
    // events the setup recorded.
    let base = (Timestamp::now().0 / MINUTE + 1) * MINUTE;
    fill(&db, org, base).await;
    let stored = all_events(&db, org).await;
    assert!(stored.len() as i64 > EVENTS);

    // Times never go back along the chain; the batch written with a clock
    // ten minutes behind carries the time of the batch before it.
    assert!(stored.windows(2).all(|w| w[0].at >= w[1].at));
    let stepped_back = stored
        .iter()
        .find(|e| e.details.contains("\"n\":3000,"))
        .unwrap();
    assert_eq!(stepped_back.at, base + 29 * MINUTE);

    let actor = common::actor(&db, owner, org).await;
    let auth = actor.authorize::<ReadOrg>().unwrap();
    let expect = |keep: &dyn Fn(&Stored) -> bool| -> Vec<i64> {
        stored.iter().filter(|e| keep(e)).map(|e| e.seq).collect()
    };
    let in_group = |e: &Stored, group: &str| {
        audit_search::group_actions(group)
            .unwrap()
            .contains(&e.action.as_str())
    };
    let contains = |e: &Stored, text: &str| {
        [&e.actor, &e.action, &e.target, &e.details]
            .iter()
            .any(|f| f.contains(text))
    };
    let slow = Duration::from_secs(60);

    // Time ranges, alone and with other filters, including the minutes
    // around the batch whose clock stepped back.
    for (from, to) in [(10, 20), (28, 31), (29, 30), (0, 1), (55, 90), (-5, 3)] {
        let (since, until) = (base + from * MINUTE, base + to * MINUTE);
        let f = AuditFilterText {
            since: Some(minute(since)),
            until: Some(minute(until)),
            ..Default::default()
        };
        let (got, _) = walk(&auth, &f, slow).await;
        assert_eq!(
            got,
            expect(&|e| e.at >= since && e.at < until),
            "{from}..{to} min"
        );
        let f = AuditFilterText {
            group: Some("keys".into()),
            server: Some(format!("agt_{:024x}", 3)),
            ..f
        };
        let (got, _) = walk(&auth, &f, slow).await;
        assert_eq!(
            got,
            expect(&|e| e.at >= since
                && e.at < until
                && in_group(e, "keys")
                && e.target == format!("agent:agt_{:024x}", 3)),
            "{from}..{to} min, keys on one server"
        );
    }
    let only_since = AuditFilterText {
        since: Some(minute(base + 45 * MINUTE)),
        ..Default::default()
    };
    let (got, _) = walk(&auth, &only_since, slow).await;
    assert_eq!(got, expect(&|e| e.at >= base + 45 * MINUTE));

    // Action groups, merged from one index walk per action.
    for group in ["keys", "approvals", "operations", "sign-in", "team"] {
        let f = AuditFilterText {
            group: Some(group.into()),
            ..Default::default()
        };
        let (got, _) = walk(&auth, &f, slow).await;
        assert_eq!(got, expect(&|e| in_group(e, group)), "{group}");
    }

    // Free text: common, in other case (matched exactly: nothing), rare (the
    // oldest batch only), a thousand old events (more than the first chunks
    // of SQLite's index), quotes (FTS5's own syntax), with a group, and text
    // too short for the trigram index.
    for text in [
        "disk_usage",
        "DISK_USAGE",
        "tag-00042",
        "tag-0001",
        "tag-00",
        "\"n\":7",
        "\"n\":\"",
        "zz",
    ] {
        let f = AuditFilterText {
            text: Some(text.into()),
            ..Default::default()
        };
        let want = expect(&|e| contains(e, text));
        let (got, partial) = walk(&auth, &f, slow).await;
        assert_eq!(got, want, "{text}");
        let indexed = text.chars().count() >= 3;
        if indexed {
            // The trigram index answers what the first slice did not, on
            // one page.
            assert_eq!(partial, 0, "{text}: found on one page");
        }
        // With no time to scan, a page answers after one slice and the
        // search goes on over the next pages, never skipping an event.
        let (got, partial) = walk(&auth, &f, Duration::ZERO).await;
        assert_eq!(got, want, "{text}, over pages");
        let on_server = AuditFilterText {
            server: Some(format!("agt_{:024x}", 5)),
            ..f.clone()
        };
        let (got, _) = walk(&auth, &on_server, slow).await;
        assert_eq!(
            got,
            expect(&|e| contains(e, text) && e.target == format!("agent:agt_{:024x}", 5)),
            "{text} on one server"
        );
        let grouped = AuditFilterText {
            group: Some("operations".into()),
            ..f.clone()
        };
        let (got, _) = walk(&auth, &grouped, Duration::ZERO).await;
        assert_eq!(
            got,
            expect(&|e| contains(e, text) && in_group(e, "operations")),
            "{text} in operations"
        );
        if indexed && db.store.backend() == Backend::Postgres {
            // PostgreSQL's index answers in one query, whatever the budget.
            assert_eq!(partial, 0, "{text}: PostgreSQL finds it on one page");
        } else if indexed && text == "tag-00" {
            // SQLite reads its index in chunks, each page for its budget:
            // a thousand candidates of which one in ten is a key event.
            let keys = AuditFilterText {
                group: Some("keys".into()),
                ..f.clone()
            };
            let (got, partial) = walk(&auth, &keys, Duration::ZERO).await;
            assert_eq!(got, expect(&|e| contains(e, text) && in_group(e, "keys")));
            assert!(partial > 0, "{text}: the chunks went on over pages");
        } else if !indexed && want.len() as i64 <= PAGE && want.iter().all(|s| *s < 1_000) {
            assert!(partial > 0, "{text}: the slices went on over pages");
        }
    }
}

control::both_backends!(every_filter_answers_what_a_full_read_finds);
