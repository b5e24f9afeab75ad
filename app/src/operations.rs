//! Operations and approvals in the dashboard: the Approvals queue, an
//! operation's page with its live output, and the Operations card of a
//! server (capabilities, watched units, protections, the propose form and
//! the AI Pilot's findings).
//!
//! Every rule (roles, risk, production, own proposals) is decided in
//! `control`; the buttons shown here only mirror it, through
//! [`decision_refusal`] and the flags of [`OperationPage`]. A page that
//! refreshes itself keeps its forms in a part that is redrawn only when what
//! they offer changes, so a half-typed reason is never wiped by a refresh.

use control::{
    AgentView, Capabilities, FindingView, OpKind, OperationState, OperationView, Origin, Risk,
    Role, TargetState, TargetView, TimelineEntry, UnitStates,
};
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;

use crate::api::server_detail;
use crate::ops_api::*;
use crate::pages::{me, PageTitle};
use crate::ui::{refresh_badge_on, ticker, ErrorPanel, FormError, SignedInUser};

// ---------------------------------------------------------------------------
// Small shared pieces

pub(crate) fn risk_badge(risk: Risk) -> impl IntoView {
    let class = match risk {
        Risk::Low => "badge bg-emerald-100 text-emerald-800",
        Risk::Medium => "badge bg-amber-100 text-amber-800",
        Risk::High => "badge bg-orange-100 text-orange-900",
        Risk::Destructive => "badge bg-red-100 text-red-800",
    };
    view! { <span data-testid="risk" data-risk=risk.as_str() class=class>{risk.label()}</span> }
}

pub(crate) fn state_badge(state: OperationState) -> impl IntoView {
    let class = match state {
        OperationState::Proposed => "badge bg-sky-100 text-sky-800",
        OperationState::Approved | OperationState::Dispatched | OperationState::Running => {
            "badge bg-indigo-100 text-indigo-800"
        }
        OperationState::Succeeded => "badge bg-emerald-100 text-emerald-800",
        OperationState::Failed => "badge bg-red-100 text-red-800",
        OperationState::Halted => "badge bg-amber-100 text-amber-800",
        OperationState::Rejected | OperationState::Expired | OperationState::Cancelled => "badge",
    };
    view! { <span data-testid="op-state" data-state=state.as_str() class=class>{state.label()}</span> }
}

fn target_state_badge(state: TargetState) -> impl IntoView {
    let class = match state {
        TargetState::Succeeded => "badge bg-emerald-100 text-emerald-800",
        TargetState::Failed => "badge bg-red-100 text-red-800",
        TargetState::Dispatched => "badge bg-indigo-100 text-indigo-800",
        TargetState::Waiting => "badge bg-sky-100 text-sky-800",
        TargetState::Expired | TargetState::Cancelled | TargetState::Skipped => "badge",
    };
    view! { <span data-testid="target-state" data-state=state.as_str() class=class>{state.label()}</span> }
}

fn production_mark() -> impl IntoView {
    view! { <span data-testid="production-mark" class="badge bg-red-100 text-red-800">"production"</span> }
}

/// The target servers, each linked, production ones marked.
fn targets_line(targets: &[TargetView]) -> impl IntoView {
    targets
        .iter()
        .map(|t| {
            let href = format!("/servers/{}", t.agent.0);
            let name = t.hostname.clone();
            view! {
                <span class="mr-3 inline-flex items-center gap-1" data-testid="op-target-name">
                    <A href=href attr:class="text-sky-700 underline">{name}</A>
                    {t.production.then(production_mark)}
                </span>
            }
        })
        .collect_view()
}

fn proposer(op: &OperationView) -> String {
    match op.origin {
        Origin::Pilot => "AI Pilot".to_string(),
        _ => op.proposer.clone(),
    }
}

/// The arguments as indented JSON (as stored when they are not JSON).
fn pretty_json(raw: &str) -> String {
    serde_json::from_str::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| raw.to_string())
}

fn plan_block(args: &str) -> impl IntoView {
    view! {
        <pre data-testid="op-plan" class="overflow-x-auto whitespace-pre-wrap break-all rounded-md bg-slate-100 p-3 text-xs">
            {pretty_json(args)}
        </pre>
    }
}

/// A labelled value in a definition list.
#[component]
fn Fact(label: &'static str, children: Children) -> impl IntoView {
    view! {
        <div class="min-w-0">
            <dt class="text-xs font-semibold uppercase tracking-wide text-slate-500">{label}</dt>
            <dd class="mt-0.5 break-words text-sm">{children()}</dd>
        </div>
    }
}

