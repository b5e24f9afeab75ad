//! Sign-in with an identity provider, in the pages: the provider buttons on
//! the sign-in page, Settings -> Sign-in methods (link, unlink), and
//! Settings -> Joining by email domain (Owners). The protocol is
//! `server/src/sso/`'s; the rules `control::sso`'s.

use control::{JoinDomain, LinkedIdentity, SsoProvider as Provider};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ui::FormError;
use crate::AppError;

/// The identity providers this installation offers, by the names the pages
/// give them (`None`: not configured).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoOffer {
    pub oidc: Option<String>,
    pub github: Option<String>,
}

impl SsoOffer {
    pub fn label(&self, provider: Provider) -> Option<&str> {
        match provider {
            Provider::Oidc => self.oidc.as_deref(),
            Provider::GitHub => self.github.as_deref(),
        }
    }
}

/// What the sign-in page offers, and the refusal of an SSO sign-in that
/// just came back (shown once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInChoices {
    pub offer: SsoOffer,
    pub error: Option<String>,
}

#[server(endpoint = "sign-in-options")]
pub async fn sign_in_options() -> Result<SignInChoices, AppError> {
    let cx = crate::context::cx().await?;
    let error = cx
        .session
        .remove::<String>(control::sessions::keys::SSO_ERROR)
        .await?;
    Ok(SignInChoices {
        offer: cx.state.sso.clone(),
        error,
    })
}

/// One row of Settings -> Sign-in methods.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodRow {
    pub provider: Provider,
    pub label: String,
    pub linked: Option<LinkedIdentity>,
    /// Where "Link" goes (with a one-time token), when not linked.
    pub link_href: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodsView {
    pub password: bool,
    pub rows: Vec<MethodRow>,
    /// The refusal of a link that just came back (shown once).
    pub error: Option<String>,
}

#[server(endpoint = "sign-in-methods")]
pub async fn sign_in_methods() -> Result<MethodsView, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let methods = control::sso::methods(&actor).await?;
    let error = cx
        .session
        .remove::<String>(control::sessions::keys::SSO_ERROR)
        .await?;
    // One token for every "Link" link on the page: the session keeps one,
    // and the start spends it.
    let token = control::crypto::random_token(16);
    let mut offered_link = false;
    let mut rows = Vec::new();
    for provider in [Provider::Oidc, Provider::GitHub] {
        let linked = methods
            .identities
            .iter()
            .find(|i| i.provider == provider)
            .cloned();
        let Some(label) = cx.state.sso.label(provider).map(str::to_string) else {
            continue;
        };
        let link_href = match linked {
            Some(_) => None,
            None => {
                offered_link = true;
                Some(format!("/auth/{}/start?link={token}", provider.as_str()))
            }
        };
        rows.push(MethodRow {
            provider,
            label,
            linked,
            link_href,
        });
    }
    if offered_link {
        cx.session
            .insert(control::sessions::keys::SSO_LINK_TOKEN, &token)
            .await?;
    }
    Ok(MethodsView {
        password: methods.password,
        rows,
        error,
    })
}

#[server(endpoint = "unlink-identity")]
pub async fn unlink_identity(provider: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let provider = Provider::parse(&provider)
        .ok_or_else(|| AppError::Invalid(format!("`{provider}` is not a sign-in provider.")))?;
    Ok(control::sso::unlink(&actor, provider, cx.now).await?)
}

#[server(endpoint = "join-domains")]
pub async fn join_domains() -> Result<Vec<JoinDomain>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    Ok(control::sso::join_domains(&auth).await?)
}

#[server(endpoint = "add-join-domain")]
pub async fn add_join_domain(domain: String, role: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ManageSignIn>()?;
    let role: control::Role = role
        .trim()
        .parse()
        .map_err(|_| AppError::Invalid(format!("`{role}` is not a role.")))?;
    Ok(control::sso::add_join_domain(&auth, &domain, role, cx.now).await?)
}

#[server(endpoint = "remove-join-domain")]
pub async fn remove_join_domain(domain: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ManageSignIn>()?;
    Ok(control::sso::remove_join_domain(&auth, &domain, cx.now).await?)
}

/// Whether the organisation requires SSO, and whether this server offers a
/// provider at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoRequirementView {
    pub required: bool,
    pub offered: bool,
}

