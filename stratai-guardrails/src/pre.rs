//! Pre-request decisions: model access, token limits, time, content, budget limits, output
//! format notes and rate limits, all from the compiled policy.

use std::collections::BTreeSet;
use std::ops::Range;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use smallvec::SmallVec;
use stratai_core::gateway::{ChatMessage, ChatRequest};
use stratai_core::ports::RuleAction;
use stratai_core::{Money, TierId};

use crate::decision::{Decision, Modification, Reason, ReasonKey, RuleOrder};
use crate::policy::{Item, Node, Policy, Principal, SpendSnapshot, budget_subject};
use crate::rate::{BucketKey, RateLimiter, RateVerdict};
use crate::rule::{RateLimit, Rule, RuleKind};

/// A request to decide, before it reaches the model.
#[derive(Clone, Copy, Debug)]
pub struct PreRequest<'a> {
    /// Who asks.
    pub principal: &'a Principal,
    /// The requested model.
    pub model: &'a str,
    /// The model's tier (from the catalog), if known.
    pub tier: Option<TierId>,
    /// Estimated input tokens (see [`estimate_tokens`]).
    pub input_tokens: u32,
    /// Requested output bound (`None`: no bound, which passes no output limit).
    pub max_tokens: Option<u32>,
    /// The prompt, scanned by content filters.
    pub messages: &'a [ChatMessage],
    /// Worst-case cost of the request, checked against budget limit rules.
    pub estimated_cost: Money,
    /// Spend so far for budget limit rules (`None`: counted as zero).
    pub spend: Option<&'a SpendSnapshot>,
    /// When the request is made (time restrictions).
    pub now: DateTime<Utc>,
}

impl<'a> PreRequest<'a> {
    /// A request from a chat request, with estimated input tokens, no cost and no spend.
    #[must_use]
    pub fn from_chat(
        principal: &'a Principal,
        request: &'a ChatRequest,
        tier: Option<TierId>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            principal,
            model: &request.model,
            tier,
            input_tokens: estimate_tokens(&request.messages),
            max_tokens: request.max_tokens,
            messages: &request.messages,
            estimated_cost: Money::ZERO,
            spend: None,
            now,
        }
    }
}

/// The input estimate token limits are checked against before the call: core's
/// [`estimate_prompt_tokens`](stratai_core::pricing::estimate_prompt_tokens) (about one token per
/// 4 characters plus chat framing), the same estimate budget reservations use.
#[must_use]
pub fn estimate_tokens(messages: &[ChatMessage]) -> u32 {
    stratai_core::pricing::estimate_prompt_tokens(messages)
}

