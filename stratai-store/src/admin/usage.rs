//! The usage report over the stores: totals of a filter grouped by dimensions, days being the
//! organization's local days. The pure parts are [`stratai_core::usage::report`].

use chrono_tz::Tz;
use futures::StreamExt as _;
use stratai_core::ports::{DirectoryStore, UsageStore};
use stratai_core::usage::report::{LocalDayGroups, UsageSummary};
use stratai_core::usage::{AggregateRow, Dimension, UsageQuery};
use stratai_core::{OrgId, StoreError};

/// Usage totals of `query` grouped by `group_by`, days being `tz`'s local days (the stores
/// group days in UTC, so local days of another zone are regrouped from the streamed records,
/// folded one by one).
pub async fn grouped(
    usage: &dyn UsageStore,
    org_id: OrgId,
    tz: Tz,
    query: &UsageQuery,
    group_by: &[Dimension],
) -> Result<Vec<AggregateRow>, StoreError> {
    if group_by.contains(&Dimension::Day) && tz != chrono_tz::UTC {
        let mut groups = LocalDayGroups::new(group_by, tz);
        let mut records = usage.stream(org_id, query.clone());
        while let Some(r) = records.next().await {
            groups.add(&r?);
        }
        Ok(groups.into_rows())
    } else {
        usage.aggregate(org_id, query, group_by).await
    }
}

/// `org_id`'s usage of `query` grouped by `group_by` (days in the organization's timezone),
/// with the totals over all rows.
pub async fn summary(
    directory: &dyn DirectoryStore,
    usage: &dyn UsageStore,
    org_id: OrgId,
    query: UsageQuery,
    group_by: Vec<Dimension>,
) -> Result<UsageSummary, StoreError> {
    let tz = directory.get_org(org_id).await?.tz();
    let rows = grouped(usage, org_id, tz, &query, &group_by).await?;
    let totals = usage
        .aggregate(org_id, &query, &[])
        .await?
        .into_iter()
        .next()
        .map(|r| r.totals)
        .unwrap_or_default();
    Ok(UsageSummary {
        org_id,
        query,
        group_by,
        timezone: tz.name().to_owned(),
        rows,
        totals,
    })
}
