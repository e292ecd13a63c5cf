//! In-memory backend of every core port (tests, embedding).
//!
//! [`MemoryStore`] is the reference implementation: the SQL backends must behave exactly like
//! it, which the conformance suite checks. All state sits behind one lock, so every operation
//! is a transaction: it validates everything first and only then changes anything.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use stratai_core::billing::{InvoiceState, MonthlyInvoice};
use stratai_core::budget::{
    Budget, BudgetAlert, BudgetOutcome, BudgetScope, BudgetState, PeriodWindow, evaluate_budgets,
    implied_budget, implied_budget_id,
};
use stratai_core::directory::{
    Email, Group, GroupMembership, GroupRole, Invitation, InvitationStatus, Membership,
    Organization, PlatformRole, Slug, User, UserProfile,
};
use stratai_core::ports::{
    AppendOutcome, BudgetLedger, DirectoryStore, GuardrailStore, HeldReservation, InvoiceStore,
    KeyVaultStore, OutboxEntity, OutboxEvent, OutboxStore, ReserveOutcome, ReserveRequest,
    RuleRecord, RuleScope, SealedKey, SettleOutcome, TierStore, UsageStore, UserQuery,
};
use stratai_core::tiers::{ModelTier, TierSubscription};
use stratai_core::usage::{AggregateRow, Dimension, UsageQuery, UsageRecord, UsageTotals};
use stratai_core::{
    BudgetId, GroupId, InstanceId, InvitationId, InvoiceId, Money, OrgId, ProfileId, RequestId,
    RuleId, StoreError, TierId, UserId,
};
use tokio::sync::RwLock;

use crate::shared::{self, micros};

mod audit;

/// Every port in memory. Cloning shares the state.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<RwLock<State>>,
    audit: Arc<RwLock<audit::Chains>>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    orgs: BTreeMap<OrgId, Organization>,
    users: BTreeMap<UserId, User>,
    members: BTreeMap<(OrgId, UserId), Membership>,
    sealed_keys: BTreeMap<(OrgId, UserId), SealedKey>,
    groups: BTreeMap<GroupId, Group>,
    group_members: BTreeMap<(GroupId, UserId), GroupMembership>,
    profiles: BTreeMap<ProfileId, UserProfile>,
    invitations: BTreeMap<InvitationId, Invitation>,
    tiers: BTreeMap<TierId, ModelTier>,
    subscriptions: BTreeMap<(OrgId, TierId), TierSubscription>,
    rules: BTreeMap<RuleId, RuleRecord>,
    budgets: BTreeMap<BudgetId, Budget>,
    periods: BTreeMap<(BudgetId, DateTime<Utc>), Period>,
    reservations: BTreeMap<(OrgId, RequestId), Reservation>,
    usage: BTreeMap<OrgId, BTreeMap<(DateTime<Utc>, RequestId), UsageRecord>>,
    usage_ids: HashMap<(OrgId, RequestId), DateTime<Utc>>,
    outbox: BTreeMap<i64, OutboxRow>,
    versions: HashMap<OutboxEntity, i64>,
    next_seq: i64,
    invoices: BTreeMap<InvoiceId, MonthlyInvoice>,
    /// Heartbeats of running instances.
    instances: HashMap<InstanceId, DateTime<Utc>>,
}

#[derive(Clone)]
struct Period {
    end: DateTime<Utc>,
    spent: Money,
    reserved: Money,
    alert_sent: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ReservationStatus {
    Active,
    Released,
    Settled,
}

struct Reservation {
    amount: Money,
    /// Each budget with the start of the period the reservation was made in.
    items: Vec<(BudgetId, PeriodWindow)>,
    expires_at: DateTime<Utc>,
    status: ReservationStatus,
    /// What its settlement charged.
    settled: Money,
    /// The instance holding it (a budget lease).
    holder: Option<InstanceId>,
    created_at: DateTime<Utc>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OutboxStatus {
    Pending,
    Done,
    Dead,
}

struct OutboxRow {
    event: OutboxEvent,
    status: OutboxStatus,
}

fn tenant(expected: OrgId, actual: OrgId, what: &str) -> Result<(), StoreError> {
    if expected == actual {
        Ok(())
    } else {
        Err(StoreError::TenantMismatch(format!(
            "{what} belongs to organization `{actual}`, not `{expected}`"
        )))
    }
}

fn norm_org(org: &Organization) -> Organization {
    let mut org = org.clone();
    org.created_at = micros(org.created_at);
    org.updated_at = micros(org.updated_at);
    org
}

fn norm_user(user: &User) -> User {
    let mut user = user.clone();
    user.created_at = micros(user.created_at);
    user.last_login_at = user.last_login_at.map(micros);
    user
}

fn norm_member(member: &Membership) -> Membership {
    let mut member = member.clone();
    member.joined_at = micros(member.joined_at);
    member
}

fn norm_group(group: &Group) -> Group {
    let mut group = group.clone();
    group.created_at = micros(group.created_at);
    group.updated_at = micros(group.updated_at);
    group
}

/// The words of the SQL backends' unique violation of `invitations_organization_id_email_key`
/// (one pending invitation per address per organization).
fn pending_exists(_email: &Email) -> StoreError {
    StoreError::Conflict("an invitation with this `email` already exists".to_owned())
}

fn norm_invitation(invitation: &Invitation) -> Invitation {
    let mut invitation = invitation.clone();
    invitation.created_at = micros(invitation.created_at);
    invitation.expires_at = micros(invitation.expires_at);
    invitation.accepted_at = invitation.accepted_at.map(micros);
    invitation.delivery.last_attempt_at = invitation.delivery.last_attempt_at.map(micros);
    invitation
}

fn norm_budget(budget: &Budget) -> Budget {
    let mut budget = budget.clone();
    budget.created_at = micros(budget.created_at);
    budget.updated_at = micros(budget.updated_at);
    budget
}

fn norm_record(record: &UsageRecord) -> UsageRecord {
    let mut record = record.clone();
    record.created_at = micros(record.created_at);
    record
}

impl State {
    /// Keeps the budget a `monthly_budget` field implies in step with the field (same
    /// "transaction": under the same lock as the field's change).
    fn put_implied_budget(
        &mut self,
        org: OrgId,
        scope: BudgetScope,
        limit: Option<Money>,
        now: DateTime<Utc>,
    ) {
        let id = implied_budget_id(org, scope);
        let Some(limit) = limit else {
            if self.budgets.contains_key(&id) {
                self.drop_budget(id);
            }
            return;
        };
        match self.budgets.get_mut(&id) {
            Some(budget) => {
                if budget.limit != limit {
                    budget.limit = limit;
                    budget.updated_at = micros(now);
                }
            }
            None => {
                let budget = implied_budget(org, scope, limit, micros(now));
                self.budgets.insert(id, budget);
            }
        }
    }

    /// Checks that `user` may join `group` without passing `max_users_per_group` (always,
    /// when already in it). Under the store's write lock, like the add that follows.
    fn check_group_seat(&self, org: OrgId, group: GroupId, user: UserId) -> Result<(), StoreError> {
        let found = self.group_in(org, group)?;
        if self.group_members.contains_key(&(group, user)) {
            return Ok(());
        }
        let members = self
            .group_members
            .keys()
            .filter(|(g, _)| *g == group)
            .count();
        let max = self.org(org)?.settings.max_users_per_group;
        shared::check_group_room(&found.name, u64::try_from(members).unwrap_or(u64::MAX), max)
    }

