//! A naive reference evaluator: scans every rule on every request, no index, no aggregates,
//! no compiled matchers. The compiled engine must agree with it exactly.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::ops::Range;
use std::time::Duration;

use stratai_core::ports::{RuleAction, RuleScope};
use stratai_core::{Money, RuleId, TierId};
use stratai_guardrails::decision::{Modification, REDACTED};
use stratai_guardrails::policy::BudgetSubject;
use stratai_guardrails::rate::{BucketKey, RateVerdict};
use stratai_guardrails::rule::{Rule, RuleKind, RuleType};
use stratai_guardrails::{Outcome, PreRequest, Principal, RateLimiter};

pub type RefReason = (RuleId, RuleAction, RuleType, String);

pub struct RefDecision {
    pub outcome: Outcome,
    pub reasons: Vec<RefReason>,
    pub modifications: Vec<Modification>,
    pub retry_after: Option<Duration>,
}

pub struct RefAnswer {
    pub outcome: Outcome,
    pub reasons: Vec<RefReason>,
    pub text: Option<String>,
}

fn applies(rule: &Rule, p: &Principal, tier: Option<TierId>) -> bool {
    rule.active
        && match rule.scope {
            RuleScope::Global => true,
            RuleScope::Org { org_id } => org_id == p.org_id,
            RuleScope::Tier { org_id, tier_id } => {
                tier == Some(tier_id) && org_id.is_none_or(|o| o == p.org_id)
            }
            RuleScope::Group { org_id, group_id } => {
                org_id == p.org_id && p.groups.contains(&group_id)
            }
            RuleScope::User { org_id, user_id } => org_id == p.org_id && user_id == p.user_id,
        }
}

fn ordered<'a>(rules: &'a [Rule], p: &Principal, tier: Option<TierId>) -> Vec<&'a Rule> {
    let mut out: Vec<&Rule> = Vec::new();
    for r in rules {
        if applies(r, p, tier) && !out.iter().any(|o| o.id == r.id) {
            out.push(r);
        }
    }
    out.sort_by_key(|r| (r.level, -i64::from(r.priority), r.created_at, r.id));
    out
}

struct Out {
    reasons: Vec<((usize, u8), RefReason)>,
}

impl Out {
    fn add(&mut self, pos: usize, check: u8, rule: &Rule, detail: String) {
        self.reasons.push((
            (pos, check),
            (rule.id, rule.action, rule.rule_type(), detail),
        ));
    }

    fn finish(mut self) -> (Outcome, Vec<RefReason>) {
        self.reasons.sort_by_key(|(k, _)| *k);
        let reasons: Vec<RefReason> = self.reasons.into_iter().map(|(_, r)| r).collect();
        let outcome = if reasons.iter().any(|r| r.1 == RuleAction::Block) {
            Outcome::Deny
        } else if reasons.iter().any(|r| r.1 == RuleAction::Warn) {
            Outcome::Warn
        } else {
            Outcome::Allow
        };
        (outcome, reasons)
    }
}

fn occurrences(text: &str, topic: &str) -> Vec<Range<usize>> {
    let hay = text.to_ascii_lowercase().into_bytes();
    let needle = topic.to_ascii_lowercase().into_bytes();
    let mut out = Vec::new();
    if needle.is_empty() || needle.len() > hay.len() {
        return out;
    }
    for i in 0..=hay.len() - needle.len() {
        if hay[i..i + needle.len()] == needle[..] {
            out.push(i..i + needle.len());
        }
    }
    out
}

fn merge(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_by_key(|r| (r.start, r.end));
    let mut out: Vec<Range<usize>> = Vec::new();
    for r in ranges {
        if let Some(last) = out.last_mut()
            && r.start <= last.end
        {
            last.end = last.end.max(r.end);
            continue;
        }
        out.push(r);
    }
    out
}

