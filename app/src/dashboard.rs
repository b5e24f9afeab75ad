//! The dashboard: the fleet at a glance (servers, post-quantum coverage,
//! servers needing attention), what waits for the viewer's approval, and the
//! latest operations and audit events. Read-only; refreshes every 30 s.

use control::{AgentView, PqcState};
use leptos::prelude::*;
use leptos_router::components::A;

use crate::api::{fleet_summary, latest_audit_events, list_servers};
use crate::operations::OperationsTable;
use crate::ops_api::{pending_count, recent_operations};
use crate::pages::{me, PageTitle};
use crate::ui::{ticker, ErrorPanel, SignedInUser};

/// Disk usage from which a server needs attention.
const DISK_ATTENTION_PCT: f64 = 90.0;

/// Why a server needs attention, if it does: offline, a disk above 90 %, an
/// agent clock too far off for signed commands, a failed watched unit. Revoked servers are gone and need none.
fn attention(s: &AgentView) -> Vec<String> {
    if s.revoked {
        return Vec::new();
    }
    let mut why = Vec::new();
    if !s.online {
        why.push("offline".to_string());
    }
    if let Some(pct) = s.disk_high_pct.filter(|p| *p > DISK_ATTENTION_PCT) {
        why.push(format!("disk {pct:.0} % full"));
    }
    if let Some(h) = s.health.as_ref().filter(|h| h.clock_off()) {
        why.push(format!(
            "clock {} s off",
            h.clock_skew_ms.unsigned_abs() / 1000
        ));
    }
    for (unit, state) in &s.units {
        if state.state == "failed" {
            why.push(format!("{unit} failed"));
        }
    }
    why
}

/// `(post-quantum, all)` over the servers that are not revoked.
fn pq_coverage(servers: &[AgentView]) -> (usize, usize) {
    let live = servers.iter().filter(|s| !s.revoked);
    let all = live.clone().count();
    let pq = live
        .filter(|s| s.pqc == PqcState::PostQuantumActive)
        .count();
    (pq, all)
}