    /// Deletes a budget with its periods and its place in reservations.
    fn drop_budget(&mut self, budget: BudgetId) {
        self.budgets.remove(&budget);
        self.periods.retain(|(b, _), _| *b != budget);
        for reservation in self.reservations.values_mut() {
            reservation.items.retain(|(b, _)| *b != budget);
        }
    }

    /// Writes the outbox event of a directory change (same "transaction": under the same lock).
    fn emit(&mut self, org_id: OrgId, entity: OutboxEntity, deleted: bool) {
        let version = self.versions.entry(entity).or_insert(0);
        *version += 1;
        let version = *version;
        self.next_seq += 1;
        let now = micros(Utc::now());
        self.outbox.insert(
            self.next_seq,
            OutboxRow {
                event: OutboxEvent {
                    seq: self.next_seq,
                    org_id,
                    entity,
                    deleted,
                    version,
                    attempts: 0,
                    last_error: None,
                    available_at: now,
                    created_at: now,
                },
                status: OutboxStatus::Pending,
            },
        );
    }

    /// Active super admins other than `user`.
    fn other_super_admins(&self, user: UserId) -> u64 {
        self.users
            .values()
            .filter(|u| u.id != user && u.is_super_admin())
            .count() as u64
    }

    fn org(&self, org: OrgId) -> Result<&Organization, StoreError> {
        self.orgs
            .get(&org)
            .ok_or_else(|| StoreError::not_found("organization", org))
    }

    fn group_in(&self, org: OrgId, group: GroupId) -> Result<&Group, StoreError> {
        self.groups
            .get(&group)
            .filter(|g| g.org_id == org)
            .ok_or_else(|| StoreError::not_found("group", group))
    }

    fn member_of(&self, org: OrgId, user: UserId) -> Result<&Membership, StoreError> {
        self.members
            .get(&(org, user))
            .ok_or_else(|| StoreError::not_found("membership", user))
    }

    fn budget_in(&self, org: OrgId, budget: BudgetId) -> Result<&Budget, StoreError> {
        self.budgets
            .get(&budget)
            .filter(|b| b.org_id == org)
            .ok_or_else(|| StoreError::not_found("budget", budget))
    }

    fn check_budget_scope(&self, org: OrgId, budget: &Budget) -> Result<(), StoreError> {
        match budget.scope {
            BudgetScope::Org => Ok(()),
            BudgetScope::Group(group) => self.group_in(org, group).map(|_| ()),
            BudgetScope::User(user) => self.member_of(org, user).map(|_| ()),
            BudgetScope::Tier(tier) => self
                .tiers
                .get(&tier)
                .map(|_| ())
                .ok_or_else(|| StoreError::not_found("tier", tier)),
        }
    }

    fn check_rule_targets(&self, rule: &RuleRecord) -> Result<(), StoreError> {
        match rule.scope {
            RuleScope::Global => Ok(()),
            RuleScope::Org { org_id } => self.org(org_id).map(|_| ()),
            RuleScope::Tier { org_id, tier_id } => {
                if let Some(org) = org_id {
                    self.org(org)?;
                }
                self.tiers
                    .get(&tier_id)
                    .map(|_| ())
                    .ok_or_else(|| StoreError::not_found("tier", tier_id))
            }
            RuleScope::Group { org_id, group_id } => self.group_in(org_id, group_id).map(|_| ()),
            RuleScope::User { org_id, user_id } => self.member_of(org_id, user_id).map(|_| ()),
        }
    }

    /// The calendar window of `budget` containing `at`, in its organization's timezone.
    fn window(&self, budget: &Budget, at: DateTime<Utc>) -> PeriodWindow {
        let tz = self
            .orgs
            .get(&budget.org_id)
            .map_or(chrono_tz::UTC, Organization::tz);
        budget.period.window(at, tz)
    }

    fn state_of(&self, budget: &Budget, window: PeriodWindow) -> BudgetState {
        let period = self.periods.get(&(budget.id, window.start));
        BudgetState {
            budget: budget.clone(),
            period_start: window.start,
            period_end: period.map_or(window.end, |p| p.end),
            spent: period.map_or(Money::ZERO, |p| p.spent),
            reserved: period.map_or(Money::ZERO, |p| p.reserved),
            alert_sent: period.is_some_and(|p| p.alert_sent),
        }
    }

    fn period_mut(&mut self, budget: BudgetId, window: PeriodWindow) -> &mut Period {
        self.periods
            .entry((budget, window.start))
            .or_insert(Period {
                end: window.end,
                spent: Money::ZERO,
                reserved: Money::ZERO,
                alert_sent: false,
            })
    }

    /// Adds settled spend to one budget's period; returns the alert if it fires now.
    fn add_spend(
        &mut self,
        budget_id: BudgetId,
        window: PeriodWindow,
        actual: Money,
        unreserve: Money,
    ) -> Option<BudgetAlert> {
        let budget = self.budgets.get(&budget_id)?.clone();
        let period = self.period_mut(budget_id, window);
        period.reserved = period.reserved.saturating_sub(unreserve);
        period.spent = period.spent + actual;
        if shared::alert_due(&budget, period.spent, period.alert_sent) {
            period.alert_sent = true;
            Some(shared::alert(&budget, window.start, period.spent))
        } else {
            None
        }
    }

    /// [`BudgetLedger::settle`], or with `total` [`BudgetLedger::settle_total`]: a settled
    /// reservation is charged what `actual` adds to its settlement.
    fn settle(
        &mut self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        actual: Money,
        now: DateTime<Utc>,
        total: bool,
    ) -> Result<SettleOutcome, StoreError> {
        let now = micros(now);
        let key = (org, request_id);
        let (items, unreserve, charge) = match self.reservations.get(&key) {
            Some(r) if r.status == ReservationStatus::Settled => {
                if !total || actual <= r.settled {
                    return Ok(SettleOutcome::default());
                }
                (
                    r.items.clone(),
                    Money::ZERO,
                    actual.saturating_sub(r.settled),
                )
            }
            Some(r) => {
                let unreserve = if r.status == ReservationStatus::Active {
                    r.amount
                } else {
                    Money::ZERO
                };
                (r.items.clone(), unreserve, actual)
            }
            None => {
                let ids: BTreeSet<BudgetId> = budgets.iter().copied().collect();
                let mut items = Vec::with_capacity(ids.len());
                for id in ids {
                    let budget = self.budget_in(org, id)?;
                    items.push((id, self.window(budget, now)));
                }
                (items, Money::ZERO, actual)
            }
        };
        let mut alerts = Vec::new();
        for (budget_id, window) in &items {
            if let Some(alert) = self.add_spend(*budget_id, *window, charge, unreserve) {
                alerts.push(alert);
            }
        }
        match self.reservations.get_mut(&key) {
            Some(r) => {
                r.status = ReservationStatus::Settled;
                r.settled = actual;
            }
            None => {
                self.reservations.insert(
                    key,
                    Reservation {
                        amount: Money::ZERO,
                        items,
                        expires_at: now,
                        status: ReservationStatus::Settled,
                        settled: actual,
                        holder: None,
                        created_at: now,
                    },
                );
            }
        }
        Ok(SettleOutcome {
            applied: true,
            alerts,
        })
    }

    fn release_reservation(&mut self, key: (OrgId, RequestId)) -> bool {
        let Some(reservation) = self.reservations.get_mut(&key) else {
            return false;
        };
        if reservation.status != ReservationStatus::Active {
            return false;
        }
        reservation.status = ReservationStatus::Released;
        let amount = reservation.amount;
        let items = reservation.items.clone();
        for (budget_id, window) in items {
            if let Some(period) = self.periods.get_mut(&(budget_id, window.start)) {
                period.reserved = period.reserved.saturating_sub(amount);
            }
        }
        true
    }

