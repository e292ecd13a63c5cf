//! Bad input found from outside, through HTTP on memory, SQLite and PostgreSQL: oversized
//! bodies whatever their framing, conflicts that name the field in the same words on every
//! backend, unknown chat roles, money sent as JSON numbers, two `Authorization` headers;
//! and group capacity and case-insensitive group names on every path that writes them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::Utc;
use harness::*;
use serde_json::json;
use stratai_core::directory::{Email, Invitation, InvitationRequest, OrgRole};

/// The default body limit of the server (1 MiB).
const LIMIT: usize = 1024 * 1024;

fn oversized() -> String {
    format!("{{\"name\": \"{}\"}}", "x".repeat(LIMIT))
}

fn assert_json_413(r: &Resp) {
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "payload_too_large", "{}", r.text);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
}

async fn oversized_bodies_answer_json_413_whatever_their_framing(api: Api) {
    let token = api.token("admin@localhost").await;
    for path in ["/api/organizations", "/v1/chat/completions"] {
        // With a `Content-Length` over the limit (refused before the body is read).
        let body = oversized();
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(Body::from(body))
            .unwrap();
        assert_json_413(&api.raw(req).await);
        // Chunked: no length up front, the body grows past the limit while it is read.
        let chunks = (0..40).map(|_| Ok::<_, std::io::Error>(vec![b' '; LIMIT / 32]));
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from_stream(futures::stream::iter(chunks)))
            .unwrap();
        assert_json_413(&api.raw(req).await);
    }
}
on_every_backend!(oversized_bodies_answer_json_413_whatever_their_framing);