/// The inside of a form that acts on an operation with a required reason.
fn reason_fields(
    id: &str,
    reason_label: &'static str,
    button: &'static str,
    button_class: &'static str,
) -> impl IntoView {
    view! {
        <input type="hidden" name="id" value=id.to_string() />
        <label class="min-w-0 flex-1">
            <span class="sr-only">{reason_label}</span>
            <input class="input w-full" type="text" name="reason" required maxlength="2000" placeholder=reason_label />
        </label>
        <button class=button_class type="submit">{button}</button>
    }
}

const FORM_ROW: &str = "flex min-w-0 flex-wrap items-center gap-2";

#[component]
fn DecisionForms(
    id: String,
    approve: ServerAction<ApproveOperation>,
    reject: ServerAction<RejectOperation>,
) -> impl IntoView {
    let approving = reason_fields(&id, "Reason for approving", "Approve", "btn-primary");
    let rejecting = reason_fields(&id, "Reason for rejecting", "Reject", "btn-danger");
    view! {
        <div class="grid gap-3 lg:grid-cols-2" data-testid="decision-forms">
            <ActionForm action=approve attr:class=FORM_ROW>{approving}</ActionForm>
            <ActionForm action=reject attr:class=FORM_ROW>{rejecting}</ActionForm>
        </div>
    }
}

