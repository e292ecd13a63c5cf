//! DirectoryStore: organizations, users, memberships, groups, profiles, invitations.

use std::collections::BTreeSet;

use chrono::Duration;
use stratai_core::directory::{
    Email, GroupMembership, GroupRole, InvitationStatus, OrgRole, ProfileAvailability, Slug,
    UserProfile,
};
use stratai_core::{GroupId, OrgId, ProfileId, UserId};

use super::fixtures::*;

pub async fn org_create_get_find_list<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    assert_eq!(store.get_org(a.id).await.unwrap(), a);
    assert_eq!(
        store.find_org_by_slug(&a.slug).await.unwrap(),
        Some(a.clone())
    );
    let missing = Slug::new(format!("none-{}", unique())).unwrap();
    assert_eq!(store.find_org_by_slug(&missing).await.unwrap(), None);
    let listed: Vec<OrgId> = store
        .list_orgs()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .filter(|id| *id == a.id || *id == b.id)
        .collect();
    let mut expected = vec![a.id, b.id];
    expected.sort();
    assert_eq!(listed, expected, "organizations are listed by id");
}

pub async fn org_slug_conflict<S: Store>(store: S) {
    let a = org(&store).await;
    let mut same_slug = new_org();
    same_slug.slug = a.slug.clone();
    assert_conflict(store.create_org(&same_slug).await);
    assert_not_found(store.get_org(same_slug.id).await);
    // The same id twice is a conflict too.
    let mut same_id = new_org();
    same_id.id = a.id;
    assert_conflict(store.create_org(&same_id).await);
    assert_eq!(store.get_org(a.id).await.unwrap(), a);
}

pub async fn org_update_keeps_slug_and_creation<S: Store>(store: S) {
    let a = org(&store).await;
    let mut changed = a.clone();
    changed.name = "Acme Corp".to_owned();
    changed.active = false;
    changed.settings.require_mfa = true;
    changed.litellm_org_id = Some(format!("litellm-{}", unique()));
    changed.slug = Slug::new(format!("other-{}", unique())).unwrap();
    changed.created_at = now() + Duration::days(3);
    changed.updated_at = now() + Duration::days(1);
    store.update_org(&changed).await.unwrap();
    let stored = store.get_org(a.id).await.unwrap();
    assert_eq!(stored.name, "Acme Corp");
    assert!(!stored.active);
    assert!(stored.settings.require_mfa);
    assert_eq!(stored.litellm_org_id, changed.litellm_org_id);
    assert_eq!(stored.updated_at, changed.updated_at);
    assert_eq!(stored.slug, a.slug, "the slug is not a mutable field");
    assert_eq!(stored.created_at, a.created_at);
}

pub async fn org_not_found<S: Store>(store: S) {
    let ghost = new_org();
    assert_not_found(store.get_org(ghost.id).await);
    assert_not_found(store.update_org(&ghost).await);
    assert_eq!(store.find_org_by_slug(&ghost.slug).await.unwrap(), None);
}

