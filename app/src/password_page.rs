//! The Password section of Settings: a signed-in person changes their
//! password with the current one; every other session of theirs ends.

use leptos::prelude::*;

use crate::ui::FormError;
use crate::AppError;

/// Changes the signed-in person's password; returns how many other sessions
/// ended. This session stays.
#[server(endpoint = "change-password")]
pub async fn change_password(
    current: String,
    new_password: String,
    repeat: String,
) -> Result<u64, AppError> {
    if new_password != repeat {
        return Err(AppError::Invalid(
            "The new password and its repetition differ.".into(),
        ));
    }
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let keep = cx.session.id().ok_or_else(AppError::signed_out)?;
    Ok(control::accounts::change_password(
        &actor,
        secrecy::SecretString::from(current),
        secrecy::SecretString::from(new_password),
        &keep,
        cx.now,
    )
    .await?)
}

#[component]
pub fn PasswordSection() -> impl IntoView {
    let change = ServerAction::<ChangePassword>::new();
    view! {
        <section class="mt-8" data-testid="password">
            <h2 class="text-lg font-semibold">"Password"</h2>
            <ActionForm action=change attr:class="mt-3 flex max-w-sm flex-col gap-3">
                <label class="field">
                    <span>"Current password"</span>
                    <input class="input" type="password" name="current" required maxlength="128" autocomplete="current-password" />
                </label>
                <label class="field">
                    <span>"New password"</span>
                    <input class="input" type="password" name="new_password" required minlength="12" maxlength="128" autocomplete="new-password" />
                </label>
                <label class="field">
                    <span>"New password again"</span>
                    <input class="input" type="password" name="repeat" required minlength="12" maxlength="128" autocomplete="new-password" />
                </label>
                <FormError action=change />
                {move || change.value().get().and_then(Result::ok).map(|ended| view! {
                    <p class="text-sm text-emerald-800" data-testid="password-changed">
                        {format!("Password changed. {ended} other session(s) signed out.")}
                    </p>
                })}
                <div><button class="btn-primary" type="submit">"Change password"</button></div>
            </ActionForm>
        </section>
    }
}
