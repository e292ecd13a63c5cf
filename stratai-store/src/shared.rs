//! Pure helpers every backend shares, so the backends agree by construction: timestamp
//! precision, budget period windows, the ledger's admission and alert rules, usage filters
//! and aggregation, and paged streams.

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Timelike, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use stratai_core::budget::{Budget, BudgetAlert};
use stratai_core::directory::{Invitation, Membership, Organization, User};
use stratai_core::ports::RuleRecord;
use stratai_core::usage::{AggregateRow, Dimension, DimensionValue, UsageQuery, UsageRecord};
use stratai_core::{Money, StoreError, UserId, ValidationError};

/// Refuses a new member of a group that already has `current` members when the organization
/// allows `max` (`settings.max_users_per_group`). Every backend checks it in the transaction
/// that adds the member, with the group locked, so concurrent adds cannot pass it together.
pub(crate) fn check_group_room(group: &str, current: u64, max: u32) -> Result<(), StoreError> {
    if current >= u64::from(max) {
        Err(StoreError::Conflict(format!(
            "group `{group}` is full: it has {current} members and the organization's \
             `max_users_per_group` is {max}"
        )))
    } else {
        Ok(())
    }
}

/// Refuses `name` for `group` when another group of the organization (`others`: id and name)
/// has the same name whatever its case (Unicode lowercase, so every backend reads it the same).
pub(crate) fn check_group_name<'a>(
    group: stratai_core::GroupId,
    name: &str,
    others: impl IntoIterator<Item = (stratai_core::GroupId, &'a str)>,
) -> Result<(), StoreError> {
    let key = name.to_lowercase();
    if others
        .into_iter()
        .any(|(id, other)| id != group && other.to_lowercase() == key)
    {
        Err(group_name_taken(name))
    } else {
        Ok(())
    }
}

/// The one refusal of deleting a profile still in use, the same on every backend.
pub(crate) fn profile_in_use(members: usize, pending: usize) -> StoreError {
    StoreError::Conflict(format!(
        "the profile is given to {members} member(s) and {pending} pending invitation(s): \
         give them another profile (or none) first"
    ))
}

/// The conflict of adding a member twice, in the words of [`crate::error`]'s mapping of the
/// database's own refusal, so every path and backend reads the same.
pub(crate) fn already_member() -> StoreError {
    StoreError::Conflict("a membership with this `user_id` already exists".to_owned())
}

/// Refuses a change that would leave the platform without an active super admin: `others`
/// is how many active super admins there are besides `user`, and `user_counts` whether
/// `user` is one now and would no longer be after the change. `field` names what the change
/// sets (`active` or `platform_role`).
pub(crate) fn check_super_admin_remains(
    field: &str,
    user_counts: bool,
    others: u64,
) -> Result<(), StoreError> {
    if user_counts && others == 0 {
        Err(StoreError::Conflict(format!(
            "`{field}`: the user is the platform's last active super admin; grant another \
             super admin first"
        )))
    } else {
        Ok(())
    }
}

/// The conflict of a group name already in use in the organization.
pub(crate) fn group_name_taken(name: &str) -> StoreError {
    StoreError::Conflict(format!(
        "`name`: a group named `{name}` already exists in the organization"
    ))
}

/// `found` (the users a backend read for `asked`, in any order) in the order of `asked`,
/// each once; NotFound naming the first id of `asked` not found.
pub(crate) fn users_in_order(asked: &[UserId], found: Vec<User>) -> Result<Vec<User>, StoreError> {
    let mut by_id: std::collections::HashMap<UserId, User> =
        found.into_iter().map(|u| (u.id, u)).collect();
    let mut out = Vec::with_capacity(by_id.len());
    let mut seen = std::collections::HashSet::new();
    for id in asked {
        if !seen.insert(*id) {
            continue;
        }
        out.push(
            by_id
                .remove(id)
                .ok_or_else(|| StoreError::not_found("user", id))?,
        );
    }
    Ok(out)
}

/// Timestamps are kept to the microsecond, the precision of PostgreSQL's `timestamptz`, so a
/// value reads back equal from every backend.
pub(crate) fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = at.nanosecond() % 1_000_000_000;
    at.with_nanosecond(nanos - nanos % 1_000).unwrap_or(at)
}

/// Whether the threshold alert fires now: not yet sent this period and settled spend reached
/// `threshold x limit` (core's rule, never for zero spend).
pub(crate) fn alert_due(budget: &Budget, spent: Money, alert_sent: bool) -> bool {
    !alert_sent && budget.threshold_reached(spent)
}