fn redact(text: &str, ranges: &[Range<usize>]) -> String {
    let mut out = String::new();
    let mut at = 0;
    for r in ranges {
        out.push_str(&text[at..r.start]);
        out.push_str(REDACTED);
        at = r.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Content: (matched item descriptions, redaction ranges) of one rule over one text.
fn content(rule: &Rule, text: &str) -> (Vec<String>, Vec<Range<usize>>) {
    let RuleKind::ContentFilter(f) = &rule.kind else {
        return (Vec::new(), Vec::new());
    };
    let mut items = Vec::new();
    let mut ranges = Vec::new();
    for t in &f.topics {
        let occ = occurrences(text, t);
        if !occ.is_empty() {
            items.push(format!("topic `{t}`"));
        }
        ranges.extend(occ);
    }
    for p in &f.patterns {
        if p.regex.is_match(text) {
            items.push(format!("pattern `{}`", p.source));
        }
        ranges.extend(p.regex.find_iter(text).map(|m| m.range()));
    }
    if rule.action != RuleAction::Modify {
        ranges.clear();
    }
    (items, ranges)
}

fn show(v: Option<u32>) -> String {
    v.map_or_else(|| "no bound".to_owned(), |v| v.to_string())
}

pub fn decide_pre(rules: &[Rule], req: &PreRequest<'_>, limiter: &dyn RateLimiter) -> RefDecision {
    let rules = ordered(rules, req.principal, req.tier);
    let mut out = Out {
        reasons: Vec::new(),
    };
    let mut modifications = Vec::new();

    // tokens: the clamp first (lowest modify bound the request exceeds)
    let exceeds = |bound: u32, v: Option<u32>| v.is_none_or(|v| v > bound);
    let mut clamp: Option<(u32, RuleId)> = None;
    for r in &rules {
        if let RuleKind::TokenLimit(l) = &r.kind
            && r.action == RuleAction::Modify
            && let Some(m) = l.max_output
            && exceeds(m, req.max_tokens)
            && clamp.is_none_or(|(c, _)| m < c)
        {
            clamp = Some((m, r.id));
        }
    }
    let effective = clamp.map_or(req.max_tokens, |(c, _)| Some(c));

    let mut prompt_hits: Vec<Vec<String>> = vec![Vec::new(); rules.len()];
    let mut redactions: Vec<Vec<Range<usize>>> = vec![Vec::new(); req.messages.len()];
    let mut notes_seen = BTreeSet::new();
    let mut notes = Vec::new();

    for (pos, r) in rules.iter().enumerate() {
        match &r.kind {
            RuleKind::ModelAllowlist(models) => {
                if !models.iter().any(|m| m.as_str() == req.model) {
                    let names: Vec<&str> = models.iter().map(|m| m.as_str()).collect();
                    out.add(
                        pos,
                        0,
                        r,
                        format!(
                            "model `{}` is not in the allowlist (allowed: {})",
                            req.model,
                            names.join(", ")
                        ),
                    );
                }
            }
            RuleKind::ModelDenylist(models) => {
                if models.iter().any(|m| m.as_str() == req.model) {
                    out.add(pos, 0, r, format!("model `{}` is denied", req.model));
                }
            }
            RuleKind::TimeRestriction(t) => {
                if !t.allows(req.now) {
                    let local = req.now.with_timezone(&t.timezone);
                    out.add(
                        pos,
                        0,
                        r,
                        format!(
                            "requests are allowed {} only; it is {}",
                            t.describe(),
                            local.format("%a %H:%M")
                        ),
                    );
                }
            }
            RuleKind::BudgetLimit(l) => {
                let org_id = req.principal.org_id;
                let subject = match r.scope {
                    RuleScope::Global | RuleScope::Org { .. } => BudgetSubject::Org { org_id },
                    RuleScope::Tier { tier_id, .. } => BudgetSubject::Tier { org_id, tier_id },
                    RuleScope::Group { group_id, .. } => BudgetSubject::Group { org_id, group_id },
                    RuleScope::User { user_id, .. } => BudgetSubject::User { org_id, user_id },
                };
                let spent = req.spend.map_or(Money::ZERO, |s| s.get(subject, l.period));
                if spent + req.estimated_cost > l.amount {
                    out.add(pos, 0, r, format!(
                        "{subject} spend of {spent} plus this request's estimated {} would pass the {} limit of {}",
                        req.estimated_cost, l.period.as_str(), l.amount));
                }
            }
            RuleKind::TokenLimit(l) => {
                if let Some(m) = l.max_input
                    && req.input_tokens > m
                {
                    out.add(
                        pos,
                        0,
                        r,
                        format!(
                            "estimated input of {} tokens exceeds the limit of {m}",
                            req.input_tokens
                        ),
                    );
                }
                if let Some(m) = l.max_output {
                    match r.action {
                        RuleAction::Block if exceeds(m, req.max_tokens) => out.add(pos, 1, r, format!(
                            "requested output of {} tokens exceeds the limit of {m}", show(req.max_tokens))),
                        RuleAction::Modify if exceeds(m, req.max_tokens) => out.add(pos, 1, r, format!(
                            "requested output of {} tokens exceeds the limit of {m}; clamped to {}", show(req.max_tokens), show(effective))),
                        RuleAction::Warn | RuleAction::Log if exceeds(m, effective) => out.add(pos, 1, r, format!(
                            "requested output of {} tokens exceeds the limit of {m}", show(effective))),
                        _ => {}
                    }
                }
            }
            RuleKind::ContentFilter(_) => {
                let mut items: Vec<String> = Vec::new();
                for (i, msg) in req.messages.iter().enumerate() {
                    let (found, ranges) = content(r, &msg.content);
                    for f in found {
                        if !items.contains(&f) {
                            items.push(f);
                        }
                    }
                    redactions[i].extend(ranges);
                }
                // items in config order: topics then patterns
                if let RuleKind::ContentFilter(f) = &r.kind {
                    let order: Vec<String> = f
                        .topics
                        .iter()
                        .map(|t| format!("topic `{t}`"))
                        .chain(f.patterns.iter().map(|p| format!("pattern `{}`", p.source)))
                        .collect();
                    items.sort_by_key(|i| order.iter().position(|o| o == i));
                }
                prompt_hits[pos] = items.clone();
                if !items.is_empty() {
                    out.add(pos, 0, r, format!("matched {}", items.join(", ")));
                }
            }
            RuleKind::OutputModifier(m) => {
                if let Some(note) = &m.format_note
                    && notes_seen.insert(note.clone())
                {
                    if r.action == RuleAction::Modify {
                        out.add(pos, 0, r, "added a format note".to_owned());
                        notes.push(Modification::AddFormatNote {
                            rule_id: r.id,
                            note: note.clone(),
                        });
                    } else {
                        out.add(pos, 0, r, "would add a format note".to_owned());
                    }
                }
            }
            RuleKind::RateLimit(_) => {}
        }
    }
    if let Some((to, rule_id)) = clamp {
        modifications.push(Modification::ClampMaxTokens {
            rule_id,
            from: req.max_tokens,
            to,
        });
    }
    for (message, ranges) in redactions.into_iter().enumerate() {
        if !ranges.is_empty() {
            modifications.push(Modification::RedactPrompt {
                message,
                ranges: merge(ranges),
            });
        }
    }
    modifications.extend(notes);

    let mut retry: Option<Duration> = None;
    if !out.reasons.iter().any(|(_, r)| r.1 == RuleAction::Block) {
        let rate_rules: Vec<(usize, &Rule)> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.kind, RuleKind::RateLimit(_)))
            .map(|(i, r)| (i, *r))
            .collect();
        let verdict = |r: &Rule| {
            let RuleKind::RateLimit(l) = &r.kind else {
                unreachable!()
            };
            let key = BucketKey::for_request(r.id, l, req.principal.org_id, req.principal.user_id);
            (limiter.peek(&key, l), *l)
        };
        let mut note = |out: &mut Out,
                        pos: usize,
                        r: &Rule,
                        l: stratai_guardrails::rule::RateLimit,
                        wait: Duration| {
            retry = Some(retry.map_or(wait, |x| x.max(wait)));
            out.add(
                pos,
                0,
                r,
                format!(
                    "rate limit of {} per {} reached; retry in {}s",
                    l.requests,
                    l.period.as_str(),
                    wait.as_secs().max(1)
                ),
            );
        };
        let mut refused = false;
        for (pos, r) in rate_rules
            .iter()
            .filter(|(_, r)| r.action == RuleAction::Block)
        {
            if let (RateVerdict::Limited { retry_after }, l) = verdict(r) {
                note(&mut out, *pos, r, l, retry_after);
                refused = true;
            }
        }
        if !refused {
            for (pos, r) in &rate_rules {
                if let (RateVerdict::Limited { retry_after }, l) = verdict(r) {
                    note(&mut out, *pos, r, l, retry_after);
                }
            }
        }
    }
    let (outcome, reasons) = out.finish();
    RefDecision {
        outcome,
        modifications: if outcome == Outcome::Deny {
            Vec::new()
        } else {
            modifications
        },
        retry_after: if outcome == Outcome::Deny {
            retry
        } else {
            None
        },
        reasons,
    }
}

