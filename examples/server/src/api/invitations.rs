//! Invitations: create (the raw token is answered once, only its hash is stored), look up
//! by token, accept (single use, checks expiry and email, atomic in the store); bulk invite.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
use stratai_core::directory::{
    Email, Invitation, InvitationRequest, InvitationStatus, Membership, OrgRole, hash_token,
};
use stratai_core::{GroupId, InvitationId, OrgId, ProfileId, StoreError};

use super::{ApiPath, Caller, allow};
use crate::app::AppState;
use crate::error::{ApiError, FieldError};
use crate::extract::ApiJson;

/// Default validity of an invitation.
pub const DEFAULT_VALID_DAYS: i64 = 7;

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
    /// State.
    pub status: InvitationStatus,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Creation.
    pub created_at: DateTime<Utc>,
}

impl From<&Invitation> for InvitationView {
    fn from(i: &Invitation) -> Self {
        Self {
            id: i.id,
            org_id: i.org_id,
            email: i.email.as_str().to_owned(),
            role: i.role,
            group_ids: i.group_ids.clone(),
            status: i.status,
            expires_at: i.expires_at,
            created_at: i.created_at,
        }
    }
}

/// A created invitation and its token: the only time the token is shown.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvitationCreated {
    /// The invitation.
    pub invitation: InvitationView,
    /// The secret to hand to the invitee (`POST /api/invitations/{token}/accept`).
    pub token: String,
}

/// Validates `spec` for `org`: field errors (with `prefix` before each path) or the request.
async fn validate(
    state: &AppState,
    caller: &Caller,
    org_id: OrgId,
    spec: &InviteSpec,
    prefix: &str,
) -> Result<InvitationRequest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let email = Email::new(&spec.email)
        .map_err(|e| errors.push(FieldError::new(format!("{prefix}email"), e.reason)))
        .ok();
    let role = spec.role.unwrap_or(OrgRole::Member);
    if role == OrgRole::Owner && allow(caller, Action::ChangeOwners, Resource::Org(org_id)).is_err()
    {
        errors.push(FieldError::new(
            format!("{prefix}role"),
            "only an owner may invite owners",
        ));
    }
    for (i, g) in spec.group_ids.iter().enumerate() {
        if state.stores.directory.get_group(org_id, *g).await.is_err() {
            errors.push(FieldError::new(
                format!("{prefix}group_ids[{i}]"),
                format!("unknown group `{g}`"),
            ));
        }
    }
    if let Some(p) = spec.profile_id
        && state.stores.directory.get_profile(p).await.is_err()
    {
        errors.push(FieldError::new(
            format!("{prefix}profile_id"),
            format!("unknown profile `{p}`"),
        ));
    }
    let days = spec.valid_for_days.unwrap_or(DEFAULT_VALID_DAYS);
    if !(1..=stratai_core::directory::MAX_INVITATION_TTL_DAYS).contains(&days) {
        errors.push(FieldError::new(
            format!("{prefix}valid_for_days"),
            format!(
                "`{days}` must be between 1 and {}",
                stratai_core::directory::MAX_INVITATION_TTL_DAYS
            ),
        ));
    }
    match (email, errors.is_empty()) {
        (Some(email), true) => Ok(InvitationRequest {
            email,
            org_id,
            role,
            group_ids: spec.group_ids.clone(),
            profile_id: spec.profile_id,
            invited_by: Some(caller.id()),
            valid_for: chrono::Duration::days(days),
        }),
        _ => Err(errors),
    }
}

