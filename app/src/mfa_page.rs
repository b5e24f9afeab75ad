//! Two-factor sign-in in the dashboard: the code step of a sign-in
//! (`/login/code`), and the Two-factor section of Settings where a person
//! sets up an authenticator app (QR code, then a code to confirm, then their
//! recovery codes, shown once) or turns it off with their password.

use control::{MfaView, TotpSetup};
use leptos::prelude::*;
use leptos_router::components::{Redirect, A};

use crate::pages::AuthCard;
use crate::ui::{ErrorPanel, FormError};
use crate::AppError;

/// Whether this browser has a password sign-in waiting for its code.
#[server(endpoint = "sign-in-pending")]
pub async fn sign_in_pending() -> Result<bool, AppError> {
    let cx = crate::context::cx().await?;
    Ok(cx.pending_sign_in().await?.is_some())
}

/// Finishes a sign-in with a code from the authenticator app or a recovery
/// code; the session starts under a new id.
#[server(endpoint = "sign-in-code")]
pub async fn sign_in_code(code: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let pending = cx
        .pending_sign_in()
        .await?
        .ok_or_else(|| AppError::Unauthenticated("Enter your email and password first.".into()))?;
    let done = control::mfa::verify_sign_in(
        &cx.state.store,
        &cx.state.secrets,
        pending,
        &code,
        &cx.meta,
        cx.now,
    )
    .await?;
    cx.finish_sign_in(done).await?;
    leptos_axum::redirect("/");
    Ok(())
}

#[server(endpoint = "mfa-status")]
pub async fn mfa_status() -> Result<MfaView, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    Ok(control::mfa::status(&actor).await?)
}

/// A new authenticator seed for the signed-in person, shown once.
#[server(endpoint = "mfa-begin")]
pub async fn mfa_begin() -> Result<TotpSetup, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    Ok(control::mfa::begin_enrolment(&actor, &cx.state.secrets, cx.now).await?)
}

/// Confirms the set-up with a code; returns the recovery codes (shown once).
#[server(endpoint = "mfa-confirm")]
pub async fn mfa_confirm(code: String) -> Result<Vec<String>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    Ok(control::mfa::confirm_enrolment(&actor, &cx.state.secrets, &code, cx.now).await?)
}

#[server(endpoint = "mfa-disable")]
pub async fn mfa_disable(password: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    Ok(control::mfa::disable(&actor, secrecy::SecretString::from(password), cx.now).await?)
}

/// Requires two-factor sign-in of the organisation's Owners and Admins, or
/// stops requiring it (Owner).
#[server(endpoint = "mfa-require")]
pub async fn mfa_require(on: bool) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ManageOwners>()?;
    Ok(control::mfa::set_required(&auth, on, cx.now).await?)
}

