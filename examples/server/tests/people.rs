//! People and access over HTTP, on memory, SQLite and PostgreSQL: the platform's user
//! management (list and search page by page, deactivate and reactivate, grant and revoke super
//! admin, of which one always remains, also under concurrent revocations).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use harness::*;
use serde_json::{Value, json};
use stratai_core::UserId;
use stratai_core::directory::{Email, PlatformRole, User};
use stratai_core::ports::OutboxEntity;

/// A person of the platform (no membership) with this email and name.
async fn person(api: &Api, email: &str, name: Option<&str>) -> User {
    let user = User::new(
        Email::new(email).unwrap(),
        name,
        PlatformRole::User,
        chrono::Utc::now(),
    )
    .unwrap();
    api.stores.directory.create_user(&user).await.unwrap();
    user
}

fn ids(page: &Value) -> Vec<String> {
    page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn people_are_listed_searched_and_paged(api: Api) {
    let admin = api.token("admin@localhost").await;
    let tag = format!("pp{}", unique());
    let c = person(&api, &format!("c-{tag}@people.test"), Some("Cyd")).await;
    let a = person(&api, &format!("a-{tag}@people.test"), None).await;
    let b = person(&api, &format!("b-{tag}@people.test"), None).await;
    let z = person(&api, "zed-x@elsewhere.test", Some(&format!("Zed {tag}"))).await;

    let r = api.get(&format!("/api/users?search={tag}"), &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let all = [a.id, b.id, c.id, z.id].map(|id| id.to_string());
    assert_eq!(ids(&r.json), all, "email order; found by email or name");
    assert_eq!(r.json["next_after"], Value::Null);
    assert_eq!(r.json["users"][0]["email"], a.email.as_str());
    assert_eq!(r.json["users"][0]["active"], true);

    // By name, in another case.
    let upper = tag.to_ascii_uppercase();
    let r = api
        .get(&format!("/api/users?search=zed%20{upper}"), &admin)
        .await;
    assert_eq!(ids(&r.json), [z.id.to_string()], "{}", r.text);

    // Pages of three, then the rest.
    let r = api
        .get(&format!("/api/users?search={tag}&limit=3"), &admin)
        .await;
    assert_eq!(ids(&r.json), all[..3], "{}", r.text);
    let next = r.json["next_after"].as_str().unwrap().to_owned();
    assert_eq!(next, c.email.as_str());
    let r = api
        .get(
            &format!("/api/users?search={tag}&limit=3&after={next}"),
            &admin,
        )
        .await;
    assert_eq!(ids(&r.json), all[3..], "{}", r.text);
    assert_eq!(r.json["next_after"], Value::Null);

    // One person with their memberships.
    let r = api
        .get(&format!("/api/users/{}", api.super_admin.id), &admin)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["user"]["platform_role"], "super_admin");
    assert_eq!(
        r.json["memberships"][0]["org_id"],
        api.internal_org.to_string()
    );
    let r = api
        .get(&format!("/api/users/{}", UserId::new()), &admin)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // Bad input names its field.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=many", "limit"),
        ("after=not-an-email", "after"),
        ("colour=red", "colour"),
    ] {
        let r = api.get(&format!("/api/users?{query}"), &admin).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {}",
            r.text
        );
        assert!(r.text.contains(field), "{query}: {}", r.text);
    }
    let r = api
        .patch(
            &format!("/api/users/{}", a.id),
            &admin,
            json!({"platform_role": "emperor"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("platform_role"), "{}", r.text);
    let r = api
        .patch(
            &format!("/api/users/{}", a.id),
            &admin,
            json!({"is_active": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("is_active"), "{}", r.text);

    // Only super admins manage people.
    let someone = api.token(a.email.as_str()).await;
    let r = api.get("/api/users", &someone).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}
on_every_backend!(people_are_listed_searched_and_paged);

/// A `GET /api/me` with the browser session `cookie`.
async fn me_with_cookie(api: &Api, cookie: &str) -> StatusCode {
    let req = Request::builder()
        .method(Method::GET)
        .uri("/api/me")
        .header("cookie", cookie)
        .body(Body::empty())
        .unwrap();
    api.raw(req).await.status
}

/// The `Member` outbox events of `user` in `org`, for the LiteLLM sync.
async fn member_events(api: &Api, org: stratai_core::OrgId, user: UserId) -> usize {
    api.stores
        .outbox
        .pending("2100-01-01T00:00:00Z".parse().unwrap(), 100_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.org_id == org && e.entity == OutboxEntity::Member(user))
        .count()
}

/// With the auth cache on (a minute), a deactivation through the API still refuses the
/// person's bearer tokens and sessions from their very next request, on the admin API and on
/// the gateway, and their LiteLLM keys get an outbox event each; reactivation lets them in
/// again.
async fn a_deactivated_person_is_refused_from_the_next_request(api: Api) {
    let admin = api.token("admin@localhost").await;
    let f = org_fixture(&api.stores, "deact").await;
    let member = f.member.clone();
    let token = api.token(member.email.as_str()).await;
    let user = api
        .state
        .auth()
        .signin()
        .identities()
        .find_by_email(member.email.as_str())
        .await
        .unwrap()
        .unwrap();
    let principal = stratai_server::auth::Principal::from(&user);
    let cookie = stratai_server::auth::routes::start_session(api.state.auth(), &principal, false)
        .await
        .unwrap();
    let cookie = cookie
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(api.get("/api/me", &token).await.status, StatusCode::OK);
    assert_eq!(me_with_cookie(&api, &cookie).await, StatusCode::OK);
    let models = api.get("/v1/models", &token).await;
    assert_eq!(models.status, StatusCode::OK, "{}", models.text);

    // The cache is on: a change it is not told about goes unseen by bearer tokens (what
    // another instance's cache does, for at most STRATAI_AUTH_CACHE_MS).
    api.stores
        .directory
        .set_user_active(member.id, false)
        .await
        .unwrap();
    assert_eq!(api.get("/api/me", &token).await.status, StatusCode::OK);
    assert_eq!(
        me_with_cookie(&api, &cookie).await,
        StatusCode::FORBIDDEN,
        "sessions are read from the directory on every request"
    );
    api.stores
        .directory
        .set_user_active(member.id, true)
        .await
        .unwrap();

    let events_before = member_events(&api, f.org, member.id).await;
    let r = api
        .patch(
            &format!("/api/users/{}", member.id),
            &admin,
            json!({"active": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["active"], false);
    let r = api.get("/api/me", &token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("account deactivated"), "{}", r.text);
    let r = api.get("/v1/models", &token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let chat = api
        .send_with(
            Method::POST,
            "/v1/chat/completions",
            Some(&token),
            Some(json!({
                "model": stratai_core::tiers::default_tiers()[0].models[0].to_string(),
                "messages": [{"role": "user", "content": "hello"}],
                "max_tokens": 8
            })),
            &[],
        )
        .await;
    assert_eq!(chat.status, StatusCode::FORBIDDEN, "{}", chat.text);
    assert_eq!(me_with_cookie(&api, &cookie).await, StatusCode::FORBIDDEN);
    assert_eq!(
        member_events(&api, f.org, member.id).await,
        events_before + 1,
        "the LiteLLM sync is told to block the member's key"
    );
    // No new token either.
    let r = api
        .send(
            Method::POST,
            "/auth/dev/token",
            None,
            Some(json!({"email": member.email.as_str()})),
        )
        .await;
    assert_ne!(r.status, StatusCode::OK, "{}", r.text);

    let r = api
        .patch(
            &format!("/api/users/{}", member.id),
            &admin,
            json!({"active": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["active"], true);
    assert_eq!(api.get("/api/me", &token).await.status, StatusCode::OK);
    assert_eq!(me_with_cookie(&api, &cookie).await, StatusCode::OK);
    assert_eq!(
        member_events(&api, f.org, member.id).await,
        events_before + 2,
        "and to unblock it"
    );
}

mod deactivation {
    use super::*;
    const CACHE: [(&str, &str); 1] = [("STRATAI_AUTH_CACHE_MS", "60000")];
    #[tokio::test]
    async fn memory() {
        if let Some(api) = Api::start_with(Kind::Memory, &CACHE).await {
            a_deactivated_person_is_refused_from_the_next_request(api).await;
        }
    }
    #[tokio::test]
    async fn sqlite() {
        if let Some(api) = Api::start_with(Kind::Sqlite, &CACHE).await {
            a_deactivated_person_is_refused_from_the_next_request(api).await;
        }
    }
    #[tokio::test]
    async fn postgres() {
        if let Some(api) = Api::start_with(Kind::Postgres, &CACHE).await {
            a_deactivated_person_is_refused_from_the_next_request(api).await;
        }
    }
}

async fn set_role(api: &Api, token: &str, user: UserId, role: &str) -> Resp {
    api.patch(
        &format!("/api/users/{user}"),
        token,
        json!({"platform_role": role}),
    )
    .await
}

/// The seeded super admin is the only one: they can neither leave nor be deactivated; with a
/// second one granted, either may go, never both, even when both go at once.
async fn one_super_admin_always_remains(api: Api) {
    let admin = api.token("admin@localhost").await;
    let me = api.super_admin.id;
    let r = set_role(&api, &admin, me, "user").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("`platform_role`"), "{}", r.text);
    let r = api
        .patch(
            &format!("/api/users/{me}"),
            &admin,
            json!({"active": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("`active`"), "{}", r.text);
    assert_eq!(api.get("/api/users", &admin).await.status, StatusCode::OK);

    for round in 0..3 {
        let second = person(&api, &format!("second-{}@people.test", unique()), None).await;
        let r = set_role(&api, &admin, second.id, "super_admin").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["platform_role"], "super_admin");
        let other = api.token(second.email.as_str()).await;
        // The new super admin manages people at once.
        assert_eq!(api.get("/api/users", &other).await.status, StatusCode::OK);

        // Both give up the role at once (in round 1 the second by deactivating their own
        // account): one must fail.
        let second_path = format!("/api/users/{}", second.id);
        let (r1, r2) = if round == 1 {
            tokio::join!(
                set_role(&api, &admin, me, "user"),
                api.patch(&second_path, &other, json!({"active": false})),
            )
        } else {
            tokio::join!(
                set_role(&api, &admin, me, "user"),
                set_role(&api, &other, second.id, "user"),
            )
        };
        let statuses = [r1.status, r2.status];
        assert!(
            statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::CONFLICT),
            "round {round}: {} / {}",
            r1.text,
            r2.text
        );
        let me_now = api.stores.directory.get_user(me).await.unwrap();
        let second_now = api.stores.directory.get_user(second.id).await.unwrap();
        assert_eq!(
            u8::from(me_now.is_super_admin()) + u8::from(second_now.is_super_admin()),
            1,
            "round {round}: exactly one active super admin"
        );
        // Put the seeded admin back as the only one for the next round.
        if !me_now.is_super_admin() {
            let r = api
                .patch(
                    &format!("/api/users/{me}"),
                    &other,
                    json!({"active": true, "platform_role": "super_admin"}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            let r = set_role(&api, &admin, second.id, "user").await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        } else {
            let r = set_role(&api, &admin, second.id, "user").await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        }
        // A revoked super admin manages nobody.
        let r = api.get("/api/users", &other).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    }
}
on_every_backend!(one_super_admin_always_remains);

/// Org admins see a member's detail and groups, a group with its members, and create a
/// group with its members in one request, within `max_users_per_group`.
async fn admins_see_members_and_groups(api: Api) {
    let f = org_fixture(&api.stores, "detail").await;
    let other = org_fixture(&api.stores, "elsewhere").await;
    let admin = api.token(f.admin.email.as_str()).await;
    let plain = api.token(f.member.email.as_str()).await;
    let org = f.org;

    let r = api
        .get(
            &format!("/api/organizations/{org}/members/{}", f.lead.id),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["email"], f.lead.email.as_str());
    assert_eq!(r.json["role"], "member");
    let r = api
        .get(
            &format!("/api/organizations/{org}/members/{}/groups", f.lead.id),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json.as_array().unwrap().len(), 1, "{}", r.text);
    assert_eq!(r.json[0]["group"]["id"], f.group.to_string());
    assert_eq!(r.json[0]["role"], "lead");
    let r = api
        .get(
            &format!("/api/organizations/{org}/members/{}/groups", f.member.id),
            &admin,
        )
        .await;
    assert_eq!(r.json, json!([]), "{}", r.text);
    // Not a member of this organization: 404, here and for the other one's people.
    for path in [
        format!("/api/organizations/{org}/members/{}", other.member.id),
        format!(
            "/api/organizations/{org}/members/{}/groups",
            other.member.id
        ),
        format!(
            "/api/organizations/{}/members/{}",
            other.org, other.member.id
        ),
    ] {
        let r = api.get(&path, &admin).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text);
    }
    let r = api
        .get(
            &format!("/api/organizations/{org}/members/{}", f.lead.id),
            &plain,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    // A group with its members.
    let r = api.get(&format!("/api/groups/{}", f.group), &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["group"]["name"], "Engineering");
    let mut seen: Vec<(String, String)> = r.json["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut expected = vec![
        (f.lead.email.to_string(), "lead".to_owned()),
        (f.gmember.email.to_string(), "member".to_owned()),
    ];
    expected.sort();
    assert_eq!(seen, expected);

    // Created with its members in one request.
    let r = api
        .post(
            &format!("/api/organizations/{org}/groups"),
            &admin,
            json!({"name": "Design", "members": [
                {"user_id": f.member.id, "role": "lead"},
                {"user_id": f.admin.id}
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let design = r.json["id"].as_str().unwrap().to_owned();
    let r = api.get(&format!("/api/groups/{design}"), &admin).await;
    let roles: Vec<(String, String)> = r.json["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user_id"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(roles.len(), 2, "{}", r.text);
    assert!(roles.contains(&(f.member.id.to_string(), "lead".to_owned())));
    assert!(roles.contains(&(f.admin.id.to_string(), "member".to_owned())));
    // The new lead sees their group; a plain member of it does not see others'.
    let r = api.get(&format!("/api/groups/{design}"), &plain).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Refused, naming the member, and nothing written.
    for (members, field) in [
        (
            json!([{"user_id": f.member.id}, {"user_id": f.member.id}]),
            "members[1].user_id",
        ),
        (
            json!([{"user_id": f.member.id}, {"user_id": other.member.id}]),
            "members[1].user_id",
        ),
        (json!([{"user_id": f.member.id, "colour": "red"}]), "colour"),
    ] {
        let r = api
            .post(
                &format!("/api/organizations/{org}/groups"),
                &admin,
                json!({"name": "Refused", "members": members}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert!(r.text.contains(field), "{field}: {}", r.text);
    }
    // Capacity: two seats per group.
    let mut o = api.stores.directory.get_org(org).await.unwrap();
    o.settings.max_users_per_group = 2;
    api.stores.directory.update_org(&o).await.unwrap();
    let three = json!([
        {"user_id": f.member.id}, {"user_id": f.admin.id}, {"user_id": f.owner.id}
    ]);
    let r = api
        .post(
            &format!("/api/organizations/{org}/groups"),
            &admin,
            json!({"name": "Refused", "members": three}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("max_users_per_group"), "{}", r.text);
    let names: Vec<String> = api
        .stores
        .directory
        .list_groups(org)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert!(!names.contains(&"Refused".to_owned()), "{names:?}");
    let r = api
        .post(
            &format!("/api/organizations/{org}/groups"),
            &admin,
            json!({"name": "Refused", "members": [{"user_id": f.owner.id}, {"user_id": f.admin.id}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}
on_every_backend!(admins_see_members_and_groups);

/// The seed's two profiles exist; giving a member a profile gives them its default tiers,
/// and a profile not available to the organization is refused.
async fn profiles_act_when_given(api: Api) {
    let super_token = api.token("admin@localhost").await;
    let r = api.get("/api/profiles", &super_token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let profile = |name: &str| -> String {
        r.json
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("profile {name} seeded: {}", r.text))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let employee = profile("Internal Employee");
    let contractor = profile("External Contractor");

    let f = org_fixture(&api.stores, "profiles").await;
    let admin = api.token(f.admin.email.as_str()).await;
    let path = format!("/api/organizations/{}/members/{}", f.org, f.member.id);
    // Internal employees are the internal pilot's only.
    let r = api
        .patch(&path, &admin, json!({"profile_id": employee}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("profile_id"), "{}", r.text);
    assert_eq!(
        api.stores
            .directory
            .get_member(f.org, f.member.id)
            .await
            .unwrap()
            .profile_id,
        None
    );
    // A contractor starts with the basic tier only.
    let r = api
        .patch(&path, &admin, json!({"profile_id": contractor}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["profile_id"], contractor.as_str());
    assert_eq!(r.json["allowed_tiers"], json!(["basic"]));
    let r = api
        .get(
            &format!(
                "/api/tiers/accessible?org_id={}&user_id={}",
                f.org, f.member.id
            ),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let accessible: Vec<&str> = r.json["accessible"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(accessible, ["basic"], "{}", r.text);
    // Tiers named in the same request win over the profile's.
    let r = api
        .patch(
            &path,
            &admin,
            json!({"profile_id": contractor, "allowed_tiers": ["basic", "standard"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["allowed_tiers"], json!(["basic", "standard"]));
    // Clearing the profile keeps the tiers.
    let r = api.patch(&path, &admin, json!({"profile_id": null})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["profile_id"], Value::Null);
    assert_eq!(r.json["allowed_tiers"], json!(["basic", "standard"]));

    // In the internal pilot, an internal employee gets basic and standard.
    let person = person(&api, &format!("emp-{}@people.test", unique()), None).await;
    api.stores
        .directory
        .add_member(
            api.internal_org,
            &stratai_core::directory::Membership::new(
                api.internal_org,
                person.id,
                stratai_core::directory::OrgRole::Member,
                chrono::Utc::now(),
            ),
        )
        .await
        .unwrap();
    let r = api
        .patch(
            &format!(
                "/api/organizations/{}/members/{}",
                api.internal_org, person.id
            ),
            &super_token,
            json!({"profile_id": employee}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["allowed_tiers"], json!(["basic", "standard"]));
}
on_every_backend!(profiles_act_when_given);

/// The internal pilot as the seed document sets it up, seen over the API.
async fn the_internal_pilot_is_seeded_as_the_seed_says(api: Api) {
    let admin = api.token("admin@localhost").await;
    let r = api
        .get(&format!("/api/organizations/{}", api.internal_org), &admin)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["name"], "Our Company");
    assert_eq!(r.json["slug"], "internal");
    assert_eq!(r.json["billing_plan"], "enterprise");
    assert_eq!(
        r.json["settings"]["allowed_tiers"],
        json!(["basic", "standard", "premium"])
    );
    assert_eq!(r.json["settings"]["default_tier"], "standard");
    assert_eq!(r.json["settings"]["max_users_per_group"], 50);
    assert_eq!(r.json["settings"]["require_mfa"], false);
    let r = api
        .get(&format!("/api/budgets?org_id={}", api.internal_org), &admin)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let org_budgets: Vec<&Value> = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["budget"]["scope"]["type"] == "org")
        .collect();
    assert_eq!(org_budgets.len(), 1, "{}", r.text);
    let budget = &org_budgets[0]["budget"];
    assert_eq!(budget["period"], "monthly");
    assert_eq!(budget["hard_limit"], true);
    assert_eq!(
        budget["limit"]
            .as_str()
            .unwrap()
            .parse::<rust_decimal::Decimal>()
            .unwrap(),
        rust_decimal::Decimal::from(10_000)
    );
    let r = api
        .get(
            &format!("/api/organizations/{}/tiers", api.internal_org),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let subscribed = r.json["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["enabled"] == true)
        .count();
    assert_eq!(subscribed, 3, "{}", r.text);
}
on_every_backend!(the_internal_pilot_is_seeded_as_the_seed_says);

/// Org admins enable and disable tiers for members and groups within their organization's
/// subscription; a tier outside it is refused, naming the field and why.
async fn tiers_for_members_and_groups_stay_within_the_subscription(api: Api) {
    let f = org_fixture(&api.stores, "within").await;
    let admin = api.token(f.admin.email.as_str()).await;
    let member_path = format!("/api/organizations/{}/members/{}", f.org, f.member.id);
    let groups_path = format!("/api/organizations/{}/groups", f.org);

    // Premium is not subscribed (the fixture has basic and standard).
    let r = api
        .patch(
            &member_path,
            &admin,
            json!({"allowed_tiers": ["basic", "premium"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["error"]["fields"][0]["path"], "allowed_tiers[1]");
    assert!(r.text.contains("`premium`"), "{}", r.text);
    assert!(r.text.contains("basic, standard"), "{}", r.text);
    let r = api
        .post(
            &groups_path,
            &admin,
            json!({"name": "Research", "allowed_tiers": ["premium"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["error"]["fields"][0]["path"], "allowed_tiers[0]");
    let r = api
        .patch(
            &format!("/api/groups/{}", f.group),
            &admin,
            json!({"allowed_tiers": ["standard", "premium"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["error"]["fields"][0]["path"], "allowed_tiers[1]");

    // Within it: enabled and disabled at will.
    let r = api
        .patch(&member_path, &admin, json!({"allowed_tiers": ["standard"]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["allowed_tiers"], json!(["standard"]));
    let r = api
        .patch(
            &format!("/api/groups/{}", f.group),
            &admin,
            json!({"allowed_tiers": ["basic"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["allowed_tiers"], json!(["basic"]));

    // The platform disables standard for the organization: it is outside the subscription now.
    let super_token = api.token("admin@localhost").await;
    let standard = stratai_core::tiers::STANDARD_TIER_ID;
    let r = api
        .send(
            Method::PUT,
            &format!("/api/organizations/{}/tiers/{standard}", f.org),
            Some(&super_token),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api
        .patch(&member_path, &admin, json!({"allowed_tiers": ["standard"]}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["error"]["fields"][0]["path"], "allowed_tiers[0]");
    let r = api
        .patch(&member_path, &admin, json!({"allowed_tiers": ["basic"]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}
on_every_backend!(tiers_for_members_and_groups_stay_within_the_subscription);
