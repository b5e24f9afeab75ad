//! The server page's Agent card: the agent version the server runs, its
//! health (uptime, clock, last error), the newest signed release this control
//! plane holds, the release key's fingerprint, and "Update agent" for Owners
//! and Admins; and "Update selected agents" for the servers list. The control
//! plane only offers a release; the agent checks it against the release key
//! it pinned at install and keeps running its version when the check fails.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::pages::me;
use crate::ui::{ErrorPanel, FormError};
use crate::AppError;

/// What the Agent card shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReleaseView {
    /// The version the agent last reported.
    pub running: String,
    /// The platform releases are offered for.
    pub platform: String,
    /// The version of the release this control plane holds, if any.
    pub available: Option<String>,
    /// `SHA256:...` of the release key the release verified with.
    pub key_fingerprint: Option<String>,
    /// Why the release held here would not install, if it would not.
    pub problem: Option<String>,
    /// The agent's last health report: uptime, clock, last error.
    pub health: Option<control::AgentHealthView>,
}

#[cfg(feature = "ssr")]
fn agent_id(id: &str) -> Result<control::AgentId, AppError> {
    control::AgentId::parse(id).ok_or_else(|| AppError::NotFound("No such server.".into()))
}

#[cfg(feature = "ssr")]
async fn read_release(
    dir: std::path::PathBuf,
    check_binary: bool,
) -> Result<Option<control::agents::install::AvailableRelease>, String> {
    control::agents::install::read_release_blocking(
        dir,
        control::agents::install::DEFAULT_PLATFORM,
        check_binary,
    )
    .await
}

#[server(endpoint = "agent-release")]
pub async fn agent_release(id: String) -> Result<AgentReleaseView, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    let server = control::agents::get(&auth, &agent_id(&id)?, cx.now).await?;
    let (available, key_fingerprint, problem) =
        match read_release(cx.state.agent_releases.clone(), false).await {
            Ok(Some(r)) => (Some(r.manifest.version), Some(r.key_fingerprint), None),
            Ok(None) => (None, None, None),
            Err(e) => (None, None, Some(e)),
        };
    Ok(AgentReleaseView {
        running: server.agent_version,
        platform: control::agents::install::DEFAULT_PLATFORM.to_string(),
        available,
        key_fingerprint,
        problem,
        health: server.health,
    })
}

/// Offers the release this control plane holds to one server's agent;
/// returns the command's id.
#[server(endpoint = "update-agent")]
pub async fn update_agent(id: String, allow_downgrade: Option<String>) -> Result<String, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth =
        actor.authorize_on::<control::agents::ManageAgents>(&crate::ops_api::agent_target(&id))?;
    let agent = agent_id(&id)?;
    // A server of another organisation is not found, before anything else.
    let read = actor.authorize::<control::access::ReadOrg>()?;
    control::agents::get(&read, &agent, cx.now).await?;
    let release = offered_release(&cx).await?;
    let downgrade = matches!(allow_downgrade.as_deref(), Some("on" | "true"));
    let command = cx
        .state
        .delivery
        .offer_update(&auth, &agent, &release, downgrade, cx.now)
        .await?;
    Ok(command.0)
}

/// The release this control plane offers, checked whole (signature and
/// binary digest); a clear 409 when there is none or it would not install.
#[cfg(feature = "ssr")]
async fn offered_release(
    cx: &crate::context::Cx,
) -> Result<control::agents::install::Manifest, AppError> {
    match read_release(cx.state.agent_releases.clone(), true).await {
        Ok(Some(r)) => Ok(r.manifest),
        Ok(None) => Err(AppError::Conflict(format!(
            "This control plane holds no agent release for {}: sign one into its releases directory first (`pilothouse release sign`).",
            control::agents::install::DEFAULT_PLATFORM
        ))),
        Err(e) => Err(AppError::Conflict(format!(
            "The agent release held here would not install: {e}"
        ))),
    }
}

/// What became of one server of a selection offered an update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferView {
    pub id: String,
    pub hostname: String,
    /// The queued command's id, or why the server was skipped.
    pub command: Option<String>,
    pub skipped: Option<String>,
}

/// Offers the release this control plane holds to a selection of servers
/// (`ids[0]`, `ids[1]`, ... from the servers list's checkboxes), in one
/// transaction; servers that cannot take it are skipped with the reason.
#[server(endpoint = "update-agents")]
pub async fn update_agents(
    ids: Option<Vec<String>>,
    allow_downgrade: Option<String>,
) -> Result<Vec<OfferView>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::agents::ManageAgents>()?;
    let ids = ids.unwrap_or_default();
    if ids.is_empty() {
        return Err(AppError::Invalid("Select at least one server.".into()));
    }
    let mut agents = Vec::with_capacity(ids.len());
    for id in &ids {
        agents.push(control::AgentId::parse(id).ok_or_else(|| {
            AppError::Invalid(format!(
                "`{}` is not a server id.",
                id.chars().take(64).collect::<String>()
            ))
        })?);
    }
    let release = offered_release(&cx).await?;
    let downgrade = matches!(allow_downgrade.as_deref(), Some("on" | "true"));
    let offers = cx
        .state
        .delivery
        .offer_updates(&auth, &agents, &release, downgrade, cx.now)
        .await?;
    let read = actor.authorize::<control::access::ReadOrg>()?;
    let names: std::collections::HashMap<String, String> = control::agents::list(&read, cx.now)
        .await?
        .into_iter()
        .map(|s| (s.id.0, s.hostname))
        .collect();
    Ok(offers
        .into_iter()
        .map(|o| OfferView {
            hostname: names
                .get(&o.agent.0)
                .cloned()
                .unwrap_or_else(|| o.agent.0.clone()),
            id: o.agent.0,
            command: o.outcome.as_ref().ok().map(|c| c.0.clone()),
            skipped: o.outcome.err(),
        })
        .collect())
}