/// Operations in a table: the Approvals page's history and the dashboard.
#[component]
pub(crate) fn OperationsTable(ops: Vec<OperationView>) -> impl IntoView {
    view! {
        <div class="overflow-x-auto rounded-lg border border-slate-200 bg-white">
            <table class="table">
                <thead>
                    <tr><th>"Operation"</th><th>"State"</th><th>"Risk"</th><th>"Servers"</th><th>"Proposed by"</th><th>"Created"</th></tr>
                </thead>
                <tbody>
                    {ops.into_iter().map(|op| {
                        let href = format!("/operations/{}", op.id.0);
                        let who = proposer(&op);
                        view! {
                            <tr data-testid="recent-op" data-op=op.id.0.clone() data-kind=op.kind.as_str()>
                                <td>
                                    <A href=href attr:class="font-medium text-sky-700 underline">{op.kind.label()}</A>
                                    <div class="text-xs text-slate-500"><code>{op.summary.clone()}</code></div>
                                </td>
                                <td>{state_badge(op.state)}</td>
                                <td>{risk_badge(op.risk)}</td>
                                <td class="text-sm">{targets_line(&op.targets)}</td>
                                <td class="text-sm">{who}</td>
                                <td class="whitespace-nowrap text-sm">{op.created_at.display_utc()}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

// ---------------------------------------------------------------------------
// The Approvals page

#[component]
pub fn Approvals() -> impl IntoView {
    let approve = ServerAction::<ApproveOperation>::new();
    let reject = ServerAction::<RejectOperation>::new();
    let decided = move || approve.version().get() + reject.version().get();
    // Not refreshed on a timer: that would redraw the forms under the
    // person typing a reason. The nav badge says when more arrive.
    let pending = Resource::new(decided, |_| pending_operations());
    let recent = Resource::new(decided, |_| recent_operations(Some(20)));
    refresh_badge_on(decided);
    view! {
        <PageTitle title="Approvals" subtitle="Operations proposed by people and the AI Pilot wait here for a human decision." />
        <div class="mb-4 flex flex-col gap-2">
            <FormError action=approve />
            <FormError action=reject />
        </div>
        <section aria-label="Awaiting approval">
            <Suspense fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match pending.await {
                        Ok(list) if list.is_empty() => view! {
                            <div class="card text-slate-600" data-testid="approvals-empty">"Nothing is waiting for approval."</div>
                        }.into_any(),
                        Ok(list) => view! {
                            <div class="flex flex-col gap-4">
                                {list.into_iter().map(|op| view! { <PendingItem op approve reject /> }).collect_view()}
                            </div>
                        }.into_any(),
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
        <section class="mt-8">
            <h2 class="mb-3 text-lg font-semibold">"Recent operations"</h2>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    match recent.await {
                        Ok(ops) if ops.is_empty() => view! { <p class="text-sm text-slate-600">"None yet."</p> }.into_any(),
                        Ok(ops) => view! { <OperationsTable ops /> }.into_any(),
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

/// One proposal in the queue, with the decision forms when the viewer may
/// decide, the reason why not for Members and above, and nothing for Viewers.
#[component]
fn PendingItem(
    op: OperationView,
    approve: ServerAction<ApproveOperation>,
    reject: ServerAction<RejectOperation>,
) -> impl IntoView {
    let SignedInUser(me) = me();
    let refusal = decision_refusal(&me, &op);
    let viewer = me.org.role == Role::Viewer;
    let id = op.id.0.clone();
    let href = format!("/operations/{id}");
    let decision = match refusal {
        None => view! { <DecisionForms id=id.clone() approve reject /> }.into_any(),
        Some(why) if !viewer => view! {
            <p data-testid="decide-refusal" class="rounded-md bg-slate-100 px-3 py-2 text-sm text-slate-700">{why}</p>
        }
        .into_any(),
        Some(_) => ().into_any(),
    };
    let (kind, label) = (op.kind.as_str(), op.kind.label());
    let (targets, who) = (targets_line(&op.targets), proposer(&op));
    let (reason, created) = (op.reason.clone(), op.created_at.display_utc());
    view! {
        <article class="card" data-testid="pending-op" data-op=id data-kind=kind>
            <div class="flex flex-wrap items-center gap-2">
                <A href=href attr:class="text-lg font-semibold text-sky-700 underline" attr:data-testid="op-link">{label}</A>
                {risk_badge(op.risk)}
                <code class="break-all text-sm text-slate-600">{op.summary.clone()}</code>
            </div>
            <dl class="mt-3 grid gap-3 sm:grid-cols-2">
                <Fact label="Servers"><span data-testid="op-targets">{targets}</span></Fact>
                <Fact label="Proposed by"><span data-testid="op-proposer">{who}</span></Fact>
                <Fact label="Reason"><span data-testid="op-reason">{reason}</span></Fact>
                <Fact label="Proposed at">{created}</Fact>
            </dl>
            {op.evidence.clone().map(|e| view! {
                <div class="mt-3">
                    <div class="card-label">"Evidence"</div>
                    <p data-testid="op-evidence" class="mt-0.5 break-words text-sm">{e}</p>
                </div>
            })}
            <div class="mt-3">
                <div class="card-label">"Plan"</div>
                <div class="mt-1">{plan_block(&op.args)}</div>
            </div>
            <div class="mt-4">{decision}</div>
        </article>
    }
}

// ---------------------------------------------------------------------------
// The operation page

/// The actions of the operation page; any of them completing refreshes it.
#[derive(Clone, Copy)]
struct OpActions {
    approve: ServerAction<ApproveOperation>,
    reject: ServerAction<RejectOperation>,
    cancel: ServerAction<CancelOperation>,
    halt: ServerAction<HaltOperation>,
    resume: ServerAction<ResumeOperation>,
}

impl OpActions {
    fn new() -> Self {
        Self {
            approve: ServerAction::new(),
            reject: ServerAction::new(),
            cancel: ServerAction::new(),
            halt: ServerAction::new(),
            resume: ServerAction::new(),
        }
    }

    /// Moves whenever one of them completes (tracked).
    fn version(self) -> usize {
        self.approve.version().get()
            + self.reject.version().get()
            + self.cancel.version().get()
            + self.halt.version().get()
            + self.resume.version().get()
    }
}

#[component]
pub fn OperationDetail() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let actions = OpActions::new();
    let tick = ticker(2);
    // The state last seen, known in the browser only (an effect sets it).
    let (seen, set_seen) = signal(None::<OperationState>);
    let finished = move || seen.get().is_some_and(OperationState::is_final);
    // Refreshed every 2 s until the operation is final.
    let live = Resource::new(
        move || (id(), actions.version(), (!finished()).then(|| tick.get())),
        |(id, ..)| operation(id),
    );
    // The forms: redrawn only after an action or when the state moves.
    let forms = Resource::new(
        move || (id(), actions.version(), seen.get()),
        |(id, ..)| operation(id),
    );
    Effect::new(move |_| {
        if let Some(Ok(page)) = live.get() {
            if seen.get_untracked() != Some(page.op.state) {
                set_seen.set(Some(page.op.state));
            }
        }
    });
    refresh_badge_on(move || actions.version());
    view! {
        <A href="/approvals" attr:class="text-sm text-sky-700 underline">"← Approvals"</A>
        <Transition fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match live.await {
                    Ok(page) => view! { <OperationHeader op=page.op /> }.into_any(),
                    Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Transition>
        <div class="mt-4 flex flex-col gap-2">
            <FormError action=actions.approve />
            <FormError action=actions.reject />
            <FormError action=actions.cancel />
            <FormError action=actions.halt />
            <FormError action=actions.resume />
        </div>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                forms.await.ok().map(|page| view! { <OperationActions page actions /> })
            })}
        </Suspense>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                live.await.ok().map(|page| view! { <OperationBody page /> })
            })}
        </Transition>
    }
}

#[component]
fn OperationHeader(op: OperationView) -> impl IntoView {
    let (who, created) = (proposer(&op), op.created_at.display_utc());
    let (reason, targets) = (op.reason.clone(), targets_line(&op.targets));
    let rollout = (op.targets.len() > 1).then(|| {
        format!(
            "{} server(s) at a time; halts after {} failed server(s).",
            op.max_parallel,
            op.error_threshold + 1
        )
    });
    view! {
        <div class="mt-2 mb-2 flex flex-wrap items-center gap-3">
            <h1 class="text-2xl font-semibold tracking-tight">{op.kind.label()}</h1>
            {state_badge(op.state)}
            {risk_badge(op.risk)}
        </div>
        <p class="mb-4 break-all"><code data-testid="op-summary">{op.summary}</code></p>
        <dl class="card grid gap-4 sm:grid-cols-2">
            <Fact label="Proposed by"><span data-testid="op-proposer">{who}</span></Fact>
            <Fact label="Proposed at">{created}</Fact>
            <Fact label="Reason"><span data-testid="op-reason">{reason}</span></Fact>
            <Fact label="Servers">{targets}</Fact>
            {op.evidence.map(|e| view! {
                <Fact label="Evidence"><span data-testid="op-evidence">{e}</span></Fact>
            })}
            {op.approval_expires_at.map(|t| view! {
                <Fact label="Approval holds until">{t.display_utc()}</Fact>
            })}
            {op.self_approved.then(|| view! {
                <Fact label="Approval">"Run by its proposer on their own approval."</Fact>
            })}
            {rollout.map(|r| view! { <Fact label="Rollout">{r}</Fact> })}
        </dl>
    }
}

/// The buttons the viewer may use now; the reason they may not decide.
#[component]
fn OperationActions(page: OperationPage, actions: OpActions) -> impl IntoView {
    let id = page.op.id.0.clone();
    let state = page.op.state;
    let halt = page.can_supervise
        && matches!(
            state,
            OperationState::Approved | OperationState::Dispatched | OperationState::Running
        );
    let resume = page.can_supervise && state == OperationState::Halted;
    let anything =
        page.can_decide || page.decide_refusal.is_some() || page.can_cancel || halt || resume;
    anything.then(|| view! {
        <section class="card mt-4 flex flex-col gap-3" data-testid="op-actions">
            {page.can_decide.then(|| view! {
                <DecisionForms id=id.clone() approve=actions.approve reject=actions.reject />
            })}
            {page.decide_refusal.clone().map(|why| view! {
                <p data-testid="decide-refusal" class="rounded-md bg-slate-100 px-3 py-2 text-sm text-slate-700">{why}</p>
            })}
            {halt.then(|| {
                let fields = reason_fields(&id, "Reason for halting", "Halt", "btn-secondary");
                view! { <ActionForm action=actions.halt attr:class=FORM_ROW>{fields}</ActionForm> }
            })}
            {resume.then(|| {
                let fields = reason_fields(&id, "Reason for resuming", "Resume", "btn-primary");
                view! { <ActionForm action=actions.resume attr:class=FORM_ROW>{fields}</ActionForm> }
            })}
            {page.can_cancel.then(|| {
                let fields = reason_fields(&id, "Reason for cancelling", "Cancel operation", "btn-danger");
                view! { <ActionForm action=actions.cancel attr:class=FORM_ROW>{fields}</ActionForm> }
            })}
        </section>
    })
}

#[component]
fn OperationBody(page: OperationPage) -> impl IntoView {
    let OperationPage {
        op,
        timeline,
        outputs,
        ..
    } = page;
    let names: Vec<(control::AgentId, String)> = op
        .targets
        .iter()
        .map(|t| (t.agent.clone(), t.hostname.clone()))
        .collect();
    view! {
        <section class="mt-6">
            <h2 class="mb-3 text-lg font-semibold">"Servers and output"</h2>
            <div class="flex flex-col gap-3">
                {op.targets
                    .into_iter()
                    .zip(outputs.into_iter().chain(std::iter::repeat(None)))
                    .map(|(target, output)| view! { <TargetCard target output /> })
                    .collect_view()}
            </div>
        </section>
        <section class="mt-6 grid gap-6 lg:grid-cols-2">
            <div class="min-w-0">
                <h2 class="mb-3 text-lg font-semibold">"Plan"</h2>
                {plan_block(&op.args)}
            </div>
            <div class="min-w-0">
                <h2 class="mb-3 text-lg font-semibold">"Approvals"</h2>
                {if op.approvals.is_empty() {
                    view! { <p class="text-sm text-slate-600">"None yet."</p> }.into_any()
                } else {
                    view! {
                        <ul class="flex flex-col gap-2">
                            {op.approvals.into_iter().map(|a| view! {
                                <li data-testid="approval" class="rounded-md border border-slate-200 bg-white p-3 text-sm">
                                    <div class="flex flex-wrap items-center gap-2">
                                        <span class="font-medium break-all">{a.label}</span>
                                        <span class="badge">{a.role.label()}</span>
                                        <span class="text-xs text-slate-500">{a.at.display_utc()}</span>
                                    </div>
                                    <p class="mt-1 break-words text-slate-700">{a.reason}</p>
                                </li>
                            }).collect_view()}
                        </ul>
                    }.into_any()
                }}
            </div>
        </section>
        <section class="mt-6">
            <h2 class="mb-3 text-lg font-semibold">"Timeline"</h2>
            <ol class="flex flex-col gap-2 border-l-2 border-slate-200 pl-4">
                {timeline.into_iter().map(|e| view! { <TimelineItem entry=e names=names.clone() /> }).collect_view()}
            </ol>
        </section>
    }
}

#[component]
fn TargetCard(target: TargetView, output: Option<String>) -> impl IntoView {
    let href = format!("/servers/{}", target.agent.0);
    view! {
        <article class="card" data-testid="op-target" data-agent=target.agent.0.clone()>
            <div class="flex flex-wrap items-center gap-2">
                <A href=href attr:class="font-medium text-sky-700 underline">{target.hostname.clone()}</A>
                {target.production.then(production_mark)}
                {target_state_badge(target.state)}
            </div>
            <p class="mt-1 text-xs text-slate-500">
                "Plan hash "
                <code data-testid="plan-hash" class="break-all">{target.plan_hash.clone()}</code>
            </p>
            {match output {
                Some(text) => view! {
                    <pre data-testid="target-output" class="mt-3 max-h-96 overflow-auto whitespace-pre-wrap break-all rounded-md bg-slate-900 p-3 text-xs text-slate-100">
                        {text}
                    </pre>
                }.into_any(),
                None => view! {
                    <p class="mt-3 text-sm text-slate-500" data-testid="target-no-output">"No output yet."</p>
                }.into_any(),
            }}
        </article>
    }
}

/// A history entry's state for people: an operation's or a target's label
/// (a proposal's entry reads "Proposed": it no longer waits once decided).
fn state_label(raw: &str) -> String {
    if raw == OperationState::Proposed.as_str() {
        return "Proposed".to_string();
    }
    raw.parse::<OperationState>()
        .map(|s| s.label().to_string())
        .or_else(|_| raw.parse::<TargetState>().map(|s| s.label().to_string()))
        .unwrap_or_else(|_| raw.to_string())
}

#[component]
fn TimelineItem(entry: TimelineEntry, names: Vec<(control::AgentId, String)>) -> impl IntoView {
    let server = entry.agent.as_ref().map(|a| {
        names
            .iter()
            .find(|(id, _)| id == a)
            .map(|(_, name)| name.clone())
            .unwrap_or_else(|| a.0.clone())
    });
    view! {
        <li data-testid="timeline-entry" data-state=entry.state.clone() class="text-sm">
            <div class="flex flex-wrap items-baseline gap-2">
                <span class="text-xs text-slate-500">{entry.at.display_utc()}</span>
                <span class="font-medium">{state_label(&entry.state)}</span>
                {server.map(|s| view! { <span class="text-slate-600">{format!("on {s}")}</span> })}
                <span class="break-all text-slate-600">{format!("by {}", entry.actor)}</span>
            </div>
            {entry.reason.map(|r| view! { <p class="break-words text-slate-700">{r}</p> })}
        </li>
    }
}

// ---------------------------------------------------------------------------
// The server page's Operations card

#[component]
pub fn ServerOperations(tick: ReadSignal<u32>) -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let production = ServerAction::<SetProduction>::new();
    let file_access = ServerAction::<SetFileAccess>::new();
    let propose = ServerAction::<ProposeOnServer>::new();
    let toggled = move || production.version().get() + file_access.version().get();
    let live = Resource::new(
        move || (id(), tick.get(), toggled()),
        |(id, ..)| async move { (server_detail(id.clone()).await, pilot_findings(id).await) },
    );
    let role = me().0.org.role;
    let can_manage = role.manages_members();
    let can_propose = role.rank() >= Role::Member.rank();
    view! {
        <section class="card mt-6" data-testid="server-operations">
            <h2 class="mb-4 text-lg font-semibold">"Operations"</h2>
            <Transition fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    live.await.0.ok().map(|s| {
                        let note = if !can_manage {
                            Some("Only Owners and Admins change these.")
                        } else if !writable(&s) {
                            Some("This server is revoked or scheduled for deletion: its settings are read-only.")
                        } else {
                            None
                        };
                        view! {
                            <div class="grid gap-6 md:grid-cols-2">
                                <Protections s=s.clone() production file_access note />
                                <WatchedUnits units=s.units />
                            </div>
                        }
                    })
                })}
            </Transition>
            <div class="mt-3 flex flex-col gap-2">
                <FormError action=production />
                <FormError action=file_access />
            </div>
            // Redrawn from the same refresh as the rest of the card: a redraw
            // patches the form's elements in place, so what someone has typed
            // or chosen stays.
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    live.await.0.ok().map(|s| {
                        let active = writable(&s);
                        let server = s.id.0.clone();
                        let caps = s.capabilities;
                        view! {
                            <DeclaredCapabilities caps=caps.clone() />
                            {(can_propose && active).then(|| caps.map(|caps| view! { <ProposeForm server caps propose /> }))}
                        }
                    })
                })}
            </Transition>
            <div class="mt-3"><FormError action=propose /></div>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    live.await.1.ok().map(|findings| view! { <PilotFindings findings /> })
                })}
            </Transition>
        </section>
    }
}