#[component]
pub fn Dashboard() -> impl IntoView {
    let SignedInUser(me) = me();
    let tick = ticker(30);
    let fleet = Resource::new(move || tick.get(), |_| fleet_summary());
    let servers = Resource::new(move || tick.get(), |_| list_servers());
    let pending = Resource::new(move || tick.get(), |_| pending_count());
    let operations = Resource::new(move || tick.get(), |_| recent_operations(Some(5)));
    let audit = Resource::new(move || tick.get(), |_| latest_audit_events(5));
    view! {
        <PageTitle title="Dashboard" />
        <div class="grid gap-4 sm:grid-cols-2 xl:grid-cols-4">
            <div class="card">
                <div class="card-label">"Organisation"</div>
                <div class="card-value break-words">{me.org.name.clone()}</div>
                <div class="text-sm text-slate-600">{format!("You are {}", me.org.role.label())}</div>
            </div>
            <FleetCard fleet />
            <PqCard servers />
            <PendingCard pending />
        </div>
        <div class="mt-6 grid gap-6 xl:grid-cols-2">
            <section class="min-w-0">
                <h2 class="mb-3 text-lg font-semibold">"Needs attention"</h2>
                <Transition fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                    {move || Suspend::new(async move {
                        match servers.await {
                            Ok(list) => view! { <Attention servers=list /> }.into_any(),
                            Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                        }
                    })}
                </Transition>
            </section>
            <section class="min-w-0">
                <h2 class="mb-3 text-lg font-semibold">"Latest audit events"</h2>
                <Transition fallback=|| ()>
                    {move || Suspend::new(async move {
                        match audit.await {
                            Ok(events) => view! { <LatestAudit events /> }.into_any(),
                            Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                        }
                    })}
                </Transition>
            </section>
        </div>
        <section class="mt-6">
            <div class="mb-3 flex flex-wrap items-baseline gap-3">
                <h2 class="text-lg font-semibold">"Latest operations"</h2>
                <A href="/approvals" attr:class="text-sm text-sky-700 underline">"All operations"</A>
            </div>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    match operations.await {
                        Ok(ops) if ops.is_empty() => view! { <p class="text-sm text-slate-600">"None yet."</p> }.into_any(),
                        Ok(ops) => view! { <div data-testid="latest-operations"><OperationsTable ops /></div> }.into_any(),
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn FleetCard(fleet: Resource<Result<control::FleetSummary, crate::AppError>>) -> impl IntoView {
    view! {
        <div class="card">
            <div class="card-label">"Servers"</div>
            <Transition fallback=|| view! { <div class="card-value">"…"</div> }>
                {move || Suspend::new(async move {
                    match fleet.await {
                        Ok(f) => view! {
                            <div class="card-value" data-testid="servers-online">{format!("{} online", f.online)}</div>
                            <div class="text-sm text-slate-600" data-testid="servers-other">
                                {format!("{} offline · {} awaiting their agent", f.offline, f.awaiting_agent)}
                            </div>
                        }.into_any(),
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Transition>
            <A href="/servers" attr:class="text-sm text-sky-700 underline">"View servers"</A>
        </div>
    }
}

#[component]
fn PqCard(servers: Resource<Result<Vec<AgentView>, crate::AppError>>) -> impl IntoView {
    view! {
        <div class="card">
            <div class="card-label">"Post-quantum coverage"</div>
            <Transition fallback=|| view! { <div class="card-value">"…"</div> }>
                {move || Suspend::new(async move {
                    servers.await.ok().map(|list| {
                        let (pq, all) = pq_coverage(&list);
                        view! {
                            <div class="card-value" data-testid="pq-coverage">{format!("{pq} of {all} servers post-quantum")}</div>
                            <div class="text-sm text-slate-600">"Commands sealed with X-Wing (ML-KEM-768 + X25519)."</div>
                        }
                    })
                })}
            </Transition>
        </div>
    }
}

#[component]
fn PendingCard(pending: Resource<Result<i64, crate::AppError>>) -> impl IntoView {
    view! {
        <div class="card">
            <div class="card-label">"Pending approvals for you"</div>
            <Transition fallback=|| view! { <div class="card-value">"…"</div> }>
                {move || Suspend::new(async move {
                    pending.await.ok().map(|n| view! {
                        <div class="card-value" data-testid="pending-for-you">{format!("{n} waiting")}</div>
                    })
                })}
            </Transition>
            <A href="/approvals" attr:class="text-sm text-sky-700 underline">"Open approvals"</A>
        </div>
    }
}

#[component]
fn Attention(servers: Vec<AgentView>) -> impl IntoView {
    let rows: Vec<(AgentView, Vec<String>)> = servers
        .into_iter()
        .map(|s| {
            let why = attention(&s);
            (s, why)
        })
        .filter(|(_, why)| !why.is_empty())
        .collect();
    if rows.is_empty() {
        return view! {
            <p class="card text-sm text-slate-600" data-testid="attention-none">"Nothing needs attention."</p>
        }
        .into_any();
    }
    view! {
        <ul class="card flex flex-col gap-2 text-sm">
            {rows.into_iter().map(|(s, why)| view! {
                <li data-testid="attention-row" data-agent=s.id.0.clone() class="flex flex-wrap items-baseline gap-2">
                    <A href=format!("/servers/{}", s.id.0) attr:class="font-medium text-sky-700 underline">{s.hostname.clone()}</A>
                    <span class="text-red-700">{why.join(" · ")}</span>
                </li>
            }).collect_view()}
        </ul>
    }
    .into_any()
}

#[component]
fn LatestAudit(events: Vec<control::AuditEventView>) -> impl IntoView {
    view! {
        <ul class="card flex flex-col gap-2 text-sm" data-testid="latest-audit">
            {events.into_iter().map(|e| view! {
                <li data-testid="latest-audit-row" class="flex flex-wrap items-baseline gap-x-2">
                    <span class="text-xs text-slate-500">{e.at.display_utc()}</span>
                    <code>{e.action}</code>
                    <span class="break-all text-slate-600">{e.actor}</span>
                </li>
            }).collect_view()}
            <li><A href="/audit" attr:class="text-sky-700 underline">"Full audit log"</A></li>
        </ul>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::{AgentId, Timestamp, UnitState};

    fn server(online: bool) -> AgentView {
        AgentView {
            id: AgentId("agt_000000000000000000000001".into()),
            hostname: "web-1".into(),
            agent_version: "0.1.0".into(),
            online,
            revoked: false,
            last_seen_at: None,
            pqc: PqcState::PostQuantumActive,
            keys_registered_at: Timestamp(0),
            cert_serial: String::new(),
            cert_fingerprint: String::new(),
            cert_not_after: Timestamp(0),
            kem_key_id: None,
            tls_group: String::new(),
            production: false,
            file_access: false,
            capabilities: None,
            units: Default::default(),
            disk_high_pct: None,
            cpu_pct: None,
            mem_used: None,
            mem_total: None,
            delete_after: None,
            labels: Default::default(),
            health: None,
        }
    }

    #[test]
    fn attention_names_each_problem() {
        assert!(attention(&server(true)).is_empty());
        let mut s = server(false);
        s.disk_high_pct = Some(93.4);
        s.units.insert(
            "nginx.service".into(),
            UnitState {
                state: "failed".into(),
                since: Timestamp(0),
            },
        );
        let in_step = control::AgentHealthView {
            reported_at: Timestamp(60_000),
            started_at: Timestamp(0),
            clock_skew_ms: -30_000,
            last_error: None,
            last_error_at: None,
        };
        s.health = Some(in_step.clone());
        assert_eq!(
            attention(&s),
            vec!["offline", "disk 93 % full", "nginx.service failed"],
            "30 s off is within what signed commands allow"
        );
        s.health = Some(control::AgentHealthView {
            clock_skew_ms: -45_400,
            ..in_step
        });
        assert_eq!(
            attention(&s),
            vec![
                "offline",
                "disk 93 % full",
                "clock 45 s off",
                "nginx.service failed"
            ]
        );
        s.revoked = true;
        assert!(attention(&s).is_empty());
    }

    #[test]
    fn coverage_counts_servers_that_are_not_revoked() {
        let mut classic = server(true);
        classic.pqc = PqcState::ClassicalFallback;
        let mut revoked = server(true);
        revoked.revoked = true;
        assert_eq!(pq_coverage(&[server(true), classic, revoked]), (1, 2));
    }
}
