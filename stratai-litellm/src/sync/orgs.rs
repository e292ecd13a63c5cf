//! LiteLLM organizations (Enterprise only): whether the proxy has them, and a StratAI
//! organization pushed as one.
//!
//! Request and answer shapes follow LiteLLM 1.108's own source
//! (`proxy/management_endpoints/organization_endpoints.py`); the kit's proxy has no license,
//! so this path is tested against a fake built from those shapes (`tests/organizations.rs`),
//! never against a licensed proxy.

use std::sync::atomic::Ordering;

use stratai_core::directory::Organization;
use stratai_core::ids::OrgId;

use super::mapping::{metadata_includes, same_budget, sorted};
use super::{
    Applied, DesiredOrg, OrgMapping, Organizations, SyncEngine, SyncError, desired_org,
    org_metadata, recorded_version,
};
use crate::error::LiteLlmError;
use crate::types::{OrganizationNew, OrganizationUpdate};

const UNKNOWN: u8 = 0;
const ORGANIZATIONS: u8 = 1;
const METADATA: u8 = 2;

fn decode(value: u8) -> Option<OrgMapping> {
    match value {
        ORGANIZATIONS => Some(OrgMapping::Organizations),
        METADATA => Some(OrgMapping::Metadata),
        _ => None,
    }
}

fn encode(mapping: OrgMapping) -> u8 {
    match mapping {
        OrgMapping::Organizations => ORGANIZATIONS,
        OrgMapping::Metadata => METADATA,
    }
}

impl SyncEngine {
    /// How organizations are mapped: fixed by [`Organizations::On`] / [`Organizations::Off`];
    /// in [`Organizations::Auto`], what the proxy answered (`None` until the first push or
    /// reconcile pass that needed it).
    pub fn org_mapping(&self) -> Option<OrgMapping> {
        match self.config.organizations {
            Organizations::Off => Some(OrgMapping::Metadata),
            Organizations::On => Some(OrgMapping::Organizations),
            Organizations::Auto => decode(self.mapping.load(Ordering::Acquire)),
        }
    }

    fn remember(&self, mapping: OrgMapping) {
        let previous = self.mapping.swap(encode(mapping), Ordering::AcqRel);
        if previous == encode(mapping) {
            return;
        }
        match mapping {
            OrgMapping::Organizations => tracing::info!(
                "LiteLLM offers organizations (Enterprise): each StratAI organization is a \
                 LiteLLM organization holding its teams and keys"
            ),
            OrgMapping::Metadata if previous == UNKNOWN => tracing::info!(
                "LiteLLM has no organizations (not Enterprise): org ids go in team and key \
                 metadata and StratAI enforces organization budgets itself"
            ),
            OrgMapping::Metadata => tracing::warn!(
                "LiteLLM refuses organizations now (Enterprise license gone?): back to org ids \
                 in team and key metadata"
            ),
        }
    }

    /// The mapping to use, probing the proxy in [`Organizations::Auto`] when not known yet
    /// (or always, with `reprobe`). Only a transient failure of the probe is an error; it
    /// is not remembered, so the next push probes again.
    pub(super) async fn detect_org_mapping(&self, reprobe: bool) -> Result<OrgMapping, SyncError> {
        match self.config.organizations {
            Organizations::Off => return Ok(OrgMapping::Metadata),
            Organizations::On => return Ok(OrgMapping::Organizations),
            Organizations::Auto => {}
        }
        if !reprobe && let Some(known) = decode(self.mapping.load(Ordering::Acquire)) {
            return Ok(known);
        }
        let mapping = if self.client.organizations_available().await? {
            OrgMapping::Organizations
        } else {
            OrgMapping::Metadata
        };
        self.remember(mapping);
        Ok(mapping)
    }

    /// An `EnterpriseOnly` answer in [`Organizations::Auto`] switches to the metadata mapping
    /// (and is not an error: the push goes on without organizations); anything else is.
    pub(super) fn enterprise_gone(&self, error: LiteLlmError) -> Result<(), SyncError> {
        if matches!(error, LiteLlmError::EnterpriseOnly(_))
            && self.config.organizations == Organizations::Auto
        {
            self.remember(OrgMapping::Metadata);
            Ok(())
        } else {
            Err(error.into())
        }
    }

    /// The LiteLLM organization of `org` as it should be.
    pub(super) async fn desired_organization(
        &self,
        org: &Organization,
    ) -> Result<DesiredOrg, SyncError> {
        let catalog = self.source.catalog().await?;
        let subscriptions = self.source.subscriptions(org.id).await?;
        let budget = self.source.org_budget(org.id).await?;
        Ok(desired_org(
            &catalog,
            org,
            &subscriptions,
            budget,
            &self.config.model_names,
            &self.config.budget_duration,
        ))
    }