/// How a decision consults rate limits.
#[derive(Clone, Copy)]
pub enum RateCheck<'a> {
    /// Take a request from each bucket (the real decision).
    Acquire(&'a dyn RateLimiter),
    /// Look at the buckets without taking anything (`explain`).
    Peek(&'a dyn RateLimiter),
    /// Do not consult rate limits.
    Skip,
}

/// Reasons gathered by the checks of one decision.
pub(crate) struct Collector {
    reasons: Vec<(ReasonKey, Reason)>,
    blocked: bool,
}

impl Collector {
    pub(crate) fn add(&mut self, rule: &Rule, check: u8, detail: String) {
        self.add_as(rule, rule.action, check, detail);
    }

    fn add_as(&mut self, rule: &Rule, action: RuleAction, check: u8, detail: String) {
        if action == RuleAction::Block {
            self.blocked = true;
        }
        let mut reason = Reason::new(rule, detail);
        reason.action = action;
        self.reasons.push((
            ReasonKey {
                rule: RuleOrder::of(rule),
                check,
            },
            reason,
        ));
    }
}

impl Policy {
    /// Decides a request before it reaches the model. Rate limits are consulted last, and only
    /// when nothing else refused (so a refused request takes no rate-limit token); with
    /// [`RateCheck::Acquire`], blocking limits are first peeked so that a request refused by
    /// one of them takes nothing from the others.
    #[must_use]
    pub fn decide_pre(&self, req: &PreRequest<'_>, rates: RateCheck<'_>) -> Decision {
        self.decide_pre_rules(req).finish(req, rates)
    }

    /// The first half of [`decide_pre`](Self::decide_pre): every check but the rate limits.
    /// A caller whose limiter is asynchronous (shared between instances) fetches the verdicts
    /// of [`PendingPre::rate_queries`] in between, then calls [`PendingPre::finish`].
    #[must_use]
    pub fn decide_pre_rules(&self, req: &PreRequest<'_>) -> PendingPre<'_> {
        let applicable = self.applicable(req.principal, req.tier);
        let mut out = Collector::new();
        let mut modifications = Vec::new();
        let nodes: SmallVec<[&Node; 8]> = applicable.iter().filter_map(|&n| self.node(n)).collect();

        let mut clock = LocalClock::default();
        for node in &nodes {
            self.check_models(node, req.model, &mut out);
            self.check_time(node, req.now, &mut clock, &mut out);
            self.check_budget(node, req, &mut out);
        }
        self.check_tokens(&nodes, req, &mut out, &mut modifications);
        self.check_prompt(
            &applicable,
            &nodes,
            req.messages,
            &mut out,
            &mut modifications,
        );
        self.format_notes(&nodes, &mut out, &mut modifications);
        PendingPre {
            policy: self,
            nodes,
            out,
            modifications,
        }
    }

    fn check_models(&self, node: &Node, model: &str, out: &mut Collector) {
        if let Some(allowed) = &node.allowed_by_all
            && !allowed.contains(model)
        {
            for rule in node.allow.iter().filter_map(|&i| self.rule(i)) {
                if let RuleKind::ModelAllowlist(models) = &rule.kind
                    && !models.iter().any(|m| m.as_str() == model)
                {
                    out.add(
                        rule,
                        0,
                        format!("model `{model}` is not in the allowlist ({})", list(models)),
                    );
                }
            }
        }
        if node.denied_by_any.contains(model) {
            for rule in node.deny.iter().filter_map(|&i| self.rule(i)) {
                if let RuleKind::ModelDenylist(models) = &rule.kind
                    && models.iter().any(|m| m.as_str() == model)
                {
                    out.add(rule, 0, format!("model `{model}` is denied"));
                }
            }
        }
    }

    fn check_time(
        &self,
        node: &Node,
        now: DateTime<Utc>,
        clock: &mut LocalClock,
        out: &mut Collector,
    ) {
        for rule in node.time.iter().filter_map(|&i| self.rule(i)) {
            if let RuleKind::TimeRestriction(t) = &rule.kind
                && !t.allows_local(clock.local(t.timezone, now))
            {
                let local = now.with_timezone(&t.timezone);
                out.add(
                    rule,
                    0,
                    format!(
                        "requests are allowed {} only; it is {}",
                        t.describe(),
                        local.format("%a %H:%M")
                    ),
                );
            }
        }
    }

    fn check_budget(&self, node: &Node, req: &PreRequest<'_>, out: &mut Collector) {
        for rule in node.budget.iter().filter_map(|&i| self.rule(i)) {
            if let RuleKind::BudgetLimit(limit) = &rule.kind {
                let subject = budget_subject(&rule.scope, req.principal, req.tier);
                let spent = req
                    .spend
                    .map_or(Money::ZERO, |s| s.for_rule(rule.id, subject, limit.period));
                if spent + req.estimated_cost > limit.amount {
                    out.add(
                        rule,
                        0,
                        format!(
                            "{subject} spend of {spent} plus this request's estimated {} would pass the {} limit of {}",
                            req.estimated_cost,
                            limit.period.as_str(),
                            limit.amount
                        ),
                    );
                }
            }
        }
    }

    fn check_tokens(
        &self,
        nodes: &[&Node],
        req: &PreRequest<'_>,
        out: &mut Collector,
        modifications: &mut Vec<Modification>,
    ) {
        let within = |n: &&&Node| {
            n.min_input.is_none_or(|m| req.input_tokens <= m)
                && n.min_output
                    .is_none_or(|m| req.max_tokens.is_some_and(|t| t <= m))
        };
        if nodes
            .iter()
            .filter(|n| !n.token.is_empty())
            .all(|n| within(&n))
        {
            return;
        }
        let rules = || {
            nodes
                .iter()
                .flat_map(|n| n.token.iter())
                .filter_map(|&i| self.rule(i))
                .filter_map(|r| match &r.kind {
                    RuleKind::TokenLimit(l) => Some((r, *l)),
                    _ => None,
                })
        };
        let requested = req.max_tokens;
        let exceeds = |bound: u32, value: Option<u32>| value.is_none_or(|v| v > bound);
        let show =
            |value: Option<u32>| value.map_or_else(|| "no bound".to_owned(), |v| v.to_string());
        // Input: cannot be shortened, so every exceeded bound reports with its own action.
        for (rule, limit) in rules() {
            if let Some(max) = limit.max_input
                && req.input_tokens > max
            {
                out.add(
                    rule,
                    0,
                    format!(
                        "estimated input of {} tokens exceeds the limit of {max}",
                        req.input_tokens
                    ),
                );
            }
        }
        // Output: blocking bounds judge the request as asked; `modify` bounds clamp it; the
        // advisory ones judge what is left after clamping.
        let mut clamp: Option<(u32, &Rule)> = None;
        for (rule, limit) in rules() {
            if rule.action == RuleAction::Modify
                && let Some(max) = limit.max_output
                && exceeds(max, requested)
                && clamp.is_none_or(|(c, _)| max < c)
            {
                clamp = Some((max, rule));
            }
        }
        let effective = clamp.map_or(requested, |(c, _)| Some(c));
        for (rule, limit) in rules() {
            let Some(max) = limit.max_output else {
                continue;
            };
            match rule.action {
                RuleAction::Block if exceeds(max, requested) => out.add(
                    rule,
                    1,
                    format!(
                        "requested output of {} tokens exceeds the limit of {max}",
                        show(requested)
                    ),
                ),
                RuleAction::Modify if exceeds(max, requested) => out.add(
                    rule,
                    1,
                    format!(
                        "requested output of {} tokens exceeds the limit of {max}; clamped to {}",
                        show(requested),
                        show(effective)
                    ),
                ),
                RuleAction::Warn | RuleAction::Log if exceeds(max, effective) => out.add(
                    rule,
                    1,
                    format!(
                        "requested output of {} tokens exceeds the limit of {max}",
                        show(effective)
                    ),
                ),
                _ => {}
            }
        }
        if let Some((to, rule)) = clamp {
            modifications.push(Modification::ClampMaxTokens {
                rule_id: rule.id,
                from: requested,
                to,
            });
        }
    }

    fn check_prompt(
        &self,
        applicable: &[u32],
        nodes: &[&Node],
        messages: &[ChatMessage],
        out: &mut Collector,
        modifications: &mut Vec<Modification>,
    ) {
        if nodes.iter().all(|n| n.matcher.is_none()) {
            return;
        }
        let mut hits: Vec<(u32, Item)> = Vec::new();
        let mut redactions: SmallVec<[Vec<Range<usize>>; 4]> =
            messages.iter().map(|_| Vec::new()).collect();
        // Each applicable node scans with its own matchers: the work follows the content
        // rules that apply to the principal, not every content rule of the policy.
        for matcher in nodes.iter().filter_map(|n| n.matcher.as_ref()) {
            for (message, ranges) in messages.iter().zip(redactions.iter_mut()) {
                crate::post::scan_whole(
                    self,
                    matcher,
                    applicable,
                    &message.content,
                    &mut hits,
                    ranges,
                );
            }
        }
        report_hits(self, hits, 0, out);
        for (message, ranges) in redactions.into_iter().enumerate() {
            if !ranges.is_empty() {
                modifications.push(Modification::RedactPrompt {
                    message,
                    ranges: crate::post::merge(ranges),
                });
            }
        }
    }

    fn format_notes(
        &self,
        nodes: &[&Node],
        out: &mut Collector,
        modifications: &mut Vec<Modification>,
    ) {
        if nodes.iter().all(|n| !n.has_format_notes) {
            return;
        }
        let mut rules: Vec<&Rule> = nodes
            .iter()
            .flat_map(|n| n.modifiers.iter())
            .filter_map(|&i| self.rule(i))
            .collect();
        rules.sort_by_key(|r| RuleOrder::of(r));
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for rule in rules {
            if let RuleKind::OutputModifier(m) = &rule.kind
                && let Some(note) = &m.format_note
                && seen.insert(note)
            {
                if rule.action == RuleAction::Modify {
                    out.add(rule, 0, "added a format note".to_owned());
                    modifications.push(Modification::AddFormatNote {
                        rule_id: rule.id,
                        note: note.clone(),
                    });
                } else {
                    out.add(rule, 0, "would add a format note".to_owned());
                }
            }
        }
    }

    fn rate_rules<'p>(&'p self, nodes: &[&'p Node]) -> SmallVec<[&'p Rule; 8]> {
        nodes
            .iter()
            .flat_map(|n| n.rate.iter())
            .filter_map(|&i| self.rule(i))
            .collect()
    }

    /// Consults the limiter in this order (a shared limiter's verdicts are fetched in the
    /// same order by [`crate::rate::FetchedVerdicts::fetch`]).
    fn check_rates(
        &self,
        nodes: &[&Node],
        req: &PreRequest<'_>,
        rates: RateCheck<'_>,
        out: &mut Collector,
    ) -> Option<Duration> {
        let (limiter, take) = match rates {
            RateCheck::Acquire(l) => (l, true),
            RateCheck::Peek(l) => (l, false),
            RateCheck::Skip => return None,
        };
        let rules = self.rate_rules(nodes);
        if rules.is_empty() {
            return None;
        }
        let key = |rule: &Rule| bucket_of(rule, req);
        let mut retry: Option<Duration> = None;
        let mut report = |out: &mut Collector, rule: &Rule, limit: &RateLimit, wait: Duration| {
            retry = Some(retry.map_or(wait, |r| r.max(wait)));
            out.add(
                rule,
                0,
                format!(
                    "rate limit of {} per {} reached; retry in {}s",
                    limit.requests,
                    limit.period.as_str(),
                    wait.as_secs().max(1)
                ),
            );
        };
        // Blocking limits first, without taking: a refused request takes nothing anywhere.
        // (With a single limit, taking it directly is the same thing.)
        let mut refused = false;
        let several = rules.len() > 1;
        for rule in rules
            .iter()
            .filter(|r| several && r.action == RuleAction::Block)
        {
            if let Some((bucket, limit)) = key(rule)
                && let RateVerdict::Limited { retry_after } = limiter.peek(&bucket, &limit)
            {
                report(out, rule, &limit, retry_after);
                refused = true;
            }
        }
        if refused {
            return retry;
        }
        for rule in &rules {
            let Some((bucket, limit)) = key(rule) else {
                continue;
            };
            let verdict = if take {
                limiter.acquire(&bucket, &limit)
            } else {
                limiter.peek(&bucket, &limit)
            };
            if let RateVerdict::Limited { retry_after } = verdict {
                report(out, rule, &limit, retry_after);
            }
        }
        retry
    }
}

fn bucket_of(rule: &Rule, req: &PreRequest<'_>) -> Option<(BucketKey, RateLimit)> {
    match &rule.kind {
        RuleKind::RateLimit(limit) => Some((
            BucketKey::for_request(rule.id, limit, req.principal.org_id, req.principal.user_id),
            *limit,
        )),
        _ => None,
    }
}

/// One rate-limit bucket a request draws from, as [`PendingPre::rate_queries`] lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateQuery {
    /// The bucket.
    pub bucket: BucketKey,
    /// Its rule's limit.
    pub limit: RateLimit,
    /// Whether the rule blocks (blocking limits are peeked first when there are several).
    pub blocking: bool,
}

/// A pre-request decision with every check done but the rate limits (see
/// [`Policy::decide_pre_rules`]).
pub struct PendingPre<'p> {
    policy: &'p Policy,
    nodes: SmallVec<[&'p Node; 8]>,
    out: Collector,
    modifications: Vec<Modification>,
}

impl std::fmt::Debug for PendingPre<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingPre")
            .field("blocked", &self.out.blocked)
            .finish_non_exhaustive()
    }
}

