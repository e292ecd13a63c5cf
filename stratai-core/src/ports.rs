//! Ports: the async traits other crates implement (stores, ledger, gateway, clock).
//!
//! Every method that touches tenant data takes the [`OrgId`] it acts for; an implementation
//! must never return or change another organization's rows through it. The few platform-wide
//! operations (listing organizations, finding a user's memberships, the outbox) say so in their
//! docs: only platform code (super admin handlers, workers) calls them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditDraft, AuditEntry, AuditQuery, StoredChain};
use crate::billing::{InvoiceState, MonthlyInvoice};
use crate::budget::{Budget, BudgetAlert, BudgetRefusal, BudgetState};
use crate::directory::{
    Email, Group, GroupMembership, GroupRole, Invitation, Membership, Organization, PlatformRole,
    Slug, User, UserProfile,
};
use crate::error::StoreError;
use crate::gateway::{CallContext, ChatChunk, ChatRequest, ChatResponse, GatewayError};
use crate::ids::{
    BudgetId, GroupId, InstanceId, InvitationId, InvoiceId, OrgId, ProfileId, RequestId, RuleId,
    TierId, UserId,
};
use crate::money::Money;
use crate::tiers::{ModelTier, TierSubscription};
use crate::usage::{AggregateRow, Dimension, UsageQuery, UsageRecord, UsageTotals};

