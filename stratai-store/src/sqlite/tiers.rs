//! The tier catalog and subscriptions over SQLite.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::sqlite::SqliteRow;
use stratai_core::budget::BudgetScope;
use stratai_core::ports::{OutboxEntity, TierStore};
use stratai_core::tiers::{ModelTier, TierSubscription};
use stratai_core::{OrgId, StoreError, TierId, TierSlug};

use super::audit::commit_change;
use super::ledger::put_implied_budget;
use super::{
    Col, SqliteStore, TIER_EXISTS, emit, money, require_org, require_row, tenant, to_json, ts,
};
use crate::error::db;
use crate::shared::micros;

fn tier_from_row(row: &SqliteRow) -> Result<ModelTier, StoreError> {
    let rate = |col: &str| -> Result<rust_decimal::Decimal, StoreError> {
        let text = row.text(col)?;
        text.parse()
            .map_err(|err| crate::error::corrupt(col, format!("`{text}`: {err}")))
    };
    // The rate fields are the rates in force now (the schedule decides when it has periods).
    Ok(ModelTier {
        id: TierId::from_uuid(row.uuid("id")?),
        slug: TierSlug::new(row.text("slug")?).map_err(|err| crate::error::corrupt("slug", err))?,
        name: row.text("name")?,
        description: row.text("description")?,
        best_use_case: row.text("best_use_case")?,
        models: row.json("models")?,
        base_price: row.money("base_price")?,
        input_rate_per_million: rate("input_token_rate")?,
        output_rate_per_million: rate("output_token_rate")?,
        sort_order: i32::try_from(row.int("sort_order")?)
            .map_err(|err| crate::error::corrupt("sort_order", err))?,
        active: row.flag("is_active")?,
        rate_schedule: row.json("rate_schedule")?,
    }
    .as_of(Utc::now()))
}

fn subscription_from_row(row: &SqliteRow) -> Result<TierSubscription, StoreError> {
    Ok(TierSubscription {
        org_id: OrgId::from_uuid(row.uuid("organization_id")?),
        tier_id: TierId::from_uuid(row.uuid("tier_id")?),
        enabled: row.flag("enabled")?,
        monthly_budget: row.opt_money("monthly_budget")?,
        enabled_at: row.at("enabled_at")?,
    })
}

#[async_trait]
impl TierStore for SqliteStore {
    async fn upsert_tier(&self, tier: &ModelTier) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO model_tiers (id, name, slug, description, best_use_case, base_price,
                 input_token_rate, output_token_rate, models, sort_order, is_active, created_at,
                 rate_schedule)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, slug = excluded.slug,
                 description = excluded.description, best_use_case = excluded.best_use_case,
                 base_price = excluded.base_price, input_token_rate = excluded.input_token_rate,
                 output_token_rate = excluded.output_token_rate, models = excluded.models,
                 sort_order = excluded.sort_order, is_active = excluded.is_active,
                 rate_schedule = excluded.rate_schedule",
        )
        .bind(tier.id.as_uuid())
        .bind(&tier.name)
        .bind(tier.slug.as_str())
        .bind(&tier.description)
        .bind(&tier.best_use_case)
        .bind(money(tier.base_price))
        .bind(tier.input_rate_per_million.to_string())
        .bind(tier.output_rate_per_million.to_string())
        .bind(to_json(&tier.models)?)
        .bind(tier.sort_order)
        .bind(tier.active)
        .bind(ts(micros(chrono::Utc::now())))
        .bind(to_json(&tier.rate_schedule)?)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM tier_models WHERE tier_id = ?")
            .bind(tier.id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for model in &tier.models {
            sqlx::query("INSERT INTO tier_models (model, tier_id) VALUES (?, ?)")
                .bind(model.as_str())
                .bind(tier.id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(|err| match db(err) {
                    StoreError::Conflict(_) => StoreError::Conflict(format!(
                        "model `{model}` is in another tier or listed twice"
                    )),
                    other => other,
                })?;
        }
        commit_change(tx, None).await
    }

    async fn list_tiers(&self) -> Result<Vec<ModelTier>, StoreError> {
        sqlx::query("SELECT * FROM model_tiers ORDER BY sort_order, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(tier_from_row)
            .collect()
    }

    async fn get_tier(&self, tier: TierId) -> Result<ModelTier, StoreError> {
        let row = sqlx::query("SELECT * FROM model_tiers WHERE id = ?")
            .bind(tier.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::not_found("tier", tier))?;
        tier_from_row(&row)
    }

    async fn put_subscription(
        &self,
        org: OrgId,
        subscription: &TierSubscription,
    ) -> Result<(), StoreError> {
        tenant(org, subscription.org_id, "subscription")?;
        let mut tx = self.write().await?;
        require_org(&mut tx, org).await?;
        require_row(&mut tx, TIER_EXISTS, "tier", subscription.tier_id.as_uuid()).await?;
        sqlx::query(
            "INSERT INTO org_tier_access (organization_id, tier_id, enabled, monthly_budget, enabled_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (organization_id, tier_id) DO UPDATE SET enabled = excluded.enabled,
                 monthly_budget = excluded.monthly_budget, enabled_at = excluded.enabled_at",
        )
        .bind(org.as_uuid())
        .bind(subscription.tier_id.as_uuid())
        .bind(subscription.enabled)
        .bind(subscription.monthly_budget.map(money))
        .bind(ts(micros(subscription.enabled_at)))
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
        sqlx::query("SELECT * FROM org_tier_access WHERE organization_id = ? ORDER BY tier_id")
            .bind(org.as_uuid())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(subscription_from_row)
            .collect()
    }
}