/// The alert of `budget` for the period starting at `period_start`.
pub(crate) fn alert(budget: &Budget, period_start: DateTime<Utc>, spent: Money) -> BudgetAlert {
    BudgetAlert {
        budget_id: budget.id,
        org_id: budget.org_id,
        scope: budget.scope,
        period_start,
        spent,
        limit: budget.limit,
        threshold: budget.alert_threshold,
    }
}

/// Whether a record matches a usage query (the memory backend's filter; the SQL backends
/// express the same conditions in SQL).
pub(crate) fn matches(query: &UsageQuery, record: &UsageRecord) -> bool {
    query.from.is_none_or(|from| record.created_at >= from)
        && query.to.is_none_or(|to| record.created_at < to)
        && query.group_id.is_none_or(|g| record.group_id == Some(g))
        && query.user_id.is_none_or(|u| record.user_id == u)
        && query.tier_id.is_none_or(|t| record.tier_id == Some(t))
        && query.model.as_ref().is_none_or(|m| &record.model == m)
}

/// Folds records into aggregate rows keyed by the requested dimensions. Rows come out sorted
/// by key, so every backend returns them in the same order.
#[derive(Default)]
pub(crate) struct Aggregator {
    rows: BTreeMap<Vec<DimensionValue>, stratai_core::usage::UsageTotals>,
}

impl Aggregator {
    pub(crate) fn add(&mut self, group_by: &[Dimension], record: &UsageRecord) {
        let key = group_by
            .iter()
            .map(|d| match d {
                Dimension::Org => DimensionValue::Org(record.org_id),
                Dimension::Group => DimensionValue::Group(record.group_id),
                Dimension::User => DimensionValue::User(record.user_id),
                Dimension::Tier => DimensionValue::Tier(record.tier_id),
                Dimension::Model => DimensionValue::Model(record.model.clone()),
                Dimension::Endpoint => DimensionValue::Endpoint(record.endpoint.clone()),
                Dimension::Day => DimensionValue::Day(record.created_at.date_naive()),
            })
            .collect();
        let totals = self.rows.entry(key).or_default();
        totals.requests += 1;
        totals.input_tokens += u64::from(record.input_tokens);
        totals.output_tokens += u64::from(record.output_tokens);
        totals.provider_cost = totals.provider_cost + record.provider_cost;
        totals.billed_amount = totals.billed_amount + record.billed_amount;
    }

    pub(crate) fn finish(self) -> Vec<AggregateRow> {
        self.rows
            .into_iter()
            .map(|(key, totals)| AggregateRow { key, totals })
            .collect()
    }
}

/// Rows per page of a streamed export.
pub(crate) const STREAM_PAGE: u32 = 500;

/// A `'static` stream over pages fetched one at a time: `fetch(after)` returns up to a page of
/// records ordered by `(created_at, request_id)` strictly after the cursor. Nothing holds a
/// connection or lock between pages, and at most one page is in memory.
pub(crate) fn paged_stream<F, Fut>(fetch: F) -> BoxStream<'static, Result<UsageRecord, StoreError>>
where
    F: Fn(Option<Cursor>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<UsageRecord>, StoreError>> + Send + 'static,
{
    struct State<F> {
        fetch: F,
        cursor: Option<Cursor>,
        done: bool,
    }
    let state = State {
        fetch,
        cursor: None,
        done: false,
    };
    stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        match (state.fetch)(state.cursor).await {
            Ok(page) => {
                if page.len() < STREAM_PAGE as usize {
                    state.done = true;
                }
                if let Some(last) = page.last() {
                    state.cursor = Some((last.created_at, last.request_id));
                }
                let items: Vec<Result<UsageRecord, StoreError>> =
                    page.into_iter().map(Ok).collect();
                Some((stream::iter(items), state))
            }
            Err(err) => {
                state.done = true;
                Some((stream::iter(vec![Err(err)]), state))
            }
        }
    })
    .flatten()
    .boxed()
}

/// Position of a paged export: the last record's `(created_at, request_id)`.
pub(crate) type Cursor = (DateTime<Utc>, stratai_core::RequestId);

/// The text of a unit-like serde enum (`OrgRole::Admin` -> `admin`), the form stored in
/// `TEXT` columns.
pub(crate) fn enum_text<T: Serialize>(value: &T) -> Result<String, StoreError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => Ok(text),
        Ok(other) => Err(StoreError::Backend(format!(
            "enum did not serialize to text: {other}"
        ))),
        Err(err) => Err(StoreError::Backend(err.to_string())),
    }
}

/// Parses the text of a unit-like serde enum read from the database.
pub(crate) fn enum_from_text<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|err| crate::error::corrupt(what, format!("`{text}`: {err}")))
}

/// The eight guardrail rule types the schema admits (the seed's `guardrails.type` check).
pub(crate) const RULE_TYPES: [&str; 8] = [
    "model_allowlist",
    "model_denylist",
    "token_limit",
    "rate_limit",
    "content_filter",
    "output_modifier",
    "budget_limit",
    "time_restriction",
];

