#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod admin;
pub mod decision;
pub mod engine;
pub mod gatekeeper;
pub mod lease;
pub mod plan;
pub mod policy;
pub mod post;
pub mod pre;
pub mod rate;
pub mod rule;
#[cfg(feature = "runtime")]
pub mod runtime;

pub use decision::{Decision, Modification, Outcome, Reason};
pub use engine::Guardrails;
pub use gatekeeper::{
    Admission, Caller, Completion, Gatekeeper, GatekeeperConfig, MemberSnapshot, Refusal,
    Unrecorded, sync_rule_budgets,
};
pub use lease::{LeaseConfig, LeasedLedger};
pub use plan::{Draft, Plan, PlanRequest, Planner, Spend};
pub use policy::{
    BudgetSubject, EffectivePolicy, Policy, PolicyError, PolicyHolder, Principal, RuleBudget,
    SpendSnapshot,
};
pub use post::{AnswerStream, FilteredAnswer, StreamEnd, StreamStep};
pub use pre::{PendingPre, PreRequest, RateCheck, RateQuery, estimate_tokens};
pub use rate::{BucketKey, FetchedVerdicts, GovernorRateLimiter, RateLimiter, RateVerdict};
pub use rule::{KnownScopes, Level, Rule, RuleError, RuleKind, RuleType};
#[cfg(feature = "runtime")]
pub use runtime::{Runtime, RuntimeHandle, RuntimeStores};
