//! Secrets on the Settings page: the organisation's secrets (name, scope,
//! kind, when set and last used) for everyone to read; setting, replacing and
//! deleting them for Owners and Admins. A value is typed in once, encrypted
//! at rest, and never shown again: no server function here returns one.

use control::SecretView;
use leptos::prelude::*;

use crate::pages::me;
use crate::ui::{ErrorPanel, FormError};
use crate::AppError;

/// The organisation's secrets, without values.
#[server(endpoint = "secrets")]
pub async fn list_secrets() -> Result<Vec<SecretView>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    Ok(control::secrets::list(&auth).await?)
}

/// Sets a secret (new, or a new value for the same scope and name); returns
/// its id, never its value.
#[server(endpoint = "set-secret")]
pub async fn set_secret(
    name: String,
    kind: String,
    scope: Option<String>,
    value: String,
) -> Result<String, AppError> {
    use control::secrets::{NewSecret, Scope, SecretKind};
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::secrets::ManageSecrets>()?;
    let new = NewSecret {
        scope: Scope::parse(scope.as_deref().unwrap_or(""))?,
        kind: kind.trim().parse::<SecretKind>()?,
        name,
        value: secrecy::SecretString::from(value),
    };
    Ok(control::secrets::set(&auth, &cx.state.secrets, new, cx.now).await?)
}

/// Generates an SSH key pair kept as secret `name`; returns the public key
/// (the private key is never shown).
#[server(endpoint = "generate-ssh-key")]
pub async fn generate_ssh_key(name: String, scope: Option<String>) -> Result<String, AppError> {
    use control::secrets::Scope;
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::secrets::ManageSecrets>()?;
    let scope = Scope::parse(scope.as_deref().unwrap_or(""))?;
    let (_, public) =
        control::secrets::generate_ssh_key(&auth, &cx.state.secrets, scope, &name, cx.now).await?;
    Ok(public)
}

#[server(endpoint = "delete-secret")]
pub async fn delete_secret(id: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::secrets::ManageSecrets>()?;
    Ok(control::secrets::delete(&auth, id.trim(), cx.now).await?)
}

fn scope_label(scope: &str) -> String {
    match scope.strip_prefix("agent:") {
        Some(agent) => format!("Server {agent}"),
        None => "All servers".to_string(),
    }
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "env" => "Environment variable",
        "api_key" => "Cloud API key",
        "ssh_key" => "SSH key",
        _ => "Credential",
    }
}

