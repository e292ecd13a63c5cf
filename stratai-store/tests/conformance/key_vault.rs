//! The LiteLLM sync's write-backs: KeyVaultStore (sealed virtual-key secrets) and
//! DirectoryStore::set_litellm_key_id.

use chrono::{DateTime, Duration, Utc};
use stratai_core::OrgId;
use stratai_core::directory::OrgRole;
use stratai_core::ports::SealedKey;

use super::fixtures::*;

/// Pending outbox events of `org` (the write-backs must not add any).
async fn events_of<S: Store>(store: &S, org: OrgId) -> usize {
    store
        .pending(at("2100-01-01T00:00:00Z"), 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.org_id == org)
        .count()
}

fn sealed(key_id: &str, bytes: Vec<u8>, sealed_at: DateTime<Utc>) -> SealedKey {
    SealedKey {
        key_id: key_id.to_owned(),
        sealed: bytes,
        sealed_at,
    }
}

pub async fn sealed_key_put_find_replace_delete<S: Store>(store: S) {
    let o = org(&store).await;
    let u = member(&store, o.id).await;
    assert_eq!(store.find_sealed_key(o.id, u.id).await.unwrap(), None);
    let before = events_of(&store, o.id).await;

    // Every byte value survives (NUL included); the time is kept to the microsecond.
    let all_bytes: Vec<u8> = (0..=255u8).rev().collect();
    let first = sealed(
        "hash-1",
        all_bytes,
        now() + Duration::nanoseconds(123_456_789),
    );
    store.put_sealed_key(o.id, u.id, &first).await.unwrap();
    let found = store.find_sealed_key(o.id, u.id).await.unwrap().unwrap();
    assert_eq!(found.key_id, "hash-1");
    assert_eq!(found.sealed, first.sealed);
    assert_eq!(found.sealed_at, now() + Duration::microseconds(123_456));

    // A second put replaces the first (one key per membership).
    let second = sealed("hash-2", vec![7; 80], now() + Duration::hours(1));
    store.put_sealed_key(o.id, u.id, &second).await.unwrap();
    assert_eq!(
        store.find_sealed_key(o.id, u.id).await.unwrap(),
        Some(second)
    );
    // Not a directory change: no outbox event.
    assert_eq!(events_of(&store, o.id).await, before);

    assert!(store.delete_sealed_key(o.id, u.id).await.unwrap());
    assert_eq!(store.find_sealed_key(o.id, u.id).await.unwrap(), None);
    assert!(!store.delete_sealed_key(o.id, u.id).await.unwrap());
    // The membership itself is untouched.
    assert_eq!(
        store.get_member(o.id, u.id).await.unwrap(),
        membership(o.id, u.id, OrgRole::Member)
    );
}

pub async fn sealed_key_needs_a_membership_and_goes_with_it<S: Store>(store: S) {
    let o = org(&store).await;
    let stranger = user(&store).await;
    let key = sealed("hash", vec![1, 2, 3], now());
    assert_not_found(store.put_sealed_key(o.id, stranger.id, &key).await);
    assert_not_found(store.put_sealed_key(OrgId::new(), stranger.id, &key).await);
    assert_eq!(
        store.find_sealed_key(o.id, stranger.id).await.unwrap(),
        None
    );

    let u = member(&store, o.id).await;
    store.put_sealed_key(o.id, u.id, &key).await.unwrap();
    store.remove_member(o.id, u.id).await.unwrap();
    assert_eq!(store.find_sealed_key(o.id, u.id).await.unwrap(), None);
    // Joining again starts without a key.
    store
        .add_member(o.id, &membership(o.id, u.id, OrgRole::Member))
        .await
        .unwrap();
    assert_eq!(store.find_sealed_key(o.id, u.id).await.unwrap(), None);
}

pub async fn sealed_key_cross_tenant<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    // One person, member of both organizations: two keys, never mixed up.
    let u = member(&store, a.id).await;
    store
        .add_member(b.id, &membership(b.id, u.id, OrgRole::Member))
        .await
        .unwrap();
    let in_a = sealed("hash-a", vec![0xa; 40], now());
    store.put_sealed_key(a.id, u.id, &in_a).await.unwrap();
    assert_eq!(store.find_sealed_key(b.id, u.id).await.unwrap(), None);
    assert!(!store.delete_sealed_key(b.id, u.id).await.unwrap());
    let in_b = sealed("hash-b", vec![0xb; 40], now());
    store.put_sealed_key(b.id, u.id, &in_b).await.unwrap();
    assert_eq!(
        store.find_sealed_key(a.id, u.id).await.unwrap(),
        Some(in_a.clone())
    );
    assert_eq!(store.find_sealed_key(b.id, u.id).await.unwrap(), Some(in_b));
    // Leaving B removes B's key only.
    store.remove_member(b.id, u.id).await.unwrap();
    assert_eq!(store.find_sealed_key(b.id, u.id).await.unwrap(), None);
    assert_eq!(store.find_sealed_key(a.id, u.id).await.unwrap(), Some(in_a));
}

pub async fn litellm_key_id_write_back_is_targeted<S: Store>(store: S) {
    let o = org(&store).await;
    let u = member(&store, o.id).await;
    // The sync read the membership, then an admin changed it, then the sync writes back the
    // key id: the admin's change survives (update_member would have overwritten it).
    let read_by_sync = store.get_member(o.id, u.id).await.unwrap();
    let mut by_admin = read_by_sync.clone();
    by_admin.role = OrgRole::Admin;
    by_admin.monthly_budget = Some(money("12.5"));
    store.update_member(o.id, &by_admin).await.unwrap();
    let before = events_of(&store, o.id).await;

    store
        .set_litellm_key_id(o.id, u.id, Some("token-hash-1"))
        .await
        .unwrap();
    let after = store.get_member(o.id, u.id).await.unwrap();
    assert_eq!(after.litellm_key_id.as_deref(), Some("token-hash-1"));
    assert_eq!(
        after,
        stratai_core::directory::Membership {
            litellm_key_id: Some("token-hash-1".to_owned()),
            ..by_admin.clone()
        }
    );
    store
        .set_litellm_key_id(o.id, u.id, Some("token-hash-2"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_member(o.id, u.id)
            .await
            .unwrap()
            .litellm_key_id
            .as_deref(),
        Some("token-hash-2")
    );
    store.set_litellm_key_id(o.id, u.id, None).await.unwrap();
    assert_eq!(store.get_member(o.id, u.id).await.unwrap(), by_admin);
    // The sync's write-back emits nothing: no feedback loop.
    assert_eq!(events_of(&store, o.id).await, before);
}

pub async fn litellm_key_id_write_back_errors_and_tenancy<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    let u = member(&store, a.id).await;
    let stranger = user(&store).await;
    assert_not_found(store.set_litellm_key_id(a.id, stranger.id, Some("x")).await);
    assert_not_found(
        store
            .set_litellm_key_id(OrgId::new(), u.id, Some("x"))
            .await,
    );
    // B's context cannot write A's membership.
    assert_not_found(store.set_litellm_key_id(b.id, u.id, Some("x")).await);
    assert_eq!(
        store.get_member(a.id, u.id).await.unwrap().litellm_key_id,
        None
    );
}
