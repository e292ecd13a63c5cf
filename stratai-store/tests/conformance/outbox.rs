//! OutboxStore, and the outbox events directory changes write.

use chrono::{DateTime, Utc};
use stratai_core::OrgId;
use stratai_core::directory::{GroupMembership, GroupRole};
use stratai_core::ports::{OutboxEntity, OutboxEvent};
use stratai_core::tiers::TierSubscription;

use super::fixtures::*;

/// Far enough in the future that every event is available.
fn far() -> DateTime<Utc> {
    at("2100-01-01T00:00:00Z")
}

async fn pending_of<S: Store>(store: &S, org: OrgId) -> Vec<OutboxEvent> {
    store
        .pending(far(), 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.org_id == org)
        .collect()
}

/// The latest event about `entity`, if any.
async fn latest<S: Store>(store: &S, org: OrgId, entity: OutboxEntity) -> Option<OutboxEvent> {
    pending_of(store, org)
        .await
        .into_iter()
        .rev()
        .find(|e| e.entity == entity)
}

/// Asserts that the last change wrote a new event for `entity` (a higher version than
/// `before`) with the given deleted flag; returns its version.
async fn changed<S: Store>(
    store: &S,
    org: OrgId,
    entity: OutboxEntity,
    before: i64,
    deleted: bool,
) -> i64 {
    let event = latest(store, org, entity)
        .await
        .unwrap_or_else(|| panic!("no event for {entity:?}"));
    assert!(
        event.version > before,
        "{entity:?}: version {} after {before}",
        event.version
    );
    assert_eq!(event.deleted, deleted, "{entity:?}");
    assert_eq!(event.attempts, 0);
    assert_eq!(event.last_error, None);
    event.version
}

pub async fn outbox_events_for_directory_changes<S: Store>(store: S) {
    let mut o = org(&store).await;
    let org_e = OutboxEntity::Org(o.id);
    let v = changed(&store, o.id, org_e, 0, false).await;
    o.name = "Renamed".to_owned();
    store.update_org(&o).await.unwrap();
    let v = changed(&store, o.id, org_e, v, false).await;
    // Writing back what the sync produced (the LiteLLM id) emits nothing: no feedback loop.
    let before = pending_of(&store, o.id).await.len();
    o.litellm_org_id = Some(format!("litellm-{}", unique()));
    store.update_org(&o).await.unwrap();
    assert_eq!(pending_of(&store, o.id).await.len(), before);
    let t = tier(&store).await;
    store
        .put_subscription(
            o.id,
            &TierSubscription {
                org_id: o.id,
                tier_id: t.id,
                enabled: true,
                monthly_budget: None,
                enabled_at: now(),
            },
        )
        .await
        .unwrap();
    changed(&store, o.id, org_e, v, false).await;

    let u = member(&store, o.id).await;
    let member_e = OutboxEntity::Member(u.id);
    let v = changed(&store, o.id, member_e, 0, false).await;
    let mut m = store.get_member(o.id, u.id).await.unwrap();
    m.role = stratai_core::directory::OrgRole::Admin;
    store.update_member(o.id, &m).await.unwrap();
    let v = changed(&store, o.id, member_e, v, false).await;
    let before = pending_of(&store, o.id).await.len();
    m.litellm_key_id = Some("hash".to_owned());
    store.update_member(o.id, &m).await.unwrap();
    assert_eq!(pending_of(&store, o.id).await.len(), before);

    let mut g = group(&store, o.id, "Team").await;
    let group_e = OutboxEntity::Group(g.id);
    let gv = changed(&store, o.id, group_e, 0, false).await;
    g.description = Some("changed".to_owned());
    store.update_group(o.id, &g).await.unwrap();
    let gv = changed(&store, o.id, group_e, gv, false).await;
    store
        .put_group_member(
            o.id,
            &GroupMembership {
                org_id: o.id,
                group_id: g.id,
                user_id: u.id,
                role: GroupRole::Member,
                joined_at: now(),
            },
        )
        .await
        .unwrap();
    let gv = changed(&store, o.id, group_e, gv, false).await;
    store.remove_group_member(o.id, g.id, u.id).await.unwrap();
    let gv = changed(&store, o.id, group_e, gv, false).await;
    store.delete_group(o.id, g.id).await.unwrap();
    changed(&store, o.id, group_e, gv, true).await;
    store.remove_member(o.id, u.id).await.unwrap();
    changed(&store, o.id, member_e, v, true).await;

    // Positions strictly increase; every event names its organization.
    let events = pending_of(&store, o.id).await;
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
}

pub async fn outbox_delivery<S: Store>(store: S) {
    let o = org(&store).await;
    group(&store, o.id, "Team").await;
    let events = pending_of(&store, o.id).await;
    assert_eq!(events.len(), 2);
    let (first, second) = (events[0].clone(), events[1].clone());

    store.complete(first.seq).await.unwrap();
    assert_eq!(pending_of(&store, o.id).await, vec![second.clone()]);

    let retry_at = at("2099-01-01T00:00:00Z");
    store
        .fail(second.seq, "upstream timeout", retry_at)
        .await
        .unwrap();
    let not_yet: Vec<OutboxEvent> = store
        .pending(at("2098-12-31T00:00:00Z"), 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.org_id == o.id)
        .collect();
    assert!(
        not_yet.is_empty(),
        "a failed event waits until its retry time"
    );
    let retried = pending_of(&store, o.id).await;
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].attempts, 1);
    assert_eq!(retried[0].last_error.as_deref(), Some("upstream timeout"));
    assert_eq!(retried[0].available_at, retry_at);
    store.fail(second.seq, "again", retry_at).await.unwrap();
    assert_eq!(pending_of(&store, o.id).await[0].attempts, 2);

    store.dead_letter(second.seq, "gave up").await.unwrap();
    assert!(pending_of(&store, o.id).await.is_empty());
    member(&store, o.id).await;
    let third = pending_of(&store, o.id).await.remove(0);
    store.dead_letter(third.seq, "bad key").await.unwrap();
    let dead: Vec<OutboxEvent> = store
        .dead_letters(100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.org_id == o.id)
        .collect();
    assert_eq!(
        dead.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![third.seq, second.seq]
    );
    assert_eq!(dead[1].last_error.as_deref(), Some("gave up"));
    assert_eq!(dead[1].attempts, 2);

    assert_not_found(store.complete(i64::MAX).await);
    assert_not_found(store.fail(i64::MAX, "x", retry_at).await);
    assert_not_found(store.dead_letter(i64::MAX, "x").await);
}