pub async fn user_create_get_find_update<S: Store>(store: S) {
    let u = user(&store).await;
    assert_eq!(store.get_user(u.id).await.unwrap(), u);
    assert_eq!(
        store.find_user_by_email(&u.email).await.unwrap(),
        Some(u.clone())
    );
    let subject = u.oidc_subject.clone().unwrap();
    assert_eq!(
        store.find_user_by_subject(&subject).await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(
        store.find_user_by_subject("auth0|nobody").await.unwrap(),
        None
    );

    let mut changed = u.clone();
    changed.name = Some("Ada Lovelace".to_owned());
    changed.email = Email::new(format!("renamed-{}@example.com", unique())).unwrap();
    changed.last_login_at = Some(now() + Duration::minutes(5));
    store.update_user(&changed).await.unwrap();
    assert_eq!(store.get_user(u.id).await.unwrap(), changed);
    assert_eq!(store.find_user_by_email(&u.email).await.unwrap(), None);

    assert_not_found(store.get_user(UserId::new()).await);
    assert_not_found(store.update_user(&new_user()).await);
}

pub async fn get_users_in_the_order_asked<S: Store>(store: S) {
    let a = user(&store).await;
    let b = user(&store).await;
    let c = user(&store).await;
    // The order asked, a repeated id once at its first place.
    assert_eq!(
        store.get_users(&[c.id, a.id, c.id, b.id]).await.unwrap(),
        vec![c.clone(), a.clone(), b.clone()]
    );
    assert_eq!(store.get_users(&[]).await.unwrap(), Vec::new());
    // An unknown id anywhere: NotFound naming it, not a shorter answer.
    let ghost = UserId::new();
    let err = store.get_users(&[a.id, ghost, b.id]).await.unwrap_err();
    assert!(
        matches!(&err, stratai_core::StoreError::NotFound { entity: "user", id } if *id == ghost.to_string()),
        "{err}"
    );
}

pub async fn people_in_orgs_counted_once<S: Store>(store: S) {
    assert_eq!(store.count_people_in_orgs().await.unwrap(), 0);
    let a = org(&store).await;
    let b = org(&store).await;
    let both = user(&store).await;
    let only_a = user(&store).await;
    // A user in no organization is not counted.
    user(&store).await;
    for (o, u) in [(a.id, both.id), (b.id, both.id), (a.id, only_a.id)] {
        store
            .add_member(o, &membership(o, u, OrgRole::Member))
            .await
            .unwrap();
    }
    assert_eq!(store.count_people_in_orgs().await.unwrap(), 2);
}

pub async fn user_email_and_subject_conflict<S: Store>(store: S) {
    let a = user(&store).await;
    let mut same_email = new_user();
    same_email.email = a.email.clone();
    assert_conflict(store.create_user(&same_email).await);
    let mut same_subject = new_user();
    same_subject.oidc_subject = a.oidc_subject.clone();
    assert_conflict(store.create_user(&same_subject).await);
    // Updating another user onto a taken email conflicts and changes nothing.
    let b = user(&store).await;
    let mut stolen = b.clone();
    stolen.email = a.email.clone();
    assert_conflict(store.update_user(&stolen).await);
    assert_eq!(store.get_user(b.id).await.unwrap(), b);
}

pub async fn member_add_get_list_update_remove<S: Store>(store: S) {
    let o = org(&store).await;
    let u1 = user(&store).await;
    let u2 = user(&store).await;
    let m1 = membership(o.id, u1.id, OrgRole::Owner);
    let m2 = membership(o.id, u2.id, OrgRole::Member);
    store.add_member(o.id, &m1).await.unwrap();
    store.add_member(o.id, &m2).await.unwrap();
    assert_eq!(store.get_member(o.id, u1.id).await.unwrap(), m1);
    let mut expected = vec![m1.clone(), m2.clone()];
    expected.sort_by_key(|m| m.user_id);
    assert_eq!(store.list_members(o.id).await.unwrap(), expected);

    let profile = UserProfile::new(
        "Contractor",
        vec![tier_slug("basic")],
        ProfileAvailability::All,
        now(),
    )
    .unwrap();
    store.create_profile(&profile).await.unwrap();
    let mut changed = m2.clone();
    changed.role = OrgRole::Admin;
    changed.allowed_tiers = Some(vec![tier_slug("basic")]);
    changed.monthly_budget = Some(money("25.50"));
    changed.profile_id = Some(profile.id);
    // The key id is the sync's (set_litellm_key_id): an update never writes it.
    changed.litellm_key_id = Some("key-hash".to_owned());
    store.update_member(o.id, &changed).await.unwrap();
    let stored = store.get_member(o.id, u2.id).await.unwrap();
    assert_eq!(stored.litellm_key_id, None);
    assert_eq!(
        stored,
        stratai_core::directory::Membership {
            litellm_key_id: None,
            ..changed.clone()
        }
    );
    // An admin update made from a read older than the sync's write-back keeps the key id.
    let stale = stored.clone();
    store
        .set_litellm_key_id(o.id, u2.id, Some("synced-hash"))
        .await
        .unwrap();
    let mut by_admin = stale;
    by_admin.role = OrgRole::Member;
    store.update_member(o.id, &by_admin).await.unwrap();
    let stored = store.get_member(o.id, u2.id).await.unwrap();
    assert_eq!(stored.role, OrgRole::Member);
    assert_eq!(stored.litellm_key_id.as_deref(), Some("synced-hash"));

    store.remove_member(o.id, u2.id).await.unwrap();
    assert_not_found(store.get_member(o.id, u2.id).await);
    assert_eq!(store.list_members(o.id).await.unwrap(), vec![m1]);
}

pub async fn member_errors<S: Store>(store: S) {
    let o = org(&store).await;
    let u = member(&store, o.id).await;
    assert_conflict(
        store
            .add_member(o.id, &membership(o.id, u.id, OrgRole::Admin))
            .await,
    );
    let stranger = UserId::new();
    assert_not_found(
        store
            .add_member(o.id, &membership(o.id, stranger, OrgRole::Member))
            .await,
    );
    let ghost_org = OrgId::new();
    let v = user(&store).await;
    assert_not_found(
        store
            .add_member(ghost_org, &membership(ghost_org, v.id, OrgRole::Member))
            .await,
    );
    let mut with_ghost_profile = membership(o.id, v.id, OrgRole::Member);
    with_ghost_profile.profile_id = Some(ProfileId::new());
    assert_not_found(store.add_member(o.id, &with_ghost_profile).await);
    assert_not_found(store.get_member(o.id, v.id).await);
    assert_not_found(
        store
            .update_member(o.id, &membership(o.id, v.id, OrgRole::Admin))
            .await,
    );
    assert_not_found(store.remove_member(o.id, v.id).await);
}

pub async fn member_cross_tenant<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    let u = member(&store, a.id).await;
    let before = store.get_member(a.id, u.id).await.unwrap();
    // B's context with A's membership: nothing seen, nothing changed.
    assert_not_found(store.get_member(b.id, u.id).await);
    assert!(store.list_members(b.id).await.unwrap().is_empty());
    let mut promoted = before.clone();
    promoted.role = OrgRole::Owner;
    assert_tenant_mismatch(store.update_member(b.id, &promoted).await);
    assert_tenant_mismatch(
        store
            .add_member(b.id, &membership(a.id, u.id, OrgRole::Owner))
            .await,
    );
    let mut as_b = promoted.clone();
    as_b.org_id = b.id;
    assert_not_found(store.update_member(b.id, &as_b).await);
    assert_not_found(store.remove_member(b.id, u.id).await);
    assert_eq!(store.get_member(a.id, u.id).await.unwrap(), before);
}

