//! The app shell (navigation, signed-in user, org switcher) and small shared
//! components.

use control::Me;
use leptos::prelude::*;
use leptos_router::components::{Outlet, Redirect, A};
use leptos_router::hooks::use_query_map;

use crate::api::{current_user, list_servers, Logout, SwitchOrg};
use crate::AppError;

/// The signed-in person, provided to every page inside the shell.
#[derive(Clone, Debug)]
pub struct SignedInUser(pub Me);

#[component]
pub fn Shell() -> impl IntoView {
    let me = Resource::new(|| (), |_| current_user());
    view! {
        <Suspense fallback=|| view! { <p class="p-8 text-slate-500">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match me.await {
                    Ok(Some(me)) => view! { <SignedIn me /> }.into_any(),
                    Ok(None) => view! { <Redirect path="/login" /> }.into_any(),
                    Err(AppError::Forbidden(msg)) => view! { <NoOrg msg /> }.into_any(),
                    Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn NoOrg(msg: String) -> impl IntoView {
    let logout = ServerAction::<Logout>::new();
    view! {
        <main class="mx-auto max-w-md p-8">
            <h1 class="text-xl font-semibold">"No organisation"</h1>
            <p class="mt-2 text-slate-600">{msg}</p>
            <ActionForm action=logout attr:class="mt-4">
                <button class="btn-secondary" type="submit">"Sign out"</button>
            </ActionForm>
        </main>
    }
}

#[component]
fn SignedIn(me: Me) -> impl IntoView {
    provide_context(SignedInUser(me.clone()));
    let logout = ServerAction::<Logout>::new();
    let switch = ServerAction::<SwitchOrg>::new();
    let nav = [
        ("/", "Dashboard"),
        ("/servers", "Servers"),
        ("/approvals", "Approvals"),
        ("/audit", "Audit log"),
        ("/team", "Team"),
        ("/settings", "Settings"),
    ];
    let current_org = me.org.id;
    let many_orgs = me.orgs.len() > 1;
    let org_options = me
        .orgs
        .iter()
        .map(|o| (o.id, o.name.clone()))
        .collect::<Vec<_>>();
    view! {
        <div class="flex min-h-screen">
            <aside class="w-56 shrink-0 bg-slate-900 text-slate-100 flex flex-col">
                <div class="px-5 py-4 text-lg font-semibold tracking-tight">"Pilothouse"</div>
                <nav class="flex flex-col gap-1 px-3">
                    {nav
                        .into_iter()
                        .map(|(href, label)| {
                            view! {
                                <A href=href exact=true attr:class="nav-link">
                                    {label}
                                </A>
                            }
                        })
                        .collect_view()}
                </nav>
            </aside>
            <div class="flex-1 flex flex-col">
                <header class="flex items-center justify-between gap-4 border-b border-slate-200 bg-white px-6 py-3">
                    <div class="flex items-center gap-3 text-sm">
                        <span class="font-medium">{me.org.name.clone()}</span>
                        {many_orgs.then(|| view! {
                            <ActionForm action=switch attr:class="flex items-center gap-2">
                                <label class="sr-only" for="org-switch">"Organisation"</label>
                                <select id="org-switch" name="org" class="input py-1">
                                    {org_options
                                        .into_iter()
                                        .map(|(id, name)| {
                                            view! {
                                                <option value=id.0.to_string() selected=id == current_org>
                                                    {name}
                                                </option>
                                            }
                                        })
                                        .collect_view()}
                                </select>
                                <button class="btn-secondary py-1" type="submit">"Switch"</button>
                            </ActionForm>
                        })}
                    </div>
                    <div class="flex items-center gap-3 text-sm">
                        <span data-testid="whoami">{me.email.clone()}</span>
                        <span data-testid="role" class="badge">{me.org.role.label()}</span>
                        <ActionForm action=logout>
                            <button class="btn-secondary py-1" type="submit">"Sign out"</button>
                        </ActionForm>
                    </div>
                </header>
                <OfflineAlert />
                <main class="flex-1 p-6">
                    <Outlet />
                </main>
            </div>
        </div>
    }
}

/// Shows a server function's error in a consistent place.
#[component]
pub fn ErrorPanel(error: AppError) -> impl IntoView {
    let signed_out = matches!(error, AppError::Unauthenticated(_));
    view! {
        <Show when=move || signed_out fallback=move || ()>
            <Redirect path="/login" />
        </Show>
        <p data-testid="page-error" class="rounded-md bg-red-50 p-4 text-red-800">{error.to_string()}</p>
    }
}

/// The error of a form: from the action (with JavaScript) or from the
/// `error` query parameter (plain form post redirected back).
#[component]
pub fn FormError<T>(action: ServerAction<T>) -> impl IntoView
where
    T: leptos::server_fn::ServerFn<Error = AppError> + Send + Sync + Clone + 'static,
    T::Output: Send + Sync + Clone + 'static,
{
    let query = use_query_map();
    let message = move || match action.value().get() {
        Some(Err(e)) => Some(e.to_string()),
        Some(Ok(_)) => None,
        None => query.with(|q| q.get("error")),
    };
    view! {
        {move || {
            message()
                .map(|m| {
                    view! {
                        <p data-testid="form-error" role="alert" class="rounded-md bg-red-50 px-3 py-2 text-sm text-red-800">
                            {m}
                        </p>
                    }
                })
        }}
    }
}

/// A signal that ticks every `secs` in the browser (never on the server), for live refresh.
pub fn ticker(secs: u32) -> ReadSignal<u32> {
    let (tick, set_tick) = signal(0u32);
    Effect::new(move |_| {
        // The interval ends with the component that asked for it.
        if let Ok(handle) = set_interval_with_handle(
            move || set_tick.update(|t| *t += 1),
            std::time::Duration::from_secs(u64::from(secs)),
        ) {
            on_cleanup(move || handle.clear());
        }
    });
    tick
}

/// An in-app alert while any of the organisation's servers is offline.
#[component]
fn OfflineAlert() -> impl IntoView {
    let tick = ticker(30);
    let servers = Resource::new(move || tick.get(), |_| list_servers());
    view! {
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                let offline: Vec<String> = servers
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|s| !s.online && !s.revoked)
                    .map(|s| s.hostname)
                    .collect();
                (!offline.is_empty()).then(|| view! {
                    <div data-testid="offline-alert" role="alert" class="border-b border-amber-200 bg-amber-50 px-6 py-2 text-sm text-amber-900">
                        {format!("{} server(s) offline (not heard from for 90 s): {}. ", offline.len(), offline.join(", "))}
                        <A href="/servers" attr:class="font-semibold underline">"View servers"</A>
                    </div>
                })
            })}
        </Suspense>
    }
}
