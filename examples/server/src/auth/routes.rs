//! `/auth/*` handlers. Every mode routes them all; what a mode lacks answers 404: the OIDC
//! login routes without a configured client, `POST /auth/dev/token` outside dev mode.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use stratai_store::people::identity::LoginIdentity;

use super::Principal;
use super::cookies::{self, CookieSpec};
use super::oidc::{LOGIN_TTL, OidcLogin};
use super::session::{Session, expiry, hash_session_id, new_session_id};
use super::{Auth, AuthError, Mode};
use crate::config::looks_like_email;
use crate::error::ApiError;
use crate::extract::ApiJson;

/// Name of the cookie binding a started login to the browser.
pub const LOGIN_STATE_COOKIE: &str = "stratai_login_state";
const CALLBACK_PATH: &str = "/auth/callback";

/// The `/auth` routes.
pub fn router<S>() -> Router<S>
where
    Arc<Auth>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    // Every mode has every route (a handler of another mode answers 404), so the document is
    // the same in every mode and an undeclared method answers 405.
    Router::new()
        .route("/auth/me", get(me))
        .route("/auth/dev/token", post(dev_token))
        .route("/auth/login", get(login).post(login))
        .route(CALLBACK_PATH, get(callback))
        .route("/auth/logout", post(logout))
}

/// Body of `POST /auth/dev/token`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    /// Email of an existing user.
    pub email: String,
}

/// Answer of `POST /auth/dev/token`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DevTokenResponse {
    /// The bearer token.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

async fn dev_token(
    State(auth): State<Arc<Auth>>,
    ApiJson(req): ApiJson<DevTokenRequest>,
) -> Result<ApiJson<DevTokenResponse>, ApiError> {
    let Mode::Dev(dev) = auth.signin().mode() else {
        return Err(ApiError::NotFound("dev tokens (dev mode only)".to_owned()));
    };
    let user = dev_user(&auth, &req.email).await?;
    Ok(ApiJson(DevTokenResponse {
        token: dev.issue(user.user_id, &user.email)?,
        token_type: "Bearer".to_owned(),
        expires_in: dev.ttl().as_secs(),
    }))
}

/// Answer of `GET /auth/me`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AuthMe)]
pub struct Me {
    /// StratAI user id.
    pub user_id: uuid::Uuid,
    /// Email.
    pub email: String,
    /// Platform super admin.
    pub super_admin: bool,
}

async fn me(
    State(auth): State<Arc<Auth>>,
    method: Method,
    headers: HeaderMap,
) -> Result<ApiJson<Me>, ApiError> {
    let principal = auth.authenticate(&method, &headers).await?;
    Ok(ApiJson(Me {
        user_id: principal.user_id,
        email: principal.email,
        super_admin: principal.super_admin,
    }))
}

fn login_flow(auth: &Auth) -> Result<&Arc<OidcLogin>, ApiError> {
    match auth.signin().mode() {
        Mode::Oidc {
            login: Some(login), ..
        } => Ok(login),
        _ => Err(ApiError::NotFound("OIDC login (not configured)".to_owned())),
    }
}

fn redirect(location: &str) -> Result<Response, ApiError> {
    let value = HeaderValue::from_str(location).map_err(ApiError::internal)?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response())
}

async fn login(State(auth): State<Arc<Auth>>) -> Result<Response, ApiError> {
    let flow = login_flow(&auth)?;
    let start = flow.begin().await?;
    let mut response = redirect(start.redirect.as_str())?;
    let cookie = cookies::set_cookie(
        CookieSpec {
            name: LOGIN_STATE_COOKIE,
            path: CALLBACK_PATH,
            max_age_secs: LOGIN_TTL.as_secs(),
            secure: auth.secure_cookies(),
        },
        &start.state,
    )
    .ok_or_else(|| ApiError::internal("state cookie could not be built"))?;
    response.headers_mut().append(header::SET_COOKIE, cookie);
    no_store(&mut response);
    Ok(response)
}

/// Query of `GET /auth/callback` (providers add more parameters; they are ignored).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

