//! The page handlers: sign-in and home here, the three areas in their modules.

pub(crate) mod access;
pub(crate) mod admin;
pub(crate) mod group;
pub(crate) mod invitation;
pub(crate) mod invoices;
pub(crate) mod member;
pub(crate) mod org;
pub(crate) mod people;
pub(crate) mod platform;
pub(crate) mod reports;
pub(crate) mod rules;
pub(crate) mod settings;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::csrf;
use super::view::{
    CheckedForm, Chrome, Done, FieldErrors, UiError, Viewer, done_notice, home_of, render,
    see_other, with_cookies,
};
use crate::app::AppState;
use crate::auth::Mode;
use crate::auth::routes::{dev_user, end_session, start_session};
use crate::error::ApiError;

/// `/`: the sign-in when signed out (the provider's login in OIDC mode), else the person's home.
pub(crate) async fn home(
    State(state): State<AppState>,
    viewer: Result<Viewer, UiError>,
) -> Response {
    match viewer {
        Ok(v) => see_other(&home_of(&v.caller)),
        Err(_) => match state.auth.signin().mode() {
            Mode::Oidc { login: Some(_), .. } => see_other("/auth/login"),
            _ => see_other("/signin"),
        },
    }
}

#[derive(Template)]
#[template(path = "ui/signin.html")]
struct SigninPage {
    chrome: Chrome,
    dev: bool,
    oidc_login: bool,
    email: String,
    errors: FieldErrors,
}

/// `GET /signin`: in dev mode a form that signs in by email (announced as dev mode); in OIDC
/// mode a link to the provider's login.
pub(crate) async fn signin_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Result<Viewer, UiError>,
    Query(done): Query<Done>,
) -> Result<Response, UiError> {
    if let Ok(v) = viewer {
        return Ok(see_other(&home_of(&v.caller)));
    }
    // The sign-in form's token is bound to a pre-session cookie, set here when missing.
    let (cookie, binding) = match csrf::binding(&state.auth, &headers) {
        Some(b) => (None, b),
        None => {
            let (header, value) = csrf::new_presession(&state.auth)
                .ok_or_else(|| ApiError::internal("pre-session cookie could not be built"))?;
            (Some(header), value)
        }
    };
    let page = signin_form(
        &state,
        csrf::token_for(&binding),
        String::new(),
        FieldErrors::default(),
    );
    let page = SigninPage {
        chrome: Chrome {
            notice: done_notice(done.done.as_deref()),
            ..page.chrome
        },
        ..page
    };
    Ok(with_cookies(render(StatusCode::OK, &page)?, cookie))
}

fn signin_form(state: &AppState, csrf: String, email: String, errors: FieldErrors) -> SigninPage {
    SigninPage {
        chrome: Chrome {
            csrf,
            current: "/signin".to_owned(),
            ..Chrome::default()
        },
        dev: matches!(state.auth.signin().mode(), Mode::Dev(_)),
        oidc_login: matches!(
            state.auth.signin().mode(),
            Mode::Oidc { login: Some(_), .. }
        ),
        email,
        errors,
    }
}

/// `POST /signin` (dev mode only): signs in the person with this email, with the same
/// session cookie an OIDC login sets.
pub(crate) async fn signin(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: CheckedForm,
) -> Result<Response, UiError> {
    if !matches!(state.auth.signin().mode(), Mode::Dev(_)) {
        return Err(ApiError::NotFound("route".to_owned()).into());
    }
    let email = form.text("email");
    match dev_user(&state.auth, &email).await {
        Ok(principal) => {
            let session = start_session(&state.auth, &principal, false).await?;
            let clear = crate::auth::cookies::clear_cookie(
                csrf::PRESESSION_COOKIE,
                "/",
                state.auth.secure_cookies(),
            );
            Ok(with_cookies(
                see_other("/"),
                std::iter::once(session).chain(clear),
            ))
        }
        Err(e @ (ApiError::Validation(_) | ApiError::NotFound(_) | ApiError::Forbidden(_))) => {
            let mut errors = FieldErrors::default();
            match e {
                ApiError::Validation(fields) => errors = FieldErrors::from_fields(&fields),
                ApiError::NotFound(_) => errors.add("email", "no person with this email"),
                _ => errors.add("email", "this account is deactivated"),
            }
            let token = csrf::binding(&state.auth, &headers)
                .map(|b| csrf::token_for(&b))
                .unwrap_or_default();
            render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &signin_form(&state, token, email, errors),
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /signout`: ends the session (both modes) and returns to the sign-in page.
pub(crate) async fn signout(
    State(state): State<AppState>,
    headers: HeaderMap,
    _form: CheckedForm,
) -> Result<Response, UiError> {
    let clear = end_session(&state.auth, &headers).await?;
    Ok(with_cookies(see_other("/signin?done=signed_out"), clear))
}
