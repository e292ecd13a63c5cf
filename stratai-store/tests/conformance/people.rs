//! Platform user management: listing and searching people, deactivation (with the outbox
//! events that block their LiteLLM keys) and the super admin role, of which at least one
//! active holder always remains.
//!
//! The super admin bodies count every super admin of the database, so they rely on each
//! instantiation having a database of its own (as the suite's backends do).

use std::collections::BTreeSet;

use stratai_core::directory::{Email, PlatformRole, User};
use stratai_core::ports::{OutboxEntity, UserQuery};
use stratai_core::{OrgId, StoreError, UserId};

use super::fixtures::*;

fn query(search: Option<&str>, after: Option<&Email>, limit: u32) -> UserQuery {
    UserQuery {
        search: search.map(str::to_owned),
        after: after.cloned(),
        limit,
    }
}

async fn tagged_user<S: Store>(store: &S, email: &str, name: Option<&str>) -> User {
    let mut user = new_user();
    user.email = Email::new(email).unwrap();
    user.name = name.map(str::to_owned);
    store.create_user(&user).await.unwrap();
    user
}

pub async fn users_list_search_and_pages<S: Store>(store: S) {
    let tag = unique();
    // Email order differs from creation order; one is found by name only, in another case.
    let c = tagged_user(&store, &format!("c-{tag}@example.com"), Some("Cyd")).await;
    let a = tagged_user(&store, &format!("a-{tag}@example.com"), None).await;
    let z_email = format!("zed-{}@elsewhere.example", unique());
    let z = tagged_user(&store, &z_email, Some(&format!("Zed {tag}"))).await;
    let b = tagged_user(&store, &format!("b-{tag}@example.com"), Some("Bo")).await;
    let other = user(&store).await;

    let all = store
        .list_users(&query(Some(&tag), None, 100))
        .await
        .unwrap();
    let ids: Vec<UserId> = all.iter().map(|u| u.id).collect();
    assert_eq!(
        ids,
        [a.id, b.id, c.id, z.id],
        "email order, search by email or name"
    );
    assert!(!ids.contains(&other.id));
    assert_eq!(all[0], a, "users read back whole");

    // The search ignores the case of ASCII letters, in names and addresses.
    let upper = tag.to_ascii_uppercase();
    let found = store
        .list_users(&query(Some(&format!("ZED {upper}")), None, 100))
        .await
        .unwrap();
    assert_eq!(found.iter().map(|u| u.id).collect::<Vec<_>>(), [z.id]);
    let found = store
        .list_users(&query(Some(&format!("B-{upper}@")), None, 100))
        .await
        .unwrap();
    assert_eq!(found.iter().map(|u| u.id).collect::<Vec<_>>(), [b.id]);

    // Pages of two: the cursor is the last email of the previous page.
    let first = store.list_users(&query(Some(&tag), None, 2)).await.unwrap();
    assert_eq!(first.iter().map(|u| u.id).collect::<Vec<_>>(), [a.id, b.id]);
    let second = store
        .list_users(&query(Some(&tag), Some(&first[1].email), 2))
        .await
        .unwrap();
    assert_eq!(
        second.iter().map(|u| u.id).collect::<Vec<_>>(),
        [c.id, z.id]
    );
    let third = store
        .list_users(&query(Some(&tag), Some(&second[1].email), 2))
        .await
        .unwrap();
    assert!(third.is_empty());

    // Without a search, every user is listed (the other one too), in email order.
    let everyone = store.list_users(&query(None, None, 10_000)).await.unwrap();
    assert!(everyone.iter().any(|u| u.id == other.id));
    assert!(everyone.windows(2).all(|w| w[0].email < w[1].email));
    let nothing = store
        .list_users(&query(Some(&format!("absent-{tag}")), None, 100))
        .await
        .unwrap();
    assert!(nothing.is_empty());
}

pub async fn user_update_keeps_role_and_activity<S: Store>(store: S) {
    let u = user(&store).await;
    let mut stale = u.clone();
    stale.platform_role = PlatformRole::SuperAdmin;
    stale.active = false;
    stale.name = Some("Grace".to_owned());
    store.update_user(&stale).await.unwrap();
    let stored = store.get_user(u.id).await.unwrap();
    assert_eq!(stored.name.as_deref(), Some("Grace"));
    assert_eq!(stored.platform_role, PlatformRole::User);
    assert!(stored.active);
}

/// The Member events of `user` in `org` (pending, any version).
async fn member_events<S: Store>(store: &S, org: OrgId, user: UserId) -> Vec<i64> {
    store
        .pending(at("2100-01-01T00:00:00Z"), 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.org_id == org && e.entity == OutboxEntity::Member(user) && !e.deleted)
        .map(|e| e.version)
        .collect()
}

