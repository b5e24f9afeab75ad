//! Access control: who is asking, and what their role lets them do.
//!
//! An [`Actor`] can only be built by [`actor`], which reads the person's
//! membership from the database; an [`Authorized<C>`] can only be built by
//! [`Actor::authorize`], which checks the role against the capability `C`.
//! Mutating functions in this crate take an `Authorized<C>`, so no edge (UI,
//! REST, CLI) can reach them without the check. Hiding a button is never the
//! control.
//!
//! An organisation may require two-factor sign-in for its Owners and Admins
//! ([`crate::mfa::set_required`]). Until such a person has set it up, every
//! capability is refused to them ("two-factor sign-in first"), checked when
//! the actor is built and again in each write transaction; what they can
//! still do is their own account's business (set it up, change their
//! password, see their sessions and sign-in notices, sign out), which takes
//! no capability. These refusals are not
//! recorded as `access.refused`: every page such a person has open would add
//! events while they sit there (the requirement itself is recorded when it is
//! turned on).
//!
//! Likewise an organisation may require SSO ([`crate::sso::set_required`]):
//! a session signed in with a password is refused every capability there
//! (Owners excepted, so a provider outage cannot lock the organisation
//! out), checked when the actor is built and in each write transaction.
//!
//! Every refusal for a member's role goes through [`Actor::refuse`], which
//! records `access.refused` in the member's organisation from a task of its
//! own: the refusal is answered at once and stands whether or not the event
//! can be written (a failure to write it is logged).

use std::marker::PhantomData;

use sqlx::Row;

use crate::audit::AuditActor;
use crate::store::{Store, Tx};
use crate::{ControlError, OrgId, OrgView, Role, UserId};

/// Where a request came from, for the audit log. Bounded so a hostile header
/// cannot bloat the log.
#[derive(Clone, Debug, Default)]
pub struct RequestMeta {
    pub ip: String,
    pub user_agent: String,
    /// The session was signed in through an identity provider (SSO), which
    /// an organisation may require ([`crate::sso::set_required`]).
    pub sso: bool,
}

impl RequestMeta {
    pub fn new(ip: impl Into<String>, user_agent: &str) -> Self {
        Self {
            ip: bounded(ip.into(), 64),
            user_agent: bounded(user_agent.to_string(), 256),
            sso: false,
        }
    }
}

fn bounded(mut s: String, max_chars: usize) -> String {
    s.retain(|c| !c.is_control());
    if s.chars().count() > max_chars {
        s = s.chars().take(max_chars).collect();
    }
    s
}

/// A signed-in person acting inside one organisation where they are a member.
#[derive(Clone, Debug)]
pub struct Actor {
    store: Store,
    user: UserId,
    email: String,
    org: OrgView,
    meta: RequestMeta,
    /// The organisation requires two-factor sign-in for this person's role
    /// and they have not set it up: every capability is refused.
    mfa_due: bool,
    /// The organisation requires SSO and this session signed in with a
    /// password: every capability is refused.
    sso_due: bool,
}

/// The refusal while two-factor sign-in is due.
pub const MFA_DUE: &str = "Your organisation requires two-factor sign-in for Owners and Admins. Set it up in Settings -> Two-factor sign-in first.";

/// The refusal while SSO is due.
pub const SSO_DUE: &str = "Your organisation requires signing in through its identity provider. Sign out, then sign in with it.";

impl Actor {
    pub fn user(&self) -> UserId {
        self.user
    }
    pub fn email(&self) -> &str {
        &self.email
    }
    pub fn org(&self) -> OrgId {
        self.org.id
    }
    pub fn org_view(&self) -> &OrgView {
        &self.org
    }
    pub fn role(&self) -> Role {
        self.org.role
    }
    pub fn meta(&self) -> &RequestMeta {
        &self.meta
    }
    pub fn store(&self) -> &Store {
        &self.store
    }
    /// Whether the organisation requires two-factor sign-in of this person
    /// and they have not set it up (see the module notes).
    pub fn mfa_due(&self) -> bool {
        self.mfa_due
    }
    /// Whether the organisation requires SSO and this session signed in with
    /// a password (see the module notes).
    pub fn sso_due(&self) -> bool {
        self.sso_due
    }

