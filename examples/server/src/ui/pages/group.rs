//! `/org/{org_id}/groups/{group_id}`: one group: its members (add, remove), its tier
//! restriction, budget and description, and its deletion. Each form calls the handler of the
//! admin API route it mirrors (`/api/groups/{group_id}...`).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use stratai_core::access::{Action, Resource};
use stratai_core::directory::{GroupRole, Organization};
use stratai_core::{GroupId, OrgId, TierSlug, UserId};

use super::org::{org_of, tier_slugs};
use crate::api::groups::{self, AddGroupMember, UpdateGroup};
use crate::api::{ApiPath, allow, group_org};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::ui::view::{
    CheckedForm, Chrome, FieldErrors, ListQuery, Notice, Pager, UiError, Viewer, local_time, money,
    money_field, paginate, render, see_other,
};

/// The group's organization must be the one in the path: a group of another organization
/// answers exactly like a missing one, and the path's organization is checked by the route's
/// own authorization (`manage_groups` on the group).
async fn check_group(
    state: &AppState,
    viewer: &Viewer,
    org_id: OrgId,
    group_id: GroupId,
) -> Result<(), UiError> {
    allow(&viewer.caller, Action::ViewOrg, Resource::Org(org_id))?;
    if group_org(state, group_id).await? != org_id {
        return Err(ApiError::NotFound("group".to_owned()).into());
    }
    allow(
        &viewer.caller,
        Action::ManageGroups,
        Resource::Group { org_id, group_id },
    )?;
    Ok(())
}

/// A member of the group.
struct MemberLine {
    id: String,
    email: String,
    role: String,
    joined: String,
}

/// Someone of the organization who may be added.
struct Candidate {
    id: String,
    email: String,
}

#[derive(Template)]
#[template(path = "ui/org_group.html")]
struct GroupPage {
    chrome: Chrome,
    org: Organization,
    group_id: GroupId,
    name: String,
    created: String,
    members: Vec<MemberLine>,
    pager: Pager,
    candidates: Vec<Candidate>,
    tier_choices: Vec<String>,
    // The settings form, as stored or as typed.
    description: String,
    budget: String,
    budget_shown: String,
    chosen: Vec<String>,
    errors: FieldErrors,
}

async fn group_page(
    state: &AppState,
    viewer: &Viewer,
    org_id: OrgId,
    group_id: GroupId,
    notice: Option<Notice>,
    page: usize,
) -> Result<GroupPage, UiError> {
    check_group(state, viewer, org_id, group_id).await?;
    let dir = &state.stores.directory;
    let group = dir.get_group(org_id, group_id).await?;
    let org = org_of(state, org_id).await?;
    let in_group = dir.list_group_members(org_id, group_id).await?;
    // One lookup of the members' users; it answers in the order asked (members are distinct).
    let ids: Vec<UserId> = in_group.iter().map(|m| m.user_id).collect();
    let users = dir.get_users(&ids).await?;
    let mut members = Vec::with_capacity(in_group.len());
    for (m, user) in in_group.iter().zip(users) {
        members.push(MemberLine {
            id: m.user_id.to_string(),
            email: user.email.as_str().to_owned(),
            role: match m.role {
                GroupRole::Lead => "lead".to_owned(),
                other => format!("{other:?}").to_lowercase(),
            },
            joined: local_time(&org, m.joined_at),
        });
    }
    members.sort_by(|a, b| a.email.cmp(&b.email));
    let (members, pager) = paginate(members, page, &format!("/org/{org_id}/groups/{group_id}"));
    let candidates = super::org::member_emails(state, org_id)
        .await?
        .into_iter()
        .filter(|(id, _)| !in_group.iter().any(|g| g.user_id == *id))
        .map(|(id, email)| Candidate {
            id: id.to_string(),
            email,
        })
        .collect();
    Ok(GroupPage {
        chrome: viewer.chrome(&format!("/org/{org_id}/groups"), notice),
        group_id,
        name: group.name,
        created: local_time(&org, group.created_at),
        members,
        pager,
        candidates,
        tier_choices: tier_slugs(state).await?,
        description: group.description.unwrap_or_default(),
        budget: group
            .monthly_budget
            .map(|b| b.amount().to_string())
            .unwrap_or_default(),
        budget_shown: group
            .monthly_budget
            .map_or_else(|| "none".to_owned(), |b| money(b.amount())),
        chosen: group
            .allowed_tiers
            .unwrap_or_default()
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        errors: FieldErrors::default(),
        org,
    })
}

/// `GET /org/{org_id}/groups/{group_id}`.
pub(crate) async fn group(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((org_id, group_id)): ApiPath<(OrgId, GroupId)>,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let page = group_page(&state, &viewer, org_id, group_id, q.notice(), q.page()).await?;
    render(StatusCode::OK, &page)
}

