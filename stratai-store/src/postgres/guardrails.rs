//! [`GuardrailStore`] on PostgreSQL.

use async_trait::async_trait;
use sqlx::PgConnection;
use stratai_core::ports::{GuardrailStore, RuleRecord, RuleScope};
use stratai_core::{OrgId, RuleId, StoreError};

use super::audit::commit_change;
use super::rows::{self, get};
use super::{PgStore, same_tenant};
use crate::error::db;
use crate::shared::{self, enum_text, micros};

/// Checks that what a rule is attached to exists (in the tenant context, for tenant rules).
async fn check_targets(conn: &mut PgConnection, rule: &RuleRecord) -> Result<(), StoreError> {
    let row = sqlx::query(
        "SELECT ($1::uuid IS NULL OR EXISTS (SELECT 1 FROM organizations WHERE id = $1)) AS org,
                ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM model_tiers WHERE id = $2)) AS tier,
                ($3::uuid IS NULL OR EXISTS (SELECT 1 FROM groups WHERE id = $3)) AS grp,
                ($4::uuid IS NULL OR EXISTS (SELECT 1 FROM org_memberships WHERE user_id = $4)) AS mem",
    );
    let (org, tier, group, user) = match rule.scope {
        RuleScope::Global => (None, None, None, None),
        RuleScope::Org { org_id } => (Some(org_id.as_uuid()), None, None, None),
        RuleScope::Tier { org_id, tier_id } => (
            org_id.map(|o| o.as_uuid()),
            Some(tier_id.as_uuid()),
            None,
            None,
        ),
        RuleScope::Group { group_id, .. } => (None, None, Some(group_id.as_uuid()), None),
        RuleScope::User { user_id, .. } => (None, None, None, Some(user_id.as_uuid())),
    };
    let row = row
        .bind(org)
        .bind(tier)
        .bind(group)
        .bind(user)
        .fetch_one(conn)
        .await
        .map_err(db)?;
    let missing = |column: &str| -> Result<bool, StoreError> { Ok(!get::<bool>(&row, column)?) };
    match (org, tier, group, user) {
        (Some(org), _, _, _) if missing("org")? => Err(StoreError::not_found("organization", org)),
        (_, Some(tier), _, _) if missing("tier")? => Err(StoreError::not_found("tier", tier)),
        (_, _, Some(group), _) if missing("grp")? => Err(StoreError::not_found("group", group)),
        (_, _, _, Some(user)) if missing("mem")? => Err(StoreError::not_found("membership", user)),
        _ => Ok(()),
    }
}