    fn usage_page(
        &self,
        org: OrgId,
        query: &UsageQuery,
        after: Option<shared::Cursor>,
        limit: usize,
    ) -> Vec<UsageRecord> {
        let Some(records) = self.usage.get(&org) else {
            return Vec::new();
        };
        let lower = match after {
            Some(cursor) => std::ops::Bound::Excluded(cursor),
            None => std::ops::Bound::Unbounded,
        };
        records
            .range((lower, std::ops::Bound::Unbounded))
            .map(|(_, r)| r)
            .filter(|r| shared::matches(query, r))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[async_trait]
impl DirectoryStore for MemoryStore {
    async fn create_org(&self, org: &Organization) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        if s.orgs.contains_key(&org.id) {
            return Err(StoreError::Conflict(format!(
                "organization `{}` exists",
                org.id
            )));
        }
        if s.orgs.values().any(|o| o.slug == org.slug) {
            return Err(StoreError::Conflict(
                "an organization with this `slug` already exists".to_owned(),
            ));
        }
        if let Some(litellm) = &org.litellm_org_id
            && s.orgs
                .values()
                .any(|o| o.litellm_org_id.as_ref() == Some(litellm))
        {
            return Err(StoreError::Conflict(format!(
                "litellm organization `{litellm}` is linked"
            )));
        }
        s.orgs.insert(org.id, norm_org(org));
        s.emit(org.id, OutboxEntity::Org(org.id), false);
        self.commit_change(None).await
    }

    async fn get_org(&self, org: OrgId) -> Result<Organization, StoreError> {
        self.state.read().await.org(org).cloned()
    }

    async fn find_org_by_slug(&self, slug: &Slug) -> Result<Option<Organization>, StoreError> {
        let s = self.state.read().await;
        Ok(s.orgs.values().find(|o| &o.slug == slug).cloned())
    }

    async fn update_org(&self, org: &Organization) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        let old = s.org(org.id)?.clone();
        if let Some(litellm) = &org.litellm_org_id
            && s.orgs
                .values()
                .any(|o| o.id != org.id && o.litellm_org_id.as_ref() == Some(litellm))
        {
            return Err(StoreError::Conflict(format!(
                "litellm organization `{litellm}` is linked"
            )));
        }
        let mut new = norm_org(org);
        new.slug = old.slug.clone();
        new.created_at = old.created_at;
        let synced_only = shared::org_change_is_sync_only(&old, &new);
        s.orgs.insert(org.id, new);
        if !synced_only {
            s.emit(org.id, OutboxEntity::Org(org.id), false);
        }
        self.commit_change(None).await
    }

    async fn list_orgs(&self) -> Result<Vec<Organization>, StoreError> {
        Ok(self.state.read().await.orgs.values().cloned().collect())
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        if s.users.contains_key(&user.id) {
            return Err(StoreError::Conflict(format!("user `{}` exists", user.id)));
        }
        check_user_unique(&s, user)?;
        s.users.insert(user.id, norm_user(user));
        self.commit_change(None).await
    }

    async fn get_user(&self, user: UserId) -> Result<User, StoreError> {
        self.state
            .read()
            .await
            .users
            .get(&user)
            .cloned()
            .ok_or_else(|| StoreError::not_found("user", user))
    }

    async fn count_people_in_orgs(&self) -> Result<u64, StoreError> {
        let s = self.state.read().await;
        let people: std::collections::HashSet<UserId> =
            s.members.keys().map(|(_, user)| *user).collect();
        Ok(u64::try_from(people.len()).unwrap_or(u64::MAX))
    }

    async fn get_users(&self, users: &[UserId]) -> Result<Vec<User>, StoreError> {
        let s = self.state.read().await;
        let found = users
            .iter()
            .filter_map(|id| s.users.get(id).cloned())
            .collect();
        shared::users_in_order(users, found)
    }

    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let s = self.state.read().await;
        Ok(s.users.values().find(|u| &u.email == email).cloned())
    }

    async fn find_user_by_subject(&self, subject: &str) -> Result<Option<User>, StoreError> {
        let s = self.state.read().await;
        Ok(s.users
            .values()
            .find(|u| u.oidc_subject.as_deref() == Some(subject))
            .cloned())
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        let old = s
            .users
            .get(&user.id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("user", user.id))?;
        check_user_unique(&s, user)?;
        let mut new = norm_user(user);
        new.created_at = old.created_at;
        new.platform_role = old.platform_role;
        new.active = old.active;
        s.users.insert(user.id, new);
        self.commit_change(None).await
    }

    async fn list_users(&self, query: &UserQuery) -> Result<Vec<User>, StoreError> {
        let s = self.state.read().await;
        let mut users: Vec<&User> = s
            .users
            .values()
            .filter(|u| query.after.as_ref().is_none_or(|after| u.email > *after))
            .filter(|u| query.matches(u))
            .collect();
        users.sort_by(|a, b| a.email.cmp(&b.email));
        Ok(users
            .into_iter()
            .take(query.limit as usize)
            .cloned()
            .collect())
    }

    async fn set_user_active(&self, user: UserId, active: bool) -> Result<User, StoreError> {
        let mut s = self.state.write().await;
        let old = s
            .users
            .get(&user)
            .cloned()
            .ok_or_else(|| StoreError::not_found("user", user))?;
        shared::check_super_admin_remains(
            "active",
            !active && old.is_super_admin(),
            s.other_super_admins(user),
        )?;
        if old.active == active {
            crate::audited::discard_pending();
            return Ok(old);
        }
        let mut new = old;
        new.active = active;
        s.users.insert(user, new.clone());
        let orgs: Vec<OrgId> = s
            .members
            .keys()
            .filter(|(_, u)| *u == user)
            .map(|(o, _)| *o)
            .collect();
        for org in orgs {
            s.emit(org, OutboxEntity::Member(user), false);
        }
        self.commit_change(crate::audited::snapshot(&new)).await?;
        Ok(new)
    }

    async fn set_platform_role(
        &self,
        user: UserId,
        role: PlatformRole,
    ) -> Result<User, StoreError> {
        let mut s = self.state.write().await;
        let old = s
            .users
            .get(&user)
            .cloned()
            .ok_or_else(|| StoreError::not_found("user", user))?;
        shared::check_super_admin_remains(
            "platform_role",
            role != PlatformRole::SuperAdmin && old.is_super_admin(),
            s.other_super_admins(user),
        )?;
        let mut new = old;
        new.platform_role = role;
        s.users.insert(user, new.clone());
        self.commit_change(crate::audited::snapshot(&new)).await?;
        Ok(new)
    }

    async fn add_member(&self, org: OrgId, member: &Membership) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        tenant(org, member.org_id, "membership")?;
        s.org(org)?;
        if !s.users.contains_key(&member.user_id) {
            return Err(StoreError::not_found("user", member.user_id));
        }
        check_profile(&s, member.profile_id)?;
        if s.members.contains_key(&(org, member.user_id)) {
            return Err(shared::already_member());
        }
        s.members.insert((org, member.user_id), norm_member(member));
        let scope = BudgetScope::User(member.user_id);
        s.put_implied_budget(org, scope, member.monthly_budget, Utc::now());
        s.emit(org, OutboxEntity::Member(member.user_id), false);
        self.commit_change(None).await
    }

    async fn get_member(&self, org: OrgId, user: UserId) -> Result<Membership, StoreError> {
        self.state.read().await.member_of(org, user).cloned()
    }