/// Validates a rule's type before it is stored (the SQL backends also have the check
/// constraint; this gives every backend the same error).
pub(crate) fn check_rule(rule: &RuleRecord) -> Result<(), StoreError> {
    if RULE_TYPES.contains(&rule.rule_type.as_str()) {
        Ok(())
    } else {
        Err(ValidationError::new(
            "rule_type",
            format!(
                "`{}` is not a guardrail rule type",
                rule.rule_type.escape_debug()
            ),
        )
        .into())
    }
}

/// Core's acceptance transition ([`Invitation::accept`]) applied to a copy of `invitation`:
/// the invitation after it (accepted, or marked expired when it was due) and the outcome.
/// Refusals are conflicts: the invitation's state forbids them. A store persists an expiry
/// even when it refuses, and an acceptance only together with the membership it creates.
pub(crate) fn accept_invitation(
    invitation: &Invitation,
    user: &User,
    now: DateTime<Utc>,
) -> (Invitation, Result<(), StoreError>) {
    let mut after = invitation.clone();
    let outcome = after
        .accept(&user.email, now)
        .map_err(|err| StoreError::Conflict(format!("invitation `{}`: {err}", invitation.id)));
    (after, outcome)
}

/// Whether an organization update changes nothing but what the LiteLLM sync writes back
/// (its LiteLLM id) and the timestamps: such an update emits no outbox event, so the sync
/// does not feed itself.
pub(crate) fn org_change_is_sync_only(old: &Organization, new: &Organization) -> bool {
    let comparable = Organization {
        slug: old.slug.clone(),
        litellm_org_id: old.litellm_org_id.clone(),
        created_at: old.created_at,
        updated_at: old.updated_at,
        ..new.clone()
    };
    comparable == *old
}

/// Whether a membership update changes nothing but the LiteLLM key id the sync writes back.
pub(crate) fn member_change_is_sync_only(old: &Membership, new: &Membership) -> bool {
    let comparable = Membership {
        litellm_key_id: old.litellm_key_id.clone(),
        joined_at: old.joined_at,
        ..new.clone()
    };
    comparable == *old
}

/// Checks a draft before saving it for `org`: a draft of `org` (invalid or a tenant mismatch
/// otherwise), then core's rule against the organization's `existing` invoices. Returns the
/// month's earlier drafts to delete in the same transaction.
pub(crate) fn check_invoice_draft(
    org: stratai_core::OrgId,
    existing: &[stratai_core::billing::MonthlyInvoice],
    draft: &stratai_core::billing::MonthlyInvoice,
) -> Result<Vec<stratai_core::InvoiceId>, StoreError> {
    if draft.org_id != org {
        return Err(StoreError::TenantMismatch(format!(
            "invoice belongs to organization `{}`, not `{org}`",
            draft.org_id
        )));
    }
    if draft.status != stratai_core::billing::InvoiceState::Draft {
        return Err(ValidationError::new("status", "only a draft is saved as new").into());
    }
    if existing.iter().any(|i| i.id == draft.id) {
        return Err(StoreError::Conflict(format!(
            "invoice `{}` exists",
            draft.id
        )));
    }
    stratai_core::billing::check_new_draft(existing, draft)
        .map_err(|e| StoreError::Conflict(e.to_string()))
}

/// The invoice with every timestamp at the stored precision.
pub(crate) fn norm_invoice(
    invoice: &stratai_core::billing::MonthlyInvoice,
) -> stratai_core::billing::MonthlyInvoice {
    let mut i = invoice.clone();
    i.created_at = micros(i.created_at);
    i.issued_at = i.issued_at.map(micros);
    i.paid_at = i.paid_at.map(micros);
    i.voided_at = i.voided_at.map(micros);
    i
}

/// The list order of invoices: newest month first, then by id.
pub(crate) fn sort_invoices(invoices: &mut [stratai_core::billing::MonthlyInvoice]) {
    invoices.sort_by(|a, b| b.month.cmp(&a.month).then(a.id.cmp(&b.id)));
}

/// A status change the life cycle refuses, as the store's conflict.
pub(crate) fn invoice_transition(
    invoice: &stratai_core::billing::MonthlyInvoice,
    to: stratai_core::billing::InvoiceState,
    at: DateTime<Utc>,
) -> Result<stratai_core::billing::MonthlyInvoice, StoreError> {
    stratai_core::billing::transition(invoice, to, micros(at))
        .map_err(|e| StoreError::Conflict(e.reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn micros_truncates_nanoseconds() {
        let t = at("2026-01-01T00:00:00.123456789Z");
        assert_eq!(micros(t), at("2026-01-01T00:00:00.123456Z"));
    }
}
