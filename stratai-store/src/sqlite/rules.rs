//! Guardrail rules over SQLite.

use async_trait::async_trait;
use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteRow;
use stratai_core::ports::{GuardrailStore, RuleRecord, RuleScope};
use stratai_core::{GroupId, OrgId, RuleId, StoreError, TierId, UserId};
use uuid::Uuid;

use super::audit::commit_change;
use super::{
    Col, SqliteStore, TIER_EXISTS, require_group, require_member, require_org, require_row, tenant,
    to_json, ts,
};
use crate::error::{corrupt, db};
use crate::shared::{self, enum_text, micros};

/// `(level, scope_id, organization_id)` of a scope.
fn scope_columns(scope: &RuleScope) -> (&'static str, Option<Uuid>, Option<Uuid>) {
    match *scope {
        RuleScope::Global => ("global", None, None),
        RuleScope::Org { org_id } => ("org", Some(org_id.as_uuid()), Some(org_id.as_uuid())),
        RuleScope::Tier { org_id, tier_id } => {
            ("tier", Some(tier_id.as_uuid()), org_id.map(|o| o.as_uuid()))
        }
        RuleScope::Group { org_id, group_id } => {
            ("group", Some(group_id.as_uuid()), Some(org_id.as_uuid()))
        }
        RuleScope::User { org_id, user_id } => {
            ("user", Some(user_id.as_uuid()), Some(org_id.as_uuid()))
        }
    }
}

fn rule_from_row(row: &SqliteRow) -> Result<RuleRecord, StoreError> {
    let level = row.text("level")?;
    let scope_id = row.opt_uuid("scope_id")?;
    let org = row.opt_uuid("organization_id")?.map(OrgId::from_uuid);
    let need = |id: Option<Uuid>| {
        id.ok_or_else(|| corrupt("rule scope", format!("`{level}` without scope id")))
    };
    let need_org = |org: Option<OrgId>| {
        org.ok_or_else(|| corrupt("rule scope", format!("`{level}` without organization")))
    };
    let scope = match level.as_str() {
        "global" => RuleScope::Global,
        "org" => RuleScope::Org {
            org_id: need_org(org)?,
        },
        "tier" => RuleScope::Tier {
            org_id: org,
            tier_id: TierId::from_uuid(need(scope_id)?),
        },
        "group" => RuleScope::Group {
            org_id: need_org(org)?,
            group_id: GroupId::from_uuid(need(scope_id)?),
        },
        "user" => RuleScope::User {
            org_id: need_org(org)?,
            user_id: UserId::from_uuid(need(scope_id)?),
        },
        other => return Err(corrupt("rule level", format!("`{other}`"))),
    };
    Ok(RuleRecord {
        id: RuleId::from_uuid(row.uuid("id")?),
        name: row.text("name")?,
        description: row.opt_text("description")?,
        rule_type: row.text("type")?,
        config: row.json("config")?,
        scope,
        action: row.variant("action")?,
        priority: i32::try_from(row.int("priority")?).map_err(|err| corrupt("priority", err))?,
        active: row.flag("is_active")?,
        created_at: row.at("created_at")?,
    })
}

/// NotFound unless every entity the scope names exists (and, for groups and users, inside
/// the rule's organization).
async fn check_targets(conn: &mut SqliteConnection, scope: &RuleScope) -> Result<(), StoreError> {
    match *scope {
        RuleScope::Global => Ok(()),
        RuleScope::Org { org_id } => require_org(conn, org_id).await,
        RuleScope::Tier { org_id, tier_id } => {
            if let Some(org) = org_id {
                require_org(conn, org).await?;
            }
            require_row(conn, TIER_EXISTS, "tier", tier_id.as_uuid()).await
        }
        RuleScope::Group { org_id, group_id } => require_group(conn, org_id, group_id).await,
        RuleScope::User { org_id, user_id } => require_member(conn, org_id, user_id).await,
    }
}

