//! Reading the audit trail over the stores: the listings' filters checked and paged newest
//! first, chains verified (one, or the platform's and every organization's), a chain exported
//! as JSON lines page by page. Who may read which chain is the caller's decision.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use stratai_core::audit::{
    AuditChain, AuditCursor, AuditEntry, AuditQuery, ChainReport, StoredChain, verify_chain,
};
use stratai_core::ports::{AuditStore, DirectoryStore};
use stratai_core::{OpError, OrgId, StoreError, UserId, ValidationError};

/// Entries per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page.
pub const MAX_LIMIT: u32 = 500;
/// Entries per page of an export.
pub const EXPORT_PAGE: u32 = 500;

/// A listing's filters as asked, unchecked.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only this person's changes.
    pub actor: Option<UserId>,
    /// Only actions starting with this (empty is none).
    pub action: Option<String>,
    /// Only targets starting with this (empty is none).
    pub target: Option<String>,
    /// Only the changes of this request (empty is none).
    pub request_id: Option<String>,
    /// Made at or after.
    pub since: Option<DateTime<Utc>>,
    /// Made before.
    pub until: Option<DateTime<Utc>>,
    /// The previous page's cursor.
    pub before: Option<String>,
    /// Page size, 1 to [`MAX_LIMIT`] (default [`DEFAULT_LIMIT`]).
    pub limit: Option<u32>,
}

impl AuditFilter {
    /// The store's query, refusing the first invalid field (`limit`, `until`, `before`).
    pub fn query(&self) -> Result<AuditQuery, ValidationError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ValidationError::new(
                "limit",
                format!("between 1 and {MAX_LIMIT}"),
            ));
        }
        if let (Some(since), Some(until)) = (self.since, self.until)
            && until <= since
        {
            return Err(ValidationError::new("until", "must be after `since`"));
        }
        let before = self
            .before
            .as_deref()
            .map(|text| {
                AuditCursor::decode(text).ok_or_else(|| {
                    ValidationError::new("before", "not a page cursor of this listing")
                })
            })
            .transpose()?;
        let text = |t: &Option<String>| t.clone().filter(|s| !s.is_empty());
        Ok(AuditQuery {
            actor: self.actor,
            action: text(&self.action),
            target: text(&self.target),
            request_id: text(&self.request_id),
            since: self.since,
            until: self.until,
            before,
            limit,
        })
    }
}

/// A page of entries, newest first.
#[derive(Debug)]
pub struct AuditListing {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// The next page's `before`, when the page is full.
    pub next: Option<String>,
}

fn listing(entries: Vec<AuditEntry>, limit: u32) -> AuditListing {
    let next = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| AuditCursor::of(e).encode()))
        .flatten();
    AuditListing { entries, next }
}

/// The chain a parameter names: an organization's id or `platform` (refused as `org_id`).
pub fn chain_param(text: &str) -> Result<AuditChain, ValidationError> {
    if text == "platform" {
        return Ok(AuditChain::Platform);
    }
    text.parse::<OrgId>()
        .map(AuditChain::Org)
        .map_err(|_| ValidationError::new("org_id", "an organization id or `platform`"))
}

/// A page of organization `org_id`'s entries (not found when it does not exist).
pub async fn list_org(
    directory: &dyn DirectoryStore,
    audit: &dyn AuditStore,
    org_id: OrgId,
    filter: &AuditFilter,
) -> Result<AuditListing, OpError> {
    directory.get_org(org_id).await?;
    let query = filter.query()?;
    let entries = audit.list_audit(org_id, &query).await?;
    Ok(listing(entries, query.limit))
}

/// A page of every chain's entries, or of the one `chain` names ([`chain_param`]).
pub async fn list_all(
    directory: &dyn DirectoryStore,
    audit: &dyn AuditStore,
    chain: Option<&str>,
    filter: &AuditFilter,
) -> Result<AuditListing, OpError> {
    let query = filter.query()?;
    let entries = match chain.map(chain_param).transpose()? {
        None => audit.list_all_audit(&query).await?,
        Some(AuditChain::Platform) => audit.list_platform_audit(&query).await?,
        Some(AuditChain::Org(org)) => {
            directory.get_org(org).await?;
            audit.list_audit(org, &query).await?
        }
    };
    Ok(listing(entries, query.limit))
}

async fn stored(audit: &dyn AuditStore, chain: AuditChain) -> Result<StoredChain, StoreError> {
    match chain {
        AuditChain::Org(org) => audit.audit_chain(org).await,
        AuditChain::Platform => audit.platform_audit_chain().await,
    }
}

/// Verifies organization `org_id`'s chain: every entry intact and none missing, or the
/// first that is not (not found when the organization does not exist).
pub async fn verify_org(
    directory: &dyn DirectoryStore,
    audit: &dyn AuditStore,
    org_id: OrgId,
) -> Result<ChainReport, OpError> {
    directory.get_org(org_id).await?;
    let chain = AuditChain::Org(org_id);
    Ok(verify_chain(chain, &stored(audit, chain).await?))
}

/// Verifies the platform chain, then every organization's.
pub async fn verify_all(
    directory: &dyn DirectoryStore,
    audit: &dyn AuditStore,
) -> Result<Vec<ChainReport>, OpError> {
    let mut chains = vec![AuditChain::Platform];
    chains.extend(
        directory
            .list_orgs()
            .await?
            .into_iter()
            .map(|o| AuditChain::Org(o.id)),
    );
    let mut reports = Vec::with_capacity(chains.len());
    for chain in chains {
        reports.push(verify_chain(chain, &stored(audit, chain).await?));
    }
    Ok(reports)
}

/// The chain of an export: `chain` ([`chain_param`], default the platform's), its
/// organization known.
pub async fn export_chain(
    directory: &dyn DirectoryStore,
    chain: Option<&str>,
) -> Result<AuditChain, OpError> {
    let chain = chain
        .map(chain_param)
        .transpose()?
        .unwrap_or(AuditChain::Platform);
    if let AuditChain::Org(org) = chain {
        directory.get_org(org).await?;
    }
    Ok(chain)
}

/// `chain` as JSON lines, oldest first: one chunk per page of [`EXPORT_PAGE`] entries read
/// from the store, so one page is in memory at a time whatever the chain's length. An
/// error ends the stream.
pub fn export_jsonl(
    audit: Arc<dyn AuditStore>,
    chain: AuditChain,
) -> BoxStream<'static, Result<Vec<u8>, StoreError>> {
    futures::stream::try_unfold(Some(0_i64), move |after| {
        let audit = Arc::clone(&audit);
        async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let page = match chain {
                AuditChain::Org(org) => audit.audit_page(org, after, EXPORT_PAGE).await?,
                AuditChain::Platform => audit.platform_audit_page(after, EXPORT_PAGE).await?,
            };
            let Some(last) = page.last().map(|e| e.seq) else {
                return Ok(None);
            };
            let mut body = Vec::new();
            for entry in &page {
                serde_json::to_writer(&mut body, entry)
                    .map_err(|e| StoreError::Backend(e.to_string()))?;
                body.push(b'\n');
            }
            let next = (page.len() == EXPORT_PAGE as usize).then_some(last);
            Ok(Some((body, next)))
        }
    })
    .boxed()
}
