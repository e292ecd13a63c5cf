//! The audit trail (`stratai_core::audit`, recorded by `crate::audit`): an organization's
//! chain for its admins (`/api/organizations/{id}/audit`), every chain for operators
//! (`/api/audit`); each listing paginated newest first with filters, each chain verifiable
//! (`.../verify`: the first altered, removed or reordered entry) and exported as JSON lines.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
use stratai_core::audit::{
    AuditChain, AuditCursor, AuditEntry, AuditQuery, ChainReport, StoredChain, verify_chain,
};
use stratai_core::{OrgId, UserId};

use super::{ApiPath, Caller, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};

/// Entries per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page.
pub const MAX_LIMIT: u32 = 500;

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
    fn query(&self) -> Result<AuditQuery, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("between 1 and {MAX_LIMIT}"),
            ));
        }
        if let (Some(since), Some(until)) = (self.since, self.until)
            && until <= since
        {
            return Err(ApiError::invalid("until", "must be after `since`"));
        }
        let before = self
            .before
            .as_deref()
            .map(|text| {
                AuditCursor::decode(text)
                    .ok_or_else(|| ApiError::invalid("before", "not a page cursor of this listing"))
            })
            .transpose()?;
        Ok(AuditQuery {
            actor: self.actor,
            action: self.action.clone().filter(|s| !s.is_empty()),
            target: self.target.clone().filter(|s| !s.is_empty()),
            request_id: self.request_id.clone().filter(|s| !s.is_empty()),
            since: self.since,
            until: self.until,
            before,
            limit,
        })
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

fn page(entries: Vec<AuditEntry>, limit: u32) -> AuditPage {
    let next = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| AuditCursor::of(e).encode()))
        .flatten();
    AuditPage { entries, next }
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
    state.stores.directory.get_org(org_id).await?;
    let query = p.query()?;
    let entries = state.stores.audit.list_audit(org_id, &query).await?;
    Ok(ApiJson(page(entries, query.limit)))
}

fn chain_param(text: &str) -> Result<AuditChain, ApiError> {
    if text == "platform" {
        return Ok(AuditChain::Platform);
    }
    text.parse::<OrgId>()
        .map(AuditChain::Org)
        .map_err(|_| ApiError::invalid("org_id", "an organization id or `platform`"))
}

/// Every chain's entries, or one chain's (operators).
pub async fn list_all(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Result<ApiJson<AuditPage>, ApiError> {
    allow(&caller, Action::ViewAudit, Resource::Platform)?;
    let query = p.query()?;
    let audit = &state.stores.audit;
    let entries = match p.org_id.as_deref().map(chain_param).transpose()? {
        None => audit.list_all_audit(&query).await?,
        Some(AuditChain::Platform) => audit.list_platform_audit(&query).await?,
        Some(AuditChain::Org(org)) => {
            state.stores.directory.get_org(org).await?;
            audit.list_audit(org, &query).await?
        }
    };
    Ok(ApiJson(page(entries, query.limit)))
}

async fn stored(state: &AppState, chain: AuditChain) -> Result<StoredChain, ApiError> {
    Ok(match chain {
        AuditChain::Org(org) => state.stores.audit.audit_chain(org).await?,
        AuditChain::Platform => state.stores.audit.platform_audit_chain().await?,
    })
}

/// Verifies an organization's chain: every entry intact and none missing, or the first that
/// is not (its admins; operators).
pub async fn verify_org(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<ApiJson<ChainReport>, ApiError> {
    allow(&caller, Action::ViewAudit, Resource::Org(org_id))?;
    state.stores.directory.get_org(org_id).await?;
    let chain = AuditChain::Org(org_id);
    Ok(ApiJson(verify_chain(chain, &stored(&state, chain).await?)))
}

/// Verifies the platform chain and every organization's (operators).
pub async fn verify_all(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<ApiJson<Vec<ChainReport>>, ApiError> {
    allow(&caller, Action::ViewAudit, Resource::Platform)?;
    let mut chains = vec![AuditChain::Platform];
    chains.extend(
        state
            .stores
            .directory
            .list_orgs()
            .await?
            .into_iter()
            .map(|o| AuditChain::Org(o.id)),
    );
    let mut reports = Vec::with_capacity(chains.len());
    for chain in chains {
        reports.push(verify_chain(chain, &stored(&state, chain).await?));
    }
    Ok(ApiJson(reports))
}

/// Entries per page of a streamed export.
const EXPORT_PAGE: u32 = 500;

/// `chain` as JSON lines, oldest first, streamed page by page from the store (one page of
/// entries in memory at a time, whatever the chain's length).
fn jsonl(state: AppState, chain: AuditChain) -> Response {
    let pages = futures::stream::try_unfold(Some(0_i64), move |after| {
        let state = state.clone();
        async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let page = match chain {
                AuditChain::Org(org) => {
                    state.stores.audit.audit_page(org, after, EXPORT_PAGE).await
                }
                AuditChain::Platform => {
                    state
                        .stores
                        .audit
                        .platform_audit_page(after, EXPORT_PAGE)
                        .await
                }
            };
            let page = page.map_err(|e| {
                tracing::error!(error = %e, "audit export aborted");
                std::io::Error::other("audit export failed")
            })?;
            let Some(last) = page.last().map(|e| e.seq) else {
                return Ok(None);
            };
            let mut body = Vec::new();
            for entry in &page {
                serde_json::to_writer(&mut body, entry).map_err(std::io::Error::other)?;
                body.push(b'\n');
            }
            let next = (page.len() == EXPORT_PAGE as usize).then_some(last);
            Ok::<_, std::io::Error>(Some((body, next)))
        }
    });
    let mut response = Body::from_stream(pages).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"audit.jsonl\""),
    );
    response
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
    Ok(jsonl(state, AuditChain::Org(org_id)))
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
    let chain = p
        .org_id
        .as_deref()
        .map(chain_param)
        .transpose()?
        .unwrap_or(AuditChain::Platform);
    if let AuditChain::Org(org) = chain {
        state.stores.directory.get_org(org).await?;
    }
    Ok(jsonl(state, chain))
}