impl SqliteStore {
    /// Writes a rule whose owner (`None`: the platform) was checked by the caller; refuses to
    /// take over an id owned by someone else.
    async fn put_owned_rule(
        &self,
        owner: Option<OrgId>,
        rule: &RuleRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        check_targets(&mut tx, &rule.scope).await?;
        let existing: Option<Option<Uuid>> =
            sqlx::query_scalar("SELECT organization_id FROM guardrails WHERE id = ?")
                .bind(rule.id.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        if let Some(existing_owner) = existing
            && existing_owner != owner.map(|o| o.as_uuid())
        {
            return Err(StoreError::Conflict(format!(
                "rule id `{}` is in use",
                rule.id
            )));
        }
        let (level, scope_id, org) = scope_columns(&rule.scope);
        sqlx::query(
            "INSERT INTO guardrails (id, organization_id, name, description, type, config, level,
                 scope_id, action, priority, is_active, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                 description = excluded.description, type = excluded.type,
                 config = excluded.config, level = excluded.level, scope_id = excluded.scope_id,
                 action = excluded.action, priority = excluded.priority,
                 is_active = excluded.is_active, created_at = excluded.created_at",
        )
        .bind(rule.id.as_uuid())
        .bind(org)
        .bind(&rule.name)
        .bind(rule.description.as_deref())
        .bind(&rule.rule_type)
        .bind(to_json(&rule.config)?)
        .bind(level)
        .bind(scope_id)
        .bind(enum_text(&rule.action)?)
        .bind(rule.priority)
        .bind(rule.active)
        .bind(ts(micros(rule.created_at)))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        commit_change(tx, None).await
    }
}

#[async_trait]
impl GuardrailStore for SqliteStore {
    async fn put_platform_rule(&self, rule: &RuleRecord) -> Result<(), StoreError> {
        shared::check_rule(rule)?;
        if let Some(org) = rule.scope.org_id() {
            return Err(StoreError::TenantMismatch(format!(
                "a platform rule can not be scoped to organization `{org}`"
            )));
        }
        self.put_owned_rule(None, rule).await
    }

    async fn put_rule(&self, org: OrgId, rule: &RuleRecord) -> Result<(), StoreError> {
        shared::check_rule(rule)?;
        match rule.scope.org_id() {
            Some(owner) => tenant(org, owner, "rule")?,
            None => {
                return Err(StoreError::TenantMismatch(format!(
                    "rule `{}` is a platform rule, not one of organization `{org}`",
                    rule.id
                )));
            }
        }
        self.put_owned_rule(Some(org), rule).await
    }

    async fn get_rule(&self, org: OrgId, rule: RuleId) -> Result<RuleRecord, StoreError> {
        let row = sqlx::query("SELECT * FROM guardrails WHERE id = ? AND organization_id = ?")
            .bind(rule.as_uuid())
            .bind(org.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::not_found("rule", rule))?;
        rule_from_row(&row)
    }

    async fn delete_rule(&self, org: OrgId, rule: RuleId) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM guardrails WHERE id = ? AND organization_id = ?")
            .bind(rule.as_uuid())
            .bind(org.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("rule", rule));
        }
        commit_change(tx, None).await
    }

    async fn delete_platform_rule(&self, rule: RuleId) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM guardrails WHERE id = ? AND organization_id IS NULL")
            .bind(rule.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("rule", rule));
        }
        commit_change(tx, None).await
    }

    async fn list_platform_rules(&self) -> Result<Vec<RuleRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM guardrails WHERE organization_id IS NULL ORDER BY priority DESC, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(rule_from_row)
        .collect()
    }

    async fn list_org_rules(&self, org: OrgId) -> Result<Vec<RuleRecord>, StoreError> {
        sqlx::query("SELECT * FROM guardrails WHERE organization_id = ? ORDER BY priority DESC, id")
            .bind(org.as_uuid())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(rule_from_row)
            .collect()
    }
}
