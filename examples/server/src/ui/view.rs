//! What every page shares: the signed-in viewer, the page chrome (navigation by role, the
//! sign-out form, the message after an action), form parsing behind the CSRF check, and how
//! errors become pages.

use std::collections::HashMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use stratai_core::directory::{OrgRole, Organization};
use stratai_core::{OrgId, UserId};

use super::csrf;
use crate::api::Caller;
use crate::app::AppState;
use crate::error::{ApiError, FieldError};

/// A link of the navigation.
#[derive(Clone, Debug)]
pub(crate) struct NavLink {
    /// Text.
    pub(crate) label: String,
    /// Target.
    pub(crate) href: String,
    /// Whether it starts another area (platform, organization, own models).
    pub(crate) starts_area: bool,
}

/// The message shown after an action.
#[derive(Clone, Debug)]
pub(crate) struct Notice {
    /// Success (`true`) or failure.
    pub(crate) ok: bool,
    /// The text.
    pub(crate) text: String,
}

impl Notice {
    /// A success message.
    pub(crate) fn ok(text: impl Into<String>) -> Self {
        Self {
            ok: true,
            text: text.into(),
        }
    }

    /// A failure message.
    pub(crate) fn error(text: impl Into<String>) -> Self {
        Self {
            ok: false,
            text: text.into(),
        }
    }
}

/// The page frame: who is signed in, what they may open, the form token.
#[derive(Clone, Debug, Default)]
pub(crate) struct Chrome {
    /// The signed-in person's email (`None` on the sign-in page).
    pub(crate) email: Option<String>,
    /// The CSRF token of this browser's forms.
    pub(crate) csrf: String,
    /// Links this person may follow.
    pub(crate) nav: Vec<NavLink>,
    /// Path of the current page (marks its link).
    pub(crate) current: String,
    /// The message after an action.
    pub(crate) notice: Option<Notice>,
}

impl Chrome {
    /// Whether `href` is the current page.
    pub(crate) fn is_current(&self, href: &str) -> bool {
        self.current == href
    }
}

/// The signed-in person viewing a page: the admin API's [`Caller`] and their page chrome.
#[derive(Clone, Debug)]
pub(crate) struct Viewer {
    /// The caller, for authorization and for calling the API's handlers.
    pub(crate) caller: Caller,
    /// The frame of their pages.
    pub(crate) chrome: Chrome,
}

impl Viewer {
    /// The organizations this person administers (owner or admin), in membership order.
    pub(crate) fn admin_orgs(&self) -> Vec<OrgId> {
        admin_orgs(&self.caller)
    }

    /// The chrome with the current page set and an optional notice.
    pub(crate) fn chrome(&self, current: &str, notice: Option<Notice>) -> Chrome {
        Chrome {
            current: current.to_owned(),
            notice,
            ..self.chrome.clone()
        }
    }

    /// The viewer's user id.
    pub(crate) fn id(&self) -> UserId {
        self.caller.id()
    }
}

fn admin_orgs(caller: &Caller) -> Vec<OrgId> {
    caller
        .actor
        .orgs
        .iter()
        .filter(|g| matches!(g.role, OrgRole::Owner | OrgRole::Admin))
        .map(|g| g.org_id)
        .collect()
}

/// Where a person lands after sign-in: the platform overview for super admins, their first
/// administered organization's dashboard for org owners and admins, else the member home.
pub(crate) fn home_of(caller: &Caller) -> String {
    if caller.is_super_admin() {
        return "/admin".to_owned();
    }
    match admin_orgs(caller).first() {
        Some(org) => format!("/org/{org}"),
        None => "/app".to_owned(),
    }
}

