//! The accept page an invitee opens from the link in their invitation email
//! (`/invitations/{token}`): it shows the organization, asks them to sign in as the invited
//! address, and accepts once (the same store operation as `POST /api/invitations/{token}/accept`).
//! Used, revoked and expired links say so. The token in the path is the capability: a token
//! that matches nothing answers the not-found page, like the API.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use stratai_core::OpError;
use stratai_core::directory::{InvitationStatus, OrgRole};
use stratai_store::people::invitations;

use crate::api::ApiPath;
use crate::app::AppState;
use crate::auth::Mode;
use crate::error::ApiError;
use crate::ui::view::{CheckedForm, Chrome, Notice, UiError, Viewer, render};

/// What the page can offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Offer {
    /// Pending, signed in as the invited address: the accept form.
    Accept,
    /// Pending, signed out: sign in first.
    SignIn,
    /// Pending, signed in as someone else.
    WrongPerson,
    /// Accepted (used), revoked or expired: nothing to do.
    Closed,
    /// Just accepted by this request.
    Joined,
}

#[derive(Template)]
#[template(path = "ui/invitation.html")]
struct InvitationPage {
    chrome: Chrome,
    organization: String,
    email: String,
    role: &'static str,
    expires: String,
    /// `pending`, `accepted`, `expired` or `revoked`.
    status: &'static str,
    offer: Offer,
    action: String,
    signin_href: &'static str,
    dev: bool,
}

impl InvitationPage {
    fn offers(&self, name: &str) -> bool {
        matches!(
            (self.offer, name),
            (Offer::Accept, "accept")
                | (Offer::SignIn, "signin")
                | (Offer::WrongPerson, "wrong_person")
                | (Offer::Closed, "closed")
                | (Offer::Joined, "joined")
        )
    }
}

fn role_name(role: OrgRole) -> &'static str {
    match role {
        OrgRole::Owner => "owner",
        OrgRole::Admin => "admin",
        OrgRole::Member => "member",
    }
}

async fn page(
    state: &AppState,
    token: &str,
    viewer: Option<&Viewer>,
    notice: Option<Notice>,
) -> Result<InvitationPage, UiError> {
    let (invitation, org) = invitations::lookup(state.stores.directory.as_ref(), token, Utc::now())
        .await
        .map_err(ApiError::from)?;
    let offer = match (invitation.status, viewer) {
        (InvitationStatus::Pending, None) => Offer::SignIn,
        (InvitationStatus::Pending, Some(v)) if v.caller.user.email == invitation.email => {
            Offer::Accept
        }
        (InvitationStatus::Pending, Some(_)) => Offer::WrongPerson,
        // Its own invitee, back on a used link (a sign-in with the verified address joins
        // pending invitations by itself): they are in, not refused.
        (InvitationStatus::Accepted, Some(v)) if v.caller.user.email == invitation.email => {
            Offer::Joined
        }
        _ => Offer::Closed,
    };
    let chrome = match viewer {
        Some(v) => Chrome {
            notice,
            ..v.chrome.clone()
        },
        None => Chrome {
            notice,
            ..Chrome::default()
        },
    };
    let oidc_login = matches!(
        state.auth.signin().mode(),
        Mode::Oidc { login: Some(_), .. }
    );
    Ok(InvitationPage {
        chrome,
        organization: org.name.clone(),
        email: invitation.email.as_str().to_owned(),
        role: role_name(invitation.role),
        expires: crate::ui::view::local_time(&org, invitation.expires_at),
        status: invitation.status.as_str(),
        offer,
        action: format!("/invitations/{token}"),
        signin_href: if oidc_login { "/auth/login" } else { "/signin" },
        dev: matches!(state.auth.signin().mode(), Mode::Dev(_)),
    })
}

/// `GET /invitations/{token}`: the invitation, and what its holder can do with it.
pub(crate) async fn show(
    State(state): State<AppState>,
    viewer: Result<Viewer, UiError>,
    ApiPath(token): ApiPath<String>,
) -> Result<Response, UiError> {
    let page = page(&state, &token, viewer.as_ref().ok(), None).await?;
    render(StatusCode::OK, &page)
}

/// `POST /invitations/{token}`: accepts the invitation for the signed-in person (CSRF-checked
/// form), once. A refusal (used, revoked, expired, another address) is shown on the page.
pub(crate) async fn accept(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(token): ApiPath<String>,
    _form: CheckedForm,
) -> Result<Response, UiError> {
    // An unknown token answers the not-found page (the service looks it up first).
    let outcome = invitations::accept(
        state.stores.directory.as_ref(),
        state.stores.guardrails.as_ref(),
        &token,
        &viewer.caller.user,
        Utc::now(),
    )
    .await;
    match outcome {
        Ok(_) => {
            let mut page = page(&state, &token, Some(&viewer), None).await?;
            page.offer = Offer::Joined;
            page.chrome.notice = Some(Notice::ok(format!("You joined {}.", page.organization)));
            render(StatusCode::OK, &page)
        }
        Err(e @ (OpError::Conflict(_) | OpError::Invalid(_))) => {
            let mut page = page(&state, &token, Some(&viewer), None).await?;
            // Said from the invitation's state where it is no longer open (a second submit of
            // the form, a revoked or expired link), from the store's reason otherwise.
            let why = match page.status {
                "accepted" => "it was already used (each link works once)".to_owned(),
                "revoked" => "it was revoked".to_owned(),
                "expired" => "it has expired".to_owned(),
                _ => refusal(&e),
            };
            page.chrome.notice = Some(Notice::error(format!(
                "The invitation was not accepted: {why}."
            )));
            render(StatusCode::CONFLICT, &page)
        }
        Err(e) => Err(ApiError::from(e).into()),
    }
}

/// The acceptance's refusal in words for the page (no `conflict:` prefix).
fn refusal(e: &OpError) -> String {
    match e {
        OpError::Conflict(m) => m.clone(),
        OpError::Invalid(fields) => fields
            .iter()
            .map(|f| f.reason.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}