    /// In organizations mode, the LiteLLM organization that `org`'s teams and keys belong
    /// to, pushed first when `refresh` (a team's models and budget are checked against it)
    /// or when it is not known to exist yet; `None` in metadata mode.
    pub(super) async fn organization_for(
        &self,
        org: &Organization,
        refresh: bool,
    ) -> Result<Option<DesiredOrg>, SyncError> {
        if self.detect_org_mapping(false).await? == OrgMapping::Metadata {
            return Ok(None);
        }
        let desired = self.desired_organization(org).await?;
        if !refresh && self.orgs_pushed.lock().await.contains(&org.id) {
            return Ok(Some(desired));
        }
        match self.push_desired_org(&desired, None).await {
            Ok(_) => Ok(Some(desired)),
            Err(error) => self.enterprise_gone(error).map(|()| None),
        }
    }

    /// Pushes `org` as a LiteLLM organization in organizations mode (nothing to do in
    /// metadata mode). [`Applied::Stale`] when LiteLLM holds a newer version than `version`.
    pub(super) async fn push_organization(
        &self,
        org: &Organization,
        version: Option<i64>,
    ) -> Result<Applied, SyncError> {
        if self.detect_org_mapping(false).await? == OrgMapping::Metadata {
            return Ok(Applied::Done);
        }
        let desired = self.desired_organization(org).await?;
        match self.push_desired_org(&desired, version).await {
            Ok(applied) => Ok(applied),
            Err(error) => self.enterprise_gone(error).map(|()| Applied::Done),
        }
    }

    /// Makes LiteLLM's organization match `desired`: looked up by our id, created with it
    /// when missing (LiteLLM takes caller ids; it does not check for a duplicate before
    /// writing, hence the lookup first), updated when it differs.
    pub(super) async fn push_desired_org(
        &self,
        desired: &DesiredOrg,
        version: Option<i64>,
    ) -> Result<Applied, LiteLlmError> {
        let id = desired.organization_id.as_str();
        let existing = match self.client.organization_info(id).await {
            Ok(found) => Some(found),
            Err(LiteLlmError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let remote_version = existing
            .as_ref()
            .map_or(0, |o| recorded_version(o.metadata.as_ref()));
        if version.is_some_and(|v| remote_version > v) {
            return Ok(Applied::Stale);
        }
        let metadata = org_metadata(desired, version.unwrap_or(0).max(remote_version));
        let existing = match existing {
            Some(found) => found,
            None => {
                let create = OrganizationNew {
                    organization_id: Some(desired.organization_id.clone()),
                    organization_alias: desired.alias.clone(),
                    models: Some(desired.models.clone()),
                    max_budget: desired.max_budget,
                    budget_duration: desired.budget_duration.clone(),
                    metadata: Some(metadata.clone()),
                };
                match self.client.organization_new(&create).await {
                    Ok(_) => {
                        self.orgs_pushed.lock().await.insert(desired.org_id);
                        return Ok(Applied::Done);
                    }
                    Err(e @ LiteLlmError::EnterpriseOnly(_)) => return Err(e),
                    // Created meanwhile, or the answer was lost: update what is there.
                    Err(e) => match self.client.organization_info(id).await {
                        Ok(found) => found,
                        Err(_) => return Err(e),
                    },
                }
            }
        };
        let same = existing.organization_alias.as_deref() == Some(desired.alias.as_str())
            && sorted(&existing.models) == desired.models
            && same_budget(existing.max_budget(), desired.max_budget)
            && (desired.max_budget.is_none()
                || existing.budget_duration() == desired.budget_duration.as_deref())
            && metadata_includes(existing.metadata.as_ref(), &metadata);
        if !same {
            let update = OrganizationUpdate {
                organization_id: desired.organization_id.clone(),
                organization_alias: Some(desired.alias.clone()),
                models: Some(desired.models.clone()),
                max_budget: desired.max_budget,
                budget_duration: desired.budget_duration.clone(),
                metadata: Some(metadata),
                clear_max_budget: desired.max_budget.is_none() && existing.max_budget().is_some(),
            };
            self.client.organization_update(&update).await?;
        }
        self.orgs_pushed.lock().await.insert(desired.org_id);
        Ok(Applied::Done)
    }

    /// In organizations mode, deletes the LiteLLM organization of a deleted StratAI one
    /// (LiteLLM deletes its remaining teams and keys with it); missing is fine.
    pub(super) async fn delete_organization(&self, org_id: OrgId) -> Result<(), SyncError> {
        self.orgs_pushed.lock().await.remove(&org_id);
        if self.detect_org_mapping(false).await? == OrgMapping::Metadata {
            return Ok(());
        }
        match self.client.organization_delete(&[org_id.to_string()]).await {
            Ok(()) | Err(LiteLlmError::NotFound(_)) => Ok(()),
            Err(error) => self.enterprise_gone(error),
        }
    }
}
