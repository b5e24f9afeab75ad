//! The Servers pages: the fleet list with "Add server", and a server's detail
//! with its Security tab (PQC state, keys, certificate, revocation).

use control::{AgentView, Role};
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::api::*;
use crate::chart::{self, LineChart};
use crate::pages::{me, PageTitle};
use crate::ui::{ticker, ErrorPanel, FormError};

fn status_badge(s: &AgentView) -> impl IntoView {
    let (label, class) = if s.revoked {
        ("Revoked", "badge bg-red-100 text-red-800")
    } else if s.online {
        ("Online", "badge bg-emerald-100 text-emerald-800")
    } else {
        ("Offline", "badge bg-amber-100 text-amber-800")
    };
    view! { <span data-testid="server-status" class=class>{label}</span> }
}

fn manages(role: Role) -> bool {
    role.manages_members()
}

#[component]
pub fn Servers() -> impl IntoView {
    let tick = ticker(10);
    let add = ServerAction::<CreateRegistrationToken>::new();
    let revoke_token = ServerAction::<RevokeRegistrationToken>::new();
    let update = ServerAction::<crate::agent_update::UpdateAgents>::new();
    let servers = Resource::new(move || tick.get(), |_| list_servers());
    let can_manage = manages(me().0.org.role);
    // `?version=X` shows only the servers whose agent runs version X.
    let query = use_query_map();
    let version = move || query.with(|q| q.get("version").filter(|v| !v.is_empty()));
    let tokens = Resource::new(
        move || {
            (
                tick.get(),
                add.version().get(),
                revoke_token.version().get(),
            )
        },
        move |_| async move {
            if can_manage {
                registration_tokens().await
            } else {
                Ok(Vec::new())
            }
        },
    );
    view! {
        <PageTitle title="Servers" subtitle="Servers running the Pilothouse agent. The list refreshes itself." />
        <Suspense fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match servers.await {
                    Ok(list) if list.is_empty() => view! {
                        <div class="card text-slate-600" data-testid="servers-empty">"No servers are registered yet."</div>
                    }.into_any(),
                    Ok(list) => {
                        let mut versions: Vec<String> = list.iter().map(|s| s.agent_version.clone()).collect();
                        versions.sort_by(|a, b| control::compare_versions(b, a));
                        versions.dedup();
                        let wanted = version();
                        let list: Vec<AgentView> = list
                            .into_iter()
                            .filter(|s| wanted.as_ref().is_none_or(|v| *v == s.agent_version))
                            .collect();
                        view! {
                        <VersionFilter versions wanted=wanted.clone() />
                        {(list.is_empty()).then(|| view! {
                            <div class="card text-slate-600" data-testid="servers-none-of-version">
                                {format!("No server runs agent {}.", wanted.clone().unwrap_or_default())}
                            </div>
                        })}
                        <div class="overflow-x-auto rounded-lg border border-slate-200 bg-white">
                            <table class="table">
                                <thead><tr>{can_manage.then(|| view! { <th><span class="sr-only">"Select"</span></th> })}<th>"Name"</th><th>"Status"</th><th>"Last seen"</th><th>"Agent"</th><th>"PQC"</th><th>"CPU"</th><th>"Memory"</th></tr></thead>
                                <tbody>
                                    {list.into_iter().enumerate().map(|(i, s)| {
                                        let (badge, href, name) = (status_badge(&s), format!("/servers/{}", s.id.0), s.hostname.clone());
                                        // The checkboxes belong to the "Update selected agents" form below the table.
                                        let select = (can_manage && !s.revoked).then(|| view! {
                                            <input type="checkbox" form="update-selection" name=format!("ids[{i}]") value=s.id.0.clone() data-testid="select-server" aria-label=format!("Select {}", s.hostname) />
                                        });
                                        view! {
                                        <tr data-testid="server-row" data-agent=s.id.0.clone()>
                                            {can_manage.then(|| view! { <td>{select}</td> })}
                                            <td><A href=href attr:class="font-medium text-sky-700 underline">{name}</A></td>
                                            <td>{badge}{s.health.as_ref().filter(|h| h.clock_off()).map(|h| view! {
                                                <span class="badge ml-1 bg-red-100 text-red-800" data-testid="clock-off" title=h.clock_text()>"Clock off"</span>
                                            })}</td>
                                            <td class="whitespace-nowrap text-sm">{s.last_seen_at.map(|t| t.display_utc()).unwrap_or_else(|| "never".into())}</td>
                                            <td class="text-sm">{s.agent_version.clone()}</td>
                                            <td class="text-sm" data-testid="server-pqc">{s.pqc.label()}</td>
                                            <td class="text-sm" data-testid="server-cpu">{s.cpu_pct.map(chart::percent).unwrap_or_else(|| "–".into())}</td>
                                            <td class="text-sm" data-testid="server-memory">{match (s.mem_used, s.mem_total) {
                                                (Some(u), Some(t)) => format!("{} / {}", chart::bytes(u as f64), chart::bytes(t as f64)),
                                                _ => "–".into(),
                                            }}</td>
                                        </tr>
                                    }}).collect_view()}
                                </tbody>
                            </table>
                        </div>
                        {can_manage.then(|| view! { <UpdateSelection update /> })}
                    }.into_any()
                    }
                    Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Suspense>
        {can_manage.then(|| view! {
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    let waiting: Vec<_> = tokens
                        .await
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|t| t.state == control::TokenState::Active)
                        .collect();
                    (!waiting.is_empty()).then(|| view! {
                        <section class="mt-8 max-w-3xl" data-testid="awaiting-agent">
                            <h2 class="text-lg font-semibold">"Awaiting their agent"</h2>
                            <p class="mt-1 text-sm text-slate-600">
                                {control::PqcState::AgentNotInstalled.label()}
                                ": a registration token was created and nobody has used it yet. Revoke a token you no longer need."
                            </p>
                            <table class="table mt-3 rounded-lg border border-slate-200 bg-white">
                                <thead><tr><th>"Created"</th><th>"By"</th><th>"Expires"</th><th></th></tr></thead>
                                <tbody>
                                    {waiting.into_iter().map(|t| view! {
                                        <tr data-testid="token-row">
                                            <td class="whitespace-nowrap text-sm">{t.created_at.display_utc()}</td>
                                            <td class="text-sm">{t.created_by.clone()}</td>
                                            <td class="whitespace-nowrap text-sm">{t.expires_at.display_utc()}</td>
                                            <td>
                                                <ActionForm action=revoke_token>
                                                    <input type="hidden" name="id" value=t.id.to_string() />
                                                    <button class="btn-secondary" type="submit" data-testid="revoke-token">"Revoke"</button>
                                                </ActionForm>
                                            </td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                            <FormError action=revoke_token />
                        </section>
                    })
                })}
            </Suspense>
            <AddServer add=add />
        })}
    }
}

