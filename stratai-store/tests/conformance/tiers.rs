//! TierStore: the catalog and subscriptions.

use chrono::Duration;
use stratai_core::tiers::TierSubscription;
use stratai_core::{ModelId, OrgId, TierId};

use super::fixtures::*;

pub async fn tier_upsert_get_list<S: Store>(store: S) {
    let t2 = new_tier(2);
    let t1 = new_tier(1);
    store.upsert_tier(&t2).await.unwrap();
    store.upsert_tier(&t1).await.unwrap();
    assert_eq!(store.get_tier(t1.id).await.unwrap(), t1);
    let listed: Vec<TierId> = store
        .list_tiers()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .filter(|id| *id == t1.id || *id == t2.id)
        .collect();
    assert_eq!(listed, vec![t1.id, t2.id], "tiers are listed in sort order");

    // Upserting replaces, including the model list: a dropped model is free again.
    let mut changed = t1.clone();
    changed.name = "Premium".to_owned();
    changed.input_rate_per_million = rust_decimal::Decimal::new(1_5, 1);
    changed.active = false;
    let dropped = changed.models.pop().unwrap();
    store.upsert_tier(&changed).await.unwrap();
    assert_eq!(store.get_tier(t1.id).await.unwrap(), changed);
    let mut taker = new_tier(3);
    taker.models.push(dropped);
    store.upsert_tier(&taker).await.unwrap();

    assert_not_found(store.get_tier(TierId::new()).await);
}

/// A tier's rate schedule is stored with it; a read gives the rate fields the rates in force
/// at the time of reading, whatever the fields held when written.
pub async fn tier_rate_schedule_round_trip<S: Store>(store: S) {
    use rust_decimal::Decimal;
    use stratai_core::tiers::RatePeriod;
    let tier = new_tier(1);
    store.upsert_tier(&tier).await.unwrap();
    let now = chrono::Utc::now();
    let past = RatePeriod {
        effective_from: now - Duration::hours(1),
        input_rate_per_million: Decimal::new(7, 0),
        output_rate_per_million: Decimal::new(11, 0),
    };
    let future = RatePeriod {
        effective_from: now + Duration::days(1),
        input_rate_per_million: Decimal::new(123_456, 4),
        output_rate_per_million: Decimal::new(20, 0),
    };
    let scheduled = tier.with_rate_change(future, now).unwrap();
    let mut stored = scheduled.clone();
    // A period already in force when read (written directly, as a store may hold it).
    stored.rate_schedule.insert(1, past);
    store.upsert_tier(&stored).await.unwrap();
    let read = store.get_tier(tier.id).await.unwrap();
    assert_eq!(read.rate_schedule, stored.rate_schedule);
    assert_eq!(
        read.rate_schedule[2].input_rate_per_million,
        Decimal::new(123_456, 4)
    );
    assert_eq!(
        (read.input_rate_per_million, read.output_rate_per_million),
        (Decimal::new(7, 0), Decimal::new(11, 0)),
        "the rates in force now"
    );
    let listed = store.list_tiers().await.unwrap();
    let listed = listed.iter().find(|t| t.id == tier.id).unwrap();
    assert_eq!(listed, &read);
}

pub async fn tier_model_and_slug_conflicts<S: Store>(store: S) {
    let a = tier(&store).await;
    let mut steals_model = new_tier(0);
    steals_model.models.push(a.models[0].clone());
    assert_conflict(store.upsert_tier(&steals_model).await);
    assert_not_found(store.get_tier(steals_model.id).await);

    let mut steals_slug = new_tier(0);
    steals_slug.slug = a.slug.clone();
    assert_conflict(store.upsert_tier(&steals_slug).await);

    let mut twice = new_tier(0);
    let model = ModelId::new(format!("dup-{}", unique())).unwrap();
    twice.models = vec![model.clone(), model];
    assert_conflict(store.upsert_tier(&twice).await);
    assert_eq!(store.get_tier(a.id).await.unwrap(), a);
}

pub async fn subscriptions<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    let t1 = tier(&store).await;
    let t2 = tier(&store).await;
    let sub = |org: OrgId, tier: TierId| TierSubscription {
        org_id: org,
        tier_id: tier,
        enabled: true,
        monthly_budget: Some(money("100")),
        enabled_at: now(),
    };
    store
        .put_subscription(a.id, &sub(a.id, t1.id))
        .await
        .unwrap();
    store
        .put_subscription(a.id, &sub(a.id, t2.id))
        .await
        .unwrap();
    let mut disabled = sub(a.id, t1.id);
    disabled.enabled = false;
    disabled.monthly_budget = None;
    disabled.enabled_at = now() + Duration::days(1);
    store.put_subscription(a.id, &disabled).await.unwrap();
    let mut expected = vec![disabled, sub(a.id, t2.id)];
    expected.sort_by_key(|s| s.tier_id);
    assert_eq!(store.list_subscriptions(a.id).await.unwrap(), expected);

    // Cross-tenant and missing references.
    assert_tenant_mismatch(store.put_subscription(b.id, &sub(a.id, t1.id)).await);
    assert!(store.list_subscriptions(b.id).await.unwrap().is_empty());
    assert_not_found(
        store
            .put_subscription(a.id, &sub(a.id, TierId::new()))
            .await,
    );
    let ghost = OrgId::new();
    assert_not_found(store.put_subscription(ghost, &sub(ghost, t1.id)).await);
    assert_eq!(store.list_subscriptions(a.id).await.unwrap(), expected);
}
