//! The invitation flow (the seed's onboarding flows A and C) beyond one store write: an
//! admin's invitation checked field by field, an address that is already a member refused,
//! one pending invitation per address (inviting again renews it: new link and expiry,
//! emailed again), the email of each written invitation ([`Postman`]), the accept by token
//! (single use, with the invitation's profile applied), and the bulk invite of a CSV (every
//! row checked first, then all written in one transaction or none).
//!
//! Authorization is the caller's: it decides that the actor may manage the organization's
//! members and tells the service what the service cannot know ([`Inviter`]). Refusals are
//! [`OpError`]s with field paths (`email`, `rows[3].groups`), the same for the server's API,
//! its UI, its CLI and an embedder.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use stratai_core::directory::{
    Email, Invitation, InvitationRequest, InvitationStatus, InvitationToken,
    MAX_INVITATION_TTL_DAYS, Membership, OrgRole, Organization, RenewError, User, hash_token,
};
use stratai_core::ports::{DirectoryStore, GuardrailStore};
use stratai_core::{GroupId, OpError, OrgId, ProfileId, StoreError, UserId, ValidationError};

use super::delivery::Postman;

/// Validity of an invitation when the admin states none, in days.
pub const DEFAULT_VALID_DAYS: i64 = 7;

/// The columns a bulk CSV may have (`email` is required).
pub const CSV_COLUMNS: &[&str] = &["email", "role", "groups", "profile"];

/// Most data rows in one bulk CSV.
pub const MAX_CSV_ROWS: usize = 5000;

/// One invitation as an admin asks for it, not yet checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invite {
    /// Invited address, as typed.
    pub email: String,
    /// Role on acceptance (`None`: member).
    pub role: Option<OrgRole>,
    /// Groups joined on acceptance.
    pub group_ids: Vec<GroupId>,
    /// Profile given on acceptance.
    pub profile_id: Option<ProfileId>,
    /// Validity in days (1 to [`MAX_INVITATION_TTL_DAYS`]; `None`: [`DEFAULT_VALID_DAYS`]).
    pub valid_for_days: Option<i64>,
}

/// Who invites, as far as the service needs to know: the caller has already checked that
/// they may manage the organization's members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inviter {
    /// Recorded as the invitation's `invited_by`.
    pub id: UserId,
    /// Whether they may make owners (an invitation with the owner role is refused otherwise).
    pub may_invite_owners: bool,
}

/// An invitation written (new or renewed) and emailed, with its token: the only time the
/// token exists outside the email (the store keeps its hash).
#[derive(Clone, Debug)]
pub struct Issued {
    /// The invitation as stored, with the outcome of its email.
    pub invitation: Invitation,
    /// The secret of its link.
    pub token: InvitationToken,
    /// The address had a pending invitation: it was renewed rather than a second one made.
    pub renewed: bool,
}

/// Checks `invite` for `org_id`: every invalid field (its path after `prefix`, e.g.
/// `rows[3].`), or the request to write. A group or profile that cannot be read counts as
/// unknown.
pub async fn validate(
    directory: &dyn DirectoryStore,
    inviter: Inviter,
    org_id: OrgId,
    invite: &Invite,
    prefix: &str,
) -> Result<InvitationRequest, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let email = Email::new(&invite.email)
        .map_err(|e| errors.push(ValidationError::new(format!("{prefix}email"), e.reason)))
        .ok();
    let role = invite.role.unwrap_or(OrgRole::Member);
    if role == OrgRole::Owner && !inviter.may_invite_owners {
        errors.push(ValidationError::new(
            format!("{prefix}role"),
            "only an owner may invite owners",
        ));
    }
    for (i, g) in invite.group_ids.iter().enumerate() {
        if directory.get_group(org_id, *g).await.is_err() {
            errors.push(ValidationError::new(
                format!("{prefix}group_ids[{i}]"),
                format!("unknown group `{g}`"),
            ));
        }
    }
    if let Some(p) = invite.profile_id {
        match directory.get_profile(p).await {
            Err(_) => errors.push(ValidationError::new(
                format!("{prefix}profile_id"),
                format!("unknown profile `{p}`"),
            )),
            Ok(profile) => {
                if let Ok(org) = directory.get_org(org_id).await
                    && let Some(why) = super::profiles::unavailable(&profile, &org)
                {
                    errors.push(ValidationError::new(format!("{prefix}profile_id"), why));
                }
            }
        }
    }
    let days = invite.valid_for_days.unwrap_or(DEFAULT_VALID_DAYS);
    if !(1..=MAX_INVITATION_TTL_DAYS).contains(&days) {
        errors.push(ValidationError::new(
            format!("{prefix}valid_for_days"),
            format!("`{days}` must be between 1 and {MAX_INVITATION_TTL_DAYS}"),
        ));
    }
    match (email, errors.is_empty()) {
        (Some(email), true) => Ok(InvitationRequest {
            email,
            org_id,
            role,
            group_ids: invite.group_ids.clone(),
            profile_id: invite.profile_id,
            invited_by: Some(inviter.id),
            valid_for: chrono::Duration::days(days),
        }),
        _ => Err(errors),
    }
}