pub async fn memberships_of_user_spans_orgs<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    let u = user(&store).await;
    store
        .add_member(a.id, &membership(a.id, u.id, OrgRole::Admin))
        .await
        .unwrap();
    store
        .add_member(b.id, &membership(b.id, u.id, OrgRole::Member))
        .await
        .unwrap();
    let orgs: Vec<OrgId> = store
        .memberships_of_user(u.id)
        .await
        .unwrap()
        .iter()
        .map(|m| m.org_id)
        .collect();
    let mut expected = vec![a.id, b.id];
    expected.sort();
    assert_eq!(orgs, expected);
    assert!(
        store
            .memberships_of_user(UserId::new())
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn group_crud<S: Store>(store: S) {
    let o = org(&store).await;
    let g1 = group(&store, o.id, "Engineering").await;
    let g2 = group(&store, o.id, "Sales").await;
    assert_eq!(store.get_group(o.id, g1.id).await.unwrap(), g1);
    assert_eq!(store.locate_group(g1.id).await.unwrap(), Some(o.id));
    assert_eq!(store.locate_group(GroupId::new()).await.unwrap(), None);
    let mut expected = vec![g1.clone(), g2.clone()];
    expected.sort_by_key(|g| g.id);
    assert_eq!(store.list_groups(o.id).await.unwrap(), expected);

    let mut changed = g1.clone();
    changed.name = "Platform".to_owned();
    changed.description = Some("Builds the platform".to_owned());
    changed.allowed_tiers = Some(vec![tier_slug("standard")]);
    changed.monthly_budget = Some(money("300"));
    changed.updated_at = now() + Duration::hours(1);
    store.update_group(o.id, &changed).await.unwrap();
    assert_eq!(store.get_group(o.id, g1.id).await.unwrap(), changed);

    store.delete_group(o.id, g2.id).await.unwrap();
    assert_not_found(store.get_group(o.id, g2.id).await);
    assert_not_found(store.delete_group(o.id, g2.id).await);
    assert_not_found(store.update_group(o.id, &g2).await);
    assert_eq!(store.list_groups(o.id).await.unwrap(), vec![changed]);
}

pub async fn group_name_unique_per_org<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    let ga = group(&store, a.id, "Research").await;
    // Another organization may use the same name: names do not leak across tenants.
    group(&store, b.id, "Research").await;
    assert_conflict(store.create_group(a.id, &new_group(a.id, "Research")).await);
    let other = group(&store, a.id, "Legal").await;
    let mut renamed = other.clone();
    renamed.name = ga.name.clone();
    assert_conflict(store.update_group(a.id, &renamed).await);
    assert_eq!(store.get_group(a.id, other.id).await.unwrap(), other);
}

