//! Team management: members, roles and invitations inside one organisation.
//!
//! Rules kept here (and only here): Owners and Admins manage members; only an
//! Owner creates, changes or removes an Owner; the last Owner can be neither
//! demoted nor removed. Invitations are one-time links that expire; only the
//! token's hash is stored.

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sqlx::Row;

use crate::access::{
    parse_role, Actor, Authorized, ManageMembers, ManageOwners, ReadOrg, RequestMeta,
};
use crate::accounts::{insert_membership, insert_user, normalize_email};
use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::crypto::{random_token, token_hash};
use crate::store::{Store, Tx};
use crate::{
    password, ControlError, InviteId, InvitePreview, InviteView, MemberView, OrgId, Role, TeamView,
    Timestamp, UserId,
};

/// How long an invitation link stays valid.
pub const INVITE_TTL_SECS: i64 = 7 * 86_400;

pub async fn team(
    auth: &Authorized<'_, ReadOrg>,
    now: Timestamp,
) -> Result<TeamView, ControlError> {
    let store = auth.store();
    let org = auth.actor().org();
    let rows = sqlx::query(
        "SELECT u.id AS user_id, u.email AS email, m.role AS role, m.created_at AS joined_at \
         FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.org_id = $1 ORDER BY m.created_at, u.id",
    )
    .bind(org.0)
    .fetch_all(store.pool())
    .await?;
    let members = rows
        .iter()
        .map(|r| {
            Ok(MemberView {
                user_id: UserId(r.try_get("user_id")?),
                email: r.try_get("email")?,
                role: parse_role(&r.try_get::<String, _>("role")?)?,
                joined_at: Timestamp(r.try_get("joined_at")?),
            })
        })
        .collect::<Result<Vec<_>, ControlError>>()?;
    let role = auth.actor().role();
    let invites = if role.manages_members() {
        let rows = sqlx::query(
            "SELECT i.id AS id, i.email AS email, i.role AS role, u.email AS invited_by, \
             i.created_at AS created_at, i.expires_at AS expires_at FROM invites i \
             JOIN users u ON u.id = i.created_by \
             WHERE i.org_id = $1 AND i.accepted_at IS NULL AND i.revoked_at IS NULL AND i.expires_at > $2 \
             ORDER BY i.created_at DESC",
        )
        .bind(org.0)
        .bind(now.0)
        .fetch_all(store.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InviteView {
                    id: InviteId(r.try_get("id")?),
                    email: r.try_get("email")?,
                    role: parse_role(&r.try_get::<String, _>("role")?)?,
                    invited_by: r.try_get("invited_by")?,
                    created_at: Timestamp(r.try_get("created_at")?),
                    expires_at: Timestamp(r.try_get("expires_at")?),
                })
            })
            .collect::<Result<Vec<_>, ControlError>>()?
    } else {
        Vec::new()
    };
    Ok(TeamView {
        members,
        invites,
        can_manage: role.manages_members(),
        can_manage_owners: role == Role::Owner,
    })
}

/// An invitation that was just created. The token is shown once, to the
/// inviter, as a link; it is never stored or logged.
#[derive(Debug)]
pub struct NewInvite {
    pub id: InviteId,
    pub token: SecretString,
}

#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn invite(
    auth: &Authorized<'_, ManageMembers>,
    email: &str,
    role: Role,
    now: Timestamp,
) -> Result<NewInvite, ControlError> {
    let actor = auth.actor();
    let email = normalize_email(email)?;
    let mut tx = auth.store().begin().await?;
    let mine = actor.recheck::<ManageMembers>(&mut tx).await?;
    if role == Role::Owner {
        actor.require::<ManageOwners>(mine, Some(&email))?;
    }
    let member: Option<i64> = sqlx::query_scalar(
        "SELECT m.user_id FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 AND u.email = $2",
    )
    .bind(actor.org().0)
    .bind(&email)
    .fetch_optional(tx.conn())
    .await?;
    if member.is_some() {
        return Err(ControlError::conflict(format!(
            "{email} is already a member of this organisation."
        )));
    }
    let pending: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM invites WHERE org_id = $1 AND email = $2 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $3",
    )
    .bind(actor.org().0)
    .bind(&email)
    .bind(now.0)
    .fetch_one(tx.conn())
    .await?;
    if pending > 0 {
        return Err(ControlError::conflict(format!(
            "{email} already has a pending invitation. Revoke it first to send a new one."
        )));
    }
    let token = random_token(24);
    let expires = now.plus_secs(INVITE_TTL_SECS);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO invites (org_id, email, role, token_hash, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(actor.org().0)
    .bind(&email)
    .bind(role.as_str())
    .bind(invite_hash(&token))
    .bind(actor.user().0)
    .bind(now.0)
    .bind(expires.0)
    .fetch_one(tx.conn())
    .await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::InviteCreated,
            format!("invite:{id}"),
            json!({ "email": email, "role": role.as_str(), "expires_at": expires.0 }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(NewInvite {
        id: InviteId(id),
        token: SecretString::from(token),
    })
}

#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn revoke_invite(
    auth: &Authorized<'_, ManageMembers>,
    id: InviteId,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    let mine = actor.recheck::<ManageMembers>(&mut tx).await?;
    let row = sqlx::query("SELECT email, role FROM invites WHERE id = $1 AND org_id = $2 AND accepted_at IS NULL AND revoked_at IS NULL")
        .bind(id.0)
        .bind(actor.org().0)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| ControlError::not_found("No such pending invitation."))?;
    let email: String = row.try_get("email")?;
    let role = parse_role(&row.try_get::<String, _>("role")?)?;
    if role == Role::Owner {
        actor.require::<ManageOwners>(mine, Some(&format!("invite:{}", id.0)))?;
    }
    sqlx::query("UPDATE invites SET revoked_at = $1 WHERE id = $2")
        .bind(now.0)
        .bind(id.0)
        .execute(tx.conn())
        .await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::InviteRevoked,
            format!("invite:{}", id.0),
            json!({ "email": email }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) struct PendingInvite {
    pub(crate) id: i64,
    pub(crate) org: OrgId,
    pub(crate) org_name: String,
    pub(crate) email: String,
    pub(crate) role: Role,
    pub(crate) expires_at: Timestamp,
}