    pub fn audit_actor(&self) -> AuditActor {
        AuditActor {
            user: Some(self.user),
            label: self.email.clone(),
            ip: self.meta.ip.clone(),
            user_agent: self.meta.user_agent.clone(),
        }
    }

    /// The only way to obtain an [`Authorized`] proof.
    pub fn authorize<C: Capability>(&self) -> Result<Authorized<'_, C>, ControlError> {
        self.authorize_for::<C>(None)
    }

    /// [`Self::authorize`] for a request about `target` (`operation:ID`,
    /// `agent:ID`, ...), which a refusal records.
    pub fn authorize_on<C: Capability>(
        &self,
        target: &str,
    ) -> Result<Authorized<'_, C>, ControlError> {
        self.authorize_for::<C>(Some(target))
    }

    fn authorize_for<C: Capability>(
        &self,
        target: Option<&str>,
    ) -> Result<Authorized<'_, C>, ControlError> {
        if self.mfa_due {
            return Err(ControlError::forbidden(MFA_DUE));
        }
        if self.sso_due {
            return Err(ControlError::forbidden(SSO_DUE));
        }
        if C::allows(self.org.role) {
            Ok(Authorized {
                actor: self,
                _capability: PhantomData,
            })
        } else {
            Err(self.refuse(
                C::DESCRIPTION,
                Some(self.org.role),
                target,
                format!(
                    "Your role ({}) does not allow you to {}.",
                    self.org.role,
                    C::DESCRIPTION
                ),
            ))
        }
    }

    /// The refusal of `capability` to this member for `role` (`None`: no
    /// longer a member), as [`ControlError::Forbidden`] with `message`.
    /// Records `access.refused` with the capability, the role, and `target`
    /// when known, from a task of its own (see the module notes); the
    /// refusal never waits for it, so a caller may still hold its write
    /// transaction.
    pub(crate) fn refuse(
        &self,
        capability: &str,
        role: Option<Role>,
        target: Option<&str>,
        message: String,
    ) -> ControlError {
        let mut details = serde_json::json!({
            "capability": capability,
            "role": role.map(Role::as_str),
        });
        // A message that only names the capability adds nothing to it.
        if !message.contains(capability) {
            details["reason"] = serde_json::Value::String(message.clone());
        }
        let event = crate::audit::Event::new(
            self.org.id,
            crate::audit::AuditAction::AccessRefused,
            target.unwrap_or_default(),
            details,
        );
        let (store, actor) = (self.store.clone(), self.audit_actor());
        let task = async move {
            let written = async {
                let mut tx = store.begin().await?;
                crate::audit::append(&mut tx, &actor, event, crate::Timestamp::now()).await?;
                tx.commit().await
            };
            if let Err(e) = written.await {
                tracing::warn!(error = %e, actor = %actor.label, "a refused authorization could not be recorded in the audit log");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(tracing::Instrument::in_current_span(task));
            }
            Err(_) => tracing::warn!(
                capability,
                "a refused authorization was not recorded: no async runtime"
            ),
        }
        ControlError::forbidden(message)
    }

    /// Re-reads the actor's role inside a write transaction, so a role that was
    /// lowered a moment ago cannot still be used for a change. Returns the role
    /// as it is now: later checks in the same transaction use it, never the
    /// role cached on the actor.
    pub(crate) async fn recheck<C: Capability>(&self, tx: &mut Tx) -> Result<Role, ControlError> {
        let row = sqlx::query("SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2")
            .bind(self.org.id.0)
            .bind(self.user.0)
            .fetch_optional(tx.conn())
            .await?;
        let role: Option<Role> = match row {
            Some(r) => Some(parse_role(&r.try_get::<String, _>(0)?)?),
            None => None,
        };
        if let Some(role) = role {
            if mfa_due(tx.conn(), self.org.id, self.user, role).await? {
                return Err(ControlError::forbidden(MFA_DUE));
            }
            if sso_due(tx.conn(), self.org.id, role, &self.meta).await? {
                return Err(ControlError::forbidden(SSO_DUE));
            }
        }
        match role {
            Some(role) if C::allows(role) => Ok(role),
            _ => Err(self.refuse(
                C::DESCRIPTION,
                role,
                None,
                format!("Your role does not allow you to {}.", C::DESCRIPTION),
            )),
        }
    }

    /// Checks a capability against `role`, re-read inside the write
    /// transaction (from [`Actor::recheck`]).
    pub(crate) fn require<C: Capability>(
        &self,
        role: Role,
        target: Option<&str>,
    ) -> Result<(), ControlError> {
        if C::allows(role) {
            Ok(())
        } else {
            Err(self.refuse(
                C::DESCRIPTION,
                Some(role),
                target,
                format!(
                    "Your role ({role}) does not allow you to {}.",
                    C::DESCRIPTION
                ),
            ))
        }
    }
}

