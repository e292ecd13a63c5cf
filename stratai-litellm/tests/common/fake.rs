//! An in-memory StratAI directory + outbox for the sync tests: every change emits an outbox
//! event with a per-entity version, like the stores do.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use stratai_core::Money;
use stratai_core::StoreError;
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope};
use stratai_core::directory::{
    BillingPlan, Email, Group, Membership, OrgRole, OrgSettings, Organization, PlatformRole, Slug,
    User,
};
use stratai_core::ids::{GroupId, ModelId, OrgId, TierId, TierSlug, UserId};
use stratai_core::ports::{OutboxEntity, OutboxEvent, OutboxStore};
use stratai_core::tiers::{ModelTier, TierCatalog, TierSubscription, subscriptions_for};
use stratai_litellm::sync::{KeyLimits, SyncSource};

pub fn basic() -> TierSlug {
    TierSlug::new("basic").unwrap()
}

pub fn premium() -> TierSlug {
    TierSlug::new("premium").unwrap()
}

fn tier(slug: &str, model: &str, order: i32) -> ModelTier {
    ModelTier {
        id: TierId::new(),
        slug: TierSlug::new(slug).unwrap(),
        name: slug.to_owned(),
        description: String::new(),
        best_use_case: String::new(),
        models: vec![ModelId::new(model).unwrap()],
        base_price: Money::ZERO,
        input_rate_per_million: Decimal::new(1000, 0),
        output_rate_per_million: Decimal::new(2000, 0),
        sort_order: order,
        active: true,
        rate_schedule: Vec::new(),
    }
}

#[derive(Default)]
struct State {
    orgs: BTreeMap<OrgId, Organization>,
    org_budgets: HashMap<OrgId, Money>,
    subscriptions: HashMap<OrgId, Vec<TierSubscription>>,
    groups: BTreeMap<GroupId, Group>,
    group_members: BTreeMap<GroupId, Vec<UserId>>,
    users: HashMap<UserId, User>,
    members: BTreeMap<(OrgId, UserId), Membership>,
    outbox: BTreeMap<i64, (OutboxEvent, &'static str)>,
    versions: HashMap<OutboxEntity, i64>,
    next_seq: i64,
    budgets: Vec<Budget>,
    limits: HashMap<(OrgId, UserId), KeyLimits>,
    limits_version: u64,
}

impl State {
    fn emit(&mut self, org_id: OrgId, entity: OutboxEntity, deleted: bool) {
        let version = self.versions.entry(entity).or_insert(0);
        *version += 1;
        let version = *version;
        self.next_seq += 1;
        let now = Utc::now();
        let event = OutboxEvent {
            seq: self.next_seq,
            org_id,
            entity,
            deleted,
            version,
            attempts: 0,
            last_error: None,
            available_at: now,
            created_at: now,
        };
        self.outbox.insert(self.next_seq, (event, "pending"));
    }
}

/// The fake directory.
pub struct FakeDirectory {
    catalog: Vec<ModelTier>,
    state: Mutex<State>,
}

impl FakeDirectory {
    /// Tiers `basic` = [mock-gpt], `premium` = [mock-gpt-premium].
    pub fn new() -> Self {
        Self {
            catalog: vec![
                tier("basic", "mock-gpt", 1),
                tier("premium", "mock-gpt-premium", 2),
            ],
            state: Mutex::new(State::default()),
        }
    }

    pub fn add_org(&self, slug: &str) -> OrgId {
        let now = Utc::now();
        let settings = OrgSettings::new(vec![basic(), premium()], basic()).unwrap();
        let org = Organization::new(
            slug,
            Slug::new(slug).unwrap(),
            settings,
            BillingPlan::Business,
            now,
        )
        .unwrap();
        let ids: Vec<TierId> = self.catalog.iter().map(|t| t.id).collect();
        let mut s = self.state.lock().unwrap();
        s.subscriptions
            .insert(org.id, subscriptions_for(org.id, &ids, now));
        let id = org.id;
        s.orgs.insert(id, org);
        s.emit(id, OutboxEntity::Org(id), false);
        id
    }

    /// The organization's monthly budget. Like the stores, a budget change emits no outbox
    /// event: the reconciler (or the next org event) carries it to LiteLLM.
    pub fn set_org_budget(&self, org: OrgId, budget: Option<Decimal>) {
        let mut s = self.state.lock().unwrap();
        match budget {
            Some(b) => s.org_budgets.insert(org, Money::new(b).unwrap()),
            None => s.org_budgets.remove(&org),
        };
    }

