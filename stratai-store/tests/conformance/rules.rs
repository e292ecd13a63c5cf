//! GuardrailStore: platform rules and organization rules.

use stratai_core::ports::{RuleAction, RuleScope};
use stratai_core::{GroupId, RuleId, UserId};

use super::fixtures::*;

pub async fn platform_rules<S: Store>(store: S) {
    let t = tier(&store).await;
    let global = rule(RuleScope::Global, 10);
    let tiered = rule(
        RuleScope::Tier {
            org_id: None,
            tier_id: t.id,
        },
        20,
    );
    store.put_platform_rule(&global).await.unwrap();
    store.put_platform_rule(&tiered).await.unwrap();
    let mine = |rules: Vec<stratai_core::ports::RuleRecord>| -> Vec<RuleId> {
        rules
            .into_iter()
            .map(|r| r.id)
            .filter(|id| *id == global.id || *id == tiered.id)
            .collect()
    };
    assert_eq!(
        mine(store.list_platform_rules().await.unwrap()),
        vec![tiered.id, global.id],
        "higher priority first"
    );
    let mut changed = global.clone();
    changed.action = RuleAction::Warn;
    changed.active = false;
    changed.config = serde_json::json!({ "max_output_tokens": 5 });
    store.put_platform_rule(&changed).await.unwrap();
    assert!(
        store
            .list_platform_rules()
            .await
            .unwrap()
            .contains(&changed)
    );

    store.delete_platform_rule(global.id).await.unwrap();
    assert_not_found(store.delete_platform_rule(global.id).await);
    assert_eq!(
        mine(store.list_platform_rules().await.unwrap()),
        vec![tiered.id]
    );
    // Platform rules are not any organization's.
    let o = org(&store).await;
    assert!(store.list_org_rules(o.id).await.unwrap().is_empty());
    assert_not_found(store.get_rule(o.id, tiered.id).await);
    assert_not_found(store.delete_rule(o.id, tiered.id).await);
}

pub async fn org_rules_crud_and_order<S: Store>(store: S) {
    let o = org(&store).await;
    let g = group(&store, o.id, "Support").await;
    let u = member(&store, o.id).await;
    let t = tier(&store).await;
    let r_org = rule(RuleScope::Org { org_id: o.id }, 1);
    let r_group = rule(
        RuleScope::Group {
            org_id: o.id,
            group_id: g.id,
        },
        5,
    );
    let r_user = rule(
        RuleScope::User {
            org_id: o.id,
            user_id: u.id,
        },
        5,
    );
    let r_tier = rule(
        RuleScope::Tier {
            org_id: Some(o.id),
            tier_id: t.id,
        },
        9,
    );
    for r in [&r_org, &r_group, &r_user, &r_tier] {
        store.put_rule(o.id, r).await.unwrap();
    }
    assert_eq!(store.get_rule(o.id, r_user.id).await.unwrap(), r_user);
    let mut same_priority = [r_group.id, r_user.id];
    same_priority.sort();
    let expected = vec![r_tier.id, same_priority[0], same_priority[1], r_org.id];
    let listed: Vec<RuleId> = store
        .list_org_rules(o.id)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, expected, "priority descending, then id");

    let mut changed = r_org.clone();
    changed.priority = 100;
    changed.name = "renamed".to_owned();
    store.put_rule(o.id, &changed).await.unwrap();
    assert_eq!(store.get_rule(o.id, r_org.id).await.unwrap(), changed);
    assert_eq!(store.list_org_rules(o.id).await.unwrap()[0], changed);

    store.delete_rule(o.id, r_group.id).await.unwrap();
    assert_not_found(store.get_rule(o.id, r_group.id).await);
    assert_not_found(store.delete_rule(o.id, r_group.id).await);
    assert_eq!(store.list_org_rules(o.id).await.unwrap().len(), 3);
    // An organization's rule is not a platform rule.
    assert_not_found(store.delete_platform_rule(r_org.id).await);
}

pub async fn rules_cross_tenant<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    let ga = group(&store, a.id, "A group").await;
    let ua = member(&store, a.id).await;
    let ra = rule(RuleScope::Org { org_id: a.id }, 1);
    store.put_rule(a.id, &ra).await.unwrap();

    // B's context never sees or changes A's rule.
    assert_not_found(store.get_rule(b.id, ra.id).await);
    assert_not_found(store.delete_rule(b.id, ra.id).await);
    assert!(store.list_org_rules(b.id).await.unwrap().is_empty());
    assert_tenant_mismatch(store.put_rule(b.id, &ra).await);
    let mut takeover = ra.clone();
    takeover.scope = RuleScope::Org { org_id: b.id };
    assert_conflict(store.put_rule(b.id, &takeover).await);
    // Nor a platform rule.
    let platform = rule(RuleScope::Global, 1);
    store.put_platform_rule(&platform).await.unwrap();
    let mut platform_as_b = platform.clone();
    platform_as_b.scope = RuleScope::Org { org_id: b.id };
    assert_conflict(store.put_rule(b.id, &platform_as_b).await);
    assert!(
        store
            .list_platform_rules()
            .await
            .unwrap()
            .contains(&platform)
    );
    // Nor may a platform write take over an organization's rule id.
    let mut platform_takeover = ra.clone();
    platform_takeover.scope = RuleScope::Global;
    assert_conflict(store.put_platform_rule(&platform_takeover).await);
    assert_eq!(store.get_rule(a.id, ra.id).await.unwrap(), ra);

    // B can not attach rules to A's group or member.
    let on_a_group = rule(
        RuleScope::Group {
            org_id: b.id,
            group_id: ga.id,
        },
        1,
    );
    assert_not_found(store.put_rule(b.id, &on_a_group).await);
    let on_a_member = rule(
        RuleScope::User {
            org_id: b.id,
            user_id: ua.id,
        },
        1,
    );
    assert_not_found(store.put_rule(b.id, &on_a_member).await);
    assert!(store.list_org_rules(b.id).await.unwrap().is_empty());
}

pub async fn rule_validation<S: Store>(store: S) {
    let o = org(&store).await;
    // Organization rules are scoped to their organization; platform rules to none.
    assert_tenant_mismatch(store.put_rule(o.id, &rule(RuleScope::Global, 1)).await);
    assert_tenant_mismatch(
        store
            .put_platform_rule(&rule(RuleScope::Org { org_id: o.id }, 1))
            .await,
    );
    let mut bad_type = rule(RuleScope::Org { org_id: o.id }, 1);
    bad_type.rule_type = "mind_reading".to_owned();
    assert_invalid(store.put_rule(o.id, &bad_type).await);
    assert_not_found(
        store
            .put_rule(
                o.id,
                &rule(
                    RuleScope::Group {
                        org_id: o.id,
                        group_id: GroupId::new(),
                    },
                    1,
                ),
            )
            .await,
    );
    assert_not_found(
        store
            .put_rule(
                o.id,
                &rule(
                    RuleScope::User {
                        org_id: o.id,
                        user_id: UserId::new(),
                    },
                    1,
                ),
            )
            .await,
    );
    assert!(store.list_org_rules(o.id).await.unwrap().is_empty());
}
