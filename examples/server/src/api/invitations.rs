//! The invitation routes: create (the raw token is answered once and emailed, only its hash
//! is stored), look up by token, accept (single use), revoke, list; the bulk invite of the
//! members route. The flow itself (validation, one pending invitation per address renewed
//! rather than duplicated, the email, bulk CSV all or nothing) is
//! `stratai_store::people::invitations`; here are the authorization and the JSON shapes.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
use stratai_core::directory::{
    Invitation, InvitationDelivery, InvitationStatus, Membership, OrgRole,
};
use stratai_core::{GroupId, InvitationId, OrgId, ProfileId};
use stratai_store::people::invitations::{self, Invite, Inviter, Issued};

use super::{ApiPath, Caller, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;

/// One invitation to create.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteSpec {
    /// Invited address.
    #[schema(value_type = stratai_core::directory::Email)]
    pub email: String,
    /// Role on acceptance (default member).
    #[serde(default)]
    pub role: Option<OrgRole>,
    /// Groups joined on acceptance.
    #[serde(default)]
    pub group_ids: Vec<GroupId>,
    /// Profile assigned on acceptance.
    #[serde(default)]
    pub profile_id: Option<ProfileId>,
    /// Validity in days (1-30, default 7).
    #[serde(default)]
    pub valid_for_days: Option<i64>,
}

/// Body of `POST /api/invitations`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitation {
    /// Organization to join.
    pub org_id: OrgId,
    /// Address.
    #[schema(value_type = stratai_core::directory::Email)]
    pub email: String,
    /// Role (default member).
    #[serde(default)]
    pub role: Option<OrgRole>,
    /// Groups.
    #[serde(default)]
    pub group_ids: Vec<GroupId>,
    /// Profile.
    #[serde(default)]
    pub profile_id: Option<ProfileId>,
    /// Validity in days.
    #[serde(default)]
    pub valid_for_days: Option<i64>,
}

/// An invitation without its secret.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvitationView {
    /// Id.
    pub id: InvitationId,
    /// Organization.
    pub org_id: OrgId,
    /// Invited address.
    pub email: String,
    /// Role on acceptance.
    pub role: OrgRole,
    /// Groups joined on acceptance.
    pub group_ids: Vec<GroupId>,
    /// Profile assigned on acceptance.
    pub profile_id: Option<ProfileId>,
    /// State (a pending invitation past its expiry shows as expired).
    pub status: InvitationStatus,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Creation.
    pub created_at: DateTime<Utc>,
    /// When accepted.
    pub accepted_at: Option<DateTime<Utc>>,
    /// Whether the invitation email went out (failed ones are retried with a new link).
    pub delivery: InvitationDelivery,
}

impl From<&Invitation> for InvitationView {
    fn from(i: &Invitation) -> Self {
        let mut shown = i.clone();
        shown.expire_if_due(Utc::now());
        Self {
            id: i.id,
            org_id: i.org_id,
            email: i.email.as_str().to_owned(),
            role: i.role,
            group_ids: i.group_ids.clone(),
            profile_id: i.profile_id,
            status: shown.status,
            expires_at: i.expires_at,
            created_at: i.created_at,
            accepted_at: i.accepted_at,
            delivery: i.delivery.clone(),
        }
    }
}

/// A created (or renewed) invitation and its token: the only time the token is shown.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvitationCreated {
    /// The invitation, with the outcome of its email.
    pub invitation: InvitationView,
    /// The secret also mailed to the invitee (`POST /api/invitations/{token}/accept`, or the
    /// accept page `/invitations/{token}`). A renewal or a retried email replaces it.
    pub token: String,
    /// The address already had a pending invitation: it was renewed (same invitation, new
    /// link and expiry, emailed again) rather than a second one created.
    pub resent: bool,
}

impl From<InviteSpec> for Invite {
    fn from(spec: InviteSpec) -> Self {
        Self {
            email: spec.email,
            role: spec.role,
            group_ids: spec.group_ids,
            profile_id: spec.profile_id,
            valid_for_days: spec.valid_for_days,
        }
    }
}

impl From<Issued> for InvitationCreated {
    fn from(issued: Issued) -> Self {
        Self {
            invitation: InvitationView::from(&issued.invitation),
            token: issued.token.expose().to_owned(),
            resent: issued.renewed,
        }
    }
}

/// The inviter of `caller` in `org_id` (who may already manage its members).
fn inviter(caller: &Caller, org_id: OrgId) -> Inviter {
    Inviter {
        id: caller.id(),
        may_invite_owners: allow(caller, Action::ChangeOwners, Resource::Org(org_id)).is_ok(),
    }
}

/// Invites one person to `org_id` (the caller may manage its members): emails them a link to
/// the accept page. Inviting an address with a pending invitation renews that invitation.
pub async fn invite(
    state: &AppState,
    caller: &Caller,
    org_id: OrgId,
    spec: InviteSpec,
) -> Result<InvitationCreated, ApiError> {
    allow(caller, Action::ManageMembers, Resource::Org(org_id))?;
    let issued = invitations::invite(
        state.stores.directory.as_ref(),
        &state.mail,
        inviter(caller, org_id),
        org_id,
        &spec.into(),
    )
    .await?;
    Ok(issued.into())
}