    async fn list_members(&self, org: OrgId) -> Result<Vec<Membership>, StoreError> {
        let s = self.state.read().await;
        Ok(s.members
            .range(
                (org, UserId::from_uuid(uuid::Uuid::nil()))
                    ..=(org, UserId::from_uuid(uuid::Uuid::max())),
            )
            .map(|(_, m)| m.clone())
            .collect())
    }

    async fn update_member(&self, org: OrgId, member: &Membership) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        tenant(org, member.org_id, "membership")?;
        let old = s.member_of(org, member.user_id)?.clone();
        check_profile(&s, member.profile_id)?;
        let mut new = norm_member(member);
        new.joined_at = old.joined_at;
        // The key id is the sync's, written by `set_litellm_key_id` only.
        new.litellm_key_id = old.litellm_key_id.clone();
        let synced_only = shared::member_change_is_sync_only(&old, &new);
        let scope = BudgetScope::User(member.user_id);
        s.put_implied_budget(org, scope, new.monthly_budget, Utc::now());
        s.members.insert((org, member.user_id), new);
        if !synced_only {
            s.emit(org, OutboxEntity::Member(member.user_id), false);
        }
        self.commit_change(None).await
    }

    async fn set_litellm_key_id<'a>(
        &self,
        org: OrgId,
        user: UserId,
        key_id: Option<&'a str>,
    ) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        s.member_of(org, user)?;
        if let Some(member) = s.members.get_mut(&(org, user)) {
            member.litellm_key_id = key_id.map(str::to_owned);
        }
        self.commit_change(None).await
    }

    async fn remove_member(&self, org: OrgId, user: UserId) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        s.member_of(org, user)?;
        s.members.remove(&(org, user));
        s.sealed_keys.remove(&(org, user));
        s.put_implied_budget(org, BudgetScope::User(user), None, Utc::now());
        let groups: BTreeSet<GroupId> = s
            .groups
            .values()
            .filter(|g| g.org_id == org)
            .map(|g| g.id)
            .collect();
        s.group_members
            .retain(|(group, member), _| !(*member == user && groups.contains(group)));
        s.emit(org, OutboxEntity::Member(user), true);
        self.commit_change(None).await
    }

    async fn memberships_of_user(&self, user: UserId) -> Result<Vec<Membership>, StoreError> {
        let s = self.state.read().await;
        Ok(s.members
            .values()
            .filter(|m| m.user_id == user)
            .cloned()
            .collect())
    }

    async fn create_group(&self, org: OrgId, group: &Group) -> Result<(), StoreError> {
        self.create_group_with_members(org, group, &[]).await
    }

    async fn create_group_with_members(
        &self,
        org: OrgId,
        group: &Group,
        members: &[GroupMembership],
    ) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        tenant(org, group.org_id, "group")?;
        let max = s.org(org)?.settings.max_users_per_group;
        if s.groups.contains_key(&group.id) {
            return Err(StoreError::Conflict(format!("group `{}` exists", group.id)));
        }
        check_group_name(&s, group)?;
        let mut users = BTreeSet::new();
        for m in members {
            tenant(org, m.org_id, "group membership")?;
            if m.group_id != group.id {
                return Err(StoreError::TenantMismatch(format!(
                    "group membership names group `{}`, not `{}`",
                    m.group_id, group.id
                )));
            }
            s.member_of(org, m.user_id)?;
            if users.insert(m.user_id) {
                shared::check_group_room(&group.name, users.len() as u64 - 1, max)?;
            }
        }
        s.groups.insert(group.id, norm_group(group));
        let scope = BudgetScope::Group(group.id);
        s.put_implied_budget(org, scope, group.monthly_budget, group.updated_at);
        s.emit(org, OutboxEntity::Group(group.id), false);
        for m in members {
            let mut new = m.clone();
            new.joined_at = micros(m.joined_at);
            s.group_members.insert((group.id, m.user_id), new);
            s.emit(org, OutboxEntity::Member(m.user_id), false);
        }
        self.commit_change(None).await
    }

    async fn get_group(&self, org: OrgId, group: GroupId) -> Result<Group, StoreError> {
        self.state.read().await.group_in(org, group).cloned()
    }

    async fn locate_group(&self, group: GroupId) -> Result<Option<OrgId>, StoreError> {
        Ok(self.state.read().await.groups.get(&group).map(|g| g.org_id))
    }

    async fn list_groups(&self, org: OrgId) -> Result<Vec<Group>, StoreError> {
        let s = self.state.read().await;
        Ok(s.groups
            .values()
            .filter(|g| g.org_id == org)
            .cloned()
            .collect())
    }

    async fn update_group(&self, org: OrgId, group: &Group) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        tenant(org, group.org_id, "group")?;
        let old = s.group_in(org, group.id)?.clone();
        check_group_name(&s, group)?;
        let mut new = norm_group(group);
        new.created_at = old.created_at;
        s.groups.insert(group.id, new);
        let scope = BudgetScope::Group(group.id);
        s.put_implied_budget(org, scope, group.monthly_budget, group.updated_at);
        s.emit(org, OutboxEntity::Group(group.id), false);
        self.commit_change(None).await
    }

    async fn delete_group(&self, org: OrgId, group: GroupId) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        s.group_in(org, group)?;
        s.groups.remove(&group);
        s.group_members.retain(|(g, _), _| *g != group);
        s.put_implied_budget(org, BudgetScope::Group(group), None, Utc::now());
        s.emit(org, OutboxEntity::Group(group), true);
        self.commit_change(None).await
    }

    async fn put_group_member(
        &self,
        org: OrgId,
        membership: &GroupMembership,
    ) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        tenant(org, membership.org_id, "group membership")?;
        s.group_in(org, membership.group_id)?;
        s.member_of(org, membership.user_id)?;
        s.check_group_seat(org, membership.group_id, membership.user_id)?;
        let key = (membership.group_id, membership.user_id);
        let mut new = membership.clone();
        new.joined_at = match s.group_members.get(&key) {
            Some(old) => old.joined_at,
            None => micros(membership.joined_at),
        };
        s.group_members.insert(key, new);
        s.emit(org, OutboxEntity::Group(membership.group_id), false);
        s.emit(org, OutboxEntity::Member(membership.user_id), false);
        self.commit_change(None).await
    }

    async fn remove_group_member(
        &self,
        org: OrgId,
        group: GroupId,
        user: UserId,
    ) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        s.group_in(org, group)?;
        if s.group_members.remove(&(group, user)).is_none() {
            return Err(StoreError::not_found("group membership", user));
        }
        s.emit(org, OutboxEntity::Group(group), false);
        s.emit(org, OutboxEntity::Member(user), false);
        self.commit_change(None).await
    }

    async fn list_group_members(
        &self,
        org: OrgId,
        group: GroupId,
    ) -> Result<Vec<GroupMembership>, StoreError> {
        let s = self.state.read().await;
        s.group_in(org, group)?;
        Ok(s.group_members
            .values()
            .filter(|m| m.group_id == group)
            .cloned()
            .collect())
    }

    async fn groups_of_member(
        &self,
        org: OrgId,
        user: UserId,
    ) -> Result<Vec<(Group, GroupRole)>, StoreError> {
        let s = self.state.read().await;
        Ok(s.groups
            .values()
            .filter(|g| g.org_id == org)
            .filter_map(|g| {
                s.group_members
                    .get(&(g.id, user))
                    .map(|m| (g.clone(), m.role))
            })
            .collect())
    }

    async fn create_profile(&self, profile: &UserProfile) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        if s.profiles.contains_key(&profile.id) {
            return Err(StoreError::Conflict(format!(
                "profile `{}` exists",
                profile.id
            )));
        }
        let mut new = profile.clone();
        new.created_at = micros(new.created_at);
        s.profiles.insert(profile.id, new);
        self.commit_change(None).await
    }

    async fn get_profile(&self, profile: ProfileId) -> Result<UserProfile, StoreError> {
        self.state
            .read()
            .await
            .profiles
            .get(&profile)
            .cloned()
            .ok_or_else(|| StoreError::not_found("profile", profile))
    }

    async fn list_profiles(&self) -> Result<Vec<UserProfile>, StoreError> {
        Ok(self.state.read().await.profiles.values().cloned().collect())
    }

    async fn update_profile(&self, profile: &UserProfile) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        let stored = s
            .profiles
            .get_mut(&profile.id)
            .ok_or_else(|| StoreError::not_found("profile", profile.id))?;
        let created_at = stored.created_at;
        *stored = profile.clone();
        stored.created_at = created_at;
        self.commit_change(None).await
    }

    async fn delete_profile(&self, profile: ProfileId) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        if !s.profiles.contains_key(&profile) {
            return Err(StoreError::not_found("profile", profile));
        }
        let members = s
            .members
            .values()
            .filter(|m| m.profile_id == Some(profile))
            .count();
        let pending = s
            .invitations
            .values()
            .filter(|i| i.profile_id == Some(profile) && i.status == InvitationStatus::Pending)
            .count();
        if members + pending > 0 {
            return Err(shared::profile_in_use(members, pending));
        }
        for i in s.invitations.values_mut() {
            if i.profile_id == Some(profile) {
                i.profile_id = None;
            }
        }
        s.profiles.remove(&profile);
        self.commit_change(None).await
    }

    async fn create_invitation(
        &self,
        org: OrgId,
        invitation: &Invitation,
    ) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        tenant(org, invitation.org_id, "invitation")?;
        s.org(org)?;
        for group in &invitation.group_ids {
            s.group_in(org, *group)?;
        }
        check_profile(&s, invitation.profile_id)?;
        if let Some(inviter) = invitation.invited_by
            && !s.users.contains_key(&inviter)
        {
            return Err(StoreError::not_found("user", inviter));
        }
        if s.invitations.contains_key(&invitation.id) {
            return Err(StoreError::Conflict(format!(
                "invitation `{}` exists",
                invitation.id
            )));
        }
        if s.invitations
            .values()
            .any(|i| i.token_hash == invitation.token_hash)
        {
            return Err(StoreError::Conflict(
                "invitation token is in use".to_owned(),
            ));
        }
        if invitation.status == InvitationStatus::Pending
            && s.invitations.values().any(|i| {
                i.org_id == org
                    && i.email == invitation.email
                    && i.status == InvitationStatus::Pending
            })
        {
            return Err(pending_exists(&invitation.email));
        }
        s.invitations
            .insert(invitation.id, norm_invitation(invitation));
        self.commit_change(None).await
    }

    async fn save_invitations(
        &self,
        org: OrgId,
        invitations: &[Invitation],
    ) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        s.org(org)?;
        // Check every write first, then apply them all: all or nothing.
        let mut pending_emails = HashSet::new();
        for invitation in invitations {
            tenant(org, invitation.org_id, "invitation")?;
            for group in &invitation.group_ids {
                s.group_in(org, *group)?;
            }
            check_profile(&s, invitation.profile_id)?;
            if let Some(inviter) = invitation.invited_by
                && !s.users.contains_key(&inviter)
            {
                return Err(StoreError::not_found("user", inviter));
            }
            let email = match s.invitations.get(&invitation.id) {
                Some(existing) if existing.org_id != org => {
                    return Err(StoreError::not_found("invitation", invitation.id));
                }
                Some(existing) if existing.status != InvitationStatus::Pending => {
                    return Err(StoreError::Conflict(format!(
                        "invitation `{}` is {}",
                        invitation.id,
                        existing.status.as_str()
                    )));
                }
                Some(existing) => existing.email.clone(),
                None => {
                    if invitation.status == InvitationStatus::Pending
                        && s.invitations.values().any(|i| {
                            i.org_id == org
                                && i.email == invitation.email
                                && i.status == InvitationStatus::Pending
                        })
                    {
                        return Err(pending_exists(&invitation.email));
                    }
                    invitation.email.clone()
                }
            };
            if s.invitations
                .values()
                .any(|i| i.id != invitation.id && i.token_hash == invitation.token_hash)
            {
                return Err(StoreError::Conflict(
                    "invitation token is in use".to_owned(),
                ));
            }
            if !pending_emails.insert(email.clone()) {
                return Err(pending_exists(&email));
            }
        }
        for invitation in invitations {
            let written = match s.invitations.get(&invitation.id) {
                Some(existing) => {
                    let mut kept = existing.clone();
                    kept.role = invitation.role;
                    kept.group_ids = invitation.group_ids.clone();
                    kept.profile_id = invitation.profile_id;
                    kept.token_hash = invitation.token_hash.clone();
                    kept.expires_at = invitation.expires_at;
                    kept.invited_by = invitation.invited_by;
                    kept.delivery = invitation.delivery.clone();
                    kept
                }
                None => invitation.clone(),
            };
            s.invitations
                .insert(invitation.id, norm_invitation(&written));
        }
        self.commit_change(None).await
    }

    async fn find_invitation_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        let s = self.state.read().await;
        Ok(s.invitations
            .values()
            .find(|i| i.token_hash == token_hash)
            .cloned())
    }

    async fn pending_invitations_for(&self, email: &Email) -> Result<Vec<Invitation>, StoreError> {
        let s = self.state.read().await;
        let mut found: Vec<Invitation> = s
            .invitations
            .values()
            .filter(|i| &i.email == email && i.status == InvitationStatus::Pending)
            .cloned()
            .collect();
        found.sort_by_key(|i| i.id);
        Ok(found)
    }

    async fn list_invitations(&self, org: OrgId) -> Result<Vec<Invitation>, StoreError> {
        let s = self.state.read().await;
        Ok(s.invitations
            .values()
            .filter(|i| i.org_id == org)
            .cloned()
            .collect())
    }

    async fn revoke_invitation(
        &self,
        org: OrgId,
        invitation: InvitationId,
    ) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        let found = s
            .invitations
            .get_mut(&invitation)
            .filter(|i| i.org_id == org)
            .ok_or_else(|| StoreError::not_found("invitation", invitation))?;
        if found.status != InvitationStatus::Pending {
            return Err(StoreError::Conflict(format!(
                "invitation `{invitation}` is {}",
                shared::enum_text(&found.status)?
            )));
        }
        found.status = InvitationStatus::Revoked;
        self.commit_change(None).await
    }

    async fn accept_invitation(
        &self,
        token_hash: &str,
        user: &User,
        now: DateTime<Utc>,
    ) -> Result<Membership, StoreError> {
        let now = micros(now);
        let mut s = self.state.write().await;
        let invitation = s
            .invitations
            .values()
            .find(|i| i.token_hash == token_hash)
            .cloned()
            .ok_or_else(|| StoreError::not_found("invitation", "token"))?;
        let (after, outcome) = shared::accept_invitation(&invitation, user, now);
        if let Err(refusal) = outcome {
            if after.status != invitation.status {
                s.invitations.insert(after.id, after);
            }
            return Err(refusal);
        }
        if !s.users.contains_key(&user.id) {
            return Err(StoreError::not_found("user", user.id));
        }
        let org = invitation.org_id;
        if s.members.contains_key(&(org, user.id)) {
            return Err(shared::already_member());
        }
        for group in &invitation.group_ids {
            match s.check_group_seat(org, *group, user.id) {
                // A group deleted since the invitation was sent is skipped.
                Err(StoreError::NotFound { .. }) => {}
                // A full one refuses the whole acceptance (nothing is written yet).
                Err(full) => return Err(full),
                Ok(()) => {}
            }
        }
        let membership = invitation.membership_for(user.id, now);
        s.members.insert((org, user.id), membership.clone());
        s.emit(org, OutboxEntity::Member(user.id), false);
        for group in &invitation.group_ids {
            // A group deleted since the invitation was sent is skipped.
            if s.group_in(org, *group).is_ok() {
                s.group_members.insert(
                    (*group, user.id),
                    GroupMembership {
                        org_id: org,
                        group_id: *group,
                        user_id: user.id,
                        role: GroupRole::Member,
                        joined_at: now,
                    },
                );
                s.emit(org, OutboxEntity::Group(*group), false);
            }
        }
        s.invitations.insert(after.id, after);
        self.commit_change(crate::audited::snapshot(&membership))
            .await?;
        Ok(membership)
    }
}

