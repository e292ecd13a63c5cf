#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Reloading the policy from the stores: a full reload reads every organization; a reload
//! after one organization's change reads that organization (and the platform rules) and keeps
//! every other organization's part as the last reload read it. Over the memory store.

use std::collections::BTreeSet;

use chrono::Utc;
use serde_json::json;
use stratai_core::directory::{BillingPlan, OrgSettings, Organization, Slug};
use stratai_core::ports::{DirectoryStore, GuardrailStore, RuleAction, RuleRecord, RuleScope};
use stratai_core::tiers::default_tiers;
use stratai_core::{OrgId, RuleId, TierSlug};
use stratai_guardrails::{Guardrails, Policy};
use stratai_store::MemoryStore;

async fn org(store: &MemoryStore, slug: &str) -> OrgId {
    let basic = TierSlug::new("basic").unwrap();
    let org = Organization::new(
        slug,
        Slug::new(slug).unwrap(),
        OrgSettings::new(vec![basic.clone()], basic).unwrap(),
        BillingPlan::Business,
        Utc::now(),
    )
    .unwrap();
    store.create_org(&org).await.unwrap();
    org.id
}

fn filter(topic: &str, scope: RuleScope) -> RuleRecord {
    RuleRecord {
        id: RuleId::new(),
        name: format!("no {topic}"),
        description: None,
        rule_type: "content_filter".to_owned(),
        config: json!({ "blocked_topics": [topic] }),
        scope,
        action: RuleAction::Block,
        priority: 0,
        active: true,
        created_at: Utc::now(),
    }
}

fn ids(engine: &Guardrails) -> BTreeSet<RuleId> {
    engine.policy().rules().iter().map(|r| r.id).collect()
}

#[tokio::test]
async fn a_change_in_one_organization_reloads_that_organization() {
    let store = MemoryStore::new();
    for tier in default_tiers() {
        stratai_core::ports::TierStore::upsert_tier(&store, &tier)
            .await
            .unwrap();
    }
    let (a, b) = (org(&store, "acme").await, org(&store, "globex").await);
    let in_a = filter("alpha", RuleScope::Org { org_id: a });
    let in_b = filter("beta", RuleScope::Org { org_id: b });
    store.put_rule(a, &in_a).await.unwrap();
    store.put_rule(b, &in_b).await.unwrap();
    let engine = Guardrails::new(Policy::empty());

    // Before any full reload, a reload after a change is a full one.
    engine
        .reload_org_from_store(Some(b), &store, &store, &store)
        .await
        .unwrap();
    assert_eq!(ids(&engine), BTreeSet::from([in_a.id, in_b.id]));

    // A change in B is read by B's reload; one made in A meanwhile is not (A's part is the
    // last reload's), until A's own reload or a full one.
    let more_a = filter("gamma", RuleScope::Org { org_id: a });
    let more_b = filter("delta", RuleScope::Org { org_id: b });
    store.put_rule(a, &more_a).await.unwrap();
    store.put_rule(b, &more_b).await.unwrap();
    store.delete_rule(b, in_b.id).await.unwrap();
    let before = engine.policy().version();
    engine
        .reload_org_from_store(Some(b), &store, &store, &store)
        .await
        .unwrap();
    assert!(engine.policy().version() > before);
    assert_eq!(ids(&engine), BTreeSet::from([in_a.id, more_b.id]));
    engine
        .reload_org_from_store(Some(a), &store, &store, &store)
        .await
        .unwrap();
    assert_eq!(
        ids(&engine),
        BTreeSet::from([in_a.id, more_a.id, more_b.id])
    );

    // A platform change (`None`) reads the platform rules and no organization; a new
    // organization's first change adds its part.
    let global = filter("epsilon", RuleScope::Global);
    store.put_platform_rule(&global).await.unwrap();
    let c = org(&store, "initech").await;
    let in_c = filter("zeta", RuleScope::Org { org_id: c });
    store.put_rule(c, &in_c).await.unwrap();
    engine
        .reload_org_from_store(None, &store, &store, &store)
        .await
        .unwrap();
    assert_eq!(
        ids(&engine),
        BTreeSet::from([in_a.id, more_a.id, more_b.id, global.id])
    );
    engine
        .reload_org_from_store(Some(c), &store, &store, &store)
        .await
        .unwrap();
    assert_eq!(
        ids(&engine),
        BTreeSet::from([in_a.id, more_a.id, more_b.id, global.id, in_c.id])
    );

    // A full reload reads everything again and agrees.
    store.delete_rule(a, more_a.id).await.unwrap();
    engine
        .reload_from_store(&store, &store, &store)
        .await
        .unwrap();
    assert_eq!(
        ids(&engine),
        BTreeSet::from([in_a.id, more_b.id, global.id, in_c.id])
    );
}
