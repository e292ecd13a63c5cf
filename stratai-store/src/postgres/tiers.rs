//! [`TierStore`] on PostgreSQL.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::Utc;
use stratai_core::budget::BudgetScope;
use stratai_core::ports::{OutboxEntity, TierStore};
use stratai_core::tiers::{ModelTier, TierSubscription};
use stratai_core::{OrgId, StoreError, TierId};

use super::audit::commit_change;
use super::directory::emit;
use super::ledger::put_implied_budget;
use super::rows::{self, get};
use super::{PgStore, same_tenant};
use crate::error::db;
use crate::shared::micros;

#[async_trait]
impl TierStore for PgStore {
    async fn upsert_tier(&self, tier: &ModelTier) -> Result<(), StoreError> {
        let mut seen = BTreeSet::new();
        for model in &tier.models {
            if !seen.insert(model) {
                return Err(StoreError::Conflict(format!(
                    "model `{model}` is listed twice"
                )));
            }
        }
        let models: Vec<&str> = tier.models.iter().map(|m| m.as_str()).collect();
        // The tier catalog is a platform table: no tenant context.
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(concat!(
            "INSERT INTO model_tiers (",
            tier_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (id) DO UPDATE SET slug = EXCLUDED.slug, name = EXCLUDED.name,
                 description = EXCLUDED.description, best_use_case = EXCLUDED.best_use_case,
                 models = EXCLUDED.models, base_price = EXCLUDED.base_price,
                 input_token_rate = EXCLUDED.input_token_rate,
                 output_token_rate = EXCLUDED.output_token_rate,
                 sort_order = EXCLUDED.sort_order, is_active = EXCLUDED.is_active,
                 rate_schedule = EXCLUDED.rate_schedule"
        ))
        .bind(tier.id.as_uuid())
        .bind(tier.slug.as_str())
        .bind(&tier.name)
        .bind(&tier.description)
        .bind(&tier.best_use_case)
        .bind(&models)
        .bind(tier.base_price.amount())
        .bind(tier.input_rate_per_million)
        .bind(tier.output_rate_per_million)
        .bind(tier.sort_order)
        .bind(tier.active)
        .bind(sqlx::types::Json(&tier.rate_schedule))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM tier_models WHERE tier_id = $1")
            .bind(tier.id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        // The primary key on `model` refuses a model already in another tier.
        sqlx::query("INSERT INTO tier_models (model, tier_id) SELECT unnest($1::text[]), $2")
            .bind(&models)
            .bind(tier.id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        commit_change(tx, None).await
    }

    async fn list_tiers(&self) -> Result<Vec<ModelTier>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            tier_columns!(),
            " FROM model_tiers ORDER BY sort_order, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(rows::tier)
        .collect()
    }

    async fn get_tier(&self, tier: TierId) -> Result<ModelTier, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            tier_columns!(),
            " FROM model_tiers WHERE id = $1"
        ))
        .bind(tier.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("tier", tier))?;
        rows::tier(&row)
    }

    async fn put_subscription(
        &self,
        org: OrgId,
        subscription: &TierSubscription,
    ) -> Result<(), StoreError> {
        same_tenant(org, subscription.org_id, "subscription")?;
        let mut tx = self.tenant(org).await?;
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1) AS org,
                    EXISTS (SELECT 1 FROM model_tiers WHERE id = $2) AS tier",
        )
        .bind(org.as_uuid())
        .bind(subscription.tier_id.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        if !get::<bool>(&row, "org")? {
            return Err(StoreError::not_found("organization", org));
        }
        if !get::<bool>(&row, "tier")? {
            return Err(StoreError::not_found("tier", subscription.tier_id));
        }
        sqlx::query(
            "INSERT INTO org_tier_access (organization_id, tier_id, enabled, monthly_budget, enabled_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (organization_id, tier_id) DO UPDATE SET enabled = EXCLUDED.enabled,
                 monthly_budget = EXCLUDED.monthly_budget, enabled_at = EXCLUDED.enabled_at",
        )
        .bind(org.as_uuid())
        .bind(subscription.tier_id.as_uuid())
        .bind(subscription.enabled)
        .bind(subscription.monthly_budget.map(|m| m.amount()))
        .bind(micros(subscription.enabled_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let budget = subscription.monthly_budget.filter(|_| subscription.enabled);
        let scope = BudgetScope::Tier(subscription.tier_id);
        put_implied_budget(&mut tx, org, scope, budget, Utc::now()).await?;
        emit(&mut tx, org, OutboxEntity::Org(org), false).await?;
        commit_change(tx, None).await
    }

    async fn list_subscriptions(&self, org: OrgId) -> Result<Vec<TierSubscription>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let found = sqlx::query(
            "SELECT organization_id, tier_id, enabled, monthly_budget, enabled_at
             FROM org_tier_access WHERE organization_id = $1 ORDER BY tier_id",
        )
        .bind(org.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        found.iter().map(rows::subscription).collect()
    }
}