/// The source of "now". Deciders take time as input; this port supplies it.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Organizations, users, memberships, groups, profiles and invitations.
///
/// Every mutation of an organization, group or membership also writes an outbox event
/// (see [`OutboxStore`]) in the same transaction.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait DirectoryStore: Send + Sync {
    /// Creates an organization. Conflict when the slug is taken.
    async fn create_org(&self, org: &Organization) -> Result<(), StoreError>;
    /// One organization.
    async fn get_org(&self, org: OrgId) -> Result<Organization, StoreError>;
    /// Platform-wide: an organization by slug.
    async fn find_org_by_slug(&self, slug: &Slug) -> Result<Option<Organization>, StoreError>;
    /// Replaces an organization's mutable fields (name, settings, billing, active).
    async fn update_org(&self, org: &Organization) -> Result<(), StoreError>;
    /// Platform-wide: every organization.
    async fn list_orgs(&self) -> Result<Vec<Organization>, StoreError>;

    /// Creates a user. Conflict when the email or OIDC subject is taken.
    async fn create_user(&self, user: &User) -> Result<(), StoreError>;
    /// One user.
    async fn get_user(&self, user: UserId) -> Result<User, StoreError>;
    /// Platform-wide: how many people are members of at least one organization.
    async fn count_people_in_orgs(&self) -> Result<u64, StoreError>;
    /// Several users in one lookup (a page's members instead of a lookup each): each of
    /// `users` once, in the order given (a repeated id is answered at its first place).
    /// NotFound naming the first unknown id.
    async fn get_users(&self, users: &[UserId]) -> Result<Vec<User>, StoreError>;
    /// A user by normalized email.
    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError>;
    /// A user by OIDC subject.
    async fn find_user_by_subject(&self, subject: &str) -> Result<Option<User>, StoreError>;
    /// Replaces a user's profile fields (email, name, avatar, OIDC subject, last login). The
    /// platform role and the active flag are kept as stored: only
    /// [`set_user_active`](DirectoryStore::set_user_active) and
    /// [`set_platform_role`](DirectoryStore::set_platform_role) change them, so a write from a
    /// stale read (a login) never undoes a deactivation or a revocation.
    async fn update_user(&self, user: &User) -> Result<(), StoreError>;
    /// Platform-wide: users in email order (byte order of the normalized address, the same on
    /// every backend), those after `query.after`, at most `query.limit`, whose email or name
    /// contains `query.search` (ASCII letters compared case-insensitively).
    async fn list_users(&self, query: &UserQuery) -> Result<Vec<User>, StoreError>;
    /// Platform-wide: activates or deactivates a user, and writes an outbox event for each of
    /// their memberships in the same transaction (the LiteLLM sync blocks or unblocks their
    /// virtual keys). Deactivating the last active super admin is a conflict naming
    /// `active`; the check and the change are one atomic step, whatever runs concurrently.
    /// NotFound for an unknown user.
    async fn set_user_active(&self, user: UserId, active: bool) -> Result<User, StoreError>;
    /// Platform-wide: grants or revokes the platform's super admin role. Revoking the last
    /// active super admin is a conflict naming `platform_role`, decided atomically with the
    /// change (of two concurrent revocations of the last two, one fails). NotFound for an
    /// unknown user.
    async fn set_platform_role(&self, user: UserId, role: PlatformRole)
    -> Result<User, StoreError>;

    /// Adds a member. Conflict when already a member.
    async fn add_member(&self, org: OrgId, member: &Membership) -> Result<(), StoreError>;
    /// One membership.
    async fn get_member(&self, org: OrgId, user: UserId) -> Result<Membership, StoreError>;
    /// Every member of the organization.
    async fn list_members(&self, org: OrgId) -> Result<Vec<Membership>, StoreError>;
    /// Replaces a membership's role, tiers, budget and profile. Its LiteLLM key id is kept
    /// as stored (only [`set_litellm_key_id`](DirectoryStore::set_litellm_key_id) writes it),
    /// so an admin update made from a stale read never undoes the sync's write-back.
    async fn update_member(&self, org: OrgId, member: &Membership) -> Result<(), StoreError>;
    /// Writes back the LiteLLM key id (token hash) of a membership, `None` when the member
    /// has no key: one targeted update of that field, so it never overwrites a concurrent
    /// change of the membership's other fields. Writes no outbox event (it is the sync's own
    /// write-back). NotFound when the user is not a member of the organization.
    async fn set_litellm_key_id<'a>(
        &self,
        org: OrgId,
        user: UserId,
        key_id: Option<&'a str>,
    ) -> Result<(), StoreError>;
    /// Removes a member and their group memberships (and their sealed LiteLLM key, see
    /// [`KeyVaultStore`]) in the organization.
    async fn remove_member(&self, org: OrgId, user: UserId) -> Result<(), StoreError>;
    /// Platform-wide: the memberships of one user across organizations.
    async fn memberships_of_user(&self, user: UserId) -> Result<Vec<Membership>, StoreError>;

    /// Creates a group. Conflict when the name is taken in the organization.
    async fn create_group(&self, org: OrgId, group: &Group) -> Result<(), StoreError>;
    /// Creates a group with its first members, all or nothing: conflict when the name is
    /// taken or the members (each counted once) are more than the organization's
    /// `max_users_per_group`; NotFound when one of them is not a member of the organization;
    /// tenant mismatch when a membership names another group or organization.
    async fn create_group_with_members(
        &self,
        org: OrgId,
        group: &Group,
        members: &[GroupMembership],
    ) -> Result<(), StoreError>;
    /// One group.
    async fn get_group(&self, org: OrgId, group: GroupId) -> Result<Group, StoreError>;
    /// Platform-wide: which organization a group belongs to, for routes that name only the group.
    async fn locate_group(&self, group: GroupId) -> Result<Option<OrgId>, StoreError>;
    /// Every group of the organization.
    async fn list_groups(&self, org: OrgId) -> Result<Vec<Group>, StoreError>;
    /// Replaces a group's name, description, tiers and budget.
    async fn update_group(&self, org: OrgId, group: &Group) -> Result<(), StoreError>;
    /// Deletes a group and its memberships.
    async fn delete_group(&self, org: OrgId, group: GroupId) -> Result<(), StoreError>;
    /// Adds a member of the organization to a group (or changes their group role).
    async fn put_group_member(
        &self,
        org: OrgId,
        membership: &GroupMembership,
    ) -> Result<(), StoreError>;
    /// Removes a user from a group.
    async fn remove_group_member(
        &self,
        org: OrgId,
        group: GroupId,
        user: UserId,
    ) -> Result<(), StoreError>;
    /// Members of a group.
    async fn list_group_members(
        &self,
        org: OrgId,
        group: GroupId,
    ) -> Result<Vec<GroupMembership>, StoreError>;
    /// The groups a user belongs to in the organization, with their role in each.
    async fn groups_of_member(
        &self,
        org: OrgId,
        user: UserId,
    ) -> Result<Vec<(Group, GroupRole)>, StoreError>;

    /// Creates a profile (platform-wide templates).
    async fn create_profile(&self, profile: &UserProfile) -> Result<(), StoreError>;
    /// One profile.
    async fn get_profile(&self, profile: ProfileId) -> Result<UserProfile, StoreError>;
    /// Every profile.
    async fn list_profiles(&self) -> Result<Vec<UserProfile>, StoreError>;
    /// Replaces a profile's name, description, default tiers, default guardrails and
    /// availability (its id and creation time stay).
    async fn update_profile(&self, profile: &UserProfile) -> Result<(), StoreError>;
    /// Deletes a profile that no member and no pending invitation uses (a
    /// [`StoreError::Conflict`] otherwise, so no one loses their defaults silently);
    /// invitations no longer pending that named it keep no profile.
    async fn delete_profile(&self, profile: ProfileId) -> Result<(), StoreError>;

    /// Stores a new invitation (only its token hash).
    async fn create_invitation(
        &self,
        org: OrgId,
        invitation: &Invitation,
    ) -> Result<(), StoreError>;
    /// Platform-wide: an invitation by the SHA-256 of its token (the token is the capability).
    async fn find_invitation_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<Invitation>, StoreError>;
    /// Invitations of an organization.
    async fn list_invitations(&self, org: OrgId) -> Result<Vec<Invitation>, StoreError>;
    /// Platform-wide: the invitations addressed to `email` whose status is pending, in every
    /// organization, oldest first (one indexed read, whatever the number of organizations;
    /// expiry is the caller's to check). What a sign-in joins.
    async fn pending_invitations_for(&self, email: &Email) -> Result<Vec<Invitation>, StoreError>;
    /// Writes invitations of one organization, all or nothing: each one is inserted, or,
    /// when its id exists and is still pending, its grant, token hash, expiry and delivery
    /// record are replaced (status, email and creation are kept). Conflict when an id is no
    /// longer pending, or when a second pending invitation would exist for one email
    /// (one pending invitation per address per organization); NotFound for an unknown group,
    /// profile or inviter.
    async fn save_invitations(
        &self,
        org: OrgId,
        invitations: &[Invitation],
    ) -> Result<(), StoreError>;
    /// Revokes a pending invitation.
    async fn revoke_invitation(
        &self,
        org: OrgId,
        invitation: InvitationId,
    ) -> Result<(), StoreError>;
    /// Accepts a pending invitation for `user`, atomically and at most once: checks status,
    /// expiry and email (see [`Invitation::accept`](crate::directory::Invitation)), creates the
    /// membership and group memberships and marks the invitation accepted, all or nothing.
    async fn accept_invitation(
        &self,
        token_hash: &str,
        user: &User,
        now: DateTime<Utc>,
    ) -> Result<Membership, StoreError>;
}

