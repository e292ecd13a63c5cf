//! Decisions are values: an outcome, the changes made, and the reasons, each naming its rule.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use stratai_core::RuleId;
use stratai_core::gateway::{ChatMessage, ChatRequest};
use stratai_core::ports::RuleAction;

use crate::rule::{Level, Rule, RuleType, action_str};

/// What happens to the request (or answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Let through (possibly modified, possibly logged).
    Allow,
    /// Let through with a warning.
    Warn,
    /// Refused.
    Deny,
}

/// Why: one rule that matched, with a human message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// The rule.
    pub rule_id: RuleId,
    /// Its name.
    pub rule_name: String,
    /// Its level.
    pub level: Level,
    /// Its type.
    pub rule_type: RuleType,
    /// Its action.
    pub action: RuleAction,
    /// What matched, e.g. ``matched topic `acme` ``.
    pub detail: String,
}

impl Reason {
    pub(crate) fn new(rule: &Rule, detail: String) -> Self {
        Self {
            rule_id: rule.id,
            rule_name: rule.name.clone(),
            level: rule.level,
            rule_type: rule.rule_type(),
            action: rule.action,
            detail,
        }
    }
}

impl fmt::Display for Reason {
    /// `blocked by org rule 'no competitor talk': matched topic `acme``.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.action {
            RuleAction::Block => "blocked by",
            RuleAction::Modify => "modified by",
            RuleAction::Warn => "warning from",
            RuleAction::Log => "logged by",
        };
        write!(
            f,
            "{verb} {} rule '{}': {}",
            self.level, self.rule_name, self.detail
        )
    }
}

/// A change a decision makes to the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Modification {
    /// `max_tokens` lowered (or set, when the request had none).
    ClampMaxTokens {
        /// The rule with the lowest bound.
        rule_id: RuleId,
        /// What the request asked for (`None`: no bound).
        from: Option<u32>,
        /// The new bound.
        to: u32,
    },
    /// Matches of `modify` content filters replaced by `[redacted]` in one message.
    RedactPrompt {
        /// Index of the message in the request.
        message: usize,
        /// Byte ranges replaced, ascending and disjoint.
        ranges: Vec<Range<usize>>,
    },
    /// A format note added to the request as a system message.
    AddFormatNote {
        /// The output modifier rule.
        rule_id: RuleId,
        /// The note.
        note: String,
    },
    /// Matches of `modify` content filters replaced by `[redacted]` in the answer.
    RedactAnswer {
        /// How many ranges were replaced.
        ranges: usize,
    },
    /// Text put before the answer.
    Prepend {
        /// The output modifier rule.
        rule_id: RuleId,
    },
    /// Text put after the answer.
    Append {
        /// The output modifier rule.
        rule_id: RuleId,
    },
}

/// The replacement of redacted text.
pub const REDACTED: &str = "[redacted]";

/// A guardrail decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Allow, warn or deny.
    pub outcome: Outcome,
    /// Changes to make to the request or answer (empty when denied).
    pub modifications: Vec<Modification>,
    /// Every rule that matched, ordered by level, then priority (higher first), then creation.
    pub reasons: Vec<Reason>,
    /// When a rate limit refused: how long until it would allow.
    pub retry_after: Option<Duration>,
    /// The instant the decision was made for.
    pub at: DateTime<Utc>,
}

impl Decision {
    /// Builds a decision from matched reasons: deny when any matched rule blocks, warn when any
    /// warns, allow otherwise. Reasons are sorted into their documented order.
    pub(crate) fn from_parts(
        mut reasons: Vec<(ReasonKey, Reason)>,
        modifications: Vec<Modification>,
        retry_after: Option<Duration>,
        at: DateTime<Utc>,
    ) -> Self {
        reasons.sort_by_key(|r| r.0);
        let outcome = outcome_of(reasons.iter().map(|(_, r)| r.action));
        let modifications = if outcome == Outcome::Deny {
            Vec::new()
        } else {
            modifications
        };
        Decision {
            outcome,
            modifications,
            reasons: reasons.into_iter().map(|(_, r)| r).collect(),
            retry_after: if outcome == Outcome::Deny {
                retry_after
            } else {
                None
            },
            at,
        }
    }

