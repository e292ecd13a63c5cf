//! The budgets implied by `monthly_budget` fields, group capacity and group names: written in
//! the directory's own transactions, so the ledger, the capacity and the names never disagree
//! with the directory.

use std::sync::Arc;

use chrono::Duration;
use stratai_core::budget::{BudgetPeriod, BudgetScope, ImpliedBy, implied_budget_id};
use stratai_core::directory::{GroupMembership, GroupRole, OrgRole};
use stratai_core::ports::{ReserveOutcome, ReserveRequest};
use stratai_core::tiers::TierSubscription;
use stratai_core::{OrgId, RequestId, StoreError};

use super::fixtures::*;

/// Spends `amount` against `budget` (reserve, then settle) at the suite's "now".
async fn spend<S: Store>(store: &S, org: OrgId, budget: stratai_core::BudgetId, amount: &str) {
    let request = ReserveRequest {
        request_id: RequestId::new(),
        budgets: vec![budget],
        amount: money(amount),
        now: now(),
        expires_at: now() + Duration::minutes(10),
        holder: None,
    };
    let outcome = store.reserve(org, &request).await.unwrap();
    assert!(
        matches!(outcome, ReserveOutcome::Reserved(_)),
        "{outcome:?}"
    );
    store
        .settle(org, request.request_id, &[budget], money(amount), now())
        .await
        .unwrap();
}

pub async fn member_monthly_budget_is_a_ledger_budget<S: Store>(store: S) {
    let o = org(&store).await;
    let u = user(&store).await;
    let scope = BudgetScope::User(u.id);
    let id = implied_budget_id(o.id, scope);
    let mut m = membership(o.id, u.id, OrgRole::Member);
    m.monthly_budget = Some(money("5"));
    store.add_member(o.id, &m).await.unwrap();
    let b = store.get_budget(o.id, id).await.unwrap();
    assert_eq!(
        (b.scope, b.limit, b.period),
        (scope, money("5"), BudgetPeriod::Monthly)
    );
    assert!(b.hard_limit);
    assert_eq!(ImpliedBy::of(&b), Some(ImpliedBy::Member));

    // Hard like any budget: a reservation past it is refused.
    spend(&store, o.id, id, "4").await;
    let over = ReserveRequest {
        request_id: RequestId::new(),
        budgets: vec![id],
        amount: money("2"),
        now: now(),
        expires_at: now() + Duration::minutes(10),
        holder: None,
    };
    assert!(matches!(
        store.reserve(o.id, &over).await.unwrap(),
        ReserveOutcome::Refused(_)
    ));

    // Changed with the field: the same budget, its spend kept.
    m.monthly_budget = Some(money("10"));
    store.update_member(o.id, &m).await.unwrap();
    let state = store.states(o.id, &[id], now()).await.unwrap().remove(0);
    assert_eq!((state.budget.limit, state.spent), (money("10"), money("4")));
    // An update that leaves the field alone leaves the budget alone.
    m.role = OrgRole::Admin;
    store.update_member(o.id, &m).await.unwrap();
    assert_eq!(store.get_budget(o.id, id).await.unwrap(), state.budget);

    // Cleared with the field, and gone with the membership.
    m.monthly_budget = None;
    store.update_member(o.id, &m).await.unwrap();
    assert_not_found(store.get_budget(o.id, id).await);
    m.monthly_budget = Some(money("1"));
    store.update_member(o.id, &m).await.unwrap();
    assert_eq!(store.get_budget(o.id, id).await.unwrap().limit, money("1"));
    store.remove_member(o.id, u.id).await.unwrap();
    assert_not_found(store.get_budget(o.id, id).await);
    assert!(
        store
            .list_budgets(o.id)
            .await
            .unwrap()
            .iter()
            .all(|b| b.id != id)
    );
}

pub async fn group_monthly_budget_is_a_ledger_budget<S: Store>(store: S) {
    let o = org(&store).await;
    let mut g = new_group(o.id, "Marketing");
    g.monthly_budget = Some(money("50"));
    store.create_group(o.id, &g).await.unwrap();
    let id = implied_budget_id(o.id, BudgetScope::Group(g.id));
    assert_eq!(store.get_budget(o.id, id).await.unwrap().limit, money("50"));
    spend(&store, o.id, id, "7").await;
    g.monthly_budget = Some(money("60"));
    store.update_group(o.id, &g).await.unwrap();
    let state = store.states(o.id, &[id], now()).await.unwrap().remove(0);
    assert_eq!((state.budget.limit, state.spent), (money("60"), money("7")));
    g.monthly_budget = None;
    store.update_group(o.id, &g).await.unwrap();
    assert_not_found(store.get_budget(o.id, id).await);
    g.monthly_budget = Some(money("1"));
    store.update_group(o.id, &g).await.unwrap();
    store.delete_group(o.id, g.id).await.unwrap();
    assert_not_found(store.get_budget(o.id, id).await);
}

