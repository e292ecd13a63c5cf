//! Post-response enforcement: content filters (block, redact, warn, log) and output modifiers,
//! on whole answers and on streams.
//!
//! The stream filter holds back only as much text as a match could still need: topics are
//! literals and every pattern has a bounded match length (checked at load time), so a match
//! split across chunks is found exactly as in the whole text, and nothing that a later chunk
//! could turn into a match is sent early.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use stratai_core::TierId;
use stratai_core::ports::RuleAction;

use crate::decision::{Decision, Modification, REDACTED, RuleOrder, redact};
use crate::policy::{ContentMatcher, Item, Policy, Principal};
use crate::pre::{Collector, report_hits};
use crate::rule::{Pattern, Rule, RuleKind};

/// Extra bytes held after a pattern's longest match: one character of look-ahead (`\b`).
const LOOK_AROUND: usize = 4;

/// A filtered whole answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilteredAnswer {
    /// The decision over the answer.
    pub decision: Decision,
    /// The text to deliver (redacted, with prepended and appended text); `None` when denied.
    pub text: Option<String>,
}

impl Policy {
    /// Filters a whole answer: content filters, then output modifiers.
    #[must_use]
    pub fn filter_answer(
        &self,
        principal: &Principal,
        tier: Option<TierId>,
        answer: &str,
        now: DateTime<Utc>,
    ) -> FilteredAnswer {
        let nodes = self.applicable(principal, tier);
        let plan = OutputPlan::new(self, &nodes);
        let mut hits = Vec::new();
        let mut ranges = Vec::new();
        if let Some(matcher) = &self.matcher {
            scan_whole(self, matcher, &nodes, answer, &mut hits, &mut ranges);
        }
        let merged = merge(ranges);
        let mut out = Collector::new();
        report_hits(self, hits, 0, &mut out);
        let mut modifications = Vec::new();
        if !merged.is_empty() {
            modifications.push(Modification::RedactAnswer {
                ranges: merged.len(),
            });
        }
        plan.report(self, &mut out, &mut modifications);
        let text = format!("{}{}{}", plan.prepend, redact(answer, &merged), plan.append);
        let decision = Decision::from_parts(out.into_reasons(), modifications, None, now);
        FilteredAnswer {
            text: decision.is_allowed().then_some(text),
            decision,
        }
    }

    /// Starts filtering a streamed answer. Feed chunks with [`AnswerStream::push`], end with
    /// [`AnswerStream::finish`].
    #[must_use]
    pub fn answer_stream(
        self: &Arc<Self>,
        principal: &Principal,
        tier: Option<TierId>,
        now: DateTime<Utc>,
    ) -> AnswerStream {
        let nodes = self.applicable(principal, tier);
        let plan = OutputPlan::new(self, &nodes);
        let mut trackers = Vec::new();
        let mut max_topic = 0;
        for node in nodes.iter().filter_map(|&n| self.node(n)) {
            for &rule in &node.content {
                let Some(RuleKind::ContentFilter(filter)) = self.rule(rule).map(|r| &r.kind) else {
                    continue;
                };
                for topic in &filter.topics {
                    max_topic = max_topic.max(topic.len());
                }
                for (item, pattern) in filter.patterns.iter().enumerate() {
                    trackers.push(Tracker {
                        rule,
                        item: u16::try_from(item).unwrap_or(u16::MAX),
                        max_len: pattern.max_len,
                        resume: 0,
                        hit: false,
                    });
                }
            }
        }
        AnswerStream {
            policy: Arc::clone(self),
            nodes: nodes.into_vec(),
            now,
            buf: String::new(),
            base: 0,
            total: 0,
            emitted: 0,
            released: 0,
            scanned: 0,
            max_topic,
            trackers,
            hits: Vec::new(),
            pending: Vec::new(),
            redacted: 0,
            blocked: false,
            started: false,
            plan,
        }
    }
}

fn pattern_of(policy: &Policy, rule: u32, item: u16) -> Option<&Pattern> {
    match policy.rule(rule).map(|r| &r.kind) {
        Some(RuleKind::ContentFilter(f)) => f.patterns.get(usize::from(item)),
        _ => None,
    }
}

