//! Usage records over SQLite: batched idempotent append, filtered queries, aggregation and a
//! paged export stream.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use futures::stream::BoxStream;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use stratai_core::ports::{AppendOutcome, UsageStore};
use stratai_core::usage::{AggregateRow, Dimension, UsageQuery, UsageRecord, UsageTotals};
use stratai_core::{
    ConversationId, GroupId, ModelId, Money, OrgId, RequestId, StoreError, TierId, UserId,
};
use uuid::Uuid;

use super::{Col, SqliteStore, money, require_group, require_org, tenant, ts};
use crate::error::{corrupt, db};
use crate::shared::{self, Cursor, enum_text, micros};

/// Rows per multi-row insert: 17 columns each stays far below SQLite's 32766 bound variables.
const INSERT_CHUNK: usize = 1_000;

fn usage_from_row(row: &SqliteRow) -> Result<UsageRecord, StoreError> {
    let tokens = |col: &str| -> Result<u32, StoreError> {
        u32::try_from(row.int(col)?).map_err(|err| corrupt(col, err))
    };
    Ok(UsageRecord {
        request_id: RequestId::from_uuid(row.uuid("request_id")?),
        org_id: OrgId::from_uuid(row.uuid("organization_id")?),
        group_id: row.opt_uuid("group_id")?.map(GroupId::from_uuid),
        user_id: UserId::from_uuid(row.uuid("user_id")?),
        tier_id: row.opt_uuid("tier_id")?.map(TierId::from_uuid),
        model: ModelId::new(row.text("model")?).map_err(|err| corrupt("model", err))?,
        input_tokens: tokens("input_tokens")?,
        output_tokens: tokens("output_tokens")?,
        provider_cost: row.money("provider_cost")?,
        billed_amount: row.money("billed_amount")?,
        overage: row.money("overage")?,
        lease_id: row.opt_uuid("lease_id")?.map(RequestId::from_uuid),
        litellm_request_id: row.opt_text("litellm_request_id")?,
        conversation_id: row
            .opt_uuid("conversation_id")?
            .map(ConversationId::from_uuid),
        endpoint: row.text("endpoint")?,
        status: row.variant("status")?,
        created_at: row.at("created_at")?,
    })
}

/// `SELECT ... WHERE` the query's conditions (only those present, so the indexes serve them),
/// after the cursor, oldest first.
fn select(
    org: OrgId,
    query: &UsageQuery,
    after: Option<Cursor>,
    limit: Option<u32>,
) -> QueryBuilder<Sqlite> {
    let mut qb = QueryBuilder::new(
        "SELECT request_id, organization_id, group_id, user_id, tier_id, model, input_tokens, \
         output_tokens, provider_cost, billed_amount, overage, litellm_request_id, \
         conversation_id, endpoint, status, created_at, lease_id FROM usage_records \
         WHERE organization_id = ",
    );
    qb.push_bind(org.as_uuid());
    if let Some(from) = query.from {
        qb.push(" AND created_at >= ").push_bind(ts(micros(from)));
    }
    if let Some(to) = query.to {
        qb.push(" AND created_at < ").push_bind(ts(micros(to)));
    }
    if let Some(group) = query.group_id {
        qb.push(" AND group_id = ").push_bind(group.as_uuid());
    }
    if let Some(user) = query.user_id {
        qb.push(" AND user_id = ").push_bind(user.as_uuid());
    }
    if let Some(tier) = query.tier_id {
        qb.push(" AND tier_id = ").push_bind(tier.as_uuid());
    }
    if let Some(model) = &query.model {
        qb.push(" AND model = ")
            .push_bind(model.as_str().to_owned());
    }
    if let Some((at, request)) = after {
        qb.push(" AND (created_at > ")
            .push_bind(ts(at))
            .push(" OR (created_at = ")
            .push_bind(ts(at))
            .push(" AND request_id > ")
            .push_bind(request.as_uuid())
            .push("))");
    }
    qb.push(" ORDER BY created_at, request_id");
    if let Some(limit) = limit {
        qb.push(" LIMIT ").push_bind(i64::from(limit));
    }
    qb
}