fn check_user_unique(s: &State, user: &User) -> Result<(), StoreError> {
    if s.users
        .values()
        .any(|u| u.id != user.id && u.email == user.email)
    {
        return Err(StoreError::Conflict(
            "a user with this `email` already exists".to_owned(),
        ));
    }
    if let Some(subject) = &user.oidc_subject
        && s.users
            .values()
            .any(|u| u.id != user.id && u.oidc_subject.as_ref() == Some(subject))
    {
        return Err(StoreError::Conflict(
            "a user with this `oidc_subject` already exists".to_owned(),
        ));
    }
    Ok(())
}

fn check_profile(s: &State, profile: Option<ProfileId>) -> Result<(), StoreError> {
    match profile {
        Some(id) if !s.profiles.contains_key(&id) => Err(StoreError::not_found("profile", id)),
        _ => Ok(()),
    }
}

fn check_group_name(s: &State, group: &Group) -> Result<(), StoreError> {
    let others = s.groups.values().filter(|g| g.org_id == group.org_id);
    shared::check_group_name(
        group.id,
        &group.name,
        others.map(|g| (g.id, g.name.as_str())),
    )
}

#[async_trait]
impl TierStore for MemoryStore {
    async fn upsert_tier(&self, tier: &ModelTier) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        if s.tiers
            .values()
            .any(|t| t.id != tier.id && t.slug == tier.slug)
        {
            return Err(StoreError::Conflict(format!(
                "tier slug `{}` is taken",
                tier.slug
            )));
        }
        let mut seen = BTreeSet::new();
        for model in &tier.models {
            if !seen.insert(model) {
                return Err(StoreError::Conflict(format!(
                    "model `{model}` is listed twice"
                )));
            }
            if let Some(other) = s
                .tiers
                .values()
                .find(|t| t.id != tier.id && t.models.contains(model))
            {
                return Err(StoreError::Conflict(format!(
                    "model `{model}` is in tier `{}`",
                    other.slug
                )));
            }
        }
        s.tiers.insert(tier.id, tier.clone());
        self.commit_change(None).await
    }

    async fn list_tiers(&self) -> Result<Vec<ModelTier>, StoreError> {
        // As every backend: the rate fields are the rates in force now.
        let now = chrono::Utc::now();
        let mut tiers: Vec<ModelTier> = self
            .state
            .read()
            .await
            .tiers
            .values()
            .map(|t| t.as_of(now))
            .collect();
        tiers.sort_by_key(|t| (t.sort_order, t.id));
        Ok(tiers)
    }

    async fn get_tier(&self, tier: TierId) -> Result<ModelTier, StoreError> {
        self.state
            .read()
            .await
            .tiers
            .get(&tier)
            .map(|t| t.as_of(chrono::Utc::now()))
            .ok_or_else(|| StoreError::not_found("tier", tier))
    }

    async fn put_subscription(
        &self,
        org: OrgId,
        subscription: &TierSubscription,
    ) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        tenant(org, subscription.org_id, "subscription")?;
        s.org(org)?;
        if !s.tiers.contains_key(&subscription.tier_id) {
            return Err(StoreError::not_found("tier", subscription.tier_id));
        }
        let mut new = subscription.clone();
        new.enabled_at = micros(new.enabled_at);
        s.subscriptions.insert((org, subscription.tier_id), new);
        let budget = subscription.monthly_budget.filter(|_| subscription.enabled);
        let scope = BudgetScope::Tier(subscription.tier_id);
        s.put_implied_budget(org, scope, budget, Utc::now());
        s.emit(org, OutboxEntity::Org(org), false);
        self.commit_change(None).await
    }

    async fn list_subscriptions(&self, org: OrgId) -> Result<Vec<TierSubscription>, StoreError> {
        let s = self.state.read().await;
        Ok(s.subscriptions
            .values()
            .filter(|sub| sub.org_id == org)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl GuardrailStore for MemoryStore {
    async fn put_platform_rule(&self, rule: &RuleRecord) -> Result<(), StoreError> {
        shared::check_rule(rule)?;
        if let Some(org) = rule.scope.org_id() {
            return Err(StoreError::TenantMismatch(format!(
                "a platform rule can not be scoped to organization `{org}`"
            )));
        }
        let mut s = self.state.write().await;
        s.check_rule_targets(rule)?;
        if let Some(old) = s.rules.get(&rule.id)
            && old.scope.org_id().is_some()
        {
            return Err(StoreError::Conflict(format!(
                "rule `{}` belongs to an organization",
                rule.id
            )));
        }
        let mut new = rule.clone();
        new.created_at = micros(new.created_at);
        s.rules.insert(rule.id, new);
        self.commit_change(None).await
    }

    async fn put_rule(&self, org: OrgId, rule: &RuleRecord) -> Result<(), StoreError> {
        shared::check_rule(rule)?;
        match rule.scope.org_id() {
            Some(owner) => tenant(org, owner, "rule")?,
            None => {
                return Err(StoreError::TenantMismatch(format!(
                    "rule `{}` is a platform rule, not one of organization `{org}`",
                    rule.id
                )));
            }
        }
        let mut s = self.state.write().await;
        s.check_rule_targets(rule)?;
        if let Some(old) = s.rules.get(&rule.id)
            && old.scope.org_id() != Some(org)
        {
            return Err(StoreError::Conflict(format!(
                "rule id `{}` is in use",
                rule.id
            )));
        }
        let mut new = rule.clone();
        new.created_at = micros(new.created_at);
        s.rules.insert(rule.id, new);
        self.commit_change(None).await
    }

    async fn get_rule(&self, org: OrgId, rule: RuleId) -> Result<RuleRecord, StoreError> {
        let s = self.state.read().await;
        s.rules
            .get(&rule)
            .filter(|r| r.scope.org_id() == Some(org))
            .cloned()
            .ok_or_else(|| StoreError::not_found("rule", rule))
    }

    async fn delete_rule(&self, org: OrgId, rule: RuleId) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        if s.rules
            .get(&rule)
            .is_some_and(|r| r.scope.org_id() == Some(org))
        {
            s.rules.remove(&rule);
            self.commit_change(None).await
        } else {
            Err(StoreError::not_found("rule", rule))
        }
    }

    async fn delete_platform_rule(&self, rule: RuleId) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        if s.rules
            .get(&rule)
            .is_some_and(|r| r.scope.org_id().is_none())
        {
            s.rules.remove(&rule);
            self.commit_change(None).await
        } else {
            Err(StoreError::not_found("rule", rule))
        }
    }

    async fn list_platform_rules(&self) -> Result<Vec<RuleRecord>, StoreError> {
        let s = self.state.read().await;
        Ok(sorted_rules(
            s.rules.values().filter(|r| r.scope.org_id().is_none()),
        ))
    }

    async fn list_org_rules(&self, org: OrgId) -> Result<Vec<RuleRecord>, StoreError> {
        let s = self.state.read().await;
        Ok(sorted_rules(
            s.rules.values().filter(|r| r.scope.org_id() == Some(org)),
        ))
    }
}