/// The operator at the `pilothouse` command line: whoever can run the binary
/// on the host with the database's credentials, which already grants every
/// change. Explicit so that CLI paths state what they act as instead of
/// building an [`Actor`] from a bare user id; audited as `cli`.
#[derive(Debug)]
pub struct Operator {
    store: Store,
}

impl Operator {
    /// Only the `pilothouse admin` commands call this.
    pub fn command_line(store: Store) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The organisation with this exact name, read inside `tx`.
    pub async fn org_named(&self, tx: &mut Tx, name: &str) -> Result<OrgId, ControlError> {
        let name = name.trim();
        let id: i64 = sqlx::query_scalar("SELECT id FROM orgs WHERE name = $1")
            .bind(name)
            .fetch_optional(tx.conn())
            .await?
            .ok_or_else(|| ControlError::not_found(format!("No organisation named `{name}`.")))?;
        Ok(OrgId(id))
    }
}

/// Proof that the actor's role allows capability `C`. It has no public constructor.
pub struct Authorized<'a, C> {
    actor: &'a Actor,
    _capability: PhantomData<C>,
}

impl<C> Authorized<'_, C> {
    pub fn actor(&self) -> &Actor {
        self.actor
    }
    pub fn store(&self) -> &Store {
        &self.actor.store
    }
}

/// Something a role may or may not do.
pub trait Capability {
    /// Completes "Your role does not allow you to ...".
    const DESCRIPTION: &'static str;
    fn allows(role: Role) -> bool;
}

/// Read anything in the organisation (every member, Viewer included).
pub struct ReadOrg;
impl Capability for ReadOrg {
    const DESCRIPTION: &'static str = "view this organisation";
    fn allows(_: Role) -> bool {
        true
    }
}

/// Invite, change and remove members (Owner, Admin).
pub struct ManageMembers;
impl Capability for ManageMembers {
    const DESCRIPTION: &'static str = "manage members";
    fn allows(role: Role) -> bool {
        role.manages_members()
    }
}

/// Make, change or remove Owners (Owner only).
pub struct ManageOwners;
impl Capability for ManageOwners {
    const DESCRIPTION: &'static str = "make or remove owners";
    fn allows(role: Role) -> bool {
        role == Role::Owner
    }
}

/// Change how people sign in to and join the organisation: the email domains
/// whose people join it at their first SSO sign-in (Owner only).
pub struct ManageSignIn;
impl Capability for ManageSignIn {
    const DESCRIPTION: &'static str = "change how people sign in and join";
    fn allows(role: Role) -> bool {
        role == Role::Owner
    }
}

pub(crate) fn parse_role(s: &str) -> Result<Role, ControlError> {
    s.parse()
        .map_err(|_| ControlError::Internal(format!("stored role `{s}` is not a role").into()))
}