async fn conflicts_name_the_field_in_the_same_words_on_every_backend(api: Api) {
    let token = api.token("admin@localhost").await;
    let n = unique();
    let org = json!({"name": "Acme", "slug": format!("acme-{n}"), "owner_email": format!("boss-{n}@acme.test")});
    let r = api.post("/api/organizations", &token, org.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let org_id = r.json["id"].as_str().unwrap().to_owned();
    let r = api.post("/api/organizations", &token, org).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(
        r.json["error"]["message"], "conflict: an organization with this `slug` already exists",
        "{}",
        r.text
    );

    // Group names are unique per organization whatever their case, on create and rename.
    let groups = format!("/api/organizations/{org_id}/groups");
    let r = api
        .post(&groups, &token, json!({"name": "Marketing"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = api
        .post(&groups, &token, json!({"name": "marketing"}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(
        r.json["error"]["message"],
        "conflict: `name`: a group named `marketing` already exists in the organization"
    );
    let r = api.post(&groups, &token, json!({"name": "Sales"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let sales = r.json["id"].as_str().unwrap().to_owned();
    let r = api
        .patch(
            &format!("/api/groups/{sales}"),
            &token,
            json!({"name": "MARKETING"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("`name`"), "{}", r.text);
    // Its own name in another case is fine.
    let r = api
        .patch(
            &format!("/api/groups/{sales}"),
            &token,
            json!({"name": "SALES"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Another organization may use the name.
    let other = org_fixture(&api.stores, "other").await;
    let r = api
        .post(
            &format!("/api/organizations/{}/groups", other.org),
            &token,
            json!({"name": "MARKETING"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}
on_every_backend!(conflicts_name_the_field_in_the_same_words_on_every_backend);

async fn money_sent_as_a_json_number_is_refused_with_its_path(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let owner = api.token(a.owner.email.as_str()).await;
    let member = format!("/api/organizations/{}/members/{}", a.org, a.member.id);
    let r = api
        .patch(&member, &owner, json!({"monthly_budget": 0.5}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        r.json["error"]["fields"][0]["path"], "monthly_budget",
        "{}",
        r.text
    );
    assert!(r.text.contains("decimal string"), "{}", r.text);
    let r = api
        .post(
            "/api/budgets",
            &owner,
            json!({"org_id": a.org, "scope": {"type": "org"}, "limit": 100, "period": "monthly"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["error"]["fields"][0]["path"], "limit", "{}", r.text);
    // The same amount as a string is taken.
    let r = api
        .patch(&member, &owner, json!({"monthly_budget": "0.5"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["monthly_budget"], "0.5");
}
on_every_backend!(money_sent_as_a_json_number_is_refused_with_its_path);

async fn chat_messages_with_an_unknown_role_are_refused(api: Api) {
    let token = api.token("admin@localhost").await;
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "usr", "content": "typo"}
    ]});
    let r = api
        .send(
            Method::POST,
            "/v1/chat/completions",
            Some(&token),
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json["error"]["param"], "messages[1].role", "{}", r.text);
    assert!(r.text.contains("`usr`"), "{}", r.text);
}
on_every_backend!(chat_messages_with_an_unknown_role_are_refused);

async fn two_authorization_headers_are_refused(api: Api) {
    let token = api.token("admin@localhost").await;
    for path in ["/api/me", "/v1/models"] {
        let req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("authorization", "Bearer someone-else")
            .body(Body::empty())
            .unwrap();
        let r = api.raw(req).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
        assert_eq!(r.json["error"]["code"], "bad_request", "{}", r.text);
        assert!(r.text.contains("Authorization"), "{}", r.text);
    }
    // One is fine.
    assert_eq!(api.get("/api/me", &token).await.status, StatusCode::OK);
}
on_every_backend!(two_authorization_headers_are_refused);

/// `max_users_per_group` holds when members are added one by one, when many are added at once,
/// and when an invitation places its invitee in a full group (refused, nothing joined).
async fn group_capacity_holds_on_every_path_and_under_concurrency(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let mut org = api.stores.directory.get_org(a.org).await.unwrap();
    org.settings.max_users_per_group = 4;
    api.stores.directory.update_org(&org).await.unwrap();
    let owner = api.token(a.owner.email.as_str()).await;
    let r = api
        .post(
            &format!("/api/organizations/{}/groups", a.org),
            &owner,
            json!({"name": "Ops"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let group = r.json["id"].as_str().unwrap().to_owned();
    let add = format!("/api/groups/{group}/members");

    // Ten members added at once: exactly four get in.
    let mut people = Vec::new();
    for i in 0..10 {
        let email = format!("p{i}-{}@acme.test", unique());
        let user = stratai_core::directory::User::new(
            Email::new(&email).unwrap(),
            None,
            stratai_core::directory::PlatformRole::User,
            Utc::now(),
        )
        .unwrap();
        api.stores.directory.create_user(&user).await.unwrap();
        api.stores
            .directory
            .add_member(
                a.org,
                &stratai_core::directory::Membership::new(
                    a.org,
                    user.id,
                    OrgRole::Member,
                    Utc::now(),
                ),
            )
            .await
            .unwrap();
        people.push(user);
    }
    let answers = futures::future::join_all(
        people
            .iter()
            .map(|u| api.post(&add, &owner, json!({"user_id": u.id}))),
    )
    .await;
    let admitted = answers
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(admitted, 4, "{answers:?}");
    for r in answers.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        assert!(r.text.contains("max_users_per_group"), "{}", r.text);
    }
    let members = api
        .stores
        .directory
        .list_group_members(a.org, group.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(members.len(), 4);
    // A member already in the full group may still change their role there.
    let inside = members[0].user_id;
    let r = api
        .post(&add, &owner, json!({"user_id": inside, "role": "lead"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // An invitation into the full group: refused at acceptance, nothing applied.
    let email = format!("late-{}@acme.test", unique());
    let (invitation, token) = Invitation::issue(
        InvitationRequest {
            email: Email::new(&email).unwrap(),
            org_id: a.org,
            role: OrgRole::Member,
            group_ids: vec![group.parse().unwrap()],
            profile_id: None,
            invited_by: Some(a.owner.id),
            valid_for: chrono::Duration::days(7),
        },
        Utc::now(),
    )
    .unwrap();
    api.stores
        .directory
        .create_invitation(a.org, &invitation)
        .await
        .unwrap();
    let late = api.token(&email).await;
    let r = api
        .send(
            Method::POST,
            &format!("/api/invitations/{}/accept", token.expose()),
            Some(&late),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("max_users_per_group"), "{}", r.text);
    let user = api
        .stores
        .directory
        .find_user_by_email(&Email::new(&email).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        api.stores
            .directory
            .get_member(a.org, user.id)
            .await
            .is_err()
    );
}
on_every_backend!(group_capacity_holds_on_every_path_and_under_concurrency);
