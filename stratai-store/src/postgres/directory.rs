//! [`DirectoryStore`] on PostgreSQL.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use stratai_core::budget::BudgetScope;
use stratai_core::directory::{
    Email, Group, GroupMembership, GroupRole, Invitation, Membership, Organization, PlatformRole,
    Slug, User, UserProfile,
};
use stratai_core::ports::{DirectoryStore, OutboxEntity, UserQuery};
use stratai_core::{GroupId, InvitationId, OrgId, ProfileId, StoreError, UserId};
use uuid::Uuid;

use super::audit::commit_change;
use super::ledger::put_implied_budget;
use super::rows::{self, get};
use super::{PgStore, same_tenant};
use crate::audited::snapshot;
use crate::error::db;
use crate::shared::{self, enum_text, micros};

/// Writes the outbox event of a directory change inside the change's transaction; the
/// entity's version counter row serializes concurrent changes of one entity.
pub(super) async fn emit(
    conn: &mut PgConnection,
    org: OrgId,
    entity: OutboxEntity,
    deleted: bool,
) -> Result<(), StoreError> {
    let (kind, id) = rows::outbox_entity_columns(&entity);
    sqlx::query(
        "WITH v AS (
             INSERT INTO outbox_versions (organization_id, entity_kind, entity_id, version)
             VALUES ($1, $2, $3, 1)
             ON CONFLICT (organization_id, entity_kind, entity_id)
             DO UPDATE SET version = outbox_versions.version + 1
             RETURNING version
         )
         INSERT INTO outbox (organization_id, entity_kind, entity_id, deleted, version)
         SELECT $1, $2, $3, $4, version FROM v",
    )
    .bind(org.as_uuid())
    .bind(kind)
    .bind(id)
    .bind(deleted)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

const ASCII_UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const ASCII_LOWER: &str = "abcdefghijklmnopqrstuvwxyz";

/// Key of the transaction-level advisory lock every change of a super admin's role or
/// activity takes, so "is another active super admin left?" and the change are one step.
const SUPER_ADMINS_LOCK: i64 = 0x5354_5241_5441_4931; // "STRATAI1"

/// Takes the super admins' lock for the rest of the transaction, then reads `user` (after
/// the lock, so the read sees every change committed before it).
async fn lock_super_admins_and_fetch(
    conn: &mut PgConnection,
    user: UserId,
) -> Result<User, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SUPER_ADMINS_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let row = sqlx::query(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = $1"
    ))
    .bind(user.as_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?
    .ok_or_else(|| StoreError::not_found("user", user))?;
    rows::user(&row)
}

/// Active super admins other than `user`.
async fn other_super_admins(conn: &mut PgConnection, user: UserId) -> Result<u64, StoreError> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM users
         WHERE platform_role = 'super_admin' AND is_active AND id <> $1",
    )
    .bind(user.as_uuid())
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn tier_texts(tiers: Option<&Vec<stratai_core::TierSlug>>) -> Option<Vec<String>> {
    tiers.map(|list| list.iter().map(|t| t.as_str().to_owned()).collect())
}