pub async fn group_cross_tenant<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    let g = group(&store, a.id, "Finance").await;
    let u = member(&store, a.id).await;
    store
        .put_group_member(
            a.id,
            &GroupMembership {
                org_id: a.id,
                group_id: g.id,
                user_id: u.id,
                role: GroupRole::Lead,
                joined_at: now(),
            },
        )
        .await
        .unwrap();
    assert_not_found(store.get_group(b.id, g.id).await);
    assert!(store.list_groups(b.id).await.unwrap().is_empty());
    assert_tenant_mismatch(store.create_group(b.id, &new_group(a.id, "Injected")).await);
    assert_tenant_mismatch(store.update_group(b.id, &g).await);
    let mut as_b = g.clone();
    as_b.org_id = b.id;
    as_b.name = "Hijacked".to_owned();
    assert_not_found(store.update_group(b.id, &as_b).await);
    assert_not_found(store.delete_group(b.id, g.id).await);
    assert_not_found(store.list_group_members(b.id, g.id).await);
    assert_not_found(store.remove_group_member(b.id, g.id, u.id).await);
    assert!(store.groups_of_member(b.id, u.id).await.unwrap().is_empty());
    assert_eq!(store.get_group(a.id, g.id).await.unwrap(), g);
    assert_eq!(store.list_group_members(a.id, g.id).await.unwrap().len(), 1);
}

pub async fn group_members<S: Store>(store: S) {
    let o = org(&store).await;
    let g1 = group(&store, o.id, "One").await;
    let g2 = group(&store, o.id, "Two").await;
    let u = member(&store, o.id).await;
    let v = member(&store, o.id).await;
    let gm = |group: GroupId, user: UserId, role| GroupMembership {
        org_id: o.id,
        group_id: group,
        user_id: user,
        role,
        joined_at: now(),
    };
    store
        .put_group_member(o.id, &gm(g1.id, u.id, GroupRole::Member))
        .await
        .unwrap();
    store
        .put_group_member(o.id, &gm(g1.id, v.id, GroupRole::Lead))
        .await
        .unwrap();
    store
        .put_group_member(o.id, &gm(g2.id, u.id, GroupRole::Member))
        .await
        .unwrap();
    // Putting again changes the role, keeps the join time.
    let mut later = gm(g1.id, u.id, GroupRole::Lead);
    later.joined_at = now() + Duration::days(2);
    store.put_group_member(o.id, &later).await.unwrap();

    let mut expected = vec![
        gm(g1.id, u.id, GroupRole::Lead),
        gm(g1.id, v.id, GroupRole::Lead),
    ];
    expected.sort_by_key(|m| m.user_id);
    assert_eq!(
        store.list_group_members(o.id, g1.id).await.unwrap(),
        expected
    );

    let mut groups_of_u = vec![
        (g1.clone(), GroupRole::Lead),
        (g2.clone(), GroupRole::Member),
    ];
    groups_of_u.sort_by_key(|(g, _)| g.id);
    assert_eq!(
        store.groups_of_member(o.id, u.id).await.unwrap(),
        groups_of_u
    );

    store.remove_group_member(o.id, g2.id, u.id).await.unwrap();
    assert_not_found(store.remove_group_member(o.id, g2.id, u.id).await);
    assert_eq!(
        store.groups_of_member(o.id, u.id).await.unwrap(),
        vec![(g1.clone(), GroupRole::Lead)]
    );

    // Removing a member removes their group memberships; deleting a group removes its members.
    store.remove_member(o.id, u.id).await.unwrap();
    assert_eq!(
        store.list_group_members(o.id, g1.id).await.unwrap(),
        vec![gm(g1.id, v.id, GroupRole::Lead)]
    );
    store.delete_group(o.id, g1.id).await.unwrap();
    assert!(store.groups_of_member(o.id, v.id).await.unwrap().is_empty());
}