async fn find_invite(
    conn: &mut sqlx::AnyConnection,
    token: &str,
    now: Timestamp,
) -> Result<PendingInvite, ControlError> {
    find_invite_hashed(conn, &invite_hash(token), now).await
}

/// How an invitation's token is stored (and how an SSO flow that accepts it
/// keeps it).
pub fn invite_hash(token: &str) -> String {
    token_hash("invite", token)
}

/// The pending invitation whose token hashes to `hash`; refused with a
/// sentence when it is unknown, used, revoked or expired.
pub(crate) async fn find_invite_hashed(
    conn: &mut sqlx::AnyConnection,
    hash: &str,
    now: Timestamp,
) -> Result<PendingInvite, ControlError> {
    let row = sqlx::query(
        "SELECT i.id AS id, i.org_id AS org_id, o.name AS org_name, i.email AS email, i.role AS role, \
         i.expires_at AS expires_at, i.accepted_at AS accepted_at, i.revoked_at AS revoked_at \
         FROM invites i JOIN orgs o ON o.id = i.org_id WHERE i.token_hash = $1",
    )
    .bind(hash)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ControlError::not_found("This invitation link is not valid. Ask for a new one."))?;
    let accepted: Option<i64> = row.try_get("accepted_at")?;
    let revoked: Option<i64> = row.try_get("revoked_at")?;
    let expires_at = Timestamp(row.try_get("expires_at")?);
    if accepted.is_some() {
        return Err(ControlError::conflict(
            "This invitation has already been used.",
        ));
    }
    if revoked.is_some() {
        return Err(ControlError::conflict(
            "This invitation was revoked. Ask for a new one.",
        ));
    }
    if expires_at <= now {
        return Err(ControlError::conflict(
            "This invitation has expired. Ask for a new one.",
        ));
    }
    Ok(PendingInvite {
        id: row.try_get("id")?,
        org: OrgId(row.try_get("org_id")?),
        org_name: row.try_get("org_name")?,
        email: row.try_get("email")?,
        role: parse_role(&row.try_get::<String, _>("role")?)?,
        expires_at,
    })
}

/// What the holder of an invitation link sees before accepting.
pub async fn preview_invite(
    store: &Store,
    token: &str,
    now: Timestamp,
) -> Result<InvitePreview, ControlError> {
    let mut conn = store.pool().acquire().await?;
    let invite = find_invite(&mut conn, token, now).await?;
    let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email = $1")
        .bind(&invite.email)
        .fetch_one(&mut *conn)
        .await?;
    Ok(InvitePreview {
        org_name: invite.org_name,
        email: invite.email,
        role: invite.role,
        expires_at: invite.expires_at,
        account_exists: exists > 0,
    })
}

pub(crate) async fn finish_accept(
    tx: &mut Tx,
    invite: &PendingInvite,
    user: UserId,
    actor: &AuditActor,
    now: Timestamp,
) -> Result<(), ControlError> {
    // Single use even under a race: only one UPDATE can flip accepted_at.
    let flipped = sqlx::query("UPDATE invites SET accepted_at = $1, accepted_by = $2 WHERE id = $3 AND accepted_at IS NULL AND revoked_at IS NULL")
        .bind(now.0)
        .bind(user.0)
        .bind(invite.id)
        .execute(tx.conn())
        .await?
        .rows_affected();
    if flipped != 1 {
        return Err(ControlError::conflict(
            "This invitation has already been used.",
        ));
    }
    insert_membership(tx, invite.org, user, invite.role, now).await?;
    audit::append(
        tx,
        actor,
        Event::new(
            invite.org,
            AuditAction::InviteAccepted,
            format!("user:{}", user.0),
            json!({ "invite": invite.id, "email": invite.email, "role": invite.role.as_str() }),
        ),
        now,
    )
    .await?;
    Ok(())
}

