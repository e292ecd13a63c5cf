//! The directory over SQLite: organizations, users, memberships, groups, profiles, invitations.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteRow;
use stratai_core::budget::BudgetScope;
use stratai_core::directory::{
    Email, Group, GroupMembership, GroupRole, Invitation, InvitationDelivery, InvitationStatus,
    Membership, OrgSettings, Organization, PlatformRole, Slug, User, UserProfile,
};
use stratai_core::ports::{DirectoryStore, OutboxEntity, UserQuery};
use stratai_core::{GroupId, InvitationId, OrgId, ProfileId, StoreError, UserId};

use super::audit::commit_change;
use super::ledger::put_implied_budget;
use super::{
    Col, PROFILE_EXISTS, SqliteStore, USER_EXISTS, emit, money, require_group, require_member,
    require_org, require_row, tenant, to_json, ts,
};
use crate::audited::snapshot;
use crate::error::db;
use crate::shared::{self, enum_text, micros};

const ORG_COLUMNS: &str = "SELECT id, name, slug, litellm_org_id, settings, billing_email, \
     billing_plan, is_active, created_at, updated_at FROM organizations";

fn org_from_row(row: &SqliteRow) -> Result<Organization, StoreError> {
    Ok(Organization {
        id: OrgId::from_uuid(row.uuid("id")?),
        name: row.text("name")?,
        slug: Slug::new(row.text("slug")?).map_err(|e| crate::error::corrupt("slug", e))?,
        settings: row.json("settings")?,
        billing_email: row
            .opt_text("billing_email")?
            .map(|e| Email::new(e).map_err(|e| crate::error::corrupt("billing_email", e)))
            .transpose()?,
        billing_plan: row.variant("billing_plan")?,
        active: row.flag("is_active")?,
        litellm_org_id: row.opt_text("litellm_org_id")?,
        created_at: row.at("created_at")?,
        updated_at: row.at("updated_at")?,
    })
}

fn user_from_row(row: &SqliteRow) -> Result<User, StoreError> {
    Ok(User {
        id: UserId::from_uuid(row.uuid("id")?),
        email: Email::new(row.text("email")?).map_err(|e| crate::error::corrupt("email", e))?,
        name: row.opt_text("name")?,
        avatar_url: row.opt_text("avatar_url")?,
        oidc_subject: row.opt_text("auth0_id")?,
        platform_role: row.variant("platform_role")?,
        active: row.flag("is_active")?,
        last_login_at: row.opt_at("last_login_at")?,
        created_at: row.at("created_at")?,
    })
}

const MEMBER_COLUMNS: &str = "SELECT organization_id, user_id, role, virtual_key_id, profile_id, \
     allowed_tiers, monthly_budget, joined_at FROM org_memberships";

fn member_from_row(row: &SqliteRow) -> Result<Membership, StoreError> {
    Ok(Membership {
        org_id: OrgId::from_uuid(row.uuid("organization_id")?),
        user_id: UserId::from_uuid(row.uuid("user_id")?),
        role: row.variant("role")?,
        allowed_tiers: row.opt_json("allowed_tiers")?,
        monthly_budget: row.opt_money("monthly_budget")?,
        profile_id: row.opt_uuid("profile_id")?.map(ProfileId::from_uuid),
        litellm_key_id: row.opt_text("virtual_key_id")?,
        joined_at: row.at("joined_at")?,
    })
}

const GROUP_COLUMNS: &str = "SELECT g.id, g.organization_id, g.name, g.description, \
     g.allowed_tiers, g.monthly_budget, g.created_at, g.updated_at FROM groups g";

fn group_from_row(row: &SqliteRow) -> Result<Group, StoreError> {
    Ok(Group {
        id: GroupId::from_uuid(row.uuid("id")?),
        org_id: OrgId::from_uuid(row.uuid("organization_id")?),
        name: row.text("name")?,
        description: row.opt_text("description")?,
        allowed_tiers: row.opt_json("allowed_tiers")?,
        monthly_budget: row.opt_money("monthly_budget")?,
        created_at: row.at("created_at")?,
        updated_at: row.at("updated_at")?,
    })
}

fn group_member_from_row(row: &SqliteRow) -> Result<GroupMembership, StoreError> {
    Ok(GroupMembership {
        org_id: OrgId::from_uuid(row.uuid("organization_id")?),
        group_id: GroupId::from_uuid(row.uuid("group_id")?),
        user_id: UserId::from_uuid(row.uuid("user_id")?),
        role: row.variant("role")?,
        joined_at: row.at("joined_at")?,
    })
}