/// Checks that the organization, the user and the profile (when given) exist, in that order.
/// Inserts `invitation`, or (`renew`) replaces the grant, token, expiry and delivery of the
/// pending invitation with its id, in the tenant transaction `tx` of `org`.
async fn write_invitation(
    tx: &mut PgConnection,
    org: OrgId,
    invitation: &Invitation,
    renew: bool,
) -> Result<(), StoreError> {
    same_tenant(org, invitation.org_id, "invitation")?;
    check_org_user_profile(&mut *tx, org, None, None).await?;
    let group_ids: Vec<Uuid> = invitation.group_ids.iter().map(|g| g.as_uuid()).collect();
    let found: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM groups WHERE id = ANY($1)")
        .bind(&group_ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
    let found: HashSet<Uuid> = found.into_iter().collect();
    if let Some(missing) = invitation
        .group_ids
        .iter()
        .find(|g| !found.contains(&g.as_uuid()))
    {
        return Err(StoreError::not_found("group", missing));
    }
    check_org_user_profile(&mut *tx, org, invitation.invited_by, invitation.profile_id).await?;
    let delivery = &invitation.delivery;
    let attempts = i32::try_from(delivery.attempts).unwrap_or(i32::MAX);
    if renew {
        // Row-level security shows only this tenant's invitations.
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM invitations WHERE id = $1 FOR UPDATE")
                .bind(invitation.id.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        if let Some(status) = status {
            if status != "pending" {
                return Err(StoreError::Conflict(format!(
                    "invitation `{}` is {status}",
                    invitation.id
                )));
            }
            sqlx::query(
                "UPDATE invitations SET role = $2, group_ids = $3, profile_id = $4,
                     token_hash = $5, expires_at = $6, invited_by = $7, delivery_status = $8,
                     delivery_attempts = $9, delivery_error = $10, delivery_attempted_at = $11
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(invitation.id.as_uuid())
            .bind(enum_text(&invitation.role)?)
            .bind(&group_ids)
            .bind(invitation.profile_id.map(|p| p.as_uuid()))
            .bind(&invitation.token_hash)
            .bind(micros(invitation.expires_at))
            .bind(invitation.invited_by.map(|u| u.as_uuid()))
            .bind(delivery.status.as_str())
            .bind(attempts)
            .bind(delivery.last_error.as_deref())
            .bind(delivery.last_attempt_at.map(micros))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            return Ok(());
        }
    }
    sqlx::query(concat!(
        "INSERT INTO invitations (",
        invitation_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    ))
    .bind(invitation.id.as_uuid())
    .bind(invitation.email.as_str())
    .bind(org.as_uuid())
    .bind(enum_text(&invitation.role)?)
    .bind(&group_ids)
    .bind(invitation.profile_id.map(|p| p.as_uuid()))
    .bind(&invitation.token_hash)
    .bind(enum_text(&invitation.status)?)
    .bind(micros(invitation.expires_at))
    .bind(invitation.invited_by.map(|u| u.as_uuid()))
    .bind(invitation.accepted_at.map(micros))
    .bind(micros(invitation.created_at))
    .bind(delivery.status.as_str())
    .bind(attempts)
    .bind(delivery.last_error.as_deref())
    .bind(delivery.last_attempt_at.map(micros))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    Ok(())
}

async fn check_org_user_profile(
    conn: &mut PgConnection,
    org: OrgId,
    user: Option<UserId>,
    profile: Option<ProfileId>,
) -> Result<(), StoreError> {
    let row = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1) AS org,
                ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM users WHERE id = $2)) AS usr,
                ($3::uuid IS NULL OR EXISTS (SELECT 1 FROM user_profiles WHERE id = $3)) AS prof",
    )
    .bind(org.as_uuid())
    .bind(user.map(|u| u.as_uuid()))
    .bind(profile.map(|p| p.as_uuid()))
    .fetch_one(conn)
    .await
    .map_err(db)?;
    if !get::<bool>(&row, "org")? {
        return Err(StoreError::not_found("organization", org));
    }
    if let Some(user) = user
        && !get::<bool>(&row, "usr")?
    {
        return Err(StoreError::not_found("user", user));
    }
    if let Some(profile) = profile
        && !get::<bool>(&row, "prof")?
    {
        return Err(StoreError::not_found("profile", profile));
    }
    Ok(())
}

/// Refuses a group name another group of the organization has, whatever its case; the
/// unique index on `lower(name)` refuses the same name written by a concurrent transaction.
async fn check_group_name(
    conn: &mut PgConnection,
    org: OrgId,
    group: &Group,
) -> Result<(), StoreError> {
    let rows = sqlx::query("SELECT id, name FROM groups WHERE organization_id = $1")
        .bind(org.as_uuid())
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    let mut others = Vec::with_capacity(rows.len());
    for row in &rows {
        others.push((
            GroupId::from_uuid(get(row, "id")?),
            get::<String>(row, "name")?,
        ));
    }
    shared::check_group_name(
        group.id,
        &group.name,
        others.iter().map(|(id, name)| (*id, name.as_str())),
    )
}

/// A unique violation writing a group is its name (the only unique column a write can
/// change; ids are fresh).
fn group_write_error(group: &Group) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |err| match db(err) {
        StoreError::Conflict(_) => shared::group_name_taken(&group.name),
        other => other,
    }
}

/// Checks that `user` may join `group` without passing `max_users_per_group` (always, when
/// already in it). Locks the group's row first, so concurrent adds to one group run one
/// after the other and each counts the members the previous one added.
async fn check_group_seat(
    conn: &mut PgConnection,
    org: OrgId,
    group: GroupId,
    user: UserId,
) -> Result<(), StoreError> {
    let name: String = sqlx::query_scalar(
        "SELECT name FROM groups WHERE organization_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(org.as_uuid())
    .bind(group.as_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?
    .ok_or_else(|| StoreError::not_found("group", group))?;
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM group_memberships WHERE group_id = $2) AS members,
                EXISTS (SELECT 1 FROM group_memberships WHERE group_id = $2 AND user_id = $3)
                    AS already,
                (SELECT (settings->>'max_users_per_group')::bigint FROM organizations
                 WHERE id = $1) AS max",
    )
    .bind(org.as_uuid())
    .bind(group.as_uuid())
    .bind(user.as_uuid())
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    if get::<bool>(&row, "already")? {
        return Ok(());
    }
    let members = u64::try_from(get::<i64>(&row, "members")?).unwrap_or(0);
    let max = get::<Option<i64>>(&row, "max")?
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(u32::MAX);
    shared::check_group_room(&name, members, max)
}