/// The navigation a person may follow: only what their roles allow.
fn nav_for(caller: &Caller) -> Vec<NavLink> {
    let link = |label: &str, href: String| NavLink {
        label: label.to_owned(),
        href,
        starts_area: false,
    };
    let mut nav = Vec::new();
    if caller.is_super_admin() {
        nav.push(link("Platform", "/admin".to_owned()));
        nav.push(link("Organizations", "/admin/organizations".to_owned()));
        nav.push(link("Modules", "/admin/modules".to_owned()));
        nav.push(link("People", "/admin/users".to_owned()));
        nav.push(link("Platform billing", "/admin/billing".to_owned()));
        nav.push(link("Global guardrails", "/admin/guardrails".to_owned()));
        nav.push(link("Platform settings", "/admin/settings".to_owned()));
    }
    if let Some(org) = admin_orgs(caller).first() {
        nav.push(NavLink {
            starts_area: !nav.is_empty(),
            ..link("Dashboard", format!("/org/{org}"))
        });
        nav.push(link("Users", format!("/org/{org}/users")));
        nav.push(link("Groups", format!("/org/{org}/groups")));
        nav.push(link("Model access", format!("/org/{org}/access")));
        nav.push(link("Usage", format!("/org/{org}/usage")));
        nav.push(link("Guardrails", format!("/org/{org}/guardrails")));
        nav.push(link("Explain", format!("/org/{org}/explain")));
        nav.push(link("Billing", format!("/org/{org}/billing")));
        nav.push(link("Settings", format!("/org/{org}/settings")));
    }
    if !caller.actor.orgs.is_empty() {
        nav.push(NavLink {
            starts_area: !nav.is_empty(),
            ..link("My models", "/app".to_owned())
        });
    }
    nav
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = UiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        // A bearer-token caller has no cookie and so no form token: they can read pages, and
        // every form they post is refused.
        let csrf = csrf::binding(&state.auth, &parts.headers)
            .map(|c| csrf::token_for(&c))
            .unwrap_or_default();
        let chrome = Chrome {
            email: Some(caller.user.email.as_str().to_owned()),
            csrf,
            nav: nav_for(&caller),
            ..Chrome::default()
        };
        Ok(Self { caller, chrome })
    }
}

/// A posted form (`application/x-www-form-urlencoded`) whose origin and CSRF token were
/// checked; its fields by name (repeated names keep every value, in order).
#[derive(Clone, Debug, Default)]
pub(crate) struct CheckedForm {
    fields: HashMap<String, Vec<String>>,
}

impl CheckedForm {
    /// The first value of `name`, trimmed; `""` when absent.
    pub(crate) fn text(&self, name: &str) -> String {
        self.fields
            .get(name)
            .and_then(|v| v.first())
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    }

    /// The first value of `name`, trimmed, `None` when absent or empty.
    pub(crate) fn optional(&self, name: &str) -> Option<String> {
        Some(self.text(name)).filter(|v| !v.is_empty())
    }

    /// Every value of `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.fields.get(name).cloned().unwrap_or_default()
    }
}

impl FromRequest<AppState> for CheckedForm {
    type Rejection = UiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|_| UiError::Api(ApiError::BadRequest("unreadable form".to_owned())))?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
            .map_err(|_| UiError::Api(ApiError::BadRequest("unreadable form".to_owned())))?;
        let mut fields: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in pairs {
            fields.entry(k).or_default().push(v);
        }
        let token = fields
            .get(csrf::FIELD)
            .and_then(|v| v.first())
            .map(String::as_str);
        csrf::check(&state.auth, &headers, token).map_err(UiError::Csrf)?;
        Ok(Self { fields })
    }
}

/// Largest file a form may upload.
pub(crate) const MAX_UPLOAD: usize = 1 << 20;

/// A posted `multipart/form-data` form (a file upload) whose origin and CSRF token were
/// checked: its text fields and its one file.
#[derive(Clone, Debug, Default)]
pub(crate) struct CheckedUpload {
    /// The text fields (the CSRF token); kept for the check.
    fields: HashMap<String, String>,
    /// The uploaded file's bytes (`None`: no file chosen).
    pub(crate) file: Option<Bytes>,
}

impl FromRequest<AppState> for CheckedUpload {
    type Rejection = UiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let unreadable = || UiError::Api(ApiError::BadRequest("unreadable upload".to_owned()));
        let headers = req.headers().clone();
        // The origin wall first: another site's post is refused before its body is read.
        if !state.auth.same_origin(&headers) {
            return Err(UiError::Csrf(csrf::Refused::CrossOrigin));
        }
        let mut multipart = axum::extract::Multipart::from_request(req, state)
            .await
            .map_err(|_| unreadable())?;
        let mut out = Self::default();
        while let Some(field) = multipart.next_field().await.map_err(|_| unreadable())? {
            let name = field.name().unwrap_or_default().to_owned();
            if field.file_name().is_some() {
                let data = field.bytes().await.map_err(|_| unreadable())?;
                if data.len() > MAX_UPLOAD {
                    return Err(UiError::Api(ApiError::invalid(
                        "file",
                        format!("the file has `{}` bytes; at most {MAX_UPLOAD}", data.len()),
                    )));
                }
                if !data.is_empty() {
                    out.file = Some(data);
                }
            } else {
                let text = field.text().await.map_err(|_| unreadable())?;
                out.fields.insert(name, text);
            }
        }
        let token = out.fields.get(csrf::FIELD).map(String::as_str);
        csrf::check(&state.auth, &headers, token).map_err(UiError::Csrf)?;
        Ok(out)
    }
}

