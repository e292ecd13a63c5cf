//! [`UsageStore`] on PostgreSQL: batch append through `UNNEST` (one statement per chunk,
//! idempotent on `(organization_id, request_id)`), aggregation in SQL over the
//! `(organization_id, created_at)` index, export streamed by keyset pages.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use chrono::NaiveDate;
use futures::stream::BoxStream;
use rust_decimal::Decimal;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use stratai_core::ports::{AppendOutcome, UsageStore};
use stratai_core::usage::{
    AggregateRow, Dimension, DimensionValue, UsageQuery, UsageRecord, UsageTotals,
};
use stratai_core::{Money, OrgId, RequestId, StoreError};
use uuid::Uuid;

use super::rows::{self, get};
use super::{PgStore, same_tenant};
use crate::error::{corrupt, db};
use crate::shared::{self, enum_text, micros};

/// Records per `INSERT ... SELECT FROM unnest(...)` statement.
const CHUNK: usize = 10_000;

/// The references a chunk's records make: each unique once.
struct References {
    users: Vec<Uuid>,
    groups: Vec<Uuid>,
    tiers: Vec<Uuid>,
}

impl References {
    fn of(records: &[UsageRecord]) -> Self {
        Self {
            users: unique(records.iter().map(|r| r.user_id.as_uuid())),
            groups: unique(
                records
                    .iter()
                    .filter_map(|r| r.group_id.map(|g| g.as_uuid())),
            ),
            tiers: unique(
                records
                    .iter()
                    .filter_map(|r| r.tier_id.map(|t| t.as_uuid())),
            ),
        }
    }
}

/// The first missing reference, in record order: the organization, then each record's user,
/// group (in the tenant: other tenants' groups are invisible under RLS) and tier. `found`
/// is the statement's answer: whether the organization exists and which ids do.
fn missing_reference(
    org: OrgId,
    records: &[UsageRecord],
    found: &sqlx::postgres::PgRow,
) -> Result<(), StoreError> {
    if !get::<bool>(found, "org")? {
        return Err(StoreError::not_found("organization", org));
    }
    let users: HashSet<Uuid> = get::<Vec<Uuid>>(found, "users")?.into_iter().collect();
    let groups: HashSet<Uuid> = get::<Vec<Uuid>>(found, "groups")?.into_iter().collect();
    let tiers: HashSet<Uuid> = get::<Vec<Uuid>>(found, "tiers")?.into_iter().collect();
    for record in records {
        if !users.contains(&record.user_id.as_uuid()) {
            return Err(StoreError::not_found("user", record.user_id));
        }
        if let Some(group) = record.group_id
            && !groups.contains(&group.as_uuid())
        {
            return Err(StoreError::not_found("group", group));
        }
        if let Some(tier) = record.tier_id
            && !tiers.contains(&tier.as_uuid())
        {
            return Err(StoreError::not_found("tier", tier));
        }
    }
    Ok(())
}

fn unique(ids: impl Iterator<Item = Uuid>) -> Vec<Uuid> {
    let set: HashSet<Uuid> = ids.collect();
    set.into_iter().collect()
}