/// Rules in evaluation order: priority descending, then id.
fn sorted_rules<'a>(rules: impl Iterator<Item = &'a RuleRecord>) -> Vec<RuleRecord> {
    let mut rules: Vec<RuleRecord> = rules.cloned().collect();
    rules.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.id));
    rules
}

#[async_trait]
impl BudgetLedger for MemoryStore {
    async fn create_budget(&self, org: OrgId, budget: &Budget) -> Result<(), StoreError> {
        budget.validate()?;
        let mut s = self.state.write().await;
        tenant(org, budget.org_id, "budget")?;
        s.org(org)?;
        s.check_budget_scope(org, budget)?;
        if s.budgets.contains_key(&budget.id) {
            return Err(StoreError::Conflict(format!(
                "budget `{}` exists",
                budget.id
            )));
        }
        s.budgets.insert(budget.id, norm_budget(budget));
        self.commit_change(None).await
    }

    async fn get_budget(&self, org: OrgId, budget: BudgetId) -> Result<Budget, StoreError> {
        self.state.read().await.budget_in(org, budget).cloned()
    }

    async fn list_budgets(&self, org: OrgId) -> Result<Vec<Budget>, StoreError> {
        let s = self.state.read().await;
        Ok(s.budgets
            .values()
            .filter(|b| b.org_id == org)
            .cloned()
            .collect())
    }

