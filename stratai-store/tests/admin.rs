#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]
//! The administration's services (`stratai_store::admin`) on the memory backend, over the
//! first-start seed: what each refuses and what it writes. The server's API tests cover the
//! same services on every backend through HTTP.

use chrono::{TimeDelta, Utc};
use rust_decimal::Decimal;
use stratai_core::OpError;
use stratai_core::tiers::admin::{ChangeRates, UpdateTier};
use stratai_store::Stores;
use stratai_store::admin::tiers;
use stratai_store::seed::{SeedReport, seed};

async fn seeded() -> (Stores, SeedReport) {
    let stores = Stores::memory();
    let report = seed(&stores, "admin@localhost").await.unwrap();
    (stores, report)
}

fn fields(e: OpError) -> Vec<String> {
    match e {
        OpError::Invalid(f) => f.into_iter().map(|f| f.field).collect(),
        other => panic!("not a validation error: {other:?}"),
    }
}

#[tokio::test]
async fn a_tier_cannot_take_a_model_of_another_tier() {
    let (stores, _) = seeded().await;
    let catalog = stores.tiers.list_tiers().await.unwrap();
    let (first, second) = (&catalog[0], &catalog[1]);
    let edit = UpdateTier {
        models: Some(vec![
            first.models[0].to_string(),
            second.models[0].to_string(),
        ]),
        ..UpdateTier::default()
    };
    let refused = tiers::update_tier(stores.tiers.as_ref(), first.id, edit)
        .await
        .unwrap_err();
    assert_eq!(fields(refused), ["models[1]"]);
    assert_eq!(stores.tiers.get_tier(first.id).await.unwrap(), *first);

    let edit = UpdateTier {
        name: Some("Entry".into()),
        ..UpdateTier::default()
    };
    let updated = tiers::update_tier(stores.tiers.as_ref(), first.id, edit)
        .await
        .unwrap();
    assert_eq!(updated.name, "Entry");
}

#[tokio::test]
async fn rates_change_from_the_time_stated_and_the_past_is_refused() {
    let (stores, _) = seeded().await;
    let tier = stores.tiers.list_tiers().await.unwrap()[0].clone();
    let now = Utc::now();
    let later = now + TimeDelta::hours(1);
    let change = ChangeRates {
        input_rate_per_million: Decimal::ONE,
        output_rate_per_million: Decimal::TWO,
        effective_from: Some(later),
    };
    let changed = tiers::change_rates(
        stores.tiers.as_ref(),
        tier.id,
        &change,
        now,
        TimeDelta::zero(),
    )
    .await
    .unwrap();
    assert_eq!(changed.effective_from, later);
    assert_eq!(changed.tier.rates_at(later), (Decimal::ONE, Decimal::TWO));
    assert_eq!(
        changed.tier.rates_at(now),
        (tier.input_rate_per_million, tier.output_rate_per_million)
    );
    let past = ChangeRates {
        effective_from: Some(now - TimeDelta::hours(1)),
        ..change
    };
    let refused = tiers::change_rates(
        stores.tiers.as_ref(),
        tier.id,
        &past,
        now,
        TimeDelta::zero(),
    )
    .await
    .unwrap_err();
    assert_eq!(fields(refused), ["effective_from"]);
}

#[tokio::test]
async fn tiers_outside_the_subscription_are_named() {
    let (stores, report) = seeded().await;
    let org = report.internal_org.id;
    let catalog = stores.tiers.list_tiers().await.unwrap();
    let slugs: Vec<_> = catalog.iter().map(|t| t.slug.clone()).collect();
    tiers::check_within_subscription(
        stores.directory.as_ref(),
        stores.tiers.as_ref(),
        org,
        &slugs,
        "allowed_tiers",
    )
    .await
    .unwrap();
    let mut sub = stores.tiers.list_subscriptions(org).await.unwrap()[0].clone();
    sub.enabled = false;
    stores.tiers.put_subscription(org, &sub).await.unwrap();
    let position = catalog.iter().position(|t| t.id == sub.tier_id).unwrap();
    let refused = tiers::check_within_subscription(
        stores.directory.as_ref(),
        stores.tiers.as_ref(),
        org,
        &slugs,
        "allowed_tiers",
    )
    .await
    .unwrap_err();
    assert_eq!(fields(refused), [format!("allowed_tiers[{position}]")]);
    let unknown = stratai_core::TierSlug::new("nope").unwrap();
    let refused = tiers::check_known(stores.tiers.as_ref(), &[unknown], "default_tiers")
        .await
        .unwrap_err();
    assert_eq!(fields(refused), ["default_tiers[0]"]);
}