    /// Whether the request may go ahead.
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        self.outcome != Outcome::Deny
    }

    /// The reasons that decided a denial (the blocking ones).
    pub fn blocking_reasons(&self) -> impl Iterator<Item = &Reason> {
        self.reasons
            .iter()
            .filter(|r| r.action == RuleAction::Block)
    }

    /// A readable, multi-line explanation: outcome, changes, reasons.
    #[must_use]
    pub fn explain(&self) -> String {
        let mut out = format!(
            "{} at {}",
            match self.outcome {
                Outcome::Allow => "allow",
                Outcome::Warn => "warn",
                Outcome::Deny => "deny",
            },
            self.at.format("%Y-%m-%d %H:%M UTC")
        );
        if let Some(wait) = self.retry_after {
            out.push_str(&format!(" (retry after {}s)", wait.as_secs().max(1)));
        }
        for m in &self.modifications {
            out.push_str("\n  change: ");
            out.push_str(&match m {
                Modification::ClampMaxTokens { from, to, .. } => match from {
                    Some(from) => format!("max_tokens {from} -> {to}"),
                    None => format!("max_tokens unset -> {to}"),
                },
                Modification::RedactPrompt { message, ranges } => {
                    format!("redact {} span(s) of message {message}", ranges.len())
                }
                Modification::AddFormatNote { note, .. } => format!("format note: {note}"),
                Modification::RedactAnswer { ranges } => {
                    format!("redact {ranges} span(s) of the answer")
                }
                Modification::Prepend { .. } => "prepend text".to_owned(),
                Modification::Append { .. } => "append text".to_owned(),
            });
        }
        for r in &self.reasons {
            out.push_str("\n  ");
            out.push_str(&format!(
                "[{} {} {}] {r}",
                r.level,
                r.rule_type,
                action_str(r.action)
            ));
        }
        out
    }

    /// Applies the request changes (clamps, prompt redactions, format notes) to `request`.
    /// Does nothing to a denied request.
    pub fn apply_to(&self, request: &mut ChatRequest) {
        if self.outcome == Outcome::Deny {
            return;
        }
        let mut notes = Vec::new();
        for m in &self.modifications {
            match m {
                Modification::ClampMaxTokens { to, .. } => request.max_tokens = Some(*to),
                Modification::RedactPrompt { message, ranges } => {
                    if let Some(msg) = request.messages.get_mut(*message) {
                        msg.content = redact(&msg.content, ranges);
                    }
                }
                Modification::AddFormatNote { note, .. } => notes.push(note.as_str()),
                Modification::RedactAnswer { .. }
                | Modification::Prepend { .. }
                | Modification::Append { .. } => {}
            }
        }
        if !notes.is_empty() {
            request.messages.insert(
                0,
                ChatMessage {
                    role: "system".to_owned(),
                    content: notes.join("\n"),
                },
            );
        }
    }
}

/// Replaces each range (ascending, disjoint, on char boundaries) by [`REDACTED`].
pub(crate) fn redact(text: &str, ranges: &[Range<usize>]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for r in ranges {
        if r.start < at || r.end > text.len() {
            continue;
        }
        out.push_str(text.get(at..r.start).unwrap_or_default());
        out.push_str(REDACTED);
        at = r.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    out
}

/// Deny if any action blocks, warn if any warns, allow otherwise.
pub(crate) fn outcome_of(actions: impl Iterator<Item = RuleAction>) -> Outcome {
    let mut outcome = Outcome::Allow;
    for action in actions {
        match action {
            RuleAction::Block => return Outcome::Deny,
            RuleAction::Warn => outcome = Outcome::Warn,
            RuleAction::Modify | RuleAction::Log => {}
        }
    }
    outcome
}

/// Sort key of reasons: level, priority (higher first), creation, id, then the check's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ReasonKey {
    pub(crate) rule: RuleOrder,
    pub(crate) check: u8,
}

/// The documented order of rules: level, then priority (higher first), then creation, then id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RuleOrder {
    level: Level,
    neg_priority: i64,
    created_at: DateTime<Utc>,
    id: RuleId,
}

impl RuleOrder {
    pub(crate) fn of(rule: &Rule) -> Self {
        Self {
            level: rule.level,
            neg_priority: -i64::from(rule.priority),
            created_at: rule.created_at,
            id: rule.id,
        }
    }
}
