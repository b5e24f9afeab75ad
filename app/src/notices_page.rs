//! New sign-in notices in the dashboard: the "Sign-ins from new devices"
//! section of Settings (this was me / this wasn't me), and `/not-me/:token`,
//! where the email's link lands. Opening the link only shows a button: mail
//! scanners that fetch links do not act on them.

use control::SignInNotice;
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;

use crate::pages::AuthCard;
use crate::ui::{ErrorPanel, FormError};
use crate::AppError;

#[server(endpoint = "sign-in-notices")]
pub async fn sign_in_notices() -> Result<Vec<SignInNotice>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    Ok(control::notices::list(&actor).await?)
}

/// "This was me".
#[server(endpoint = "acknowledge-notice")]
pub async fn acknowledge_notice(id: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    Ok(control::notices::acknowledge(&actor, &id, cx.now).await?)
}

/// "This wasn't me" from the dashboard: every session ends, this one too.
#[server(endpoint = "disown-notice")]
pub async fn disown_notice(id: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    control::notices::disown(&actor, cx.mailing(), &id, cx.now).await?;
    cx.session.flush().await?;
    leptos_axum::redirect("/login");
    Ok(())
}

/// "This wasn't me" from the email's link; returns the account's address.
#[server(endpoint = "not-me")]
pub async fn not_me(token: String) -> Result<String, AppError> {
    let cx = crate::context::cx().await?;
    Ok(
        control::notices::disown_by_token(&cx.state.store, cx.mailing(), &token, &cx.meta, cx.now)
            .await?,
    )
}

/// The Settings section.
#[component]
pub fn NoticesSection() -> impl IntoView {
    let ack = ServerAction::<AcknowledgeNotice>::new();
    let disown = ServerAction::<DisownNotice>::new();
    let notices = Resource::new(move || ack.version().get(), |_| sign_in_notices());
    view! {
        <section class="mt-8" id="sign-ins" data-testid="sign-in-notices">
            <h2 class="text-lg font-semibold">"Sign-ins from new devices"</h2>
            <p class="mt-1 max-w-2xl text-sm text-slate-600">
                "A sign-in to your account from a browser or a network it has not used before is listed here, and emailed to you when the server sends email."
            </p>
            <FormError action=disown />
            <Transition fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match notices.await {
                        Ok(list) if list.is_empty() => view! { <p class="mt-2 text-sm text-slate-500">"None."</p> }.into_any(),
                        Ok(list) => view! {
                            <ul class="mt-2 flex max-w-3xl flex-col gap-2">
                                {list.into_iter().map(|n| view! { <Notice n ack disown /> }).collect_view()}
                            </ul>
                        }.into_any(),
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn Notice(
    n: SignInNotice,
    ack: ServerAction<AcknowledgeNotice>,
    disown: ServerAction<DisownNotice>,
) -> impl IntoView {
    let state = if n.disowned {
        "Reported: not you"
    } else if n.read {
        "You said this was you"
    } else {
        "New"
    };
    let open = !n.read && !n.disowned;
    view! {
        <li class="rounded-lg border border-slate-200 bg-white p-3 text-sm" data-testid="sign-in-notice" data-read=n.read.to_string()>
            <p>
                <span class="font-medium">{n.at.display_utc()}</span>
                {format!(" from {} ({}), {}", n.ip, n.what, n.method)}
                " " <span class="badge">{state}</span>
            </p>
            <p class="truncate text-xs text-slate-500">{n.user_agent}</p>
            {open.then(|| {
                let (a, d) = (n.id.clone(), n.id.clone());
                view! {
                    <div class="mt-2 flex gap-2">
                        <ActionForm action=ack>
                            <input type="hidden" name="id" value=a />
                            <button class="btn-secondary py-1" type="submit">"This was me"</button>
                        </ActionForm>
                        <ActionForm action=disown>
                            <input type="hidden" name="id" value=d />
                            <button class="btn-danger py-1" type="submit">"This wasn't me"</button>
                        </ActionForm>
                    </div>
                }
            })}
        </li>
    }
}

/// `/not-me/:token`: confirms before acting.
#[component]
pub fn NotMePage() -> impl IntoView {
    let params = use_params_map();
    let token = move || params.with(|p| p.get("token").unwrap_or_default());
    let act = ServerAction::<NotMe>::new();
    view! {
        <AuthCard title="This wasn't me">
            {move || match act.value().get() {
                Some(Ok(email)) => view! {
                    <p class="text-sm" data-testid="not-me-done">
                        {format!("Every session of {email} is signed out, its sign-in through Google or GitHub is unlinked, and its password no longer works. If the server sends email, a link to choose a new password is on its way; otherwise use \"Forgot your password?\" or ask the server's operator.")}
                    </p>
                    <A href="/login" attr:class="mt-4 inline-block text-sky-700 underline">"Go to sign in"</A>
                }.into_any(),
                _ => view! {
                    <p class="mb-4 text-sm text-slate-700">
                        "If you did not sign in, confirm below: every session of your account is signed out at once, its sign-in through Google or GitHub is unlinked, and its password stops working until you choose a new one."
                    </p>
                    <ActionForm action=act attr:class="flex flex-col gap-4">
                        <FormError action=act />
                        <input type="hidden" name="token" value=token() />
                        <button class="btn-danger" type="submit">"Sign out everywhere and lock the password"</button>
                    </ActionForm>
                }.into_any(),
            }}
        </AuthCard>
    }
}