fn action_of(policy: &Policy, rule: u32) -> Option<RuleAction> {
    policy.rule(rule).map(|r| r.action)
}

/// Every content match of one node in `text`: each (rule, item) that matched, and the byte
/// ranges that `modify` rules redact.
pub(crate) fn scan_whole(
    policy: &Policy,
    matcher: &ContentMatcher,
    applicable: &[u32],
    text: &str,
    hits: &mut Vec<(u32, Item)>,
    ranges: &mut Vec<Range<usize>>,
) {
    // Most texts match nothing: a plain search (which can use a prefilter) says so first.
    if let Some(ac) = &matcher.topics
        && ac.is_match(text)
    {
        for m in ac.find_overlapping_iter(text) {
            for &(rule, item) in matcher
                .topic_owners
                .get(m.pattern().as_usize())
                .into_iter()
                .flatten()
            {
                if !policy.rule_applies(rule, applicable) {
                    continue;
                }
                hits.push((rule, Item::Topic(item)));
                if action_of(policy, rule) == Some(RuleAction::Modify) {
                    ranges.push(m.start()..m.end());
                }
            }
        }
    }
    if let Some(set) = &matcher.set
        && set.is_match(text)
    {
        for index in set.matches(text).iter() {
            let Some(&(rule, item)) = matcher.pattern_owners.get(index) else {
                continue;
            };
            if !policy.rule_applies(rule, applicable) {
                continue;
            }
            hits.push((rule, Item::Pattern(item)));
            if action_of(policy, rule) == Some(RuleAction::Modify)
                && let Some(pattern) = pattern_of(policy, rule, item)
            {
                ranges.extend(pattern.regex.find_iter(text).map(|m| m.range()));
            }
        }
    }
}

/// Sorts ranges and merges the ones that overlap or touch.
pub(crate) fn merge(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_by_key(|r| (r.start, r.end));
    let mut out: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The output modifiers of one answer, in order, duplicates once.
#[derive(Debug, Default)]
struct OutputPlan {
    prepend: String,
    append: String,
    /// (rule, prepends, appends) of every modifier that adds text.
    steps: Vec<(u32, bool, bool)>,
}

impl OutputPlan {
    fn new(policy: &Policy, nodes: &[u32]) -> Self {
        let mut plan = OutputPlan::default();
        let mut rules: Vec<(u32, &Rule)> = nodes
            .iter()
            .filter_map(|&n| policy.node(n))
            .flat_map(|n| n.modifiers.iter())
            .filter_map(|&i| policy.rule(i).map(|r| (i, r)))
            .collect();
        if rules.is_empty() {
            return plan;
        }
        rules.sort_by_key(|(_, r)| RuleOrder::of(r));
        let mut seen_prepend: BTreeSet<&str> = BTreeSet::new();
        let mut seen_append: BTreeSet<&str> = BTreeSet::new();
        for (i, rule) in rules {
            let RuleKind::OutputModifier(m) = &rule.kind else {
                continue;
            };
            let prepends = m.prepend.as_deref().is_some_and(|t| seen_prepend.insert(t));
            let appends = m.append.as_deref().is_some_and(|t| seen_append.insert(t));
            if !(prepends || appends) {
                continue;
            }
            plan.steps.push((i, prepends, appends));
            if rule.action == RuleAction::Modify {
                if prepends && let Some(t) = &m.prepend {
                    plan.prepend.push_str(t);
                    plan.prepend.push_str("\n\n");
                }
                if appends && let Some(t) = &m.append {
                    plan.append.push_str("\n\n");
                    plan.append.push_str(t);
                }
            }
        }
        plan
    }

    fn report(&self, policy: &Policy, out: &mut Collector, mods: &mut Vec<Modification>) {
        for &(i, prepends, appends) in &self.steps {
            let Some(rule) = policy.rule(i) else { continue };
            let (done, would) = match (prepends, appends) {
                (true, true) => (
                    "prepended and appended text",
                    "would prepend and append text",
                ),
                (true, false) => ("prepended text", "would prepend text"),
                _ => ("appended text", "would append text"),
            };
            if rule.action == RuleAction::Modify {
                out.add(rule, 0, done.to_owned());
                if prepends {
                    mods.push(Modification::Prepend { rule_id: rule.id });
                }
                if appends {
                    mods.push(Modification::Append { rule_id: rule.id });
                }
            } else {
                out.add(rule, 0, would.to_owned());
            }
        }
    }
}

struct Tracker {
    rule: u32,
    item: u16,
    max_len: usize,
    /// Absolute offset before which no further match of this pattern can start.
    resume: usize,
    hit: bool,
}

/// What a chunk released.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamStep {
    /// Text safe to send now (may be empty while a possible match is held back).
    pub text: String,
    /// A blocking rule matched: stop the stream (nothing more is released).
    pub blocked: bool,
}