/// Why a page could not be shown.
#[derive(Debug)]
pub(crate) enum UiError {
    /// What the admin API would have answered.
    Api(ApiError),
    /// A form that failed the CSRF check.
    Csrf(csrf::Refused),
    /// A template failed to render (a bug).
    Render(askama::Error),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<askama::Error> for UiError {
    fn from(e: askama::Error) -> Self {
        Self::Render(e)
    }
}

impl From<stratai_core::StoreError> for UiError {
    fn from(e: stratai_core::StoreError) -> Self {
        Self::Api(e.into())
    }
}

#[derive(Template)]
#[template(path = "ui/error.html")]
struct ErrorPage {
    chrome: Chrome,
    status: u16,
    heading: String,
    detail: String,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, heading, detail) = match self {
            Self::Api(ApiError::Unauthenticated(_)) => return see_other("/signin"),
            Self::Api(ApiError::Forbidden(reason)) => (
                StatusCode::FORBIDDEN,
                "Not allowed",
                format!("Your role does not allow this page or action ({reason})."),
            ),
            Self::Api(ApiError::NotFound(_)) => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here, or it is not yours to see.".to_owned(),
            ),
            Self::Csrf(why) => (
                StatusCode::FORBIDDEN,
                "Form refused",
                match why {
                    csrf::Refused::CrossOrigin => "The form was not sent from this site.",
                    csrf::Refused::BadToken => {
                        "The form's security token is missing or stale. Reload the page and try again."
                    }
                }
                .to_owned(),
            ),
            Self::Api(e @ (ApiError::Internal(_) | ApiError::Unavailable(_))) => {
                tracing::error!(error = %e, "page failed");
                (
                    e.status(),
                    "Something went wrong",
                    "The request could not be completed. Try again shortly.".to_owned(),
                )
            }
            Self::Api(e) => (e.status(), "Request refused", e.to_string()),
            Self::Render(e) => {
                tracing::error!(error = %e, "template failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The page could not be drawn.".to_owned(),
                )
            }
        };
        let page = ErrorPage {
            chrome: Chrome::default(),
            status: status.as_u16(),
            heading: heading.to_owned(),
            detail,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => status.into_response(),
        }
    }
}

/// A 303 to `location` (after a form post, or to the sign-in).
pub(crate) fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Renders `page` with `status`.
pub(crate) fn render<T: Template>(status: StatusCode, page: &T) -> Result<Response, UiError> {
    Ok((status, Html(page.render()?)).into_response())
}

/// Field errors by field name, for templates (`errors.get("slug")`).
#[derive(Clone, Debug, Default)]
pub(crate) struct FieldErrors(HashMap<String, String>);

impl FieldErrors {
    /// Collects field errors; a path such as `settings.default_tier` or `tiers[0]` is filed
    /// under its first segment, the form field.
    pub(crate) fn from_fields(fields: &[FieldError]) -> Self {
        let mut map = HashMap::new();
        for f in fields {
            let name = f
                .path
                .split(['.', '['])
                .next()
                .unwrap_or(&f.path)
                .to_owned();
            map.entry(name).or_insert_with(|| f.message.clone());
        }
        Self(map)
    }

    /// Collects field errors filed under the last segment of their path
    /// (`settings.timezone` under `timezone`), for forms whose fields are nested in the API.
    pub(crate) fn from_leaf_fields(fields: &[FieldError]) -> Self {
        let mut map = HashMap::new();
        for f in fields {
            let name = f
                .path
                .rsplit('.')
                .next()
                .unwrap_or(&f.path)
                .split('[')
                .next()
                .unwrap_or(&f.path)
                .to_owned();
            map.entry(name).or_insert_with(|| f.message.clone());
        }
        Self(map)
    }

    /// One field's error.
    pub(crate) fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.insert(field.to_owned(), message.into());
    }

    /// The error of `field`, if any.
    pub(crate) fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// Whether there is none.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The message of a completed action named in the redirect's `?done=` (a fixed list, so a
/// link cannot make the page say anything else).
pub(crate) fn done_notice(code: Option<&str>) -> Option<Notice> {
    let text = match code? {
        "signed_out" => "You are signed out.",
        "org_created" => "The organization was created.",
        "group_created" => "The group was created.",
        "group_updated" => "The group was saved.",
        "group_deleted" => "The group was deleted.",
        "group_member_added" => "The person was added to the group.",
        "group_member_removed" => "The person was removed from the group.",
        "member_updated" => "The member was saved.",
        "member_removed" => "The member was removed from the organization.",
        "rule_created" => "The guardrail was created.",
        "rule_updated" => "The guardrail was saved.",
        "rule_deleted" => "The guardrail was deleted.",
        "settings_saved" => "The settings were saved.",
        "subscription_saved" => "The tier subscription was saved.",
        "org_updated" => "The organization was saved.",
        _ => return None,
    };
    Some(Notice::ok(text))
}