/// Inserts one chunk if every record's references exist (one statement: the check and the
/// insert together, one round trip); returns how many rows were new, or the first missing
/// reference (then nothing was inserted).
async fn insert_chunk(
    conn: &mut PgConnection,
    org: OrgId,
    records: &[UsageRecord],
) -> Result<u64, StoreError> {
    let n = records.len();
    let mut request_ids = Vec::with_capacity(n);
    let mut group_ids = Vec::with_capacity(n);
    let mut user_ids = Vec::with_capacity(n);
    let mut tier_ids = Vec::with_capacity(n);
    let mut models = Vec::with_capacity(n);
    let mut inputs = Vec::with_capacity(n);
    let mut outputs = Vec::with_capacity(n);
    let mut provider = Vec::with_capacity(n);
    let mut billed = Vec::with_capacity(n);
    let mut overage = Vec::with_capacity(n);
    let mut litellm = Vec::with_capacity(n);
    let mut conversations = Vec::with_capacity(n);
    let mut endpoints = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut leases = Vec::with_capacity(n);
    for r in records {
        request_ids.push(r.request_id.as_uuid());
        group_ids.push(r.group_id.map(|g| g.as_uuid()));
        user_ids.push(r.user_id.as_uuid());
        tier_ids.push(r.tier_id.map(|t| t.as_uuid()));
        models.push(r.model.as_str());
        inputs.push(i64::from(r.input_tokens));
        outputs.push(i64::from(r.output_tokens));
        provider.push(r.provider_cost.amount());
        billed.push(r.billed_amount.amount());
        overage.push(r.overage.amount());
        litellm.push(r.litellm_request_id.as_deref());
        conversations.push(r.conversation_id.map(|c| c.as_uuid()));
        endpoints.push(r.endpoint.as_str());
        statuses.push(enum_text(&r.status)?);
        created.push(micros(r.created_at));
        leases.push(r.lease_id.map(|l| l.as_uuid()));
    }
    let refs = References::of(records);
    // `refs` is evaluated once; the insert runs only when every reference was found.
    let row = sqlx::query(
        "WITH refs AS (
             SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1) AS org,
                    ARRAY(SELECT id FROM users WHERE id = ANY($16)) AS users,
                    ARRAY(SELECT id FROM groups WHERE id = ANY($17)) AS groups,
                    ARRAY(SELECT id FROM model_tiers WHERE id = ANY($18)) AS tiers
         ), inserted AS (
             INSERT INTO usage_records (organization_id, request_id, group_id, user_id, tier_id,
                 model, input_tokens, output_tokens, provider_cost, billed_amount,
                 litellm_request_id, conversation_id, endpoint, status, created_at, overage,
                 lease_id)
             SELECT $1, u.* FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[],
                 $6::text[], $7::int8[], $8::int8[], $9::numeric[], $10::numeric[], $11::text[],
                 $12::uuid[], $13::text[], $14::text[], $15::timestamptz[], $19::numeric[],
                 $20::uuid[]) AS u
             WHERE (SELECT org
                        AND cardinality(users) = cardinality($16::uuid[])
                        AND cardinality(groups) = cardinality($17::uuid[])
                        AND cardinality(tiers) = cardinality($18::uuid[])
                    FROM refs)
             ON CONFLICT (organization_id, request_id) DO NOTHING
             RETURNING 1
         )
         SELECT refs.org, refs.users, refs.groups, refs.tiers,
                (SELECT count(*) FROM inserted)::int8 AS inserted
         FROM refs",
    )
    .bind(org.as_uuid())
    .bind(&request_ids)
    .bind(&group_ids)
    .bind(&user_ids)
    .bind(&tier_ids)
    .bind(&models)
    .bind(&inputs)
    .bind(&outputs)
    .bind(&provider)
    .bind(&billed)
    .bind(&litellm)
    .bind(&conversations)
    .bind(&endpoints)
    .bind(&statuses)
    .bind(&created)
    .bind(&refs.users)
    .bind(&refs.groups)
    .bind(&refs.tiers)
    .bind(&overage)
    .bind(&leases)
    .fetch_one(conn)
    .await
    .map_err(db)?;
    missing_reference(org, records, &row)?;
    let inserted: i64 = get(&row, "inserted")?;
    u64::try_from(inserted).map_err(|e| corrupt("inserted", e))
}

/// Appends the query's conditions (the organization is already bound).
fn push_filters(qb: &mut QueryBuilder<Postgres>, query: &UsageQuery) {
    if let Some(from) = query.from {
        qb.push(" AND created_at >= ").push_bind(from);
    }
    if let Some(to) = query.to {
        qb.push(" AND created_at < ").push_bind(to);
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
}

/// Whether the hourly rollup (`usage_hourly`, kept by triggers on `usage_records`) holds the
/// answer: no filter but the time window, both ends on whole UTC hours, grouped by nothing
/// finer than the organization and the UTC day.
fn rollup_answers(query: &UsageQuery, group_by: &[Dimension]) -> bool {
    let whole_hour = |at: Option<chrono::DateTime<chrono::Utc>>| {
        at.is_none_or(|t| t.timestamp().rem_euclid(3600) == 0 && t.timestamp_subsec_nanos() == 0)
    };
    query.group_id.is_none()
        && query.user_id.is_none()
        && query.tier_id.is_none()
        && query.model.is_none()
        && whole_hour(query.from)
        && whole_hour(query.to)
        && group_by
            .iter()
            .all(|d| matches!(d, Dimension::Org | Dimension::Day))
}

/// The SQL expression of a dimension (fixed text, never input).
fn dimension_sql(dimension: Dimension) -> &'static str {
    match dimension {
        Dimension::Org => "organization_id",
        Dimension::Group => "group_id",
        Dimension::User => "user_id",
        Dimension::Tier => "tier_id",
        Dimension::Model => "model",
        Dimension::Endpoint => "endpoint",
        Dimension::Day => "(created_at AT TIME ZONE 'UTC')::date",
    }
}