async fn callback(
    State(auth): State<Arc<Auth>>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, ApiError> {
    let flow = login_flow(&auth)?;
    if let Some(error) = &query.error {
        return Err(AuthError::LoginFailed(format!("provider returned error `{error}`")).into());
    }
    let (Some(code), Some(state)) = (query.code.as_deref(), query.state.as_deref()) else {
        return Err(AuthError::LoginFailed("callback without code or state".to_owned()).into());
    };
    let cookie_state = cookies::find(&headers, LOGIN_STATE_COOKIE);
    let (principal, mfa) = auth
        .signin()
        .finish_login(
            flow,
            query.iss.as_deref(),
            state,
            cookie_state.as_deref(),
            code,
        )
        .await?;
    match auth.signin().check_mfa(&principal, mfa).await {
        Ok(()) => {}
        Err(AuthError::MfaRequired(organization)) => {
            tracing::info!(user_id = %principal.user_id, "sign-in refused: multi-factor authentication required");
            return Ok(mfa_required_page(&organization));
        }
        Err(e) => return Err(e.into()),
    }

    let session_cookie = start_session(&auth, &principal, mfa).await?;
    let mut response = redirect(&flow.config().post_login_url)?;
    response
        .headers_mut()
        .append(header::SET_COOKIE, session_cookie);
    if let Some(clear) =
        cookies::clear_cookie(LOGIN_STATE_COOKIE, CALLBACK_PATH, auth.secure_cookies())
    {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    no_store(&mut response);
    Ok(response)
}

async fn logout(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let flow = login_flow(&auth)?;
    let clear = end_session(&auth, &headers).await?;
    let mut response = redirect(&flow.logout_redirect().await)?;
    if let Some(clear) = clear {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    no_store(&mut response);
    Ok(response)
}

/// The browser's answer to a one-factor sign-in refused by `settings.require_mfa`: a page
/// that says why and offers to sign in again (the provider then asks for the second factor).
fn mfa_required_page(organization: &str) -> Response {
    let name = html_escape(organization);
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Multi-factor authentication required</title></head><body><main>\
         <h1>Multi-factor authentication required</h1>\
         <p>{name} requires its members to sign in with a second factor (an authenticator \
         app, a security key), and this sign-in used one.</p>\
         <p>Set up a second factor with your identity provider, then \
         <a href=\"/auth/login\">sign in again</a>.</p></main></body></html>"
    );
    let mut response = (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    no_store(&mut response);
    response
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Dev mode's sign-in: the active user with this email. An invited person has no account
/// until their first login; it is created as an OIDC login would, so the invitation can be
/// accepted. Shared by `POST /auth/dev/token` and the web UI's dev sign-in page.
pub async fn dev_user(auth: &Auth, email: &str) -> Result<Principal, ApiError> {
    let wanted = email.trim().to_ascii_lowercase();
    if !looks_like_email(&wanted) {
        return Err(ApiError::invalid(
            "email",
            format!("`{email}` is not an email address"),
        ));
    }
    let identities = auth.signin().identities();
    let now = Utc::now();
    let user = match identities
        .find_by_email(&wanted)
        .await
        .map_err(AuthError::from)?
    {
        Some(user) => user,
        None if identities
            .is_invited(&wanted, now)
            .await
            .map_err(AuthError::from)? =>
        {
            identities
                .login(
                    &LoginIdentity {
                        subject: format!("dev|{wanted}"),
                        email: wanted.clone(),
                        name: None,
                    },
                    now,
                )
                .await
                .map_err(AuthError::from)?
        }
        None => return Err(ApiError::NotFound(format!("user `{wanted}`"))),
    };
    if !user.active {
        return Err(AuthError::Deactivated.into());
    }
    // Dev mode vouches for the email: a sign-in joins the invitations sent to it since.
    identities
        .signed_in(user.id, now)
        .await
        .map_err(AuthError::from)?;
    Ok(Principal::from(&user))
}

/// Starts a browser session for `principal` (`mfa`: the sign-in used more than one factor):
/// stores it and answers the `Set-Cookie` value of
/// the session cookie (HttpOnly, SameSite=Lax, `Secure` behind https). Shared by the OIDC
/// callback and the web UI's dev sign-in.
pub async fn start_session(
    auth: &Auth,
    principal: &Principal,
    mfa: bool,
) -> Result<HeaderValue, ApiError> {
    let (session_id, key) = new_session_id();
    auth.signin()
        .sessions()
        .insert(
            key,
            Session {
                user_id: principal.user_id,
                expires_at: expiry(auth.session_ttl()),
                mfa,
            },
        )
        .await
        .map_err(AuthError::from)?;
    tracing::info!(user_id = %principal.user_id, "login");
    cookies::set_cookie(
        CookieSpec {
            name: auth.session_cookie_name(),
            path: "/",
            max_age_secs: auth.session_ttl().as_secs(),
            secure: auth.secure_cookies(),
        },
        &session_id,
    )
    .ok_or_else(|| ApiError::internal("session cookie could not be built"))
}

/// Ends the request's browser session, if any, and answers the `Set-Cookie` value that
/// deletes its cookie.
pub async fn end_session(
    auth: &Auth,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, ApiError> {
    if let Some(id) = cookies::find(headers, auth.session_cookie_name()) {
        auth.signin()
            .sessions()
            .remove(&hash_session_id(&id))
            .await
            .map_err(AuthError::from)?;
    }
    Ok(cookies::clear_cookie(
        auth.session_cookie_name(),
        "/",
        auth.secure_cookies(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_mfa_page_shows_a_hostile_organization_name_as_text() {
        let response = mfa_required_page("<img src=x onerror=alert(1)>\"&'");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        let page = String::from_utf8(body.to_vec()).unwrap();
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;&quot;&amp;&#39; requires"));
        assert!(!page.contains("<img"), "{page}");
    }
}