/// An organization's time, formatted in its timezone.
pub(crate) fn local_time(org: &Organization, at: chrono::DateTime<chrono::Utc>) -> String {
    at.with_timezone(&org.tz())
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// Rows per page of every paginated table.
pub(crate) const PAGE_SIZE: usize = 25;

/// Where a paginated table is: its page and the links to its neighbours.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pager {
    /// 1-based page shown.
    pub(crate) page: usize,
    /// Number of pages (at least 1).
    pub(crate) pages: usize,
    /// Rows in the whole table.
    pub(crate) total: usize,
    /// Link to the previous page.
    pub(crate) prev: Option<String>,
    /// Link to the next page.
    pub(crate) next: Option<String>,
}

impl Pager {
    /// Whether the table has more than one page.
    pub(crate) fn is_split(&self) -> bool {
        self.pages > 1
    }
}

/// The `page` of `items` (1-based, clamped to the last page), at most [`PAGE_SIZE`] rows,
/// with links built from `base` (a path that may already carry a query).
pub(crate) fn paginate<T>(items: Vec<T>, page: usize, base: &str) -> (Vec<T>, Pager) {
    paginate_by(items, page, base, "page")
}

/// [`paginate`] with the page number in the query parameter `param` (for a second table on
/// one page).
pub(crate) fn paginate_by<T>(
    items: Vec<T>,
    page: usize,
    base: &str,
    param: &str,
) -> (Vec<T>, Pager) {
    let total = items.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = page.clamp(1, pages);
    let sep = if base.contains('?') { '&' } else { '?' };
    let link = |p: usize| format!("{base}{sep}{param}={p}");
    let rows = items
        .into_iter()
        .skip((page - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .collect();
    (
        rows,
        Pager {
            page,
            pages,
            total,
            prev: (page > 1).then(|| link(page - 1)),
            next: (page < pages).then(|| link(page + 1)),
        },
    )
}

/// The query of a list page: its page and the message of a completed action. Tolerant: an
/// unreadable page number shows the first page.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct ListQuery {
    /// The completed action.
    #[serde(default)]
    pub(crate) done: Option<String>,
    /// 1-based page.
    #[serde(default)]
    pub(crate) page: Option<String>,
    /// The page of a second table (the operators' invoices).
    #[serde(default)]
    pub(crate) invoice_page: Option<String>,
}

impl ListQuery {
    /// The page asked for (1 when absent or unreadable).
    pub(crate) fn page(&self) -> usize {
        self.page
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(1)
    }

    /// The notice of the completed action.
    pub(crate) fn notice(&self) -> Option<Notice> {
        done_notice(self.done.as_deref())
    }
}

/// Parses an optional money field of a form: empty is `None`, a bad amount an error on
/// `field`.
pub(crate) fn money_field(
    text: &str,
    field: &str,
    errors: &mut FieldErrors,
) -> Option<stratai_core::money::Money> {
    if text.is_empty() {
        return None;
    }
    match stratai_core::money::Money::parse(text) {
        Ok(m) => Some(m),
        Err(e) => {
            errors.add(field, e.reason);
            None
        }
    }
}

/// The `?done=` of a page URL.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Done {
    /// The completed action.
    #[serde(default)]
    pub(crate) done: Option<String>,
}

/// Headers of a response that also sets cookies.
pub(crate) fn with_cookies(
    mut response: Response,
    cookies: impl IntoIterator<Item = HeaderValue>,
) -> Response {
    for c in cookies {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

/// Money for people: exact (every digit the amount has) and with at least cents, `$12.50`.
pub(crate) fn money(amount: rust_decimal::Decimal) -> String {
    let mut shown = amount;
    if shown.scale() < 2 {
        shown.rescale(2);
    }
    if shown.is_sign_negative() {
        format!("-${}", -shown)
    } else {
        format!("${shown}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn money_is_exact_with_at_least_cents() {
        assert_eq!(money(dec!(12.5)), "$12.50");
        assert_eq!(money(dec!(0)), "$0.00");
        assert_eq!(money(dec!(0.000123)), "$0.000123");
        assert_eq!(money(dec!(-3)), "-$3.00");
    }

    #[test]
    fn field_errors_are_filed_under_the_form_field() {
        let e = FieldErrors::from_fields(&[
            FieldError::new("settings.default_tier", "bad"),
            FieldError::new("tiers[0]", "unknown"),
        ]);
        assert_eq!(e.get("settings"), Some("bad"));
        assert_eq!(e.get("tiers"), Some("unknown"));
        assert_eq!(e.get("name"), None);
    }
}