    /// A budget of `/api/budgets`. Like the stores, budgets emit no outbox event: the
    /// reconciler carries them to LiteLLM.
    pub fn add_budget(
        &self,
        org: OrgId,
        scope: BudgetScope,
        limit: Decimal,
        period: BudgetPeriod,
        hard: bool,
    ) -> Budget {
        let budget = Budget::new(
            org,
            scope,
            Money::new(limit).unwrap(),
            period,
            hard,
            Decimal::ONE,
            Utc::now(),
        )
        .unwrap();
        self.state.lock().unwrap().budgets.push(budget.clone());
        budget
    }

    /// The per-minute limits the rules give a member's key; like a rule change, this emits
    /// no outbox event but moves the limits version.
    pub fn set_key_limits(&self, org: OrgId, user: UserId, limits: KeyLimits) {
        let mut s = self.state.lock().unwrap();
        s.limits.insert((org, user), limits);
        s.limits_version += 1;
    }

    /// Deactivates or reactivates a user (a member event per membership, as the stores do).
    pub fn set_user_active(&self, user: UserId, active: bool) {
        let mut s = self.state.lock().unwrap();
        s.users.get_mut(&user).unwrap().active = active;
        let orgs: Vec<OrgId> = s
            .members
            .keys()
            .filter(|(_, u)| *u == user)
            .map(|(o, _)| *o)
            .collect();
        for org in orgs {
            s.emit(org, OutboxEntity::Member(user), false);
        }
    }

    /// Enables or disables the organization's subscription to a tier (an org event, as in
    /// the stores).
    pub fn set_subscription(&self, org: OrgId, tier: &TierSlug, enabled: bool) {
        let id = self.catalog.iter().find(|t| &t.slug == tier).unwrap().id;
        let mut s = self.state.lock().unwrap();
        for sub in s.subscriptions.get_mut(&org).unwrap() {
            if sub.tier_id == id {
                sub.enabled = enabled;
            }
        }
        s.emit(org, OutboxEntity::Org(org), false);
    }

    /// Sets the organization's timezone (its budget periods' zone; an org event).
    pub fn set_org_timezone(&self, org: OrgId, timezone: Option<&str>) {
        let mut s = self.state.lock().unwrap();
        s.orgs.get_mut(&org).unwrap().settings.timezone = timezone.map(str::to_owned);
        s.emit(org, OutboxEntity::Org(org), false);
    }

    /// The organization.
    pub fn organization(&self, org: OrgId) -> Organization {
        self.state.lock().unwrap().orgs[&org].clone()
    }

    /// Deactivates or reactivates the organization (an org event).
    pub fn set_org_active(&self, org: OrgId, active: bool) {
        let mut s = self.state.lock().unwrap();
        s.orgs.get_mut(&org).unwrap().active = active;
        s.emit(org, OutboxEntity::Org(org), false);
    }

    /// Deletes the organization with its groups and members (an org event).
    pub fn delete_org(&self, org: OrgId) {
        let mut s = self.state.lock().unwrap();
        s.orgs.remove(&org);
        s.org_budgets.remove(&org);
        let groups: Vec<GroupId> = s
            .groups
            .values()
            .filter(|g| g.org_id == org)
            .map(|g| g.id)
            .collect();
        for g in groups {
            s.groups.remove(&g);
            s.group_members.remove(&g);
        }
        s.members.retain(|(o, _), _| *o != org);
        s.emit(org, OutboxEntity::Org(org), true);
    }

    /// The organization's current outbox version.
    pub fn org_version(&self, org: OrgId) -> i64 {
        self.state
            .lock()
            .unwrap()
            .versions
            .get(&OutboxEntity::Org(org))
            .copied()
            .unwrap_or(0)
    }

    pub fn add_group(
        &self,
        org: OrgId,
        name: &str,
        tiers: Option<Vec<TierSlug>>,
        budget: Option<Decimal>,
    ) -> GroupId {
        let mut group = Group::new(org, name, Utc::now()).unwrap();
        if let Some(tiers) = tiers {
            group = group.with_allowed_tiers(tiers).unwrap();
        }
        if let Some(budget) = budget {
            group = group.with_monthly_budget(Money::new(budget).unwrap());
        }
        let id = group.id;
        let mut s = self.state.lock().unwrap();
        s.groups.insert(id, group);
        s.emit(org, OutboxEntity::Group(id), false);
        id
    }

    pub fn set_group_tiers(&self, org: OrgId, group: GroupId, tiers: Option<Vec<TierSlug>>) {
        let mut s = self.state.lock().unwrap();
        let g = s.groups.get_mut(&group).unwrap();
        g.allowed_tiers = tiers;
        s.emit(org, OutboxEntity::Group(group), false);
    }

    pub fn set_group_budget(&self, org: OrgId, group: GroupId, budget: Option<Decimal>) {
        let mut s = self.state.lock().unwrap();
        let g = s.groups.get_mut(&group).unwrap();
        g.monthly_budget = budget.map(|b| Money::new(b).unwrap());
        s.emit(org, OutboxEntity::Group(group), false);
    }