fn dimension_value(
    row: &sqlx::postgres::PgRow,
    column: &str,
    dimension: Dimension,
) -> Result<DimensionValue, StoreError> {
    Ok(match dimension {
        Dimension::Org => DimensionValue::Org(get::<Uuid>(row, column)?.into()),
        Dimension::Group => {
            DimensionValue::Group(get::<Option<Uuid>>(row, column)?.map(Into::into))
        }
        Dimension::User => DimensionValue::User(get::<Uuid>(row, column)?.into()),
        Dimension::Tier => DimensionValue::Tier(get::<Option<Uuid>>(row, column)?.map(Into::into)),
        Dimension::Model => {
            let model: String = get(row, column)?;
            DimensionValue::Model(
                stratai_core::ModelId::new(model).map_err(|e| corrupt("model", e))?,
            )
        }
        Dimension::Endpoint => DimensionValue::Endpoint(get(row, column)?),
        Dimension::Day => DimensionValue::Day(get::<NaiveDate>(row, column)?),
    })
}

fn count(row: &sqlx::postgres::PgRow, column: &str) -> Result<u64, StoreError> {
    let value: i64 = get(row, column)?;
    u64::try_from(value).map_err(|e| corrupt(column, e))
}

fn sum(row: &sqlx::postgres::PgRow, column: &str) -> Result<Money, StoreError> {
    let value: Decimal = get(row, column)?;
    Money::new(value).map_err(|e| corrupt(column, e))
}

impl PgStore {
    /// Up to `limit` matching records strictly after `after`, oldest first.
    async fn usage_page(
        &self,
        org: OrgId,
        query: &UsageQuery,
        after: Option<shared::Cursor>,
        limit: u32,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let mut qb = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            usage_columns!(),
            " FROM usage_records WHERE organization_id = "
        ));
        qb.push_bind(org.as_uuid());
        push_filters(&mut qb, query);
        if let Some((at, request)) = after {
            qb.push(" AND (created_at, request_id) > (")
                .push_bind(at)
                .push(", ")
                .push_bind(request.as_uuid())
                .push(")");
        }
        qb.push(" ORDER BY created_at, request_id LIMIT ")
            .push_bind(i64::from(limit));
        let found = qb.build().fetch_all(&mut *tx).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        found.iter().map(rows::usage).collect()
    }
}

#[async_trait]
impl UsageStore for PgStore {
    async fn append(
        &self,
        org: OrgId,
        records: &[UsageRecord],
    ) -> Result<AppendOutcome, StoreError> {
        for record in records {
            same_tenant(org, record.org_id, "usage record")?;
        }
        if records.is_empty() {
            return Ok(AppendOutcome::default());
        }
        let mut tx = self.tenant(org).await?;
        let mut inserted = 0;
        for chunk in records.chunks(CHUNK) {
            inserted += insert_chunk(&mut tx, org, chunk).await?;
        }
        tx.commit().await.map_err(db)?;
        let total = u64::try_from(records.len()).unwrap_or(u64::MAX);
        Ok(AppendOutcome {
            inserted,
            duplicates: total - inserted,
        })
    }

