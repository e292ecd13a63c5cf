//! Usage: totals grouped by dimensions (days are the organization's local days), and the
//! record export as CSV or JSON (streamed, never materialized).

use axum::body::{Body, Bytes};
use axum::extract::State;

use axum::response::Response;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::Deserialize;
use stratai_core::access::{Action, Resource};
use stratai_core::usage::UsageQuery;
pub use stratai_core::usage::report::UsageSummary;
use stratai_core::usage::report::{check_period, parse_dimensions};
use stratai_core::{GroupId, ModelId, OrgId, TierId, UserId};
use stratai_store::admin::usage as report;

use super::{Caller, allow, attachment};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};

/// Query of `GET /api/usage` and `GET /api/usage/export`. The scope is the organization,
/// narrowed to a group and/or a user; each narrowing is authorized on its own (a member may
/// read their own usage, a group lead their group's, admins everything in their organization).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// Organization (default: the caller's only one).
    #[serde(default)]
    pub org_id: Option<OrgId>,
    /// Inclusive start (RFC 3339).
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    /// Exclusive end (RFC 3339).
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
    /// Only this group.
    #[serde(default)]
    pub group_id: Option<GroupId>,
    /// Only this user.
    #[serde(default)]
    pub user_id: Option<UserId>,
    /// Only this tier.
    #[serde(default)]
    pub tier_id: Option<TierId>,
    /// Only this model.
    #[serde(default)]
    pub model: Option<ModelId>,
    /// Comma-separated dimensions: org, group, user, tier, model, endpoint, day (the
    /// organization's local day).
    #[serde(default)]
    pub group_by: Option<String>,
    /// The export's format (`/api/usage/export` only): `csv` (default) or `json` (one array
    /// of records, amounts as decimal strings).
    #[serde(default)]
    pub format: Option<ExportFormat>,
}

/// The format of `GET /api/usage/export`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// Core's usage CSV (a header line, one row per record).
    #[default]
    Csv,
    /// A JSON array of usage records.
    Json,
}

async fn authorize_scope(
    state: &AppState,
    caller: &Caller,
    p: &UsageParams,
) -> Result<(OrgId, UsageQuery), ApiError> {
    let org_id = caller.org_or_only(p.org_id)?;
    check_period(p.from, p.to)?;
    match (p.group_id, p.user_id) {
        (None, None) => allow(caller, Action::ViewOrgUsage, Resource::Org(org_id))?,
        (group, user) => {
            if let Some(group_id) = group {
                allow(
                    caller,
                    Action::ViewGroupUsage,
                    Resource::Group { org_id, group_id },
                )?;
                state.stores.directory.get_group(org_id, group_id).await?;
            }
            if let Some(user_id) = user {
                allow(
                    caller,
                    Action::ViewMemberUsage,
                    Resource::Member { org_id, user_id },
                )?;
            }
        }
    }
    Ok((
        org_id,
        UsageQuery {
            from: p.from,
            to: p.to,
            group_id: p.group_id,
            user_id: p.user_id,
            tier_id: p.tier_id,
            model: p.model.clone(),
        },
    ))
}

/// Usage totals grouped by the requested dimensions.
pub async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<UsageParams>,
) -> Result<ApiJson<UsageSummary>, ApiError> {
    if p.format.is_some() {
        return Err(ApiError::invalid(
            "format",
            "totals are JSON; `format` is for /api/usage/export",
        ));
    }
    let group_by = parse_dimensions(p.group_by.as_deref())?;
    let (org_id, query) = authorize_scope(&state, &caller, &p).await?;
    let stores = &state.stores;
    Ok(ApiJson(
        report::summary(
            stores.directory.as_ref(),
            stores.usage.as_ref(),
            org_id,
            query,
            group_by,
        )
        .await?,
    ))
}

/// One CSV line (core's column order and formatting, shared with every other export).
fn csv_line<I, T>(fields: I) -> Result<Bytes, ApiError>
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    stratai_core::usage::report::csv_line(fields)
        .map(Bytes::from)
        .map_err(ApiError::internal)
}

/// The matching usage records as CSV, streamed from the store row by row.
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<UsageParams>,
) -> Result<Response, ApiError> {
    if p.group_by.is_some() {
        return Err(ApiError::invalid(
            "group_by",
            "the export lists records; use /api/usage for totals",
        ));
    }
    let (org_id, query) = authorize_scope(&state, &caller, &p).await?;
    if p.format == Some(ExportFormat::Json) {
        return Ok(json_export(&state, org_id, query));
    }
    let rows = state.stores.usage.stream(org_id, query).map(|item| {
        item.map_err(ApiError::from)
            .and_then(|r| csv_line(stratai_core::usage::csv_row(&r)))
            .map_err(|e| {
                tracing::error!(error = %e, "usage export aborted");
                std::io::Error::other("usage export failed")
            })
    });
    let body = futures::stream::once(async {
        csv_line(stratai_core::usage::CSV_HEADER).map_err(|e| std::io::Error::other(e.to_string()))
    })
    .chain(rows);
    Ok(attachment(
        Body::from_stream(body),
        "text/csv; charset=utf-8",
        "usage.csv",
    ))
}

/// The matching usage records as one JSON array (the records' serde form, as core's
/// `write_json`), streamed from the store record by record.
fn json_export(state: &AppState, org_id: OrgId, query: UsageQuery) -> Response {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    // `[` opens the array with the first record; the end closes it, or writes `[]` when
    // nothing matched.
    let started = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&started);
    let records = state.stores.usage.stream(org_id, query).map(move |item| {
        item.map_err(ApiError::from)
            .and_then(|r| {
                let first = !seen.swap(true, Ordering::Relaxed);
                let mut bytes = if first { b"[".to_vec() } else { b",".to_vec() };
                serde_json::to_writer(&mut bytes, &r).map_err(ApiError::internal)?;
                Ok(Bytes::from(bytes))
            })
            .map_err(|e| {
                tracing::error!(error = %e, "usage export aborted");
                std::io::Error::other("usage export failed")
            })
    });
    let end = futures::stream::once(async move {
        Ok::<_, std::io::Error>(Bytes::from_static(if started.load(Ordering::Relaxed) {
            b"]"
        } else {
            b"[]"
        }))
    });
    attachment(
        Body::from_stream(records.chain(end)),
        "application/json",
        "usage.json",
    )
}