async fn check_group_and_member(
    conn: &mut PgConnection,
    group: GroupId,
    user: Option<UserId>,
) -> Result<(), StoreError> {
    let row = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM groups WHERE id = $1) AS grp,
                ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM org_memberships WHERE user_id = $2)) AS mem",
    )
    .bind(group.as_uuid())
    .bind(user.map(|u| u.as_uuid()))
    .fetch_one(conn)
    .await
    .map_err(db)?;
    if !get::<bool>(&row, "grp")? {
        return Err(StoreError::not_found("group", group));
    }
    if let Some(user) = user
        && !get::<bool>(&row, "mem")?
    {
        return Err(StoreError::not_found("membership", user));
    }
    Ok(())
}

/// Inserts a membership; false when the user is already a member.
async fn insert_member(
    conn: &mut PgConnection,
    org: OrgId,
    member: &Membership,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(concat!(
        "INSERT INTO org_memberships (",
        member_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (organization_id, user_id) DO NOTHING"
    ))
    .bind(org.as_uuid())
    .bind(member.user_id.as_uuid())
    .bind(enum_text(&member.role)?)
    .bind(tier_texts(member.allowed_tiers.as_ref()))
    .bind(member.monthly_budget.map(|m| m.amount()))
    .bind(member.profile_id.map(|p| p.as_uuid()))
    .bind(member.litellm_key_id.as_deref())
    .bind(micros(member.joined_at))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    let scope = BudgetScope::User(member.user_id);
    put_implied_budget(conn, org, scope, member.monthly_budget, Utc::now()).await?;
    Ok(true)
}

#[async_trait]
impl DirectoryStore for PgStore {
    async fn create_org(&self, org: &Organization) -> Result<(), StoreError> {
        let mut tx = self.tenant(org.id).await?;
        sqlx::query(concat!(
            "INSERT INTO organizations (",
            org_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(org.id.as_uuid())
        .bind(&org.name)
        .bind(org.slug.as_str())
        .bind(org.litellm_org_id.as_deref())
        .bind(Json(&org.settings))
        .bind(org.billing_email.as_ref().map(Email::as_str))
        .bind(enum_text(&org.billing_plan)?)
        .bind(org.active)
        .bind(micros(org.created_at))
        .bind(micros(org.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        emit(&mut tx, org.id, OutboxEntity::Org(org.id), false).await?;
        commit_change(tx, None).await
    }

    async fn get_org(&self, org: OrgId) -> Result<Organization, StoreError> {
        let mut tx = self.tenant(org).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            org_columns!(),
            " FROM organizations WHERE id = $1"
        ))
        .bind(org.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("organization", org))?;
        tx.commit().await.map_err(db)?;
        rows::org(&row)
    }

    async fn find_org_by_slug(&self, slug: &Slug) -> Result<Option<Organization>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            org_columns!(),
            " FROM stratai_find_org_by_slug($1)"
        ))
        .bind(slug.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(rows::org)
        .transpose()
    }