#[server(endpoint = "sso-requirement")]
pub async fn sso_requirement() -> Result<SsoRequirementView, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    Ok(SsoRequirementView {
        required: control::sso::required(&auth).await?,
        offered: cx.state.sso.oidc.is_some() || cx.state.sso.github.is_some(),
    })
}

#[server(endpoint = "set-sso-required")]
pub async fn set_sso_required(on: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ManageSignIn>()?;
    let on = match on.as_str() {
        "true" => true,
        "false" => false,
        other => {
            return Err(AppError::Invalid(format!(
                "`{other}` is not true or false."
            )))
        }
    };
    let offered = cx.state.sso.oidc.is_some() || cx.state.sso.github.is_some();
    Ok(control::sso::set_required(&auth, on, offered, cx.now).await?)
}

/// The sign-in page's provider buttons and the refusal of an SSO sign-in
/// that just came back. Plain links: they work before the page hydrates.
#[component]
pub fn ProviderButtons(options: SignInChoices) -> impl IntoView {
    let SignInChoices { offer, error } = options;
    let any = offer.oidc.is_some() || offer.github.is_some();
    view! {
        {error.map(|e| view! {
            <p class="mb-4 rounded-md bg-red-50 p-3 text-sm text-red-900" role="alert" data-testid="sso-error">{e}</p>
        })}
        {any.then(|| view! {
            <div class="mb-4 flex flex-col gap-2" data-testid="sso-buttons">
                {offer.oidc.map(|label| view! {
                    <a class="btn-secondary text-center" href="/auth/oidc/start" rel="external" data-testid="sso-oidc">
                        {format!("Sign in with {label}")}
                    </a>
                })}
                {offer.github.map(|label| view! {
                    <a class="btn-secondary text-center" href="/auth/github/start" rel="external" data-testid="sso-github">
                        {format!("Sign in with {label}")}
                    </a>
                })}
                <p class="text-center text-xs text-slate-500">"or with your password"</p>
            </div>
        })}
    }
}