pub async fn tier_subscription_monthly_budget_is_a_ledger_budget<S: Store>(store: S) {
    let o = org(&store).await;
    let t = tier(&store).await;
    let id = implied_budget_id(o.id, BudgetScope::Tier(t.id));
    let mut sub = TierSubscription {
        org_id: o.id,
        tier_id: t.id,
        enabled: true,
        monthly_budget: Some(money("2000")),
        enabled_at: now(),
    };
    store.put_subscription(o.id, &sub).await.unwrap();
    let b = store.get_budget(o.id, id).await.unwrap();
    assert_eq!((b.scope, b.limit), (BudgetScope::Tier(t.id), money("2000")));
    sub.monthly_budget = Some(money("10"));
    store.put_subscription(o.id, &sub).await.unwrap();
    assert_eq!(store.get_budget(o.id, id).await.unwrap().limit, money("10"));
    // A disabled subscription grants nothing, so it has no budget either.
    sub.enabled = false;
    store.put_subscription(o.id, &sub).await.unwrap();
    assert_not_found(store.get_budget(o.id, id).await);
    sub.enabled = true;
    store.put_subscription(o.id, &sub).await.unwrap();
    assert!(store.get_budget(o.id, id).await.is_ok());
    sub.monthly_budget = None;
    store.put_subscription(o.id, &sub).await.unwrap();
    assert_not_found(store.get_budget(o.id, id).await);
}

/// The message of a `Conflict`.
#[track_caller]
fn conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Conflict(message)) => message,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn seat(org: OrgId, group: stratai_core::GroupId, user: stratai_core::UserId) -> GroupMembership {
    GroupMembership {
        org_id: org,
        group_id: group,
        user_id: user,
        role: GroupRole::Member,
        joined_at: now(),
    }
}

pub async fn group_capacity_holds_under_concurrent_adds<S: Store>(store: S) {
    let mut o = new_org();
    o.settings.max_users_per_group = 3;
    store.create_org(&o).await.unwrap();
    let g = group(&store, o.id, "Ops").await;
    let mut people = Vec::new();
    for _ in 0..12 {
        people.push(member(&store, o.id).await);
    }
    let store = Arc::new(store);
    let tasks: Vec<_> = people
        .iter()
        .map(|u| {
            let store = store.clone();
            let m = seat(o.id, g.id, u.id);
            tokio::spawn(async move { store.put_group_member(m.org_id, &m).await })
        })
        .collect();
    let mut joined = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => joined += 1,
            Err(StoreError::Conflict(message)) => {
                assert!(message.contains("max_users_per_group"), "{message}");
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(joined, 3);
    let members = store.list_group_members(o.id, g.id).await.unwrap();
    assert_eq!(members.len(), 3);
    // A member already in the full group can change role; an invitation into it is refused
    // whole (no membership, no group seat).
    let mut lead = seat(o.id, g.id, members[0].user_id);
    lead.role = GroupRole::Lead;
    store.put_group_member(o.id, &lead).await.unwrap();
    let invitee = user(&*store).await;
    let invitation = new_invitation(o.id, &invitee.email, vec![g.id]);
    store.create_invitation(o.id, &invitation).await.unwrap();
    assert_conflict(
        store
            .accept_invitation(&invitation.token_hash, &invitee, now())
            .await,
    );
    assert_not_found(store.get_member(o.id, invitee.id).await);
    assert_eq!(store.list_group_members(o.id, g.id).await.unwrap().len(), 3);
}

pub async fn group_names_are_unique_whatever_their_case<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    group(&store, a.id, "Research").await;
    assert_eq!(
        conflict(store.create_group(a.id, &new_group(a.id, "RESEARCH")).await),
        "`name`: a group named `RESEARCH` already exists in the organization"
    );
    // Unicode case too, the same on every backend.
    group(&store, a.id, "Équipe").await;
    assert_conflict(store.create_group(a.id, &new_group(a.id, "équipe")).await);
    let mut legal = group(&store, a.id, "Legal").await;
    legal.name = "research".to_owned();
    assert_conflict(store.update_group(a.id, &legal).await);
    legal.name = "LEGAL".to_owned();
    store.update_group(a.id, &legal).await.unwrap();
    group(&store, b.id, "research").await;
}

pub async fn unique_conflicts_name_the_field<S: Store>(store: S) {
    let a = org(&store).await;
    let mut same_slug = new_org();
    same_slug.slug = a.slug.clone();
    assert_eq!(
        conflict(store.create_org(&same_slug).await),
        "an organization with this `slug` already exists"
    );
    let u = user(&store).await;
    let mut same_email = new_user();
    same_email.email = u.email.clone();
    assert_eq!(
        conflict(store.create_user(&same_email).await),
        "a user with this `email` already exists"
    );
    store
        .add_member(a.id, &membership(a.id, u.id, OrgRole::Member))
        .await
        .unwrap();
    assert_eq!(
        conflict(
            store
                .add_member(a.id, &membership(a.id, u.id, OrgRole::Member))
                .await
        ),
        "a membership with this `user_id` already exists"
    );
}