pub async fn group_member_requires_same_org_membership<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    let ga = group(&store, a.id, "A team").await;
    let gb = group(&store, b.id, "B team").await;
    let in_a = member(&store, a.id).await;
    let outsider = user(&store).await;
    let gm = |org: OrgId, group: GroupId, user: UserId| GroupMembership {
        org_id: org,
        group_id: group,
        user_id: user,
        role: GroupRole::Member,
        joined_at: now(),
    };
    // A user who is not a member of the organization.
    assert_not_found(
        store
            .put_group_member(a.id, &gm(a.id, ga.id, outsider.id))
            .await,
    );
    // A group of another organization.
    assert_not_found(
        store
            .put_group_member(a.id, &gm(a.id, gb.id, in_a.id))
            .await,
    );
    // Saying one organization and naming another.
    assert_tenant_mismatch(
        store
            .put_group_member(b.id, &gm(a.id, ga.id, in_a.id))
            .await,
    );
    assert!(
        store
            .list_group_members(a.id, ga.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_group_members(b.id, gb.id)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn profiles<S: Store>(store: S) {
    let mut p = UserProfile::new(
        "Internal Employee",
        vec![tier_slug("basic"), tier_slug("standard")],
        ProfileAvailability::Internal,
        now(),
    )
    .unwrap();
    p.description = Some("Staff".to_owned());
    p.default_guardrails = serde_json::json!([{ "type": "token_limit" }]);
    store.create_profile(&p).await.unwrap();
    assert_eq!(store.get_profile(p.id).await.unwrap(), p);
    assert_conflict(store.create_profile(&p).await);
    assert!(store.list_profiles().await.unwrap().contains(&p));
    assert_not_found(store.get_profile(ProfileId::new()).await);

    // An update replaces everything but the id and the creation time.
    let mut changed = p.clone();
    changed.name = "Staff".to_owned();
    changed.description = None;
    changed.default_tiers = vec![tier_slug("basic")];
    changed.default_guardrails = serde_json::json!([]);
    changed.available_to = ProfileAvailability::All;
    store.update_profile(&changed).await.unwrap();
    assert_eq!(store.get_profile(p.id).await.unwrap(), changed);
    let unknown = UserProfile::new("Nobody", vec![], ProfileAvailability::All, now()).unwrap();
    assert_not_found(store.update_profile(&unknown).await);

    // Delete: refused while a member holds it or a pending invitation names it; an invitation
    // no longer pending forgets it.
    let o = org(&store).await;
    let holder = member(&store, o.id).await;
    let mut held = store.get_member(o.id, holder.id).await.unwrap();
    held.profile_id = Some(p.id);
    store.update_member(o.id, &held).await.unwrap();
    let email = Email::new(format!("profiled-{}@example.com", unique())).unwrap();
    let mut inv = new_invitation(o.id, &email, vec![]);
    inv.profile_id = Some(p.id);
    store.create_invitation(o.id, &inv).await.unwrap();
    let refused = store.delete_profile(p.id).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("1 member(s) and 1 pending invitation(s)"),
        "{refused}"
    );
    held.profile_id = None;
    store.update_member(o.id, &held).await.unwrap();
    assert_conflict(store.delete_profile(p.id).await);
    store.revoke_invitation(o.id, inv.id).await.unwrap();
    store.delete_profile(p.id).await.unwrap();
    assert_not_found(store.get_profile(p.id).await);
    assert_not_found(store.delete_profile(p.id).await);
    let kept = store
        .find_invitation_by_token_hash(&inv.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.status, InvitationStatus::Revoked);
    assert_eq!(kept.profile_id, None);
    assert!(!store.list_profiles().await.unwrap().contains(&changed));
}

pub async fn invitation_create_find_list_revoke<S: Store>(store: S) {
    let o = org(&store).await;
    let g = group(&store, o.id, "Ops").await;
    let inviter = member(&store, o.id).await;
    let email = Email::new(format!("new-{}@example.com", unique())).unwrap();
    let mut inv = new_invitation(o.id, &email, vec![g.id]);
    inv.invited_by = Some(inviter.id);
    store.create_invitation(o.id, &inv).await.unwrap();
    assert_eq!(
        store
            .find_invitation_by_token_hash(&inv.token_hash)
            .await
            .unwrap(),
        Some(inv.clone())
    );
    assert_eq!(
        store.find_invitation_by_token_hash("feed").await.unwrap(),
        None
    );
    // One pending invitation per address and organization.
    assert_conflict(
        store
            .create_invitation(o.id, &new_invitation(o.id, &email, vec![]))
            .await,
    );
    let other = Email::new(format!("other-{}@example.com", unique())).unwrap();
    let second = new_invitation(o.id, &other, vec![]);
    store.create_invitation(o.id, &second).await.unwrap();
    let mut expected = vec![inv.clone(), second.clone()];
    expected.sort_by_key(|i| i.id);
    assert_eq!(store.list_invitations(o.id).await.unwrap(), expected);

    // The same token hash twice is a conflict.
    let third = Email::new(format!("third-{}@example.com", unique())).unwrap();
    let mut same_token = new_invitation(o.id, &third, vec![]);
    same_token.token_hash = inv.token_hash.clone();
    assert_conflict(store.create_invitation(o.id, &same_token).await);

    // Platform-wide by address: the pending invitations of this email in every organization
    // (another organization invited the same person), none of other addresses.
    let o2 = org(&store).await;
    let elsewhere = new_invitation(o2.id, &email, vec![]);
    store.create_invitation(o2.id, &elsewhere).await.unwrap();
    let mut both = vec![inv.clone(), elsewhere.clone()];
    both.sort_by_key(|i| i.id);
    assert_eq!(store.pending_invitations_for(&email).await.unwrap(), both);
    let nobody = Email::new(format!("nobody-{}@example.com", unique())).unwrap();
    assert!(
        store
            .pending_invitations_for(&nobody)
            .await
            .unwrap()
            .is_empty()
    );

    store.revoke_invitation(o.id, inv.id).await.unwrap();
    // A revoked invitation is no longer pending for its address.
    assert_eq!(
        store.pending_invitations_for(&email).await.unwrap(),
        vec![elsewhere]
    );
    let revoked = store
        .find_invitation_by_token_hash(&inv.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.status, InvitationStatus::Revoked);
    assert_conflict(store.revoke_invitation(o.id, inv.id).await);
    assert_not_found(
        store
            .revoke_invitation(o.id, stratai_core::InvitationId::new())
            .await,
    );
}

pub async fn invitation_save_renews_pending_all_or_nothing<S: Store>(store: S) {
    let o = org(&store).await;
    let g = group(&store, o.id, "Pilot").await;
    let ann = Email::new(format!("ann-{}@example.com", unique())).unwrap();
    let bob = Email::new(format!("bob-{}@example.com", unique())).unwrap();
    let first = new_invitation(o.id, &ann, vec![]);
    store
        .save_invitations(o.id, std::slice::from_ref(&first))
        .await
        .unwrap();
    assert_eq!(
        store.list_invitations(o.id).await.unwrap(),
        vec![first.clone()]
    );

    // A renewal replaces grant, token, expiry and delivery; status, email and creation stay.
    let mut renewed = first.clone();
    renewed.group_ids = vec![g.id];
    renewed.token_hash = stratai_core::directory::hash_token(&unique());
    renewed.expires_at = first.expires_at + chrono::Duration::days(3);
    renewed
        .delivery
        .record(Err("smtp down".to_owned()), first.created_at);
    renewed.email = bob.clone(); // not written: the address is the invitation's
    let bob_inv = new_invitation(o.id, &bob, vec![g.id]);
    store
        .save_invitations(o.id, &[renewed.clone(), bob_inv.clone()])
        .await
        .unwrap();
    let stored = store
        .find_invitation_by_token_hash(&renewed.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.email, ann);
    assert_eq!(stored.group_ids, vec![g.id]);
    assert_eq!(stored.expires_at, renewed.expires_at);
    assert_eq!(stored.delivery, renewed.delivery);
    assert_eq!(
        store
            .find_invitation_by_token_hash(&first.token_hash)
            .await
            .unwrap(),
        None,
        "the old token is gone"
    );

    // All or nothing: a batch with one bad write (a second pending invitation for Ann, an
    // unknown group) writes none of its rows.
    let carl = Email::new(format!("carl-{}@example.com", unique())).unwrap();
    let carl_inv = new_invitation(o.id, &carl, vec![]);
    let dup = new_invitation(o.id, &ann, vec![]);
    assert_conflict(store.save_invitations(o.id, &[carl_inv.clone(), dup]).await);
    let ghost = new_invitation(o.id, &carl, vec![GroupId::new()]);
    assert_not_found(store.save_invitations(o.id, &[ghost]).await);
    assert_eq!(store.list_invitations(o.id).await.unwrap().len(), 2);

    // A revoked invitation is final: renewing it is a conflict, and a new one may be made.
    store.revoke_invitation(o.id, bob_inv.id).await.unwrap();
    let mut late = bob_inv.clone();
    late.token_hash = stratai_core::directory::hash_token(&unique());
    assert_conflict(store.save_invitations(o.id, &[late]).await);
    store
        .save_invitations(o.id, &[new_invitation(o.id, &bob, vec![])])
        .await
        .unwrap();
    // Another tenant cannot renew this one.
    let other = org(&store).await;
    let mut foreign = stored.clone();
    foreign.org_id = other.id;
    assert!(store.save_invitations(other.id, &[foreign]).await.is_err());
    assert_eq!(
        store
            .find_invitation_by_token_hash(&stored.token_hash)
            .await
            .unwrap()
            .unwrap()
            .org_id,
        o.id
    );
}

pub async fn invitation_names_only_own_groups<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    let gb = group(&store, b.id, "B only").await;
    let email = Email::new(format!("x-{}@example.com", unique())).unwrap();
    // An invitation of A must not put its invitee into B's group.
    assert_not_found(
        store
            .create_invitation(a.id, &new_invitation(a.id, &email, vec![gb.id]))
            .await,
    );
    assert_tenant_mismatch(
        store
            .create_invitation(b.id, &new_invitation(a.id, &email, vec![]))
            .await,
    );
    let mut ghost_profile = new_invitation(a.id, &email, vec![]);
    ghost_profile.profile_id = Some(ProfileId::new());
    assert_not_found(store.create_invitation(a.id, &ghost_profile).await);
    assert!(store.list_invitations(a.id).await.unwrap().is_empty());
    // B can not see or revoke A's invitations.
    let inv = new_invitation(a.id, &email, vec![]);
    store.create_invitation(a.id, &inv).await.unwrap();
    assert!(store.list_invitations(b.id).await.unwrap().is_empty());
    assert_not_found(store.revoke_invitation(b.id, inv.id).await);
    let stored = store
        .find_invitation_by_token_hash(&inv.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, InvitationStatus::Pending);
}