pub fn filter_answer(rules: &[Rule], p: &Principal, tier: Option<TierId>, text: &str) -> RefAnswer {
    let rules = ordered(rules, p, tier);
    let mut out = Out {
        reasons: Vec::new(),
    };
    let mut ranges = Vec::new();
    let mut prepend = String::new();
    let mut append = String::new();
    let mut seen_p = BTreeSet::new();
    let mut seen_a = BTreeSet::new();
    for (pos, r) in rules.iter().enumerate() {
        match &r.kind {
            RuleKind::ContentFilter(_) => {
                let (items, found) = content(r, text);
                if !items.is_empty() {
                    out.add(pos, 0, r, format!("matched {}", items.join(", ")));
                }
                ranges.extend(found);
            }
            RuleKind::OutputModifier(m) => {
                let pre = m.prepend.as_ref().is_some_and(|t| seen_p.insert(t.clone()));
                let app = m.append.as_ref().is_some_and(|t| seen_a.insert(t.clone()));
                if !(pre || app) {
                    continue;
                }
                let what = match (pre, app) {
                    (true, true) => "prepend and append text",
                    (true, false) => "prepend text",
                    _ => "append text",
                };
                if r.action == RuleAction::Modify {
                    out.add(
                        pos,
                        0,
                        r,
                        what.replace("prepend", "prepended")
                            .replace("append text", "appended text"),
                    );
                    if pre {
                        prepend.push_str(m.prepend.as_deref().unwrap_or_default());
                        prepend.push_str("\n\n");
                    }
                    if app {
                        append.push_str("\n\n");
                        append.push_str(m.append.as_deref().unwrap_or_default());
                    }
                } else {
                    out.add(pos, 0, r, format!("would {what}"));
                }
            }
            _ => {}
        }
    }
    let (outcome, reasons) = out.finish();
    let body = redact(text, &merge(ranges));
    RefAnswer {
        outcome,
        reasons,
        text: (outcome != Outcome::Deny).then(|| format!("{prepend}{body}{append}")),
    }
}