fn profile_from_row(row: &SqliteRow) -> Result<UserProfile, StoreError> {
    Ok(UserProfile {
        id: ProfileId::from_uuid(row.uuid("id")?),
        name: row.text("name")?,
        description: row.opt_text("description")?,
        default_tiers: row.json("default_tiers")?,
        default_guardrails: row.json("default_guardrails")?,
        available_to: row.variant("available_to")?,
        created_at: row.at("created_at")?,
    })
}

const INVITATION_COLUMNS: &str = "SELECT id, email, organization_id, role, group_ids, profile_id, \
     token_hash, status, expires_at, invited_by, accepted_at, created_at, delivery_status, \
     delivery_attempts, delivery_error, delivery_attempted_at FROM invitations";

fn invitation_from_row(row: &SqliteRow) -> Result<Invitation, StoreError> {
    Ok(Invitation {
        id: InvitationId::from_uuid(row.uuid("id")?),
        email: Email::new(row.text("email")?).map_err(|e| crate::error::corrupt("email", e))?,
        org_id: OrgId::from_uuid(row.uuid("organization_id")?),
        role: row.variant("role")?,
        group_ids: row.json("group_ids")?,
        profile_id: row.opt_uuid("profile_id")?.map(ProfileId::from_uuid),
        token_hash: row.text("token_hash")?,
        status: row.variant("status")?,
        expires_at: row.at("expires_at")?,
        invited_by: row.opt_uuid("invited_by")?.map(UserId::from_uuid),
        accepted_at: row.opt_at("accepted_at")?,
        created_at: row.at("created_at")?,
        delivery: InvitationDelivery {
            status: row.variant("delivery_status")?,
            attempts: u32::try_from(row.int("delivery_attempts")?)
                .map_err(|e| crate::error::corrupt("delivery_attempts", e))?,
            last_error: row.opt_text("delivery_error")?,
            last_attempt_at: row.opt_at("delivery_attempted_at")?,
        },
    })
}

/// Inserts `invitation`, or (`renew`) replaces the grant, token, expiry and delivery of the
/// pending invitation with its id. Checks its references in `org` first.
async fn write_invitation(
    tx: &mut SqliteConnection,
    org: OrgId,
    invitation: &Invitation,
    renew: bool,
) -> Result<(), StoreError> {
    tenant(org, invitation.org_id, "invitation")?;
    for group in &invitation.group_ids {
        require_group(&mut *tx, org, *group).await?;
    }
    require_profile(&mut *tx, invitation.profile_id).await?;
    if let Some(inviter) = invitation.invited_by {
        require_row(&mut *tx, USER_EXISTS, "user", inviter.as_uuid()).await?;
    }
    let existing: Option<(Vec<u8>, String)> =
        sqlx::query_as("SELECT organization_id, status FROM invitations WHERE id = ?")
            .bind(invitation.id.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
    let delivery = &invitation.delivery;
    match existing {
        Some((owner, status)) if renew => {
            if owner.as_slice() != org.as_uuid().as_bytes() {
                return Err(StoreError::not_found("invitation", invitation.id));
            }
            if status != "pending" {
                return Err(StoreError::Conflict(format!(
                    "invitation `{}` is {status}",
                    invitation.id
                )));
            }
            sqlx::query(
                "UPDATE invitations SET role = ?, group_ids = ?, profile_id = ?, token_hash = ?,
                     expires_at = ?, invited_by = ?, delivery_status = ?, delivery_attempts = ?,
                     delivery_error = ?, delivery_attempted_at = ?
                 WHERE id = ? AND status = 'pending'",
            )
            .bind(enum_text(&invitation.role)?)
            .bind(to_json(&invitation.group_ids)?)
            .bind(invitation.profile_id.map(|p| p.as_uuid()))
            .bind(&invitation.token_hash)
            .bind(ts(micros(invitation.expires_at)))
            .bind(invitation.invited_by.map(|u| u.as_uuid()))
            .bind(delivery.status.as_str())
            .bind(i64::from(delivery.attempts))
            .bind(delivery.last_error.as_deref())
            .bind(delivery.last_attempt_at.map(|at| ts(micros(at))))
            .bind(invitation.id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            return Ok(());
        }
        _ => {}
    }
    sqlx::query(
        "INSERT INTO invitations (id, email, organization_id, role, group_ids, profile_id,
             token_hash, status, expires_at, invited_by, accepted_at, created_at,
             delivery_status, delivery_attempts, delivery_error, delivery_attempted_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(invitation.id.as_uuid())
    .bind(invitation.email.as_str())
    .bind(org.as_uuid())
    .bind(enum_text(&invitation.role)?)
    .bind(to_json(&invitation.group_ids)?)
    .bind(invitation.profile_id.map(|p| p.as_uuid()))
    .bind(&invitation.token_hash)
    .bind(enum_text(&invitation.status)?)
    .bind(ts(micros(invitation.expires_at)))
    .bind(invitation.invited_by.map(|u| u.as_uuid()))
    .bind(invitation.accepted_at.map(|at| ts(micros(at))))
    .bind(ts(micros(invitation.created_at)))
    .bind(delivery.status.as_str())
    .bind(i64::from(delivery.attempts))
    .bind(delivery.last_error.as_deref())
    .bind(delivery.last_attempt_at.map(|at| ts(micros(at))))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    Ok(())
}

async fn fetch_org(conn: &mut SqliteConnection, org: OrgId) -> Result<Organization, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("{ORG_COLUMNS} WHERE id = ?")))
        .bind(org.as_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("organization", org))?;
    org_from_row(&row)
}

