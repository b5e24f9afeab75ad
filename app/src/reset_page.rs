//! Password reset by email: `/forgot-password` asks for a link (the answer
//! is the same whether or not an account has the address), and
//! `/reset-password/:token` sets a new password with it. Offered only when
//! the server can send email.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;

use crate::pages::AuthCard;
use crate::ui::FormError;
use crate::AppError;

#[cfg(feature = "ssr")]
const NOT_SET_UP: &str = "Password reset by email is not set up on this server. Ask the server's operator, who can set a new password with `pilothouse admin set-password`.";

/// Whether password reset by email is offered (the server can send email).
#[server(endpoint = "password-reset-available")]
pub async fn password_reset_available() -> Result<bool, AppError> {
    let cx = crate::context::cx().await?;
    Ok(cx.state.mail_enabled)
}

/// Asks for a reset link; answers the same whether or not an account has
/// the address.
#[server(endpoint = "request-password-reset")]
pub async fn request_password_reset(email: String) -> Result<String, AppError> {
    let cx = crate::context::cx().await?;
    if !cx.state.mail_enabled {
        return Err(AppError::Conflict(NOT_SET_UP.into()));
    }
    Ok(control::password_reset::request(
        &cx.state.store,
        cx.state.secrets.clone(),
        &email,
        &cx.meta,
        &cx.state.public_url,
        cx.now,
    )
    .await?
    .to_string())
}

/// The address a reset link is for, while it works.
#[server(endpoint = "reset-details")]
pub async fn reset_details(token: String) -> Result<String, AppError> {
    let cx = crate::context::cx().await?;
    Ok(control::password_reset::email_for(&cx.state.store, &token, cx.now).await?)
}

/// Sets a new password with a reset link; every session of the account ends.
#[server(endpoint = "reset-password")]
pub async fn reset_password(
    token: String,
    new_password: String,
    repeat: String,
) -> Result<(), AppError> {
    if new_password != repeat {
        return Err(AppError::Invalid(
            "The new password and its repetition differ.".into(),
        ));
    }
    let cx = crate::context::cx().await?;
    control::password_reset::reset(
        &cx.state.store,
        &token,
        secrecy::SecretString::from(new_password),
        &cx.meta,
        cx.now,
    )
    .await?;
    Ok(())
}

/// `/forgot-password`.
#[component]
pub fn ForgotPage() -> impl IntoView {
    let ask = ServerAction::<RequestPasswordReset>::new();
    view! {
        <AuthCard title="Reset your password">
            {move || match ask.value().get() {
                Some(Ok(message)) => view! {
                    <p class="rounded-md bg-sky-50 p-3 text-sm text-sky-900" data-testid="reset-requested">{message}</p>
                    <p class="mt-4 text-sm"><A href="/login" attr:class="text-sky-700 underline">"Back to sign in"</A></p>
                }.into_any(),
                _ => view! {
                    <p class="mb-4 text-sm text-slate-600">
                        "Enter the email address of your account. If it has one, a link to choose a new password goes to it."
                    </p>
                    <ActionForm action=ask attr:class="flex flex-col gap-4" attr:data-testid="forgot-form">
                        <FormError action=ask />
                        <label class="field">
                            <span>"Email"</span>
                            <input class="input" type="email" name="email" autocomplete="username" required maxlength="254" />
                        </label>
                        <button class="btn-primary" type="submit">"Send the link"</button>
                    </ActionForm>
                    <p class="mt-4 text-sm"><A href="/login" attr:class="text-sky-700 underline">"Back to sign in"</A></p>
                }.into_any(),
            }}
        </AuthCard>
    }
}

/// `/reset-password/:token`.
#[component]
pub fn ResetPage() -> impl IntoView {
    let params = use_params_map();
    let token = move || params.with(|p| p.get("token").unwrap_or_default());
    let reset = ServerAction::<ResetPassword>::new();
    let details = Resource::new(token, reset_details);
    view! {
        <Suspense>
            {move || Suspend::new(async move {
                let token = token();
                let done = reset.value().get().is_some_and(|r| r.is_ok());
                match details.await {
                    _ if done => view! {
                        <AuthCard title="Password changed">
                            <p class="text-sm" data-testid="reset-done">
                                "Your password is changed and every session of your account is signed out."
                            </p>
                            <A href="/login" attr:class="btn-primary mt-4 inline-block">"Sign in"</A>
                        </AuthCard>
                    }.into_any(),
                    Ok(email) => view! {
                        <AuthCard title="Choose a new password">
                            <p class="mb-4 text-sm text-slate-600">"For " <span data-testid="reset-email">{email}</span></p>
                            <ActionForm action=reset attr:class="flex flex-col gap-4" attr:data-testid="reset-form">
                                <FormError action=reset />
                                <input type="hidden" name="token" value=token />
                                <label class="field">
                                    <span>"New password (at least 12 characters)"</span>
                                    <input class="input" type="password" name="new_password" autocomplete="new-password" required minlength="12" maxlength="128" />
                                </label>
                                <label class="field">
                                    <span>"New password again"</span>
                                    <input class="input" type="password" name="repeat" autocomplete="new-password" required minlength="12" maxlength="128" />
                                </label>
                                <button class="btn-primary" type="submit">"Set the new password"</button>
                            </ActionForm>
                        </AuthCard>
                    }.into_any(),
                    Err(e) => view! {
                        <AuthCard title="Reset your password">
                            <p data-testid="form-error" class="rounded-md bg-red-50 p-3 text-sm text-red-800">{e.to_string()}</p>
                            <A href="/forgot-password" attr:class="mt-4 inline-block text-sky-700 underline">"Ask for a new link"</A>
                        </AuthCard>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}
