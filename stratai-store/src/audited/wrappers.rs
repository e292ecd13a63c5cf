//! The store wrappers that record changes (see the module above). Each mutating method: the
//! entity before (read only when the change will be recorded), then the write with its entry
//! pending ([`Audited::change`]), which the backend appends in the write's transaction. Reads
//! pass through.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use stratai_core::audit::AuditChain;
use stratai_core::billing::{InvoiceState, MonthlyInvoice};
use stratai_core::budget::{Budget, BudgetState};
use stratai_core::directory::{
    Email, Group, GroupMembership, GroupRole, Invitation, Membership, Organization, PlatformRole,
    Slug, User, UserProfile,
};
use stratai_core::ports::{
    AuditStore, BudgetLedger, DirectoryStore, GuardrailStore, HeldReservation, InvoiceStore,
    ReserveOutcome, ReserveRequest, RuleRecord, SettleOutcome, TierStore, UserQuery,
};
use stratai_core::tiers::{ModelTier, TierSubscription};
use stratai_core::{
    BudgetId, GroupId, InstanceId, InvitationId, InvoiceId, Money, OrgId, ProfileId, RequestId,
    RuleId, StoreError, TierId, UserId,
};

use super::{PendingEntry, draft, recording, snapshot, with_pending};
use crate::stores::Stores;

/// `stores` with every admin change recorded in `stores.audit`, in the change's transaction.
#[must_use]
pub fn audited(stores: Stores) -> Stores {
    let audit = stores.audit.clone();
    Stores {
        directory: Arc::new(Audited::over(stores.directory.clone(), &audit)),
        tiers: Arc::new(Audited::over(stores.tiers.clone(), &audit)),
        budgets: Arc::new(Audited::over(stores.budgets.clone(), &audit)),
        guardrails: Arc::new(Audited::over(stores.guardrails.clone(), &audit)),
        invoices: Arc::new(Audited::over(stores.invoices.clone(), &audit)),
        ..stores
    }
}

/// One port, its changes recorded.
struct Audited<P: ?Sized> {
    inner: Arc<P>,
    /// Where an entry goes that a write path failed to append (a bug; see the module docs).
    audit: Arc<dyn AuditStore>,
}

impl<P: ?Sized> Audited<P> {
    fn over(inner: Arc<P>, audit: &Arc<dyn AuditStore>) -> Self {
        Self {
            inner,
            audit: audit.clone(),
        }
    }

    /// The entity before a change, read only when the change will be recorded; a read that
    /// fails (the entity does not exist) leaves it empty, and the change reports its own error.
    async fn before<T, F>(read: F) -> Option<Value>
    where
        T: serde::Serialize,
        F: Future<Output = Result<T, StoreError>>,
    {
        if !recording() {
            return None;
        }
        read.await.ok().as_ref().and_then(snapshot)
    }

    /// Runs `write` with its entry (`action` on `target` in `chain`) pending, when the current
    /// task is a mutating request of a signed-in caller; the backend appends the entry in the
    /// write's transaction (`after` none: the backend supplies what the write returned).
    async fn change<T, F>(
        &self,
        chain: AuditChain,
        action: &str,
        target: String,
        before: Option<Value>,
        after: Option<Value>,
        write: F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let Some(draft) = draft(action, target, before, after) else {
            return write.await;
        };
        let (out, left) = with_pending(PendingEntry { chain, draft }, write).await;
        let out = out?;
        debug_assert!(
            left.is_none(),
            "`{action}`: the store's write path did not append its audit entry in its transaction"
        );
        if let Some(PendingEntry { chain, draft }) = left {
            tracing::error!(
                action = %draft.action,
                "a write path did not append its audit entry in its transaction; appended after it"
            );
            match chain {
                AuditChain::Org(org) => self.audit.append_audit(org, &draft).await?,
                AuditChain::Platform => self.audit.append_platform_audit(&draft).await?,
            };
        }
        Ok(out)
    }
}

/// `before` with `field` set to `value`: the after-state of a one-field change.
fn with_field(before: &Option<Value>, field: &str, value: Value) -> Option<Value> {
    let mut after = before.clone()?;
    if let Value::Object(map) = &mut after {
        map.insert(field.to_owned(), value);
    }
    Some(after)
}

fn org_chain(org: OrgId) -> AuditChain {
    AuditChain::Org(org)
}