pub async fn invitation_accept_once<S: Store>(store: S) {
    let o = org(&store).await;
    let g1 = group(&store, o.id, "First").await;
    let g2 = group(&store, o.id, "Second").await;
    let u = user(&store).await;
    let inv = new_invitation(o.id, &u.email, vec![g1.id, g2.id]);
    store.create_invitation(o.id, &inv).await.unwrap();
    // A group deleted after the invitation was sent is skipped.
    store.delete_group(o.id, g2.id).await.unwrap();

    let when = now() + Duration::hours(1);
    let m = store
        .accept_invitation(&inv.token_hash, &u, when)
        .await
        .unwrap();
    assert_eq!(m.org_id, o.id);
    assert_eq!(m.user_id, u.id);
    assert_eq!(m.role, OrgRole::Admin);
    assert_eq!(m.joined_at, when);
    assert_eq!(store.get_member(o.id, u.id).await.unwrap(), m);
    assert_eq!(
        store.groups_of_member(o.id, u.id).await.unwrap(),
        vec![(g1, GroupRole::Member)]
    );
    let stored = store
        .find_invitation_by_token_hash(&inv.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, InvitationStatus::Accepted);
    assert_eq!(stored.accepted_at, Some(when));

    assert_conflict(store.accept_invitation(&inv.token_hash, &u, when).await);
}

