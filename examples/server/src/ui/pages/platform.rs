//! `/admin/users`: the platform's people for operators: search and page through them,
//! deactivate and reactivate them, grant and revoke super admin. The pages call the
//! `/api/users` handlers (`manage_users` on the platform), so they refuse what the API refuses
//! (the last active super admin stays one: a 409 shown as a message).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use stratai_core::UserId;
use stratai_core::access::{Action, Resource};
use stratai_core::directory::PlatformRole;

use crate::api::users::{self, ListUsers, UpdateUser};
use crate::api::{ApiPath, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::ui::view::{CheckedForm, Chrome, Notice, UiError, Viewer, render, see_other};

/// People on one page of `/admin/users`.
const PEOPLE_PAGE: u32 = 25;

/// One person on the platform.
struct PersonLine {
    id: String,
    email: String,
    name: String,
    super_admin: bool,
    active: bool,
    orgs: String,
    is_viewer: bool,
}

#[derive(Template)]
#[template(path = "ui/admin_users.html")]
struct PeoplePage {
    chrome: Chrome,
    people: Vec<PersonLine>,
    search: String,
    /// The link to the next page, when there is one.
    next: Option<String>,
    /// Whether this is a later page (a link back to the first).
    later: bool,
}

/// Query of `GET /admin/users`.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct PeopleQuery {
    #[serde(default)]
    search: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    done: Option<String>,
}

fn people_notice(done: Option<&str>) -> Option<Notice> {
    Some(Notice::ok(match done? {
        "deactivated" => {
            "The person was deactivated: their sessions, tokens and keys stop working."
        }
        "reactivated" => "The person was reactivated.",
        "granted" => "The person is now a super admin.",
        "revoked" => "The person is no longer a super admin.",
        _ => return None,
    }))
}

/// The `/admin/users` link with this search (and page start), query-encoded.
fn people_link(search: &str, after: Option<&str>) -> String {
    let mut pairs = Vec::new();
    if !search.is_empty() {
        pairs.push(("search", search));
    }
    if let Some(a) = after {
        pairs.push(("after", a));
    }
    match serde_urlencoded::to_string(&pairs) {
        Ok(q) if !q.is_empty() => format!("/admin/users?{q}"),
        _ => "/admin/users".to_owned(),
    }
}

/// `GET /admin/users`: everyone on the platform in email order, a page at a time, searchable
/// by email or name (`GET /api/users`), with their organizations and the actions.
pub(crate) async fn users(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<PeopleQuery>,
) -> Result<Response, UiError> {
    let notice = people_notice(q.done.as_deref());
    let page = people_page(&state, &viewer, q.search, q.after, notice).await?;
    render(StatusCode::OK, &page)
}