/// Which users [`DirectoryStore::list_users`] answers: a page of people in email order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserQuery {
    /// Only users whose email or name contains this text (ASCII case-insensitive).
    pub search: Option<String>,
    /// Only users whose email sorts after this one (the last email of the previous page).
    pub after: Option<Email>,
    /// At most this many users.
    pub limit: u32,
}

impl UserQuery {
    /// Whether `user` matches the search (not the page bounds): the memory backend's rule,
    /// which the SQL backends implement in SQL.
    #[must_use]
    pub fn matches(&self, user: &User) -> bool {
        let Some(search) = self.search.as_deref() else {
            return true;
        };
        let needle = search.to_ascii_lowercase();
        user.email.as_str().to_ascii_lowercase().contains(&needle)
            || user
                .name
                .as_deref()
                .is_some_and(|n| n.to_ascii_lowercase().contains(&needle))
    }
}

/// The tier catalog and organizations' subscriptions.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait TierStore: Send + Sync {
    /// Creates or replaces a tier (platform operation). Conflict when a model would be in two tiers.
    async fn upsert_tier(&self, tier: &ModelTier) -> Result<(), StoreError>;
    /// Every tier, in sort order.
    async fn list_tiers(&self) -> Result<Vec<ModelTier>, StoreError>;
    /// One tier.
    async fn get_tier(&self, tier: TierId) -> Result<ModelTier, StoreError>;
    /// Creates or replaces an organization's subscription to a tier.
    async fn put_subscription(
        &self,
        org: OrgId,
        subscription: &TierSubscription,
    ) -> Result<(), StoreError>;
    /// An organization's subscriptions.
    async fn list_subscriptions(&self, org: OrgId) -> Result<Vec<TierSubscription>, StoreError>;
}