    async fn charged_under_lease(
        &self,
        org: OrgId,
        lease: RequestId,
    ) -> Result<(Money, u64), StoreError> {
        let mut tx = self.tenant(org).await?;
        let found = sqlx::query(concat!(
            "SELECT ",
            usage_columns!(),
            " FROM usage_records WHERE organization_id = $1 AND lease_id = $2"
        ))
        .bind(org.as_uuid())
        .bind(lease.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        found.iter().try_fold((Money::ZERO, 0), |(sum, n), row| {
            Ok((sum + rows::usage(row)?.charged(), n + 1))
        })
    }

    async fn get(&self, org: OrgId, request_id: RequestId) -> Result<UsageRecord, StoreError> {
        let mut tx = self.tenant(org).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            usage_columns!(),
            " FROM usage_records WHERE organization_id = $1 AND request_id = $2"
        ))
        .bind(org.as_uuid())
        .bind(request_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("usage record", request_id))?;
        tx.commit().await.map_err(db)?;
        rows::usage(&row)
    }

    async fn query(
        &self,
        org: OrgId,
        query: &UsageQuery,
        limit: u32,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        self.usage_page(org, query, None, limit).await
    }

    async fn aggregate(
        &self,
        org: OrgId,
        query: &UsageQuery,
        group_by: &[Dimension],
    ) -> Result<Vec<AggregateRow>, StoreError> {
        let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
        if rollup_answers(query, group_by) {
            // Whole hours, no filter but time, grouped by nothing finer than a UTC day: the
            // hourly rollup has the same totals in far fewer rows.
            for (i, dimension) in group_by.iter().enumerate() {
                let sql = match dimension {
                    Dimension::Day => "(hour AT TIME ZONE 'UTC')::date",
                    _ => "organization_id",
                };
                qb.push(sql).push(format_args!(" AS d{i}, "));
            }
            qb.push(
                "coalesce(sum(requests), 0)::int8 AS requests,
                 coalesce(sum(input_tokens), 0)::int8 AS input_tokens,
                 coalesce(sum(output_tokens), 0)::int8 AS output_tokens,
                 coalesce(sum(provider_cost), 0) AS provider_cost,
                 coalesce(sum(billed_amount), 0) AS billed_amount
                 FROM usage_hourly WHERE organization_id = ",
            );
            qb.push_bind(org.as_uuid());
            if let Some(from) = query.from {
                qb.push(" AND hour >= ").push_bind(from);
            }
            if let Some(to) = query.to {
                qb.push(" AND hour < ").push_bind(to);
            }
        } else {
            for (i, dimension) in group_by.iter().enumerate() {
                qb.push(dimension_sql(*dimension))
                    .push(format_args!(" AS d{i}, "));
            }
            qb.push(
                "count(*)::int8 AS requests,
                 coalesce(sum(input_tokens), 0)::int8 AS input_tokens,
                 coalesce(sum(output_tokens), 0)::int8 AS output_tokens,
                 coalesce(sum(provider_cost), 0) AS provider_cost,
                 coalesce(sum(billed_amount), 0) AS billed_amount
                 FROM usage_records WHERE organization_id = ",
            );
            qb.push_bind(org.as_uuid());
            push_filters(&mut qb, query);
        }
        if !group_by.is_empty() {
            qb.push(" GROUP BY ");
            for i in 0..group_by.len() {
                if i > 0 {
                    qb.push(", ");
                }
                qb.push(format_args!("{}", i + 1));
            }
        }
        let mut tx = self.tenant(org).await?;
        let found = qb.build().fetch_all(&mut *tx).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        // Sorted by key, as every backend returns them.
        let mut out: BTreeMap<Vec<DimensionValue>, UsageTotals> = BTreeMap::new();
        for row in &found {
            let totals = UsageTotals {
                requests: count(row, "requests")?,
                input_tokens: count(row, "input_tokens")?,
                output_tokens: count(row, "output_tokens")?,
                provider_cost: sum(row, "provider_cost")?,
                billed_amount: sum(row, "billed_amount")?,
            };
            if totals.requests == 0 {
                continue;
            }
            let key = group_by
                .iter()
                .enumerate()
                .map(|(i, d)| dimension_value(row, &format!("d{i}"), *d))
                .collect::<Result<Vec<_>, _>>()?;
            out.insert(key, totals);
        }
        Ok(out
            .into_iter()
            .map(|(key, totals)| AggregateRow { key, totals })
            .collect())
    }

    async fn totals_by_org(
        &self,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(OrgId, UsageTotals)>, StoreError> {
        // A platform function: the hourly rollup's whole hours and the records of the partial
        // hours at either end, per organization (RLS would scope a plain query to one).
        let found = sqlx::query(
            "SELECT organization_id, requests, input_tokens, output_tokens, provider_cost,
                    billed_amount
             FROM stratai_usage_totals_by_org($1, $2)",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        found
            .iter()
            .map(|row| {
                Ok((
                    OrgId::from_uuid(get::<Uuid>(row, "organization_id")?),
                    UsageTotals {
                        requests: count(row, "requests")?,
                        input_tokens: count(row, "input_tokens")?,
                        output_tokens: count(row, "output_tokens")?,
                        provider_cost: sum(row, "provider_cost")?,
                        billed_amount: sum(row, "billed_amount")?,
                    },
                ))
            })
            .collect()
    }

    async fn aggregate_each(
        &self,
        org: OrgId,
        query: &UsageQuery,
        sets: &[Vec<Dimension>],
    ) -> Result<Vec<Vec<AggregateRow>>, StoreError> {
        if sets.len() < 2 || sets.iter().all(|set| rollup_answers(query, set)) {
            let mut out = Vec::with_capacity(sets.len());
            for set in sets {
                out.push(self.aggregate(org, query, set).await?);
            }
            return Ok(out);
        }
        // One scan of the records: every dimension any list names is a column, `GROUPING(...)`
        // tells which list a row answers (bit set = that column aggregated away).
        let mut dims: Vec<Dimension> = sets.iter().flatten().copied().collect();
        dims.sort();
        dims.dedup();
        let mask_of = |set: &[Dimension]| -> i64 {
            dims.iter().enumerate().fold(0, |mask, (i, d)| {
                if set.contains(d) {
                    mask
                } else {
                    mask | (1 << (dims.len() - 1 - i))
                }
            })
        };
        let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
        for (i, d) in dims.iter().enumerate() {
            qb.push(dimension_sql(*d)).push(format_args!(" AS c{i}, "));
        }
        if dims.is_empty() {
            qb.push("0::int8 AS g, ");
        } else {
            qb.push("GROUPING(");
            for (i, d) in dims.iter().enumerate() {
                if i > 0 {
                    qb.push(", ");
                }
                qb.push(dimension_sql(*d));
            }
            qb.push(")::int8 AS g, ");
        }
        qb.push(
            "count(*)::int8 AS requests,
             coalesce(sum(input_tokens), 0)::int8 AS input_tokens,
             coalesce(sum(output_tokens), 0)::int8 AS output_tokens,
             coalesce(sum(provider_cost), 0) AS provider_cost,
             coalesce(sum(billed_amount), 0) AS billed_amount
             FROM usage_records WHERE organization_id = ",
        );
        qb.push_bind(org.as_uuid());
        push_filters(&mut qb, query);
        qb.push(" GROUP BY GROUPING SETS (");
        for (n, set) in sets.iter().enumerate() {
            if n > 0 {
                qb.push(", ");
            }
            qb.push("(");
            for (i, d) in set.iter().enumerate() {
                if i > 0 {
                    qb.push(", ");
                }
                qb.push(dimension_sql(*d));
            }
            qb.push(")");
        }
        qb.push(")");
        let mut tx = self.tenant(org).await?;
        let found = qb.build().fetch_all(&mut *tx).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        let mut out: Vec<BTreeMap<Vec<DimensionValue>, UsageTotals>> =
            vec![BTreeMap::new(); sets.len()];
        for row in &found {
            let totals = UsageTotals {
                requests: count(row, "requests")?,
                input_tokens: count(row, "input_tokens")?,
                output_tokens: count(row, "output_tokens")?,
                provider_cost: sum(row, "provider_cost")?,
                billed_amount: sum(row, "billed_amount")?,
            };
            if totals.requests == 0 {
                continue;
            }
            let g: i64 = get(row, "g")?;
            // A list named twice is answered once by PostgreSQL per grouping set: every list
            // with this mask gets the row.
            for (n, set) in sets.iter().enumerate() {
                if mask_of(set) != g {
                    continue;
                }
                let key = set
                    .iter()
                    .map(|d| {
                        let i = dims.iter().position(|x| x == d).unwrap_or_default();
                        dimension_value(row, &format!("c{i}"), *d)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                out[n].insert(key, totals.clone());
            }
        }
        Ok(out
            .into_iter()
            .map(|rows| {
                rows.into_iter()
                    .map(|(key, totals)| AggregateRow { key, totals })
                    .collect()
            })
            .collect())
    }

    fn stream(
        &self,
        org: OrgId,
        query: UsageQuery,
    ) -> BoxStream<'static, Result<UsageRecord, StoreError>> {
        let store = self.clone();
        let query = std::sync::Arc::new(query);
        shared::paged_stream(move |after| {
            let store = store.clone();
            let query = std::sync::Arc::clone(&query);
            async move {
                store
                    .usage_page(org, &query, after, shared::STREAM_PAGE)
                    .await
            }
        })
    }
}