/// "Update selected agents": offers the release this control plane holds to
/// the servers ticked in the list (their checkboxes name this form), and
/// lists what became of each.
#[component]
fn UpdateSelection(update: ServerAction<crate::agent_update::UpdateAgents>) -> impl IntoView {
    view! {
        <ActionForm action=update attr:id="update-selection" attr:class="mt-3 flex items-center gap-3">
            <button class="btn-secondary" type="submit" data-testid="update-selected">"Update selected agents"</button>
            <span class="text-sm text-slate-500">"Offers the signed release held here; each agent checks it against its pinned release key."</span>
        </ActionForm>
        <div class="mt-2">
            <FormError action=update />
            {move || update.value().get().and_then(Result::ok).map(|offers| {
                let offered = offers.iter().filter(|o| o.command.is_some()).count();
                view! {
                    <div class="text-sm text-slate-600" data-testid="update-offers">
                        <p>{format!("Update offered to {offered} of {} servers.", offers.len())}</p>
                        <ul class="mt-1 list-disc pl-5">
                            {offers.into_iter().filter_map(|o| o.skipped.map(|why| view! {
                                <li data-testid="update-skipped">{format!("{}: {why}", o.hostname)}</li>
                            })).collect_view()}
                        </ul>
                    </div>
                }
            })}
        </div>
    }
    .into_any()
}