pub async fn deactivation_writes_member_events<S: Store>(store: S) {
    let o1 = org(&store).await;
    let o2 = org(&store).await;
    let u = member(&store, o1.id).await;
    store
        .add_member(
            o2.id,
            &membership(o2.id, u.id, stratai_core::directory::OrgRole::Member),
        )
        .await
        .unwrap();
    let bystander = member(&store, o1.id).await;
    let before1 = member_events(&store, o1.id, u.id).await.len();
    let before2 = member_events(&store, o2.id, u.id).await.len();
    let bystander_before = member_events(&store, o1.id, bystander.id).await.len();

    let off = store.set_user_active(u.id, false).await.unwrap();
    assert!(!off.active);
    assert_eq!(off.id, u.id);
    assert!(!store.get_user(u.id).await.unwrap().active);
    assert_eq!(member_events(&store, o1.id, u.id).await.len(), before1 + 1);
    assert_eq!(member_events(&store, o2.id, u.id).await.len(), before2 + 1);
    assert_eq!(
        member_events(&store, o1.id, bystander.id).await.len(),
        bystander_before
    );

    // Deactivating again changes nothing and writes nothing.
    assert!(!store.set_user_active(u.id, false).await.unwrap().active);
    assert_eq!(member_events(&store, o1.id, u.id).await.len(), before1 + 1);

    let on = store.set_user_active(u.id, true).await.unwrap();
    assert!(on.active);
    assert!(store.get_user(u.id).await.unwrap().active);
    let versions = member_events(&store, o1.id, u.id).await;
    assert_eq!(versions.len(), before1 + 2);
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");

    // A user with no membership is deactivated all the same.
    let loner = user(&store).await;
    assert!(!store.set_user_active(loner.id, false).await.unwrap().active);
    assert_not_found(store.set_user_active(UserId::new(), false).await);
    assert_not_found(
        store
            .set_platform_role(UserId::new(), PlatformRole::SuperAdmin)
            .await,
    );
}

async fn super_admin<S: Store>(store: &S) -> User {
    let mut u = new_user();
    u.platform_role = PlatformRole::SuperAdmin;
    store.create_user(&u).await.unwrap();
    u
}

#[track_caller]
fn assert_conflict_on<T: std::fmt::Debug>(result: Result<T, StoreError>, field: &str) {
    match result {
        Err(StoreError::Conflict(message)) => assert!(
            message.contains(&format!("`{field}`")),
            "the conflict names `{field}`: {message}"
        ),
        other => panic!("expected a conflict naming `{field}`, got {other:?}"),
    }
}

pub async fn the_last_super_admin_remains<S: Store>(store: S) {
    let a = super_admin(&store).await;
    assert_conflict_on(
        store.set_platform_role(a.id, PlatformRole::User).await,
        "platform_role",
    );
    assert_conflict_on(store.set_user_active(a.id, false).await, "active");
    let stored = store.get_user(a.id).await.unwrap();
    assert!(stored.is_super_admin(), "nothing changed: {stored:?}");

    // With a second one, either may go; then the other is the last.
    let b = user(&store).await;
    let granted = store
        .set_platform_role(b.id, PlatformRole::SuperAdmin)
        .await
        .unwrap();
    assert_eq!(granted.platform_role, PlatformRole::SuperAdmin);
    let revoked = store
        .set_platform_role(a.id, PlatformRole::User)
        .await
        .unwrap();
    assert_eq!(revoked.platform_role, PlatformRole::User);
    assert_conflict_on(store.set_user_active(b.id, false).await, "active");
    assert_conflict_on(
        store.set_platform_role(b.id, PlatformRole::User).await,
        "platform_role",
    );

    // An inactive super admin does not count: granting the role to a deactivated user
    // leaves `b` the last active one.
    store.set_user_active(a.id, false).await.unwrap();
    store
        .set_platform_role(a.id, PlatformRole::SuperAdmin)
        .await
        .unwrap();
    assert_conflict_on(store.set_user_active(b.id, false).await, "active");
    // Reactivated, `a` counts again and `b` may be deactivated.
    store.set_user_active(a.id, true).await.unwrap();
    store.set_user_active(b.id, false).await.unwrap();
    // Revoking an inactive super admin is always allowed; granting is idempotent.
    store
        .set_platform_role(b.id, PlatformRole::User)
        .await
        .unwrap();
    store
        .set_platform_role(a.id, PlatformRole::SuperAdmin)
        .await
        .unwrap();
    assert!(store.get_user(a.id).await.unwrap().is_super_admin());
}

