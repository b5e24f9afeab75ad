//! The Audit log: filters that live in the URL (a plain GET form, so a
//! filtered view can be shared or bookmarked and works without JavaScript),
//! keyset pages newest first, and one event with every field, its hashes and
//! links to what it is about.

// The search's client stub (hydrate build) takes the filter's fields as
// arguments too.
#![cfg_attr(feature = "hydrate", allow(clippy::too_many_arguments))]

use control::{
    AuditEventDetail, AuditEventView, AuditFilterText, AuditResults, ChainReport, AUDIT_GROUPS,
};
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::{use_params_map, use_query_map};
use serde::{Deserialize, Serialize};

use crate::pages::{me, PageTitle};
use crate::ui::ErrorPanel;
use crate::AppError;

/// The chain's state and how much the log holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLogState {
    pub chain: ChainReport,
    /// When the oldest event was recorded (events are never deleted).
    pub oldest: Option<control::Timestamp>,
}

#[server(endpoint = "audit-summary")]
pub async fn audit_summary() -> Result<AuditLogState, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    let chain = control::audit::verify(&auth).await?;
    let oldest = control::audit_search::oldest(&auth).await?;
    Ok(AuditLogState { chain, oldest })
}

/// One page of events. The filter's fields are separate arguments, each
/// optional (absent from the request when not set).
#[allow(clippy::too_many_arguments)]
#[server(endpoint = "audit-search")]
pub async fn audit_search(
    actor: Option<String>,
    group: Option<String>,
    server: Option<String>,
    operation: Option<String>,
    since: Option<String>,
    until: Option<String>,
    text: Option<String>,
    before: Option<String>,
) -> Result<AuditResults, AppError> {
    let filter = AuditFilterText {
        actor,
        group,
        server,
        operation,
        since,
        until,
        text,
        before,
    };
    let cx = crate::context::cx().await?;
    let who = cx.actor().await?;
    let auth = who.authorize::<control::access::ReadOrg>()?;
    Ok(control::audit_search::search(&auth, &filter).await?)
}

/// [`audit_search`] with a filter.
async fn search(f: AuditFilterText) -> Result<AuditResults, AppError> {
    audit_search(
        f.actor,
        f.group,
        f.server,
        f.operation,
        f.since,
        f.until,
        f.text,
        f.before,
    )
    .await
}

#[server(endpoint = "audit-event")]
pub async fn audit_event(seq: i64) -> Result<AuditEventDetail, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    Ok(control::audit_search::event(&auth, seq).await?)
}

/// The filter the URL's query holds.
fn filter_from_query() -> Memo<AuditFilterText> {
    let query = use_query_map();
    Memo::new(move |_| {
        query.with(|q| {
            let get = |k: &str| q.get(k).filter(|v| !v.trim().is_empty());
            AuditFilterText {
                actor: get("actor"),
                group: get("group"),
                server: get("server"),
                operation: get("operation"),
                since: get("since"),
                until: get("until"),
                text: get("text"),
                before: get("before"),
            }
        })
    })
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URL of the same filter's page before `before`.
fn older_href(f: &AuditFilterText, before: i64) -> String {
    let mut parts = filter_parts(f);
    parts.push(format!("before={before}"));
    format!("/audit?{}", parts.join("&"))
}

/// The download of every event the filter selects, in `format`.
fn export_href(f: &AuditFilterText, format: &str) -> String {
    let mut parts = vec![format!("format={format}")];
    parts.extend(filter_parts(f));
    format!("/audit/export?{}", parts.join("&"))
}

/// The filter's fields as query parameters (without the page cursor).
fn filter_parts(f: &AuditFilterText) -> Vec<String> {
    let mut parts = Vec::new();
    for (k, v) in [
        ("actor", &f.actor),
        ("group", &f.group),
        ("server", &f.server),
        ("operation", &f.operation),
        ("since", &f.since),
        ("until", &f.until),
        ("text", &f.text),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={}", encode(v)));
        }
    }
    parts
}

/// Where an event's target leads: a server or an operation page.
pub fn target_href(target: &str) -> Option<String> {
    if let Some(id) = target.strip_prefix("agent:") {
        return Some(format!("/servers/{id}"));
    }
    target
        .strip_prefix("operation:")
        .map(|id| format!("/operations/{id}"))
}