/// A form (plain GET, so it works without JavaScript) that filters the
/// servers list by agent version.
#[component]
fn VersionFilter(versions: Vec<String>, wanted: Option<String>) -> impl IntoView {
    view! {
        <form method="get" action="/servers" class="mb-3 flex items-center gap-2 text-sm" data-testid="version-filter">
            <label for="version" class="text-slate-600">"Agent version"</label>
            <select id="version" name="version" class="input w-auto">
                <option value="" selected=wanted.is_none()>"All"</option>
                {versions.into_iter().map(|v| {
                    let selected = wanted.as_deref() == Some(v.as_str());
                    view! { <option value=v.clone() selected=selected>{v.clone()}</option> }
                }).collect_view()}
            </select>
            <button class="btn-secondary" type="submit">"Filter"</button>
        </form>
    }
    .into_any()
}

/// The "Add server" section: a new token and its commands.
#[component]
fn AddServer(add: ServerAction<CreateRegistrationToken>) -> impl IntoView {
    view! {
            <section class="mt-8 max-w-3xl">
                <h2 class="text-lg font-semibold">"Add server"</h2>
                <p class="mt-1 text-sm text-slate-600">
                    "Creates a one-time registration token (valid for one hour). Run the command on the new server as root: it checks this control plane's certificate against the pin inside the token before sending anything, checks the agent's release signature, installs the agent as a systemd service and registers it. The token goes in on standard input, so other users never see it in the process list."
                </p>
                <ActionForm action=add attr:class="mt-3">
                    <button class="btn-primary" type="submit">"Add server"</button>
                </ActionForm>
                <div class="mt-3">
                    <FormError action=add />
                    {move || add.value().get().and_then(Result::ok).map(|t| view! { <NewServerCommands t=t /> })}
                </div>
            </section>
    }
    .into_any()
}

/// The commands for a new registration token: the one line, and the same by hand.
#[component]
fn NewServerCommands(t: crate::api::NewServerToken) -> impl IntoView {
    view! {
                        <div class="rounded-md bg-slate-900 p-3 text-sm text-slate-100">
                            <code data-testid="install-command" class="block break-all">{t.install}</code>
                        </div>
                        <p class="mt-1 text-xs text-slate-500">{format!("Expires {}. Shown only once.", t.expires_at.display_utc())}</p>
                        <details class="mt-3 text-sm" data-testid="manual-install">
                            <summary class="cursor-pointer text-slate-700">"By hand, or for a server that cannot fetch from here"</summary>
                            <ol class="mt-2 list-decimal space-y-2 pl-5 text-slate-600">
                                <li>
                                    "Download the CA certificate, check its SHA-256 against the pin, then the agent, its signed manifest and the release key (on any machine that reaches this control plane):"
                                    <code class="mt-1 block whitespace-pre-wrap break-all rounded bg-slate-100 p-2">{t.download}</code>
                                </li>
                                <li>"Check the release signature as the install script does (docs/agent-install.md), copy the binary to /usr/local/bin/pilothouse-agent (mode 0755) and create the system user pilothouse-agent."</li>
                                <li>
                                    "Register, as root:"
                                    <code data-testid="register-command" class="mt-1 block break-all rounded bg-slate-100 p-2">{t.command}</code>
                                </li>
                                <li>"Hand the state directory to the agent's user and start it: chown -R pilothouse-agent: /var/lib/pilothouse-agent, then install the unit from /install/pilothouse-agent.service and run systemctl enable --now pilothouse-agent."</li>
                            </ol>
                        </details>
    }
    .into_any()
}

#[component]
pub fn ServerDetail() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let tick = ticker(5);
    let ping = ServerAction::<PingServer>::new();
    let revoke = ServerAction::<RevokeServer>::new();
    let rotate = ServerAction::<RotateKeys>::new();
    let activate = ServerAction::<ActivatePqc>::new();
    let server = Resource::new(
        move || {
            (
                id(),
                tick.get(),
                revoke.version().get(),
                rotate.version().get(),
                activate.version().get(),
            )
        },
        |(id, ..)| server_detail(id),
    );
    let can_manage = manages(me().0.org.role);
    view! {
        <A href="/servers" attr:class="text-sm text-sky-700 underline">"← All servers"</A>
        <Suspense fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match server.await {
                    Ok(s) => view! { <ServerView s can_manage ping revoke rotate activate /> }.into_any(),
                    Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Suspense>
        // Outside the Suspend above: resources made inside a Suspend during
        // server rendering do not line up with the browser's when it hydrates.
        <crate::agent_update::AgentUpdate tick />
        <crate::operations::ServerOperations tick />
        <crate::server_admin::ServerLifecycle />
        <Commands tick />
        <Metrics />
    }
}

