//! The admin API end to end through HTTP, on memory, SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::Utc;
use harness::*;
use serde_json::json;

/// The README's session: dev token as the super admin -> create an org -> invite a user (the
/// email lands in the dev mailbox) -> the user's first sign-in joins the organization -> lists
/// their accessible tiers.
async fn readme_session(api: Api) {
    let admin = api.token("admin@localhost").await;
    let n = unique();
    let r = api
        .post(
            "/api/organizations",
            &admin,
            json!({"name": "Acme", "slug": format!("acme-{n}"), "owner_email": format!("boss-{n}@acme.test")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let org = r.json["id"].as_str().unwrap().to_owned();

    let invitee = format!("ann-{n}@acme.test");
    let r = api
        .post(
            &format!("/api/organizations/{org}/members"),
            &admin,
            json!({"email": invitee}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let token = r.json["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 64);
    assert!(!r.text.contains("token_hash"));

    // The invitation is readable with its token alone.
    let r = api
        .send(
            Method::GET,
            &format!("/api/invitations/{token}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["status"], "pending");
    assert_eq!(r.json["organization"], "Acme");

    // The email went to the dev mailbox, with the link to the accept page.
    let mailbox = std::fs::read_dir(api.scratch.join("mailbox")).unwrap();
    let mails: Vec<String> = mailbox
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains(&invitee), "{}", mails[0]);
    assert!(
        mails[0].replace("=\r\n", "").contains(&token[..32]),
        "{}",
        mails[0]
    );

    // The invitee's first sign-in (a dev token creates the account, as a first OIDC login
    // would) joins the organization: the invitation is used.
    let ann = api.token(&invitee).await;
    let me = api.get("/api/me", &ann).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert!(me.text.contains(org.as_str()), "joined: {}", me.text);
    let r = api
        .send(
            Method::GET,
            &format!("/api/invitations/{token}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.json["status"], "accepted", "{}", r.text);
    // Single use.
    let again = api
        .send(
            Method::POST,
            &format!("/api/invitations/{token}/accept"),
            Some(&ann),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);

    let r = api.get("/api/tiers/accessible", &ann).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let accessible: Vec<&str> = r.json["accessible"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(accessible, vec!["basic", "standard"]);
    let locked = &r.json["locked"][0];
    assert_eq!(locked["slug"], "premium");
    assert_eq!(locked["reasons"][0]["reason"], "not_subscribed");
    assert_eq!(locked["hint"], "Upgrade to Premium");
    assert_eq!(locked["unlock_label"], "Unlock Premium");
}
on_every_backend!(readme_session);

async fn invitation_rules(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let admin = api.token(a.admin.email.as_str()).await;
    let org = a.org;
    // Admins cannot invite owners; owners can.
    let n = unique();
    let r = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": org, "email": format!("o-{n}@x.test"), "role": "owner"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["error"]["fields"][0]["path"], "role");
    let owner = api.token(a.owner.email.as_str()).await;
    let r = api
        .post(
            "/api/invitations",
            &owner,
            json!({"org_id": org, "email": format!("o-{n}@x.test"), "role": "owner"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Already a member.
    let r = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": org, "email": a.member.email.as_str()}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // Field paths on bad input; unknown fields refused.
    let r = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": org, "email": "nope", "valid_for_days": 99}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let paths: Vec<&str> = r.json["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["email", "valid_for_days"]);
    let r = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": org, "email": "a@b.test", "is_admin": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.json["error"]["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("is_admin")
    );

    // Accepting checks the email: someone else holding the token cannot use it.
    let invitee = format!("i-{n}@x.test");
    let r = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": org, "email": invitee}),
        )
        .await;
    let token = r.json["token"].as_str().unwrap().to_owned();
    // The token is shown once: neither it nor its hash is in any later answer.
    let listed = api
        .get(&format!("/api/organizations/{org}/invitations"), &admin)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(listed.text.contains(&invitee));
    assert!(!listed.text.contains(&token));
    assert!(
        !listed
            .text
            .contains(&stratai_core::directory::hash_token(&token))
    );
    let member = api.token(a.member.email.as_str()).await;
    let r = api
        .send(
            Method::POST,
            &format!("/api/invitations/{token}/accept"),
            Some(&member),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // Unknown and malformed tokens are 404.
    let r = api
        .send(
            Method::GET,
            &format!("/api/invitations/{}", "0".repeat(64)),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api
        .send(Method::GET, "/api/invitations/..%2F..%2Fetc", None, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
on_every_backend!(invitation_rules);

async fn concurrent_accepts_join_once(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let admin = api.token(a.admin.email.as_str()).await;
    let invitee = format!("race-{}@x.test", unique());
    // The invitee has an account and a token already, from before the invitation (a sign-in
    // with the invitation pending would join it itself).
    let user = stratai_core::directory::User::new(
        stratai_core::directory::Email::new(&invitee).unwrap(),
        None,
        stratai_core::directory::PlatformRole::User,
        Utc::now(),
    )
    .unwrap();
    api.stores.directory.create_user(&user).await.unwrap();
    let user_token = api.token(&invitee).await;
    let r = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": a.org, "email": invitee}),
        )
        .await;
    let token = r.json["token"].as_str().unwrap().to_owned();
    let api = std::sync::Arc::new(api);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let api = api.clone();
        let (token, user_token) = (token.clone(), user_token.clone());
        tasks.push(tokio::spawn(async move {
            api.send(
                Method::POST,
                &format!("/api/invitations/{token}/accept"),
                Some(&user_token),
                None,
            )
            .await
            .status
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 1, "exactly one acceptance");
    let members = api.stores.directory.list_members(a.org).await.unwrap();
    assert_eq!(members.len(), 6);
}
on_every_backend!(concurrent_accepts_join_once);

async fn bulk_invite_csv(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let admin = api.token(a.admin.email.as_str()).await;
    let n = unique();
    let csv_req = |body: String| {
        Request::post(format!("/api/organizations/{}/members", a.org))
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", "text/csv")
            .body(Body::from(body))
            .unwrap()
    };
    // One bad row: nothing is written, every problem is reported with its row.
    let bad = format!(
        "email,role,groups\nx-{n}@acme.test,member,Engineering\nnot-an-email,member,\ny-{n}@acme.test,boss,Nope\n"
    );
    let r = api.raw(csv_req(bad)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let paths: Vec<&str> = r.json["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"rows[2].email")
            && paths.contains(&"rows[3].role")
            && paths.contains(&"rows[3].groups"),
        "{paths:?}"
    );
    assert_eq!(
        api.stores
            .directory
            .list_invitations(a.org)
            .await
            .unwrap()
            .len(),
        1,
        "nothing half-done"
    );

    let good = format!(
        "email,role,groups\nx-{n}@acme.test,member,Engineering\n{},member,\nz-{n}@acme.test,admin,\n",
        a.member.email
    );
    let r = api.raw(csv_req(good)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["created"], 2);
    assert_eq!(r.json["already_member"], 1);
    assert_eq!(r.json["rows"][1]["status"], "already_member");
    assert_eq!(r.json["rows"][0]["token"].as_str().unwrap().len(), 64);
    let invitations = api.stores.directory.list_invitations(a.org).await.unwrap();
    assert_eq!(invitations.len(), 3);
    let x = invitations
        .iter()
        .find(|i| i.email.as_str() == format!("x-{n}@acme.test"))
        .unwrap();
    assert_eq!(x.group_ids, vec![a.group]);
}
on_every_backend!(bulk_invite_csv);

async fn members_groups_and_owners(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let org = a.org;
    let admin = api.token(a.admin.email.as_str()).await;
    let owner = api.token(a.owner.email.as_str()).await;
    let member = api.token(a.member.email.as_str()).await;
    // A member cannot raise their own role.
    let r = api
        .patch(
            &format!("/api/organizations/{org}/members/{}", a.member.id),
            &member,
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // An admin cannot make an owner; an owner can.
    let r = api
        .patch(
            &format!("/api/organizations/{org}/members/{}", a.member.id),
            &admin,
            json!({"role": "owner"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = api
        .patch(
            &format!("/api/organizations/{org}/members/{}", a.admin.id),
            &admin,
            json!({"allowed_tiers": ["basic"], "monthly_budget": "12.50"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["allowed_tiers"], json!(["basic"]));
    let r = api
        .patch(
            &format!("/api/organizations/{org}/members/{}", a.admin.id),
            &admin,
            json!({"allowed_tiers": ["gold"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["error"]["fields"][0]["path"], "allowed_tiers[0]");
    // The last owner can be neither demoted nor removed.
    let r = api
        .patch(
            &format!("/api/organizations/{org}/members/{}", a.owner.id),
            &owner,
            json!({"role": "member"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = api
        .delete(
            &format!("/api/organizations/{org}/members/{}", a.owner.id),
            &owner,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);

    // Groups: create, rename, restrict, add a member; a group restriction locks tiers.
    let r = api
        .post(
            &format!("/api/organizations/{org}/groups"),
            &admin,
            json!({"name": "Legal", "allowed_tiers": ["basic"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let g = r.json["id"].as_str().unwrap().to_owned();
    let r = api
        .post(
            &format!("/api/organizations/{org}/groups"),
            &admin,
            json!({"name": "Legal"}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "duplicate group name: {}",
        r.text
    );
    let r = api
        .post(
            &format!("/api/groups/{g}/members"),
            &admin,
            json!({"user_id": a.member.id}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = api
        .get(&format!("/api/tiers/accessible?org_id={org}"), &member)
        .await;
    let locked: Vec<&str> = r.json["locked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(locked, vec!["standard", "premium"], "{}", r.text);
    assert_eq!(
        r.json["locked"][0]["reasons"][0]["reason"],
        "restricted_by_group"
    );
    // A user from another organization cannot be put in the group.
    let b = org_fixture(&api.stores, "globex").await;
    let r = api
        .post(
            &format!("/api/groups/{g}/members"),
            &admin,
            json!({"user_id": b.member.id}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = api
        .patch(
            &format!("/api/groups/{g}"),
            &admin,
            json!({"name": "Legal & Compliance", "allowed_tiers": null}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json["allowed_tiers"].is_null());
    let r = api
        .delete(&format!("/api/groups/{g}/members/{}", a.member.id), &admin)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api.delete(&format!("/api/groups/{g}"), &admin).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api.delete(&format!("/api/groups/{g}"), &admin).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Removing a member.
    let r = api
        .delete(
            &format!("/api/organizations/{org}/members/{}", a.gmember.id),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api
        .get(&format!("/api/organizations/{org}/members"), &admin)
        .await;
    assert_eq!(r.json.as_array().unwrap().len(), 4);
}
on_every_backend!(members_groups_and_owners);

async fn orgs_budgets_usage(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let org = a.org;
    let admin = api.token(a.admin.email.as_str()).await;
    let member = api.token(a.member.email.as_str()).await;
    let sup = api.token("admin@localhost").await;
    // Settings: admins may change them, not the plan.
    let r = api.patch(&format!("/api/organizations/{org}"), &admin, json!({"name": "Acme Corp", "settings": {"allowed_tiers": ["basic"], "default_tier": "basic", "max_users_per_group": 5, "require_mfa": false}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api
        .patch(
            &format!("/api/organizations/{org}"),
            &admin,
            json!({"billing_plan": "enterprise"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api.patch(&format!("/api/organizations/{org}"), &admin, json!({"settings": {"allowed_tiers": ["basic"], "default_tier": "premium", "max_users_per_group": 5, "require_mfa": false}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        r.json["error"]["fields"][0]["path"],
        "settings.default_tier"
    );
    // Budgets.
    let r = api
        .post(
            "/api/budgets",
            &admin,
            json!({"org_id": org, "scope": {"type": "org"}, "limit": "100", "period": "monthly"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let budget = r.json["id"].as_str().unwrap().to_owned();
    let r = api
        .patch(
            &format!("/api/budgets/{budget}"),
            &admin,
            json!({"limit": "250", "alert_threshold": "0.9"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["limit"], "250");
    let r = api
        .patch(
            &format!("/api/budgets/{budget}"),
            &admin,
            json!({"alert_threshold": "1.5"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = api.get(&format!("/api/budgets?org_id={org}"), &admin).await;
    assert_eq!(r.json.as_array().unwrap().len(), 2, "{}", r.text);
    let r = api
        .get(&format!("/api/budgets?org_id={org}&scope=user"), &admin)
        .await;
    assert_eq!(r.json.as_array().unwrap().len(), 1, "{}", r.text);
    let r = api
        .get(&format!("/api/budgets?org_id={org}&bogus=1"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Usage: a member sees their own, admins see all; the export is CSV.
    let now = Utc::now();
    let amount =
        |units: i64| stratai_core::money::Money::new(rust_decimal::Decimal::new(units, 4)).unwrap();
    let record = |user: &stratai_core::directory::User, cost: i64| {
        stratai_testkit::usage_record(org, user.id)
            .tier(stratai_core::tiers::BASIC_TIER_ID)
            .tokens(100, 50)
            .cost(amount(cost))
            .billed(amount(cost * 2))
            .at(now)
            .build()
    };
    let records = vec![
        record(&a.member, 10),
        record(&a.member, 20),
        record(&a.admin, 5),
    ];
    api.stores.usage.append(org, &records).await.unwrap();
    let r = api
        .get(&format!("/api/usage?org_id={org}&group_by=user"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["rows"].as_array().unwrap().len(), 2);
    assert_eq!(r.json["totals"]["requests"], 3);
    let r = api.get(&format!("/api/usage?org_id={org}"), &member).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api
        .get(
            &format!("/api/usage?org_id={org}&user_id={}", a.member.id),
            &member,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["totals"]["requests"], 2);
    let r = api
        .get(
            &format!("/api/usage?org_id={org}&user_id={}", a.admin.id),
            &member,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api
        .get(&format!("/api/usage?org_id={org}&group_by=planet"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["error"]["fields"][0]["path"], "group_by[0]");
    let r = api
        .get(&format!("/api/usage/export?org_id={org}"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let lines: Vec<&str> = r.text.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.text);
    assert!(lines[0].starts_with("request_id,created_at,org_id"));
    assert!(r.text.contains("gpt-4o-mini"));
    // The export is core's CSV: it reads back into the same records, amounts exact.
    let back = stratai_core::usage::read_csv(r.text.as_bytes()).unwrap();
    assert_eq!(back.len(), 3);
    assert!(back.iter().all(|rec| rec.org_id == org));

    // Deactivation is the platform's.
    let r = api
        .delete(&format!("/api/organizations/{org}"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api.delete(&format!("/api/organizations/{org}"), &sup).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["active"], false);
    // Bad ids are 404, not 400 or 500.
    let r = api.get("/api/organizations/not-a-uuid", &sup).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
on_every_backend!(orgs_budgets_usage);

async fn seed_is_idempotent_and_readiness_checks_the_database(api: Api) {
    let config = stratai_server::config::Config::from_parts(
        stratai_server::config::FileConfig::default(),
        &std::collections::HashMap::<String, String>::new(),
    )
    .unwrap();
    let report = stratai_store::seed::seed(&api.stores, &config.super_admin_email)
        .await
        .unwrap();
    assert_eq!(report.tiers_created, 0);
    assert_eq!(report.internal_org.id, api.internal_org);
    assert_eq!(report.super_admin.id, api.super_admin.id);
    let r = api.send(Method::GET, "/health/ready", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let sup = api.token("admin@localhost").await;
    let r = api.get("/api/tiers/accessible", &sup).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json["accessible"].as_array().unwrap().len(),
        3,
        "the internal org has every tier"
    );
}
on_every_backend!(seed_is_idempotent_and_readiness_checks_the_database);

async fn guardrails_at_every_scope(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let org = a.org;
    let admin = api.token(a.admin.email.as_str()).await;
    let sup = api.token("admin@localhost").await;
    let base = format!("/api/organizations/{org}/guardrails");
    let rule = |scope: serde_json::Value, config: serde_json::Value| json!({"name": "r", "rule_type": "content_filter", "config": config, "scope": scope, "action": "block"});
    for scope in [
        json!({"level": "org"}),
        json!({"level": "group", "group_id": a.group}),
        json!({"level": "user", "user_id": a.member.id}),
        json!({"level": "tier", "tier_id": a.tier}),
    ] {
        let r = api
            .post(
                &base,
                &admin,
                rule(scope.clone(), json!({"blocked_topics": ["x"]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{scope}: {}", r.text);
    }
    // Validation by stratai-guardrails, with its field paths.
    let r = api
        .post(
            &base,
            &admin,
            rule(
                json!({"level": "org"}),
                json!({"blocked_patterns": ["ok", "(unclosed"]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        r.json["error"]["fields"][0]["path"],
        "config.blocked_patterns[1]"
    );
    let r = api
        .post(
            &base,
            &admin,
            rule(
                json!({"level": "org"}),
                json!({"blocked_topics": ["x"], "colour": "red"}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = api
        .post(&base, &admin, json!({"name": "r", "rule_type": "output_modifier", "config": {"append": "x"}, "scope": {"level": "org"}, "action": "block"}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an action without meaning for the type: {}",
        r.text
    );
    // Scopes must exist in this organization; the organization comes from the path only.
    let b = org_fixture(&api.stores, "globex").await;
    let r = api
        .post(
            &base,
            &admin,
            rule(
                json!({"level": "group", "group_id": b.group}),
                json!({"blocked_topics": ["x"]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["error"]["fields"][0]["path"], "scope.group_id");
    let r = api
        .post(
            &base,
            &admin,
            rule(
                json!({"level": "org", "org_id": b.org}),
                json!({"blocked_topics": ["x"]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    // Admins cannot write platform rules; the super admin can.
    let r = api
        .post(
            "/api/guardrails",
            &admin,
            rule(json!({"level": "global"}), json!({"blocked_topics": ["x"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api
        .post(
            "/api/guardrails",
            &sup,
            rule(json!({"level": "global"}), json!({"blocked_topics": ["x"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let r = api
        .patch(
            &format!("/api/guardrails/{id}"),
            &sup,
            json!({"active": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["active"], false);
    // List, update with re-validation, delete.
    let r = api.get(&base, &admin).await;
    assert_eq!(r.json.as_array().unwrap().len(), 5, "{}", r.text);
    let r = api
        .patch(
            &format!("{base}/{}", a.rule),
            &admin,
            json!({"config": {"blocked_topics": []}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = api.delete(&format!("{base}/{}", a.rule), &admin).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // Another organization's rule through our path: 404.
    let r = api.delete(&format!("{base}/{}", b.rule), &admin).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
on_every_backend!(guardrails_at_every_scope);

#[tokio::test]
async fn cli_invite_from_a_file() {
    let dir = stratai_testkit::Scratch::new();
    // The invitations' emails go to the test's own mailbox, not the crate's ./.stratai.
    let config = stratai_server::config::Config::from_parts(
        stratai_server::config::FileConfig::default(),
        &std::collections::HashMap::from([(
            "STRATAI_MAILBOX_DIR".to_owned(),
            dir.join("mailbox").display().to_string(),
        )]),
    )
    .unwrap();
    let stores = stratai_server::stores::Stores::memory();
    let good = dir.join("good.csv");
    std::fs::write(
        &good,
        "email,role\nann@pilot.test,member\nbob@pilot.test,admin\nadmin@localhost,member\n",
    )
    .unwrap();
    let backends = stratai_server::server::Backends::seeded(stores.clone(), &config)
        .await
        .unwrap();
    let outcome = stratai_server::cli::invite(&config, backends, "internal", &good, None)
        .await
        .unwrap();
    assert_eq!((outcome.created, outcome.already_member), (2, 1));
    let report = stratai_server::cli::report(&outcome);
    assert_eq!(report.last().unwrap(), "2 invited, 1 already members");

    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "email\ncarol@pilot.test\nnot-an-email\n").unwrap();
    let backends = stratai_server::server::Backends::seeded(stores.clone(), &config)
        .await
        .unwrap();
    let err = stratai_server::cli::invite(&config, backends, "internal", &bad, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("rows[2].email"), "{err}");
    let org = stores.directory.list_orgs().await.unwrap()[0].id;
    assert_eq!(
        stores.directory.list_invitations(org).await.unwrap().len(),
        2,
        "nothing half-done"
    );
}

async fn expired_invitations_cannot_be_accepted(api: Api) {
    use stratai_core::directory::{Email, Invitation, InvitationRequest, OrgRole};
    let a = org_fixture(&api.stores, "acme").await;
    let email = format!("late-{}@x.test", unique());
    // Issued eight days ago for seven days.
    let (invitation, token) = Invitation::issue(
        InvitationRequest {
            email: Email::new(&email).unwrap(),
            org_id: a.org,
            role: OrgRole::Member,
            group_ids: vec![],
            profile_id: None,
            invited_by: Some(a.owner.id),
            valid_for: chrono::Duration::days(7),
        },
        Utc::now() - chrono::Duration::days(8),
    )
    .unwrap();
    api.stores
        .directory
        .create_invitation(a.org, &invitation)
        .await
        .unwrap();
    let r = api
        .send(
            Method::GET,
            &format!("/api/invitations/{}", token.expose()),
            None,
            None,
        )
        .await;
    assert_eq!(r.json["status"], "expired", "{}", r.text);
    // The invitee has no account from an expired invitation (dev tokens need a live one) ...
    let r = api
        .send(
            Method::POST,
            "/auth/dev/token",
            None,
            Some(json!({"email": email})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    // ... and even with an account, the store refuses the acceptance.
    let user = stratai_core::directory::User::new(
        Email::new(&email).unwrap(),
        None,
        stratai_core::directory::PlatformRole::User,
        Utc::now(),
    )
    .unwrap();
    api.stores.directory.create_user(&user).await.unwrap();
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
    assert!(
        api.stores
            .directory
            .get_member(a.org, user.id)
            .await
            .is_err()
    );
}
on_every_backend!(expired_invitations_cannot_be_accepted);