impl PendingPre<'_> {
    /// Whether a blocking rule already refused (then no rate limit is consulted).
    #[must_use]
    pub fn is_blocked(&self) -> bool {
        self.out.blocked
    }

    /// The buckets [`finish`](Self::finish) will consult, in its order; empty when the
    /// request is already refused or no rate limit applies.
    #[must_use]
    pub fn rate_queries(&self, req: &PreRequest<'_>) -> SmallVec<[RateQuery; 4]> {
        if self.out.blocked {
            return SmallVec::new();
        }
        self.policy
            .rate_rules(&self.nodes)
            .into_iter()
            .filter_map(|rule| {
                bucket_of(rule, req).map(|(bucket, limit)| RateQuery {
                    bucket,
                    limit,
                    blocking: rule.action == RuleAction::Block,
                })
            })
            .collect()
    }

    /// Consults the rate limits (unless a rule already refused) and makes the decision.
    #[must_use]
    pub fn finish(mut self, req: &PreRequest<'_>, rates: RateCheck<'_>) -> Decision {
        let mut retry_after = None;
        if !self.out.blocked {
            retry_after = self
                .policy
                .check_rates(&self.nodes, req, rates, &mut self.out);
        }
        Decision::from_parts(self.out.reasons, self.modifications, retry_after, req.now)
    }
}