/// The organisations a user belongs to, oldest membership first.
pub async fn orgs_of(store: &Store, user: UserId) -> Result<Vec<OrgView>, ControlError> {
    let rows = sqlx::query(
        "SELECT o.id AS id, o.name AS name, m.role AS role FROM memberships m JOIN orgs o ON o.id = m.org_id \
         WHERE m.user_id = $1 ORDER BY m.created_at, o.id",
    )
    .bind(user.0)
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(OrgView {
                id: OrgId(r.try_get("id")?),
                name: r.try_get("name")?,
                role: parse_role(&r.try_get::<String, _>("role")?)?,
            })
        })
        .collect()
}

/// Builds the actor for a signed-in user working in `org` (or in their first
/// organisation when `org` is `None` or no longer theirs).
pub async fn actor(
    store: &Store,
    user: UserId,
    org: Option<OrgId>,
    meta: RequestMeta,
) -> Result<Actor, ControlError> {
    let email: Option<String> = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user.0)
        .fetch_optional(store.pool())
        .await?;
    let Some(email) = email else {
        return Err(ControlError::Unauthenticated("Please sign in.".into()));
    };
    let orgs = orgs_of(store, user).await?;
    let chosen = org
        .and_then(|id| orgs.iter().find(|o| o.id == id))
        .or_else(|| orgs.first())
        .cloned()
        .ok_or_else(|| {
            ControlError::forbidden("Your account is not a member of any organisation.")
        })?;
    let mfa_due = mfa_due(store.pool(), chosen.id, user, chosen.role).await?;
    let sso_due = sso_due(store.pool(), chosen.id, chosen.role, &meta).await?;
    Ok(Actor {
        store: store.clone(),
        user,
        email,
        org: chosen,
        meta,
        mfa_due,
        sso_due,
    })
}

/// Whether `org` requires two-factor sign-in for `role` and `user`, a
/// password account, has not set it up. An account without a password (made
/// by an SSO sign-in) signs in only through its provider, whose second factor
/// is the provider's.
pub(crate) async fn mfa_due<'e, E>(
    e: E,
    org: OrgId,
    user: UserId,
    role: Role,
) -> Result<bool, ControlError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    if !crate::mfa::REQUIRABLE_ROLES.contains(&role) {
        return Ok(false);
    }
    let due: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM orgs o, users u WHERE o.id = $1 AND u.id = $2 AND o.require_mfa = 1 \
         AND u.password_sign_in = 1 AND NOT EXISTS \
         (SELECT 1 FROM user_totp t WHERE t.user_id = u.id AND t.confirmed_at IS NOT NULL)",
    )
    .bind(org.0)
    .bind(user.0)
    .fetch_optional(e)
    .await?;
    Ok(due.is_some())
}

/// Whether `org` requires SSO and the request's session signed in with a
/// password. Owners are not held: a provider outage must not lock the
/// organisation out.
pub(crate) async fn sso_due<'e, E>(
    e: E,
    org: OrgId,
    role: Role,
    meta: &RequestMeta,
) -> Result<bool, ControlError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    if meta.sso || role == Role::Owner {
        return Ok(false);
    }
    let required: Option<i64> = sqlx::query_scalar("SELECT require_sso FROM orgs WHERE id = $1")
        .bind(org.0)
        .fetch_optional(e)
        .await?;
    Ok(required == Some(1))
}

/// Like [`actor`] but only for an organisation the user is a member of:
/// switching to anyone else's organisation is refused, not silently redirected.
pub async fn actor_in(
    store: &Store,
    user: UserId,
    org: OrgId,
    meta: RequestMeta,
) -> Result<Actor, ControlError> {
    let actor = actor(store, user, Some(org), meta).await?;
    if actor.org() == org {
        Ok(actor)
    } else {
        Err(ControlError::not_found("No such organisation."))
    }
}