/// The end of a filtered stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEnd {
    /// The last text to send (held-back text and appended text); empty when blocked.
    pub text: String,
    /// The decision over the whole answer (the same as for the whole text).
    pub decision: Decision,
}

/// The state of a streamed answer's filter.
pub struct AnswerStream {
    policy: Arc<Policy>,
    nodes: Vec<u32>,
    now: DateTime<Utc>,
    /// Text from `base` on (absolute byte offsets).
    buf: String,
    base: usize,
    total: usize,
    emitted: usize,
    /// Answer bytes actually sent (stops growing once blocked).
    released: usize,
    /// Topics were scanned up to here.
    scanned: usize,
    max_topic: usize,
    trackers: Vec<Tracker>,
    hits: Vec<(u32, Item)>,
    /// Redaction ranges (absolute) not yet released.
    pending: Vec<Range<usize>>,
    redacted: usize,
    blocked: bool,
    started: bool,
    plan: OutputPlan,
}

impl std::fmt::Debug for AnswerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerStream")
            .field("received", &self.total)
            .field("released", &self.emitted)
            .field("blocked", &self.blocked)
            .finish()
    }
}

impl AnswerStream {
    /// Feeds a chunk; returns what can be sent now.
    pub fn push(&mut self, chunk: &str) -> StreamStep {
        self.buf.push_str(chunk);
        self.total += chunk.len();
        self.scan(false);
        let text = self.release(false);
        StreamStep {
            text,
            blocked: self.blocked,
        }
    }

    /// Bytes of the answer released so far (before redaction; without prepended text).
    #[must_use]
    pub fn released(&self) -> usize {
        self.released
    }

    /// Whether a blocking rule matched so far.
    #[must_use]
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Ends the stream: the rest of the text, appended text, and the decision.
    #[must_use]
    pub fn finish(mut self) -> StreamEnd {
        self.scan(true);
        let mut text = self.release(true);
        if !self.blocked {
            text.push_str(&self.plan.append);
        }
        let policy = Arc::clone(&self.policy);
        let mut out = Collector::new();
        report_hits(&policy, std::mem::take(&mut self.hits), 0, &mut out);
        let mut modifications = Vec::new();
        if self.redacted > 0 {
            modifications.push(Modification::RedactAnswer {
                ranges: self.redacted,
            });
        }
        self.plan.report(&policy, &mut out, &mut modifications);
        let decision = Decision::from_parts(out.into_reasons(), modifications, None, self.now);
        StreamEnd {
            text: if decision.is_allowed() {
                text
            } else {
                String::new()
            },
            decision,
        }
    }

    fn floor(&self, absolute: usize) -> usize {
        let rel = absolute.saturating_sub(self.base).min(self.buf.len());
        self.base + self.buf.floor_char_boundary(rel)
    }

    fn record(&mut self, rule: u32, item: Item, range: Range<usize>) {
        self.hits.push((rule, item));
        match action_of(&self.policy, rule) {
            Some(RuleAction::Modify) => self.pending.push(range),
            Some(RuleAction::Block) => self.blocked = true,
            _ => {}
        }
    }