#[component]
pub fn AgentUpdate(tick: ReadSignal<u32>) -> impl IntoView {
    let params = leptos_router::hooks::use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let update = ServerAction::<UpdateAgent>::new();
    let info = Resource::new(
        move || (id(), tick.get(), update.version().get()),
        |(id, ..)| agent_release(id),
    );
    let can_manage = me().0.org.role.manages_members();
    view! {
        <section class="card mt-6" data-testid="agent-card">
            <h2 class="mb-4 text-lg font-semibold">"Agent"</h2>
            <Suspense fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match info.await {
                        Ok(r) => view! { <ReleaseInfo r update can_manage id=id() /> }.into_any(),
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn ReleaseInfo(
    r: AgentReleaseView,
    update: ServerAction<UpdateAgent>,
    can_manage: bool,
    id: String,
) -> impl IntoView {
    let offer = r.available.clone().filter(|v| *v != r.running);
    view! {
        <dl class="grid gap-4 md:grid-cols-3">
            <div>
                <dt class="text-xs font-semibold uppercase tracking-wide text-slate-500">"Agent version"</dt>
                <dd class="mt-0.5 font-mono text-sm" data-testid="agent-version">{r.running.clone()}</dd>
            </div>
            <div>
                <dt class="text-xs font-semibold uppercase tracking-wide text-slate-500">{format!("Latest release ({})", r.platform)}</dt>
                <dd class="mt-0.5 font-mono text-sm" data-testid="release-version">{r.available.clone().unwrap_or_else(|| "none held here".into())}</dd>
            </div>
            <div>
                <dt class="text-xs font-semibold uppercase tracking-wide text-slate-500">"Release key"</dt>
                <dd class="mt-0.5 break-all font-mono text-sm" data-testid="release-key-fingerprint">{r.key_fingerprint.clone().unwrap_or_else(|| "none".into())}</dd>
            </div>
        </dl>
        <Health health=r.health.clone() />
        {r.problem.clone().map(|p| view! {
            <p class="mt-3 text-sm text-red-700" data-testid="release-problem">{format!("The release held here would not install: {p}")}</p>
        })}
        {match (can_manage, offer) {
            (true, Some(v)) => view! {
                <ActionForm action=update attr:class="mt-4">
                    <input type="hidden" name="id" value=id />
                    <button class="btn-primary" type="submit" data-testid="update-agent">{format!("Update agent to {v}")}</button>
                </ActionForm>
            }.into_any(),
            (true, None) => view! { <p class="mt-4 text-sm text-slate-500">"The agent runs the release held here, or none is held."</p> }.into_any(),
            (false, _) => view! { <p class="mt-4 text-sm text-slate-500">"Only Owners and Admins can update the agent."</p> }.into_any(),
        }}
        <div class="mt-2">
            <FormError action=update />
            {move || update.value().get().and_then(Result::ok).map(|c| view! {
                <p class="text-sm text-slate-600" data-testid="update-queued">{format!("Update offered ({c}). The agent checks the release signature, switches and reports its new version.")}</p>
            })}
        </div>
    }
}

/// What the agent last said about itself; a clock too far off is shown in red.
#[component]
fn Health(health: Option<control::AgentHealthView>) -> impl IntoView {
    let Some(h) = health else {
        return view! {
            <p class="mt-4 text-sm text-slate-500" data-testid="agent-health">"The agent has not reported its health yet."</p>
        }
        .into_any();
    };
    let clock_class = if h.clock_off() {
        "mt-0.5 text-sm font-semibold text-red-700"
    } else {
        "mt-0.5 text-sm"
    };
    let error = match (&h.last_error, h.last_error_at) {
        (Some(e), Some(at)) => format!("{} ({})", e, at.display_utc()),
        (Some(e), None) => e.clone(),
        _ => "none since it started".into(),
    };
    view! {
        <dl class="mt-4 grid gap-4 md:grid-cols-3" data-testid="agent-health">
            <div>
                <dt class="text-xs font-semibold uppercase tracking-wide text-slate-500">"Uptime"</dt>
                <dd class="mt-0.5 text-sm" data-testid="agent-uptime" title=format!("started {}", h.started_at.display_utc())>
                    {format!("{} (reported {})", h.uptime_text(), h.reported_at.display_utc())}
                </dd>
            </div>
            <div>
                <dt class="text-xs font-semibold uppercase tracking-wide text-slate-500">"Clock"</dt>
                <dd class=clock_class data-testid="agent-clock" data-off=h.clock_off().to_string()>{h.clock_text()}</dd>
            </div>
            <div>
                <dt class="text-xs font-semibold uppercase tracking-wide text-slate-500">"Last error"</dt>
                <dd class="mt-0.5 break-words text-sm" data-testid="agent-last-error">{error}</dd>
            </div>
        </dl>
    }
    .into_any()
}
