//! The audit trail in memory: one vector per chain, appended under the store's audit lock.

use std::collections::BTreeMap;

use async_trait::async_trait;
use stratai_core::audit::{
    AuditChain, AuditCursor, AuditDraft, AuditEntry, AuditQuery, ChainHead, GENESIS_HASH,
    StoredChain,
};
use stratai_core::ports::AuditStore;
use stratai_core::{OrgId, StoreError};

use super::MemoryStore;
use crate::audited::take_pending;

/// Every chain's entries in `seq` order.
pub(super) type Chains = BTreeMap<AuditChain, Vec<AuditEntry>>;

impl MemoryStore {
    /// Appends the audit entry of the change just made, when one is pending
    /// ([`crate::audited`]): in the same call as the change, after it succeeded, with nothing
    /// that can fail in between. `after` is the write's result, when the entry's after-state
    /// is what the write returned.
    pub(super) async fn commit_change(
        &self,
        after: Option<serde_json::Value>,
    ) -> Result<(), StoreError> {
        if let Some(entry) = take_pending(after) {
            self.append_unchecked(entry.chain, &entry.draft).await;
        }
        Ok(())
    }

    async fn append_unchecked(&self, chain: AuditChain, draft: &AuditDraft) -> AuditEntry {
        let mut chains = self.audit.write().await;
        let entries = chains.entry(chain).or_default();
        let (seq, prev) = entries.last().map_or((1, GENESIS_HASH.to_owned()), |e| {
            (e.seq + 1, e.hash.clone())
        });
        let entry = AuditEntry::seal(chain, seq, &prev, draft);
        entries.push(entry.clone());
        entry
    }

    async fn append_to(
        &self,
        chain: AuditChain,
        draft: &AuditDraft,
    ) -> Result<AuditEntry, StoreError> {
        if let AuditChain::Org(org) = chain
            && !self.state.read().await.orgs.contains_key(&org)
        {
            return Err(StoreError::not_found("organization", org));
        }
        Ok(self.append_unchecked(chain, draft).await)
    }

    async fn list_in(&self, chain: Option<AuditChain>, query: &AuditQuery) -> Vec<AuditEntry> {
        let chains = self.audit.read().await;
        let mut out: Vec<AuditEntry> = chains
            .iter()
            .filter(|(c, _)| chain.is_none_or(|want| **c == want))
            .flat_map(|(_, entries)| entries.iter())
            .filter(|e| query.matches(e))
            .cloned()
            .collect();
        out.sort_by(|a, b| AuditCursor::of(b).key().cmp(&AuditCursor::of(a).key()));
        out.truncate(query.limit as usize);
        out
    }

    async fn chain_of(&self, chain: AuditChain) -> StoredChain {
        let entries = self
            .audit
            .read()
            .await
            .get(&chain)
            .cloned()
            .unwrap_or_default();
        let head = entries.last().map(|e| ChainHead {
            seq: e.seq,
            hash: e.hash.clone(),
        });
        StoredChain { entries, head }
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn append_audit(&self, org: OrgId, draft: &AuditDraft) -> Result<AuditEntry, StoreError> {
        self.append_to(AuditChain::Org(org), draft).await
    }

    async fn append_platform_audit(&self, draft: &AuditDraft) -> Result<AuditEntry, StoreError> {
        self.append_to(AuditChain::Platform, draft).await
    }

    async fn list_audit(
        &self,
        org: OrgId,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self.list_in(Some(AuditChain::Org(org)), query).await)
    }

    async fn list_platform_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self.list_in(Some(AuditChain::Platform), query).await)
    }

    async fn list_all_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self.list_in(None, query).await)
    }

    async fn audit_chain(&self, org: OrgId) -> Result<StoredChain, StoreError> {
        Ok(self.chain_of(AuditChain::Org(org)).await)
    }

    async fn platform_audit_chain(&self) -> Result<StoredChain, StoreError> {
        Ok(self.chain_of(AuditChain::Platform).await)
    }

    async fn audit_page(
        &self,
        org: OrgId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.page_of(AuditChain::Org(org), after_seq, limit).await
    }

    async fn platform_audit_page(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.page_of(AuditChain::Platform, after_seq, limit).await
    }
}

impl MemoryStore {
    /// A page of `chain` (see [`AuditStore::audit_page`]).
    async fn page_of(
        &self,
        chain: AuditChain,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let chains = self.audit.read().await;
        Ok(chains
            .get(&chain)
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e.seq > after_seq)
                    .take(limit as usize)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }
}