    pub fn delete_group(&self, org: OrgId, group: GroupId) {
        let mut s = self.state.lock().unwrap();
        s.groups.remove(&group);
        s.group_members.remove(&group);
        s.emit(org, OutboxEntity::Group(group), true);
    }

    /// A new user, member of `org` (and of `groups`), with optional tiers and budget.
    pub fn add_member(
        &self,
        org: OrgId,
        email: &str,
        tiers: Option<Vec<TierSlug>>,
        budget: Option<Decimal>,
        groups: &[GroupId],
    ) -> UserId {
        let user = User::new(
            Email::new(email).unwrap(),
            Some("Member"),
            PlatformRole::User,
            Utc::now(),
        )
        .unwrap();
        let id = user.id;
        let mut membership = Membership::new(org, id, OrgRole::Member, Utc::now());
        if let Some(tiers) = tiers {
            membership = membership.with_allowed_tiers(tiers).unwrap();
        }
        if let Some(budget) = budget {
            membership = membership.with_monthly_budget(Money::new(budget).unwrap());
        }
        let mut s = self.state.lock().unwrap();
        s.users.insert(id, user);
        s.members.insert((org, id), membership);
        s.emit(org, OutboxEntity::Member(id), false);
        for g in groups {
            s.group_members.entry(*g).or_default().push(id);
            s.emit(org, OutboxEntity::Group(*g), false);
            s.emit(org, OutboxEntity::Member(id), false);
        }
        id
    }

    pub fn set_member_tiers(&self, org: OrgId, user: UserId, tiers: Option<Vec<TierSlug>>) {
        let mut s = self.state.lock().unwrap();
        s.members.get_mut(&(org, user)).unwrap().allowed_tiers = tiers;
        s.emit(org, OutboxEntity::Member(user), false);
    }

    pub fn set_member_budget(&self, org: OrgId, user: UserId, budget: Option<Decimal>) {
        let mut s = self.state.lock().unwrap();
        s.members.get_mut(&(org, user)).unwrap().monthly_budget =
            budget.map(|b| Money::new(b).unwrap());
        s.emit(org, OutboxEntity::Member(user), false);
    }

    pub fn join_group(&self, org: OrgId, user: UserId, group: GroupId) {
        let mut s = self.state.lock().unwrap();
        s.group_members.entry(group).or_default().push(user);
        s.emit(org, OutboxEntity::Group(group), false);
        s.emit(org, OutboxEntity::Member(user), false);
    }

    pub fn leave_group(&self, org: OrgId, user: UserId, group: GroupId) {
        let mut s = self.state.lock().unwrap();
        if let Some(members) = s.group_members.get_mut(&group) {
            members.retain(|u| *u != user);
        }
        s.emit(org, OutboxEntity::Group(group), false);
        s.emit(org, OutboxEntity::Member(user), false);
    }

    pub fn remove_member(&self, org: OrgId, user: UserId) {
        let mut s = self.state.lock().unwrap();
        s.members.remove(&(org, user));
        let groups: Vec<GroupId> = s
            .group_members
            .iter()
            .filter(|(_, m)| m.contains(&user))
            .map(|(g, _)| *g)
            .collect();
        for g in &groups {
            s.group_members.get_mut(g).unwrap().retain(|u| *u != user);
            s.emit(org, OutboxEntity::Group(*g), false);
        }
        s.emit(org, OutboxEntity::Member(user), true);
    }

    pub fn membership(&self, org: OrgId, user: UserId) -> Option<Membership> {
        self.state
            .lock()
            .unwrap()
            .members
            .get(&(org, user))
            .cloned()
    }

    pub fn members_of(&self, org: OrgId) -> Vec<UserId> {
        self.state
            .lock()
            .unwrap()
            .members
            .keys()
            .filter(|(o, _)| *o == org)
            .map(|(_, u)| *u)
            .collect()
    }

    /// Events not yet delivered (pending, whether available now or later).
    pub fn undelivered(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .outbox
            .values()
            .filter(|(_, status)| *status == "pending")
            .count()
    }