/// Whether the server takes changes: not revoked, not scheduled for deletion.
fn writable(s: &AgentView) -> bool {
    !s.revoked && s.delete_after.is_none()
}

/// The inside of a form that turns a server's protection on or off.
fn toggle_fields(id: &str, on: bool, what: &'static str) -> impl IntoView {
    let (next, verb) = if on { ("false", "off") } else { ("true", "on") };
    view! {
        <input type="hidden" name="id" value=id.to_string() />
        <input type="hidden" name="on" value=next />
        <button class="btn-secondary py-1" type="submit">{format!("Turn {verb} {what}")}</button>
    }
}

#[component]
fn ProtectionRow(
    title: &'static str,
    testid: &'static str,
    on: bool,
    help: &'static str,
    children: Children,
) -> impl IntoView {
    let (label, class) = if on {
        ("On", "badge bg-emerald-100 text-emerald-800")
    } else {
        ("Off", "badge")
    };
    view! {
        <div>
            <div class="flex flex-wrap items-center gap-2">
                <span class="font-medium">{title}</span>
                <span data-testid=testid class=class>{label}</span>
            </div>
            <p class="mt-1 text-sm text-slate-600">{help}</p>
            <div class="mt-2">{children()}</div>
        </div>
    }
}

#[component]
fn Protections(
    s: AgentView,
    production: ServerAction<SetProduction>,
    file_access: ServerAction<SetFileAccess>,
    /// Why the toggles are not offered; `None` shows them.
    note: Option<&'static str>,
) -> impl IntoView {
    let can_manage = note.is_none();
    let id = s.id.0.clone();
    let agent_says_production = s.capabilities.as_ref().is_some_and(|c| c.production);
    let production_form = can_manage.then(|| {
        let fields = toggle_fields(&id, s.production, "Production Protection");
        view! { <ActionForm action=production>{fields}</ActionForm> }
    });
    let file_access_form = can_manage.then(|| {
        let fields = toggle_fields(&id, s.file_access, "AI File Access");
        view! { <ActionForm action=file_access>{fields}</ActionForm> }
    });
    view! {
        <div class="flex flex-col gap-4" data-testid="protections">
            <ProtectionRow
                title="Production Protection"
                testid="production-state"
                on=s.production
                help="The AI Pilot's operations never run here, and people's need an Admin or Owner to approve them."
            >
                {production_form}
                {agent_says_production.then(|| view! {
                    <p class="mt-1 text-xs text-slate-500">"The agent's own config also marks this host as production."</p>
                })}
            </ProtectionRow>
            <ProtectionRow
                title="AI File Access"
                testid="file-access-state"
                on=s.file_access
                help="Read file operations may run here (within what the agent's own config allows)."
            >
                {file_access_form}
            </ProtectionRow>
            {note.map(|n| view! { <p class="text-xs text-slate-500">{n}</p> })}
        </div>
    }
}