pub async fn concurrent_revocations_leave_a_super_admin<S: Store>(store: S) {
    // Each round: the previous round's survivor and three new super admins all lose the role
    // or their account at once; exactly one change must be refused.
    let mut survivor: Option<UserId> = None;
    for round in 0..4 {
        let mut admins = Vec::new();
        if let Some(id) = survivor {
            admins.push(id);
        }
        while admins.len() < 4 {
            admins.push(super_admin(&store).await.id);
        }
        let mut tasks = Vec::new();
        for (i, id) in admins.iter().copied().enumerate() {
            let store = store.clone();
            // Half revoke the role, half deactivate: both take the same atomic step.
            tasks.push(tokio::spawn(async move {
                if (i + round) % 2 == 0 {
                    store
                        .set_platform_role(id, PlatformRole::User)
                        .await
                        .map(|_| ())
                } else {
                    store.set_user_active(id, false).await.map(|_| ())
                }
            }));
        }
        let mut refused = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => refused += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(refused, 1, "round {round}: exactly one change is refused");
        let mut left = BTreeSet::new();
        for id in &admins {
            if store.get_user(*id).await.unwrap().is_super_admin() {
                left.insert(*id);
            }
        }
        assert_eq!(
            left.len(),
            1,
            "round {round}: one active super admin remains"
        );
        survivor = left.into_iter().next();
    }
}

pub async fn group_created_with_members_all_or_nothing<S: Store>(store: S) {
    use stratai_core::directory::{GroupMembership, GroupRole};
    let mut o = org(&store).await;
    o.settings.max_users_per_group = 2;
    store.update_org(&o).await.unwrap();
    let a = member(&store, o.id).await;
    let b = member(&store, o.id).await;
    let c = member(&store, o.id).await;
    let outsider = user(&store).await;
    let seat = |group: &stratai_core::directory::Group, user: UserId, role| GroupMembership {
        org_id: o.id,
        group_id: group.id,
        user_id: user,
        role,
        joined_at: now(),
    };

    // Three people for two seats: nothing is written.
    let full = new_group(o.id, "Full");
    let result = store
        .create_group_with_members(
            o.id,
            &full,
            &[
                seat(&full, a.id, GroupRole::Lead),
                seat(&full, b.id, GroupRole::Member),
                seat(&full, c.id, GroupRole::Member),
            ],
        )
        .await;
    assert_conflict(result);
    assert_not_found(store.get_group(o.id, full.id).await);
    // Someone who is not a member: nothing is written either.
    let result = store
        .create_group_with_members(
            o.id,
            &full,
            &[
                seat(&full, a.id, GroupRole::Lead),
                seat(&full, outsider.id, GroupRole::Member),
            ],
        )
        .await;
    assert_not_found(result);
    assert_not_found(store.get_group(o.id, full.id).await);
    assert!(store.groups_of_member(o.id, a.id).await.unwrap().is_empty());
    // A membership naming another group is refused.
    let elsewhere = GroupMembership {
        group_id: stratai_core::GroupId::new(),
        ..seat(&full, a.id, GroupRole::Member)
    };
    assert_tenant_mismatch(
        store
            .create_group_with_members(o.id, &full, &[elsewhere])
            .await,
    );

    // Two seats, two people (one listed twice counts once): the group and its members.
    let events_before = store
        .pending(at("2100-01-01T00:00:00Z"), 100_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.org_id == o.id)
        .count();
    store
        .create_group_with_members(
            o.id,
            &full,
            &[
                seat(&full, a.id, GroupRole::Member),
                seat(&full, b.id, GroupRole::Member),
                seat(&full, a.id, GroupRole::Lead),
            ],
        )
        .await
        .unwrap();
    assert_eq!(store.get_group(o.id, full.id).await.unwrap(), full);
    let members = store.list_group_members(o.id, full.id).await.unwrap();
    let mut expected = vec![(a.id, GroupRole::Lead), (b.id, GroupRole::Member)];
    expected.sort_by_key(|(u, _)| *u);
    assert_eq!(
        members
            .iter()
            .map(|m| (m.user_id, m.role))
            .collect::<Vec<_>>(),
        expected
    );
    let events: Vec<OutboxEntity> = store
        .pending(at("2100-01-01T00:00:00Z"), 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.org_id == o.id)
        .skip(events_before)
        .map(|e| e.entity)
        .collect();
    assert!(events.contains(&OutboxEntity::Group(full.id)), "{events:?}");
    assert!(events.contains(&OutboxEntity::Member(a.id)), "{events:?}");
    assert!(events.contains(&OutboxEntity::Member(b.id)), "{events:?}");
    // The group is full now for the ordinary path too.
    assert_conflict(
        store
            .put_group_member(o.id, &seat(&full, c.id, GroupRole::Member))
            .await,
    );
}