#[component]
pub fn SecretsSection() -> impl IntoView {
    let set = ServerAction::<SetSecret>::new();
    let generate = ServerAction::<GenerateSshKey>::new();
    let delete = ServerAction::<DeleteSecret>::new();
    let list = Resource::new(
        move || {
            (
                set.version().get(),
                generate.version().get(),
                delete.version().get(),
            )
        },
        |_| list_secrets(),
    );
    let can_manage = me().0.org.role.manages_members();
    view! {
        <section class="mt-8" data-testid="secrets">
            <h2 class="text-lg font-semibold">"Secrets"</h2>
            <p class="mt-1 max-w-2xl text-sm text-slate-600">
                "Environment variables, cloud API keys, credentials and SSH keys, encrypted at rest under a master key kept outside the database. A value is written once and never shown again: replace it by setting the same name, or delete it. An SSH key is generated here: its public key is shown, its private key never. A backup profile uses a secret as secret://NAME in its server's agent.toml."
            </p>
            <Transition fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match list.await {
                        Ok(list) if list.is_empty() => view! {
                            <p class="mt-3 text-sm text-slate-600" data-testid="no-secrets">"No secrets."</p>
                        }.into_any(),
                        Ok(list) => view! {
                            <div class="mt-3 overflow-x-auto">
                                <table class="table rounded-lg border border-slate-200 bg-white">
                                    <thead><tr><th>"Name"</th><th>"For"</th><th>"Kind"</th><th>"Set"</th><th>"Last used"</th><th></th></tr></thead>
                                    <tbody>
                                        {list.into_iter().map(|s| view! { <SecretRow s can_manage delete /> }).collect_view()}
                                    </tbody>
                                </table>
                            </div>
                        }.into_any(),
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Transition>
            <div class="mt-2"><FormError action=delete /></div>
            {can_manage.then(|| view! { <SetSecretForm set /> <GenerateSshKeyForm generate /> })}
        </section>
    }
}

#[component]
fn SecretRow(s: SecretView, can_manage: bool, delete: ServerAction<DeleteSecret>) -> impl IntoView {
    let last = s
        .last_used_at
        .map_or_else(|| "never".to_string(), |t| t.display_utc());
    let id = s.id.clone();
    let name = s.name.clone();
    view! {
        <tr data-testid="secret" data-name=name>
            <td class="font-mono text-sm font-medium">
                {s.name}
                {s.public_key.map(|k| view! {
                    <code class="mt-1 block max-w-md break-all text-xs font-normal text-slate-600" data-testid="ssh-public-key">{k}</code>
                })}
            </td>
            <td>{scope_label(&s.scope)}</td>
            <td>{kind_label(&s.kind)}</td>
            <td class="whitespace-nowrap">{s.updated_at.display_utc()}</td>
            <td class="whitespace-nowrap" data-testid="secret-last-used">{last}</td>
            <td>
                {can_manage.then(|| view! {
                    <ActionForm action=delete>
                        <input type="hidden" name="id" value=id />
                        <button class="btn-secondary py-1" type="submit">"Delete"</button>
                    </ActionForm>
                })}
            </td>
        </tr>
    }
}

#[component]
fn SetSecretForm(set: ServerAction<SetSecret>) -> impl IntoView {
    let form = crate::ui::emptied_on_success(set);
    view! {
        <div class="mt-4 max-w-xl">
            <h3 class="card-label">"Set a secret"</h3>
            <ActionForm action=set node_ref=form attr:class="mt-2 flex flex-col gap-3" attr:data-testid="set-secret">
                <label class="field">
                    <span>"Name (letters, digits and _)"</span>
                    <input class="input font-mono" type="text" name="name" required maxlength="128" autocomplete="off" pattern="[A-Za-z_][A-Za-z0-9_]*" />
                </label>
                <label class="field">
                    <span>"Kind"</span>
                    <select name="kind" class="input">
                        <option value="env" selected=true>"Environment variable"</option>
                        <option value="api_key">"Cloud API key"</option>
                        <option value="credential">"Credential"</option>
                    </select>
                </label>
                <ScopeField />
                <label class="field">
                    <span>"Value (never shown again)"</span>
                    <input class="input" type="password" name="value" required maxlength="32768" autocomplete="new-password" />
                </label>
                <FormError action=set />
                <div><button class="btn-primary" type="submit">"Set secret"</button></div>
            </ActionForm>
        </div>
    }
}

/// Which servers a secret is for: all, or one of the organisation's.
#[component]
fn ScopeField() -> impl IntoView {
    let servers = Resource::new(|| (), |_| crate::api::list_servers());
    view! {
        <label class="field">
            <span>"For"</span>
            <select name="scope" class="input">
                <option value="org" selected=true>"All servers"</option>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        servers.await.unwrap_or_default().into_iter().map(|s| view! {
                            <option value=s.id.0.clone()>{format!("{} ({})", s.hostname, s.id)}</option>
                        }).collect_view()
                    })}
                </Suspense>
            </select>
        </label>
    }
}

#[component]
fn GenerateSshKeyForm(generate: ServerAction<GenerateSshKey>) -> impl IntoView {
    view! {
        <div class="mt-4 max-w-xl">
            <h3 class="card-label">"Generate an SSH key"</h3>
            <p class="mt-1 text-sm text-slate-600">"An Ed25519 key pair made here. Put its public key where the servers connect to (authorized_keys); the private key only ever reaches the tasks that name it."</p>
            <ActionForm action=generate attr:class="mt-2 flex flex-col gap-3" attr:data-testid="generate-ssh-key">
                <label class="field">
                    <span>"Name (letters, digits and _)"</span>
                    <input class="input font-mono" type="text" name="name" required maxlength="128" autocomplete="off" pattern="[A-Za-z_][A-Za-z0-9_]*" />
                </label>
                <ScopeField />
                <FormError action=generate />
                <div><button class="btn-primary" type="submit">"Generate SSH key"</button></div>
            </ActionForm>
        </div>
    }
}