async fn page(
    pool: &SqlitePool,
    org: OrgId,
    query: &UsageQuery,
    after: Option<Cursor>,
    limit: u32,
) -> Result<Vec<UsageRecord>, StoreError> {
    select(org, query, after, Some(limit))
        .build()
        .fetch_all(pool)
        .await
        .map_err(db)?
        .iter()
        .map(usage_from_row)
        .collect()
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn append(
        &self,
        org: OrgId,
        records: &[UsageRecord],
    ) -> Result<AppendOutcome, StoreError> {
        for record in records {
            tenant(org, record.org_id, "usage record")?;
        }
        if records.is_empty() {
            return Ok(AppendOutcome::default());
        }
        let mut tx = self.write().await?;
        require_org(&mut tx, org).await?;
        // Groups have no foreign key from usage (history outlives them), so check them here:
        // a record may only name a group of its own organization.
        let groups: BTreeSet<GroupId> = records.iter().filter_map(|r| r.group_id).collect();
        for group in groups {
            require_group(&mut tx, org, group).await?;
        }
        let mut inserted = 0;
        for chunk in records.chunks(INSERT_CHUNK) {
            let mut rows = Vec::with_capacity(chunk.len());
            for r in chunk {
                rows.push((r, enum_text(&r.status)?));
            }
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO usage_records (request_id, organization_id, group_id, \
                 user_id, tier_id, model, input_tokens, output_tokens, provider_cost, \
                 billed_amount, overage, litellm_request_id, conversation_id, endpoint, \
                 status, created_at, lease_id) ",
            );
            qb.push_values(rows, |mut b, (r, status)| {
                b.push_bind(r.request_id.as_uuid())
                    .push_bind(org.as_uuid())
                    .push_bind(r.group_id.map(|g| g.as_uuid()))
                    .push_bind(r.user_id.as_uuid())
                    .push_bind(r.tier_id.map(|t| t.as_uuid()))
                    .push_bind(r.model.as_str().to_owned())
                    .push_bind(i64::from(r.input_tokens))
                    .push_bind(i64::from(r.output_tokens))
                    .push_bind(money(r.provider_cost))
                    .push_bind(money(r.billed_amount))
                    .push_bind(money(r.overage))
                    .push_bind(r.litellm_request_id.clone())
                    .push_bind(r.conversation_id.map(|c| c.as_uuid()))
                    .push_bind(r.endpoint.clone())
                    .push_bind(status)
                    .push_bind(ts(micros(r.created_at)))
                    .push_bind(r.lease_id.map(|l| l.as_uuid()));
            });
            let done = qb.build().execute(&mut *tx).await.map_err(db)?;
            inserted += done.rows_affected();
        }
        tx.commit().await.map_err(db)?;
        Ok(AppendOutcome {
            inserted,
            duplicates: records.len() as u64 - inserted,
        })
    }

    async fn charged_under_lease(
        &self,
        org: OrgId,
        lease: RequestId,
    ) -> Result<(Money, u64), StoreError> {
        let rows =
            sqlx::query("SELECT * FROM usage_records WHERE organization_id = ? AND lease_id = ?")
                .bind(org.as_uuid())
                .bind(lease.as_uuid())
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.iter().try_fold((Money::ZERO, 0), |(sum, n), row| {
            Ok((sum + usage_from_row(row)?.charged(), n + 1))
        })
    }

    async fn get(&self, org: OrgId, request_id: RequestId) -> Result<UsageRecord, StoreError> {
        let row =
            sqlx::query("SELECT * FROM usage_records WHERE organization_id = ? AND request_id = ?")
                .bind(org.as_uuid())
                .bind(request_id.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?
                .ok_or_else(|| StoreError::not_found("usage record", request_id))?;
        usage_from_row(&row)
    }

    async fn query(
        &self,
        org: OrgId,
        query: &UsageQuery,
        limit: u32,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        page(&self.pool, org, query, None, limit).await
    }

    async fn aggregate(
        &self,
        org: OrgId,
        query: &UsageQuery,
        group_by: &[Dimension],
    ) -> Result<Vec<AggregateRow>, StoreError> {
        // Money is exact decimal text, which SQL's SUM would turn into floating point: the rows
        // are streamed and summed exactly in Rust instead.
        let mut aggregator = shared::Aggregator::default();
        let mut qb = select(org, query, None, None);
        let mut rows = qb.build().fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(db)? {
            aggregator.add(group_by, &usage_from_row(&row)?);
        }
        Ok(aggregator.finish())
    }

    async fn totals_by_org(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(OrgId, UsageTotals)>, StoreError> {
        // No row-level security here: each organization's totals by the exact sums of
        // `aggregate`, in organization id order.
        let orgs: Vec<Uuid> =
            sqlx::query_scalar("SELECT DISTINCT organization_id FROM usage_records ORDER BY 1")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        let query = UsageQuery {
            from: Some(from),
            to: Some(to),
            ..UsageQuery::default()
        };
        let mut out = Vec::new();
        for org in orgs {
            let org = OrgId::from_uuid(org);
            if let Some(row) = self.aggregate(org, &query, &[]).await?.into_iter().next() {
                out.push((org, row.totals));
            }
        }
        Ok(out)
    }

    fn stream(
        &self,
        org: OrgId,
        query: UsageQuery,
    ) -> BoxStream<'static, Result<UsageRecord, StoreError>> {
        let pool = self.pool.clone();
        let query = std::sync::Arc::new(query);
        shared::paged_stream(move |after| {
            let pool = pool.clone();
            let query = std::sync::Arc::clone(&query);
            async move { page(&pool, org, &query, after, shared::STREAM_PAGE).await }
        })
    }
}