#[async_trait]
impl GuardrailStore for PgStore {
    async fn put_platform_rule(&self, rule: &RuleRecord) -> Result<(), StoreError> {
        shared::check_rule(rule)?;
        if let Some(org) = rule.scope.org_id() {
            return Err(StoreError::TenantMismatch(format!(
                "a platform rule can not be scoped to organization `{org}`"
            )));
        }
        let mut conn = self.pool.begin().await.map_err(db)?;
        check_targets(&mut conn, rule).await?;
        let (level, _, scope_id) = rows::rule_scope_columns(&rule.scope);
        sqlx::query(
            "SELECT stratai_put_platform_rule($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(rule.id.as_uuid())
        .bind(&rule.name)
        .bind(rule.description.as_deref())
        .bind(&rule.rule_type)
        .bind(&rule.config)
        .bind(level)
        .bind(scope_id)
        .bind(enum_text(&rule.action)?)
        .bind(rule.priority)
        .bind(rule.active)
        .bind(micros(rule.created_at))
        .execute(&mut *conn)
        .await
        .map_err(|e| match db(e) {
            // The id is an organization's rule, which the platform path can not see.
            StoreError::TenantMismatch(_) => {
                StoreError::Conflict(format!("rule `{}` belongs to an organization", rule.id))
            }
            other => other,
        })?;
        commit_change(conn, None).await
    }

    async fn put_rule(&self, org: OrgId, rule: &RuleRecord) -> Result<(), StoreError> {
        shared::check_rule(rule)?;
        match rule.scope.org_id() {
            Some(owner) => same_tenant(org, owner, "rule")?,
            None => {
                return Err(StoreError::TenantMismatch(format!(
                    "rule `{}` is a platform rule, not one of organization `{org}`",
                    rule.id
                )));
            }
        }
        let mut tx = self.tenant(org).await?;
        check_targets(&mut tx, rule).await?;
        let (level, _, scope_id) = rows::rule_scope_columns(&rule.scope);
        let action = enum_text(&rule.action)?;
        // A conflicting row of this tenant is updated below; one it can not see is a conflict.
        let inserted = sqlx::query(concat!(
            "INSERT INTO guardrails (",
            rule_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (id) DO NOTHING"
        ))
        .bind(rule.id.as_uuid())
        .bind(org.as_uuid())
        .bind(&rule.name)
        .bind(rule.description.as_deref())
        .bind(&rule.rule_type)
        .bind(&rule.config)
        .bind(level)
        .bind(scope_id)
        .bind(&action)
        .bind(rule.priority)
        .bind(rule.active)
        .bind(micros(rule.created_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| match db(e) {
            // The id is taken by a row this tenant can not see (another tenant's or a
            // platform rule): PostgreSQL refuses with its row-level security error.
            StoreError::TenantMismatch(_) => {
                StoreError::Conflict(format!("rule id `{}` is in use", rule.id))
            }
            other => other,
        })?;
        if inserted.rows_affected() == 0 {
            let updated = sqlx::query(
                "UPDATE guardrails SET name = $3, description = $4, type = $5, config = $6,
                     level = $7, scope_id = $8, action = $9, priority = $10, is_active = $11,
                     created_at = $12
                 WHERE id = $1 AND organization_id = $2",
            )
            .bind(rule.id.as_uuid())
            .bind(org.as_uuid())
            .bind(&rule.name)
            .bind(rule.description.as_deref())
            .bind(&rule.rule_type)
            .bind(&rule.config)
            .bind(level)
            .bind(scope_id)
            .bind(&action)
            .bind(rule.priority)
            .bind(rule.active)
            .bind(micros(rule.created_at))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::Conflict(format!(
                    "rule id `{}` is in use",
                    rule.id
                )));
            }
        }
        commit_change(tx, None).await
    }

    async fn get_rule(&self, org: OrgId, rule: RuleId) -> Result<RuleRecord, StoreError> {
        let mut tx = self.tenant(org).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            rule_columns!(),
            " FROM guardrails WHERE id = $1 AND organization_id = $2"
        ))
        .bind(rule.as_uuid())
        .bind(org.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("rule", rule))?;
        tx.commit().await.map_err(db)?;
        rows::rule(&row)
    }

    async fn delete_rule(&self, org: OrgId, rule: RuleId) -> Result<(), StoreError> {
        let mut tx = self.tenant(org).await?;
        let done = sqlx::query("DELETE FROM guardrails WHERE id = $1 AND organization_id = $2")
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        let deleted: bool = sqlx::query_scalar("SELECT stratai_delete_platform_rule($1)")
            .bind(rule.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        if deleted {
            commit_change(tx, None).await
        } else {
            Err(StoreError::not_found("rule", rule))
        }
    }

    async fn list_platform_rules(&self) -> Result<Vec<RuleRecord>, StoreError> {
        // Platform rules are readable without a tenant context (policy `platform_rules_read`).
        sqlx::query(concat!(
            "SELECT ",
            rule_columns!(),
            " FROM guardrails WHERE organization_id IS NULL ORDER BY priority DESC, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(rows::rule)
        .collect()
    }

    async fn list_org_rules(&self, org: OrgId) -> Result<Vec<RuleRecord>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let found = sqlx::query(concat!(
            "SELECT ",
            rule_columns!(),
            " FROM guardrails WHERE organization_id = $1 ORDER BY priority DESC, id"
        ))
        .bind(org.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        found.iter().map(rows::rule).collect()
    }
}