    pub fn dead(&self) -> Vec<OutboxEvent> {
        self.state
            .lock()
            .unwrap()
            .outbox
            .values()
            .filter(|(_, s)| *s == "dead")
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// Makes every pending event available now (to skip backoff waits in tests).
    pub fn make_all_available(&self) {
        let now = Utc::now();
        for (event, status) in self.state.lock().unwrap().outbox.values_mut() {
            if *status == "pending" {
                event.available_at = now;
            }
        }
    }
}

#[async_trait]
impl SyncSource for FakeDirectory {
    async fn orgs(&self) -> Result<Vec<Organization>, StoreError> {
        Ok(self.state.lock().unwrap().orgs.values().cloned().collect())
    }
    async fn org(&self, org: OrgId) -> Result<Option<Organization>, StoreError> {
        Ok(self.state.lock().unwrap().orgs.get(&org).cloned())
    }
    async fn groups(&self, org: OrgId) -> Result<Vec<Group>, StoreError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .groups
            .values()
            .filter(|g| g.org_id == org)
            .cloned()
            .collect())
    }
    async fn group(&self, org: OrgId, group: GroupId) -> Result<Option<Group>, StoreError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .groups
            .get(&group)
            .filter(|g| g.org_id == org)
            .cloned())
    }
    async fn group_members(&self, _org: OrgId, group: GroupId) -> Result<Vec<UserId>, StoreError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .group_members
            .get(&group)
            .cloned()
            .unwrap_or_default())
    }
    async fn members(&self, org: OrgId) -> Result<Vec<Membership>, StoreError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .members
            .values()
            .filter(|m| m.org_id == org)
            .cloned()
            .collect())
    }
    async fn member(&self, org: OrgId, user: UserId) -> Result<Option<Membership>, StoreError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .members
            .get(&(org, user))
            .cloned())
    }
    async fn member_groups(&self, org: OrgId, user: UserId) -> Result<Vec<Group>, StoreError> {
        let s = self.state.lock().unwrap();
        Ok(s.group_members
            .iter()
            .filter(|(_, m)| m.contains(&user))
            .filter_map(|(g, _)| s.groups.get(g))
            .filter(|g| g.org_id == org)
            .cloned()
            .collect())
    }
    async fn user(&self, user: UserId) -> Result<Option<User>, StoreError> {
        Ok(self.state.lock().unwrap().users.get(&user).cloned())
    }
    async fn catalog(&self) -> Result<TierCatalog, StoreError> {
        TierCatalog::new(self.catalog.clone()).map_err(|e| StoreError::Backend(e.to_string()))
    }
    async fn subscriptions(&self, org: OrgId) -> Result<Vec<TierSubscription>, StoreError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .subscriptions
            .get(&org)
            .cloned()
            .unwrap_or_default())
    }
    async fn org_budget(&self, org: OrgId) -> Result<Option<Money>, StoreError> {
        Ok(self.state.lock().unwrap().org_budgets.get(&org).copied())
    }
    async fn budgets(&self, org: OrgId) -> Result<Vec<Budget>, StoreError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .budgets
            .iter()
            .filter(|b| b.org_id == org)
            .cloned()
            .collect())
    }
    async fn key_limits(
        &self,
        org: OrgId,
        user: UserId,
        _groups: &[GroupId],
    ) -> Result<KeyLimits, StoreError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .limits
            .get(&(org, user))
            .copied()
            .unwrap_or_default())
    }
    fn limits_version(&self) -> Option<u64> {
        Some(self.state.lock().unwrap().limits_version)
    }
    async fn record_key(
        &self,
        org: OrgId,
        user: UserId,
        token: Option<&str>,
    ) -> Result<(), StoreError> {
        if let Some(m) = self.state.lock().unwrap().members.get_mut(&(org, user)) {
            m.litellm_key_id = token.map(str::to_owned);
        }
        Ok(())
    }
}

#[async_trait]
impl OutboxStore for FakeDirectory {
    async fn pending(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .outbox
            .values()
            .filter(|(e, s)| *s == "pending" && e.available_at <= now)
            .take(limit as usize)
            .map(|(e, _)| e.clone())
            .collect())
    }
    async fn complete(&self, seq: i64) -> Result<(), StoreError> {
        let mut s = self.state.lock().unwrap();
        let row = s
            .outbox
            .get_mut(&seq)
            .ok_or_else(|| StoreError::not_found("outbox event", seq))?;
        row.1 = "done";
        Ok(())
    }
    async fn fail(&self, seq: i64, error: &str, retry_at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut s = self.state.lock().unwrap();
        let row = s
            .outbox
            .get_mut(&seq)
            .ok_or_else(|| StoreError::not_found("outbox event", seq))?;
        row.0.attempts += 1;
        row.0.last_error = Some(error.to_owned());
        row.0.available_at = retry_at;
        Ok(())
    }
    async fn dead_letter(&self, seq: i64, reason: &str) -> Result<(), StoreError> {
        let mut s = self.state.lock().unwrap();
        let row = s
            .outbox
            .get_mut(&seq)
            .ok_or_else(|| StoreError::not_found("outbox event", seq))?;
        row.1 = "dead";
        row.0.last_error = Some(reason.to_owned());
        Ok(())
    }
    async fn dead_letters(&self, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        Ok(self.dead().into_iter().rev().take(limit as usize).collect())
    }
}