    async fn update_org(&self, org: &Organization) -> Result<(), StoreError> {
        let mut tx = self.tenant(org.id).await?;
        let old = sqlx::query(concat!(
            "SELECT ",
            org_columns!(),
            " FROM organizations WHERE id = $1 FOR UPDATE"
        ))
        .bind(org.id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("organization", org.id))?;
        let old = rows::org(&old)?;
        // The slug and creation time are fixed; the rest is replaced.
        let new = Organization {
            slug: old.slug.clone(),
            created_at: old.created_at,
            updated_at: micros(org.updated_at),
            ..org.clone()
        };
        let synced_only = shared::org_change_is_sync_only(&old, &new);
        sqlx::query(
            "UPDATE organizations SET name = $2, litellm_org_id = $3, settings = $4,
                 billing_email = $5, billing_plan = $6, is_active = $7, updated_at = $8
             WHERE id = $1",
        )
        .bind(new.id.as_uuid())
        .bind(&new.name)
        .bind(new.litellm_org_id.as_deref())
        .bind(Json(&new.settings))
        .bind(new.billing_email.as_ref().map(Email::as_str))
        .bind(enum_text(&new.billing_plan)?)
        .bind(new.active)
        .bind(new.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if !synced_only {
            emit(&mut tx, org.id, OutboxEntity::Org(org.id), false).await?;
        }
        commit_change(tx, None).await
    }

    async fn list_orgs(&self) -> Result<Vec<Organization>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            org_columns!(),
            " FROM stratai_list_orgs()"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(rows::org)
        .collect()
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(concat!(
            "INSERT INTO users (",
            user_columns!(),
            ", updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)"
        ))
        .bind(user.id.as_uuid())
        .bind(user.email.as_str())
        .bind(user.name.as_deref())
        .bind(user.avatar_url.as_deref())
        .bind(user.oidc_subject.as_deref())
        .bind(enum_text(&user.platform_role)?)
        .bind(user.active)
        .bind(user.last_login_at.map(micros))
        .bind(micros(user.created_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        commit_change(tx, None).await
    }

    async fn get_user(&self, user: UserId) -> Result<User, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = $1"
        ))
        .bind(user.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("user", user))?;
        rows::user(&row)
    }

    async fn count_people_in_orgs(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT stratai_count_people_in_orgs()")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        u64::try_from(n).map_err(|e| crate::error::corrupt("people", e))
    }

    async fn get_users(&self, users: &[UserId]) -> Result<Vec<User>, StoreError> {
        let ids: Vec<uuid::Uuid> = users.iter().map(|u| u.as_uuid()).collect();
        let found = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = ANY($1)"
        ))
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(rows::user)
        .collect::<Result<Vec<_>, _>>()?;
        crate::shared::users_in_order(users, found)
    }

    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE email = $1"
        ))
        .bind(email.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(rows::user)
        .transpose()
    }

    async fn find_user_by_subject(&self, subject: &str) -> Result<Option<User>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE oidc_subject = $1"
        ))
        .bind(subject)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(rows::user)
        .transpose()
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let done = sqlx::query(
            "UPDATE users SET email = $2, name = $3, avatar_url = $4, oidc_subject = $5,
                 last_login_at = $6, updated_at = now()
             WHERE id = $1",
        )
        .bind(user.id.as_uuid())
        .bind(user.email.as_str())
        .bind(user.name.as_deref())
        .bind(user.avatar_url.as_deref())
        .bind(user.oidc_subject.as_deref())
        .bind(user.last_login_at.map(micros))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("user", user.id));
        }
        commit_change(tx, None).await
    }

    async fn list_users(&self, query: &UserQuery) -> Result<Vec<User>, StoreError> {
        // Byte order (`COLLATE "C"`) and ASCII-only case folding (`translate`): the same order
        // and matches as SQLite and the memory backend, whatever the database's locale.
        sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users
             WHERE ($1::text IS NULL OR email COLLATE \"C\" > $1::text COLLATE \"C\")
               AND ($2::text IS NULL
                    OR strpos(translate(email, $4, $5), $2) > 0
                    OR strpos(translate(COALESCE(name, ''), $4, $5), $2) > 0)
             ORDER BY email COLLATE \"C\" LIMIT $3"
        ))
        .bind(query.after.as_ref().map(Email::as_str))
        .bind(query.search.as_deref().map(str::to_ascii_lowercase))
        .bind(i64::from(query.limit))
        .bind(ASCII_UPPER)
        .bind(ASCII_LOWER)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(rows::user)
        .collect()
    }

    async fn set_user_active(&self, user: UserId, active: bool) -> Result<User, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let old = lock_super_admins_and_fetch(&mut tx, user).await?;
        let others = other_super_admins(&mut tx, user).await?;
        shared::check_super_admin_remains("active", !active && old.is_super_admin(), others)?;
        if old.active == active {
            crate::audited::discard_pending();
            return Ok(old);
        }
        sqlx::query("UPDATE users SET is_active = $2, updated_at = now() WHERE id = $1")
            .bind(user.as_uuid())
            .bind(active)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let orgs: Vec<(Uuid,)> =
            sqlx::query_as("SELECT organization_id FROM stratai_memberships_of_user($1)")
                .bind(user.as_uuid())
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
        for (org,) in orgs {
            // The outbox is a tenant table: each event is written in its organization's
            // context, switched transaction-locally inside this one transaction.
            sqlx::query("SELECT set_config('app.current_org_id', $1, true)")
                .bind(org.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            emit(
                &mut tx,
                OrgId::from_uuid(org),
                OutboxEntity::Member(user),
                false,
            )
            .await?;
        }
        let after = User { active, ..old };
        commit_change(tx, snapshot(&after)).await?;
        Ok(after)
    }

    async fn set_platform_role(
        &self,
        user: UserId,
        role: PlatformRole,
    ) -> Result<User, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let old = lock_super_admins_and_fetch(&mut tx, user).await?;
        let others = other_super_admins(&mut tx, user).await?;
        shared::check_super_admin_remains(
            "platform_role",
            role != PlatformRole::SuperAdmin && old.is_super_admin(),
            others,
        )?;
        sqlx::query("UPDATE users SET platform_role = $2, updated_at = now() WHERE id = $1")
            .bind(user.as_uuid())
            .bind(enum_text(&role)?)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let after = User {
            platform_role: role,
            ..old
        };
        commit_change(tx, snapshot(&after)).await?;
        Ok(after)
    }

    async fn add_member(&self, org: OrgId, member: &Membership) -> Result<(), StoreError> {
        same_tenant(org, member.org_id, "membership")?;
        let mut tx = self.tenant(org).await?;
        check_org_user_profile(&mut tx, org, Some(member.user_id), member.profile_id).await?;
        if !insert_member(&mut tx, org, member).await? {
            return Err(shared::already_member());
        }
        emit(&mut tx, org, OutboxEntity::Member(member.user_id), false).await?;
        commit_change(tx, None).await
    }

    async fn get_member(&self, org: OrgId, user: UserId) -> Result<Membership, StoreError> {
        let mut tx = self.tenant(org).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            member_columns!(),
            " FROM org_memberships WHERE organization_id = $1 AND user_id = $2"
        ))
        .bind(org.as_uuid())
        .bind(user.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("membership", user))?;
        tx.commit().await.map_err(db)?;
        rows::member(&row)
    }

    async fn list_members(&self, org: OrgId) -> Result<Vec<Membership>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let found = sqlx::query(concat!(
            "SELECT ",
            member_columns!(),
            " FROM org_memberships WHERE organization_id = $1 ORDER BY user_id"
        ))
        .bind(org.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        found.iter().map(rows::member).collect()
    }

    async fn update_member(&self, org: OrgId, member: &Membership) -> Result<(), StoreError> {
        same_tenant(org, member.org_id, "membership")?;
        let mut tx = self.tenant(org).await?;
        let old = sqlx::query(concat!(
            "SELECT ",
            member_columns!(),
            " FROM org_memberships WHERE organization_id = $1 AND user_id = $2 FOR UPDATE"
        ))
        .bind(org.as_uuid())
        .bind(member.user_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("membership", member.user_id))?;
        let old = rows::member(&old)?;
        check_org_user_profile(&mut tx, org, None, member.profile_id).await?;
        let new = Membership {
            joined_at: old.joined_at,
            // The key id is the sync's, written by `set_litellm_key_id` only.
            litellm_key_id: old.litellm_key_id.clone(),
            ..member.clone()
        };
        let synced_only = shared::member_change_is_sync_only(&old, &new);
        sqlx::query(
            "UPDATE org_memberships SET role = $3, allowed_tiers = $4, monthly_budget = $5,
                 profile_id = $6, virtual_key_id = $7
             WHERE organization_id = $1 AND user_id = $2",
        )
        .bind(org.as_uuid())
        .bind(new.user_id.as_uuid())
        .bind(enum_text(&new.role)?)
        .bind(tier_texts(new.allowed_tiers.as_ref()))
        .bind(new.monthly_budget.map(|m| m.amount()))
        .bind(new.profile_id.map(|p| p.as_uuid()))
        .bind(new.litellm_key_id.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let scope = BudgetScope::User(new.user_id);
        put_implied_budget(&mut tx, org, scope, new.monthly_budget, Utc::now()).await?;
        if !synced_only {
            emit(&mut tx, org, OutboxEntity::Member(member.user_id), false).await?;
        }
        commit_change(tx, None).await
    }

    async fn set_litellm_key_id<'a>(
        &self,
        org: OrgId,
        user: UserId,
        key_id: Option<&'a str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.tenant(org).await?;
        let done = sqlx::query(
            "UPDATE org_memberships SET virtual_key_id = $3
             WHERE organization_id = $1 AND user_id = $2",
        )
        .bind(org.as_uuid())
        .bind(user.as_uuid())
        .bind(key_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("membership", user));
        }
        commit_change(tx, None).await
    }

    async fn remove_member(&self, org: OrgId, user: UserId) -> Result<(), StoreError> {
        let mut tx = self.tenant(org).await?;
        // Group memberships and the sealed LiteLLM key go with it (composite foreign keys,
        // ON DELETE CASCADE).
        let done =
            sqlx::query("DELETE FROM org_memberships WHERE organization_id = $1 AND user_id = $2")
                .bind(org.as_uuid())
                .bind(user.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("membership", user));
        }
        put_implied_budget(&mut tx, org, BudgetScope::User(user), None, Utc::now()).await?;
        emit(&mut tx, org, OutboxEntity::Member(user), true).await?;
        commit_change(tx, None).await
    }

    async fn memberships_of_user(&self, user: UserId) -> Result<Vec<Membership>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            member_columns!(),
            " FROM stratai_memberships_of_user($1)"
        ))
        .bind(user.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(rows::member)
        .collect()
    }

    async fn create_group(&self, org: OrgId, group: &Group) -> Result<(), StoreError> {
        self.create_group_with_members(org, group, &[]).await
    }

    async fn create_group_with_members(
        &self,
        org: OrgId,
        group: &Group,
        members: &[GroupMembership],
    ) -> Result<(), StoreError> {
        same_tenant(org, group.org_id, "group")?;
        for m in members {
            same_tenant(org, m.org_id, "group membership")?;
            if m.group_id != group.id {
                return Err(StoreError::TenantMismatch(format!(
                    "group membership names group `{}`, not `{}`",
                    m.group_id, group.id
                )));
            }
        }
        let mut tx = self.tenant(org).await?;
        check_org_user_profile(&mut tx, org, None, None).await?;
        check_group_name(&mut tx, org, group).await?;
        sqlx::query(concat!(
            "INSERT INTO groups (",
            group_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(group.id.as_uuid())
        .bind(org.as_uuid())
        .bind(&group.name)
        .bind(group.description.as_deref())
        .bind(tier_texts(group.allowed_tiers.as_ref()))
        .bind(group.monthly_budget.map(|m| m.amount()))
        .bind(micros(group.created_at))
        .bind(micros(group.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(group_write_error(group))?;
        let scope = BudgetScope::Group(group.id);
        put_implied_budget(&mut tx, org, scope, group.monthly_budget, group.updated_at).await?;
        emit(&mut tx, org, OutboxEntity::Group(group.id), false).await?;
        for m in members {
            // The seat check locks the new group's row and counts this transaction's own
            // inserts: the capacity holds for the whole list.
            check_group_and_member(&mut tx, group.id, Some(m.user_id)).await?;
            check_group_seat(&mut tx, org, group.id, m.user_id).await?;
            sqlx::query(
                "INSERT INTO group_memberships (organization_id, group_id, user_id, role, joined_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (group_id, user_id) DO UPDATE SET role = EXCLUDED.role",
            )
            .bind(org.as_uuid())
            .bind(group.id.as_uuid())
            .bind(m.user_id.as_uuid())
            .bind(enum_text(&m.role)?)
            .bind(micros(m.joined_at))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            emit(&mut tx, org, OutboxEntity::Member(m.user_id), false).await?;
        }
        commit_change(tx, None).await
    }

    async fn get_group(&self, org: OrgId, group: GroupId) -> Result<Group, StoreError> {
        let mut tx = self.tenant(org).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            group_columns!(),
            " FROM groups WHERE organization_id = $1 AND id = $2"
        ))
        .bind(org.as_uuid())
        .bind(group.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("group", group))?;
        tx.commit().await.map_err(db)?;
        rows::group(&row)
    }

    async fn locate_group(&self, group: GroupId) -> Result<Option<OrgId>, StoreError> {
        let org: Option<Uuid> = sqlx::query_scalar("SELECT stratai_locate_group($1)")
            .bind(group.as_uuid())
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(org.map(Into::into))
    }

    async fn list_groups(&self, org: OrgId) -> Result<Vec<Group>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let found = sqlx::query(concat!(
            "SELECT ",
            group_columns!(),
            " FROM groups WHERE organization_id = $1 ORDER BY id"
        ))
        .bind(org.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        found.iter().map(rows::group).collect()
    }

    async fn update_group(&self, org: OrgId, group: &Group) -> Result<(), StoreError> {
        same_tenant(org, group.org_id, "group")?;
        let mut tx = self.tenant(org).await?;
        check_group_name(&mut tx, org, group).await?;
        let done = sqlx::query(
            "UPDATE groups SET name = $3, description = $4, allowed_tiers = $5,
                 monthly_budget = $6, updated_at = $7
             WHERE organization_id = $1 AND id = $2",
        )
        .bind(org.as_uuid())
        .bind(group.id.as_uuid())
        .bind(&group.name)
        .bind(group.description.as_deref())
        .bind(tier_texts(group.allowed_tiers.as_ref()))
        .bind(group.monthly_budget.map(|m| m.amount()))
        .bind(micros(group.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(group_write_error(group))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("group", group.id));
        }
        let scope = BudgetScope::Group(group.id);
        put_implied_budget(&mut tx, org, scope, group.monthly_budget, group.updated_at).await?;
        emit(&mut tx, org, OutboxEntity::Group(group.id), false).await?;
        commit_change(tx, None).await
    }

    async fn delete_group(&self, org: OrgId, group: GroupId) -> Result<(), StoreError> {
        let mut tx = self.tenant(org).await?;
        let done = sqlx::query("DELETE FROM groups WHERE organization_id = $1 AND id = $2")
            .bind(org.as_uuid())
            .bind(group.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("group", group));
        }
        put_implied_budget(&mut tx, org, BudgetScope::Group(group), None, Utc::now()).await?;
        emit(&mut tx, org, OutboxEntity::Group(group), true).await?;
        commit_change(tx, None).await
    }

    async fn put_group_member(
        &self,
        org: OrgId,
        membership: &GroupMembership,
    ) -> Result<(), StoreError> {
        same_tenant(org, membership.org_id, "group membership")?;
        let mut tx = self.tenant(org).await?;
        check_group_and_member(&mut tx, membership.group_id, Some(membership.user_id)).await?;
        check_group_seat(&mut tx, org, membership.group_id, membership.user_id).await?;
        sqlx::query(
            "INSERT INTO group_memberships (organization_id, group_id, user_id, role, joined_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (group_id, user_id) DO UPDATE SET role = EXCLUDED.role",
        )
        .bind(org.as_uuid())
        .bind(membership.group_id.as_uuid())
        .bind(membership.user_id.as_uuid())
        .bind(enum_text(&membership.role)?)
        .bind(micros(membership.joined_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        emit(
            &mut tx,
            org,
            OutboxEntity::Group(membership.group_id),
            false,
        )
        .await?;
        emit(
            &mut tx,
            org,
            OutboxEntity::Member(membership.user_id),
            false,
        )
        .await?;
        commit_change(tx, None).await
    }

    async fn remove_group_member(
        &self,
        org: OrgId,
        group: GroupId,
        user: UserId,
    ) -> Result<(), StoreError> {
        let mut tx = self.tenant(org).await?;
        check_group_and_member(&mut tx, group, None).await?;
        let done = sqlx::query(
            "DELETE FROM group_memberships
             WHERE organization_id = $1 AND group_id = $2 AND user_id = $3",
        )
        .bind(org.as_uuid())
        .bind(group.as_uuid())
        .bind(user.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("group membership", user));
        }
        emit(&mut tx, org, OutboxEntity::Group(group), false).await?;
        emit(&mut tx, org, OutboxEntity::Member(user), false).await?;
        commit_change(tx, None).await
    }

    async fn list_group_members(
        &self,
        org: OrgId,
        group: GroupId,
    ) -> Result<Vec<GroupMembership>, StoreError> {
        let mut tx = self.tenant(org).await?;
        check_group_and_member(&mut tx, group, None).await?;
        let found = sqlx::query(
            "SELECT organization_id, group_id, user_id, role, joined_at FROM group_memberships
             WHERE organization_id = $1 AND group_id = $2 ORDER BY user_id",
        )
        .bind(org.as_uuid())
        .bind(group.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        found.iter().map(rows::group_member).collect()
    }

    async fn groups_of_member(
        &self,
        org: OrgId,
        user: UserId,
    ) -> Result<Vec<(Group, GroupRole)>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let found = sqlx::query(
            "SELECT g.*, gm.role AS member_role
             FROM groups g
             JOIN group_memberships gm
               ON gm.organization_id = g.organization_id AND gm.group_id = g.id
             WHERE g.organization_id = $1 AND gm.user_id = $2
             ORDER BY g.id",
        )
        .bind(org.as_uuid())
        .bind(user.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        found
            .iter()
            .map(|row| {
                let role: String = get(row, "member_role")?;
                Ok((
                    rows::group(row)?,
                    shared::enum_from_text("group role", &role)?,
                ))
            })
            .collect()
    }

    async fn create_profile(&self, profile: &UserProfile) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let tiers: Vec<&str> = profile.default_tiers.iter().map(|t| t.as_str()).collect();
        sqlx::query(
            "INSERT INTO user_profiles
                 (id, name, description, default_tiers, default_guardrails, available_to, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(profile.id.as_uuid())
        .bind(&profile.name)
        .bind(profile.description.as_deref())
        .bind(tiers)
        .bind(&profile.default_guardrails)
        .bind(enum_text(&profile.available_to)?)
        .bind(micros(profile.created_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        commit_change(tx, None).await
    }

    async fn get_profile(&self, profile: ProfileId) -> Result<UserProfile, StoreError> {
        let row = sqlx::query("SELECT * FROM user_profiles WHERE id = $1")
            .bind(profile.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::not_found("profile", profile))?;
        rows::profile(&row)
    }

    async fn list_profiles(&self) -> Result<Vec<UserProfile>, StoreError> {
        sqlx::query("SELECT * FROM user_profiles ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(rows::profile)
            .collect()
    }

    async fn update_profile(&self, profile: &UserProfile) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let tiers: Vec<&str> = profile.default_tiers.iter().map(|t| t.as_str()).collect();
        let done = sqlx::query(
            "UPDATE user_profiles SET name = $2, description = $3, default_tiers = $4,
                 default_guardrails = $5, available_to = $6
             WHERE id = $1",
        )
        .bind(profile.id.as_uuid())
        .bind(&profile.name)
        .bind(profile.description.as_deref())
        .bind(tiers)
        .bind(&profile.default_guardrails)
        .bind(enum_text(&profile.available_to)?)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("profile", profile.id));
        }
        commit_change(tx, None).await
    }

    async fn delete_profile(&self, profile: ProfileId) -> Result<(), StoreError> {
        // Members and invitations are tenant rows: the platform-wide check and delete run in
        // a narrow SECURITY DEFINER function.
        let mut tx = self.pool.begin().await.map_err(db)?;
        let row: (bool, i64, i64) = sqlx::query_as(
            "SELECT known, member_count, pending_count FROM stratai_delete_profile($1)",
        )
        .bind(profile.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        match row {
            (false, _, _) => Err(StoreError::not_found("profile", profile)),
            (true, 0, 0) => commit_change(tx, None).await,
            (true, members, pending) => Err(shared::profile_in_use(
                usize::try_from(members).unwrap_or(usize::MAX),
                usize::try_from(pending).unwrap_or(usize::MAX),
            )),
        }
    }

    async fn create_invitation(
        &self,
        org: OrgId,
        invitation: &Invitation,
    ) -> Result<(), StoreError> {
        same_tenant(org, invitation.org_id, "invitation")?;
        let mut tx = self.tenant(org).await?;
        write_invitation(&mut tx, org, invitation, false).await?;
        commit_change(tx, None).await
    }

    async fn save_invitations(
        &self,
        org: OrgId,
        invitations: &[Invitation],
    ) -> Result<(), StoreError> {
        let mut tx = self.tenant(org).await?;
        check_org_user_profile(&mut tx, org, None, None).await?;
        for invitation in invitations {
            write_invitation(&mut tx, org, invitation, true).await?;
        }
        commit_change(tx, None).await
    }

    async fn find_invitation_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            invitation_columns!(),
            " FROM stratai_find_invitation($1)"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(rows::invitation)
        .transpose()
    }

    async fn pending_invitations_for(&self, email: &Email) -> Result<Vec<Invitation>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            invitation_columns!(),
            " FROM stratai_pending_invitations($1) ORDER BY id"
        ))
        .bind(email.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(rows::invitation)
        .collect()
    }

    async fn list_invitations(&self, org: OrgId) -> Result<Vec<Invitation>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let found = sqlx::query(concat!(
            "SELECT ",
            invitation_columns!(),
            " FROM invitations WHERE organization_id = $1 ORDER BY id"
        ))
        .bind(org.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        found.iter().map(rows::invitation).collect()
    }

    async fn revoke_invitation(
        &self,
        org: OrgId,
        invitation: InvitationId,
    ) -> Result<(), StoreError> {
        let mut tx = self.tenant(org).await?;
        let status: String = sqlx::query_scalar(
            "SELECT status FROM invitations WHERE organization_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(org.as_uuid())
        .bind(invitation.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("invitation", invitation))?;
        if status != "pending" {
            return Err(StoreError::Conflict(format!(
                "invitation `{invitation}` is {status}"
            )));
        }
        sqlx::query("UPDATE invitations SET status = 'revoked' WHERE id = $1")
            .bind(invitation.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        commit_change(tx, None).await
    }

    async fn accept_invitation(
        &self,
        token_hash: &str,
        user: &User,
        now: DateTime<Utc>,
    ) -> Result<Membership, StoreError> {
        let now = micros(now);
        // Platform-wide lookup: the token is the capability that names the organization.
        let found = self
            .find_invitation_by_token_hash(token_hash)
            .await?
            .ok_or_else(|| StoreError::not_found("invitation", "token"))?;
        let org = found.org_id;
        let mut tx = self.tenant(org).await?;
        // Re-read under lock: accepting is at most once, whatever the concurrency.
        let row = sqlx::query(concat!(
            "SELECT ",
            invitation_columns!(),
            " FROM invitations WHERE id = $1 FOR UPDATE"
        ))
        .bind(found.id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("invitation", "token"))?;
        let invitation = rows::invitation(&row)?;
        let (after, outcome) = shared::accept_invitation(&invitation, user, now);
        if let Err(refusal) = outcome {
            // A refusal that expired the invitation keeps that state.
            if after.status != invitation.status {
                sqlx::query("UPDATE invitations SET status = $2 WHERE id = $1")
                    .bind(invitation.id.as_uuid())
                    .bind(enum_text(&after.status)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(db)?;
            }
            return Err(refusal);
        }
        check_org_user_profile(&mut tx, org, Some(user.id), None).await?;
        let membership = invitation.membership_for(user.id, now);
        if !insert_member(&mut tx, org, &membership).await? {
            return Err(shared::already_member());
        }
        emit(&mut tx, org, OutboxEntity::Member(user.id), false).await?;
        for group in &invitation.group_ids {
            // A group deleted since the invitation was sent is skipped; a full one refuses
            // the whole acceptance.
            match check_group_seat(&mut tx, org, *group, user.id).await {
                Err(StoreError::NotFound { .. }) => continue,
                other => other?,
            }
            let joined = sqlx::query(
                "INSERT INTO group_memberships (organization_id, group_id, user_id, role, joined_at)
                 SELECT organization_id, id, $2, 'member', $3 FROM groups WHERE id = $1
                 ON CONFLICT (group_id, user_id) DO UPDATE
                     SET role = EXCLUDED.role, joined_at = EXCLUDED.joined_at",
            )
            .bind(group.as_uuid())
            .bind(user.id.as_uuid())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            if joined.rows_affected() > 0 {
                emit(&mut tx, org, OutboxEntity::Group(*group), false).await?;
            }
        }
        sqlx::query("UPDATE invitations SET status = $2, accepted_at = $3 WHERE id = $1")
            .bind(after.id.as_uuid())
            .bind(enum_text(&after.status)?)
            .bind(after.accepted_at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        commit_change(tx, snapshot(&membership)).await?;
        Ok(membership)
    }
}