/// `POST /api/invitations`.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateInvitation>,
) -> Result<(StatusCode, ApiJson<InvitationCreated>), ApiError> {
    let spec = InviteSpec {
        email: req.email,
        role: req.role,
        group_ids: req.group_ids,
        profile_id: req.profile_id,
        valid_for_days: req.valid_for_days,
    };
    let created = invite(&state, &caller, req.org_id, spec).await?;
    Ok((created_status(&created), ApiJson(created)))
}

/// 201 for a new invitation, 200 for a renewed one.
#[must_use]
pub fn created_status(created: &InvitationCreated) -> StatusCode {
    if created.resent {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

/// `DELETE /api/organizations/{org_id}/invitations/{invitation_id}`: revokes a pending
/// invitation (its link stops working; the list shows it revoked).
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org_id, invitation_id)): ApiPath<(OrgId, InvitationId)>,
) -> Result<StatusCode, ApiError> {
    allow(&caller, Action::ManageMembers, Resource::Org(org_id))?;
    state
        .stores
        .directory
        .revoke_invitation(org_id, invitation_id)
        .await?;
    tracing::info!(%org_id, %invitation_id, "invitation revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Pending and past invitations of an organization (admins).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<ApiJson<Vec<InvitationView>>, ApiError> {
    allow(&caller, Action::ManageMembers, Resource::Org(org_id))?;
    let list = state.stores.directory.list_invitations(org_id).await?;
    Ok(ApiJson(list.iter().map(InvitationView::from).collect()))
}

/// What the holder of an invitation token may see before logging in.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvitationDetails {
    /// Organization name.
    pub organization: String,
    /// Invited address.
    pub email: String,
    /// Role on acceptance.
    pub role: OrgRole,
    /// State (an overdue pending invitation shows as expired).
    pub status: InvitationStatus,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
}

/// `GET /api/invitations/{token}`: the token is the capability; no login needed.
pub async fn show(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
) -> Result<ApiJson<InvitationDetails>, ApiError> {
    let (invitation, org) =
        invitations::lookup(state.stores.directory.as_ref(), &token, Utc::now()).await?;
    Ok(ApiJson(InvitationDetails {
        organization: org.name,
        email: invitation.email.as_str().to_owned(),
        role: invitation.role,
        status: invitation.status,
        expires_at: invitation.expires_at,
    }))
}

/// `POST /api/invitations/{token}/accept`: joins the caller to the organization, once.
pub async fn accept(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(token): ApiPath<String>,
) -> Result<ApiJson<Membership>, ApiError> {
    let membership = invitations::accept(
        state.stores.directory.as_ref(),
        state.stores.guardrails.as_ref(),
        &token,
        &caller.user,
        Utc::now(),
    )
    .await?;
    Ok(ApiJson(membership))
}

/// Per-row result of a bulk invite.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkRow {
    /// 1-based data row (the header is row 0).
    pub row: usize,
    /// Line of the file (the header is line 1).
    pub line: u64,
    /// The email as given.
    pub email: String,
    /// `created`, `resent` (the address had a pending invitation: it was renewed) or
    /// `already_member`.
    pub status: String,
    /// The invitation token (created and resent rows; shown once, also emailed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The invitation (created and resent rows), with the outcome of its email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitation: Option<InvitationView>,
}

/// Result of a bulk invite.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkOutcome {
    /// Invitations created.
    pub created: usize,
    /// Pending invitations renewed and emailed again.
    #[serde(default)]
    pub resent: usize,
    /// Rows skipped because the person is already a member.
    pub already_member: usize,
    /// Per row.
    pub rows: Vec<BulkRow>,
}

impl From<invitations::BulkOutcome> for BulkOutcome {
    fn from(outcome: invitations::BulkOutcome) -> Self {
        Self {
            created: outcome.created,
            resent: outcome.resent,
            already_member: outcome.already_member,
            rows: outcome
                .rows
                .into_iter()
                .map(|r| BulkRow {
                    row: r.row,
                    line: r.line,
                    status: r.status().to_owned(),
                    email: r.email,
                    token: r.invited.as_ref().map(|i| i.token.expose().to_owned()),
                    invitation: r
                        .invited
                        .as_ref()
                        .map(|i| InvitationView::from(&i.invitation)),
                })
                .collect(),
        }
    }
}

/// Bulk invite (the caller may manage the members of `org_id`): every row is validated first;
/// if any row is invalid nothing is written and the answer is 422 naming each bad row and its
/// line. Otherwise all invitations are written in one transaction (all or nothing), then
/// emailed; each row is `created`, `resent` or `already_member`. An email twice in the file
/// is invalid.
pub async fn bulk_invite(
    state: &AppState,
    caller: &Caller,
    org_id: OrgId,
    text: &str,
) -> Result<BulkOutcome, ApiError> {
    bulk_invite_with_progress(state, caller, org_id, text, &|_, _| {}).await
}

/// [`bulk_invite`] reporting `(done, total)` after each row is emailed (for the CLI's
/// progress bar).
pub async fn bulk_invite_with_progress(
    state: &AppState,
    caller: &Caller,
    org_id: OrgId,
    text: &str,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<BulkOutcome, ApiError> {
    allow(caller, Action::ManageMembers, Resource::Org(org_id))?;
    let outcome = invitations::bulk_invite(
        state.stores.directory.as_ref(),
        &state.mail,
        inviter(caller, org_id),
        org_id,
        text,
        progress,
    )
    .await?;
    Ok(outcome.into())
}