    fn scan(&mut self, last: bool) {
        let policy = Arc::clone(&self.policy);
        // Topics: every occurrence ending in the new text; an occurrence is final at once.
        if self.max_topic > 0 && self.total > self.scanned {
            let from = self
                .scanned
                .saturating_sub(self.max_topic - 1)
                .max(self.base);
            let mut found = Vec::new();
            if let Some(matcher) = &policy.matcher
                && let Some(ac) = &matcher.topics
            {
                let hay = self
                    .buf
                    .as_bytes()
                    .get(from - self.base..)
                    .unwrap_or_default();
                for m in ac.find_overlapping_iter(hay) {
                    let (start, end) = (from + m.start(), from + m.end());
                    if end <= self.scanned {
                        continue;
                    }
                    for &(rule, item) in matcher
                        .topic_owners
                        .get(m.pattern().as_usize())
                        .into_iter()
                        .flatten()
                    {
                        if policy.rule_applies(rule, &self.nodes) {
                            found.push((rule, Item::Topic(item), start..end));
                        }
                    }
                }
            }
            for (rule, item, range) in found {
                self.record(rule, item, range);
            }
            self.scanned = self.total;
        }
        // Patterns: continue each pattern's own left-to-right scan; a match is final once the
        // text it could extend into (its maximum length plus look-ahead) has arrived.
        let mut found = Vec::new();
        for t in &mut self.trackers {
            let Some(pattern) = pattern_of(&policy, t.rule, t.item) else {
                continue;
            };
            loop {
                let start = t.resume.saturating_sub(self.base);
                if start > self.buf.len() {
                    break;
                }
                match pattern.regex.find_at(&self.buf, start) {
                    Some(m) => {
                        let (s, e) = (self.base + m.start(), self.base + m.end());
                        if last || s + t.max_len + LOOK_AROUND <= self.total {
                            t.hit = true;
                            found.push((t.rule, Item::Pattern(t.item), s..e));
                            t.resume = e;
                        } else {
                            let settled = self.total.saturating_sub(t.max_len + LOOK_AROUND);
                            let frontier = s.min(settled);
                            if frontier > t.resume {
                                let rel = frontier - self.base;
                                t.resume = self.base + self.buf.floor_char_boundary(rel);
                            }
                            break;
                        }
                    }
                    None => {
                        let settled = if last {
                            self.total
                        } else {
                            self.total.saturating_sub(t.max_len + LOOK_AROUND)
                        };
                        if settled > t.resume {
                            let rel = (settled - self.base).min(self.buf.len());
                            t.resume = self.base + self.buf.floor_char_boundary(rel);
                        }
                        break;
                    }
                }
            }
        }
        for (rule, item, range) in found {
            self.record(rule, item, range);
        }
    }

    fn release(&mut self, last: bool) -> String {
        let frontier = if last {
            self.total
        } else {
            let mut f = self.total;
            if self.max_topic > 0 {
                f = f.min(self.total.saturating_sub(self.max_topic - 1));
            }
            for t in &self.trackers {
                f = f.min(t.resume);
            }
            self.floor(f).max(self.emitted)
        };
        let merged = merge(std::mem::take(&mut self.pending));
        let mut until = frontier;
        if !last {
            for r in &merged {
                if r.end >= frontier && r.start < until {
                    until = r.start;
                }
            }
        }
        let until = until.max(self.emitted);
        let mut text = String::new();
        if !self.started && !self.blocked {
            self.started = true;
            text.push_str(&self.plan.prepend);
        }
        let mut at = self.emitted;
        for r in &merged {
            if r.start >= until {
                self.pending.push(r.clone());
                continue;
            }
            if !self.blocked {
                text.push_str(self.slice(at, r.start));
                text.push_str(REDACTED);
            }
            self.redacted += 1;
            at = r.end;
        }
        if !self.blocked {
            text.push_str(self.slice(at, until));
        }
        self.emitted = until.max(at);
        if !self.blocked {
            self.released = self.emitted;
        }
        // Keep one character of look-behind before the earliest position still scanned.
        let mut keep = self.emitted;
        for t in &self.trackers {
            keep = keep.min(t.resume);
        }
        let keep = self.floor(keep.saturating_sub(LOOK_AROUND));
        if keep > self.base {
            self.buf.drain(..keep - self.base);
            self.base = keep;
        }
        if self.blocked { String::new() } else { text }
    }

    fn slice(&self, from: usize, to: usize) -> &str {
        let from = from.saturating_sub(self.base);
        let to = to.saturating_sub(self.base);
        self.buf.get(from..to).unwrap_or_default()
    }
}