async fn already_member(state: &AppState, org_id: OrgId, email: &Email) -> Result<bool, ApiError> {
    let Some(user) = state.stores.directory.find_user_by_email(email).await? else {
        return Ok(false);
    };
    match state.stores.directory.get_member(org_id, user.id).await {
        Ok(_) => Ok(true),
        Err(StoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn issue(
    state: &AppState,
    request: InvitationRequest,
) -> Result<InvitationCreated, ApiError> {
    let org_id = request.org_id;
    let (invitation, token) = Invitation::issue(request, Utc::now())?;
    state
        .stores
        .directory
        .create_invitation(org_id, &invitation)
        .await?;
    Ok(InvitationCreated {
        invitation: InvitationView::from(&invitation),
        token: token.expose().to_owned(),
    })
}

/// Invites one person to `org_id` (the caller may manage its members).
pub async fn invite(
    state: &AppState,
    caller: &Caller,
    org_id: OrgId,
    spec: InviteSpec,
) -> Result<InvitationCreated, ApiError> {
    allow(caller, Action::ManageMembers, Resource::Org(org_id))?;
    let request = validate(state, caller, org_id, &spec, "")
        .await
        .map_err(ApiError::Validation)?;
    if already_member(state, org_id, &request.email).await? {
        return Err(ApiError::Conflict(format!(
            "`{}` is already a member",
            request.email
        )));
    }
    issue(state, request).await
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
    Ok((StatusCode::CREATED, ApiJson(created)))
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

async fn find(state: &AppState, token: &str) -> Result<Invitation, ApiError> {
    // Tokens are 64 hex characters; anything else cannot match, so skip the lookup.
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::NotFound("invitation".to_owned()));
    }
    state
        .stores
        .directory
        .find_invitation_by_token_hash(&hash_token(token))
        .await?
        .ok_or_else(|| ApiError::NotFound("invitation".to_owned()))
}

/// `GET /api/invitations/{token}`: the token is the capability; no login needed.
pub async fn show(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
) -> Result<ApiJson<InvitationDetails>, ApiError> {
    let mut invitation = find(&state, &token).await?;
    invitation.expire_if_due(Utc::now());
    let org = state.stores.directory.get_org(invitation.org_id).await?;
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
    find(&state, &token).await?;
    let membership = state
        .stores
        .directory
        .accept_invitation(&hash_token(&token), &caller.user, Utc::now())
        .await?;
    tracing::info!(org_id = %membership.org_id, user_id = %caller.id(), "invitation accepted");
    Ok(ApiJson(membership))
}

/// Per-row result of a bulk invite.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkRow {
    /// 1-based data row (the header is row 0).
    pub row: usize,
    /// The email as given.
    pub email: String,
    /// `created`, `already_member`, `invalid`.
    pub status: String,
    /// The invitation token (created rows only; shown once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// What is wrong (invalid rows).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<FieldError>,
}

/// Result of a bulk invite.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkOutcome {
    /// Invitations created.
    pub created: usize,
    /// Rows skipped because the person is already a member.
    pub already_member: usize,
    /// Per row.
    pub rows: Vec<BulkRow>,
}