/// Accepts an invitation by creating the invited account.
pub async fn accept_invite_new_account(
    store: &Store,
    token: &str,
    password: SecretString,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<(UserId, OrgId), ControlError> {
    let invite = {
        let mut conn = store.pool().acquire().await?;
        find_invite(&mut conn, token, now).await?
    };
    password::validate_new(password.expose_secret(), &invite.email)?;
    let hash = password::hash(password).await?;
    let mut tx = store.begin().await?;
    let invite = find_invite(tx.conn(), token, now).await?;
    let user = insert_user(&mut tx, &invite.email, &hash, now)
        .await
        .map_err(|e| match e {
            ControlError::Conflict(_) => ControlError::conflict(
                "An account with this email already exists: sign in to accept.",
            ),
            e => e,
        })?;
    let actor = AuditActor {
        user: Some(user),
        label: invite.email.clone(),
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    };
    audit::append(
        &mut tx,
        &actor,
        Event::new(
            invite.org,
            AuditAction::UserCreated,
            format!("user:{}", user.0),
            json!({ "email": invite.email }),
        ),
        now,
    )
    .await?;
    finish_accept(&mut tx, &invite, user, &actor, now).await?;
    tx.commit().await?;
    Ok((user, invite.org))
}

/// Accepts an invitation as a signed-in user whose email matches it.
pub async fn accept_invite_signed_in(
    store: &Store,
    token: &str,
    user: UserId,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<OrgId, ControlError> {
    let mut tx = store.begin().await?;
    let invite = find_invite(tx.conn(), token, now).await?;
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user.0)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| ControlError::Unauthenticated("Please sign in.".into()))?;
    if email != invite.email {
        return Err(ControlError::forbidden(format!(
            "This invitation is for {}. Sign in with that account to accept it.",
            invite.email
        )));
    }
    let actor = AuditActor {
        user: Some(user),
        label: email,
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    };
    finish_accept(&mut tx, &invite, user, &actor, now).await?;
    tx.commit().await?;
    Ok(invite.org)
}

async fn member_role(
    tx: &mut Tx,
    org: OrgId,
    user: UserId,
) -> Result<(Role, String), ControlError> {
    let row = sqlx::query("SELECT m.role AS role, u.email AS email FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 AND m.user_id = $2")
        .bind(org.0)
        .bind(user.0)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| ControlError::not_found("No such member in this organisation."))?;
    Ok((
        parse_role(&row.try_get::<String, _>("role")?)?,
        row.try_get("email")?,
    ))
}

/// Counts the organisation's Owners. Callers lock the organisation first
/// ([`Tx::lock_org`]), so two changes that each remove an Owner cannot both
/// see "two Owners" and leave none: the second waits for the first to commit,
/// then reads the roles again.
async fn owner_count_locked(tx: &mut Tx, org: OrgId) -> Result<i64, ControlError> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = 'owner'")
            .bind(org.0)
            .fetch_one(tx.conn())
            .await?,
    )
}

/// Changing or removing an Owner, or making one, takes an Owner: checked
/// against the caller's role as re-read in this transaction.
fn require_owner_for(
    actor: &Actor,
    mine: Role,
    user: UserId,
    current: Role,
    new: Option<Role>,
) -> Result<(), ControlError> {
    if current == Role::Owner || new == Some(Role::Owner) {
        actor.require::<ManageOwners>(mine, Some(&format!("user:{}", user.0)))?;
    }
    Ok(())
}

#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn change_role(
    auth: &Authorized<'_, ManageMembers>,
    user: UserId,
    role: Role,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    tx.lock_org(actor.org()).await?;
    let mine = actor.recheck::<ManageMembers>(&mut tx).await?;
    let (current, email) = member_role(&mut tx, actor.org(), user).await?;
    require_owner_for(actor, mine, user, current, Some(role))?;
    if current == role {
        return Ok(());
    }
    if current == Role::Owner && owner_count_locked(&mut tx, actor.org()).await? <= 1 {
        return Err(ControlError::conflict(
            "The last Owner cannot be demoted. Make someone else an Owner first.",
        ));
    }
    sqlx::query("UPDATE memberships SET role = $1 WHERE org_id = $2 AND user_id = $3")
        .bind(role.as_str())
        .bind(actor.org().0)
        .bind(user.0)
        .execute(tx.conn())
        .await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::RoleChanged,
            format!("user:{}", user.0),
            json!({ "email": email, "from": current.as_str(), "to": role.as_str() }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn remove_member(
    auth: &Authorized<'_, ManageMembers>,
    user: UserId,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    tx.lock_org(actor.org()).await?;
    let mine = actor.recheck::<ManageMembers>(&mut tx).await?;
    let (current, email) = member_role(&mut tx, actor.org(), user).await?;
    require_owner_for(actor, mine, user, current, None)?;
    if current == Role::Owner && owner_count_locked(&mut tx, actor.org()).await? <= 1 {
        return Err(ControlError::conflict("The last Owner cannot be removed."));
    }
    sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
        .bind(actor.org().0)
        .bind(user.0)
        .execute(tx.conn())
        .await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::MemberRemoved,
            format!("user:{}", user.0),
            json!({ "email": email, "role": current.as_str() }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