async fn people_page(
    state: &AppState,
    viewer: &Viewer,
    search: Option<String>,
    after: Option<String>,
    notice: Option<Notice>,
) -> Result<PeoplePage, UiError> {
    let search = search.unwrap_or_default().trim().to_owned();
    let after = after.filter(|a| !a.is_empty());
    let listed = users::list(
        State(state.clone()),
        viewer.caller.clone(),
        ApiQuery(ListUsers {
            search: Some(search.clone()).filter(|s| !s.is_empty()),
            after: after.clone(),
            limit: Some(PEOPLE_PAGE),
        }),
    )
    .await;
    let (page, notice) = match listed {
        Ok(ApiJson(page)) => (page, notice),
        // A search the API refuses (too long, control characters) is said, not a 400 page.
        Err(ApiError::Validation(fields)) => (
            users::UserPage {
                users: Vec::new(),
                next_after: None,
            },
            Some(Notice::error(format!(
                "The search was refused: {}",
                fields
                    .iter()
                    .map(|f| format!("{} {}", f.path, f.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
        ),
        Err(e) => return Err(e.into()),
    };
    let dir = &state.stores.directory;
    let names: HashMap<_, _> = dir
        .list_orgs()
        .await?
        .into_iter()
        .map(|o| (o.id, o.name))
        .collect();
    let mut people = Vec::with_capacity(page.users.len());
    for user in page.users {
        let orgs = dir
            .memberships_of_user(user.id)
            .await?
            .into_iter()
            .map(|m| {
                format!(
                    "{} ({})",
                    names
                        .get(&m.org_id)
                        .cloned()
                        .unwrap_or_else(|| m.org_id.to_string()),
                    m.role.as_str()
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        people.push(PersonLine {
            id: user.id.to_string(),
            email: user.email.as_str().to_owned(),
            name: user.name.clone().unwrap_or_default(),
            super_admin: user.is_super_admin(),
            active: user.active,
            is_viewer: user.id == viewer.id(),
            orgs,
        });
    }
    Ok(PeoplePage {
        chrome: viewer.chrome("/admin/users", notice),
        people,
        next: page
            .next_after
            .as_deref()
            .map(|a| people_link(&search, Some(a))),
        later: after.is_some(),
        search,
    })
}

/// `POST /admin/users/{user_id}`: one change (`PATCH /api/users/{user_id}`): the form's
/// `change` is `deactivate`, `reactivate`, `grant` or `revoke`.
pub(crate) async fn update_user(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(user_id): ApiPath<UserId>,
    form: CheckedForm,
) -> Result<Response, UiError> {
    allow(&viewer.caller, Action::ManageUsers, Resource::Platform)?;
    let change = form.text("change");
    let (req, done) = match change.as_str() {
        "deactivate" => (
            UpdateUser {
                active: Some(false),
                platform_role: None,
            },
            "deactivated",
        ),
        "reactivate" => (
            UpdateUser {
                active: Some(true),
                platform_role: None,
            },
            "reactivated",
        ),
        "grant" => (
            UpdateUser {
                active: None,
                platform_role: Some(PlatformRole::SuperAdmin),
            },
            "granted",
        ),
        "revoke" => (
            UpdateUser {
                active: None,
                platform_role: Some(PlatformRole::User),
            },
            "revoked",
        ),
        _ => {
            return Err(ApiError::invalid(
                "change",
                "must be `deactivate`, `reactivate`, `grant` or `revoke`",
            )
            .into());
        }
    };
    let back = people_link(&form.text("search"), None);
    let sep = if back.contains('?') { '&' } else { '?' };
    match users::update(
        State(state.clone()),
        viewer.caller.clone(),
        ApiPath(user_id),
        ApiJson(req),
    )
    .await
    {
        Ok(_) => Ok(see_other(&format!("{back}{sep}done={done}"))),
        // The last active super admin: the store's refusal, shown on the list.
        Err(ApiError::Conflict(reason)) => {
            let page = people_page(
                &state,
                &viewer,
                Some(form.text("search")),
                None,
                Some(Notice::error(format!("Not changed: {reason}."))),
            )
            .await?;
            render(StatusCode::CONFLICT, &page)
        }
        Err(e) => Err(e.into()),
    }
}

/// One section of the settings page.
struct SettingsSection {
    title: &'static str,
    lines: Vec<(&'static str, String)>,
}

#[derive(Template)]
#[template(path = "ui/admin_settings.html")]
struct SettingsPage {
    chrome: Chrome,
    sections: Vec<SettingsSection>,
}

/// `GET /admin/settings`: the effective configuration, read-only, secrets masked where it is
/// built ([`crate::config::Config::summary`]); operators only (`manage_orgs`, as every
/// `/admin` page).
pub(crate) async fn settings(
    State(state): State<AppState>,
    viewer: Viewer,
) -> Result<Response, UiError> {
    allow(&viewer.caller, Action::ManageOrgs, Resource::Platform)?;
    let mut sections: Vec<SettingsSection> = Vec::new();
    for line in state.settings.iter() {
        match sections.last_mut() {
            Some(s) if s.title == line.section => s.lines.push((line.name, line.value.clone())),
            _ => sections.push(SettingsSection {
                title: line.section,
                lines: vec![(line.name, line.value.clone())],
            }),
        }
    }
    let page = SettingsPage {
        chrome: viewer.chrome("/admin/settings", None),
        sections,
    };
    render(StatusCode::OK, &page)
}