async fn fetch_member(
    conn: &mut SqliteConnection,
    org: OrgId,
    user: UserId,
) -> Result<Membership, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{MEMBER_COLUMNS} WHERE organization_id = ? AND user_id = ?"
    )))
    .bind(org.as_uuid())
    .bind(user.as_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?
    .ok_or_else(|| StoreError::not_found("membership", user))?;
    member_from_row(&row)
}

async fn fetch_group(
    conn: &mut SqliteConnection,
    org: OrgId,
    group: GroupId,
) -> Result<Group, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{GROUP_COLUMNS} WHERE g.id = ? AND g.organization_id = ?"
    )))
    .bind(group.as_uuid())
    .bind(org.as_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?
    .ok_or_else(|| StoreError::not_found("group", group))?;
    group_from_row(&row)
}

async fn require_profile(
    conn: &mut SqliteConnection,
    profile: Option<ProfileId>,
) -> Result<(), StoreError> {
    match profile {
        Some(id) => require_row(conn, PROFILE_EXISTS, "profile", id.as_uuid()).await,
        None => Ok(()),
    }
}

/// Refuses a group name another group of the organization has, whatever its case. The caller
/// holds SQLite's write lock.
async fn check_group_name(
    conn: &mut SqliteConnection,
    org: OrgId,
    group: &Group,
) -> Result<(), StoreError> {
    let rows = sqlx::query("SELECT id, name FROM groups WHERE organization_id = ?")
        .bind(org.as_uuid())
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    let mut others = Vec::with_capacity(rows.len());
    for row in &rows {
        others.push((GroupId::from_uuid(row.uuid("id")?), row.text("name")?));
    }
    shared::check_group_name(
        group.id,
        &group.name,
        others.iter().map(|(id, name)| (*id, name.as_str())),
    )
}

/// Checks that `user` may join `group` without passing `max_users_per_group` (always, when
/// already in it). The caller holds SQLite's write lock, so no other add runs in between.
async fn check_group_seat(
    conn: &mut SqliteConnection,
    org: OrgId,
    group: GroupId,
    user: UserId,
) -> Result<(), StoreError> {
    let row = sqlx::query(
        "SELECT g.name, o.settings,
                (SELECT COUNT(*) FROM group_memberships m WHERE m.group_id = g.id) AS members,
                EXISTS (SELECT 1 FROM group_memberships m
                        WHERE m.group_id = g.id AND m.user_id = ?) AS already
         FROM groups g JOIN organizations o ON o.id = g.organization_id
         WHERE g.id = ? AND g.organization_id = ?",
    )
    .bind(user.as_uuid())
    .bind(group.as_uuid())
    .bind(org.as_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?
    .ok_or_else(|| StoreError::not_found("group", group))?;
    if row.flag("already")? {
        return Ok(());
    }
    let settings: OrgSettings = row.json("settings")?;
    let members = u64::try_from(row.int("members")?).unwrap_or(0);
    shared::check_group_room(&row.text("name")?, members, settings.max_users_per_group)
}

async fn fetch_user(conn: &mut SqliteConnection, user: UserId) -> Result<User, StoreError> {
    let row = sqlx::query("SELECT * FROM users WHERE id = ?")
        .bind(user.as_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("user", user))?;
    user_from_row(&row)
}

/// Active super admins other than `user`.
async fn other_super_admins(conn: &mut SqliteConnection, user: UserId) -> Result<u64, StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM users
         WHERE platform_role = 'super_admin' AND is_active AND id <> ?",
    )
    .bind(user.as_uuid())
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    Ok(u64::try_from(row.int("n")?).unwrap_or(0))
}

fn opt_json<T: serde::Serialize>(value: Option<&T>) -> Result<Option<String>, StoreError> {
    value.map(to_json).transpose()
}

