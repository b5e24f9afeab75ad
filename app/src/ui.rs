//! The app shell (navigation, signed-in user, org switcher) and small shared
//! components.

use control::Me;
use leptos::prelude::*;
use leptos_router::components::{Outlet, Redirect, A};
use leptos_router::hooks::use_query_map;

use crate::api::{current_user, list_servers, Logout, SwitchOrg};
use crate::ops_api::pending_count;
use crate::AppError;

/// The signed-in person, provided to every page inside the shell.
#[derive(Clone, Debug)]
pub struct SignedInUser(pub Me);

/// How many proposals the signed-in person could approve now (the nav
/// badge), provided to every page inside the shell so a page can refresh it
/// after a decision.
#[derive(Clone, Copy)]
pub struct PendingBadge(pub Resource<Result<i64, AppError>>);

/// Refreshes the nav badge whenever `changed` moves (an action's version).
pub fn refresh_badge_on(changed: impl Fn() -> usize + 'static) {
    if let Some(PendingBadge(badge)) = use_context::<PendingBadge>() {
        Effect::watch(changed, move |_, _, _| badge.refetch(), false);
    }
}

const NAV: [(&str, &str); 6] = [
    ("/", "Dashboard"),
    ("/servers", "Servers"),
    ("/approvals", "Approvals"),
    ("/audit", "Audit log"),
    ("/team", "Team"),
    ("/settings", "Settings"),
];

