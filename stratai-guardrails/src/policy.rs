//! Compiled policies: every valid rule, indexed by scope, with matchers built once.
//!
//! A decision looks up the handful of scope nodes of its principal (global, org, tier,
//! groups, user) and touches only their rules, so its cost does not grow with the number of
//! rules of other organizations. Each node keeps aggregates (the intersection of its
//! allowlists, the union of its denylists, its lowest token bounds) so the common case of
//! "nothing matched" answers without visiting the node's rules one by one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use regex::{RegexSet, RegexSetBuilder};
use serde::Serialize;
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope, rule_budget};
use stratai_core::ports::{RuleAction, RuleRecord, RuleScope};
use stratai_core::{GroupId, ModelId, Money, OrgId, RuleId, TierId, UserId};

use crate::decision::RuleOrder;
use crate::rule::{
    BudgetLimitPeriod, KnownScopes, Level, RateLimit, Rule, RuleError, RuleKind, TimeRestriction,
};

/// Who a request is for: the organization, the member, and the member's groups there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The organization the request is made in.
    pub org_id: OrgId,
    /// The member.
    pub user_id: UserId,
    /// The member's groups in that organization (order and duplicates do not matter).
    pub groups: Vec<GroupId>,
}

/// A policy could not be compiled; the previous one stays in force.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Some rules are invalid (every one is listed).
    #[error("{}", summarize(.0))]
    InvalidRules(Vec<RuleError>),
    /// The combined matcher of a scope does not fit the size limits.
    #[error("content matchers of {scope} do not compile: {reason}")]
    Matcher {
        /// The scope, e.g. ``org `…` ``.
        scope: String,
        /// Why.
        reason: String,
    },
}

fn summarize(errors: &[RuleError]) -> String {
    let mut text = format!("{} invalid rule(s)", errors.len());
    for e in errors.iter().take(5) {
        text.push_str("; ");
        text.push_str(&e.to_string());
    }
    if errors.len() > 5 {
        text.push_str("; ...");
    }
    text
}

/// Whose spend a budget limit caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BudgetSubject {
    /// The whole organization (org and global rules: a global cap applies to each organization).
    Org {
        /// The organization.
        org_id: OrgId,
    },
    /// The organization's spend on one tier.
    Tier {
        /// The organization.
        org_id: OrgId,
        /// The tier.
        tier_id: TierId,
    },
    /// One group.
    Group {
        /// The organization.
        org_id: OrgId,
        /// The group.
        group_id: GroupId,
    },
    /// One member.
    User {
        /// The organization.
        org_id: OrgId,
        /// The user.
        user_id: UserId,
    },
}

impl fmt::Display for BudgetSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetSubject::Org { .. } => f.write_str("organization"),
            BudgetSubject::Tier { .. } => f.write_str("tier"),
            BudgetSubject::Group { .. } => f.write_str("group"),
            BudgetSubject::User { .. } => f.write_str("user"),
        }
    }
}

/// The subject a budget limit rule at `scope` caps for a request of `principal`.
pub(crate) fn budget_subject(
    scope: &RuleScope,
    principal: &Principal,
    tier: Option<TierId>,
) -> BudgetSubject {
    let org_id = principal.org_id;
    match *scope {
        RuleScope::Global | RuleScope::Org { .. } => BudgetSubject::Org { org_id },
        RuleScope::Tier { tier_id, .. } => BudgetSubject::Tier {
            org_id,
            tier_id: tier.unwrap_or(tier_id),
        },
        RuleScope::Group { group_id, .. } => BudgetSubject::Group { org_id, group_id },
        RuleScope::User { user_id, .. } => BudgetSubject::User { org_id, user_id },
    }
}

/// Spend so far per budget subject and period (the current period at decision time).
/// Missing entries count as zero.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpendSnapshot {
    spent: HashMap<(BudgetSubject, BudgetLimitPeriod), Money>,
    /// Per rule: what its ledger budget counts (spent and reserved), which wins over the
    /// subject's spend.
    rules: HashMap<RuleId, Money>,
}

impl SpendSnapshot {
    /// No spend.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the spend of a subject in its current period.
    pub fn set(&mut self, subject: BudgetSubject, period: BudgetLimitPeriod, spent: Money) {
        self.spent.insert((subject, period), spent);
    }