/// The local time of one decision's instant, converted once per timezone (the rules of a
/// principal mostly share a zone).
#[derive(Default)]
struct LocalClock {
    last: Option<(Tz, DateTime<Tz>)>,
}

impl LocalClock {
    fn local(&mut self, zone: Tz, now: DateTime<Utc>) -> DateTime<Tz> {
        match self.last {
            Some((z, local)) if z == zone => local,
            _ => {
                let local = now.with_timezone(&zone);
                self.last = Some((zone, local));
                local
            }
        }
    }
}

fn list(models: &BTreeSet<stratai_core::ModelId>) -> String {
    let names: Vec<&str> = models.iter().map(|m| m.as_str()).collect();
    if names.len() <= 5 {
        format!("allowed: {}", names.join(", "))
    } else {
        format!(
            "allowed: {}, ... {} in all",
            names[..5].join(", "),
            names.len()
        )
    }
}

/// One reason per rule with content matches, naming every matched topic and pattern.
pub(crate) fn report_hits(
    policy: &Policy,
    mut hits: Vec<(u32, Item)>,
    check: u8,
    out: &mut Collector,
) {
    hits.sort_unstable();
    hits.dedup();
    let mut i = 0;
    while i < hits.len() {
        let rule_index = hits[i].0;
        let mut j = i;
        while j < hits.len() && hits[j].0 == rule_index {
            j += 1;
        }
        if let Some(rule) = policy.rule(rule_index)
            && let RuleKind::ContentFilter(filter) = &rule.kind
        {
            let items: Vec<String> = hits[i..j]
                .iter()
                .filter_map(|(_, item)| match item {
                    Item::Topic(t) => filter
                        .topics
                        .get(usize::from(*t))
                        .map(|t| format!("topic `{t}`")),
                    Item::Pattern(p) => filter
                        .patterns
                        .get(usize::from(*p))
                        .map(|p| format!("pattern `{}`", p.source)),
                })
                .collect();
            out.add(rule, check, format!("matched {}", items.join(", ")));
        }
        i = j;
    }
}

impl Collector {
    pub(crate) fn new() -> Self {
        Collector {
            reasons: Vec::new(),
            blocked: false,
        }
    }

    pub(crate) fn into_reasons(self) -> Vec<(ReasonKey, Reason)> {
        self.reasons
    }
}
