//! `/org/{org_id}/settings`: the organization's name, billing contact and settings
//! (`PATCH /api/organizations/{org_id}`, `update_org_settings`).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use stratai_core::access::{Action, Resource};
use stratai_core::directory::{OrgSettings, Organization};
use stratai_core::{OrgId, TierSlug};

use super::org::{org_of, tier_slugs};
use crate::api::orgs::{self, UpdateOrg};
use crate::api::{ApiPath, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::ui::view::{
    CheckedForm, Chrome, FieldErrors, ListQuery, Notice, UiError, Viewer, render, see_other,
};

/// The form, as stored or as typed.
struct SettingsForm {
    name: String,
    billing_email: String,
    timezone: String,
    default_tier: String,
    allowed: Vec<String>,
    max_users_per_group: String,
    require_mfa: bool,
}

impl SettingsForm {
    fn of(org: &Organization) -> Self {
        Self {
            name: org.name.clone(),
            billing_email: org
                .billing_email
                .as_ref()
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default(),
            timezone: org.settings.timezone.clone().unwrap_or_default(),
            default_tier: org.settings.default_tier.as_str().to_owned(),
            allowed: org
                .settings
                .allowed_tiers
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            max_users_per_group: org.settings.max_users_per_group.to_string(),
            require_mfa: org.settings.require_mfa,
        }
    }
}

#[derive(Template)]
#[template(path = "ui/org_settings.html")]
struct SettingsPage {
    chrome: Chrome,
    org: Organization,
    form: SettingsForm,
    tier_choices: Vec<String>,
    errors: FieldErrors,
}

async fn settings_page(
    state: &AppState,
    viewer: &Viewer,
    org_id: OrgId,
    notice: Option<Notice>,
) -> Result<SettingsPage, UiError> {
    allow(
        &viewer.caller,
        Action::UpdateOrgSettings,
        Resource::Org(org_id),
    )?;
    let org = org_of(state, org_id).await?;
    Ok(SettingsPage {
        chrome: viewer.chrome(&format!("/org/{org_id}/settings"), notice),
        form: SettingsForm::of(&org),
        tier_choices: tier_slugs(state).await?,
        errors: FieldErrors::default(),
        org,
    })
}

/// `GET /org/{org_id}/settings`.
pub(crate) async fn settings(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let page = settings_page(&state, &viewer, org_id, q.notice()).await?;
    render(StatusCode::OK, &page)
}

/// `POST /org/{org_id}/settings`.
pub(crate) async fn save(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
    form: CheckedForm,
) -> Result<Response, UiError> {
    let mut page = settings_page(&state, &viewer, org_id, None).await?;
    let typed = SettingsForm {
        name: form.text("name"),
        billing_email: form.text("billing_email"),
        timezone: form.text("timezone"),
        default_tier: form.text("default_tier"),
        allowed: form.all("allowed_tiers"),
        max_users_per_group: form.text("max_users_per_group"),
        require_mfa: form.text("require_mfa") == "on",
    };
    let mut errors = FieldErrors::default();
    if typed.name.is_empty() {
        errors.add("name", "give the organization a name");
    }
    if !typed.timezone.is_empty() && typed.timezone.parse::<chrono_tz::Tz>().is_err() {
        errors.add("timezone", "an IANA timezone such as Europe/Berlin");
    }
    let max = typed.max_users_per_group.parse::<u32>().ok();
    if max.is_none() {
        errors.add("max_users_per_group", "a whole number");
    }
    let mut allowed = Vec::new();
    for t in &typed.allowed {
        match TierSlug::new(t) {
            Ok(s) => allowed.push(s),
            Err(e) => errors.add("allowed_tiers", e.reason),
        }
    }
    let default_tier = match TierSlug::new(&typed.default_tier) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.add("default_tier", e.reason);
            None
        }
    };
    if let (Some(max), Some(default_tier), true) = (max, default_tier, errors.is_empty()) {
        let result = orgs::update(
            State(state.clone()),
            viewer.caller.clone(),
            ApiPath(org_id),
            ApiJson(UpdateOrg {
                name: Some(typed.name.clone()),
                settings: Some(OrgSettings {
                    allowed_tiers: allowed,
                    default_tier,
                    max_users_per_group: max,
                    require_mfa: typed.require_mfa,
                    timezone: (!typed.timezone.is_empty()).then(|| typed.timezone.clone()),
                    // not on this page (a super admin sets them through the API): kept
                    signup_domains: page.org.settings.signup_domains.clone(),
                }),
                billing_email: Some(
                    (!typed.billing_email.is_empty()).then(|| typed.billing_email.clone()),
                ),
                billing_plan: None,
                active: None,
            }),
        )
        .await;
        match result {
            Ok(_) => {
                return Ok(see_other(&format!(
                    "/org/{org_id}/settings?done=settings_saved"
                )));
            }
            Err(ApiError::Validation(fields)) => errors = FieldErrors::from_leaf_fields(&fields),
            Err(e) => return Err(e.into()),
        }
    }
    page.chrome.notice = Some(Notice::error("The settings were not saved: see the form."));
    page.form = typed;
    page.errors = errors;
    render(StatusCode::UNPROCESSABLE_ENTITY, &page)
}
