//! The server page's housekeeping card: labels (for fleet selectors) and safe
//! delete. Owners and Admins edit labels, schedule a deletion by typing the
//! server's name, and restore it during the grace period; everyone else sees
//! the labels and the schedule. `control` enforces all of it.

use control::AgentView;
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api::server_detail;
use crate::ops_api::{DeleteServer, RestoreServer, SetLabels};
use crate::pages::me;
use crate::ui::FormError;

#[component]
pub fn ServerLifecycle() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let labels = ServerAction::<SetLabels>::new();
    let delete = ServerAction::<DeleteServer>::new();
    let restore = ServerAction::<RestoreServer>::new();
    let changed = move || labels.version().get() + delete.version().get() + restore.version().get();
    let server = Resource::new(move || (id(), changed()), |(id, _)| server_detail(id));
    let can_manage = me().0.org.role.manages_members();
    view! {
        <section class="card mt-6" data-testid="server-lifecycle">
            <h2 class="mb-4 text-lg font-semibold">"Labels and deletion"</h2>
            <Suspense fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    server.await.ok().map(|s| view! {
                        <Labels s=s.clone() can_manage action=labels />
                        <Deletion s can_manage delete restore />
                    })
                })}
            </Suspense>
            <div class="mt-3 flex flex-col gap-2">
                <FormError action=labels />
                <FormError action=delete />
                <FormError action=restore />
            </div>
        </section>
    }
}

#[component]
fn Labels(s: AgentView, can_manage: bool, action: ServerAction<SetLabels>) -> impl IntoView {
    let text = s
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let shown = if text.is_empty() {
        "No labels.".to_string()
    } else {
        text.clone()
    };
    let editable = can_manage && !s.revoked && s.delete_after.is_none();
    view! {
        <div class="mb-4">
            <p class="text-sm"><span class="font-medium">"Labels: "</span><span data-testid="server-labels">{shown}</span></p>
            {editable.then(|| view! {
                <ActionForm action=action attr:class="mt-2 flex flex-wrap items-end gap-2">
                    <input type="hidden" name="id" value=s.id.0.clone() />
                    <label class="flex flex-col text-sm">
                        "key=value, separated by commas"
                        <input class="input" name="labels" value=text placeholder="env=staging,role=web" />
                    </label>
                    <button class="btn-secondary" type="submit">"Save labels"</button>
                </ActionForm>
            })}
        </div>
    }
}

#[component]
fn Deletion(
    s: AgentView,
    can_manage: bool,
    delete: ServerAction<DeleteServer>,
    restore: ServerAction<RestoreServer>,
) -> impl IntoView {
    let id = s.id.0.clone();
    match s.delete_after {
        Some(after) => view! {
            <div data-testid="deletion-scheduled">
                <p class="text-sm font-medium text-red-700">
                    {format!("Scheduled for deletion on {}. Until then the server is read-only and its agent is refused.", after.display_utc())}
                </p>
                {can_manage.then(|| view! {
                    <ActionForm action=restore attr:class="mt-2">
                        <input type="hidden" name="id" value=id.clone() />
                        <button class="btn-secondary" type="submit">"Restore"</button>
                    </ActionForm>
                })}
            </div>
        }
        .into_any(),
        None if can_manage && !s.revoked => view! {
            <ActionForm action=delete attr:class="flex flex-wrap items-end gap-2">
                <input type="hidden" name="id" value=id />
                <label class="flex flex-col text-sm">
                    {format!("Type the server's name ({}) to delete it after the grace period", s.hostname)}
                    <input class="input" name="name" autocomplete="off" required />
                </label>
                <button class="btn-danger" type="submit">"Delete server"</button>
            </ActionForm>
        }
        .into_any(),
        None => ().into_any(),
    }
}
