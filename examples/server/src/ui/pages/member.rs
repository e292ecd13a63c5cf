//! `/app`: a member's home. The model selector's data (accessible tiers, locked ones with the
//! reason and the upsell), the member's own usage this period, and a playground that sends a
//! chat through the governed gateway in this process, exactly as `POST /v1/chat/completions`.

use askama::Template;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::Response;
use chrono::Utc;
use serde::Deserialize;
use stratai_core::OrgId;
use stratai_core::budget::BudgetPeriod;
use stratai_core::directory::Organization;
use tower::ServiceExt as _;

use crate::api::tiers::{AccessibleQuery, AccessibleTiers};
use crate::api::usage::{UsageParams, UsageSummary};
use crate::api::{tiers, usage};
use crate::app::AppState;
use crate::extract::{ApiJson, ApiQuery};
use crate::ui::view::{CheckedForm, Chrome, FieldErrors, UiError, Viewer, money, render};

/// Query of `/app`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AppQuery {
    /// Organization to act in (default: the first one).
    #[serde(default)]
    pub(crate) org_id: Option<OrgId>,
}

/// One row of the member's usage table.
struct UsageLine {
    model: String,
    requests: u64,
    tokens: u64,
    billed: String,
}

/// What the playground answered.
pub(crate) struct ChatOutcome {
    /// The model's answer, when it answered.
    pub(crate) answer: Option<String>,
    /// The billed cost of the answer.
    pub(crate) billed: Option<String>,
    /// Why it was refused, when it was.
    pub(crate) refusal: Option<String>,
    /// The refusal's machine code (`model_access_denied`, `insufficient_quota`, ...).
    pub(crate) code: Option<String>,
}

#[derive(Template)]
#[template(path = "ui/app.html")]
struct AppPage {
    chrome: Chrome,
    org: Option<Organization>,
    tiers: Option<AccessibleTiers>,
    usage: Vec<UsageLine>,
    total_billed: String,
    total_requests: u64,
    period: String,
    model: String,
    message: String,
    errors: FieldErrors,
    outcome: Option<ChatOutcome>,
}

/// `GET /app`.
pub(crate) async fn home(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<AppQuery>,
) -> Result<Response, UiError> {
    let page = page(&state, &viewer, q.org_id).await?;
    render(StatusCode::OK, &page)
}

async fn page(state: &AppState, viewer: &Viewer, org: Option<OrgId>) -> Result<AppPage, UiError> {
    let chrome = viewer.chrome("/app", None);
    let Some(org_id) = org.or_else(|| viewer.caller.actor.orgs.first().map(|g| g.org_id)) else {
        // Signed in but in no organization (a platform operator, or before an invitation
        // is accepted): an empty state, not an error.
        return Ok(AppPage {
            chrome,
            org: None,
            tiers: None,
            usage: Vec::new(),
            total_billed: money(rust_decimal::Decimal::ZERO),
            total_requests: 0,
            period: String::new(),
            model: String::new(),
            message: String::new(),
            errors: FieldErrors::default(),
            outcome: None,
        });
    };
    // The same call (and so the same authorization) as `GET /api/tiers/accessible`.
    let ApiJson(tiers) = tiers::accessible(
        State(state.clone()),
        viewer.caller.clone(),
        ApiQuery(AccessibleQuery {
            org_id: Some(org_id),
            user_id: None,
        }),
    )
    .await?;
    let org = state.stores.directory.get_org(org_id).await?;
    let window = BudgetPeriod::Monthly.window(Utc::now(), org.tz());
    let ApiJson(summary): ApiJson<UsageSummary> = usage::summary(
        State(state.clone()),
        viewer.caller.clone(),
        ApiQuery(UsageParams {
            org_id: Some(org_id),
            from: Some(window.start),
            to: Some(window.end),
            user_id: Some(viewer.id()),
            group_by: Some("model".to_owned()),
            ..UsageParams::default()
        }),
    )
    .await?;
    let usage = summary
        .rows
        .iter()
        .map(|r| UsageLine {
            model: r
                .key
                .first()
                .map(super::org::dimension_label)
                .unwrap_or_default(),
            requests: r.totals.requests,
            tokens: r.totals.input_tokens + r.totals.output_tokens,
            billed: money(r.totals.billed_amount.amount()),
        })
        .collect();
    let model = tiers
        .accessible
        .first()
        .and_then(|t| t.models.first())
        .map(ToString::to_string)
        .unwrap_or_default();
    Ok(AppPage {
        chrome,
        period: format!(
            "{} to {}",
            crate::ui::view::local_time(&org, window.start),
            crate::ui::view::local_time(&org, window.end)
        ),
        org: Some(org),
        tiers: Some(tiers),
        usage,
        total_billed: money(summary.totals.billed_amount.amount()),
        total_requests: summary.totals.requests,
        model,
        message: String::new(),
        errors: FieldErrors::default(),
        outcome: None,
    })
}