fn unit_state_class(state: &str) -> &'static str {
    match state {
        "active" => "badge bg-emerald-100 text-emerald-800",
        "failed" => "badge bg-red-100 text-red-800",
        _ => "badge bg-amber-100 text-amber-800",
    }
}

#[component]
fn WatchedUnits(units: UnitStates) -> impl IntoView {
    let list = if units.is_empty() {
        view! { <p class="mt-2 text-sm text-slate-600">"No unit states reported."</p> }.into_any()
    } else {
        view! {
            <ul class="mt-2 flex flex-col gap-1 text-sm">
                {units.into_iter().map(|(name, u)| {
                    let since = format!("since {}", u.since.display_utc());
                    let class = unit_state_class(&u.state);
                    view! {
                        <li class="flex flex-wrap items-center gap-2" data-testid="watched-unit" data-unit=name.clone()>
                            <code class="break-all">{name.clone()}</code>
                            <span data-testid="unit-state" class=class>{u.state}</span>
                            <span class="text-xs text-slate-500">{since}</span>
                        </li>
                    }
                }).collect_view()}
            </ul>
        }.into_any()
    };
    view! {
        <div>
            <h3 class="card-label">"Watched units"</h3>
            {list}
        </div>
    }
}

#[component]
fn DeclaredCapabilities(caps: Option<Capabilities>) -> impl IntoView {
    let Some(c) = caps else {
        return view! {
            <p data-testid="capabilities" class="mt-6 text-sm text-slate-600">
                "The agent has not declared what it can run yet, so nothing can be proposed here."
            </p>
        }
        .into_any();
    };
    let list = |items: &[String]| {
        if items.is_empty() {
            "none".to_string()
        } else {
            items.join(", ")
        }
    };
    view! {
        <div data-testid="capabilities" class="mt-6">
            <h3 class="card-label">"The agent offers"</h3>
            <ul class="mt-2 flex flex-wrap gap-2">
                {c.kinds.iter().map(|k| view! {
                    <li class="badge" data-testid="capability" data-kind=k.as_str()>{k.label()}</li>
                }).collect_view()}
            </ul>
            <dl class="mt-3 grid gap-3 sm:grid-cols-2">
                <Fact label="Units">{list(&c.units)}</Fact>
                <Fact label="Backup profiles">{list(&c.backup_profiles)}</Fact>
                <Fact label="Package tool">{c.package_tool.clone().unwrap_or_else(|| "none".into())}</Fact>
                <Fact label="File reading">{if c.file_access { "allowed by the agent's config" } else { "off in the agent's config" }}</Fact>
                {(!c.profile_secrets.is_empty()).then(|| {
                    let uses = c
                        .profile_secrets
                        .iter()
                        .map(|(profile, names)| format!("{profile}: {}", names.join(", ")))
                        .collect::<Vec<_>>()
                        .join("; ");
                    view! { <Fact label="Secrets its backups are given (Settings)">{uses}</Fact> }
                })}
            </dl>
        </div>
    }
    .into_any()
}