#[component]
fn Field(label: &'static str, testid: &'static str, value: String) -> impl IntoView {
    view! {
        <div>
            <dt class="text-xs font-semibold uppercase tracking-wide text-slate-500">{label}</dt>
            <dd class="mt-0.5 break-all font-mono text-sm" data-testid=testid>{value}</dd>
        </div>
    }
}

#[component]
fn ServerView(
    s: AgentView,
    can_manage: bool,
    ping: ServerAction<PingServer>,
    revoke: ServerAction<RevokeServer>,
    rotate: ServerAction<RotateKeys>,
    activate: ServerAction<ActivatePqc>,
) -> impl IntoView {
    let id = s.id.0.clone();
    let active = !s.revoked;
    let fallback = s.pqc == control::PqcState::ClassicalFallback;
    view! {
        <div class="mt-2 mb-6 flex items-center gap-3">
            <h1 class="text-2xl font-semibold tracking-tight">{s.hostname.clone()}</h1>
            {status_badge(&s)}
        </div>
        <section class="card">
            <h2 class="mb-4 text-lg font-semibold">"Security"</h2>
            <dl class="grid gap-4 md:grid-cols-2">
                <Field label="Post-quantum encryption" testid="pqc-state" value=s.pqc.label().to_string() />
                <Field label="Keys registered" testid="keys-registered" value=s.keys_registered_at.display_utc() />
                <Field label="Agent id" testid="agent-id" value=s.id.0.clone() />
                <Field label="Command key id (X-Wing)" testid="kem-key-id" value=s.kem_key_id.clone().unwrap_or_else(|| "none".into()) />
                <Field label="Certificate serial" testid="cert-serial" value=s.cert_serial.clone() />
                <Field label="Certificate expires" testid="cert-expiry" value=s.cert_not_after.display_utc() />
                <Field label="Certificate fingerprint (SHA-256)" testid="cert-fingerprint" value=s.cert_fingerprint.clone() />
                <Field label="TLS group in use" testid="tls-group" value=if s.tls_group.is_empty() { "not connected yet".to_string() } else { s.tls_group.clone() } />
            </dl>
            {if can_manage && active {
                let (id1, id2, id3, id4) = (id.clone(), id.clone(), id.clone(), id.clone());
                view! {
                    <div class="mt-6 flex flex-wrap items-start gap-3">
                        <ActionForm action=rotate>
                            <input type="hidden" name="id" value=id3 />
                            <button class="btn-primary" type="submit">"Rotate Keys"</button>
                        </ActionForm>
                        {if fallback {
                            view! {
                                <ActionForm action=activate>
                                    <input type="hidden" name="id" value=id4 />
                                    <button class="btn-primary" type="submit">"Activate Post-Quantum Encryption"</button>
                                </ActionForm>
                            }.into_any()
                        } else {
                            // An element on both branches keeps server and browser markup alike for hydration.
                            view! { <span class="hidden"></span> }.into_any()
                        }}
                        <ActionForm action=ping>
                            <input type="hidden" name="id" value=id1 />
                            <button class="btn-secondary" type="submit">"Ping"</button>
                        </ActionForm>
                        <details class="rounded-md border border-red-200 px-3 py-2">
                            <summary class="cursor-pointer text-sm font-medium text-red-700">"Revoke agent"</summary>
                            <p class="mt-2 max-w-sm text-sm text-slate-600">
                                "The agent's certificate is refused at once and its pending commands are cancelled. The server can enrol again with a new token."
                            </p>
                            <ActionForm action=revoke attr:class="mt-2">
                                <input type="hidden" name="id" value=id2 />
                                <button class="btn-danger" type="submit">"Confirm revoke"</button>
                            </ActionForm>
                        </details>
                    </div>
                    <div class="mt-3 flex flex-col gap-2">
                        <FormError action=ping />
                        <FormError action=revoke />
                        <FormError action=rotate />
                        <FormError action=activate />
                        {move || ping.value().get().and_then(Result::ok).map(|c| view! {
                            <p class="text-sm text-slate-600" data-testid="ping-queued">{format!("Ping queued ({c}).")}</p>
                        })}
                    </div>
                }.into_any()
            } else {
                view! {
                    <p class="mt-6 text-sm text-slate-500" data-testid="read-only-note">
                        "Only Owners and Admins can rotate keys, activate post-quantum encryption or revoke this server."
                    </p>
                }.into_any()
            }}
        </section>
    }
}