/// Parses a CSV of `email[,role[,groups]]` (header row required; groups are names or ids
/// separated by `;`) into invite specs, resolving group names in `org_id`.
async fn parse_csv(
    state: &AppState,
    org_id: OrgId,
    text: &str,
) -> Result<Vec<(usize, InviteSpec, Vec<FieldError>)>, ApiError> {
    let groups = state.stores.directory.list_groups(org_id).await?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| ApiError::invalid("csv", format!("unreadable header: {e}")))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let email_col = col("email")
        .ok_or_else(|| ApiError::invalid("csv", "the header must name an `email` column"))?;
    let role_col = col("role");
    let groups_col = col("groups");
    for h in headers.iter() {
        if !["email", "role", "groups"]
            .iter()
            .any(|k| h.eq_ignore_ascii_case(k))
        {
            return Err(ApiError::invalid(
                "csv",
                format!("unknown column `{h}` (expected email, role, groups)"),
            ));
        }
    }
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| {
            ApiError::invalid(format!("rows[{row}]"), format!("unreadable row: {e}"))
        })?;
        let mut errors = Vec::new();
        let email = record.get(email_col).unwrap_or("").to_owned();
        let role = match role_col
            .and_then(|c| record.get(c))
            .filter(|r| !r.is_empty())
        {
            None => None,
            Some(r) => match r.to_ascii_lowercase().as_str() {
                "owner" => Some(OrgRole::Owner),
                "admin" => Some(OrgRole::Admin),
                "member" => Some(OrgRole::Member),
                other => {
                    errors.push(FieldError::new(
                        format!("rows[{row}].role"),
                        format!("unknown role `{other}`"),
                    ));
                    None
                }
            },
        };
        let mut group_ids = Vec::new();
        if let Some(cell) = groups_col.and_then(|c| record.get(c)) {
            for name in cell.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                match groups
                    .iter()
                    .find(|g| g.name.eq_ignore_ascii_case(name) || g.id.to_string() == name)
                {
                    Some(g) => group_ids.push(g.id),
                    None => errors.push(FieldError::new(
                        format!("rows[{row}].groups"),
                        format!("unknown group `{name}`"),
                    )),
                }
            }
        }
        rows.push((
            row,
            InviteSpec {
                email,
                role,
                group_ids,
                profile_id: None,
                valid_for_days: None,
            },
            errors,
        ));
    }
    if rows.is_empty() {
        return Err(ApiError::invalid("csv", "no data rows"));
    }
    if rows.len() > 5000 {
        return Err(ApiError::invalid(
            "csv",
            format!("`{}` rows; at most 5000 per upload", rows.len()),
        ));
    }
    Ok(rows)
}

/// Bulk invite: every row is validated first; if any row is invalid nothing is written and
/// the answer is 422 with the per-row results. Otherwise each row is `created` or
/// `already_member`. Duplicate emails in the file count as invalid.
pub async fn bulk_invite(
    state: &AppState,
    caller: &Caller,
    org_id: OrgId,
    text: &str,
) -> Result<BulkOutcome, ApiError> {
    bulk_invite_with_progress(state, caller, org_id, text, &|_, _| {}).await
}

/// [`bulk_invite`] reporting `(done, total)` after each row (for the CLI's progress bar).
pub async fn bulk_invite_with_progress(
    state: &AppState,
    caller: &Caller,
    org_id: OrgId,
    text: &str,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<BulkOutcome, ApiError> {
    allow(caller, Action::ManageMembers, Resource::Org(org_id))?;
    let parsed = parse_csv(state, org_id, text).await?;
    let total = parsed.len();
    let mut checked = Vec::new();
    let mut any_invalid = false;
    let mut seen = std::collections::HashSet::new();
    for (row, spec, mut errors) in parsed {
        let request = match validate(state, caller, org_id, &spec, &format!("rows[{row}].")).await {
            Ok(r) => Some(r),
            Err(e) => {
                errors.extend(e);
                None
            }
        };
        if let Some(r) = &request
            && !seen.insert(r.email.clone())
        {
            errors.push(FieldError::new(
                format!("rows[{row}].email"),
                format!("`{}` appears twice", r.email),
            ));
        }
        any_invalid |= !errors.is_empty();
        checked.push((row, spec.email, request, errors));
    }
    if any_invalid {
        let rows: Vec<FieldError> = checked.into_iter().flat_map(|(_, _, _, e)| e).collect();
        return Err(ApiError::Validation(rows));
    }
    let mut outcome = BulkOutcome {
        created: 0,
        already_member: 0,
        rows: Vec::new(),
    };
    for (done, (row, email, request, _)) in checked.into_iter().enumerate() {
        let Some(request) = request else { continue };
        if already_member(state, org_id, &request.email).await? {
            outcome.already_member += 1;
            outcome.rows.push(BulkRow {
                row,
                email,
                status: "already_member".to_owned(),
                token: None,
                errors: vec![],
            });
        } else {
            let created = issue(state, request).await?;
            outcome.created += 1;
            outcome.rows.push(BulkRow {
                row,
                email,
                status: "created".to_owned(),
                token: Some(created.token),
                errors: vec![],
            });
        }
        progress(done + 1, total);
    }
    Ok(outcome)
}