#[async_trait]
impl DirectoryStore for SqliteStore {
    async fn create_org(&self, org: &Organization) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO organizations (id, name, slug, litellm_org_id, settings, billing_email,
                 billing_plan, is_active, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(org.id.as_uuid())
        .bind(&org.name)
        .bind(org.slug.as_str())
        .bind(org.litellm_org_id.as_deref())
        .bind(to_json(&org.settings)?)
        .bind(org.billing_email.as_ref().map(Email::as_str))
        .bind(enum_text(&org.billing_plan)?)
        .bind(org.active)
        .bind(ts(micros(org.created_at)))
        .bind(ts(micros(org.updated_at)))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        emit(&mut tx, org.id, OutboxEntity::Org(org.id), false).await?;
        commit_change(tx, None).await
    }

    async fn get_org(&self, org: OrgId) -> Result<Organization, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        fetch_org(&mut conn, org).await
    }

    async fn find_org_by_slug(&self, slug: &Slug) -> Result<Option<Organization>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!("{ORG_COLUMNS} WHERE slug = ?")))
            .bind(slug.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(org_from_row)
            .transpose()
    }

    async fn update_org(&self, org: &Organization) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let old = fetch_org(&mut tx, org.id).await?;
        let mut new = org.clone();
        new.slug = old.slug.clone();
        new.created_at = old.created_at;
        new.updated_at = micros(new.updated_at);
        sqlx::query(
            "UPDATE organizations SET name = ?, litellm_org_id = ?, settings = ?,
                 billing_email = ?, billing_plan = ?, is_active = ?, updated_at = ?
             WHERE id = ?",
        )
        .bind(&new.name)
        .bind(new.litellm_org_id.as_deref())
        .bind(to_json(&new.settings)?)
        .bind(new.billing_email.as_ref().map(Email::as_str))
        .bind(enum_text(&new.billing_plan)?)
        .bind(new.active)
        .bind(ts(new.updated_at))
        .bind(org.id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if !shared::org_change_is_sync_only(&old, &new) {
            emit(&mut tx, org.id, OutboxEntity::Org(org.id), false).await?;
        }
        commit_change(tx, None).await
    }

    async fn list_orgs(&self) -> Result<Vec<Organization>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!("{ORG_COLUMNS} ORDER BY id")))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(org_from_row)
            .collect()
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let created = ts(micros(user.created_at));
        sqlx::query(
            "INSERT INTO users (id, email, name, avatar_url, auth0_id, platform_role, is_active,
                 last_login_at, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(user.id.as_uuid())
        .bind(user.email.as_str())
        .bind(user.name.as_deref())
        .bind(user.avatar_url.as_deref())
        .bind(user.oidc_subject.as_deref())
        .bind(enum_text(&user.platform_role)?)
        .bind(user.active)
        .bind(user.last_login_at.map(|at| ts(micros(at))))
        .bind(&created)
        .bind(&created)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        commit_change(tx, None).await
    }

    async fn get_user(&self, user: UserId) -> Result<User, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(user.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::not_found("user", user))?;
        user_from_row(&row)
    }

    async fn count_people_in_orgs(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(DISTINCT user_id) FROM org_memberships")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        u64::try_from(n).map_err(|e| crate::error::corrupt("people", e))
    }

    async fn get_users(&self, users: &[UserId]) -> Result<Vec<User>, StoreError> {
        let mut found = Vec::with_capacity(users.len());
        // A bound parameter per id, in chunks well under SQLite's parameter limit.
        for chunk in users.chunks(500) {
            let mut qb =
                sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT * FROM users WHERE id IN (");
            let mut ids = qb.separated(", ");
            for id in chunk {
                ids.push_bind(id.as_uuid());
            }
            qb.push(")");
            for row in qb.build().fetch_all(&self.pool).await.map_err(db)? {
                found.push(user_from_row(&row)?);
            }
        }
        shared::users_in_order(users, found)
    }

    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        sqlx::query("SELECT * FROM users WHERE email = ?")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn find_user_by_subject(&self, subject: &str) -> Result<Option<User>, StoreError> {
        sqlx::query("SELECT * FROM users WHERE auth0_id = ?")
            .bind(subject)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE users SET email = ?, name = ?, avatar_url = ?, auth0_id = ?,
                 last_login_at = ?, updated_at = ?
             WHERE id = ?",
        )
        .bind(user.email.as_str())
        .bind(user.name.as_deref())
        .bind(user.avatar_url.as_deref())
        .bind(user.oidc_subject.as_deref())
        .bind(user.last_login_at.map(|at| ts(micros(at))))
        .bind(ts(micros(Utc::now())))
        .bind(user.id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("user", user.id));
        }
        commit_change(tx, None).await
    }

    async fn list_users(&self, query: &UserQuery) -> Result<Vec<User>, StoreError> {
        // SQLite's `lower` folds ASCII letters only: the search rule of `UserQuery::matches`.
        let rows = sqlx::query(
            "SELECT * FROM users
             WHERE (?1 IS NULL OR email > ?1)
               AND (?2 IS NULL OR instr(lower(email), ?2) > 0
                    OR instr(lower(COALESCE(name, '')), ?2) > 0)
             ORDER BY email LIMIT ?3",
        )
        .bind(query.after.as_ref().map(Email::as_str))
        .bind(query.search.as_deref().map(str::to_ascii_lowercase))
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn set_user_active(&self, user: UserId, active: bool) -> Result<User, StoreError> {
        // BEGIN IMMEDIATE: the count of the other super admins and the change are one step.
        let mut tx = self.write().await?;
        let old = fetch_user(&mut tx, user).await?;
        let others = other_super_admins(&mut tx, user).await?;
        shared::check_super_admin_remains("active", !active && old.is_super_admin(), others)?;
        if old.active == active {
            crate::audited::discard_pending();
            return Ok(old);
        }
        sqlx::query("UPDATE users SET is_active = ?, updated_at = ? WHERE id = ?")
            .bind(active)
            .bind(ts(micros(Utc::now())))
            .bind(user.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let orgs = sqlx::query("SELECT organization_id FROM org_memberships WHERE user_id = ?")
            .bind(user.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        for row in &orgs {
            let org = OrgId::from_uuid(row.uuid("organization_id")?);
            emit(&mut tx, org, OutboxEntity::Member(user), false).await?;
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
        let mut tx = self.write().await?;
        let old = fetch_user(&mut tx, user).await?;
        let others = other_super_admins(&mut tx, user).await?;
        shared::check_super_admin_remains(
            "platform_role",
            role != PlatformRole::SuperAdmin && old.is_super_admin(),
            others,
        )?;
        sqlx::query("UPDATE users SET platform_role = ?, updated_at = ? WHERE id = ?")
            .bind(enum_text(&role)?)
            .bind(ts(micros(Utc::now())))
            .bind(user.as_uuid())
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
        tenant(org, member.org_id, "membership")?;
        let mut tx = self.write().await?;
        require_org(&mut tx, org).await?;
        require_row(&mut tx, USER_EXISTS, "user", member.user_id.as_uuid()).await?;
        require_profile(&mut tx, member.profile_id).await?;
        sqlx::query(
            "INSERT INTO org_memberships (organization_id, user_id, role, virtual_key_id,
                 profile_id, allowed_tiers, monthly_budget, joined_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(org.as_uuid())
        .bind(member.user_id.as_uuid())
        .bind(enum_text(&member.role)?)
        .bind(member.litellm_key_id.as_deref())
        .bind(member.profile_id.map(|p| p.as_uuid()))
        .bind(opt_json(member.allowed_tiers.as_ref())?)
        .bind(member.monthly_budget.map(money))
        .bind(ts(micros(member.joined_at)))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let scope = BudgetScope::User(member.user_id);
        put_implied_budget(&mut tx, org, scope, member.monthly_budget, Utc::now()).await?;
        emit(&mut tx, org, OutboxEntity::Member(member.user_id), false).await?;
        commit_change(tx, None).await
    }

    async fn get_member(&self, org: OrgId, user: UserId) -> Result<Membership, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        fetch_member(&mut conn, org, user).await
    }

    async fn list_members(&self, org: OrgId) -> Result<Vec<Membership>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{MEMBER_COLUMNS} WHERE organization_id = ? ORDER BY user_id"
        )))
        .bind(org.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(member_from_row)
        .collect()
    }

    async fn update_member(&self, org: OrgId, member: &Membership) -> Result<(), StoreError> {
        tenant(org, member.org_id, "membership")?;
        let mut tx = self.write().await?;
        let old = fetch_member(&mut tx, org, member.user_id).await?;
        require_profile(&mut tx, member.profile_id).await?;
        let mut new = member.clone();
        new.joined_at = old.joined_at;
        // The key id is the sync's, written by `set_litellm_key_id` only.
        new.litellm_key_id = old.litellm_key_id.clone();
        sqlx::query(
            "UPDATE org_memberships SET role = ?, virtual_key_id = ?, profile_id = ?,
                 allowed_tiers = ?, monthly_budget = ?
             WHERE organization_id = ? AND user_id = ?",
        )
        .bind(enum_text(&new.role)?)
        .bind(new.litellm_key_id.as_deref())
        .bind(new.profile_id.map(|p| p.as_uuid()))
        .bind(opt_json(new.allowed_tiers.as_ref())?)
        .bind(new.monthly_budget.map(money))
        .bind(org.as_uuid())
        .bind(member.user_id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let scope = BudgetScope::User(member.user_id);
        put_implied_budget(&mut tx, org, scope, new.monthly_budget, Utc::now()).await?;
        if !shared::member_change_is_sync_only(&old, &new) {
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
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE org_memberships SET virtual_key_id = ? WHERE organization_id = ? AND user_id = ?",
        )
        .bind(key_id)
        .bind(org.as_uuid())
        .bind(user.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("membership", user));
        }
        commit_change(tx, None).await
    }

    async fn remove_member(&self, org: OrgId, user: UserId) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        // Group memberships and the sealed LiteLLM key go with it (composite foreign keys, on
        // delete cascade).
        let done =
            sqlx::query("DELETE FROM org_memberships WHERE organization_id = ? AND user_id = ?")
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
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{MEMBER_COLUMNS} WHERE user_id = ? ORDER BY organization_id"
        )))
        .bind(user.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(member_from_row)
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
        tenant(org, group.org_id, "group")?;
        for m in members {
            tenant(org, m.org_id, "group membership")?;
            if m.group_id != group.id {
                return Err(StoreError::TenantMismatch(format!(
                    "group membership names group `{}`, not `{}`",
                    m.group_id, group.id
                )));
            }
        }
        let mut tx = self.write().await?;
        require_org(&mut tx, org).await?;
        check_group_name(&mut tx, org, group).await?;
        sqlx::query(
            "INSERT INTO groups (id, organization_id, name, description, allowed_tiers,
                 monthly_budget, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(group.id.as_uuid())
        .bind(org.as_uuid())
        .bind(&group.name)
        .bind(group.description.as_deref())
        .bind(opt_json(group.allowed_tiers.as_ref())?)
        .bind(group.monthly_budget.map(money))
        .bind(ts(micros(group.created_at)))
        .bind(ts(micros(group.updated_at)))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let scope = BudgetScope::Group(group.id);
        put_implied_budget(&mut tx, org, scope, group.monthly_budget, group.updated_at).await?;
        emit(&mut tx, org, OutboxEntity::Group(group.id), false).await?;
        for m in members {
            // The seat check counts this transaction's own inserts: the capacity holds for
            // the whole list.
            require_member(&mut tx, org, m.user_id).await?;
            check_group_seat(&mut tx, org, group.id, m.user_id).await?;
            sqlx::query(
                "INSERT INTO group_memberships (group_id, organization_id, user_id, role, joined_at)
                 VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (group_id, user_id) DO UPDATE SET role = excluded.role",
            )
            .bind(group.id.as_uuid())
            .bind(org.as_uuid())
            .bind(m.user_id.as_uuid())
            .bind(enum_text(&m.role)?)
            .bind(ts(micros(m.joined_at)))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            emit(&mut tx, org, OutboxEntity::Member(m.user_id), false).await?;
        }
        commit_change(tx, None).await
    }

    async fn get_group(&self, org: OrgId, group: GroupId) -> Result<Group, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        fetch_group(&mut conn, org, group).await
    }

    async fn locate_group(&self, group: GroupId) -> Result<Option<OrgId>, StoreError> {
        let org: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT organization_id FROM groups WHERE id = ?")
                .bind(group.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(org.map(OrgId::from_uuid))
    }

    async fn list_groups(&self, org: OrgId) -> Result<Vec<Group>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{GROUP_COLUMNS} WHERE g.organization_id = ? ORDER BY g.id"
        )))
        .bind(org.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(group_from_row)
        .collect()
    }

    async fn update_group(&self, org: OrgId, group: &Group) -> Result<(), StoreError> {
        tenant(org, group.org_id, "group")?;
        let mut tx = self.write().await?;
        check_group_name(&mut tx, org, group).await?;
        let done = sqlx::query(
            "UPDATE groups SET name = ?, description = ?, allowed_tiers = ?, monthly_budget = ?,
                 updated_at = ?
             WHERE id = ? AND organization_id = ?",
        )
        .bind(&group.name)
        .bind(group.description.as_deref())
        .bind(opt_json(group.allowed_tiers.as_ref())?)
        .bind(group.monthly_budget.map(money))
        .bind(ts(micros(group.updated_at)))
        .bind(group.id.as_uuid())
        .bind(org.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("group", group.id));
        }
        let scope = BudgetScope::Group(group.id);
        put_implied_budget(&mut tx, org, scope, group.monthly_budget, group.updated_at).await?;
        emit(&mut tx, org, OutboxEntity::Group(group.id), false).await?;
        commit_change(tx, None).await
    }

    async fn delete_group(&self, org: OrgId, group: GroupId) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM groups WHERE id = ? AND organization_id = ?")
            .bind(group.as_uuid())
            .bind(org.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(crate::error::db_on_delete)?;
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
        tenant(org, membership.org_id, "group membership")?;
        let mut tx = self.write().await?;
        require_group(&mut tx, org, membership.group_id).await?;
        require_member(&mut tx, org, membership.user_id).await?;
        check_group_seat(&mut tx, org, membership.group_id, membership.user_id).await?;
        sqlx::query(
            "INSERT INTO group_memberships (group_id, organization_id, user_id, role, joined_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (group_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(membership.group_id.as_uuid())
        .bind(org.as_uuid())
        .bind(membership.user_id.as_uuid())
        .bind(enum_text(&membership.role)?)
        .bind(ts(micros(membership.joined_at)))
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
        let mut tx = self.write().await?;
        require_group(&mut tx, org, group).await?;
        let done = sqlx::query(
            "DELETE FROM group_memberships
             WHERE group_id = ? AND user_id = ? AND organization_id = ?",
        )
        .bind(group.as_uuid())
        .bind(user.as_uuid())
        .bind(org.as_uuid())
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
        let mut conn = self.pool.acquire().await.map_err(db)?;
        require_group(&mut conn, org, group).await?;
        sqlx::query(
            "SELECT group_id, organization_id, user_id, role, joined_at FROM group_memberships
             WHERE group_id = ? AND organization_id = ? ORDER BY user_id",
        )
        .bind(group.as_uuid())
        .bind(org.as_uuid())
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?
        .iter()
        .map(group_member_from_row)
        .collect()
    }

    async fn groups_of_member(
        &self,
        org: OrgId,
        user: UserId,
    ) -> Result<Vec<(Group, GroupRole)>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{GROUP_COLUMNS_WITH_ROLE} WHERE g.organization_id = ? AND gm.user_id = ? ORDER BY g.id"
        )))
        .bind(org.as_uuid())
        .bind(user.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(|row| Ok((group_from_row(row)?, row.variant("role")?)))
        .collect()
    }

    async fn create_profile(&self, profile: &UserProfile) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO user_profiles (id, name, description, default_tiers, default_guardrails,
                 available_to, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(profile.id.as_uuid())
        .bind(&profile.name)
        .bind(profile.description.as_deref())
        .bind(to_json(&profile.default_tiers)?)
        .bind(to_json(&profile.default_guardrails)?)
        .bind(enum_text(&profile.available_to)?)
        .bind(ts(micros(profile.created_at)))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        commit_change(tx, None).await
    }

    async fn get_profile(&self, profile: ProfileId) -> Result<UserProfile, StoreError> {
        let row = sqlx::query("SELECT * FROM user_profiles WHERE id = ?")
            .bind(profile.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::not_found("profile", profile))?;
        profile_from_row(&row)
    }

    async fn list_profiles(&self) -> Result<Vec<UserProfile>, StoreError> {
        sqlx::query("SELECT * FROM user_profiles ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(profile_from_row)
            .collect()
    }

    async fn update_profile(&self, profile: &UserProfile) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE user_profiles SET name = ?, description = ?, default_tiers = ?,
                 default_guardrails = ?, available_to = ?
             WHERE id = ?",
        )
        .bind(&profile.name)
        .bind(profile.description.as_deref())
        .bind(to_json(&profile.default_tiers)?)
        .bind(to_json(&profile.default_guardrails)?)
        .bind(enum_text(&profile.available_to)?)
        .bind(profile.id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("profile", profile.id));
        }
        commit_change(tx, None).await
    }

    async fn delete_profile(&self, profile: ProfileId) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM user_profiles WHERE id = ?")
            .bind(profile.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if exists.is_none() {
            return Err(StoreError::not_found("profile", profile));
        }
        let members: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM org_memberships WHERE profile_id = ?")
                .bind(profile.as_uuid())
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        let pending: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM invitations WHERE profile_id = ? AND status = 'pending'",
        )
        .bind(profile.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        if members + pending > 0 {
            return Err(shared::profile_in_use(
                usize::try_from(members).unwrap_or(usize::MAX),
                usize::try_from(pending).unwrap_or(usize::MAX),
            ));
        }
        sqlx::query("UPDATE invitations SET profile_id = NULL WHERE profile_id = ?")
            .bind(profile.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("DELETE FROM user_profiles WHERE id = ?")
            .bind(profile.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        commit_change(tx, None).await
    }

    async fn create_invitation(
        &self,
        org: OrgId,
        invitation: &Invitation,
    ) -> Result<(), StoreError> {
        tenant(org, invitation.org_id, "invitation")?;
        let mut tx = self.write().await?;
        require_org(&mut tx, org).await?;
        write_invitation(&mut tx, org, invitation, false).await?;
        commit_change(tx, None).await
    }

    async fn save_invitations(
        &self,
        org: OrgId,
        invitations: &[Invitation],
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        require_org(&mut tx, org).await?;
        for invitation in invitations {
            write_invitation(&mut tx, org, invitation, true).await?;
        }
        commit_change(tx, None).await
    }

    async fn find_invitation_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{INVITATION_COLUMNS} WHERE token_hash = ?"
        )))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(invitation_from_row)
        .transpose()
    }

    async fn pending_invitations_for(&self, email: &Email) -> Result<Vec<Invitation>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{INVITATION_COLUMNS} WHERE email = ? AND status = 'pending' ORDER BY id"
        )))
        .bind(email.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(invitation_from_row)
        .collect()
    }

    async fn list_invitations(&self, org: OrgId) -> Result<Vec<Invitation>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{INVITATION_COLUMNS} WHERE organization_id = ? ORDER BY id"
        )))
        .bind(org.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(invitation_from_row)
        .collect()
    }

    async fn revoke_invitation(
        &self,
        org: OrgId,
        invitation: InvitationId,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM invitations WHERE id = ? AND organization_id = ?",
        )
        .bind(invitation.as_uuid())
        .bind(org.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let status = status.ok_or_else(|| StoreError::not_found("invitation", invitation))?;
        if status != enum_text(&InvitationStatus::Pending)? {
            return Err(StoreError::Conflict(format!(
                "invitation `{invitation}` is {status}"
            )));
        }
        sqlx::query("UPDATE invitations SET status = 'revoked' WHERE id = ?")
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
        // The write lock is held from the first read: two acceptances run one after the other,
        // and the second sees the invitation accepted.
        let mut tx = self.write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{INVITATION_COLUMNS} WHERE token_hash = ?"
        )))
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("invitation", "token"))?;
        let invitation = invitation_from_row(&row)?;
        let (after, outcome) = shared::accept_invitation(&invitation, user, now);
        if let Err(refusal) = outcome {
            if after.status == InvitationStatus::Expired {
                sqlx::query("UPDATE invitations SET status = 'expired' WHERE id = ?")
                    .bind(invitation.id.as_uuid())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(db)?;
            }
            return Err(refusal);
        }
        require_row(&mut tx, USER_EXISTS, "user", user.id.as_uuid()).await?;
        let org = invitation.org_id;
        let membership = invitation.membership_for(user.id, now);
        sqlx::query(
            "INSERT INTO org_memberships (organization_id, user_id, role, profile_id, joined_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(org.as_uuid())
        .bind(user.id.as_uuid())
        .bind(enum_text(&membership.role)?)
        .bind(membership.profile_id.map(|p| p.as_uuid()))
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        emit(&mut tx, org, OutboxEntity::Member(user.id), false).await?;
        for group in &invitation.group_ids {
            // A group deleted since the invitation was sent is skipped; a full one refuses
            // the whole acceptance.
            match check_group_seat(&mut tx, org, *group, user.id).await {
                Err(StoreError::NotFound { .. }) => continue,
                other => other?,
            }
            let inserted = sqlx::query(
                "INSERT INTO group_memberships (group_id, organization_id, user_id, role, joined_at)
                 SELECT id, organization_id, ?, 'member', ? FROM groups
                 WHERE id = ? AND organization_id = ?",
            )
            .bind(user.id.as_uuid())
            .bind(ts(now))
            .bind(group.as_uuid())
            .bind(org.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            if inserted.rows_affected() > 0 {
                emit(&mut tx, org, OutboxEntity::Group(*group), false).await?;
            }
        }
        sqlx::query(
            "UPDATE invitations SET status = 'accepted', accepted_at = ?
             WHERE id = ? AND status = 'pending'",
        )
        .bind(ts(now))
        .bind(invitation.id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        commit_change(tx, snapshot(&membership)).await?;
        Ok(membership)
    }
}

const GROUP_COLUMNS_WITH_ROLE: &str = "SELECT g.id, g.organization_id, g.name, g.description, \
     g.allowed_tiers, g.monthly_budget, g.created_at, g.updated_at, gm.role \
     FROM groups g JOIN group_memberships gm ON gm.group_id = g.id";