/// Settings -> Sign-in methods.
#[component]
pub fn SignInMethodsSection() -> impl IntoView {
    let unlink = ServerAction::<UnlinkIdentity>::new();
    let view_ = Resource::new(move || unlink.version().get(), |_| sign_in_methods());
    view! {
        <section class="mt-8" data-testid="sign-in-methods">
            <h2 class="text-lg font-semibold">"Sign-in methods"</h2>
            <p class="mt-1 max-w-2xl text-sm text-slate-600">
                "Link an account at an identity provider to sign in with it. It links only when the provider vouches for your own email address."
            </p>
            <Suspense fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match view_.await {
                        Ok(v) => view! {
                            {v.error.map(|e| view! {
                                <p class="mt-2 rounded-md bg-red-50 p-3 text-sm text-red-900" role="alert" data-testid="sso-error">{e}</p>
                            })}
                            <ul class="mt-3 flex max-w-xl flex-col gap-2 text-sm">
                                <li class="flex flex-wrap items-center justify-between gap-2 rounded-md border border-slate-200 bg-white p-3">
                                    <span>"Password"</span>
                                    <span class="text-slate-600" data-testid="password-method">
                                        {if v.password { "Set" } else { "None: you sign in through a provider" }}
                                    </span>
                                </li>
                                {v.rows.into_iter().map(|row| {
                                    let provider = row.provider.as_str();
                                    view! {
                                        <li class="flex flex-wrap items-center justify-between gap-2 rounded-md border border-slate-200 bg-white p-3" data-testid=format!("method-{provider}")>
                                            <span>{row.label.clone()}</span>
                                            {match (row.linked, row.link_href) {
                                                (Some(linked), _) => view! {
                                                    <span class="flex flex-wrap items-center gap-3">
                                                        <span class="text-slate-600" data-testid="linked-email">{format!("Linked: {}", linked.email)}</span>
                                                        <ActionForm action=unlink>
                                                            <input type="hidden" name="provider" value=provider />
                                                            <button class="btn-secondary" type="submit">"Unlink"</button>
                                                        </ActionForm>
                                                    </span>
                                                }.into_any(),
                                                (None, Some(href)) => view! {
                                                    <a class="btn-secondary" href=href rel="external" data-testid="link-provider">{format!("Link {}", row.label)}</a>
                                                }.into_any(),
                                                (None, None) => ().into_any(),
                                            }}
                                        </li>
                                    }
                                }).collect_view()}
                            </ul>
                        }.into_any(),
                        Err(e) => view! { <crate::ui::ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Suspense>
            <FormError action=unlink />
        </section>
    }
}

/// Settings -> Single sign-on: whether the organisation requires it, and
/// the domains whose people join by themselves. Everyone reads it, Owners
/// change it.
#[component]
pub fn JoinDomainsSection() -> impl IntoView {
    let add = ServerAction::<AddJoinDomain>::new();
    let remove = ServerAction::<RemoveJoinDomain>::new();
    let require = ServerAction::<SetSsoRequired>::new();
    let list = Resource::new(
        move || (add.version().get(), remove.version().get()),
        |_| join_domains(),
    );
    let requirement = Resource::new(move || require.version().get(), |_| sso_requirement());
    view! {
        <section class="mt-8" data-testid="sso-requirement">
            <h2 class="text-lg font-semibold">"Single sign-on"</h2>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    match requirement.await {
                        Ok(r) => view! {
                            <p class="mt-1 max-w-2xl text-sm text-slate-600" data-testid="sso-required">
                                {if r.required {
                                    "Members must sign in through an identity provider: a password session is refused everything here. Owners may still use their password, so an outage at the provider cannot lock the organisation out."
                                } else if r.offered {
                                    "Members may sign in with their password or through an identity provider."
                                } else {
                                    "This server offers no identity provider."
                                }}
                            </p>
                            {(r.offered || r.required).then(|| view! {
                                <ActionForm action=require attr:class="mt-2">
                                    <input type="hidden" name="on" value=if r.required { "false" } else { "true" } />
                                    <button class="btn-secondary" type="submit">
                                        {if r.required { "Stop requiring single sign-on" } else { "Require single sign-on" }}
                                    </button>
                                </ActionForm>
                            })}
                        }.into_any(),
                        Err(e) => view! { <crate::ui::ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Suspense>
            <FormError action=require />
        </section>
        <section class="mt-8" data-testid="join-domains">
            <h2 class="text-lg font-semibold">"Joining by email domain"</h2>
            <p class="mt-1 max-w-2xl text-sm text-slate-600">
                "People whose provider vouches for an address at one of these domains join this organisation at their first sign-in with a provider, with the role given here. Anyone else needs an invitation."
            </p>
            <Suspense fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match list.await {
                        Ok(domains) if domains.is_empty() => view! {
                            <p class="mt-2 text-sm text-slate-500">"No domain joins by itself."</p>
                        }.into_any(),
                        Ok(domains) => view! {
                            <ul class="mt-3 flex max-w-xl flex-col gap-2 text-sm">
                                {domains.into_iter().map(|d| view! {
                                    <li class="flex flex-wrap items-center justify-between gap-2 rounded-md border border-slate-200 bg-white p-3" data-testid="join-domain">
                                        <span>{format!("{} joins as {}", d.domain, d.role.label())}</span>
                                        <ActionForm action=remove>
                                            <input type="hidden" name="domain" value=d.domain.clone() />
                                            <button class="btn-secondary" type="submit">"Remove"</button>
                                        </ActionForm>
                                    </li>
                                }).collect_view()}
                            </ul>
                        }.into_any(),
                        Err(e) => view! { <crate::ui::ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Suspense>
            <FormError action=remove />
            <ActionForm action=add attr:class="mt-3 flex max-w-xl flex-wrap items-end gap-3">
                <label class="field min-w-0 grow">
                    <span>"Domain"</span>
                    <input class="input" name="domain" placeholder="example.com" required maxlength="253" />
                </label>
                <label class="field">
                    <span>"Role"</span>
                    <select class="input" name="role">
                        <option value="viewer">"Viewer"</option>
                        <option value="member" selected>"Member"</option>
                        <option value="admin">"Admin"</option>
                    </select>
                </label>
                <button class="btn-primary" type="submit">"Allow"</button>
            </ActionForm>
            <FormError action=add />
        </section>
    }
}