/// What to reserve: `amount` against every budget in `budgets`, for one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveRequest {
    /// The request; reserving twice for it returns the first reservation.
    pub request_id: RequestId,
    /// Budgets to draw on (all of the same organization).
    pub budgets: Vec<BudgetId>,
    /// Worst-case cost.
    pub amount: Money,
    /// Now: selects each budget's current period.
    pub now: DateTime<Utc>,
    /// When an unsettled reservation is reclaimed.
    pub expires_at: DateTime<Utc>,
    /// The instance holding it, for a budget lease (`None`: a request's own reservation).
    /// When the holder's heartbeat stops, another instance settles the lease from the usage
    /// records written under it ([`BudgetLedger::abandoned_leases`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<InstanceId>,
}

/// The outcome of a reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReserveOutcome {
    /// Reserved against every budget; their states after the reservation.
    Reserved(Vec<BudgetState>),
    /// A hard budget would be passed; nothing was reserved.
    Refused(BudgetRefusal),
}

/// The outcome of a settlement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleOutcome {
    /// False when the request was already settled (nothing changed).
    pub applied: bool,
    /// Threshold alerts that fired now (each at most once per budget and period).
    pub alerts: Vec<BudgetAlert>,
}

/// Budgets and their atomic ledger. Hard limits are never overspent by reservations,
/// whatever the concurrency and the number of server instances.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait BudgetLedger: Send + Sync {
    /// Creates a budget.
    async fn create_budget(&self, org: OrgId, budget: &Budget) -> Result<(), StoreError>;
    /// One budget.
    async fn get_budget(&self, org: OrgId, budget: BudgetId) -> Result<Budget, StoreError>;
    /// Every budget of the organization.
    async fn list_budgets(&self, org: OrgId) -> Result<Vec<Budget>, StoreError>;
    /// Replaces a budget's limit, period, hardness and threshold.
    async fn update_budget(&self, org: OrgId, budget: &Budget) -> Result<(), StoreError>;
    /// Deletes a budget.
    async fn delete_budget(&self, org: OrgId, budget: BudgetId) -> Result<(), StoreError>;
    /// The budgets' states in the period current at `now`.
    async fn states(
        &self,
        org: OrgId,
        budgets: &[BudgetId],
        now: DateTime<Utc>,
    ) -> Result<Vec<BudgetState>, StoreError>;
    /// Reserves all or nothing (see [`ReserveRequest`]). Idempotent by request id.
    async fn reserve(
        &self,
        org: OrgId,
        request: &ReserveRequest,
    ) -> Result<ReserveOutcome, StoreError>;
    /// Settles a request with its actual cost, in the period of its reservation; without a
    /// reservation the spend is still recorded against `budgets` in the period current at `now`.
    /// Idempotent: settling twice changes nothing.
    async fn settle(
        &self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        actual: Money,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError>;
    /// Releases a request's reservation (the call failed). Idempotent.
    async fn release(&self, org: OrgId, request_id: RequestId) -> Result<(), StoreError>;
    /// Platform-wide: releases every reservation expired at `now`; returns how many.
    async fn reclaim_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Settles a reservation from the records written under it: `total` is what they
    /// charge in all. Active, released or expired, or unknown: exactly like
    /// [`settle`](Self::settle) with `total`. Already settled for less (another instance
    /// settled it before every record reached the store): the difference is charged after
    /// the fact, in the reservation's periods, even past a hard limit (the records exist; the
    /// excess is overage to alert on), and its settled amount becomes `total`. Already
    /// settled for `total` or more: nothing changes (`applied` false). One transaction
    /// conditional on the reservation's state, so two instances settling the same
    /// reservation at once charge it once, and settling again with the same total is a no-op.
    async fn settle_total(
        &self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        total: Money,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError>;
    /// Platform-wide: records that `instance` is alive at `now` (its heartbeat).
    async fn beat(&self, instance: InstanceId, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Platform-wide: removes `instance`'s heartbeat (a clean shutdown, after its leases were
    /// settled): any reservation it still holds counts as abandoned at once.
    async fn retire_instance(&self, instance: InstanceId) -> Result<(), StoreError>;
    /// Platform-wide: active reservations held by an instance whose last heartbeat is older
    /// than `dead_before`, or that has none (at most `limit`, oldest first): budget leases of
    /// a dead process, for another instance to settle from their records with
    /// [`settle_total`](Self::settle_total).
    async fn abandoned_leases(
        &self,
        dead_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<HeldReservation>, StoreError>;
}

/// An active reservation held by an instance (a budget lease), as
/// [`BudgetLedger::abandoned_leases`] answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldReservation {
    /// Organization.
    pub org: OrgId,
    /// The reservation (the lease's id; records admitted under it carry it as `lease_id`).
    pub request_id: RequestId,
    /// The budgets it draws on, in id order.
    pub budgets: Vec<BudgetId>,
    /// Its holder.
    pub holder: InstanceId,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// Outcome of appending usage records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// Records written.
    pub inserted: u64,
    /// Records skipped because their request id was already recorded.
    pub duplicates: u64,
}

/// Usage records: append-only, idempotent by request id.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Appends a batch; records whose request id exists are skipped. Every record must belong
    /// to `org` (tenant mismatch otherwise, and nothing is written).
    async fn append(
        &self,
        org: OrgId,
        records: &[UsageRecord],
    ) -> Result<AppendOutcome, StoreError>;
    /// One record by request id.
    async fn get(&self, org: OrgId, request_id: RequestId) -> Result<UsageRecord, StoreError>;
    /// Records matching the query, oldest first, at most `limit`.
    async fn query(
        &self,
        org: OrgId,
        query: &UsageQuery,
        limit: u32,
    ) -> Result<Vec<UsageRecord>, StoreError>;
    /// Totals grouped by the given dimensions (in that order).
    async fn aggregate(
        &self,
        org: OrgId,
        query: &UsageQuery,
        group_by: &[Dimension],
    ) -> Result<Vec<AggregateRow>, StoreError>;
    /// Platform-wide: each organization's totals of the records created in `[from, to)`, in
    /// organization id order, those with no record there left out: the platform overview's
    /// numbers in one read rather than one per organization.
    async fn totals_by_org(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(OrgId, UsageTotals)>, StoreError>;
    /// What the records admitted under budget lease `lease` (their `lease_id`) charge in
    /// all: the sum of [`UsageRecord::charged`], and how many they are.
    async fn charged_under_lease(
        &self,
        org: OrgId,
        lease: RequestId,
    ) -> Result<(Money, u64), StoreError>;
    /// Every matching record, oldest first, streamed (never materialized whole).
    fn stream(
        &self,
        org: OrgId,
        query: UsageQuery,
    ) -> BoxStream<'static, Result<UsageRecord, StoreError>>;
    /// [`aggregate`](Self::aggregate) of the same records by each dimension list, answers in
    /// the lists' order: what a dashboard's several breakdowns ask. A store may read the
    /// records once for all of them (PostgreSQL: one `GROUPING SETS` query); the default asks
    /// `aggregate` once per list.
    async fn aggregate_each(
        &self,
        org: OrgId,
        query: &UsageQuery,
        sets: &[Vec<Dimension>],
    ) -> Result<Vec<Vec<AggregateRow>>, StoreError> {
        let mut out = Vec::with_capacity(sets.len());
        for set in sets {
            out.push(self.aggregate(org, query, set).await?);
        }
        Ok(out)
    }
}

/// Invoices of organizations (see [`crate::billing`]): drafts replaced within their month,
/// issued invoices frozen but for their status.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait InvoiceStore: Send + Sync {
    /// Saves a new draft of `org`, replacing the month's earlier drafts, in one transaction
    /// under [`crate::billing::check_new_draft`] (a conflict when an issued or paid invoice
    /// stands for the month and the draft corrects none, or `corrects` names no such invoice).
    /// Invalid unless the invoice is a draft of `org`.
    async fn put_draft_invoice(
        &self,
        org: OrgId,
        invoice: &MonthlyInvoice,
    ) -> Result<(), StoreError>;
    /// One invoice.
    async fn get_invoice(&self, org: OrgId, id: InvoiceId) -> Result<MonthlyInvoice, StoreError>;
    /// The organization's invoices, newest month first, then by id.
    async fn list_invoices(&self, org: OrgId) -> Result<Vec<MonthlyInvoice>, StoreError>;
    /// Moves an invoice to `to` at `at` (conflict when its state cannot become `to`); only
    /// the status and its timestamp change. Returns the invoice as saved.
    async fn set_invoice_status(
        &self,
        org: OrgId,
        id: InvoiceId,
        to: InvoiceState,
        at: DateTime<Utc>,
    ) -> Result<MonthlyInvoice, StoreError>;
}

/// The audit trail (see [`crate::audit`]): one hash chain per organization and one platform
/// chain, append-only. Appending reads the chain's head and writes the entry and the new head
/// in one transaction, so concurrent appends to one chain serialize and never fork it.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends `draft` to `org`'s chain; returns the entry as stored.
    async fn append_audit(&self, org: OrgId, draft: &AuditDraft) -> Result<AuditEntry, StoreError>;
    /// Platform-wide: appends `draft` to the platform chain.
    async fn append_platform_audit(&self, draft: &AuditDraft) -> Result<AuditEntry, StoreError>;
    /// `org`'s entries matching `query`, newest first, at most `query.limit`.
    async fn list_audit(
        &self,
        org: OrgId,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEntry>, StoreError>;
    /// Platform-wide: the platform chain's entries matching `query`, newest first.
    async fn list_platform_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;
    /// Platform-wide (operators): the entries of every chain matching `query`, newest first
    /// (by time, then organization with the platform chain first, then `seq`).
    async fn list_all_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;
    /// `org`'s whole chain in `seq` order with its head, as stored (for verification and
    /// export).
    async fn audit_chain(&self, org: OrgId) -> Result<StoredChain, StoreError>;
    /// Platform-wide: the platform chain, as stored.
    async fn platform_audit_chain(&self) -> Result<StoredChain, StoreError>;
    /// Up to `limit` entries of `org`'s chain after `after_seq`, in `seq` order: the chain
    /// read page by page, oldest first (a streamed export holds one page at a time).
    async fn audit_page(
        &self,
        org: OrgId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError>;
    /// Platform-wide: the platform chain page by page, as [`AuditStore::audit_page`].
    async fn platform_audit_page(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError>;
}

/// The level a guardrail rule is attached at, with the scoped entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "level", rename_all = "snake_case")]
pub enum RuleScope {
    /// Every request on the platform; cannot be overridden.
    Global,
    /// Every request of an organization.
    Org {
        /// The organization.
        org_id: OrgId,
    },
    /// Requests for a tier's models: platform-wide (`org_id` none) or inside one organization.
    Tier {
        /// The organization, or none for the platform.
        org_id: Option<OrgId>,
        /// The tier.
        tier_id: TierId,
    },
    /// Requests of a group's members.
    Group {
        /// The group's organization.
        org_id: OrgId,
        /// The group.
        group_id: GroupId,
    },
    /// Requests of one member of an organization.
    User {
        /// The organization.
        org_id: OrgId,
        /// The user.
        user_id: UserId,
    },
}

impl RuleScope {
    /// The organization owning the rule; none for platform rules.
    #[must_use]
    pub fn org_id(&self) -> Option<OrgId> {
        match *self {
            RuleScope::Global => None,
            RuleScope::Org { org_id }
            | RuleScope::Group { org_id, .. }
            | RuleScope::User { org_id, .. } => Some(org_id),
            RuleScope::Tier { org_id, .. } => org_id,
        }
    }
}

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Record only.
    Log,
    /// Let through with a warning.
    Warn,
    /// Let through, changed (clamped, redacted, appended).
    Modify,
    /// Refuse.
    Block,
}

/// A guardrail rule as stored: type and config are raw here and validated by
/// stratai-guardrails when a policy is compiled (and when the API accepts a rule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleRecord {
    /// Id.
    pub id: RuleId,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// One of the eight rule types (`model_allowlist`, ...).
    pub rule_type: String,
    /// The type's config.
    pub config: serde_json::Value,
    /// Where the rule is attached.
    pub scope: RuleScope,
    /// What it does on a match.
    pub action: RuleAction,
    /// Orders evaluation and output, never permission. Higher first.
    pub priority: i32,
    /// Inactive rules have no effect.
    pub active: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Guardrail rules.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait GuardrailStore: Send + Sync {
    /// Platform: creates or replaces a platform rule (global, or tier without organization).
    async fn put_platform_rule(&self, rule: &RuleRecord) -> Result<(), StoreError>;
    /// Creates or replaces a rule of an organization (its scope must name `org`).
    async fn put_rule(&self, org: OrgId, rule: &RuleRecord) -> Result<(), StoreError>;
    /// One rule of an organization.
    async fn get_rule(&self, org: OrgId, rule: RuleId) -> Result<RuleRecord, StoreError>;
    /// Deletes a rule of an organization.
    async fn delete_rule(&self, org: OrgId, rule: RuleId) -> Result<(), StoreError>;
    /// Platform: deletes a platform rule.
    async fn delete_platform_rule(&self, rule: RuleId) -> Result<(), StoreError>;
    /// Platform rules only.
    async fn list_platform_rules(&self) -> Result<Vec<RuleRecord>, StoreError>;
    /// Rules owned by the organization (not the platform's).
    async fn list_org_rules(&self, org: OrgId) -> Result<Vec<RuleRecord>, StoreError>;
}

/// A member's LiteLLM virtual key as a [`KeyVaultStore`] keeps it: LiteLLM's id of the key
/// (its token hash, not a secret) and the secret sealed by the vault that wrote it. The store
/// never sees the secret in clear and cannot open the blob; `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey {
    /// LiteLLM's id of the key (the token hash), also written to `Membership::litellm_key_id`.
    pub key_id: String,
    /// The sealed secret, opaque to the store.
    pub sealed: Vec<u8>,
    /// When it was sealed (stored to the microsecond).
    pub sealed_at: DateTime<Utc>,
}

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKey")
            .field("key_id", &self.key_id)
            .field("sealed_len", &self.sealed.len())
            .field("sealed_at", &self.sealed_at)
            .finish()
    }
}

