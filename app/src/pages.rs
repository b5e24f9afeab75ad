//! The pages of the dashboard.

use control::{Role, TeamView};
use leptos::prelude::*;
use leptos_router::components::{Redirect, A};
use leptos_router::hooks::use_params_map;

use crate::api::*;
use crate::ui::{ErrorPanel, FormError, SignedInUser};

#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        res.set_status(axum::http::StatusCode::NOT_FOUND);
    }
    view! {
        <main class="mx-auto max-w-md p-8 text-center">
            <h1 class="text-2xl font-semibold">"Page not found"</h1>
            <p class="mt-2 text-slate-600">"There is nothing at this address."</p>
            <A href="/" attr:class="mt-4 inline-block text-sky-700 underline">"Back to the dashboard"</A>
        </main>
    }
}

#[component]
pub(crate) fn AuthCard(title: &'static str, children: Children) -> impl IntoView {
    view! {
        <main class="flex min-h-screen items-center justify-center p-6">
            <div class="w-full max-w-sm rounded-xl border border-slate-200 bg-white p-8 shadow-sm">
                <div class="mb-6">
                    <div class="text-sm font-semibold uppercase tracking-wide text-sky-700">"Pilothouse"</div>
                    <h1 class="mt-1 text-xl font-semibold">{title}</h1>
                </div>
                {children()}
            </div>
        </main>
    }
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let login = ServerAction::<Login>::new();
    let state = Resource::new(
        || (),
        |_| async {
            (
                setup_state().await,
                current_user().await,
                crate::reset_page::password_reset_available().await,
                crate::sso_page::sign_in_options().await,
            )
        },
    );
    view! {
        <Suspense>
            {move || Suspend::new(async move {
                match state.await {
                    (_, Ok(Some(_)), _, _) => view! { <Redirect path="/" /> }.into_any(),
                    (setup, _, reset, sso) => view! {
                        <AuthCard title="Sign in">
                            {(setup == Ok(Installation::Open)).then(|| view! {
                                <p data-testid="setup-hint" class="mb-4 rounded-md bg-sky-50 p-3 text-sm text-sky-900">
                                    "First run: no account exists yet. "
                                    <A href="/setup" attr:class="font-semibold underline">"Set up Pilothouse"</A>
                                    " with the code from the server log."
                                </p>
                            })}
                            {sso.ok().map(|options| view! { <crate::sso_page::ProviderButtons options /> })}
                            <ActionForm action=login attr:class="flex flex-col gap-4">
                                <FormError action=login />
                                <label class="field">
                                    <span>"Email"</span>
                                    <input class="input" type="email" name="email" autocomplete="username" required maxlength="254" />
                                </label>
                                <label class="field">
                                    <span>"Password"</span>
                                    <input class="input" type="password" name="password" autocomplete="current-password" required maxlength="128" />
                                </label>
                                <button class="btn-primary" type="submit">"Sign in"</button>
                            </ActionForm>
                            {(reset == Ok(true)).then(|| view! {
                                <p class="mt-4 text-sm">
                                    <A href="/forgot-password" attr:class="text-sky-700 underline">"Forgot your password?"</A>
                                </p>
                            })}
                        </AuthCard>
                    }
                    .into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
pub fn SetupPage() -> impl IntoView {
    let setup = ServerAction::<CompleteSetup>::new();
    let state = Resource::new(|| (), |_| setup_state());
    view! {
        <Suspense>
            {move || Suspend::new(async move {
                match state.await {
                    Ok(Installation::Open) => view! {
                        <AuthCard title="Set up Pilothouse">
                            <p class="mb-4 text-sm text-slate-600">
                                "Create the first Owner and organisation. The one-time setup code is in the server log."
                            </p>
                            <ActionForm action=setup attr:class="flex flex-col gap-4">
                                <FormError action=setup />
                                <label class="field">
                                    <span>"Setup code"</span>
                                    <input class="input font-mono" name="code" required autocomplete="off" maxlength="64" />
                                </label>
                                <label class="field">
                                    <span>"Organisation name"</span>
                                    <input class="input" name="org_name" required maxlength="80" />
                                </label>
                                <label class="field">
                                    <span>"Your email"</span>
                                    <input class="input" type="email" name="email" autocomplete="username" required maxlength="254" />
                                </label>
                                <label class="field">
                                    <span>"Password (at least 12 characters)"</span>
                                    <input class="input" type="password" name="password" autocomplete="new-password" required minlength="12" maxlength="128" />
                                </label>
                                <button class="btn-primary" type="submit">"Create owner account"</button>
                            </ActionForm>
                        </AuthCard>
                    }
                    .into_any(),
                    Ok(Installation::Done) => view! { <Redirect path="/login" /> }.into_any(),
                    Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
pub fn InvitePage() -> impl IntoView {
    let params = use_params_map();
    let token = move || params.with(|p| p.get("token").unwrap_or_default());
    let accept = ServerAction::<AcceptInvite>::new();
    let details = Resource::new(token, invite_details);
    view! {
        <Suspense>
            {move || Suspend::new(async move {
                let token = token();
                match details.await {
                    Ok(page) => {
                        let invite = page.invite;
                        let existing = invite.account_exists;
                        let signed_in = page.signed_in_as.clone();
                        let offer = page.offer.clone();
                        let accept_with = {
                            let token = token.clone();
                            move || {
                                // An invitation token is hex: anything else gets no links.
                                let plain = token.chars().all(|c| c.is_ascii_alphanumeric());
                                [("oidc", offer.oidc.clone()), ("github", offer.github.clone())]
                                    .into_iter()
                                    .filter(move |_| plain)
                                    .filter_map(|(key, label)| label.map(|label| view! {
                                        <a class="btn-secondary text-center" rel="external"
                                            href=format!("/auth/{key}/start?invite={token}")
                                            data-testid=format!("accept-with-{key}")>
                                            {format!("Accept with {label}")}
                                        </a>
                                    }))
                                    .collect_view()
                            }
                        };
                        view! {
                            <AuthCard title="Join an organisation">
                                <p class="mb-4 text-sm text-slate-700">
                                    "You are invited to join " <strong>{invite.org_name.clone()}</strong> " as "
                                    <strong>{invite.role.label()}</strong> "."
                                </p>
                                <p class="mb-4 text-sm text-slate-600">"Invitation for " <span data-testid="invite-email">{invite.email.clone()}</span></p>
                                <ActionForm action=accept attr:class="flex flex-col gap-4">
                                    <FormError action=accept />
                                    <input type="hidden" name="token" value=token.clone() />
                                    {match (signed_in, existing) {
                                        (Some(email), _) => view! {
                                            <p class="text-sm">"Signed in as " {email}</p>
                                            <button class="btn-primary" type="submit">"Accept invitation"</button>
                                        }
                                        .into_any(),
                                        (None, true) => view! {
                                            <p class="text-sm">"An account with this email exists. "
                                                <A href="/login" attr:class="text-sky-700 underline">"Sign in"</A>
                                                " first, then open this link again."</p>
                                        }
                                        .into_any(),
                                        (None, false) => view! {
                                            {accept_with()}
                                            <label class="field">
                                                <span>"Choose a password (at least 12 characters)"</span>
                                                <input class="input" type="password" name="password" autocomplete="new-password" required minlength="12" maxlength="128" />
                                            </label>
                                            <button class="btn-primary" type="submit">"Create account and join"</button>
                                        }
                                        .into_any(),
                                    }}
                                </ActionForm>
                            </AuthCard>
                        }
                        .into_any()
                    }
                    Err(e) => view! {
                        <AuthCard title="Invitation">
                            <p data-testid="form-error" class="rounded-md bg-red-50 p-3 text-sm text-red-800">{e.to_string()}</p>
                            <A href="/login" attr:class="mt-4 inline-block text-sky-700 underline">"Go to sign in"</A>
                        </AuthCard>
                    }
                    .into_any(),
                }
            })}
        </Suspense>
    }
}

pub(crate) fn me() -> SignedInUser {
    expect_context::<SignedInUser>()
}

#[component]
pub(crate) fn PageTitle(
    title: &'static str,
    #[prop(optional)] subtitle: Option<&'static str>,
) -> impl IntoView {
    view! {
        <div class="mb-6">
            <h1 class="text-2xl font-semibold tracking-tight">{title}</h1>
            {subtitle.map(|s| view! { <p class="mt-1 text-sm text-slate-600">{s}</p> })}
        </div>
    }
}

#[component]
pub fn Team() -> impl IntoView {
    let invite = ServerAction::<InviteMember>::new();
    let change = ServerAction::<ChangeRole>::new();
    let remove = ServerAction::<RemoveMember>::new();
    let revoke = ServerAction::<RevokeInvite>::new();
    let data = Resource::new(
        move || {
            (
                invite.version().get(),
                change.version().get(),
                remove.version().get(),
                revoke.version().get(),
            )
        },
        |_| load_team(),
    );
    view! {
        <PageTitle title="Team" subtitle="Members of this organisation and their roles." />
        <div class="flex flex-col gap-2 mb-4">
            <FormError action=change />
            <FormError action=remove />
            <FormError action=revoke />
        </div>
        <Suspense fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(view) => view! { <TeamTables view invite change remove revoke /> }.into_any(),
                    Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Suspense>
    }
}

fn role_options(can_manage_owners: bool, selected: Role) -> impl IntoView {
    Role::ALL
        .into_iter()
        .filter(move |r| can_manage_owners || *r != Role::Owner)
        .map(
            move |r| view! { <option value=r.as_str() selected=r == selected>{r.label()}</option> },
        )
        .collect_view()
}

#[component]
fn TeamTables(
    view: TeamView,
    invite: ServerAction<InviteMember>,
    change: ServerAction<ChangeRole>,
    remove: ServerAction<RemoveMember>,
    revoke: ServerAction<RevokeInvite>,
) -> impl IntoView {
    let can_manage = view.can_manage;
    let owners = view.can_manage_owners;
    let me = me().0.user_id;
    let invites = view.invites;
    view! {
        <div class="overflow-x-auto rounded-lg border border-slate-200 bg-white">
            <table class="table">
                <thead>
                    <tr><th>"Email"</th><th>"Role"</th><th>"Joined"</th>{can_manage.then(|| view! { <th>"Manage"</th> })}</tr>
                </thead>
                <tbody>
                    {view.members.into_iter().map(|m| {
                        let editable = can_manage && (owners || m.role != Role::Owner);
                        view! {
                            <tr data-testid="member-row" data-email=m.email.clone()>
                                <td>{m.email.clone()} {(m.user_id == me).then(|| view! { <span class="ml-1 text-xs text-slate-500">"(you)"</span> })}</td>
                                <td data-testid="member-role">{m.role.label()}</td>
                                <td class="whitespace-nowrap text-sm text-slate-600">{m.joined_at.display_utc()}</td>
                                {can_manage.then(|| view! {
                                    <td>
                                        <Show when=move || editable fallback=|| view! { <span class="text-xs text-slate-400">"Owner only"</span> }>
                                            <div class="flex items-center gap-2">
                                                <ActionForm action=change attr:class="flex items-center gap-2">
                                                    <input type="hidden" name="user_id" value=m.user_id.0.to_string() />
                                                    <select name="role" class="input py-1" aria-label="New role">{role_options(owners, m.role)}</select>
                                                    <button class="btn-secondary py-1" type="submit">"Change role"</button>
                                                </ActionForm>
                                                <ActionForm action=remove>
                                                    <input type="hidden" name="user_id" value=m.user_id.0.to_string() />
                                                    <button class="btn-danger py-1" type="submit">"Remove"</button>
                                                </ActionForm>
                                            </div>
                                        </Show>
                                    </td>
                                })}
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
        {can_manage.then(move || view! {
            <section class="mt-8 max-w-xl">
                <h2 class="text-lg font-semibold">"Invite someone"</h2>
                <ActionForm action=invite attr:class="mt-3 flex flex-wrap items-end gap-3">
                    <label class="field flex-1">
                        <span>"Email"</span>
                        <input class="input" type="email" name="email" required maxlength="254" />
                    </label>
                    <label class="field">
                        <span>"Role"</span>
                        <select name="role" class="input">{role_options(owners, Role::Member)}</select>
                    </label>
                    <button class="btn-primary" type="submit">"Send invitation"</button>
                </ActionForm>
                <div class="mt-3">
                    <FormError action=invite />
                    {move || invite.value().get().and_then(Result::ok).map(|link| view! {
                        <div class="rounded-md bg-emerald-50 p-3 text-sm">
                            <p>"Share this one-time link with the person you invited (valid for 7 days):"</p>
                            <code data-testid="invite-link" class="mt-1 block break-all">{link}</code>
                        </div>
                    })}
                </div>
            </section>
            <section class="mt-8">
                <h2 class="text-lg font-semibold">"Pending invitations"</h2>
                {if invites.is_empty() {
                    view! { <p class="mt-2 text-sm text-slate-600">"None."</p> }.into_any()
                } else {
                    view! {
                        <table class="table mt-2 rounded-lg border border-slate-200 bg-white">
                            <thead><tr><th>"Email"</th><th>"Role"</th><th>"Invited by"</th><th>"Expires"</th><th></th></tr></thead>
                            <tbody>
                                {invites.into_iter().map(|i| view! {
                                    <tr data-testid="invite-row">
                                        <td>{i.email.clone()}</td>
                                        <td>{i.role.label()}</td>
                                        <td>{i.invited_by.clone()}</td>
                                        <td class="whitespace-nowrap">{i.expires_at.display_utc()}</td>
                                        <td>
                                            <ActionForm action=revoke>
                                                <input type="hidden" name="id" value=i.id.0.to_string() />
                                                <button class="btn-secondary py-1" type="submit">"Revoke"</button>
                                            </ActionForm>
                                        </td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any()
                }}
            </section>
        })}
    }
}

#[component]
pub fn Settings() -> impl IntoView {
    let others = ServerAction::<SignOutOthers>::new();
    let sessions = Resource::new(move || others.version().get(), |_| my_sessions());
    view! {
        <PageTitle title="Settings" subtitle="Your account and where you are signed in." />
        <section>
            <h2 class="text-lg font-semibold">"Your sessions"</h2>
            <Suspense fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match sessions.await {
                        Ok(list) => view! {
                            <table class="table mt-2 rounded-lg border border-slate-200 bg-white">
                                <thead><tr><th>"Signed in"</th><th>"Last active"</th><th>"IP"</th><th>"Browser"</th><th></th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|s| view! {
                                        <tr data-testid="session-row">
                                            <td class="whitespace-nowrap">{s.created_at.display_utc()}</td>
                                            <td class="whitespace-nowrap">{s.last_seen_at.display_utc()}</td>
                                            <td>{s.ip}</td>
                                            <td class="max-w-xs truncate text-xs">{s.user_agent}</td>
                                            <td>{s.current.then(|| view! { <span class="badge">"This session"</span> })}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }
                        .into_any(),
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Suspense>
            <ActionForm action=others attr:class="mt-4">
                <FormError action=others />
                <button class="btn-secondary" type="submit">"Sign out everywhere else"</button>
            </ActionForm>
            {move || others.value().get().and_then(Result::ok).map(|n| view! {
                <p class="mt-2 text-sm text-emerald-700" data-testid="signed-out-count">{format!("Signed out {n} other session(s).")}</p>
            })}
        </section>
        <crate::password_page::PasswordSection />
        <crate::sso_page::SignInMethodsSection />
        <crate::mfa_page::TwoFactorSection />
        <crate::notices_page::NoticesSection />
        <AuditKeySection />
        <crate::sso_page::JoinDomainsSection />
        <crate::forwarding_page::ForwardingSection />
        <crate::notifications_page::NotificationsSection />
        <crate::secrets_page::SecretsSection />
    }
}

/// The audit public key, for the customer to pin: it verifies exports of the
/// audit log and its signed checkpoints offline.
#[component]
fn AuditKeySection() -> impl IntoView {
    let key = Resource::new(|| (), |_| crate::api::audit_key());
    view! {
        <section class="mt-8">
            <h2 class="text-lg font-semibold">"Audit public key"</h2>
            <p class="mt-1 max-w-2xl text-sm text-slate-600">
                "The control plane signs checkpoints of the audit log with this key. Keep a copy outside Pilothouse, with the checkpoints, and verify any export offline: "
                <code class="text-xs">"pilothouse audit verify --export FILE --checkpoints FILE --key KEY"</code>
            </p>
            <Suspense fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match key.await {
                        Ok(k) => view! {
                            <dl class="mt-3 text-sm">
                                <dt class="card-label">"Key"</dt>
                                <dd><code class="break-all" data-testid="audit-public-key">{k.public_key}</code></dd>
                                <dt class="card-label mt-2">"Key id"</dt>
                                <dd><code data-testid="audit-key-id">{k.key_id}</code></dd>
                            </dl>
                        }
                        .into_any(),
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}
