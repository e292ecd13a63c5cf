//! Issue 23's remaining people and access points, over HTTP on memory, SQLite and
//! PostgreSQL: `require_mfa` enforced from the provider's `amr`/`acr` claims (bearer tokens
//! and the browser sign-in, with the test's local OIDC issuer), invitations joined at every
//! later sign-in, and profiles that act (default tiers, default guardrails as member-level
//! rules replaced and removed with the profile, `available_to`, update and delete).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use harness::*;
use serde_json::{Value, json};
use stratai_core::directory::{Email, Invitation, InvitationRequest, OrgRole};
use stratai_core::ports::RuleScope;
use stratai_core::{OrgId, UserId};
use stratai_testkit::Scratch;

// ---------------------------------------------------------------------------------------------
// The server trusting the local OIDC issuer, on a real store
// ---------------------------------------------------------------------------------------------

struct OidcWorld {
    app: Router,
    stores: stratai_server::stores::Stores,
    issuer: TestIssuer,
    _scratch: Scratch,
    _guard: Guard,
}

async fn oidc_world(kind: Kind) -> Option<OidcWorld> {
    let (stores, guard) = stores(kind).await?;
    let issuer = TestIssuer::start().await;
    let scratch = Scratch::new();
    let env: std::collections::HashMap<String, String> = [
        ("OIDC_ISSUER", issuer.issuer.clone()),
        ("OIDC_AUDIENCE", AUDIENCE.to_owned()),
        ("OIDC_CLIENT_ID", CLIENT_ID.to_owned()),
        ("OIDC_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
        ("OIDC_REDIRECT_URL", REDIRECT.to_owned()),
        ("STRATAI_PUBLIC_URL", "http://localhost:8080".to_owned()),
        (
            "STRATAI_MAILBOX_DIR",
            scratch.join("mailbox").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = stratai_server::config::Config::from_parts(
        stratai_server::config::FileConfig::default(),
        &env,
    )
    .unwrap();
    let backends = stratai_server::server::Backends::seeded(stores.clone(), &config)
        .await
        .unwrap();
    let state = stratai_server::server::build_state(&config, backends).unwrap();
    let app = stratai_server::app::router(state, stratai_server::server::limits(&config));
    Some(OidcWorld {
        app,
        stores,
        issuer,
        _scratch: scratch,
        _guard: guard,
    })
}

impl OidcWorld {
    /// A bearer token of `email` (verified) under subject `sub`, with `extra` claims.
    fn token(&self, sub: &str, email: &str, extra: Value) -> String {
        let mut claims = self
            .issuer
            .claims(sub, json!({"email": email, "email_verified": true}));
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        self.issuer.mint(&claims)
    }

    async fn require_mfa(&self, org: OrgId, on: bool) {
        let mut o = self.stores.directory.get_org(org).await.unwrap();
        o.settings.require_mfa = on;
        self.stores.directory.update_org(&o).await.unwrap();
    }

    /// The browser sign-in: `/auth/login`, the provider grants `claims` (as an id token),
    /// `/auth/callback`. Answers the callback's response.
    async fn browser_sign_in(&self, claims: Value) -> TestResponse {
        let (status, headers, text) = self.callback_answer(claims).await;
        TestResponse {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// The callback's answer as a page: status, content type, text, whether a session
    /// cookie was set.
    async fn sign_in_raw(&self, claims: Value) -> (StatusCode, String, String, bool) {
        let (status, headers, text) = self.callback_answer(claims).await;
        let content_type = headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let session = set_cookie_value(&headers, "stratai_session").is_some();
        (status, content_type, text, session)
    }

    async fn callback_answer(&self, claims: Value) -> (StatusCode, axum::http::HeaderMap, String) {
        use tower::ServiceExt as _;
        let r = call(
            &self.app,
            Request::get("/auth/login").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        let location = url::Url::parse(r.headers["location"].to_str().unwrap()).unwrap();
        let q: std::collections::HashMap<String, String> =
            location.query_pairs().into_owned().collect();
        let (cookie_state, _) = set_cookie_value(&r.headers, "stratai_login_state").unwrap();
        let code = format!("code-{}", unique());
        self.issuer.grant(
            &code,
            Grant {
                challenge: q["code_challenge"].clone(),
                nonce: q["nonce"].clone(),
                claims,
            },
        );
        let res = self
            .app
            .clone()
            .oneshot(
                Request::get(format!("/auth/callback?code={code}&state={}", q["state"]))
                    .header("cookie", format!("stratai_login_state={cookie_state}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    fn id_claims(&self, sub: &str, email: &str, extra: Value) -> Value {
        let mut claims = self.issuer.claims(
            sub,
            json!({"aud": CLIENT_ID, "azp": CLIENT_ID, "email": email, "email_verified": true}),
        );
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    }
}

async fn get_with_cookie(app: &Router, path: &str, cookie: &str) -> TestResponse {
    call(
        app,
        Request::get(path)
            .header("cookie", cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

/// `require_mfa` on bearer tokens: refused without a second factor in `amr`/`acr` for a
/// member of an organization requiring it (a JSON error with its own code, and the RFC 9470
/// step-up challenge), accepted with one; a member of an organization that does not require
/// it is fine either way.
async fn require_mfa_holds_for_bearer_tokens(kind: Kind) {
    let Some(w) = oidc_world(kind).await else {
        return;
    };
    let a = org_fixture(&w.stores, "acme").await;
    let b = org_fixture(&w.stores, "globex").await;
    let n = unique();
    let a_sub = format!("auth0|a-{n}");
    let b_sub = format!("auth0|b-{n}");
    let a_email = a.member.email.as_str().to_owned();
    let b_email = b.member.email.as_str().to_owned();
    let one_factor = json!({"amr": ["pwd"]});

    // Nobody requires MFA yet: a one-factor token works (and links the account).
    let r = get_me(&w.app, &w.token(&a_sub, &a_email, one_factor.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    w.require_mfa(a.org, true).await;
    let r = get_me(&w.app, &w.token(&a_sub, &a_email, one_factor.clone())).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "mfa_required", "{:?}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("multi-factor"), "{message}");
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer error=\"insufficient_user_authentication\""
    );
    // No claim at all is one factor too; the admin API is refused the same way.
    let bare = w.token(&a_sub, &a_email, json!({}));
    assert_eq!(get_me(&w.app, &bare).await.status, StatusCode::FORBIDDEN);
    let r = call(
        &w.app,
        Request::get("/api/me")
            .header("authorization", format!("Bearer {bare}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"]["code"], "mfa_required");

    // A second factor, as `amr` or as `acr`, passes.
    let r = get_me(
        &w.app,
        &w.token(&a_sub, &a_email, json!({"amr": ["pwd", "mfa"]})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let pape = "http://schemas.openid.net/pape/policies/2007/06/multi-factor";
    let r = get_me(&w.app, &w.token(&a_sub, &a_email, json!({"acr": pape}))).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // Globex does not require it: its member signs in with one factor.
    let r = get_me(&w.app, &w.token(&b_sub, &b_email, one_factor.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // Turned off again, one factor is enough.
    w.require_mfa(a.org, false).await;
    let r = get_me(&w.app, &w.token(&a_sub, &a_email, one_factor)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}
on_every_kind!(require_mfa_holds_for_bearer_tokens);

/// `require_mfa` at the browser sign-in: a one-factor sign-in is refused with a page that says
/// why and starts no session; a two-factor one signs in; a session opened with one factor is
/// refused from the moment the organization starts requiring MFA.
async fn require_mfa_holds_at_browser_sign_in(kind: Kind) {
    let Some(w) = oidc_world(kind).await else {
        return;
    };
    let a = org_fixture(&w.stores, "acme").await;
    let n = unique();
    let sub = format!("auth0|browser-{n}");
    let email = a.member.email.as_str().to_owned();

    // Signed in with one factor while MFA is not required: a session.
    let r = w
        .browser_sign_in(w.id_claims(&sub, &email, json!({"amr": ["pwd"]})))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    let (one_factor_session, _) = set_cookie_value(&r.headers, "stratai_session").unwrap();
    let one_factor_cookie = format!("stratai_session={one_factor_session}");
    assert_eq!(
        get_with_cookie(&w.app, "/auth/me", &one_factor_cookie)
            .await
            .status,
        StatusCode::OK
    );

    w.require_mfa(a.org, true).await;
    // That session is refused now.
    let r = get_with_cookie(&w.app, "/auth/me", &one_factor_cookie).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"]["code"], "mfa_required");

    // A new one-factor sign-in: a page, no session.
    let res = w
        .sign_in_raw(w.id_claims(&sub, &email, json!({"amr": ["pwd"]})))
        .await;
    assert_eq!(res.0, StatusCode::FORBIDDEN);
    assert!(res.1.starts_with("text/html"), "{}", res.1);
    assert!(
        res.2.contains("Multi-factor authentication required") && res.2.contains("/auth/login"),
        "{}",
        res.2
    );
    assert!(!res.3, "no session cookie on a refused sign-in");

    // With a second factor: signed in, and the session works.
    let r = w
        .browser_sign_in(w.id_claims(&sub, &email, json!({"amr": ["pwd", "otp", "mfa"]})))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    let (session, _) = set_cookie_value(&r.headers, "stratai_session").unwrap();
    let r = get_with_cookie(&w.app, "/auth/me", &format!("stratai_session={session}")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}
on_every_kind!(require_mfa_holds_at_browser_sign_in);

fn invite(org: OrgId, email: &str, invited_by: UserId) -> Invitation {
    Invitation::issue(
        InvitationRequest {
            email: Email::new(email).unwrap(),
            org_id: org,
            role: OrgRole::Member,
            group_ids: vec![],
            profile_id: None,
            invited_by: Some(invited_by),
            valid_for: chrono::Duration::days(7),
        },
        Utc::now(),
    )
    .unwrap()
    .0
}

/// A person who already has an account joins an invitation sent to their verified email at
/// their next browser sign-in (not only at the first).
async fn a_later_browser_sign_in_joins_new_invitations(kind: Kind) {
    let Some(w) = oidc_world(kind).await else {
        return;
    };
    let a = org_fixture(&w.stores, "acme").await;
    let b = org_fixture(&w.stores, "globex").await;
    let sub = format!("auth0|later-{}", unique());
    let email = a.member.email.as_str().to_owned();
    let r = w
        .browser_sign_in(w.id_claims(&sub, &email, json!({})))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    assert!(
        w.stores
            .directory
            .get_member(b.org, a.member.id)
            .await
            .is_err()
    );

    let invitation = invite(b.org, &email.to_uppercase(), b.admin.id);
    w.stores
        .directory
        .create_invitation(b.org, &invitation)
        .await
        .unwrap();
    let r = w
        .browser_sign_in(w.id_claims(&sub, &email, json!({})))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    let member = w
        .stores
        .directory
        .get_member(b.org, a.member.id)
        .await
        .unwrap();
    assert_eq!(member.role, OrgRole::Member);
    let stored = w
        .stores
        .directory
        .list_invitations(b.org)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == invitation.id)
        .unwrap();
    assert_eq!(
        stored.status,
        stratai_core::directory::InvitationStatus::Accepted
    );
    // An unverified email at a later sign-in joins nothing.
    let c = org_fixture(&w.stores, "initech").await;
    w.stores
        .directory
        .create_invitation(c.org, &invite(c.org, &email, c.admin.id))
        .await
        .unwrap();
    let r = w
        .browser_sign_in(w.id_claims(&sub, &email, json!({"email_verified": false})))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    assert!(
        w.stores
            .directory
            .get_member(c.org, a.member.id)
            .await
            .is_err()
    );
}
on_every_kind!(a_later_browser_sign_in_joins_new_invitations);

/// Dev mode: a later sign-in (`POST /auth/dev/token`) joins a new invitation too.
async fn a_later_dev_sign_in_joins_new_invitations(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let b = org_fixture(&api.stores, "globex").await;
    let email = a.member.email.as_str().to_owned();
    let token = api.token(&email).await;
    assert_eq!(
        api.get("/api/me", &token).await.json["memberships"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let admin = api.token(b.admin.email.as_str()).await;
    let r = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": b.org, "email": email}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let token = api.token(&email).await;
    let me = api.get("/api/me", &token).await;
    let orgs: Vec<&str> = me.json["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["org_id"].as_str().unwrap())
        .collect();
    assert!(orgs.contains(&b.org.to_string().as_str()), "{orgs:?}");
}
on_every_backend!(a_later_dev_sign_in_joins_new_invitations);

// ---------------------------------------------------------------------------------------------
// Profiles that act
// ---------------------------------------------------------------------------------------------

fn guardrail(name: &str, topic: &str) -> Value {
    json!({"name": name, "rule_type": "content_filter", "config": {"blocked_topics": [topic]}, "action": "block"})
}

/// The member-level rules of `user` in `org`, by name (sorted).
async fn member_rules(api: &Api, org: OrgId, user: UserId) -> Vec<String> {
    let mut names: Vec<String> = api
        .stores
        .guardrails
        .list_org_rules(org)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| {
            r.scope
                == RuleScope::User {
                    org_id: org,
                    user_id: user,
                }
        })
        .map(|r| r.name)
        .collect();
    names.sort();
    names
}

/// A profile's default guardrails become member-level rules when a member is given it; an
/// edit of the profile reaches its members; another profile replaces them and `null` removes
/// them; a rule an admin wrote by hand for the member stays through all of it. Delete is
/// refused while someone holds the profile.
async fn profiles_give_tiers_and_guardrails(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let root = api.token("admin@localhost").await;
    let admin = api.token(a.admin.email.as_str()).await;
    let n = unique();

    // Bad default guardrails are refused with the rule's field path.
    let r = api
        .post(
            "/api/profiles",
            &root,
            json!({"name": format!("bad {n}"), "default_tiers": ["basic"],
                   "default_guardrails": [guardrail("ok", "x"), {"name": "bad", "rule_type": "content_filter", "config": {"blocked_patterns": ["("]}, "action": "block"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let path = r.json["error"]["fields"][0]["path"].as_str().unwrap();
    assert!(path.starts_with("default_guardrails[1].config"), "{path}");
    let r = api
        .post(
            "/api/profiles",
            &root,
            json!({"name": format!("bad {n}"), "default_tiers": ["basic"],
                   "default_guardrails": [{"name": "x", "rule_type": "content_filter"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);

    let r = api
        .post(
            "/api/profiles",
            &root,
            json!({"name": format!("Contractor {n}"), "default_tiers": ["basic"],
                   "default_guardrails": [guardrail("no project x", "kestrel")]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let contractor = r.json["id"].as_str().unwrap().to_owned();
    let r = api
        .post(
            "/api/profiles",
            &root,
            json!({"name": format!("Analyst {n}"), "default_tiers": ["basic", "standard"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let analyst = r.json["id"].as_str().unwrap().to_owned();

    // A rule written by hand for the member.
    let r = api
        .post(
            &format!("/api/organizations/{}/guardrails", a.org),
            &admin,
            json!({"name": "hand written", "rule_type": "content_filter",
                   "config": {"blocked_topics": ["salaries"]},
                   "scope": {"level": "user", "user_id": a.member.id}, "action": "block"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let member_path = format!("/api/organizations/{}/members/{}", a.org, a.member.id);
    let r = api
        .patch(&member_path, &admin, json!({"profile_id": contractor}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["allowed_tiers"], json!(["basic"]));
    assert_eq!(
        member_rules(&api, a.org, a.member.id).await,
        ["hand written", "no project x"]
    );
    // The rule acts: the member's request about kestrel is refused by it (once the
    // gateway has reloaded its policy, as it does every reload interval).
    api.state
        .gateway()
        .unwrap()
        .pipeline
        .reload_guardrails()
        .await
        .unwrap();
    let explain = api
        .post(
            "/api/explain",
            &admin,
            json!({"model": stratai_core::tiers::default_tiers()[0].models[0].to_string(),
                   "org": a.org.to_string(), "user": a.member.id.to_string(),
                   "messages": [{"role": "user", "content": "tell me about kestrel"}]}),
        )
        .await;
    assert_eq!(explain.status, StatusCode::OK, "{}", explain.text);
    assert!(
        explain.text.contains("no project x") && explain.text.contains("deny"),
        "{}",
        explain.text
    );

    // The profile's guardrails change: every member holding it gets the new set.
    let r = api
        .patch(
            &format!("/api/profiles/{contractor}"),
            &root,
            json!({"default_guardrails": [guardrail("no project y", "project y"), guardrail("no project z", "project z")],
                   "description": "contractors"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["description"], "contractors");
    assert_eq!(
        member_rules(&api, a.org, a.member.id).await,
        ["hand written", "no project y", "no project z"]
    );
    // Another profile replaces them (and its tiers come with it).
    let r = api
        .patch(&member_path, &admin, json!({"profile_id": analyst}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["allowed_tiers"], json!(["basic", "standard"]));
    assert_eq!(
        member_rules(&api, a.org, a.member.id).await,
        ["hand written"]
    );
    let r = api
        .patch(&member_path, &admin, json!({"profile_id": contractor}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(member_rules(&api, a.org, a.member.id).await.len(), 3);

    // Delete is refused while the member holds it, with the count.
    let r = api
        .delete(&format!("/api/profiles/{contractor}"), &root)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("1 member"), "{}", r.text);
    // An org admin may not edit or delete profiles.
    let r = api
        .delete(&format!("/api/profiles/{contractor}"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = api
        .patch(
            &format!("/api/profiles/{contractor}"),
            &admin,
            json!({"name": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    // Taken away: its rules go, the hand-written one stays; then the profile can go.
    let r = api
        .patch(&member_path, &admin, json!({"profile_id": null}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        member_rules(&api, a.org, a.member.id).await,
        ["hand written"]
    );
    let r = api
        .delete(&format!("/api/profiles/{contractor}"), &root)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = api.get(&format!("/api/profiles/{contractor}"), &root).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = api
        .delete(&format!("/api/profiles/{contractor}"), &root)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // Updates validate like creation.
    let r = api
        .patch(
            &format!("/api/profiles/{analyst}"),
            &root,
            json!({"default_tiers": ["no-such-tier"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("default_tiers"), "{}", r.text);
    let r = api
        .patch(
            &format!("/api/profiles/{analyst}"),
            &root,
            json!({"colour": "red"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    // Narrowing `available_to` away from an organization where someone holds it is refused.
    let r = api
        .patch(&member_path, &admin, json!({"profile_id": analyst}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api
        .patch(
            &format!("/api/profiles/{analyst}"),
            &root,
            json!({"available_to": "internal"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("available_to"), "{}", r.text);
}
on_every_backend!(profiles_give_tiers_and_guardrails);

/// An invitation with a profile: its tiers and guardrails are the new member's, whether the
/// invitation is joined at the first sign-in or accepted through the API; a profile not
/// available to the organization cannot be put on an invitation.
async fn invitations_carry_their_profile(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let b = org_fixture(&api.stores, "globex").await;
    let root = api.token("admin@localhost").await;
    let admin = api.token(a.admin.email.as_str()).await;
    let n = unique();
    let r = api
        .post(
            "/api/profiles",
            &root,
            json!({"name": format!("Guest {n}"), "default_tiers": ["basic"],
                   "default_guardrails": [guardrail("no project x", "project x")]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let guest = r.json["id"].as_str().unwrap().to_owned();
    let r = api
        .post(
            "/api/profiles",
            &root,
            json!({"name": format!("Staff {n}"), "default_tiers": ["basic"], "available_to": "internal"}),
        )
        .await;
    let staff = r.json["id"].as_str().unwrap().to_owned();
    let r = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": a.org, "email": format!("x-{n}@acme.test"), "profile_id": staff}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["error"]["fields"][0]["path"], "profile_id");

    // Joined at the first sign-in.
    let newcomer = format!("new-{n}@acme.test");
    let r = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": a.org, "email": newcomer, "profile_id": guest}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let token = api.token(&newcomer).await;
    let me = api.get("/api/me", &token).await;
    let user: UserId = me.json["user"]["id"].as_str().unwrap().parse().unwrap();
    let m = api.stores.directory.get_member(a.org, user).await.unwrap();
    assert_eq!(m.profile_id.unwrap().to_string(), guest);
    assert_eq!(m.allowed_tiers.unwrap().len(), 1);
    assert_eq!(member_rules(&api, a.org, user).await, ["no project x"]);

    // Accepted through the API by someone who already has an account (signed in before the
    // invitation was sent).
    let existing = b.member.email.as_str().to_owned();
    let token = api.token(&existing).await;
    let r = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": a.org, "email": existing, "profile_id": guest}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let invitation_token = r.json["token"].as_str().unwrap().to_owned();
    let r = api
        .post(
            &format!("/api/invitations/{invitation_token}/accept"),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["allowed_tiers"], json!(["basic"]));
    assert_eq!(
        member_rules(&api, a.org, b.member.id).await,
        ["no project x"]
    );
}
on_every_backend!(invitations_carry_their_profile);