/// Sealed LiteLLM virtual-key secrets, one per membership (LiteLLM shows a key's secret only
/// once, when it is generated). stratai-litellm's encrypting vault seals and opens them; a
/// store keeps the bytes, shares them between processes and across restarts, and drops a
/// member's key with the membership. Writing one is not a directory change: no outbox event.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait KeyVaultStore: Send + Sync {
    /// Stores the member's sealed key, replacing any previous one. NotFound when the user is
    /// not a member of the organization.
    async fn put_sealed_key(
        &self,
        org: OrgId,
        user: UserId,
        key: &SealedKey,
    ) -> Result<(), StoreError>;
    /// The member's sealed key, if any.
    async fn find_sealed_key(
        &self,
        org: OrgId,
        user: UserId,
    ) -> Result<Option<SealedKey>, StoreError>;
    /// Forgets the member's sealed key; true when there was one.
    async fn delete_sealed_key(&self, org: OrgId, user: UserId) -> Result<bool, StoreError>;
}

/// The entity an outbox event is about. The sync engine reads the entity's current state,
/// so an event carries no payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum OutboxEntity {
    /// An organization (settings, tiers, budget).
    Org(OrgId),
    /// A group.
    Group(GroupId),
    /// A member of the event's organization.
    Member(UserId),
}