#[async_trait]
impl DirectoryStore for Audited<dyn DirectoryStore> {
    async fn create_org(&self, org: &Organization) -> Result<(), StoreError> {
        self.change(
            org_chain(org.id),
            "organization.create",
            format!("organization/{}", org.id),
            None,
            snapshot(org),
            self.inner.create_org(org),
        )
        .await
    }
    async fn get_org(&self, org: OrgId) -> Result<Organization, StoreError> {
        self.inner.get_org(org).await
    }
    async fn find_org_by_slug(&self, slug: &Slug) -> Result<Option<Organization>, StoreError> {
        self.inner.find_org_by_slug(slug).await
    }
    async fn update_org(&self, org: &Organization) -> Result<(), StoreError> {
        let before = Self::before(self.inner.get_org(org.id)).await;
        self.change(
            org_chain(org.id),
            "organization.update",
            format!("organization/{}", org.id),
            before,
            snapshot(org),
            self.inner.update_org(org),
        )
        .await
    }
    async fn list_orgs(&self) -> Result<Vec<Organization>, StoreError> {
        self.inner.list_orgs().await
    }
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        self.change(
            AuditChain::Platform,
            "user.create",
            format!("user/{}", user.id),
            None,
            snapshot(user),
            self.inner.create_user(user),
        )
        .await
    }
    async fn get_user(&self, user: UserId) -> Result<User, StoreError> {
        self.inner.get_user(user).await
    }
    async fn get_users(&self, users: &[UserId]) -> Result<Vec<User>, StoreError> {
        self.inner.get_users(users).await
    }
    async fn count_people_in_orgs(&self) -> Result<u64, StoreError> {
        self.inner.count_people_in_orgs().await
    }
    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        self.inner.find_user_by_email(email).await
    }
    async fn find_user_by_subject(&self, subject: &str) -> Result<Option<User>, StoreError> {
        self.inner.find_user_by_subject(subject).await
    }
    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let before = Self::before(self.inner.get_user(user.id)).await;
        self.change(
            AuditChain::Platform,
            "user.update",
            format!("user/{}", user.id),
            before,
            snapshot(user),
            self.inner.update_user(user),
        )
        .await
    }
    async fn list_users(&self, query: &UserQuery) -> Result<Vec<User>, StoreError> {
        self.inner.list_users(query).await
    }
    async fn set_user_active(&self, user: UserId, active: bool) -> Result<User, StoreError> {
        let before = Self::before(self.inner.get_user(user)).await;
        self.change(
            AuditChain::Platform,
            if active {
                "user.reactivate"
            } else {
                "user.deactivate"
            },
            format!("user/{user}"),
            before,
            None, // the write's result, supplied by the backend
            self.inner.set_user_active(user, active),
        )
        .await
    }
    async fn set_platform_role(
        &self,
        user: UserId,
        role: PlatformRole,
    ) -> Result<User, StoreError> {
        let before = Self::before(self.inner.get_user(user)).await;
        self.change(
            AuditChain::Platform,
            "user.platform_role",
            format!("user/{user}"),
            before,
            None, // the write's result, supplied by the backend
            self.inner.set_platform_role(user, role),
        )
        .await
    }
    async fn add_member(&self, org: OrgId, member: &Membership) -> Result<(), StoreError> {
        self.change(
            org_chain(org),
            "member.add",
            format!("member/{org}/{}", member.user_id),
            None,
            snapshot(member),
            self.inner.add_member(org, member),
        )
        .await
    }
    async fn get_member(&self, org: OrgId, user: UserId) -> Result<Membership, StoreError> {
        self.inner.get_member(org, user).await
    }
    async fn list_members(&self, org: OrgId) -> Result<Vec<Membership>, StoreError> {
        self.inner.list_members(org).await
    }
    async fn update_member(&self, org: OrgId, member: &Membership) -> Result<(), StoreError> {
        let before = Self::before(self.inner.get_member(org, member.user_id)).await;
        self.change(
            org_chain(org),
            "member.update",
            format!("member/{org}/{}", member.user_id),
            before,
            snapshot(member),
            self.inner.update_member(org, member),
        )
        .await
    }
    async fn set_litellm_key_id<'a>(
        &self,
        org: OrgId,
        user: UserId,
        key_id: Option<&'a str>,
    ) -> Result<(), StoreError> {
        let before = Self::before(self.inner.get_member(org, user)).await;
        let after = with_field(&before, "litellm_key_id", key_id.into());
        self.change(
            org_chain(org),
            "member.litellm_key",
            format!("member/{org}/{user}"),
            before,
            after,
            self.inner.set_litellm_key_id(org, user, key_id),
        )
        .await
    }
    async fn remove_member(&self, org: OrgId, user: UserId) -> Result<(), StoreError> {
        let before = Self::before(self.inner.get_member(org, user)).await;
        self.change(
            org_chain(org),
            "member.remove",
            format!("member/{org}/{user}"),
            before,
            None,
            self.inner.remove_member(org, user),
        )
        .await
    }
    async fn memberships_of_user(&self, user: UserId) -> Result<Vec<Membership>, StoreError> {
        self.inner.memberships_of_user(user).await
    }
    async fn create_group(&self, org: OrgId, group: &Group) -> Result<(), StoreError> {
        self.change(
            org_chain(org),
            "group.create",
            format!("group/{}", group.id),
            None,
            snapshot(group),
            self.inner.create_group(org, group),
        )
        .await
    }
    async fn create_group_with_members(
        &self,
        org: OrgId,
        group: &Group,
        members: &[GroupMembership],
    ) -> Result<(), StoreError> {
        self.change(
            org_chain(org),
            "group.create",
            format!("group/{}", group.id),
            None,
            Some(json!({ "group": snapshot(group), "members": snapshot(&members) })),
            self.inner.create_group_with_members(org, group, members),
        )
        .await
    }
    async fn get_group(&self, org: OrgId, group: GroupId) -> Result<Group, StoreError> {
        self.inner.get_group(org, group).await
    }
    async fn locate_group(&self, group: GroupId) -> Result<Option<OrgId>, StoreError> {
        self.inner.locate_group(group).await
    }
    async fn list_groups(&self, org: OrgId) -> Result<Vec<Group>, StoreError> {
        self.inner.list_groups(org).await
    }
    async fn update_group(&self, org: OrgId, group: &Group) -> Result<(), StoreError> {
        let before = Self::before(self.inner.get_group(org, group.id)).await;
        self.change(
            org_chain(org),
            "group.update",
            format!("group/{}", group.id),
            before,
            snapshot(group),
            self.inner.update_group(org, group),
        )
        .await
    }
    async fn delete_group(&self, org: OrgId, group: GroupId) -> Result<(), StoreError> {
        let before = Self::before(self.inner.get_group(org, group)).await;
        self.change(
            org_chain(org),
            "group.delete",
            format!("group/{group}"),
            before,
            None,
            self.inner.delete_group(org, group),
        )
        .await
    }
    async fn put_group_member(
        &self,
        org: OrgId,
        membership: &GroupMembership,
    ) -> Result<(), StoreError> {
        let before = Self::before(async {
            let members = self
                .inner
                .list_group_members(org, membership.group_id)
                .await?;
            members
                .into_iter()
                .find(|m| m.user_id == membership.user_id)
                .ok_or_else(|| StoreError::not_found("group member", membership.user_id))
        })
        .await;
        self.change(
            org_chain(org),
            "group_member.put",
            format!(
                "group_member/{}/{}",
                membership.group_id, membership.user_id
            ),
            before,
            snapshot(membership),
            self.inner.put_group_member(org, membership),
        )
        .await
    }
    async fn remove_group_member(
        &self,
        org: OrgId,
        group: GroupId,
        user: UserId,
    ) -> Result<(), StoreError> {
        let before = Self::before(async {
            let members = self.inner.list_group_members(org, group).await?;
            members
                .into_iter()
                .find(|m| m.user_id == user)
                .ok_or_else(|| StoreError::not_found("group member", user))
        })
        .await;
        self.change(
            org_chain(org),
            "group_member.remove",
            format!("group_member/{group}/{user}"),
            before,
            None,
            self.inner.remove_group_member(org, group, user),
        )
        .await
    }
    async fn list_group_members(
        &self,
        org: OrgId,
        group: GroupId,
    ) -> Result<Vec<GroupMembership>, StoreError> {
        self.inner.list_group_members(org, group).await
    }
    async fn groups_of_member(
        &self,
        org: OrgId,
        user: UserId,
    ) -> Result<Vec<(Group, GroupRole)>, StoreError> {
        self.inner.groups_of_member(org, user).await
    }
    async fn create_profile(&self, profile: &UserProfile) -> Result<(), StoreError> {
        self.change(
            AuditChain::Platform,
            "profile.create",
            format!("profile/{}", profile.id),
            None,
            snapshot(profile),
            self.inner.create_profile(profile),
        )
        .await
    }
    async fn get_profile(&self, profile: ProfileId) -> Result<UserProfile, StoreError> {
        self.inner.get_profile(profile).await
    }
    async fn update_profile(&self, profile: &UserProfile) -> Result<(), StoreError> {
        let before = Self::before(self.inner.get_profile(profile.id)).await;
        self.change(
            AuditChain::Platform,
            "profile.update",
            format!("profile/{}", profile.id),
            before,
            snapshot(profile),
            self.inner.update_profile(profile),
        )
        .await
    }
    async fn delete_profile(&self, profile: ProfileId) -> Result<(), StoreError> {
        let before = Self::before(self.inner.get_profile(profile)).await;
        self.change(
            AuditChain::Platform,
            "profile.delete",
            format!("profile/{profile}"),
            before,
            None,
            self.inner.delete_profile(profile),
        )
        .await
    }
    async fn list_profiles(&self) -> Result<Vec<UserProfile>, StoreError> {
        self.inner.list_profiles().await
    }
    async fn create_invitation(
        &self,
        org: OrgId,
        invitation: &Invitation,
    ) -> Result<(), StoreError> {
        self.change(
            org_chain(org),
            "invitation.create",
            format!("invitation/{}", invitation.id),
            None,
            snapshot(invitation),
            self.inner.create_invitation(org, invitation),
        )
        .await
    }
    async fn find_invitation_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        self.inner.find_invitation_by_token_hash(token_hash).await
    }
    async fn list_invitations(&self, org: OrgId) -> Result<Vec<Invitation>, StoreError> {
        self.inner.list_invitations(org).await
    }
    async fn pending_invitations_for(&self, email: &Email) -> Result<Vec<Invitation>, StoreError> {
        self.inner.pending_invitations_for(email).await
    }
    async fn save_invitations(
        &self,
        org: OrgId,
        invitations: &[Invitation],
    ) -> Result<(), StoreError> {
        let before = Self::before(async {
            let ids: Vec<InvitationId> = invitations.iter().map(|i| i.id).collect();
            let stored = self.inner.list_invitations(org).await?;
            Ok::<_, StoreError>(
                stored
                    .into_iter()
                    .filter(|i| ids.contains(&i.id))
                    .filter_map(|i| snapshot(&i))
                    .collect::<Vec<Value>>(),
            )
        })
        .await;
        let after: Vec<Value> = invitations.iter().filter_map(snapshot).collect();
        self.change(
            org_chain(org),
            "invitation.save",
            format!(
                "invitation/{}",
                invitations
                    .iter()
                    .map(|i| i.id.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            before.filter(|b| b.as_array().is_some_and(|a| !a.is_empty())),
            Some(Value::Array(after)),
            self.inner.save_invitations(org, invitations),
        )
        .await
    }
    async fn revoke_invitation(
        &self,
        org: OrgId,
        invitation: InvitationId,
    ) -> Result<(), StoreError> {
        let before = Self::before(async {
            self.inner
                .list_invitations(org)
                .await?
                .into_iter()
                .find(|i| i.id == invitation)
                .ok_or_else(|| StoreError::not_found("invitation", invitation))
        })
        .await;
        let after = with_field(&before, "status", "revoked".into());
        self.change(
            org_chain(org),
            "invitation.revoke",
            format!("invitation/{invitation}"),
            before,
            after,
            self.inner.revoke_invitation(org, invitation),
        )
        .await
    }
    async fn accept_invitation(
        &self,
        token_hash: &str,
        user: &User,
        now: DateTime<Utc>,
    ) -> Result<Membership, StoreError> {
        // The invitation names the organization whose chain records the join.
        let invitation = if recording() {
            self.inner
                .find_invitation_by_token_hash(token_hash)
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        let Some(invitation) = invitation else {
            return self.inner.accept_invitation(token_hash, user, now).await;
        };
        self.change(
            org_chain(invitation.org_id),
            "invitation.accept",
            format!("member/{}/{}", invitation.org_id, user.id),
            snapshot(&invitation),
            None, // the membership the write returns, supplied by the backend
            self.inner.accept_invitation(token_hash, user, now),
        )
        .await
    }
}

#[async_trait]
impl TierStore for Audited<dyn TierStore> {
    async fn upsert_tier(&self, tier: &ModelTier) -> Result<(), StoreError> {
        let before = Self::before(self.inner.get_tier(tier.id)).await;
        self.change(
            AuditChain::Platform,
            "tier.upsert",
            format!("tier/{}", tier.id),
            before,
            snapshot(tier),
            self.inner.upsert_tier(tier),
        )
        .await
    }
    async fn list_tiers(&self) -> Result<Vec<ModelTier>, StoreError> {
        self.inner.list_tiers().await
    }
    async fn get_tier(&self, tier: TierId) -> Result<ModelTier, StoreError> {
        self.inner.get_tier(tier).await
    }
    async fn put_subscription(
        &self,
        org: OrgId,
        subscription: &TierSubscription,
    ) -> Result<(), StoreError> {
        let before = Self::before(async {
            self.inner
                .list_subscriptions(org)
                .await?
                .into_iter()
                .find(|s| s.tier_id == subscription.tier_id)
                .ok_or_else(|| StoreError::not_found("subscription", subscription.tier_id))
        })
        .await;
        self.change(
            org_chain(org),
            "subscription.put",
            format!("subscription/{org}/{}", subscription.tier_id),
            before,
            snapshot(subscription),
            self.inner.put_subscription(org, subscription),
        )
        .await
    }
    async fn list_subscriptions(&self, org: OrgId) -> Result<Vec<TierSubscription>, StoreError> {
        self.inner.list_subscriptions(org).await
    }
}

#[async_trait]
impl BudgetLedger for Audited<dyn BudgetLedger> {
    async fn create_budget(&self, org: OrgId, budget: &Budget) -> Result<(), StoreError> {
        self.change(
            org_chain(org),
            "budget.create",
            format!("budget/{}", budget.id),
            None,
            snapshot(budget),
            self.inner.create_budget(org, budget),
        )
        .await
    }
    async fn get_budget(&self, org: OrgId, budget: BudgetId) -> Result<Budget, StoreError> {
        self.inner.get_budget(org, budget).await
    }
    async fn list_budgets(&self, org: OrgId) -> Result<Vec<Budget>, StoreError> {
        self.inner.list_budgets(org).await
    }
    async fn update_budget(&self, org: OrgId, budget: &Budget) -> Result<(), StoreError> {
        let before = Self::before(self.inner.get_budget(org, budget.id)).await;
        self.change(
            org_chain(org),
            "budget.update",
            format!("budget/{}", budget.id),
            before,
            snapshot(budget),
            self.inner.update_budget(org, budget),
        )
        .await
    }
    async fn delete_budget(&self, org: OrgId, budget: BudgetId) -> Result<(), StoreError> {
        let before = Self::before(self.inner.get_budget(org, budget)).await;
        self.change(
            org_chain(org),
            "budget.delete",
            format!("budget/{budget}"),
            before,
            None,
            self.inner.delete_budget(org, budget),
        )
        .await
    }
    // The ledger's spending (reserve, settle, release, reclaim) is the gateway's, recorded
    // as usage, not an admin change.
    async fn states(
        &self,
        org: OrgId,
        budgets: &[BudgetId],
        now: DateTime<Utc>,
    ) -> Result<Vec<BudgetState>, StoreError> {
        self.inner.states(org, budgets, now).await
    }
    async fn reserve(
        &self,
        org: OrgId,
        request: &ReserveRequest,
    ) -> Result<ReserveOutcome, StoreError> {
        self.inner.reserve(org, request).await
    }
    async fn settle(
        &self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        actual: Money,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError> {
        self.inner
            .settle(org, request_id, budgets, actual, now)
            .await
    }
    async fn release(&self, org: OrgId, request_id: RequestId) -> Result<(), StoreError> {
        self.inner.release(org, request_id).await
    }
    async fn reclaim_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.reclaim_expired(now).await
    }
    // So are the settlement of a dead instance's leases and the heartbeats.
    async fn settle_total(
        &self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        total: Money,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError> {
        self.inner
            .settle_total(org, request_id, budgets, total, now)
            .await
    }
    async fn beat(&self, instance: InstanceId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.beat(instance, now).await
    }
    async fn retire_instance(&self, instance: InstanceId) -> Result<(), StoreError> {
        self.inner.retire_instance(instance).await
    }
    async fn abandoned_leases(
        &self,
        dead_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<HeldReservation>, StoreError> {
        self.inner.abandoned_leases(dead_before, limit).await
    }
}

#[async_trait]
impl GuardrailStore for Audited<dyn GuardrailStore> {
    async fn put_platform_rule(&self, rule: &RuleRecord) -> Result<(), StoreError> {
        let before = Self::before(async {
            self.inner
                .list_platform_rules()
                .await?
                .into_iter()
                .find(|r| r.id == rule.id)
                .ok_or_else(|| StoreError::not_found("rule", rule.id))
        })
        .await;
        self.change(
            AuditChain::Platform,
            "rule.put",
            format!("rule/{}", rule.id),
            before,
            snapshot(rule),
            self.inner.put_platform_rule(rule),
        )
        .await
    }
    async fn put_rule(&self, org: OrgId, rule: &RuleRecord) -> Result<(), StoreError> {
        let before = Self::before(self.inner.get_rule(org, rule.id)).await;
        self.change(
            org_chain(org),
            "rule.put",
            format!("rule/{}", rule.id),
            before,
            snapshot(rule),
            self.inner.put_rule(org, rule),
        )
        .await
    }
    async fn get_rule(&self, org: OrgId, rule: RuleId) -> Result<RuleRecord, StoreError> {
        self.inner.get_rule(org, rule).await
    }
    async fn delete_rule(&self, org: OrgId, rule: RuleId) -> Result<(), StoreError> {
        let before = Self::before(self.inner.get_rule(org, rule)).await;
        self.change(
            org_chain(org),
            "rule.delete",
            format!("rule/{rule}"),
            before,
            None,
            self.inner.delete_rule(org, rule),
        )
        .await
    }
    async fn delete_platform_rule(&self, rule: RuleId) -> Result<(), StoreError> {
        let before = Self::before(async {
            self.inner
                .list_platform_rules()
                .await?
                .into_iter()
                .find(|r| r.id == rule)
                .ok_or_else(|| StoreError::not_found("rule", rule))
        })
        .await;
        self.change(
            AuditChain::Platform,
            "rule.delete",
            format!("rule/{rule}"),
            before,
            None,
            self.inner.delete_platform_rule(rule),
        )
        .await
    }
    async fn list_platform_rules(&self) -> Result<Vec<RuleRecord>, StoreError> {
        self.inner.list_platform_rules().await
    }
    async fn list_org_rules(&self, org: OrgId) -> Result<Vec<RuleRecord>, StoreError> {
        self.inner.list_org_rules(org).await
    }
}

#[async_trait]
impl InvoiceStore for Audited<dyn InvoiceStore> {
    async fn put_draft_invoice(
        &self,
        org: OrgId,
        invoice: &MonthlyInvoice,
    ) -> Result<(), StoreError> {
        self.change(
            org_chain(org),
            "invoice.draft",
            format!("invoice/{}", invoice.id),
            None,
            snapshot(invoice),
            self.inner.put_draft_invoice(org, invoice),
        )
        .await
    }
    async fn get_invoice(&self, org: OrgId, id: InvoiceId) -> Result<MonthlyInvoice, StoreError> {
        self.inner.get_invoice(org, id).await
    }
    async fn list_invoices(&self, org: OrgId) -> Result<Vec<MonthlyInvoice>, StoreError> {
        self.inner.list_invoices(org).await
    }
    async fn set_invoice_status(
        &self,
        org: OrgId,
        id: InvoiceId,
        to: InvoiceState,
        at: DateTime<Utc>,
    ) -> Result<MonthlyInvoice, StoreError> {
        let before = Self::before(self.inner.get_invoice(org, id)).await;
        self.change(
            org_chain(org),
            "invoice.status",
            format!("invoice/{id}"),
            before,
            None, // the write's result, supplied by the backend
            self.inner.set_invoice_status(org, id, to, at),
        )
        .await
    }
}