pub async fn invitation_accept_refusals<S: Store>(store: S) {
    let o = org(&store).await;
    let u = user(&store).await;
    assert_not_found(store.accept_invitation("no-such-token", &u, now()).await);

    // Another address: refused, nothing changes.
    let other = Email::new(format!("other-{}@example.com", unique())).unwrap();
    let for_other = new_invitation(o.id, &other, vec![]);
    store.create_invitation(o.id, &for_other).await.unwrap();
    assert_conflict(
        store
            .accept_invitation(&for_other.token_hash, &u, now())
            .await,
    );
    let stored = store
        .find_invitation_by_token_hash(&for_other.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, InvitationStatus::Pending);

    // Past its expiry: refused and marked expired.
    let inv = new_invitation(o.id, &u.email, vec![]);
    store.create_invitation(o.id, &inv).await.unwrap();
    assert_conflict(
        store
            .accept_invitation(&inv.token_hash, &u, inv.expires_at)
            .await,
    );
    let stored = store
        .find_invitation_by_token_hash(&inv.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, InvitationStatus::Expired);

    // Revoked: refused.
    let revoked = new_invitation(o.id, &u.email, vec![]);
    store.create_invitation(o.id, &revoked).await.unwrap();
    store.revoke_invitation(o.id, revoked.id).await.unwrap();
    assert_conflict(
        store
            .accept_invitation(&revoked.token_hash, &u, now())
            .await,
    );

    // Already a member: refused, the invitation stays pending.
    let member_already = new_invitation(o.id, &u.email, vec![]);
    store
        .create_invitation(o.id, &member_already)
        .await
        .unwrap();
    store
        .add_member(o.id, &membership(o.id, u.id, OrgRole::Member))
        .await
        .unwrap();
    assert_conflict(
        store
            .accept_invitation(&member_already.token_hash, &u, now())
            .await,
    );
    let stored = store
        .find_invitation_by_token_hash(&member_already.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, InvitationStatus::Pending);
    assert_eq!(
        store.get_member(o.id, u.id).await.unwrap().role,
        OrgRole::Member
    );
}

pub async fn invitation_accept_concurrent_single_use<S: Store>(store: S) {
    let o = org(&store).await;
    let u = user(&store).await;
    let inv = new_invitation(o.id, &u.email, vec![]);
    store.create_invitation(o.id, &inv).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let token = inv.token_hash.clone();
        let u = u.clone();
        tasks.push(tokio::spawn(async move {
            store.accept_invitation(&token, &u, now()).await
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(stratai_core::StoreError::Conflict(_)) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(accepted, 1, "an invitation is accepted exactly once");
    let members: BTreeSet<UserId> = store
        .list_members(o.id)
        .await
        .unwrap()
        .iter()
        .map(|m| m.user_id)
        .collect();
    assert_eq!(members, BTreeSet::from([u.id]));
}