/// One change to push to LiteLLM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Position in the outbox (strictly increasing).
    pub seq: i64,
    /// Organization of the entity.
    pub org_id: OrgId,
    /// The changed entity.
    pub entity: OutboxEntity,
    /// Whether the entity was deleted.
    pub deleted: bool,
    /// The entity's version after the change (strictly increasing per entity).
    pub version: i64,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Last failure.
    pub last_error: Option<String>,
    /// Not to be retried before.
    pub available_at: DateTime<Utc>,
    /// When written.
    pub created_at: DateTime<Utc>,
}

/// The transactional outbox the directory writes and the LiteLLM sync consumes.
/// Platform-wide by nature: only the sync worker calls it.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Pending events available at `now`, in `seq` order, at most `limit`.
    async fn pending(&self, now: DateTime<Utc>, limit: u32)
    -> Result<Vec<OutboxEvent>, StoreError>;
    /// Marks an event delivered.
    async fn complete(&self, seq: i64) -> Result<(), StoreError>;
    /// Records a failed attempt and when to retry.
    async fn fail(&self, seq: i64, error: &str, retry_at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Gives up on an event, keeping the reason visible.
    async fn dead_letter(&self, seq: i64, reason: &str) -> Result<(), StoreError>;
    /// Dead-lettered events, newest first.
    async fn dead_letters(&self, limit: u32) -> Result<Vec<OutboxEvent>, StoreError>;
}