/// The kinds the form offers: what the agent declared.
fn form_kinds(caps: &Capabilities) -> Vec<OpKind> {
    caps.kinds.clone()
}

/// Proposes an operation on this server. Each argument field shows only for
/// the kinds that take it (CSS `:has`, so also before hydration); the server
/// function sends only the chosen kind's fields.
#[component]
fn ProposeForm(
    server: String,
    caps: Capabilities,
    propose: ServerAction<ProposeOnServer>,
) -> impl IntoView {
    let kinds = form_kinds(&caps);
    if kinds.is_empty() {
        return view! {
            <p class="mt-6 text-sm text-slate-600">"The agent offers no operation that can be proposed here."</p>
        }
        .into_any();
    }
    view! {
        <div class="mt-6">
            <h3 class="card-label">"Propose an operation"</h3>
            <ActionForm action=propose attr:class="propose-form mt-2 flex max-w-xl flex-col gap-3" attr:data-testid="propose-form">
                <input type="hidden" name="server" value=server />
                <label class="field">
                    <span>"Operation"</span>
                    <select name="kind" class="input">
                        {kinds.iter().enumerate().map(|(i, k)| view! {
                            <option value=k.as_str() selected=i == 0>{format!("{} ({})", k.label(), k.risk().label())}</option>
                        }).collect_view()}
                    </select>
                </label>
                {(!caps.units.is_empty()).then(|| view! {
                    <label class="field op-field op-unit">
                        <span>"Unit"</span>
                        <select name="unit" class="input">
                            {caps.units.iter().map(|u| view! { <option value=u.clone()>{u.clone()}</option> }).collect_view()}
                        </select>
                    </label>
                })}
                {(!caps.backup_profiles.is_empty()).then(|| view! {
                    <label class="field op-field op-profile">
                        <span>"Backup profile"</span>
                        <select name="profile" class="input">
                            {caps.backup_profiles.iter().map(|p| view! { <option value=p.clone()>{p.clone()}</option> }).collect_view()}
                        </select>
                    </label>
                })}
                {caps.package_tool.clone().map(|tool| view! {
                    <div class="op-field op-package flex flex-wrap gap-3">
                        <label class="field min-w-0 flex-1">
                            <span>{format!("Package ({tool})")}</span>
                            <input class="input" type="text" name="package" maxlength="128" autocomplete="off" />
                        </label>
                        <label class="field min-w-0 flex-1">
                            <span>"Version (optional)"</span>
                            <input class="input" type="text" name="version" maxlength="64" autocomplete="off" />
                        </label>
                    </div>
                })}
                {caps.file_access.then(|| view! {
                    <label class="field op-field op-path">
                        <span>"Path"</span>
                        <input class="input" type="text" name="path" maxlength="1024" autocomplete="off" />
                    </label>
                })}
                {caps.kinds.contains(&OpKind::RunPlan).then(|| view! {
                    <label class="field op-field op-steps">
                        <span>"Plan steps (JSON; stops at the first failure)"</span>
                        <textarea class="input font-mono text-xs" name="steps" rows="5" maxlength="16384" spellcheck="false"
                            placeholder=r#"[{"kind": "service_status", "args": {"unit": "nginx.service"}}, {"kind": "restart_service", "args": {"unit": "nginx.service"}}]"#></textarea>
                    </label>
                })}
                <label class="field">
                    <span>"Reason"</span>
                    <input class="input" type="text" name="reason" required maxlength="2000" />
                </label>
                <label class="flex items-center gap-2 text-sm">
                    <input type="checkbox" name="run_now" value="true" />
                    "Run now (self-approve)"
                </label>
                <p class="-mt-2 text-xs text-slate-500">
                    "Running your own needs a role that could approve it, and the organisation's two-person rule may require someone else."
                </p>
                <div><button class="btn-primary" type="submit">"Propose"</button></div>
            </ActionForm>
        </div>
    }
    .into_any()
}