    async fn update_budget(&self, org: OrgId, budget: &Budget) -> Result<(), StoreError> {
        budget.validate()?;
        let mut s = self.state.write().await;
        tenant(org, budget.org_id, "budget")?;
        let old = s.budget_in(org, budget.id)?.clone();
        let mut new = norm_budget(budget);
        // The scope and creation time are fixed; the rest is replaced.
        new.scope = old.scope;
        new.created_at = old.created_at;
        s.budgets.insert(budget.id, new);
        self.commit_change(None).await
    }

    async fn delete_budget(&self, org: OrgId, budget: BudgetId) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        s.budget_in(org, budget)?;
        s.drop_budget(budget);
        self.commit_change(None).await
    }

    async fn states(
        &self,
        org: OrgId,
        budgets: &[BudgetId],
        now: DateTime<Utc>,
    ) -> Result<Vec<BudgetState>, StoreError> {
        let s = self.state.read().await;
        budgets
            .iter()
            .map(|id| {
                let budget = s.budget_in(org, *id)?;
                Ok(s.state_of(budget, s.window(budget, now)))
            })
            .collect()
    }

    async fn reserve(
        &self,
        org: OrgId,
        request: &ReserveRequest,
    ) -> Result<ReserveOutcome, StoreError> {
        let mut s = self.state.write().await;
        let key = (org, request.request_id);
        if let Some(existing) = s.reservations.get(&key) {
            let states = existing
                .items
                .iter()
                .filter_map(|(id, window)| s.budgets.get(id).map(|b| s.state_of(b, *window)))
                .collect();
            return Ok(ReserveOutcome::Reserved(states));
        }
        // Fixed order (by id) and no duplicates, as the SQL backends lock them.
        let ids: BTreeSet<BudgetId> = request.budgets.iter().copied().collect();
        let mut states = Vec::with_capacity(ids.len());
        for id in ids {
            let budget = s.budget_in(org, id)?;
            states.push(s.state_of(budget, s.window(budget, request.now)));
        }
        if let BudgetOutcome::Deny { refusal } = evaluate_budgets(&states, request.amount).outcome {
            return Ok(ReserveOutcome::Refused(refusal));
        }
        let items: Vec<(BudgetId, PeriodWindow)> = states
            .iter()
            .map(|st| {
                (
                    st.budget.id,
                    PeriodWindow {
                        start: st.period_start,
                        end: st.period_end,
                    },
                )
            })
            .collect();
        for (id, window) in &items {
            let period = s.period_mut(*id, *window);
            period.reserved = period.reserved + request.amount;
        }
        for state in &mut states {
            state.reserved = state.reserved + request.amount;
        }
        s.reservations.insert(
            key,
            Reservation {
                amount: request.amount,
                items,
                expires_at: micros(request.expires_at),
                status: ReservationStatus::Active,
                settled: Money::ZERO,
                holder: request.holder,
                created_at: micros(request.now),
            },
        );
        Ok(ReserveOutcome::Reserved(states))
    }

    async fn settle(
        &self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        actual: Money,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError> {
        self.state
            .write()
            .await
            .settle(org, request_id, budgets, actual, now, false)
    }

    async fn settle_total(
        &self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        total: Money,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError> {
        self.state
            .write()
            .await
            .settle(org, request_id, budgets, total, now, true)
    }

    async fn beat(&self, instance: InstanceId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.state
            .write()
            .await
            .instances
            .insert(instance, micros(now));
        Ok(())
    }

    async fn retire_instance(&self, instance: InstanceId) -> Result<(), StoreError> {
        self.state.write().await.instances.remove(&instance);
        Ok(())
    }

    async fn abandoned_leases(
        &self,
        dead_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<HeldReservation>, StoreError> {
        let s = self.state.read().await;
        let mut found: Vec<HeldReservation> = s
            .reservations
            .iter()
            .filter(|(_, r)| r.status == ReservationStatus::Active)
            .filter_map(|((org, id), r)| {
                let holder = r.holder?;
                let alive = s
                    .instances
                    .get(&holder)
                    .is_some_and(|at| *at >= dead_before);
                (!alive).then(|| HeldReservation {
                    org: *org,
                    request_id: *id,
                    budgets: r.items.iter().map(|(b, _)| *b).collect(),
                    holder,
                    created_at: r.created_at,
                })
            })
            .collect();
        found.sort_by_key(|h| (h.created_at, h.request_id));
        found.truncate(limit as usize);
        Ok(found)
    }

    async fn release(&self, org: OrgId, request_id: RequestId) -> Result<(), StoreError> {
        self.state
            .write()
            .await
            .release_reservation((org, request_id));
        Ok(())
    }

    async fn reclaim_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let now = micros(now);
        let mut s = self.state.write().await;
        let expired: Vec<(OrgId, RequestId)> = s
            .reservations
            .iter()
            .filter(|(_, r)| r.status == ReservationStatus::Active && r.expires_at <= now)
            .map(|(key, _)| *key)
            .collect();
        let mut reclaimed = 0;
        for key in expired {
            if s.release_reservation(key) {
                reclaimed += 1;
            }
        }
        Ok(reclaimed)
    }
}

#[async_trait]
impl UsageStore for MemoryStore {
    async fn append(
        &self,
        org: OrgId,
        records: &[UsageRecord],
    ) -> Result<AppendOutcome, StoreError> {
        let mut s = self.state.write().await;
        for record in records {
            tenant(org, record.org_id, "usage record")?;
        }
        if !records.is_empty() {
            s.org(org)?;
        }
        for record in records {
            if !s.users.contains_key(&record.user_id) {
                return Err(StoreError::not_found("user", record.user_id));
            }
            if let Some(group) = record.group_id {
                s.group_in(org, group)?;
            }
            if let Some(tier) = record.tier_id
                && !s.tiers.contains_key(&tier)
            {
                return Err(StoreError::not_found("tier", tier));
            }
        }
        let mut outcome = AppendOutcome::default();
        for record in records {
            let key = (org, record.request_id);
            if s.usage_ids.contains_key(&key) {
                outcome.duplicates += 1;
                continue;
            }
            let record = norm_record(record);
            s.usage_ids.insert(key, record.created_at);
            s.usage
                .entry(org)
                .or_default()
                .insert((record.created_at, record.request_id), record);
            outcome.inserted += 1;
        }
        Ok(outcome)
    }

    async fn get(&self, org: OrgId, request_id: RequestId) -> Result<UsageRecord, StoreError> {
        let s = self.state.read().await;
        s.usage_ids
            .get(&(org, request_id))
            .and_then(|at| s.usage.get(&org)?.get(&(*at, request_id)))
            .cloned()
            .ok_or_else(|| StoreError::not_found("usage record", request_id))
    }

    async fn query(
        &self,
        org: OrgId,
        query: &UsageQuery,
        limit: u32,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        let s = self.state.read().await;
        Ok(s.usage_page(org, query, None, limit as usize))
    }

    async fn aggregate(
        &self,
        org: OrgId,
        query: &UsageQuery,
        group_by: &[Dimension],
    ) -> Result<Vec<AggregateRow>, StoreError> {
        let s = self.state.read().await;
        let mut aggregator = shared::Aggregator::default();
        if let Some(records) = s.usage.get(&org) {
            for record in records.values().filter(|r| shared::matches(query, r)) {
                aggregator.add(group_by, record);
            }
        }
        Ok(aggregator.finish())
    }

    async fn charged_under_lease(
        &self,
        org: OrgId,
        lease: RequestId,
    ) -> Result<(Money, u64), StoreError> {
        let s = self.state.read().await;
        let under = s
            .usage
            .get(&org)
            .into_iter()
            .flat_map(|records| records.values())
            .filter(|r| r.lease_id == Some(lease));
        Ok(under.fold((Money::ZERO, 0), |(sum, n), r| (sum + r.charged(), n + 1)))
    }

    async fn totals_by_org(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(OrgId, UsageTotals)>, StoreError> {
        let s = self.state.read().await;
        let mut out = Vec::new();
        for (org, records) in &s.usage {
            let mut totals = UsageTotals::default();
            for record in records.values() {
                if record.created_at >= from && record.created_at < to {
                    totals.add(record);
                }
            }
            if totals.requests > 0 {
                out.push((*org, totals));
            }
        }
        Ok(out)
    }

    fn stream(
        &self,
        org: OrgId,
        query: UsageQuery,
    ) -> BoxStream<'static, Result<UsageRecord, StoreError>> {
        let state = Arc::clone(&self.state);
        let query = Arc::new(query);
        shared::paged_stream(move |after| {
            let state = Arc::clone(&state);
            let query = Arc::clone(&query);
            async move {
                let s = state.read().await;
                Ok(s.usage_page(org, &query, after, shared::STREAM_PAGE as usize))
            }
        })
    }
}

#[async_trait]
impl OutboxStore for MemoryStore {
    async fn pending(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let now = micros(now);
        let s = self.state.read().await;
        Ok(s.outbox
            .values()
            .filter(|row| row.status == OutboxStatus::Pending && row.event.available_at <= now)
            .take(limit as usize)
            .map(|row| row.event.clone())
            .collect())
    }

    async fn complete(&self, seq: i64) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        let row = s
            .outbox
            .get_mut(&seq)
            .ok_or_else(|| StoreError::not_found("outbox event", seq))?;
        row.status = OutboxStatus::Done;
        Ok(())
    }

    async fn fail(&self, seq: i64, error: &str, retry_at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        let row = s
            .outbox
            .get_mut(&seq)
            .ok_or_else(|| StoreError::not_found("outbox event", seq))?;
        row.event.attempts += 1;
        row.event.last_error = Some(error.to_owned());
        row.event.available_at = micros(retry_at);
        Ok(())
    }

    async fn dead_letter(&self, seq: i64, reason: &str) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        let row = s
            .outbox
            .get_mut(&seq)
            .ok_or_else(|| StoreError::not_found("outbox event", seq))?;
        row.status = OutboxStatus::Dead;
        row.event.last_error = Some(reason.to_owned());
        Ok(())
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        let s = self.state.read().await;
        Ok(s.outbox
            .values()
            .rev()
            .filter(|row| row.status == OutboxStatus::Dead)
            .take(limit as usize)
            .map(|row| row.event.clone())
            .collect())
    }
}

