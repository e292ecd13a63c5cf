//! Usage records for tests: [`usage_record`] gives one with plausible defaults, each builder
//! method changes one thing, so a test names only what it is about (and a new field of
//! `UsageRecord` is added here once, not in every crate's tests).

use chrono::{DateTime, Utc};
use stratai_core::ids::{GroupId, ModelId, OrgId, RequestId, TierId, UserId};
use stratai_core::money::Money;
use stratai_core::usage::{UsageRecord, UsageStatus};

/// A successful chat of `user` in `org` now: a new request id, `gpt-4o-mini`, 1,000 input and
/// 500 output tokens, nothing spent, endpoint `chat`, no group, tier or LiteLLM id.
#[track_caller]
pub fn usage_record(org: OrgId, user: UserId) -> UsageRecordBuilder {
    UsageRecordBuilder(UsageRecord {
        request_id: RequestId::new(),
        org_id: org,
        group_id: None,
        user_id: user,
        tier_id: None,
        model: model("gpt-4o-mini"),
        input_tokens: 1_000,
        output_tokens: 500,
        provider_cost: Money::ZERO,
        billed_amount: Money::ZERO,
        overage: Money::ZERO,
        litellm_request_id: None,
        conversation_id: None,
        endpoint: "chat".to_owned(),
        status: UsageStatus::Success,
        created_at: Utc::now(),
        lease_id: None,
    })
}

/// Builds a [`UsageRecord`]; see [`usage_record`].
#[derive(Clone, Debug)]
#[must_use]
pub struct UsageRecordBuilder(UsageRecord);

// Test support: a malformed literal (model id, amount) is the calling test's bug, reported at
// its line (`track_caller`).
#[allow(clippy::expect_used)]
#[track_caller]
fn model(id: &str) -> ModelId {
    ModelId::new(id).expect("a valid model id")
}

#[allow(clippy::expect_used)]
#[track_caller]
fn money(amount: &str) -> Money {
    Money::parse(amount).expect("a non-negative amount")
}

/// An amount a builder takes: dollars as text (`"0.001"`) or [`Money`].
pub trait Amount {
    /// The amount.
    fn into_money(self) -> Money;
}

impl Amount for &str {
    #[track_caller]
    fn into_money(self) -> Money {
        money(self)
    }
}

impl Amount for Money {
    fn into_money(self) -> Money {
        self
    }
}

impl UsageRecordBuilder {
    /// The record.
    pub fn build(self) -> UsageRecord {
        self.0
    }

    /// The request id.
    pub fn request_id(mut self, id: RequestId) -> Self {
        self.0.request_id = id;
        self
    }

    /// The group the request is attributed to.
    pub fn group(mut self, group: GroupId) -> Self {
        self.0.group_id = Some(group);
        self
    }

    /// The tier that granted the model.
    pub fn tier(mut self, tier: TierId) -> Self {
        self.0.tier_id = Some(tier);
        self
    }

    /// The model.
    #[track_caller]
    pub fn model(mut self, id: &str) -> Self {
        self.0.model = model(id);
        self
    }

    /// Input and output tokens.
    pub fn tokens(mut self, input: u32, output: u32) -> Self {
        self.0.input_tokens = input;
        self.0.output_tokens = output;
        self
    }

    /// What the provider charged (`"0.001"` dollars, or [`Money`]).
    #[track_caller]
    pub fn cost(mut self, amount: impl Amount) -> Self {
        self.0.provider_cost = amount.into_money();
        self
    }

    /// What the member was billed.
    #[track_caller]
    pub fn billed(mut self, amount: impl Amount) -> Self {
        self.0.billed_amount = amount.into_money();
        self
    }

    /// Cost and bill both (no margin).
    #[track_caller]
    pub fn spent(mut self, amount: impl Amount) -> Self {
        let amount = amount.into_money();
        self.0.provider_cost = amount;
        self.0.billed_amount = amount;
        self
    }

    /// LiteLLM's id of the call.
    pub fn litellm_request_id(mut self, id: impl Into<String>) -> Self {
        self.0.litellm_request_id = Some(id.into());
        self
    }

    /// The endpoint.
    pub fn endpoint(mut self, endpoint: &str) -> Self {
        endpoint.clone_into(&mut self.0.endpoint);
        self
    }

    /// How the request ended.
    pub fn status(mut self, status: UsageStatus) -> Self {
        self.0.status = status;
        self
    }

    /// When it was made.
    pub fn at(mut self, created_at: DateTime<Utc>) -> Self {
        self.0.created_at = created_at;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_builder_changes_only_what_it_is_told() {
        let (org, user) = (OrgId::new(), UserId::new());
        let default = usage_record(org, user).build();
        let built = usage_record(org, user)
            .spent("0.25")
            .model("mock-gpt")
            .tokens(1, 2)
            .status(UsageStatus::Partial)
            .build();
        assert_eq!(built.provider_cost, money("0.25"));
        assert_eq!(built.billed_amount, money("0.25"));
        assert_eq!(built.model.as_str(), "mock-gpt");
        assert_eq!((built.input_tokens, built.output_tokens), (1, 2));
        assert_eq!(built.status, UsageStatus::Partial);
        assert_eq!(
            (built.org_id, built.user_id, &built.endpoint),
            (default.org_id, default.user_id, &default.endpoint)
        );
        assert_eq!(default.billed_amount, Money::ZERO);
        assert_ne!(built.request_id, default.request_id);
    }
}