/// `POST /app/playground`: one chat through the governed gateway, answered on the page.
pub(crate) async fn playground(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    form: CheckedForm,
) -> Result<Response, UiError> {
    let org_id = form
        .optional("org_id")
        .and_then(|o| o.parse::<OrgId>().ok());
    let mut page = page(&state, &viewer, org_id).await?;
    let model = form.text("model");
    let message = form.text("message");
    let mut errors = FieldErrors::default();
    if model.is_empty() {
        errors.add("model", "choose a model");
    }
    if message.is_empty() {
        errors.add("message", "write a message");
    } else if message.chars().count() > 4000 {
        errors.add("message", "at most 4000 characters");
    }
    page.model.clone_from(&model);
    page.message.clone_from(&message);
    if !errors.is_empty() {
        page.errors = errors;
        return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
    }
    let Some(org) = &page.org else {
        return Err(crate::error::ApiError::NotFound("organization".to_owned()).into());
    };
    page.outcome = Some(chat(&state, &headers, org.id, &model, &message).await?);
    render(StatusCode::OK, &page)
}

/// Sends the chat through the gateway's own route, with the browser's credentials (session
/// cookie and origin, already checked by the form's CSRF wall), so authentication, model
/// access, guardrails, budgets, rate limits and usage recording are the API's.
async fn chat(
    state: &AppState,
    headers: &HeaderMap,
    org: OrgId,
    model: &str,
    message: &str,
) -> Result<ChatOutcome, UiError> {
    let Some(gateway) = state.gateway.clone() else {
        return Ok(ChatOutcome {
            answer: None,
            billed: None,
            refusal: Some("the gateway is not running on this server".to_owned()),
            code: None,
        });
    };
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": message}],
        "max_tokens": 256,
    });
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .header(crate::gateway::ORG_HEADER, org.to_string());
    for name in [header::COOKIE, header::ORIGIN, header::AUTHORIZATION] {
        for value in headers.get_all(&name) {
            request = request.header(name.clone(), value.clone());
        }
    }
    let request = request
        .body(Body::from(body.to_string()))
        .map_err(crate::error::ApiError::internal)?;
    let response = crate::gateway::router::<()>(gateway)
        .oneshot(request)
        .await
        .map_err(crate::error::ApiError::internal)?;
    let status = response.status();
    let billed = response
        .headers()
        .get(crate::gateway::BILLED_COST_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<rust_decimal::Decimal>().ok())
        .map(money);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .map_err(crate::error::ApiError::internal)?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if status.is_success() {
        Ok(ChatOutcome {
            answer: json["choices"][0]["message"]["content"]
                .as_str()
                .map(str::to_owned),
            billed,
            refusal: None,
            code: None,
        })
    } else {
        Ok(ChatOutcome {
            answer: None,
            billed: None,
            refusal: Some(
                json["error"]["message"]
                    .as_str()
                    .unwrap_or("the request was refused")
                    .to_owned(),
            ),
            code: json["error"]["code"].as_str().map(str::to_owned),
        })
    }
}