#[async_trait]
impl KeyVaultStore for MemoryStore {
    async fn put_sealed_key(
        &self,
        org: OrgId,
        user: UserId,
        key: &SealedKey,
    ) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        s.member_of(org, user)?;
        let mut key = key.clone();
        key.sealed_at = micros(key.sealed_at);
        s.sealed_keys.insert((org, user), key);
        Ok(())
    }

    async fn find_sealed_key(
        &self,
        org: OrgId,
        user: UserId,
    ) -> Result<Option<SealedKey>, StoreError> {
        Ok(self
            .state
            .read()
            .await
            .sealed_keys
            .get(&(org, user))
            .cloned())
    }

    async fn delete_sealed_key(&self, org: OrgId, user: UserId) -> Result<bool, StoreError> {
        Ok(self
            .state
            .write()
            .await
            .sealed_keys
            .remove(&(org, user))
            .is_some())
    }
}

#[async_trait]
impl InvoiceStore for MemoryStore {
    async fn put_draft_invoice(
        &self,
        org: OrgId,
        invoice: &MonthlyInvoice,
    ) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        if !s.orgs.contains_key(&org) {
            return Err(StoreError::not_found("organization", org));
        }
        let existing: Vec<MonthlyInvoice> = s
            .invoices
            .values()
            .filter(|i| i.org_id == org)
            .cloned()
            .collect();
        let replaced = shared::check_invoice_draft(org, &existing, invoice)?;
        for id in replaced {
            s.invoices.remove(&id);
        }
        s.invoices.insert(invoice.id, shared::norm_invoice(invoice));
        self.commit_change(None).await
    }

    async fn get_invoice(&self, org: OrgId, id: InvoiceId) -> Result<MonthlyInvoice, StoreError> {
        self.state
            .read()
            .await
            .invoices
            .get(&id)
            .filter(|i| i.org_id == org)
            .cloned()
            .ok_or_else(|| StoreError::not_found("invoice", id))
    }

    async fn list_invoices(&self, org: OrgId) -> Result<Vec<MonthlyInvoice>, StoreError> {
        let mut out: Vec<MonthlyInvoice> = self
            .state
            .read()
            .await
            .invoices
            .values()
            .filter(|i| i.org_id == org)
            .cloned()
            .collect();
        shared::sort_invoices(&mut out);
        Ok(out)
    }

    async fn set_invoice_status(
        &self,
        org: OrgId,
        id: InvoiceId,
        to: InvoiceState,
        at: DateTime<Utc>,
    ) -> Result<MonthlyInvoice, StoreError> {
        let mut s = self.state.write().await;
        let current = s
            .invoices
            .get(&id)
            .filter(|i| i.org_id == org)
            .ok_or_else(|| StoreError::not_found("invoice", id))?;
        let next = shared::invoice_transition(current, to, at)?;
        s.invoices.insert(id, next.clone());
        self.commit_change(crate::audited::snapshot(&next)).await?;
        Ok(next)
    }
}
