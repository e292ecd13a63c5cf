//! Invitations: create (the raw token is answered once and emailed, only its hash is
//! stored), look up by token, accept (single use, checks expiry and email, atomic in the
//! store), revoke; bulk invite (all rows or none). One pending invitation per address per
//! organization: inviting again renews it (new link and expiry, emailed again).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
use stratai_core::directory::{
    Email, Invitation, InvitationDelivery, InvitationRequest, InvitationStatus, InvitationToken,
    Membership, OrgRole, Organization, RenewError, hash_token,
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
    if let Some(p) = spec.profile_id {
        match state.stores.directory.get_profile(p).await {
            Err(_) => errors.push(FieldError::new(
                format!("{prefix}profile_id"),
                format!("unknown profile `{p}`"),
            )),
            Ok(profile) => {
                if let Ok(org) = state.stores.directory.get_org(org_id).await
                    && let Some(why) = stratai_store::people::profiles::unavailable(&profile, &org)
                {
                    errors.push(FieldError::new(format!("{prefix}profile_id"), why));
                }
            }
        }
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

/// The pending invitation of `email` in `org`, if any (overdue ones included: they are
/// renewed, not duplicated).
async fn pending_for(
    state: &AppState,
    org_id: OrgId,
    email: &Email,
) -> Result<Option<Invitation>, ApiError> {
    Ok(state
        .stores
        .directory
        .list_invitations(org_id)
        .await?
        .into_iter()
        .find(|i| &i.email == email && i.status == InvitationStatus::Pending))
}

/// `request` as a new invitation, or as the renewal of the address's pending one.
fn prepare(
    existing: Option<Invitation>,
    request: InvitationRequest,
    now: DateTime<Utc>,
) -> Result<(Invitation, InvitationToken, bool), ApiError> {
    match existing {
        Some(mut invitation) => {
            let token = invitation.renew(request, now).map_err(|e| match e {
                RenewError::NotPending(e) => ApiError::Conflict(e.to_string()),
                RenewError::Invalid(e) => e.into(),
            })?;
            Ok((invitation, token, true))
        }
        None => {
            let (invitation, token) = Invitation::issue(request, now)?;
            Ok((invitation, token, false))
        }
    }
}

/// Emails each written invitation and answers them with their tokens.
async fn deliver_all(
    state: &AppState,
    org: &Organization,
    written: Vec<(Invitation, InvitationToken, bool)>,
) -> Result<Vec<InvitationCreated>, ApiError> {
    let mut out = Vec::with_capacity(written.len());
    for (mut invitation, token, resent) in written {
        state
            .mail
            .deliver(
                state.stores.directory.as_ref(),
                &org.name,
                &mut invitation,
                &token,
            )
            .await?;
        out.push(InvitationCreated {
            invitation: InvitationView::from(&invitation),
            token: token.expose().to_owned(),
            resent,
        });
    }
    Ok(out)
}

/// Writes `request` (new, or renewing the address's pending invitation) and emails it. Two
/// concurrent invitations of one address meet the store's one-pending rule: the loser renews
/// the winner's invitation.
async fn issue(
    state: &AppState,
    request: InvitationRequest,
) -> Result<InvitationCreated, ApiError> {
    let org_id = request.org_id;
    let org = state.stores.directory.get_org(org_id).await?;
    let mut attempt = 0;
    let prepared = loop {
        attempt += 1;
        let existing = pending_for(state, org_id, &request.email).await?;
        let prepared = prepare(existing, request.clone(), Utc::now())?;
        match state
            .stores
            .directory
            .save_invitations(org_id, std::slice::from_ref(&prepared.0))
            .await
        {
            Ok(()) => break prepared,
            Err(StoreError::Conflict(_)) if attempt < 3 => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if prepared.2 {
        tracing::info!(invitation_id = %prepared.0.id, %org_id, "invitation renewed and resent");
    }
    deliver_all(state, &org, vec![prepared])
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("no invitation written"))
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
    let request = validate(state, caller, org_id, &spec, "")
        .await
        .map_err(ApiError::Validation)?;
    if already_member(state, org_id, &request.email).await? {
        return Err(ApiError::Conflict(format!(
            "a member with this `email` already exists (`{}`)",
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

/// The invitation of `token` (NotFound for any token that matches none).
pub async fn find(state: &AppState, token: &str) -> Result<Invitation, ApiError> {
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
    let membership = stratai_store::people::profiles::after_join(
        state.stores.directory.as_ref(),
        state.stores.guardrails.as_ref(),
        membership,
    )
    .await?;
    tracing::info!(org_id = %membership.org_id, user_id = %caller.id(), "invitation accepted");
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

/// The columns a bulk CSV may have (`email` is required).
pub const CSV_COLUMNS: &[&str] = &["email", "role", "groups", "profile"];

/// Most rows in one upload.
pub const MAX_CSV_ROWS: usize = 5000;

/// One parsed data row.
struct CsvRow {
    row: usize,
    line: u64,
    spec: InviteSpec,
    errors: Vec<FieldError>,
}

/// Parses a CSV with a header naming `email` and optionally `role`, `groups` (names or ids
/// separated by `;`) and `profile` (a profile's name or id) into invite specs, resolving
/// group names in `org_id`. Field errors name `rows[N].<column>` and say the line.
async fn parse_csv(state: &AppState, org_id: OrgId, text: &str) -> Result<Vec<CsvRow>, ApiError> {
    let groups = state.stores.directory.list_groups(org_id).await?;
    let profiles = state.stores.directory.list_profiles().await?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| ApiError::invalid("csv", format!("unreadable header (line 1): {e}")))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    for h in headers.iter() {
        if !CSV_COLUMNS.iter().any(|k| h.eq_ignore_ascii_case(k)) {
            return Err(ApiError::invalid(
                "csv",
                format!("unknown column `{h}` (expected {})", CSV_COLUMNS.join(", ")),
            ));
        }
    }
    let email_col = col("email")
        .ok_or_else(|| ApiError::invalid("csv", "the header must name an `email` column"))?;
    let (role_col, groups_col, profile_col) = (col("role"), col("groups"), col("profile"));
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| {
            let line = e.position().map_or(row as u64 + 1, csv::Position::line);
            ApiError::invalid(
                format!("rows[{row}]"),
                format!("line {line}: unreadable row: {e}"),
            )
        })?;
        let line = record
            .position()
            .map_or(row as u64 + 1, csv::Position::line);
        let cell = |c: Option<usize>| c.and_then(|c| record.get(c)).filter(|v| !v.is_empty());
        let mut errors = Vec::new();
        let mut error = |column: &str, message: String| {
            errors.push(FieldError::new(
                format!("rows[{row}].{column}"),
                format!("line {line}: {message}"),
            ));
        };
        let email = record.get(email_col).unwrap_or("").to_owned();
        let role = match cell(role_col) {
            None => None,
            Some(r) => match r.to_ascii_lowercase().as_str() {
                "owner" => Some(OrgRole::Owner),
                "admin" => Some(OrgRole::Admin),
                "member" => Some(OrgRole::Member),
                other => {
                    error(
                        "role",
                        format!("unknown role `{other}` (owner, admin, member)"),
                    );
                    None
                }
            },
        };
        let mut group_ids = Vec::new();
        for name in cell(groups_col)
            .unwrap_or("")
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match groups
                .iter()
                .find(|g| g.name.eq_ignore_ascii_case(name) || g.id.to_string() == name)
            {
                Some(g) => group_ids.push(g.id),
                None => error("groups", format!("unknown group `{name}`")),
            }
        }
        let profile_id = cell(profile_col).and_then(|name| {
            match profiles
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(name) || p.id.to_string() == name)
            {
                Some(p) => Some(p.id),
                None => {
                    error("profile", format!("unknown profile `{name}`"));
                    None
                }
            }
        });
        rows.push(CsvRow {
            row,
            line,
            spec: InviteSpec {
                email,
                role,
                group_ids,
                profile_id,
                valid_for_days: None,
            },
            errors,
        });
        if rows.len() > MAX_CSV_ROWS {
            return Err(ApiError::invalid(
                "csv",
                format!("more than {MAX_CSV_ROWS} rows in one upload"),
            ));
        }
    }
    if rows.is_empty() {
        return Err(ApiError::invalid("csv", "no data rows"));
    }
    Ok(rows)
}

/// Bulk invite: every row is validated first; if any row is invalid nothing is written and
/// the answer is 422 naming each bad row and its line. Otherwise all invitations are written
/// in one transaction (all or nothing), then emailed; each row is `created`, `resent` or
/// `already_member`. An email twice in the file is invalid.
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
    let org = state.stores.directory.get_org(org_id).await?;
    let parsed = parse_csv(state, org_id, text).await?;
    let total = parsed.len();
    let mut checked = Vec::new();
    let mut all_errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for CsvRow {
        row,
        line,
        spec,
        mut errors,
    } in parsed
    {
        let request = match validate(state, caller, org_id, &spec, &format!("rows[{row}].")).await {
            Ok(r) => Some(r),
            Err(e) => {
                errors.extend(e.into_iter().map(|mut f| {
                    f.message = format!("line {line}: {}", f.message);
                    f
                }));
                None
            }
        };
        if let Some(r) = &request
            && !seen.insert(r.email.clone())
        {
            errors.push(FieldError::new(
                format!("rows[{row}].email"),
                format!("line {line}: `{}` appears twice", r.email),
            ));
        }
        all_errors.append(&mut errors);
        checked.push((row, line, spec.email, request));
    }
    if !all_errors.is_empty() {
        return Err(ApiError::Validation(all_errors));
    }
    let pending: std::collections::HashMap<Email, Invitation> = state
        .stores
        .directory
        .list_invitations(org_id)
        .await?
        .into_iter()
        .filter(|i| i.status == InvitationStatus::Pending)
        .map(|i| (i.email.clone(), i))
        .collect();
    let now = Utc::now();
    let mut rows = Vec::with_capacity(total);
    let mut writes = Vec::new();
    for (row, line, email, request) in checked {
        let Some(request) = request else { continue };
        if already_member(state, org_id, &request.email).await? {
            rows.push((row, line, email, None));
            continue;
        }
        let existing = pending.get(&request.email).cloned();
        writes.push(prepare(existing, request, now)?);
        rows.push((row, line, email, Some(writes.len() - 1)));
    }
    // One transaction: a failure (a concurrent change, a database error) leaves nothing.
    let invitations: Vec<Invitation> = writes.iter().map(|(i, _, _)| i.clone()).collect();
    state
        .stores
        .directory
        .save_invitations(org_id, &invitations)
        .await?;
    let mut outcome = BulkOutcome {
        created: 0,
        resent: 0,
        already_member: 0,
        rows: Vec::with_capacity(total),
    };
    let mut delivered = Vec::with_capacity(writes.len());
    for (done, write) in writes.into_iter().enumerate() {
        delivered.extend(deliver_all(state, &org, vec![write]).await?);
        progress(done + 1, total);
    }
    for (row, line, email, written) in rows {
        let Some(index) = written else {
            outcome.already_member += 1;
            outcome.rows.push(BulkRow {
                row,
                line,
                email,
                status: "already_member".to_owned(),
                token: None,
                invitation: None,
            });
            continue;
        };
        let Some(created) = delivered.get(index) else {
            return Err(ApiError::internal("a bulk row lost its invitation"));
        };
        let status = if created.resent {
            outcome.resent += 1;
            "resent"
        } else {
            outcome.created += 1;
            "created"
        };
        outcome.rows.push(BulkRow {
            row,
            line,
            email,
            status: status.to_owned(),
            token: Some(created.token.clone()),
            invitation: Some(created.invitation.clone()),
        });
    }
    progress(total, total);
    Ok(outcome)
}