/// One rate-limit bucket: a rule's, shared by everyone in the rule's scope, or one user's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateLimitKey {
    /// The rate limit rule.
    pub rule_id: RuleId,
    /// The organization and user, for per-user buckets.
    pub user: Option<(OrgId, UserId)>,
}

/// What a rate limiter answers for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateVerdict {
    /// Within the limit.
    Allowed,
    /// Over the limit; allowed again after `retry_after`.
    Limited {
        /// How long to wait.
        retry_after: std::time::Duration,
    },
}

/// Rate-limit buckets shared by every instance of the service (e.g. in Redis), so that a
/// limit of `requests` per `period` holds across instances instead of per process. A bucket
/// allows bursts up to the full quota and refills evenly over the period (GCRA), the same
/// law as the in-process limiter of stratai-guardrails.
///
/// Platform-wide: a bucket of a global or tier rule is shared by every organization, so the
/// tenant is part of the [`RateLimitKey`] (per-user buckets) rather than an `OrgId` argument.
/// The buckets hold counters only, no tenant data; only the gatekeeper calls this.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Platform-wide: takes one request from the bucket when the limit allows it.
    async fn acquire(
        &self,
        key: &RateLimitKey,
        requests: u32,
        period: std::time::Duration,
    ) -> Result<RateVerdict, StoreError>;
    /// Platform-wide: what [`acquire`](Self::acquire) would answer, taking nothing.
    async fn peek(
        &self,
        key: &RateLimitKey,
        requests: u32,
        period: std::time::Duration,
    ) -> Result<RateVerdict, StoreError>;
}

/// An OpenAI-compatible LLM gateway (LiteLLM in production, a demo provider offline).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait LlmGateway: Send + Sync {
    /// A whole completion.
    async fn chat(
        &self,
        ctx: &CallContext,
        request: &ChatRequest,
    ) -> Result<ChatResponse, GatewayError>;
    /// A streamed completion.
    async fn chat_stream(
        &self,
        ctx: &CallContext,
        request: &ChatRequest,
    ) -> Result<BoxStream<'static, Result<ChatChunk, GatewayError>>, GatewayError>;
}
