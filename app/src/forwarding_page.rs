//! Audit forwarding on the Settings page: the organisation's SIEM
//! destinations with how their delivery stands, for everyone to read; adding
//! and removing them for Owners and Admins. A webhook's HMAC key is typed in
//! once and never shown again.

use control::DestinationView;
use leptos::prelude::*;

use crate::pages::me;
use crate::ui::{ticker, ErrorPanel, FormError};
use crate::AppError;

/// The organisation's destinations with their delivery state (no secrets).
#[server(endpoint = "audit-destinations")]
pub async fn audit_destinations() -> Result<Vec<DestinationView>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    actor.authorize::<control::access::ReadOrg>()?;
    Ok(control::forwarding::list(&cx.state.store, actor.org()).await?)
}

/// A form field left empty means "none".
#[cfg(feature = "ssr")]
fn given(v: Option<String>) -> Option<String> {
    v.filter(|v| !v.trim().is_empty())
}

/// Adds a destination; returns its id.
#[server(endpoint = "add-audit-destination")]
pub async fn add_audit_destination(
    kind: String,
    name: String,
    address: String,
    secret: Option<String>,
    ca_pem: Option<String>,
) -> Result<String, AppError> {
    use control::forwarding::{DestinationKind, NewDestination};
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::forwarding::ManageForwarding>()?;
    let new = NewDestination {
        kind: DestinationKind::parse(kind.trim())?,
        name,
        address,
        ca_pem: given(ca_pem),
        secret: given(secret).map(secrecy::SecretString::from),
    };
    Ok(control::forwarding::add(&auth, &cx.state.secrets, new, cx.now).await?)
}

#[server(endpoint = "remove-audit-destination")]
pub async fn remove_audit_destination(id: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::forwarding::ManageForwarding>()?;
    Ok(control::forwarding::remove(&auth, id.trim(), cx.now).await?)
}

/// How a destination's delivery stands, in words, and a badge class.
fn state_of(d: &DestinationView) -> (String, &'static str) {
    if d.failures > 0 {
        let error = d.last_error.clone().unwrap_or_default();
        let retry = d
            .retry_at
            .map(|t| format!("; next try {}", t.display_utc()))
            .unwrap_or_default();
        (
            format!("Failing ({} attempt(s)): {error}{retry}", d.failures),
            "badge bg-red-100 text-red-800",
        )
    } else if d.behind() > 0 {
        (
            "Delivering".to_string(),
            "badge bg-amber-100 text-amber-800",
        )
    } else {
        (
            "Up to date".to_string(),
            "badge bg-emerald-100 text-emerald-800",
        )
    }
}

/// How far behind a destination is: events, and since when.
fn lag_of(d: &DestinationView) -> String {
    match (d.behind(), d.owed_since) {
        (0, _) => "0 events".to_string(),
        (n, Some(since)) => format!("{n} event(s), oldest from {}", since.display_utc()),
        (n, None) => format!("{n} event(s)"),
    }
}

#[component]
pub fn ForwardingSection() -> impl IntoView {
    let add = ServerAction::<AddAuditDestination>::new();
    let remove = ServerAction::<RemoveAuditDestination>::new();
    let tick = ticker(5);
    let list = Resource::new(
        move || (tick.get(), add.version().get(), remove.version().get()),
        |_| audit_destinations(),
    );
    let can_manage = me().0.org.role.manages_members();
    view! {
        <section class="mt-8" data-testid="forwarding">
            <h2 class="text-lg font-semibold">"Audit forwarding"</h2>
            <p class="mt-1 max-w-2xl text-sm text-slate-600">
                "Every audit event, and the signed checkpoints over them, sent to your SIEM: syslog over TLS (RFC 5425) or an HTTPS webhook signed with HMAC-SHA256. Delivery is at least once and in order; a destination that is down gets everything when it is back. A new destination starts from the first event."
            </p>
            <Transition fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match list.await {
                        Ok(list) if list.is_empty() => view! {
                            <p class="mt-3 text-sm text-slate-600" data-testid="no-destinations">"No destinations."</p>
                        }.into_any(),
                        Ok(list) => view! {
                            <div class="mt-3 overflow-x-auto">
                                <table class="table rounded-lg border border-slate-200 bg-white">
                                    <thead><tr><th>"Name"</th><th>"Kind"</th><th>"Address"</th><th>"Delivery"</th><th>"Behind"</th><th>"Last delivered"</th><th></th></tr></thead>
                                    <tbody>
                                        {list.into_iter().map(|d| view! { <DestinationRow d can_manage remove /> }).collect_view()}
                                    </tbody>
                                </table>
                            </div>
                        }.into_any(),
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Transition>
            <div class="mt-2"><FormError action=remove /></div>
            {can_manage.then(|| view! { <AddDestinationForm add /> })}
        </section>
    }
}

#[component]
fn DestinationRow(
    d: DestinationView,
    can_manage: bool,
    remove: ServerAction<RemoveAuditDestination>,
) -> impl IntoView {
    let (state, class) = state_of(&d);
    let lag = lag_of(&d);
    let last = d
        .last_success_at
        .map_or_else(|| "never".to_string(), |t| t.display_utc());
    let kind = if d.own_ca {
        format!("{} (own CA)", d.kind)
    } else {
        d.kind.clone()
    };
    let id = d.id.clone();
    let name = d.name.clone();
    view! {
        <tr data-testid="destination" data-name=name>
            <td class="font-medium">{d.name}</td>
            <td>{kind}</td>
            <td class="max-w-xs break-all font-mono text-xs">{d.address}</td>
            <td><span class=class data-testid="destination-state">{state}</span></td>
            <td class="whitespace-nowrap" data-testid="destination-lag">{lag}</td>
            <td class="whitespace-nowrap">{last}</td>
            <td>
                {can_manage.then(|| view! {
                    <ActionForm action=remove>
                        <input type="hidden" name="id" value=id />
                        <button class="btn-secondary py-1" type="submit">"Remove"</button>
                    </ActionForm>
                })}
            </td>
        </tr>
    }
}

#[component]
fn AddDestinationForm(add: ServerAction<AddAuditDestination>) -> impl IntoView {
    let form = crate::ui::emptied_on_success(add);
    view! {
        <div class="mt-4 max-w-xl">
            <h3 class="card-label">"Add a destination"</h3>
            <ActionForm action=add node_ref=form attr:class="mt-2 flex flex-col gap-3" attr:data-testid="add-destination">
                <label class="field">
                    <span>"Kind"</span>
                    <select name="kind" class="input">
                        <option value="syslog" selected=true>"Syslog over TLS (RFC 5425)"</option>
                        <option value="webhook">"HTTPS webhook (HMAC-SHA256)"</option>
                    </select>
                </label>
                <crate::ui::SenderFields
                    address_label="Address (host:port for syslog, https:// URL for a webhook)"
                    address_required=true
                    secret_label="HMAC key (webhooks; 16 characters or more; never shown again)"
                    secret_max="512"
                    ca_label="CA certificate, PEM (optional: trust this CA instead of the public roots)"
                />
                <FormError action=add />
                <div><button class="btn-primary" type="submit">"Add destination"</button></div>
            </ActionForm>
        </div>
    }
}
