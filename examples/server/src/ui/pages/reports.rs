//! `/org/{org_id}/usage` (the usage report: filters by period, person, model and group, the
//! totals as a chart and a paginated table, and the CSV download) and
//! `/org/{org_id}/billing` (this period's spend by tier; invoices when they exist). Both read
//! through `GET /api/usage` and `GET /api/usage/export`, with their authorization.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
use stratai_core::budget::BudgetPeriod;
use stratai_core::directory::Organization;
use stratai_core::{GroupId, ModelId, OrgId, UserId};

use super::org::{Breakdown, Labels, breakdown, org_of};
use crate::api::usage::{self, UsageParams};
use crate::api::{ApiPath, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::ui::view::{
    Chrome, FieldErrors, Pager, UiError, Viewer, local_time, money, paginate, render,
};

/// The report's filters as typed (every field text, so a bad value is an error on its field,
/// not a refused request).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub(crate) struct ReportQuery {
    /// First day, `YYYY-MM-DD`, in the organization's timezone (default: this month's first).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    from: String,
    /// Last day, inclusive (default: this month's last).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    to: String,
    /// A member's user id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    user: String,
    /// A model id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    model: String,
    /// A group id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    group: String,
    /// The breakdown: `day`, `user`, `model`, `group` or `tier`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    by: String,
    /// 1-based page of the table.
    #[serde(default, skip_serializing)]
    page: String,
}

/// Midnight starting `date` in `tz`, as an instant.
fn day_start(date: NaiveDate, tz: chrono_tz::Tz) -> DateTime<Utc> {
    let noon = date.and_hms_opt(12, 0, 0).unwrap_or_default();
    let at = tz
        .from_local_datetime(&noon)
        .earliest()
        .map_or_else(|| Utc.from_utc_datetime(&noon), |t| t.with_timezone(&Utc));
    BudgetPeriod::Daily.window(at, tz).start
}

/// The checked filters, as `GET /api/usage` takes them.
struct Filters {
    params: UsageParams,
    from_day: NaiveDate,
    to_day: NaiveDate,
    by: &'static str,
}

const BREAKDOWNS: [(&str, &str); 5] = [
    ("day", "Day (UTC)"),
    ("user", "Person"),
    ("model", "Model"),
    ("group", "Group"),
    ("tier", "Tier"),
];

fn filters(q: &ReportQuery, org: &Organization, errors: &mut FieldErrors) -> Option<Filters> {
    let tz = org.tz();
    let month = BudgetPeriod::Monthly.window(Utc::now(), tz);
    let day = |text: &str, field: &str, default: NaiveDate, errors: &mut FieldErrors| {
        if text.is_empty() {
            return Some(default);
        }
        match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            Ok(d) => Some(d),
            Err(_) => {
                errors.add(field, "a date as YYYY-MM-DD");
                None
            }
        }
    };
    let first = month.start.with_timezone(&tz).date_naive();
    let last = (month.end - chrono::Duration::seconds(1))
        .with_timezone(&tz)
        .date_naive();
    let from_day = day(&q.from, "from", first, errors);
    let to_day = day(&q.to, "to", last, errors);
    if let (Some(f), Some(t)) = (from_day, to_day)
        && t < f
    {
        errors.add("to", "the last day must not be before the first");
    }
    fn parse(text: &str) -> Option<&str> {
        (!text.is_empty()).then_some(text)
    }
    let user_id = match parse(&q.user).map(str::parse::<UserId>) {
        None => None,
        Some(Ok(u)) => Some(u),
        Some(Err(_)) => {
            errors.add("user", "choose a person from the list");
            None
        }
    };
    let group_id = match parse(&q.group).map(str::parse::<GroupId>) {
        None => None,
        Some(Ok(g)) => Some(g),
        Some(Err(_)) => {
            errors.add("group", "choose a group from the list");
            None
        }
    };
    let model = match parse(&q.model).map(ModelId::new) {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            errors.add("model", e.reason);
            None
        }
    };
    let by = match BREAKDOWNS.iter().find(|(k, _)| *k == q.by) {
        Some((k, _)) => k,
        None if q.by.is_empty() => "day",
        None => {
            errors.add("by", "choose a breakdown from the list");
            "day"
        }
    };
    let (from_day, to_day) = (from_day?, to_day?);
    if !errors.is_empty() {
        return None;
    }
    Some(Filters {
        params: UsageParams {
            org_id: Some(org.id),
            from: Some(day_start(from_day, tz)),
            to: Some(day_start(to_day.succ_opt().unwrap_or(to_day), tz)),
            group_id,
            user_id,
            tier_id: None,
            model,
            group_by: Some(by.to_owned()),
            format: None,
        },
        from_day,
        to_day,
        by,
    })
}