#[component]
fn PilotFindings(findings: Vec<FindingView>) -> impl IntoView {
    let list = if findings.is_empty() {
        view! { <p class="mt-2 text-sm text-slate-600">"Nothing lately."</p> }.into_any()
    } else {
        view! {
            <ul class="mt-2 flex flex-col gap-3">
                {findings.into_iter().map(|f| view! { <FindingItem f /> }).collect_view()}
            </ul>
        }
        .into_any()
    };
    view! {
        <div class="mt-6">
            <h3 class="card-label">"AI Pilot findings"</h3>
            {list}
        </div>
    }
}

#[component]
fn FindingItem(f: FindingView) -> impl IntoView {
    let (label, class) = match f.outcome.as_str() {
        "proposed" => ("Proposed", "badge bg-sky-100 text-sky-800"),
        "refused" => ("Refused", "badge bg-red-100 text-red-800"),
        _ => ("Noted", "badge"),
    };
    view! {
        <li class="rounded-md border border-slate-200 p-3 text-sm" data-testid="pilot-finding" data-outcome=f.outcome.clone()>
            <div class="flex flex-wrap items-center gap-2">
                <span class="font-medium">{f.kind.label()}</span>
                <span class=class>{label}</span>
                <span class="text-xs text-slate-500">{f.at.display_utc()}</span>
                {f.operation.map(|op| view! {
                    <A href=format!("/operations/{}", op.0) attr:class="text-sky-700 underline">"View operation"</A>
                })}
            </div>
            <p class="mt-1 break-words" data-testid="finding-reason">{f.reason}</p>
            <p class="mt-1 break-words text-xs text-slate-500">{f.evidence}</p>
        </li>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_states_read_as_labels() {
        assert_eq!(state_label("proposed"), "Proposed");
        assert_eq!(state_label("approved"), "Approved");
        assert_eq!(state_label("skipped"), "Skipped");
        assert_eq!(state_label("something-new"), "something-new");
    }

    #[test]
    fn plans_are_indented_when_they_are_json() {
        assert_eq!(
            pretty_json(r#"{"unit":"nginx.service"}"#),
            "{\n  \"unit\": \"nginx.service\"\n}"
        );
        assert_eq!(pretty_json("not json"), "not json");
    }

    #[test]
    fn the_form_offers_the_declared_kinds() {
        let caps = Capabilities {
            kinds: vec![
                OpKind::RestartService,
                OpKind::RunPlan,
                OpKind::InstallPackage,
            ],
            ..Capabilities::default()
        };
        assert_eq!(
            form_kinds(&caps),
            vec![
                OpKind::RestartService,
                OpKind::RunPlan,
                OpKind::InstallPackage
            ]
        );
    }
}