    /// The spend of a subject in its current period.
    #[must_use]
    pub fn get(&self, subject: BudgetSubject, period: BudgetLimitPeriod) -> Money {
        self.spent
            .get(&(subject, period))
            .copied()
            .unwrap_or(Money::ZERO)
    }

    /// Records what a budget limit rule's ledger budget counts in its current period: its
    /// settled spend plus its outstanding reservations ([`Policy::rule_budgets`]).
    pub fn set_rule(&mut self, rule: RuleId, committed: Money) {
        self.rules.insert(rule, committed);
    }

    /// What a budget limit rule counts: its ledger budget's, when given, else its subject's.
    #[must_use]
    pub fn for_rule(
        &self,
        rule: RuleId,
        subject: BudgetSubject,
        period: BudgetLimitPeriod,
    ) -> Money {
        self.rules
            .get(&rule)
            .copied()
            .unwrap_or_else(|| self.get(subject, period))
    }
}

/// A `budget_limit` rule as the ledger budget it is enforced through: the rule counts what
/// the budget counts (spend and reservations; a group rule every member's requests, an
/// organization or global rule the organization's), and the budget is reserved at
/// admission like every budget, so concurrent requests cannot pass it together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleBudget {
    /// The rule.
    pub rule_id: RuleId,
    /// Its name.
    pub name: String,
    /// The budget (core's [`stratai_core::budget::rule_budget`]).
    pub budget: Budget,
}