#[component]
fn Metrics() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let range = move || {
        query
            .with(|q| q.get("range"))
            .filter(|r| r == "day")
            .unwrap_or_else(|| "hour".into())
    };
    let tick = ticker(10);
    let data = Resource::new(
        move || (id(), range(), tick.get()),
        |(id, range, _)| async move {
            let now = control::Timestamp::now_browser_or_server();
            (server_metrics(id, range.clone()).await, range, now)
        },
    );
    view! {
        <section class="mt-6">
            <div class="mb-3 flex items-center gap-4">
                <h2 class="text-lg font-semibold">"Metrics"</h2>
                <A href="?range=hour" attr:class="text-sm text-sky-700 underline">"Last hour"</A>
                <A href="?range=day" attr:class="text-sm text-sky-700 underline">"Last day"</A>
            </div>
            <Suspense fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let (result, range, now) = data.await;
                    match result {
                        Ok(points) => {
                            let span = if range == "day" { 86_400_000 } else { 3_600_000 };
                            let (x_min, x_max) = (now - span, now);
                            let series = |f: fn(&control::MetricPoint) -> f64| points.iter().map(|p| (p.at.0, f(p))).collect::<Vec<_>>();
                            let mem_top = points.iter().map(|p| p.mem_total as f64).fold(0.0, f64::max);
                            let disk_top = points.iter().map(|p| p.disk_total as f64).fold(0.0, f64::max);
                            view! {
                                <div class="grid gap-4 md:grid-cols-2">
                                    <LineChart title="CPU" testid="chart-cpu" points=series(|p| p.cpu_pct) x_min x_max y_max=100.0 format=chart::percent />
                                    <LineChart title="Memory used" testid="chart-memory" points=series(|p| p.mem_used as f64) x_min x_max y_max=mem_top format=chart::bytes />
                                    <LineChart title="Disk used" testid="chart-disk" points=series(|p| p.disk_used as f64) x_min x_max y_max=disk_top format=chart::bytes />
                                    <LineChart title="Network received" testid="chart-net-rx" points=series(|p| p.net_rx_bps) x_min x_max format=chart::rate />
                                    <LineChart title="Network sent" testid="chart-net-tx" points=series(|p| p.net_tx_bps) x_min x_max format=chart::rate />
                                    <LineChart title="Load (1 min)" testid="chart-load" points=series(|p| p.load1) x_min x_max format=chart::plain />
                                </div>
                            }.into_any()
                        }
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn Commands(tick: ReadSignal<u32>) -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let list = Resource::new(move || (id(), tick.get()), |(id, _)| recent_commands(id));
    view! {
        <section class="mt-6">
            <h2 class="mb-3 text-lg font-semibold">"Recent commands"</h2>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    match list.await {
                        Ok(rows) if rows.is_empty() => view! { <p class="text-sm text-slate-600">"None yet."</p> }.into_any(),
                        Ok(rows) => view! {
                            <table class="table rounded-lg border border-slate-200 bg-white">
                                <thead><tr><th>"Command"</th><th>"State"</th><th>"Queued"</th><th>"Finished"</th></tr></thead>
                                <tbody>
                                    {rows.into_iter().map(|c| view! {
                                        <tr data-testid="command-row" data-kind=c.kind.as_str() data-state=c.state.as_str() title=c.kind.label()>
                                            <td><code>{c.kind.as_str()}</code></td>
                                            <td data-testid="command-state">{c.state.as_str()}</td>
                                            <td class="whitespace-nowrap text-sm">{c.created_at.display_utc()}</td>
                                            <td class="whitespace-nowrap text-sm">{c.finished_at.map(|t| t.display_utc()).unwrap_or_default()}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}