/// `/login/code`: the second step of a sign-in.
#[component]
pub fn CodePage() -> impl IntoView {
    let submit = ServerAction::<SignInCode>::new();
    let pending = Resource::new(|| (), |_| sign_in_pending());
    view! {
        <Suspense>
            {move || Suspend::new(async move {
                match pending.await {
                    Ok(true) => view! {
                        <AuthCard title="Two-factor sign-in">
                            <p class="mb-4 text-sm text-slate-600">
                                "Enter the 6-digit code your authenticator app shows for Pilothouse, or one of your recovery codes."
                            </p>
                            <ActionForm action=submit attr:class="flex flex-col gap-4" attr:data-testid="code-form">
                                <FormError action=submit />
                                <label class="field">
                                    <span>"Code"</span>
                                    <input class="input font-mono" type="text" name="code" required maxlength="64"
                                        autocomplete="one-time-code" autocapitalize="characters" spellcheck="false" autofocus=true />
                                </label>
                                <button class="btn-primary" type="submit">"Sign in"</button>
                            </ActionForm>
                            <p class="mt-4 text-sm">
                                <A href="/login" attr:class="text-sky-700 underline">"Start again"</A>
                            </p>
                        </AuthCard>
                    }.into_any(),
                    _ => view! { <Redirect path="/login" /> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// The Two-factor section of Settings.
#[component]
pub fn TwoFactorSection() -> impl IntoView {
    let begin = ServerAction::<MfaBegin>::new();
    let confirm = ServerAction::<MfaConfirm>::new();
    let disable = ServerAction::<MfaDisable>::new();
    let require = ServerAction::<MfaRequire>::new();
    let status = Resource::new(
        move || {
            (
                confirm.version().get(),
                disable.version().get(),
                require.version().get(),
            )
        },
        |_| mfa_status(),
    );
    view! {
        <section class="mt-8" data-testid="two-factor">
            <h2 class="text-lg font-semibold">"Two-factor sign-in"</h2>
            <p class="mt-1 max-w-2xl text-sm text-slate-600">
                "With an authenticator app (any that reads a QR code: Google Authenticator, 1Password, Authy, …), signing in needs your password and a code from your phone."
            </p>
            {move || confirm.value().get().and_then(Result::ok).map(|codes| view! { <RecoveryCodes codes /> })}
            <Transition fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match status.await {
                        Ok(s) if s.enabled => view! {
                            <p class="mt-3 text-sm" data-testid="mfa-on">
                                <span class="badge bg-emerald-100 text-emerald-800">"On"</span>
                                {format!(" {} recovery code(s) left.", s.recovery_codes_left)}
                            </p>
                            <ActionForm action=disable attr:class="mt-3 flex max-w-sm flex-col gap-3" attr:data-testid="mfa-disable">
                                <label class="field">
                                    <span>"Your password, to turn it off"</span>
                                    <input class="input" type="password" name="password" required maxlength="128" autocomplete="current-password" />
                                </label>
                                <FormError action=disable />
                                <div><button class="btn-secondary" type="submit">"Turn off two-factor sign-in"</button></div>
                            </ActionForm>
                        }.into_any(),
                        Ok(_) => view! { <SetUp begin confirm /> }.into_any(),
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Transition>
            <Transition>
                {move || Suspend::new(async move {
                    status.await.ok().map(|s| view! { <Requirement status=s require /> })
                })}
            </Transition>
        </section>
    }
}

/// Whether the organisation requires two-factor sign-in of Owners and
/// Admins: a statement for everyone, a switch for Owners.
#[component]
fn Requirement(status: MfaView, require: ServerAction<MfaRequire>) -> impl IntoView {
    let on = status.org_requires;
    view! {
        <div class="mt-4 max-w-2xl text-sm" data-testid="mfa-requirement" data-required=on.to_string()>
            <p>
                {if on {
                    "Your organisation requires two-factor sign-in for Owners and Admins."
                } else {
                    "Your organisation does not require two-factor sign-in."
                }}
                {(status.required && !status.enabled).then_some(" Set it up above: until you do, everything else is refused.")}
            </p>
            {status.can_require.then(|| view! {
                <ActionForm action=require attr:class="mt-2">
                    <input type="hidden" name="on" value=(!on).to_string() />
                    <FormError action=require />
                    <button class="btn-secondary" type="submit" data-testid="mfa-require">
                        {if on { "Stop requiring it" } else { "Require it for Owners and Admins" }}
                    </button>
                </ActionForm>
            })}
        </div>
    }
}

#[component]
fn SetUp(begin: ServerAction<MfaBegin>, confirm: ServerAction<MfaConfirm>) -> impl IntoView {
    view! {
        <p class="mt-3 text-sm" data-testid="mfa-off"><span class="badge">"Off"</span></p>
        <ActionForm action=begin attr:class="mt-3">
            <FormError action=begin />
            <button class="btn-primary" type="submit" data-testid="mfa-begin">"Set up an authenticator app"</button>
        </ActionForm>
        {move || begin.value().get().and_then(Result::ok).map(|setup| view! {
            <div class="mt-4 flex flex-wrap items-start gap-6 rounded-lg border border-slate-200 bg-white p-4" data-testid="mfa-setup">
                <div class="h-48 w-48" inner_html=setup.qr_svg></div>
                <div class="max-w-sm">
                    <p class="text-sm">"Scan the code with your app, or type this key into it:"</p>
                    <p class="mt-1 break-all font-mono text-sm" data-testid="mfa-secret">{setup.secret}</p>
                    <ActionForm action=confirm attr:class="mt-4 flex flex-col gap-3" attr:data-testid="mfa-confirm">
                        <label class="field">
                            <span>"The 6-digit code the app shows"</span>
                            <input class="input font-mono" type="text" name="code" required maxlength="12"
                                inputmode="numeric" autocomplete="one-time-code" />
                        </label>
                        <FormError action=confirm />
                        <div><button class="btn-primary" type="submit">"Turn on"</button></div>
                    </ActionForm>
                </div>
            </div>
        })}
    }
}

#[component]
fn RecoveryCodes(codes: Vec<String>) -> impl IntoView {
    view! {
        <div class="mt-4 max-w-xl rounded-lg border border-amber-300 bg-amber-50 p-4" data-testid="recovery-codes">
            <p class="text-sm font-semibold">"Two-factor sign-in is on. Keep these recovery codes somewhere safe."</p>
            <p class="mt-1 text-sm text-slate-700">
                "Each signs you in once without your phone. They are shown only now."
            </p>
            <ul class="mt-3 grid grid-cols-2 gap-1 font-mono text-sm">
                {codes.into_iter().map(|c| view! { <li data-testid="recovery-code">{c}</li> }).collect_view()}
            </ul>
        </div>
    }
}
