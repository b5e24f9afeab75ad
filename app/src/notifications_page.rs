//! Notification channels on the Settings page: where the organisation's
//! security-relevant events are announced (an email address, a Slack-style
//! incoming webhook, an HMAC-signed webhook), with how their delivery
//! stands, for everyone to read; adding and removing them for Owners and
//! Admins. A Slack URL or HMAC key is typed in once and never shown again.

use control::NotificationChannelView;
use leptos::prelude::*;

use crate::pages::me;
use crate::ui::{ticker, ErrorPanel, FormError};
use crate::AppError;

/// The organisation's channels with their delivery state (no secrets).
#[server(endpoint = "notification-channels")]
pub async fn notification_channels() -> Result<Vec<NotificationChannelView>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    actor.authorize::<control::access::ReadOrg>()?;
    Ok(control::notifications::list(&cx.state.store, actor.org()).await?)
}

/// Adds a channel; returns its id.
#[server(endpoint = "add-notification-channel")]
pub async fn add_notification_channel(
    kind: String,
    name: String,
    address: Option<String>,
    secret: Option<String>,
    ca_pem: Option<String>,
) -> Result<String, AppError> {
    use control::notifications::{ChannelKind, NewChannel};
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::notifications::ManageNotifications>()?;
    let new = NewChannel {
        kind: ChannelKind::parse(&kind)?,
        name,
        address: address.unwrap_or_default(),
        ca_pem: ca_pem.filter(|v| !v.trim().is_empty()),
        secret: secret
            .filter(|v| !v.trim().is_empty())
            .map(secrecy::SecretString::from),
    };
    Ok(control::notifications::add(&auth, &cx.state.secrets, new, cx.now).await?)
}

#[server(endpoint = "remove-notification-channel")]
pub async fn remove_notification_channel(id: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::notifications::ManageNotifications>()?;
    Ok(control::notifications::remove(&auth, id.trim(), cx.now).await?)
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "email" => "Email",
        "slack" => "Slack webhook",
        "webhook" => "Webhook (HMAC)",
        _ => "Other",
    }
}

/// How a channel's delivery stands, in words, and a badge class.
fn channel_state(c: &NotificationChannelView) -> (String, &'static str) {
    match (c.failures, c.pending) {
        (0, 0) => (
            "Up to date".to_string(),
            "badge bg-emerald-100 text-emerald-800",
        ),
        (0, n) => (
            format!("Sending {n} event(s)"),
            "badge bg-amber-100 text-amber-800",
        ),
        (failures, _) => {
            let retry = c
                .retry_at
                .map(|t| format!("; next try {}", t.display_utc()))
                .unwrap_or_default();
            (
                format!(
                    "Failing ({failures} attempt(s)): {}{retry}",
                    c.last_error.clone().unwrap_or_default()
                ),
                "badge bg-red-100 text-red-800",
            )
        }
    }
}

#[component]
pub fn NotificationsSection() -> impl IntoView {
    let add = ServerAction::<AddNotificationChannel>::new();
    let remove = ServerAction::<RemoveNotificationChannel>::new();
    let tick = ticker(5);
    let channels = Resource::new(
        move || (tick.get(), add.version().get(), remove.version().get()),
        |_| notification_channels(),
    );
    let can_manage = me().0.org.role.manages_members();
    view! {
        <section class="mt-8" data-testid="notifications">
            <h2 class="text-lg font-semibold">"Notification channels"</h2>
            <p class="mt-1 max-w-2xl text-sm text-slate-600">
                "Security-relevant events, announced as they happen: members added or removed and role changes, sign-in requirements, servers added, revoked or deleted, Production Protection and AI File Access, secrets deleted, audit forwarding and these channels themselves. By email, to a Slack-style incoming webhook, or to a webhook signed with HMAC-SHA256. A channel that is down is told everything, in order, when it is back."
            </p>
            <Transition fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match channels.await {
                        Ok(list) if list.is_empty() => view! {
                            <p class="mt-3 text-sm text-slate-600" data-testid="no-channels">"No notification channels."</p>
                        }.into_any(),
                        Ok(list) => view! {
                            <ul class="mt-3 flex flex-col gap-2">
                                {list.into_iter().map(|c| view! { <ChannelItem c can_manage remove /> }).collect_view()}
                            </ul>
                        }.into_any(),
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Transition>
            <div class="mt-2"><FormError action=remove /></div>
            {can_manage.then(|| view! { <AddChannelForm add /> })}
        </section>
    }
}

#[component]
fn ChannelItem(
    c: NotificationChannelView,
    can_manage: bool,
    remove: ServerAction<RemoveNotificationChannel>,
) -> impl IntoView {
    let (state, badge) = channel_state(&c);
    let told = c.last_success_at.map_or_else(
        || "nothing sent yet".to_string(),
        |t| format!("last sent {}", t.display_utc()),
    );
    let id = c.id.clone();
    let key = c.name.clone();
    view! {
        <li class="rounded-lg border border-slate-200 bg-white p-3" data-testid="channel" data-name=key>
            <div class="flex flex-wrap items-center gap-2">
                <span class="font-medium">{c.name}</span>
                <span class="text-sm text-slate-600">{kind_label(&c.kind)}</span>
                <span class="break-all font-mono text-xs" data-testid="channel-address">{c.address}</span>
                <span class=badge data-testid="channel-state">{state}</span>
                <span class="text-xs text-slate-500">{told}</span>
                {can_manage.then(|| view! {
                    <ActionForm action=remove attr:class="ml-auto">
                        <input type="hidden" name="id" value=id />
                        <button class="btn-secondary py-1" type="submit">"Remove"</button>
                    </ActionForm>
                })}
            </div>
        </li>
    }
}

#[component]
fn AddChannelForm(add: ServerAction<AddNotificationChannel>) -> impl IntoView {
    let form = crate::ui::emptied_on_success(add);
    view! {
        <div class="mt-4 max-w-xl">
            <h3 class="card-label">"Add a channel"</h3>
            <ActionForm action=add node_ref=form attr:class="mt-2 flex flex-col gap-3" attr:data-testid="add-channel">
                <label class="field">
                    <span>"Kind"</span>
                    <select name="kind" class="input">
                        <option value="email" selected=true>"Email"</option>
                        <option value="slack">"Slack-style incoming webhook"</option>
                        <option value="webhook">"HTTPS webhook (HMAC-SHA256)"</option>
                    </select>
                </label>
                <crate::ui::SenderFields
                    address_label="Address (an email address, or a webhook's https:// URL; none for Slack)"
                    address_required=false
                    secret_label="Secret (Slack: the webhook's URL; webhook: an HMAC key of 16 characters or more; never shown again)"
                    secret_max="2048"
                    ca_label="CA certificate, PEM (optional, webhooks: trust this CA instead of the public roots)"
                />
                <FormError action=add />
                <div><button class="btn-primary" type="submit">"Add channel"</button></div>
            </ActionForm>
        </div>
    }
}