/// Whether a user with `email` is a member of `org_id`.
pub async fn already_member(
    directory: &dyn DirectoryStore,
    org_id: OrgId,
    email: &Email,
) -> Result<bool, StoreError> {
    let Some(user) = directory.find_user_by_email(email).await? else {
        return Ok(false);
    };
    match directory.get_member(org_id, user.id).await {
        Ok(_) => Ok(true),
        Err(StoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The pending invitation of `email` in `org_id`, if any (overdue ones included: they are
/// renewed, not duplicated).
pub async fn pending_for(
    directory: &dyn DirectoryStore,
    org_id: OrgId,
    email: &Email,
) -> Result<Option<Invitation>, StoreError> {
    Ok(directory
        .list_invitations(org_id)
        .await?
        .into_iter()
        .find(|i| &i.email == email && i.status == InvitationStatus::Pending))
}

/// `request` as a new invitation, or as the renewal of the address's pending one
/// (`existing`), not yet written.
pub fn prepare(
    existing: Option<Invitation>,
    request: InvitationRequest,
    now: DateTime<Utc>,
) -> Result<Issued, OpError> {
    match existing {
        Some(mut invitation) => {
            let token = invitation.renew(request, now).map_err(|e| match e {
                RenewError::NotPending(e) => OpError::Conflict(e.to_string()),
                RenewError::Invalid(e) => e.into(),
            })?;
            Ok(Issued {
                invitation,
                token,
                renewed: true,
            })
        }
        None => {
            let (invitation, token) = Invitation::issue(request, now)?;
            Ok(Issued {
                invitation,
                token,
                renewed: false,
            })
        }
    }
}

/// Writes `request` (new, or renewing the address's pending invitation) and emails it. Two
/// concurrent invitations of one address meet the store's one-pending rule: the loser renews
/// the winner's invitation.
pub async fn issue(
    directory: &dyn DirectoryStore,
    postman: &Postman,
    request: InvitationRequest,
) -> Result<Issued, OpError> {
    let org_id = request.org_id;
    let org = directory.get_org(org_id).await?;
    let mut attempt = 0;
    let mut issued = loop {
        attempt += 1;
        let existing = pending_for(directory, org_id, &request.email).await?;
        let prepared = prepare(existing, request.clone(), Utc::now())?;
        match directory
            .save_invitations(org_id, std::slice::from_ref(&prepared.invitation))
            .await
        {
            Ok(()) => break prepared,
            Err(StoreError::Conflict(_)) if attempt < 3 => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if issued.renewed {
        tracing::info!(invitation_id = %issued.invitation.id, %org_id, "invitation renewed and resent");
    }
    deliver(directory, postman, &org, &mut issued).await?;
    Ok(issued)
}

/// Emails a written invitation and records the outcome on it.
async fn deliver(
    directory: &dyn DirectoryStore,
    postman: &Postman,
    org: &Organization,
    issued: &mut Issued,
) -> Result<(), StoreError> {
    postman
        .deliver(directory, &org.name, &mut issued.invitation, &issued.token)
        .await
}

/// Invites one person to `org_id`: emails them a link to the accept page. Inviting an
/// address with a pending invitation renews that invitation; an address that is already a
/// member is a conflict.
pub async fn invite(
    directory: &dyn DirectoryStore,
    postman: &Postman,
    inviter: Inviter,
    org_id: OrgId,
    invite: &Invite,
) -> Result<Issued, OpError> {
    let request = validate(directory, inviter, org_id, invite, "")
        .await
        .map_err(OpError::Invalid)?;
    if already_member(directory, org_id, &request.email).await? {
        return Err(OpError::Conflict(format!(
            "a member with this `email` already exists (`{}`)",
            request.email
        )));
    }
    issue(directory, postman, request).await
}

/// The invitation of `token` (not found for any token that matches none, whatever its state).
pub async fn find(directory: &dyn DirectoryStore, token: &str) -> Result<Invitation, OpError> {
    // Tokens are 64 hex characters; anything else cannot match, so skip the lookup.
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(OpError::NotFound("invitation".to_owned()));
    }
    directory
        .find_invitation_by_token_hash(&hash_token(token))
        .await?
        .ok_or_else(|| OpError::NotFound("invitation".to_owned()))
}

/// What the holder of `token` may see: the invitation as of `now` (an overdue pending one
/// shows as expired) and its organization.
pub async fn lookup(
    directory: &dyn DirectoryStore,
    token: &str,
    now: DateTime<Utc>,
) -> Result<(Invitation, Organization), OpError> {
    let mut invitation = find(directory, token).await?;
    invitation.expire_if_due(now);
    let org = directory.get_org(invitation.org_id).await?;
    Ok((invitation, org))
}

/// Accepts the invitation of `token` for `user` (single use; expiry and address checked
/// atomically by the store), then gives the new member the invitation's profile. The
/// acceptance's refusals (used, revoked, expired, another address, a full group) are
/// [`OpError::Conflict`] or [`OpError::Invalid`]; a failure after joining is the store's.
pub async fn accept(
    directory: &dyn DirectoryStore,
    guardrails: &dyn GuardrailStore,
    token: &str,
    user: &User,
    now: DateTime<Utc>,
) -> Result<Membership, OpError> {
    find(directory, token).await?;
    let membership = directory
        .accept_invitation(&hash_token(token), user, now)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(why) => OpError::Conflict(why),
            StoreError::Invalid(field) => OpError::Invalid(vec![field]),
            other => OpError::Store(other),
        })?;
    let membership = super::profiles::after_join(directory, guardrails, membership).await?;
    tracing::info!(org_id = %membership.org_id, user_id = %user.id, "invitation accepted");
    Ok(membership)
}

/// One data row of a bulk CSV.
#[derive(Clone, Debug)]
pub struct CsvRow {
    /// 1-based data row (the header is row 0).
    pub row: usize,
    /// Line of the file (the header is line 1).
    pub line: u64,
    /// The invitation it asks for.
    pub invite: Invite,
    /// What is wrong with its cells (`rows[N].<column>`, the message saying the line).
    pub errors: Vec<ValidationError>,
}

/// Parses a CSV with a header naming `email` and optionally `role`, `groups` (names or ids
/// separated by `;`) and `profile` (a profile's name or id), resolving group names in
/// `org_id`. Cell errors are kept on their row; a file that cannot be read as a whole (header,
/// an unreadable row, no or too many rows) is refused at once, naming `csv` or the row.
pub async fn parse_csv(
    directory: &dyn DirectoryStore,
    org_id: OrgId,
    text: &str,
) -> Result<Vec<CsvRow>, OpError> {
    let invalid =
        |field: String, reason: String| OpError::from(ValidationError::new(field, reason));
    let groups = directory.list_groups(org_id).await?;
    let profiles = directory.list_profiles().await?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| invalid("csv".into(), format!("unreadable header (line 1): {e}")))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    for h in headers.iter() {
        if !CSV_COLUMNS.iter().any(|k| h.eq_ignore_ascii_case(k)) {
            return Err(invalid(
                "csv".into(),
                format!("unknown column `{h}` (expected {})", CSV_COLUMNS.join(", ")),
            ));
        }
    }
    let email_col = col("email").ok_or_else(|| {
        invalid(
            "csv".into(),
            "the header must name an `email` column".into(),
        )
    })?;
    let (role_col, groups_col, profile_col) = (col("role"), col("groups"), col("profile"));
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| {
            let line = e.position().map_or(row as u64 + 1, csv::Position::line);
            invalid(
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
            errors.push(ValidationError::new(
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
            invite: Invite {
                email,
                role,
                group_ids,
                profile_id,
                valid_for_days: None,
            },
            errors,
        });
        if rows.len() > MAX_CSV_ROWS {
            return Err(invalid(
                "csv".into(),
                format!("more than {MAX_CSV_ROWS} rows in one upload"),
            ));
        }
    }
    if rows.is_empty() {
        return Err(invalid("csv".into(), "no data rows".into()));
    }
    Ok(rows)
}

/// What a bulk invite did with one row.
#[derive(Clone, Debug)]
pub struct BulkRow {
    /// 1-based data row (the header is row 0).
    pub row: usize,
    /// Line of the file (the header is line 1).
    pub line: u64,
    /// The email as given.
    pub email: String,
    /// The invitation written and emailed (`None`: the person is already a member).
    pub invited: Option<Issued>,
}

impl BulkRow {
    /// `created`, `resent` (the address had a pending invitation: it was renewed) or
    /// `already_member`.
    #[must_use]
    pub fn status(&self) -> &'static str {
        match &self.invited {
            None => "already_member",
            Some(issued) if issued.renewed => "resent",
            Some(_) => "created",
        }
    }
}

/// What a bulk invite did.
#[derive(Clone, Debug, Default)]
pub struct BulkOutcome {
    /// Invitations created.
    pub created: usize,
    /// Pending invitations renewed and emailed again.
    pub resent: usize,
    /// Rows skipped because the person is already a member.
    pub already_member: usize,
    /// Per row, in the file's order.
    pub rows: Vec<BulkRow>,
}

/// Bulk invite from the CSV `text` (see [`parse_csv`]): every row is checked first; if any
/// row is invalid nothing is written and the refusal names each bad field of each row and its
/// line. Otherwise all invitations are written in one transaction (all or nothing), then
/// emailed, `progress(done, total)` called after each email and once at the end. An email
/// twice in the file is invalid; an address that is already a member is skipped.
pub async fn bulk_invite(
    directory: &dyn DirectoryStore,
    postman: &Postman,
    inviter: Inviter,
    org_id: OrgId,
    text: &str,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<BulkOutcome, OpError> {
    let org = directory.get_org(org_id).await?;
    let parsed = parse_csv(directory, org_id, text).await?;
    let total = parsed.len();
    let mut checked = Vec::new();
    let mut all_errors = Vec::new();
    let mut seen = HashSet::new();
    for CsvRow {
        row,
        line,
        invite,
        mut errors,
    } in parsed
    {
        let prefix = format!("rows[{row}].");
        let request = match validate(directory, inviter, org_id, &invite, &prefix).await {
            Ok(r) => Some(r),
            Err(e) => {
                errors.extend(e.into_iter().map(|mut f| {
                    f.reason = format!("line {line}: {}", f.reason);
                    f
                }));
                None
            }
        };
        if let Some(r) = &request
            && !seen.insert(r.email.clone())
        {
            errors.push(ValidationError::new(
                format!("rows[{row}].email"),
                format!("line {line}: `{}` appears twice", r.email),
            ));
        }
        all_errors.append(&mut errors);
        checked.push((row, line, invite.email, request));
    }
    if !all_errors.is_empty() {
        return Err(OpError::Invalid(all_errors));
    }
    let pending: HashMap<Email, Invitation> = directory
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
        if already_member(directory, org_id, &request.email).await? {
            rows.push((row, line, email, None));
            continue;
        }
        let existing = pending.get(&request.email).cloned();
        writes.push(prepare(existing, request, now)?);
        rows.push((row, line, email, Some(writes.len() - 1)));
    }
    // One transaction: a failure (a concurrent change, a database error) leaves nothing.
    let invitations: Vec<Invitation> = writes.iter().map(|w| w.invitation.clone()).collect();
    directory.save_invitations(org_id, &invitations).await?;
    let mut delivered = Vec::with_capacity(writes.len());
    for (done, mut write) in writes.into_iter().enumerate() {
        deliver(directory, postman, &org, &mut write).await?;
        delivered.push(Some(write));
        progress(done + 1, total);
    }
    let mut outcome = BulkOutcome {
        rows: Vec::with_capacity(total),
        ..BulkOutcome::default()
    };
    for (row, line, email, written) in rows {
        let invited = match written {
            None => None,
            Some(index) => Some(
                delivered
                    .get_mut(index)
                    .and_then(Option::take)
                    .ok_or_else(|| StoreError::Backend("a bulk row lost its invitation".into()))?,
            ),
        };
        let row = BulkRow {
            row,
            line,
            email,
            invited,
        };
        match &row.invited {
            None => outcome.already_member += 1,
            Some(issued) if issued.renewed => outcome.resent += 1,
            Some(_) => outcome.created += 1,
        }
        outcome.rows.push(row);
    }
    progress(total, total);
    Ok(outcome)
}