/// A choice of a filter's list.
struct Choice {
    value: String,
    label: String,
}

#[derive(Template)]
#[template(path = "ui/org_usage.html")]
struct UsagePage {
    chrome: Chrome,
    org: Organization,
    q: ReportQuery,
    errors: FieldErrors,
    people: Vec<Choice>,
    groups: Vec<Choice>,
    models: Vec<Choice>,
    breakdowns: Vec<Choice>,
    period: String,
    requests: u64,
    billed: String,
    provider: String,
    report: Option<Breakdown>,
    pager: Pager,
    csv_link: String,
}

/// `GET /org/{org_id}/usage`: the report (`GET /api/usage`, `view_org_usage`).
pub(crate) async fn report(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
    Query(mut q): Query<ReportQuery>,
) -> Result<Response, UiError> {
    allow(&viewer.caller, Action::ViewOrgUsage, Resource::Org(org_id))?;
    let org = org_of(&state, org_id).await?;
    let labels = Labels::of(&state, org_id).await?;
    let dir = &state.stores.directory;
    let people: Vec<Choice> = super::org::member_emails(&state, org_id)
        .await?
        .into_iter()
        .map(|(id, email)| Choice {
            value: id.to_string(),
            label: email,
        })
        .collect();
    let groups = dir
        .list_groups(org_id)
        .await?
        .into_iter()
        .map(|g| Choice {
            value: g.id.to_string(),
            label: g.name,
        })
        .collect();
    let models = state
        .stores
        .tiers
        .list_tiers()
        .await?
        .into_iter()
        .flat_map(|t| {
            let tier = t.name;
            t.models.into_iter().map(move |m| Choice {
                value: m.to_string(),
                label: format!("{m} ({tier})"),
            })
        })
        .collect();
    let mut errors = FieldErrors::default();
    let checked = filters(&q, &org, &mut errors);
    let page_no = q.page.parse().unwrap_or(1);
    let (mut requests, mut billed, mut provider, mut report, mut pager, mut period) = (
        0,
        money(rust_decimal::Decimal::ZERO),
        money(rust_decimal::Decimal::ZERO),
        None,
        Pager::default(),
        String::new(),
    );
    let mut csv_link = String::new();
    let status = match checked {
        None => StatusCode::UNPROCESSABLE_ENTITY,
        Some(f) => {
            q.from = f.from_day.to_string();
            q.to = f.to_day.to_string();
            q.by = f.by.to_owned();
            let result = usage::summary(
                State(state.clone()),
                viewer.caller.clone(),
                ApiQuery(f.params),
            )
            .await;
            match result {
                Ok(ApiJson(summary)) => {
                    requests = summary.totals.requests;
                    billed = money(summary.totals.billed_amount.amount());
                    provider = money(summary.totals.provider_cost.amount());
                    period = format!("{} to {} ({})", q.from, q.to, org.tz());
                    let query = serde_urlencoded::to_string(&q).unwrap_or_default();
                    let (rows, p) = paginate(
                        summary.rows,
                        page_no,
                        &format!("/org/{org_id}/usage?{query}"),
                    );
                    pager = p;
                    let heading = BREAKDOWNS
                        .iter()
                        .find(|(k, _)| *k == f.by)
                        .map_or("Breakdown", |(_, h)| h);
                    report = Some(breakdown(
                        &format!("By {}", heading.to_lowercase()),
                        heading,
                        &rows,
                        &labels,
                    ));
                    let mut export = q.clone();
                    export.by = String::new();
                    csv_link = format!(
                        "/org/{org_id}/usage.csv?{}",
                        serde_urlencoded::to_string(&export).unwrap_or_default()
                    );
                    StatusCode::OK
                }
                Err(ApiError::Validation(fields)) => {
                    errors = FieldErrors::from_fields(&fields);
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let page = UsagePage {
        chrome: viewer.chrome(&format!("/org/{org_id}/usage"), None),
        org,
        q,
        errors,
        people,
        groups,
        models,
        breakdowns: BREAKDOWNS
            .iter()
            .map(|(k, h)| Choice {
                value: (*k).to_owned(),
                label: (*h).to_owned(),
            })
            .collect(),
        period,
        requests,
        billed,
        provider,
        report,
        pager,
        csv_link,
    };
    render(status, &page)
}

/// `GET /org/{org_id}/usage.csv`: the records of the report's filters as CSV, streamed by
/// `GET /api/usage/export` (same authorization, same columns).
pub(crate) async fn export(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
    Query(q): Query<ReportQuery>,
) -> Result<Response, UiError> {
    allow(&viewer.caller, Action::ViewOrgUsage, Resource::Org(org_id))?;
    let org = org_of(&state, org_id).await?;
    let mut errors = FieldErrors::default();
    let Some(f) = filters(&q, &org, &mut errors) else {
        return Err(ApiError::Validation(
            ["from", "to", "user", "group", "model", "by"]
                .iter()
                .filter_map(|k| {
                    errors
                        .get(k)
                        .map(|m| crate::error::FieldError::new(*k, m.to_owned()))
                })
                .collect(),
        )
        .into());
    };
    let params = UsageParams {
        group_by: None,
        ..f.params
    };
    Ok(usage::export(
        State(state.clone()),
        viewer.caller.clone(),
        ApiQuery(params),
    )
    .await?)
}

/// One tier's line on the billing page.
struct TierLine {
    tier: String,
    requests: u64,
    billed: String,
}

#[derive(Template)]
#[template(path = "ui/org_billing.html")]
struct BillingPage {
    chrome: Chrome,
    org: Organization,
    plan: &'static str,
    billing_email: String,
    period: String,
    requests: u64,
    billed: String,
    lines: Vec<TierLine>,
    /// The invoice history; `None` when the viewer may not read invoices.
    invoices: Option<Vec<super::invoices::InvoiceLine>>,
}

/// `GET /org/{org_id}/billing`: this period's billed spend by tier (`GET /api/usage`,
/// `view_org_usage`) and the invoice history, each linking to the invoice
/// (`GET /api/organizations/{org_id}/invoices`, `view_billing`).
pub(crate) async fn billing(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<Response, UiError> {
    allow(&viewer.caller, Action::ViewOrgUsage, Resource::Org(org_id))?;
    let org = org_of(&state, org_id).await?;
    let window = BudgetPeriod::Monthly.window(Utc::now(), org.tz());
    let ApiJson(summary) = usage::summary(
        State(state.clone()),
        viewer.caller.clone(),
        ApiQuery(UsageParams {
            org_id: Some(org_id),
            from: Some(window.start),
            to: Some(window.end),
            group_by: Some("tier".to_owned()),
            ..UsageParams::default()
        }),
    )
    .await?;
    let labels = Labels::of(&state, org_id).await?;
    let invoices = super::invoices::history(&state, &viewer.caller, &org).await?;
    let page = BillingPage {
        invoices,
        chrome: viewer.chrome(&format!("/org/{org_id}/billing"), None),
        plan: org.billing_plan.as_str(),
        billing_email: org
            .billing_email
            .as_ref()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default(),
        period: format!(
            "{} to {}",
            local_time(&org, window.start),
            local_time(&org, window.end)
        ),
        requests: summary.totals.requests,
        billed: money(summary.totals.billed_amount.amount()),
        lines: summary
            .rows
            .iter()
            .map(|r| TierLine {
                tier: labels.of_row(r),
                requests: r.totals.requests,
                billed: money(r.totals.billed_amount.amount()),
            })
            .collect(),
        org,
    };
    render(StatusCode::OK, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_starts_at_local_midnight() {
        let date = NaiveDate::from_ymd_opt(2026, 7, 1).unwrap_or_default();
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap_or(chrono_tz::UTC);
        assert_eq!(
            day_start(date, berlin).to_rfc3339(),
            "2026-06-30T22:00:00+00:00"
        );
        assert_eq!(
            day_start(date, chrono_tz::UTC).to_rfc3339(),
            "2026-07-01T00:00:00+00:00"
        );
    }
}
