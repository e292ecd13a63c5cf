//! `/org/{org_id}/users/...`: one member's detail (role, groups, tiers, monthly budget,
//! profile; change and remove) and the bulk invitation from a CSV upload. Each page calls the
//! admin API handler of the route it mirrors, so it asks what that route asks.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use stratai_core::access::{Action, Resource};
use stratai_core::directory::{OrgRole, Organization};
use stratai_core::{OrgId, ProfileId, TierSlug, UserId};

use super::org::{org_of, tier_slugs};
use crate::api::invitations::{self, BulkOutcome};
use crate::api::members::{self, UpdateMember};
use crate::api::tiers::{self, AccessibleQuery, AccessibleTiers};
use crate::api::{ApiPath, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::ui::view::{
    CheckedForm, CheckedUpload, Chrome, Done, FieldErrors, Notice, UiError, Viewer, done_notice,
    local_time, money_field, render, see_other,
};

/// A group the member is in.
struct GroupLine {
    id: String,
    name: String,
    role: String,
    tiers: String,
}

/// A profile the member may be given.
struct ProfileChoice {
    id: String,
    name: String,
}

#[derive(Template)]
#[template(path = "ui/org_user.html")]
struct UserPage {
    chrome: Chrome,
    org: Organization,
    user_id: UserId,
    email: String,
    name: String,
    joined: String,
    groups: Vec<GroupLine>,
    access: AccessibleTiers,
    profile_name: Option<String>,
    profiles: Vec<ProfileChoice>,
    tier_choices: Vec<String>,
    // The form, as stored or as typed.
    role: String,
    budget: String,
    profile: String,
    chosen: Vec<String>,
    errors: FieldErrors,
}

async fn user_page(
    state: &AppState,
    viewer: &Viewer,
    org_id: OrgId,
    user_id: UserId,
    notice: Option<Notice>,
) -> Result<UserPage, UiError> {
    // Mirrors `PATCH /api/organizations/{org_id}/members/{user_id}` (`manage_members` on the
    // member): another organization's ids answer 404, a member's 403.
    allow(
        &viewer.caller,
        Action::ManageMembers,
        Resource::Member { org_id, user_id },
    )?;
    let dir = &state.stores.directory;
    let member = dir.get_member(org_id, user_id).await?;
    let user = dir.get_user(user_id).await?;
    let org = org_of(state, org_id).await?;
    let groups = dir
        .groups_of_member(org_id, user_id)
        .await?
        .into_iter()
        .map(|(g, role)| GroupLine {
            id: g.id.to_string(),
            name: g.name,
            role: format!("{role:?}").to_lowercase(),
            tiers: g.allowed_tiers.as_ref().map_or_else(
                || "all of the organization's".to_owned(),
                |t| {
                    t.iter()
                        .map(TierSlug::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ),
        })
        .collect();
    // The tiers this member may use now, as `GET /api/tiers/accessible?user_id=` answers.
    let ApiJson(access) = tiers::accessible(
        State(state.clone()),
        viewer.caller.clone(),
        ApiQuery(AccessibleQuery {
            org_id: Some(org_id),
            user_id: Some(user_id),
        }),
    )
    .await?;
    let profiles = dir.list_profiles().await?;
    let profile_name = member
        .profile_id
        .and_then(|p| profiles.iter().find(|x| x.id == p).map(|x| x.name.clone()));
    Ok(UserPage {
        chrome: viewer.chrome(&format!("/org/{org_id}/users"), notice),
        user_id,
        email: user.email.as_str().to_owned(),
        name: user.name.unwrap_or_default(),
        joined: local_time(&org, member.joined_at),
        groups,
        access,
        profile_name,
        profiles: profiles
            .into_iter()
            .map(|p| ProfileChoice {
                id: p.id.to_string(),
                name: p.name,
            })
            .collect(),
        tier_choices: tier_slugs(state).await?,
        role: member.role.as_str().to_owned(),
        budget: member
            .monthly_budget
            .map(|b| b.amount().to_string())
            .unwrap_or_default(),
        profile: member.profile_id.map(|p| p.to_string()).unwrap_or_default(),
        chosen: member
            .allowed_tiers
            .unwrap_or_default()
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        errors: FieldErrors::default(),
        org,
    })
}

/// `GET /org/{org_id}/users/{user_id}`: the member's role, groups, tiers, budget and profile.
pub(crate) async fn user(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((org_id, user_id)): ApiPath<(OrgId, UserId)>,
    Query(done): Query<Done>,
) -> Result<Response, UiError> {
    let page = user_page(
        &state,
        &viewer,
        org_id,
        user_id,
        done_notice(done.done.as_deref()),
    )
    .await?;
    render(StatusCode::OK, &page)
}

fn parse_role(text: &str) -> Option<OrgRole> {
    match text {
        "member" => Some(OrgRole::Member),
        "admin" => Some(OrgRole::Admin),
        "owner" => Some(OrgRole::Owner),
        _ => None,
    }
}

/// `POST /org/{org_id}/users/{user_id}`: changes the role, tier restriction, monthly budget
/// and profile (`PATCH /api/organizations/{org_id}/members/{user_id}`).
pub(crate) async fn update_user(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((org_id, user_id)): ApiPath<(OrgId, UserId)>,
    form: CheckedForm,
) -> Result<Response, UiError> {
    let role_text = form.text("role");
    let budget_text = form.text("monthly_budget");
    let profile_text = form.text("profile_id");
    let chosen = form.all("tiers");
    let mut errors = FieldErrors::default();
    let role = parse_role(&role_text);
    if role.is_none() {
        errors.add("role", "choose member, admin or owner");
    }
    let budget = money_field(&budget_text, "monthly_budget", &mut errors);
    let profile = if profile_text.is_empty() {
        None
    } else {
        match profile_text.parse::<ProfileId>() {
            Ok(p) => Some(p),
            Err(_) => {
                errors.add("profile_id", "choose a profile from the list");
                None
            }
        }
    };
    let mut tiers = Vec::new();
    for t in &chosen {
        match TierSlug::new(t) {
            Ok(s) => tiers.push(s),
            Err(e) => errors.add("tiers", e.reason),
        }
    }
    let mut refused = None;
    if errors.is_empty() {
        let result = members::update(
            State(state.clone()),
            viewer.caller.clone(),
            ApiPath((org_id, user_id)),
            ApiJson(UpdateMember {
                role,
                allowed_tiers: Some((!tiers.is_empty()).then_some(tiers)),
                monthly_budget: Some(budget),
                profile_id: Some(profile),
            }),
        )
        .await;
        match result {
            Ok(_) => {
                return Ok(see_other(&format!(
                    "/org/{org_id}/users/{user_id}?done=member_updated"
                )));
            }
            Err(ApiError::Validation(fields)) => errors = FieldErrors::from_fields(&fields),
            Err(ApiError::Conflict(reason)) => refused = Some(reason),
            Err(e) => return Err(e.into()),
        }
    }
    let notice = Notice::error(match refused {
        Some(reason) => format!("The member was not saved: {reason}."),
        None => "The member was not saved: see the form.".to_owned(),
    });
    // The page asks the route's authorization again, so a refused form shows nothing more.
    let mut page = user_page(&state, &viewer, org_id, user_id, Some(notice)).await?;
    page.errors = errors;
    page.role = role_text;
    page.budget = budget_text;
    page.profile = profile_text;
    page.chosen = chosen;
    render(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

/// `POST /org/{org_id}/users/{user_id}/remove`: removes the member from the organization
/// (`DELETE /api/organizations/{org_id}/members/{user_id}`).
pub(crate) async fn remove_user(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((org_id, user_id)): ApiPath<(OrgId, UserId)>,
    _form: CheckedForm,
) -> Result<Response, UiError> {
    match members::remove(
        State(state.clone()),
        viewer.caller.clone(),
        ApiPath((org_id, user_id)),
    )
    .await
    {
        Ok(_) => Ok(see_other(&format!(
            "/org/{org_id}/users?done=member_removed"
        ))),
        Err(ApiError::Conflict(reason)) => {
            let page = user_page(
                &state,
                &viewer,
                org_id,
                user_id,
                Some(Notice::error(format!(
                    "The member was not removed: {reason}."
                ))),
            )
            .await?;
            render(StatusCode::CONFLICT, &page)
        }
        Err(e) => Err(e.into()),
    }
}

/// One row of a bulk invitation's results.
struct BulkLine {
    row: usize,
    email: String,
    status: &'static str,
    token: String,
    problems: Vec<String>,
}

#[derive(Template)]
#[template(path = "ui/org_bulk.html")]
struct BulkPage {
    chrome: Chrome,
    org: Organization,
    created: usize,
    already: usize,
    lines: Vec<BulkLine>,
    errors: FieldErrors,
}

/// The per-row lines of a refused upload: `rows[3].email` errors under row 3.
fn refused_rows(fields: &[crate::error::FieldError]) -> (Vec<BulkLine>, FieldErrors) {
    let mut rows: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut whole = FieldErrors::default();
    for f in fields {
        let row = f
            .path
            .strip_prefix("rows[")
            .and_then(|r| r.split(']').next())
            .and_then(|n| n.parse::<usize>().ok());
        match row {
            Some(n) => {
                let field = f.path.split("].").nth(1).unwrap_or("row");
                rows.entry(n)
                    .or_default()
                    .push(format!("{field}: {}", f.message));
            }
            None => whole.add("file", f.message.clone()),
        }
    }
    let lines = rows
        .into_iter()
        .map(|(row, problems)| BulkLine {
            row,
            email: String::new(),
            status: "invalid",
            token: String::new(),
            problems,
        })
        .collect();
    (lines, whole)
}

/// `POST /org/{org_id}/users/bulk`: invites everyone in an uploaded CSV (`email[,role
/// [,groups]]` with a header row), exactly as `POST /api/organizations/{org_id}/members` with
/// `text/csv`: all rows are checked first, and one bad row writes nothing.
pub(crate) async fn bulk_invite(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
    upload: CheckedUpload,
) -> Result<Response, UiError> {
    allow(&viewer.caller, Action::ManageMembers, Resource::Org(org_id))?;
    let org = org_of(&state, org_id).await?;
    let chrome = |notice| viewer.chrome(&format!("/org/{org_id}/users"), Some(notice));
    let mut errors = FieldErrors::default();
    let text = match &upload.file {
        None => {
            errors.add("file", "choose a CSV file");
            None
        }
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(t) => Some(t.to_owned()),
            Err(_) => {
                errors.add("file", "the file is not UTF-8 text");
                None
            }
        },
    };
    let outcome = match text {
        Some(text) => invitations::bulk_invite(&state, &viewer.caller, org_id, &text).await,
        None => Err(ApiError::Validation(Vec::new())),
    };
    match outcome {
        Ok(BulkOutcome {
            created,
            resent,
            already_member,
            rows,
        }) => {
            let page = BulkPage {
                chrome: chrome(Notice::ok(format!(
                    "{created} invitations created, {resent} sent again, {already_member} already members."
                ))),
                org,
                created,
                already: already_member,
                lines: rows
                    .into_iter()
                    .map(|r| BulkLine {
                        row: r.row,
                        status: match r.status.as_str() {
                            "created" => "created",
                            "resent" => "sent again",
                            _ => "already a member",
                        },
                        email: r.email,
                        token: r.token.unwrap_or_default(),
                        problems: Vec::new(),
                    })
                    .collect(),
                errors,
            };
            render(StatusCode::OK, &page)
        }
        Err(ApiError::Validation(fields)) => {
            let (lines, whole) = refused_rows(&fields);
            if errors.is_empty() {
                errors = whole;
            }
            let page = BulkPage {
                chrome: chrome(Notice::error(
                    "Nothing was invited: fix the rows below and upload the file again.",
                )),
                org,
                created: 0,
                already: 0,
                lines,
                errors,
            };
            render(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FieldError;

    #[test]
    fn refused_rows_are_grouped_by_row_and_whole_file_errors_go_on_the_file_field() {
        let (lines, whole) = refused_rows(&[
            FieldError::new("rows[2].email", "bad email"),
            FieldError::new("rows[2].role", "unknown role `boss`"),
            FieldError::new("rows[1].groups", "unknown group `x`"),
            FieldError::new("csv", "no data rows"),
        ]);
        assert_eq!(lines.iter().map(|l| l.row).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(
            lines[1].problems,
            vec!["email: bad email", "role: unknown role `boss`"]
        );
        assert_eq!(whole.get("file"), Some("no data rows"));
    }
}