impl Rule {
    /// The ledger budget this rule is enforced through in `org`: `None` unless it is an
    /// active `budget_limit` rule that can apply there (a platform rule applies in every
    /// organization). Global and organization rules limit the organization, tier rules the
    /// tier, group rules the group, user rules the member; a blocking rule's budget is hard.
    #[must_use]
    pub fn budget_in(&self, org: OrgId) -> Option<RuleBudget> {
        let RuleKind::BudgetLimit(limit) = &self.kind else {
            return None;
        };
        if !self.active || self.scope.org_id().is_some_and(|o| o != org) {
            return None;
        }
        let scope = match self.scope {
            RuleScope::Global | RuleScope::Org { .. } => BudgetScope::Org,
            RuleScope::Tier { tier_id, .. } => BudgetScope::Tier(tier_id),
            RuleScope::Group { group_id, .. } => BudgetScope::Group(group_id),
            RuleScope::User { user_id, .. } => BudgetScope::User(user_id),
        };
        let period = match limit.period {
            BudgetLimitPeriod::Day => BudgetPeriod::Daily,
            BudgetLimitPeriod::Week => BudgetPeriod::Weekly,
            BudgetLimitPeriod::Month => BudgetPeriod::Monthly,
        };
        Some(RuleBudget {
            rule_id: self.id,
            name: self.name.clone(),
            budget: rule_budget(
                org,
                self.id,
                scope,
                limit.amount,
                period,
                self.action == RuleAction::Block,
                self.created_at,
            ),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum NodeKey {
    Global,
    Org(OrgId),
    PlatformTier(TierId),
    OrgTier(OrgId, TierId),
    Group(OrgId, GroupId),
    User(OrgId, UserId),
}

impl NodeKey {
    fn of(scope: &RuleScope) -> NodeKey {
        match *scope {
            RuleScope::Global => NodeKey::Global,
            RuleScope::Org { org_id } => NodeKey::Org(org_id),
            RuleScope::Tier {
                org_id: None,
                tier_id,
            } => NodeKey::PlatformTier(tier_id),
            RuleScope::Tier {
                org_id: Some(org_id),
                tier_id,
            } => NodeKey::OrgTier(org_id, tier_id),
            RuleScope::Group { org_id, group_id } => NodeKey::Group(org_id, group_id),
            RuleScope::User { org_id, user_id } => NodeKey::User(org_id, user_id),
        }
    }

    fn describe(&self) -> String {
        match self {
            NodeKey::Global => "global rules".to_owned(),
            NodeKey::Org(o) => format!("org `{o}`"),
            NodeKey::PlatformTier(t) => format!("tier `{t}`"),
            NodeKey::OrgTier(o, t) => format!("tier `{t}` of org `{o}`"),
            NodeKey::Group(o, g) => format!("group `{g}` of org `{o}`"),
            NodeKey::User(o, u) => format!("user `{u}` of org `{o}`"),
        }
    }
}

/// Where a content match comes from inside a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Item {
    Topic(u16),
    Pattern(u16),
}

/// The content matchers of a policy: topics in one Aho-Corasick automaton, patterns in one
/// `RegexSet`, each mapping back to its rule.
pub(crate) struct ContentMatcher {
    pub(crate) topics: Option<AhoCorasick>,
    /// Per automaton pattern: the (rule, topic index) pairs with that topic.
    pub(crate) topic_owners: Vec<Vec<(u32, u16)>>,
    pub(crate) set: Option<RegexSet>,
    /// Per set pattern: (rule, pattern index).
    pub(crate) pattern_owners: Vec<(u32, u16)>,
}

/// The active rules of one scope, by type, in evaluation order.
#[derive(Default)]
pub(crate) struct Node {
    pub(crate) allow: Vec<u32>,
    pub(crate) deny: Vec<u32>,
    pub(crate) token: Vec<u32>,
    pub(crate) rate: Vec<u32>,
    pub(crate) content: Vec<u32>,
    pub(crate) modifiers: Vec<u32>,
    pub(crate) budget: Vec<u32>,
    pub(crate) time: Vec<u32>,
    /// Models every allowlist of the node allows (`None`: no allowlist).
    pub(crate) allowed_by_all: Option<HashSet<String, foldhash::fast::RandomState>>,
    /// Models any denylist of the node denies.
    pub(crate) denied_by_any: HashSet<String, foldhash::fast::RandomState>,
    /// Lowest input bound of the node's token limits.
    pub(crate) min_input: Option<u32>,
    /// Lowest output bound of the node's token limits.
    pub(crate) min_output: Option<u32>,
    /// Whether an output modifier of the node has a format note (a pre-request change).
    pub(crate) has_format_notes: bool,
    /// The matchers of this node's content rules only: the pre-request prompt filter scans
    /// with the matchers of the principal's nodes, so its cost follows the rules that apply
    /// rather than every content rule of the policy.
    pub(crate) matcher: Option<ContentMatcher>,
}

/// A compiled, immutable policy. Build one with [`Policy::compile`], share it behind a
/// [`PolicyHolder`].
pub struct Policy {
    version: u64,
    pub(crate) rules: Vec<Rule>,
    pub(crate) nodes: Vec<Node>,
    index: HashMap<NodeKey, u32, foldhash::fast::RandomState>,
    /// One matcher over every active content rule of the policy: a decision scans its text
    /// once, whatever the number of rules, and keeps the matches of applicable rules.
    pub(crate) matcher: Option<ContentMatcher>,
    /// The node of each active rule (`u32::MAX` for inactive ones).
    rule_node: Vec<u32>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("version", &self.version)
            .field("rules", &self.rules.len())
            .field("scopes", &self.nodes.len())
            .finish()
    }
}

/// Up to this many scope nodes are held inline per decision (global, org, two tier nodes,
/// user, and a few groups); more groups spill to the heap.
pub(crate) type NodeList = smallvec::SmallVec<[u32; 8]>;

impl Policy {
    /// An empty policy (everything allowed).
    #[must_use]
    pub fn empty() -> Self {
        Self {
            version: 0,
            rules: Vec::new(),
            nodes: Vec::new(),
            index: HashMap::default(),
            matcher: None,
            rule_node: Vec::new(),
        }
    }

    /// Validates every record (config, action, scope existence) and compiles the policy.
    /// Fails listing every invalid rule: a policy never silently drops a rule.
    ///
    /// Records with the same id must be identical (they are then taken once).
    pub fn compile(
        records: &[RuleRecord],
        known: &KnownScopes,
        version: u64,
    ) -> Result<Policy, PolicyError> {
        let mut errors = Vec::new();
        let mut seen: HashMap<RuleId, &RuleRecord> = HashMap::with_capacity(records.len());
        let mut rules = Vec::with_capacity(records.len());
        for record in records {
            if let Some(previous) = seen.get(&record.id) {
                if *previous != record {
                    errors.push(RuleError {
                        rule_id: record.id,
                        field: "id".to_owned(),
                        reason: "two different rules share this id".to_owned(),
                    });
                }
                continue;
            }
            seen.insert(record.id, record);
            match Rule::from_record(record).and_then(|rule| {
                known.check(rule.id, &rule.scope)?;
                Ok(rule)
            }) {
                Ok(rule) => rules.push(rule),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(PolicyError::InvalidRules(errors));
        }
        Self::from_rules(rules, version)
    }

    /// Compiles already validated rules (scopes are not checked again).
    pub fn from_rules(mut rules: Vec<Rule>, version: u64) -> Result<Policy, PolicyError> {
        rules.sort_by_key(RuleOrder::of);
        rules.dedup_by_key(|r| r.id);
        let mut index: HashMap<NodeKey, u32, foldhash::fast::RandomState> = HashMap::default();
        let mut nodes: Vec<Node> = Vec::new();
        let mut keys: Vec<NodeKey> = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            if !rule.active {
                continue;
            }
            let key = NodeKey::of(&rule.scope);
            let slot = *index.entry(key).or_insert_with(|| {
                nodes.push(Node::default());
                keys.push(key);
                u32::try_from(nodes.len() - 1).unwrap_or(u32::MAX)
            });
            let Some(node) = nodes.get_mut(slot as usize) else {
                continue;
            };
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            match &rule.kind {
                RuleKind::ModelAllowlist(models) => {
                    node.allow.push(i);
                    let set: HashSet<String, foldhash::fast::RandomState> =
                        models.iter().map(|m| m.as_str().to_owned()).collect();
                    node.allowed_by_all = Some(match node.allowed_by_all.take() {
                        None => set,
                        Some(prev) => prev.intersection(&set).cloned().collect(),
                    });
                }
                RuleKind::ModelDenylist(models) => {
                    node.deny.push(i);
                    node.denied_by_any
                        .extend(models.iter().map(|m| m.as_str().to_owned()));
                }
                RuleKind::TokenLimit(limit) => {
                    node.token.push(i);
                    node.min_input = min_opt(node.min_input, limit.max_input);
                    node.min_output = min_opt(node.min_output, limit.max_output);
                }
                RuleKind::RateLimit(_) => node.rate.push(i),
                RuleKind::ContentFilter(_) => node.content.push(i),
                RuleKind::OutputModifier(m) => {
                    node.modifiers.push(i);
                    node.has_format_notes |= m.format_note.is_some();
                }
                RuleKind::BudgetLimit(_) => node.budget.push(i),
                RuleKind::TimeRestriction(_) => node.time.push(i),
            }
        }
        let mut rule_node = vec![u32::MAX; rules.len()];
        let mut content = Vec::new();
        for (slot, node) in nodes.iter().enumerate() {
            let slot = u32::try_from(slot).unwrap_or(u32::MAX);
            for list in [
                &node.allow,
                &node.deny,
                &node.token,
                &node.rate,
                &node.content,
                &node.modifiers,
                &node.budget,
                &node.time,
            ] {
                for &i in list {
                    if let Some(n) = rule_node.get_mut(i as usize) {
                        *n = slot;
                    }
                }
            }
            content.extend_from_slice(&node.content);
        }
        content.sort_unstable();
        let matcher = build_matcher(&rules, &content).map_err(|reason| PolicyError::Matcher {
            scope: if keys.len() == 1 {
                keys.first().map_or_else(String::new, NodeKey::describe)
            } else {
                "the policy".to_owned()
            },
            reason,
        })?;
        for (slot, node) in nodes.iter_mut().enumerate() {
            if node.content.is_empty() {
                continue;
            }
            node.matcher =
                build_matcher(&rules, &node.content).map_err(|reason| PolicyError::Matcher {
                    scope: keys.get(slot).map_or_else(String::new, NodeKey::describe),
                    reason,
                })?;
        }
        Ok(Policy {
            version,
            rules,
            nodes,
            index,
            matcher,
            rule_node,
        })
    }

    /// The version given at compile time.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every valid rule (active or not), in the documented order: level, priority (higher
    /// first), creation, id.
    #[must_use]
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub(crate) fn rule(&self, index: u32) -> Option<&Rule> {
        self.rules.get(index as usize)
    }

    /// Whether rule `index` belongs to one of `nodes` (the applicable ones).
    pub(crate) fn rule_applies(&self, index: u32, nodes: &[u32]) -> bool {
        self.rule_node
            .get(index as usize)
            .is_some_and(|n| nodes.contains(n))
    }

    pub(crate) fn node(&self, index: u32) -> Option<&Node> {
        self.nodes.get(index as usize)
    }

    /// The scope nodes that apply to a request of `principal` for a model of `tier`, from the
    /// broadest to the most specific.
    pub(crate) fn applicable(&self, principal: &Principal, tier: Option<TierId>) -> NodeList {
        let mut list = NodeList::new();
        if self.index.is_empty() {
            return list;
        }
        let org = principal.org_id;
        let mut push = |key: NodeKey| {
            if let Some(&i) = self.index.get(&key) {
                list.push(i);
            }
        };
        push(NodeKey::Global);
        push(NodeKey::Org(org));
        if let Some(tier) = tier {
            push(NodeKey::PlatformTier(tier));
            push(NodeKey::OrgTier(org, tier));
        }
        for (i, group) in principal.groups.iter().enumerate() {
            if !principal.groups[..i].contains(group) {
                push(NodeKey::Group(org, *group));
            }
        }
        push(NodeKey::User(org, principal.user_id));
        list
    }

    /// The ledger budgets of the active `budget_limit` rules that apply to a request of
    /// `principal` for a model of `tier` ([`Rule::budget_in`]), by scope then id.
    #[must_use]
    pub fn rule_budgets(&self, principal: &Principal, tier: Option<TierId>) -> Vec<RuleBudget> {
        let mut out: Vec<RuleBudget> = Vec::new();
        for n in self.applicable(principal, tier) {
            let Some(node) = self.node(n) else { continue };
            out.extend(
                node.budget
                    .iter()
                    .filter_map(|&i| self.rule(i))
                    .filter_map(|r| r.budget_in(principal.org_id)),
            );
        }
        out.sort_by_key(|b| (b.budget.scope, b.budget.id));
        out
    }

    /// The ledger budgets of every active `budget_limit` rule that can apply in `org` (its
    /// own and the platform's), by scope then id: what `/api/budgets` lists for the rules.
    #[must_use]
    pub fn rule_budgets_of_org(&self, org: OrgId) -> Vec<RuleBudget> {
        let mut out: Vec<RuleBudget> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(i, _)| self.rule_node.get(*i).is_some_and(|n| *n != u32::MAX))
            .filter_map(|(_, r)| r.budget_in(org))
            .collect();
        out.sort_by_key(|b| (b.budget.scope, b.budget.id));
        out
    }

    /// The active rules that apply to a request, in the documented order.
    #[must_use]
    pub fn applicable_rules(&self, principal: &Principal, tier: Option<TierId>) -> Vec<&Rule> {
        let mut out: Vec<(RuleOrder, &Rule)> = Vec::new();
        for n in self.applicable(principal, tier) {
            let Some(node) = self.node(n) else { continue };
            for list in [
                &node.allow,
                &node.deny,
                &node.token,
                &node.rate,
                &node.content,
                &node.modifiers,
                &node.budget,
                &node.time,
            ] {
                out.extend(
                    list.iter()
                        .filter_map(|&i| self.rule(i))
                        .map(|r| (RuleOrder::of(r), r)),
                );
            }
        }
        out.sort_by_key(|r| r.0);
        out.into_iter().map(|(_, r)| r).collect()
    }

    /// The effective policy of a principal for a model of `tier`: what every applicable
    /// active rule adds up to (most restrictive wins).
    #[must_use]
    pub fn effective(&self, principal: &Principal, tier: Option<TierId>) -> EffectivePolicy {
        let mut eff = EffectivePolicy::default();
        let mut seen_prepend = HashSet::new();
        let mut seen_append = HashSet::new();
        let mut seen_note = HashSet::new();
        let mut budgets: BTreeMap<(BudgetSubject, BudgetLimitPeriod), EffectiveBudgetLimit> =
            BTreeMap::new();
        for rule in self.applicable_rules(principal, tier) {
            eff.rules.push(rule.id);
            match &rule.kind {
                RuleKind::ModelAllowlist(models) => {
                    eff.allowed_models = Some(match eff.allowed_models.take() {
                        None => models.clone(),
                        Some(prev) => prev.intersection(models).cloned().collect(),
                    });
                }
                RuleKind::ModelDenylist(models) => eff.denied_models.extend(models.iter().cloned()),
                RuleKind::TokenLimit(limit) => {
                    eff.max_input_tokens = min_opt(eff.max_input_tokens, limit.max_input);
                    eff.max_output_tokens = min_opt(eff.max_output_tokens, limit.max_output);
                }
                RuleKind::RateLimit(limit) => eff.rate_limits.push((rule.id, *limit)),
                RuleKind::ContentFilter(filter) => {
                    eff.blocked_topics
                        .extend(filter.topics.iter().map(|t| t.to_ascii_lowercase()));
                    eff.blocked_patterns
                        .extend(filter.patterns.iter().map(|p| p.source.clone()));
                }
                RuleKind::OutputModifier(m) => {
                    let mut step = ModifierStep {
                        rule_id: rule.id,
                        level: rule.level,
                        action: rule.action,
                        prepend: None,
                        append: None,
                        format_note: None,
                    };
                    if let Some(t) = &m.prepend
                        && seen_prepend.insert(t.clone())
                    {
                        step.prepend = Some(t.clone());
                    }
                    if let Some(t) = &m.append
                        && seen_append.insert(t.clone())
                    {
                        step.append = Some(t.clone());
                    }
                    if let Some(t) = &m.format_note
                        && seen_note.insert(t.clone())
                    {
                        step.format_note = Some(t.clone());
                    }
                    if step.prepend.is_some() || step.append.is_some() || step.format_note.is_some()
                    {
                        eff.output_modifiers.push(step);
                    }
                }
                RuleKind::BudgetLimit(limit) => {
                    let subject = budget_subject(&rule.scope, principal, tier);
                    let entry =
                        budgets
                            .entry((subject, limit.period))
                            .or_insert(EffectiveBudgetLimit {
                                subject,
                                period: limit.period,
                                amount: limit.amount,
                                rule_id: rule.id,
                            });
                    if limit.amount < entry.amount {
                        entry.amount = limit.amount;
                        entry.rule_id = rule.id;
                    }
                }
                RuleKind::TimeRestriction(t) => eff.time_restrictions.push((rule.id, t.clone())),
            }
        }
        eff.budget_limits = budgets.into_values().collect();
        eff
    }
}

fn min_opt(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Most topics compiled into a DFA (more use Aho-Corasick's smaller NFA).
const MAX_DFA_TOPICS: usize = 20_000;

/// Size limit of the policy's combined `RegexSet`.
const SET_SIZE_LIMIT: usize = 64 * 1024 * 1024;

fn build_matcher(rules: &[Rule], content: &[u32]) -> Result<Option<ContentMatcher>, String> {
    if content.is_empty() {
        return Ok(None);
    }
    let mut topic_index: HashMap<String, usize> = HashMap::new();
    let mut topics: Vec<String> = Vec::new();
    let mut topic_owners: Vec<Vec<(u32, u16)>> = Vec::new();
    let mut sources: Vec<&str> = Vec::new();
    let mut pattern_owners = Vec::new();
    for &i in content {
        let Some(Rule {
            kind: RuleKind::ContentFilter(filter),
            ..
        }) = rules.get(i as usize)
        else {
            continue;
        };
        for (t, topic) in filter.topics.iter().enumerate() {
            let folded = topic.to_ascii_lowercase();
            let slot = *topic_index.entry(folded.clone()).or_insert_with(|| {
                topics.push(folded);
                topic_owners.push(Vec::new());
                topics.len() - 1
            });
            if let Some(owners) = topic_owners.get_mut(slot) {
                owners.push((i, u16::try_from(t).unwrap_or(u16::MAX)));
            }
        }
        for (p, pattern) in filter.patterns.iter().enumerate() {
            sources.push(&pattern.source);
            pattern_owners.push((i, u16::try_from(p).unwrap_or(u16::MAX)));
        }
    }
    let topics = if topics.is_empty() {
        None
    } else {
        Some(
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                // A DFA scans at a constant cost per byte however many topics there are;
                // beyond this many topics its memory would outweigh that.
                .kind((topics.len() <= MAX_DFA_TOPICS).then_some(AhoCorasickKind::DFA))
                .build(&topics)
                .map_err(|e| e.to_string())?,
        )
    };
    let set = if sources.is_empty() {
        None
    } else {
        Some(
            RegexSetBuilder::new(&sources)
                .size_limit(SET_SIZE_LIMIT)
                .dfa_size_limit(SET_SIZE_LIMIT)
                .build()
                .map_err(|e| e.to_string())?,
        )
    };
    Ok(Some(ContentMatcher {
        topics,
        topic_owners,
        set,
        pattern_owners,
    }))
}

/// One output modifier as it applies, after duplicates were removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModifierStep {
    /// The rule.
    pub rule_id: RuleId,
    /// Its level.
    pub level: Level,
    /// `modify` applies it; `log` only records it.
    pub action: RuleAction,
    /// Text before the answer (unless an earlier rule already prepends the same text).
    pub prepend: Option<String>,
    /// Text after the answer.
    pub append: Option<String>,
    /// Format note for the model.
    pub format_note: Option<String>,
}

/// The lowest cap per subject and period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EffectiveBudgetLimit {
    /// Whose spend.
    pub subject: BudgetSubject,
    /// Period.
    pub period: BudgetLimitPeriod,
    /// The lowest cap.
    pub amount: Money,
    /// The rule setting it.
    pub rule_id: RuleId,
}

/// What the applicable rules add up to for one principal and tier (whatever their actions:
/// the action says what happens when a request passes a limit).
#[derive(Clone, Debug, Default)]
pub struct EffectivePolicy {
    /// The applicable active rules, in order.
    pub rules: Vec<RuleId>,
    /// Intersection of the allowlists (`None`: no allowlist applies).
    pub allowed_models: Option<BTreeSet<ModelId>>,
    /// Union of the denylists.
    pub denied_models: BTreeSet<ModelId>,
    /// Lowest input bound.
    pub max_input_tokens: Option<u32>,
    /// Lowest output bound.
    pub max_output_tokens: Option<u32>,
    /// Every rate limit (each its own bucket).
    pub rate_limits: Vec<(RuleId, RateLimit)>,
    /// Union of blocked topics (lowercased).
    pub blocked_topics: BTreeSet<String>,
    /// Union of blocked patterns.
    pub blocked_patterns: BTreeSet<String>,
    /// Output modifiers in application order (global -> user, then priority), duplicates once.
    pub output_modifiers: Vec<ModifierStep>,
    /// The lowest cap per subject and period.
    pub budget_limits: Vec<EffectiveBudgetLimit>,
    /// Every time restriction (a request must satisfy all).
    pub time_restrictions: Vec<(RuleId, TimeRestriction)>,
}

impl EffectivePolicy {
    /// Whether a model passes the allowlists and denylists.
    #[must_use]
    pub fn model_allowed(&self, model: &str) -> bool {
        self.allowed_models
            .as_ref()
            .is_none_or(|set| set.iter().any(|m| m.as_str() == model))
            && !self.denied_models.iter().any(|m| m.as_str() == model)
    }

    /// Whether every time restriction allows the instant.
    #[must_use]
    pub fn time_allowed(&self, now: DateTime<Utc>) -> bool {
        self.time_restrictions.iter().all(|(_, t)| t.allows(now))
    }
}

/// The current policy, swapped atomically when rules change. Readers never block.
#[derive(Debug)]
pub struct PolicyHolder {
    current: ArcSwap<Policy>,
}

impl PolicyHolder {
    /// Holds `policy`.
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        Self {
            current: ArcSwap::from_pointee(policy),
        }
    }

    /// The current policy.
    #[must_use]
    pub fn load(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Replaces the policy; returns the previous one.
    pub fn store(&self, policy: Policy) -> Arc<Policy> {
        self.current.swap(Arc::new(policy))
    }

    /// Compiles `records` as the next version and swaps it in. On error the current policy
    /// stays in force and the error lists every invalid rule.
    pub fn reload(&self, records: &[RuleRecord], known: &KnownScopes) -> Result<u64, PolicyError> {
        let version = self.load().version().wrapping_add(1);
        let policy = Policy::compile(records, known, version)?;
        self.store(policy);
        Ok(version)
    }
}

impl Default for PolicyHolder {
    fn default() -> Self {
        Self::new(Policy::empty())
    }
}