#[component]
pub fn AuditLog() -> impl IntoView {
    let filter = filter_from_query();
    let results = Resource::new(move || filter.get(), search);
    let summary = Resource::new(|| (), |_| audit_summary());
    view! {
        <PageTitle title="Audit log" subtitle="Every change, who made it and from where. Append-only and hash-chained." />
        {me().0.org.role.manages_members().then(|| view! {
            <p class="mb-4 flex flex-wrap gap-3 text-sm" data-testid="audit-export">
                {move || if filter.with(|f| filter_parts(f).is_empty()) {
                    "Export every event: "
                } else {
                    "Export the events this filter selects: "
                }}
                <a class="text-sky-700 underline" href=move || filter.with(|f| export_href(f, "csv")) rel="external" download>"CSV"</a>
                <a class="text-sky-700 underline" href=move || filter.with(|f| export_href(f, "jsonl")) rel="external" download>
                    {move || if filter.with(|f| f.actor.is_none() && f.group.is_none() && f.server.is_none() && f.operation.is_none() && f.text.is_none()) {
                        "JSON Lines (for offline verification)"
                    } else {
                        "JSON Lines (a selection: its chain has gaps, so it does not verify offline)"
                    }}
                </a>
            </p>
        })}
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                summary.await.ok().map(|s| view! { <ChainStatus s /> })
            })}
        </Suspense>
        <FilterForm filter=filter.get_untracked() />
        <Suspense fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match results.await {
                    Ok(page) => view! { <EventTable page filter=filter.get_untracked() /> }.into_any(),
                    Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn ChainStatus(s: AuditLogState) -> impl IntoView {
    let chain = s.chain;
    view! {
        <p data-testid="chain-status" class=if chain.intact() { "mb-1 text-sm text-emerald-700" } else { "mb-1 text-sm font-semibold text-red-700" }>
            {if chain.intact() {
                format!("Chain verified: {} events intact.", chain.events_checked)
            } else {
                format!("Chain broken at event #{}: the log was altered.", chain.first_broken_seq.unwrap_or_default())
            }}
        </p>
        <p class="mb-1 text-xs text-slate-500" data-testid="retention">
            {match s.oldest {
                Some(t) => format!("Kept since {} (events are never deleted).", t.display_utc()),
                None => "No events yet.".to_string(),
            }}
        </p>
        {chain.head_hash.clone().map(|h| view! {
            <p class="mb-4 text-xs text-slate-500">
                "Head hash (record it elsewhere to detect a rewritten history later): "
                <code data-testid="chain-head" class="break-all">{h}</code>
            </p>
        })}
    }
}

/// A plain GET form: the filters go into the URL.
#[component]
fn FilterForm(filter: AuditFilterText) -> impl IntoView {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let group = filter.group.clone().unwrap_or_default();
    view! {
        <form method="get" action="/audit" class="mb-4 grid gap-3 rounded-lg border border-slate-200 bg-white p-4 sm:grid-cols-2 lg:grid-cols-4" data-testid="audit-filters">
            <label class="field">
                <span>"Action"</span>
                <select name="group" class="input">
                    <option value="" selected=group.is_empty()>"All"</option>
                    {AUDIT_GROUPS.iter().map(|(key, label)| view! {
                        <option value=*key selected=group == *key>{*label}</option>
                    }).collect_view()}
                </select>
            </label>
            <label class="field">
                <span>"Actor (email, agent or AI Pilot)"</span>
                <input class="input" type="text" name="actor" maxlength="320" value=value(&filter.actor) />
            </label>
            <label class="field">
                <span>"Server id"</span>
                <input class="input" type="text" name="server" maxlength="64" value=value(&filter.server) />
            </label>
            <label class="field">
                <span>"Operation id"</span>
                <input class="input" type="text" name="operation" maxlength="64" value=value(&filter.operation) />
            </label>
            <label class="field">
                <span>"Since (UTC)"</span>
                <input class="input" type="text" name="since" placeholder="2026-12-01" maxlength="32" value=value(&filter.since) />
            </label>
            <label class="field">
                <span>"Until (UTC)"</span>
                <input class="input" type="text" name="until" placeholder="2026-12-02T14:00Z" maxlength="32" value=value(&filter.until) />
            </label>
            <label class="field sm:col-span-2">
                <span>"Text"</span>
                <input class="input" type="search" name="text" maxlength="200" value=value(&filter.text) />
            </label>
            <div class="flex items-end gap-3">
                <button class="btn-primary" type="submit">"Filter"</button>
                <a class="text-sm text-sky-700 underline" href="/audit" rel="external">"Clear"</a>
            </div>
        </form>
    }
}

#[component]
fn EventTable(page: AuditResults, filter: AuditFilterText) -> impl IntoView {
    let next = page.next.map(|before| older_href(&filter, before));
    let searched_to = page.searched_to;
    let empty = page.events.is_empty();
    view! {
        <div class="overflow-x-auto rounded-lg border border-slate-200 bg-white">
            <table class="table">
                <thead>
                    <tr><th>"#"</th><th>"When"</th><th>"Who"</th><th>"Action"</th><th>"Target"</th><th>"From"</th><th>"Details"</th></tr>
                </thead>
                <tbody>
                    {page.events.into_iter().map(|e| view! { <EventRow e /> }).collect_view()}
                </tbody>
            </table>
        </div>
        {match searched_to {
            // The text search stopped early to answer in time.
            Some(seq) => view! {
                <p class="mt-3 text-sm text-slate-600" data-testid="audit-partial">
                    {format!("Searched the newest events down to #{}; older events are not searched yet.", seq)}
                </p>
            }.into_any(),
            None => empty.then(|| view! { <p class="mt-3 text-sm text-slate-600" data-testid="audit-empty">"No events match."</p> }).into_any(),
        }}
        {next.map(|href| view! {
            <p class="mt-3"><a class="text-sm text-sky-700 underline" href=href rel="external" data-testid="audit-older">
                {if searched_to.is_some() { "Search older events" } else { "Older events" }}
            </a></p>
        })}
    }
}

#[component]
fn EventRow(e: AuditEventView) -> impl IntoView {
    let target = e.target.clone();
    view! {
        <tr data-testid="audit-row" data-seq=e.seq>
            <td><A href=format!("/audit/{}", e.seq) attr:class="text-sky-700 underline" attr:data-testid="audit-event-link">{e.seq}</A></td>
            <td class="whitespace-nowrap">{e.at.display_utc()}</td>
            <td>{e.actor}</td>
            <td><code>{e.action}</code></td>
            <td><TargetLink target /></td>
            <td class="text-xs text-slate-500" title=e.user_agent>{e.ip}</td>
            <td class="max-w-xs truncate text-xs"><code>{e.details}</code></td>
        </tr>
    }
}

#[component]
fn TargetLink(target: String) -> impl IntoView {
    match target_href(&target) {
        Some(href) => view! { <A href=href attr:class="text-sky-700 underline" attr:data-testid="target-link"><code>{target}</code></A> }.into_any(),
        None => view! { <code>{target}</code> }.into_any(),
    }
}

/// One event: every field, the previous hash and its own.
#[component]
pub fn AuditEventPage() -> impl IntoView {
    let params = use_params_map();
    let seq = move || params.with(|p| p.get("seq").and_then(|s| s.parse::<i64>().ok()));
    let detail = Resource::new(seq, |seq| async move {
        match seq {
            Some(seq) if seq > 0 => audit_event(seq).await,
            _ => Err(AppError::NotFound(
                "No such event in this organisation's log.".into(),
            )),
        }
    });
    view! {
        <PageTitle title="Audit event" subtitle="Everything the log recorded, with the hashes that chain it." />
        <p class="mb-4 text-sm"><A href="/audit" attr:class="text-sky-700 underline">"All events"</A></p>
        <Suspense fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Ok(d) => view! { <EventFields d /> }.into_any(),
                    Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn EventFields(d: AuditEventDetail) -> impl IntoView {
    let e = d.event;
    let row = |label: &'static str, value: String, id: &'static str| {
        view! {
            <dt class="card-label">{label}</dt>
            <dd class="mb-2 break-all"><code data-testid=id>{value}</code></dd>
        }
    };
    let target = e.target.clone();
    view! {
        <dl class="card text-sm" data-testid="audit-event">
            {row("Event", e.seq.to_string(), "event-seq")}
            {row("When", e.at.display_utc(), "event-at")}
            {row("Actor", e.actor.clone(), "event-actor")}
            {row("Actor's user id", d.actor_user_id.map(|u| u.to_string()).unwrap_or_else(|| "none".into()), "event-user")}
            {row("Action", e.action.clone(), "event-action")}
            <dt class="card-label">"Target"</dt>
            <dd class="mb-2"><TargetLink target /></dd>
            {row("Client address", e.ip.clone(), "event-ip")}
            {row("Browser", e.user_agent.clone(), "event-ua")}
            {row("Details", e.details.clone(), "event-details")}
            {row("Previous hash", d.prev_hash, "event-prev-hash")}
            {row("Hash", d.hash, "event-hash")}
        </dl>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_link_to_their_pages() {
        assert_eq!(
            target_href("agent:agt_1").as_deref(),
            Some("/servers/agt_1")
        );
        assert_eq!(
            target_href("operation:op_2").as_deref(),
            Some("/operations/op_2")
        );
        assert_eq!(target_href("user:5"), None);
    }

    #[test]
    fn the_older_link_keeps_the_filter() {
        let f = AuditFilterText {
            group: Some("servers".into()),
            text: Some("a b&c".into()),
            ..AuditFilterText::default()
        };
        assert_eq!(
            older_href(&f, 51),
            "/audit?group=servers&text=a%20b%26c&before=51"
        );
    }
}
