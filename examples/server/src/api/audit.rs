//! The audit trail (`stratai_core::audit`, recorded by `crate::audit`): an organization's
//! chain for its admins (`/api/organizations/{id}/audit`), every chain for operators
//! (`/api/audit`); each listing paginated newest first with filters, each chain verifiable
//! (`.../verify`: the first altered, removed or reordered entry) and exported as JSON lines.

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
use stratai_core::audit::{AuditChain, AuditEntry, ChainReport};
use stratai_core::{OrgId, UserId};
use stratai_store::admin::audit::{self, AuditFilter, AuditListing};

use super::{ApiPath, Caller, allow, attachment};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};

/// Query of the audit listings.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// `/api/audit` only: one chain, an organization's id or `platform`.
    #[serde(default)]
    pub org_id: Option<String>,
    /// Only this person's changes.
    #[serde(default)]
    pub actor: Option<UserId>,
    /// Only actions starting with this (`member.` or `member.update`).
    #[serde(default)]
    pub action: Option<String>,
    /// Only targets starting with this (`member/<org>/<user>`).
    #[serde(default)]
    pub target: Option<String>,
    /// Only the changes of this request (`x-request-id`).
    #[serde(default)]
    pub request_id: Option<String>,
    /// Made at or after (RFC 3339).
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Made before (RFC 3339).
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// The previous page's `next`.
    #[serde(default)]
    pub before: Option<String>,
    /// Page size (1 to 500, default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

impl AuditParams {
    fn filter(self) -> AuditFilter {
        AuditFilter {
            actor: self.actor,
            action: self.action,
            target: self.target,
            request_id: self.request_id,
            since: self.since,
            until: self.until,
            before: self.before,
            limit: self.limit,
        }
    }
}

/// A page of audit entries, newest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// The next page's `before`, when the page is full.
    pub next: Option<String>,
}

impl From<AuditListing> for AuditPage {
    fn from(l: AuditListing) -> Self {
        Self {
            entries: l.entries,
            next: l.next,
        }
    }
}

/// An organization's audit entries (its admins; operators).
pub async fn list_org(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Result<ApiJson<AuditPage>, ApiError> {
    allow(&caller, Action::ViewAudit, Resource::Org(org_id))?;
    if p.org_id.is_some() {
        return Err(ApiError::invalid(
            "org_id",
            "the organization is in the path; `org_id` filters /api/audit",
        ));
    }
    let s = &state.stores;
    let listing = audit::list_org(&*s.directory, &*s.audit, org_id, &p.filter()).await?;
    Ok(ApiJson(listing.into()))
}

/// Every chain's entries, or one chain's (operators).
pub async fn list_all(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Result<ApiJson<AuditPage>, ApiError> {
    allow(&caller, Action::ViewAudit, Resource::Platform)?;
    let chain = p.org_id.clone();
    let s = &state.stores;
    let listing = audit::list_all(&*s.directory, &*s.audit, chain.as_deref(), &p.filter()).await?;
    Ok(ApiJson(listing.into()))
}

/// Verifies an organization's chain: every entry intact and none missing, or the first that
/// is not (its admins; operators).
pub async fn verify_org(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<ApiJson<ChainReport>, ApiError> {
    allow(&caller, Action::ViewAudit, Resource::Org(org_id))?;
    let s = &state.stores;
    Ok(ApiJson(
        audit::verify_org(&*s.directory, &*s.audit, org_id).await?,
    ))
}

/// Verifies the platform chain and every organization's (operators).
pub async fn verify_all(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<ApiJson<Vec<ChainReport>>, ApiError> {
    allow(&caller, Action::ViewAudit, Resource::Platform)?;
    let s = &state.stores;
    Ok(ApiJson(audit::verify_all(&*s.directory, &*s.audit).await?))
}

/// `chain` as JSON lines, oldest first, streamed page by page from the store (one page of
/// entries in memory at a time, whatever the chain's length).
fn jsonl(state: &AppState, chain: AuditChain) -> Response {
    let pages = audit::export_jsonl(state.stores.audit.clone(), chain).map_err(|e| {
        tracing::error!(error = %e, "audit export aborted");
        std::io::Error::other("audit export failed")
    });
    attachment(
        Body::from_stream(pages),
        "application/x-ndjson",
        "audit.jsonl",
    )
}

/// An organization's chain as JSON lines, oldest first: one entry per line, with its hashes,
/// so a copy can be verified elsewhere (its admins; operators).
pub async fn export_org(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<Response, ApiError> {
    allow(&caller, Action::ViewAudit, Resource::Org(org_id))?;
    state.stores.directory.get_org(org_id).await?;
    Ok(jsonl(&state, AuditChain::Org(org_id)))
}

/// Query of `GET /api/audit/export`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// The chain: an organization's id or `platform` (default).
    #[serde(default)]
    pub org_id: Option<String>,
}

/// One chain as JSON lines, oldest first (operators): the platform chain unless `org_id`
/// names an organization.
pub async fn export_all(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<ExportParams>,
) -> Result<Response, ApiError> {
    allow(&caller, Action::ViewAudit, Resource::Platform)?;
    let chain = audit::export_chain(&*state.stores.directory, p.org_id.as_deref()).await?;
    Ok(jsonl(&state, chain))
}