/// `POST /org/{org_id}/groups/{group_id}`: the tier restriction, monthly budget and
/// description (`PATCH /api/groups/{group_id}`).
pub(crate) async fn update_group(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((org_id, group_id)): ApiPath<(OrgId, GroupId)>,
    form: CheckedForm,
) -> Result<Response, UiError> {
    check_group(&state, &viewer, org_id, group_id).await?;
    let description = form.text("description");
    let budget_text = form.text("monthly_budget");
    let chosen = form.all("tiers");
    let mut errors = FieldErrors::default();
    let budget = money_field(&budget_text, "monthly_budget", &mut errors);
    let mut tiers = Vec::new();
    for t in &chosen {
        match TierSlug::new(t) {
            Ok(s) => tiers.push(s),
            Err(e) => errors.add("tiers", e.reason),
        }
    }
    if errors.is_empty() {
        let result = groups::update(
            State(state.clone()),
            viewer.caller.clone(),
            ApiPath(group_id),
            ApiJson(UpdateGroup {
                name: None,
                description: Some(Some(description.clone())),
                allowed_tiers: Some((!tiers.is_empty()).then_some(tiers)),
                monthly_budget: Some(budget),
            }),
        )
        .await;
        match result {
            Ok(_) => {
                return Ok(see_other(&format!(
                    "/org/{org_id}/groups/{group_id}?done=group_updated"
                )));
            }
            Err(ApiError::Validation(fields)) => errors = FieldErrors::from_fields(&fields),
            Err(e) => return Err(e.into()),
        }
    }
    let mut page = group_page(
        &state,
        &viewer,
        org_id,
        group_id,
        Some(Notice::error("The group was not saved: see the form.")),
        1,
    )
    .await?;
    page.errors = errors;
    page.description = description;
    page.budget = budget_text;
    page.chosen = chosen;
    render(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

/// `POST /org/{org_id}/groups/{group_id}/members`: adds a member of the organization
/// (`POST /api/groups/{group_id}/members`).
pub(crate) async fn add_member(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((org_id, group_id)): ApiPath<(OrgId, GroupId)>,
    form: CheckedForm,
) -> Result<Response, UiError> {
    check_group(&state, &viewer, org_id, group_id).await?;
    let mut errors = FieldErrors::default();
    let user = form.text("user_id").parse::<UserId>().ok();
    let role = match form.text("role").as_str() {
        "lead" => GroupRole::Lead,
        _ => GroupRole::Member,
    };
    let mut refused = None;
    match user {
        None => errors.add("user_id", "choose a person"),
        Some(user_id) => {
            match groups::add_member(
                State(state.clone()),
                viewer.caller.clone(),
                ApiPath(group_id),
                ApiJson(AddGroupMember {
                    user_id,
                    role: Some(role),
                }),
            )
            .await
            {
                Ok(_) => {
                    return Ok(see_other(&format!(
                        "/org/{org_id}/groups/{group_id}?done=group_member_added"
                    )));
                }
                Err(ApiError::Validation(fields)) => errors = FieldErrors::from_fields(&fields),
                Err(ApiError::Conflict(reason)) => refused = Some(reason),
                Err(e) => return Err(e.into()),
            }
        }
    }
    let notice = Notice::error(match refused {
        Some(reason) => format!("The person was not added: {reason}."),
        None => "The person was not added: see the form.".to_owned(),
    });
    let mut page = group_page(&state, &viewer, org_id, group_id, Some(notice), 1).await?;
    page.errors = errors;
    render(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

/// `POST /org/{org_id}/groups/{group_id}/members/{user_id}/remove`
/// (`DELETE /api/groups/{group_id}/members/{user_id}`).
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((org_id, group_id, user_id)): ApiPath<(OrgId, GroupId, UserId)>,
    _form: CheckedForm,
) -> Result<Response, UiError> {
    check_group(&state, &viewer, org_id, group_id).await?;
    groups::remove_member(
        State(state.clone()),
        viewer.caller.clone(),
        ApiPath((group_id, user_id)),
    )
    .await?;
    Ok(see_other(&format!(
        "/org/{org_id}/groups/{group_id}?done=group_member_removed"
    )))
}

/// `POST /org/{org_id}/groups/{group_id}/delete` (`DELETE /api/groups/{group_id}`).
pub(crate) async fn delete_group(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((org_id, group_id)): ApiPath<(OrgId, GroupId)>,
    _form: CheckedForm,
) -> Result<Response, UiError> {
    check_group(&state, &viewer, org_id, group_id).await?;
    groups::delete(
        State(state.clone()),
        viewer.caller.clone(),
        ApiPath(group_id),
    )
    .await?;
    Ok(see_other(&format!(
        "/org/{org_id}/groups?done=group_deleted"
    )))
}