#[component]
pub fn Shell() -> impl IntoView {
    let me = Resource::new(|| (), |_| current_user());
    // Made here rather than inside the Suspend below, so the server and the
    // browser create it in the same order when hydrating.
    let tick = ticker(15);
    let pending = Resource::new(move || tick.get(), |_| pending_count());
    provide_context(PendingBadge(pending));
    view! {
        <Suspense fallback=|| view! { <p class="p-8 text-slate-500">"Loading…"</p> }>
            {move || Suspend::new(async move {
                let me = me.await;
                build_once_on_server().await;
                match me {
                    Ok(Some(me)) => view! { <SignedIn me /> }.into_any(),
                    Ok(None) => view! { <Redirect path="/login" /> }.into_any(),
                    Err(AppError::Forbidden(msg)) => view! { <NoOrg msg /> }.into_any(),
                    Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// On the server, gives way once before the signed-in page is built. Leptos
/// polls a Suspense's children early to find the resources they read; a
/// Suspend that could already finish then built the whole page there, once
/// per early poll, each time with resources of its own, while the browser
/// builds it once: the resources' numbers, which carry their server-side
/// values to the browser, no longer lined up, and the browser refetched and
/// failed to hydrate. Giving way once means only the final render builds the
/// page. In the browser it does nothing (the page must hydrate at once).
async fn build_once_on_server() {
    #[cfg(feature = "ssr")]
    {
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                std::task::Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        })
        .await;
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
    let mfa_due = me.mfa_due;
    let sso_due = me.sso_due;
    view! {
        // Wide screens: a sidebar. Narrow ones: a top bar whose menu is a
        // <details>, so it opens before hydration and without JavaScript.
        <div class="flex min-h-screen flex-col md:flex-row">
            <aside class="hidden w-56 shrink-0 flex-col bg-slate-900 text-slate-100 md:flex">
                <div class="px-5 py-4 text-lg font-semibold tracking-tight">"Pilothouse"</div>
                <nav class="flex flex-col gap-1 px-3">
                    <NavLinks />
                </nav>
            </aside>
            <MobileMenu />
            <div class="flex min-w-0 flex-1 flex-col">
                <TopBar me />
                <OfflineAlert />
                {mfa_due.then(|| view! {
                    <div class="border-b border-amber-300 bg-amber-50 px-4 py-3 text-sm text-amber-900 md:px-6" role="alert" data-testid="mfa-due">
                        "Your organisation requires two-factor sign-in for Owners and Admins. Until you set it up, everything else is refused. "
                        <A href="/settings" attr:class="font-semibold underline">"Set it up in Settings"</A>
                    </div>
                })}
                {sso_due.then(|| view! {
                    <div class="border-b border-amber-300 bg-amber-50 px-4 py-3 text-sm text-amber-900 md:px-6" role="alert" data-testid="sso-due">
                        "Your organisation requires signing in through its identity provider. Until you do, everything is refused: sign out, then sign in with it."
                    </div>
                })}
                <main class="min-w-0 flex-1 p-4 md:p-6">
                    <Outlet />
                </main>
            </div>
        </div>
    }
}

#[component]
fn NavLinks() -> impl IntoView {
    NAV.into_iter()
        .map(|(href, label)| {
            view! {
                <A href=href exact=true attr:class="nav-link flex items-center justify-between gap-2">
                    <span>{label}</span>
                    {(href == "/approvals").then(|| view! { <ApprovalsBadge /> })}
                </A>
            }
        })
        .collect_view()
}

/// The navigation on narrow screens. Picking a page closes it again.
#[component]
fn MobileMenu() -> impl IntoView {
    let menu = NodeRef::<leptos::html::Details>::new();
    let close = move |_| {
        if let Some(details) = menu.get() {
            details.set_open(false);
        }
    };
    view! {
        <details node_ref=menu class="bg-slate-900 text-slate-100 md:hidden" data-testid="mobile-menu">
            <summary class="flex cursor-pointer items-center justify-between px-4 py-3">
                <span class="text-lg font-semibold tracking-tight">"Pilothouse"</span>
                <span class="flex items-center gap-2 rounded-md border border-slate-600 px-3 py-1 text-sm">
                    "Menu"
                    <ApprovalsBadge />
                </span>
            </summary>
            <nav class="flex flex-col gap-1 px-3 pb-3" on:click=close>
                <NavLinks />
            </nav>
        </details>
    }
}

#[component]
fn TopBar(me: Me) -> impl IntoView {
    let logout = ServerAction::<Logout>::new();
    let switch = ServerAction::<SwitchOrg>::new();
    let current_org = me.org.id;
    let many_orgs = me.orgs.len() > 1;
    let org_options = me
        .orgs
        .iter()
        .map(|o| (o.id, o.name.clone()))
        .collect::<Vec<_>>();
    view! {
        <header class="flex flex-wrap items-center justify-between gap-2 border-b border-slate-200 bg-white px-4 py-3 md:gap-4 md:px-6">
            <div class="flex min-w-0 flex-wrap items-center gap-3 text-sm">
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
            <div class="flex min-w-0 flex-wrap items-center gap-3 text-sm">
                {(me.unread_notices > 0).then(|| view! {
                    <A href="/settings#sign-ins" attr:class="badge bg-amber-100 text-amber-900" attr:data-testid="notices-badge">
                        {format!("{} new sign-in(s)", me.unread_notices)}
                    </A>
                })}
                <span data-testid="whoami" class="break-all">{me.email.clone()}</span>
                <span data-testid="role" class="badge">{me.org.role.label()}</span>
                <ActionForm action=logout>
                    <button class="btn-secondary py-1" type="submit">"Sign out"</button>
                </ActionForm>
            </div>
        </header>
    }
}

/// The number of proposals waiting for the viewer, when there are any. Kept
/// out of the link's accessible name (it has a title instead), so the link
/// is always called "Approvals".
#[component]
fn ApprovalsBadge() -> impl IntoView {
    let PendingBadge(pending) = expect_context::<PendingBadge>();
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let n = pending.await.unwrap_or(0);
                (n > 0).then(|| view! {
                    <span
                        data-testid="approvals-badge"
                        aria-hidden="true"
                        title=format!("{n} waiting for your approval")
                        class="rounded-full bg-amber-400 px-2 py-0.5 text-xs font-semibold text-slate-900"
                    >
                        {n}
                    </span>
                })
            })}
        </Transition>
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

/// The fields of a form that adds a sender to the outside (an audit
/// destination, a notification channel), after its kind: a name, an
/// address, a write-only secret and an optional CA certificate (PEM).
#[component]
pub fn SenderFields(
    address_label: &'static str,
    address_required: bool,
    secret_label: &'static str,
    secret_max: &'static str,
    ca_label: &'static str,
) -> impl IntoView {
    view! {
        <label class="field">
            <span>"Name"</span>
            <input class="input" type="text" name="name" required maxlength="64" autocomplete="off" />
        </label>
        <label class="field">
            <span>{address_label}</span>
            <input class="input" type="text" name="address" required=address_required maxlength="2048" autocomplete="off" />
        </label>
        <label class="field">
            <span>{secret_label}</span>
            <input class="input" type="password" name="secret" maxlength=secret_max autocomplete="new-password" />
        </label>
        <label class="field">
            <span>{ca_label}</span>
            <textarea class="input font-mono text-xs" name="ca_pem" rows="3" spellcheck="false"></textarea>
        </label>
    }
}

/// A form that empties itself once `action` succeeds, so that what was
/// typed (a secret, a key, a URL with a token) does not linger in the page.
pub fn emptied_on_success<T>(action: ServerAction<T>) -> NodeRef<leptos::html::Form>
where
    T: leptos::server_fn::ServerFn<Error = AppError> + Send + Sync + Clone + 'static,
    T::Output: Send + Sync + Clone + 'static,
{
    let form = NodeRef::<leptos::html::Form>::new();
    Effect::new(move |_| {
        if let (Some(Ok(_)), Some(form)) = (action.value().get(), form.get()) {
            form.reset();
        }
    });
    form
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
                    <div data-testid="offline-alert" role="alert" class="border-b border-amber-200 bg-amber-50 px-4 py-2 text-sm text-amber-900 md:px-6">
                        {format!("{} server(s) offline (not heard from for 90 s): {}. ", offline.len(), offline.join(", "))}
                        <A href="/servers" attr:class="font-semibold underline">"View servers"</A>
                    </div>
                })
            })}
        </Suspense>
    }
}
