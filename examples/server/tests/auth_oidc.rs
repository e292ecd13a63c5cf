//! Bearer tokens and browser login against a local OIDC issuer, including a set of forged
//! tokens that must all be refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use harness::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};
use url::Url;

fn sign_with(header: Header, claims: &Value, key: &EncodingKey) -> String {
    encode(&header, claims, key).unwrap()
}

fn rs256(kid: Option<&str>) -> Header {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = kid.map(str::to_owned);
    h
}

#[tokio::test]
async fn a_valid_token_is_accepted_and_creates_the_user_on_first_use() {
    let issuer = TestIssuer::start().await;
    let server = oidc_server(&issuer, &[]).await;
    let token = issuer.mint(&issuer.claims("auth0|alice", json!({})));
    let r = get_me(&server.app, &token).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["email"], "auth0-alice@example.com");
    assert_eq!(r.body["super_admin"], false);
    // Second use: same user, found by subject.
    let again = get_me(&server.app, &token).await;
    assert_eq!(again.body["user_id"], r.body["user_id"]);
    // Auth0 access tokens carry an audience list (the API and the userinfo endpoint).
    let listed = issuer.mint(&issuer.claims(
        "auth0|alice",
        json!({"aud": [AUDIENCE, format!("{}userinfo", issuer.issuer)]}),
    ));
    assert_eq!(get_me(&server.app, &listed).await.status, StatusCode::OK);
    // Clock skew within the leeway (30 s) is tolerated.
    let now = get_current_timestamp();
    let skewed =
        issuer.mint(&issuer.claims("auth0|alice", json!({"exp": now - 10, "nbf": now + 10})));
    assert_eq!(get_me(&server.app, &skewed).await.status, StatusCode::OK);
}

#[tokio::test]
async fn forged_tokens_are_all_refused() {
    let issuer = TestIssuer::start().await;
    let other = TestIssuer::start_with_key(OTHER_KEY_PEM).await;
    let server = oidc_server(&issuer, &[]).await;
    // Load the keys with one good token first, so refusals are about the token, not the JWKS.
    let good = issuer.mint(&issuer.claims("auth0|good", json!({})));
    assert_eq!(get_me(&server.app, &good).await.status, StatusCode::OK);

    let now = get_current_timestamp();
    let claims = |extra: Value| issuer.claims("auth0|mallory", extra);
    let key = rsa_key(TEST_KEY_PEM);
    let mut forged: Vec<(&str, String)> = Vec::new();

    // alg none, with and without a signature part.
    let none_header = b64(&json!({"alg": "none", "typ": "JWT", "kid": KID}));
    let payload = b64(&claims(json!({})));
    forged.push(("alg none", format!("{none_header}.{payload}.")));
    forged.push((
        "alg none with signature",
        format!("{none_header}.{payload}.c2ln"),
    ));
    forged.push((
        "alg None",
        format!("{}.{payload}.", b64(&json!({"alg": "None", "kid": KID}))),
    ));

    // HS256 keyed with the RSA public key (the classic key-confusion attack).
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(KID.to_owned());
    forged.push((
        "HS256 with the RSA public key (PEM)",
        sign_with(
            hs.clone(),
            &claims(json!({})),
            &EncodingKey::from_secret(TEST_PUBLIC_PEM).unwrap(),
        ),
    ));
    let jwk = jwk_for(TEST_KEY_PEM, KID);
    forged.push((
        "HS256 with the JWK modulus as secret",
        sign_with(
            hs,
            &claims(json!({})),
            &EncodingKey::from_secret(jwk["n"].as_str().unwrap().as_bytes()).unwrap(),
        ),
    ));
    // RS512 header on a key published for RS256 only.
    let mut rs512 = Header::new(Algorithm::RS512);
    rs512.kid = Some(KID.to_owned());
    forged.push((
        "RS512 on an RS256 key",
        sign_with(rs512, &claims(json!({})), &key),
    ));
    // PS256 (same family) on an RS256 key.
    let mut ps256 = Header::new(Algorithm::PS256);
    ps256.kid = Some(KID.to_owned());
    forged.push((
        "PS256 on an RS256 key",
        sign_with(ps256, &claims(json!({})), &key),
    ));

    // Issuer and audience.
    forged.push((
        "wrong iss",
        issuer.mint(&claims(json!({"iss": "https://evil.example/"}))),
    ));
    forged.push((
        "iss without trailing slash",
        issuer.mint(&claims(json!({"iss": issuer.issuer.trim_end_matches('/')}))),
    ));
    forged.push(("missing iss", issuer.mint(&claims(json!({"iss": null})))));
    forged.push(("iss of wrong type", issuer.mint(&claims(json!({"iss": 7})))));
    forged.push((
        "wrong aud",
        issuer.mint(&claims(json!({"aud": "https://other-api.example"}))),
    ));
    forged.push((
        "aud list without ours",
        issuer.mint(&claims(json!({"aud": ["a", "b"]}))),
    ));
    forged.push(("missing aud", issuer.mint(&claims(json!({"aud": null})))));
    forged.push((
        "id token audience (client id) as bearer",
        issuer.mint(&claims(json!({"aud": CLIENT_ID}))),
    ));

    // Time.
    forged.push(("expired", issuer.mint(&claims(json!({"exp": now - 3600})))));
    forged.push((
        "expired beyond leeway",
        issuer.mint(&claims(json!({"exp": now - 45}))),
    ));
    forged.push((
        "nbf in the future",
        issuer.mint(&claims(json!({"nbf": now + 3600}))),
    ));
    forged.push((
        "exp as a string",
        issuer.mint(&claims(json!({"exp": "9999999999"}))),
    ));
    forged.push((
        "exp as a float",
        issuer.mint(&claims(json!({"exp": 9_999_999_999.5_f64}))),
    ));
    forged.push(("exp as a bool", issuer.mint(&claims(json!({"exp": true})))));
    forged.push(("exp negative", issuer.mint(&claims(json!({"exp": -1})))));
    forged.push(("missing exp", issuer.mint(&claims(json!({"exp": null})))));
    forged.push(("nbf as a string", issuer.mint(&claims(json!({"nbf": "0"})))));

    // Subject.
    forged.push(("missing sub", issuer.mint(&claims(json!({"sub": null})))));
    forged.push((
        "sub of wrong type",
        issuer.mint(&claims(json!({"sub": 42}))),
    ));
    forged.push(("empty sub", issuer.mint(&claims(json!({"sub": ""})))));

    // Key ids.
    forged.push((
        "unknown kid",
        sign_with(rs256(Some("rotated-away")), &claims(json!({})), &key),
    ));
    forged.push((
        "missing kid",
        sign_with(rs256(None), &claims(json!({})), &key),
    ));
    forged.push((
        "kid with path traversal",
        sign_with(
            rs256(Some("../../../../etc/passwd")),
            &claims(json!({})),
            &key,
        ),
    ));
    forged.push((
        "kid with absolute path",
        sign_with(rs256(Some("/dev/null")), &claims(json!({})), &key),
    ));
    forged.push((
        "kid with SQL",
        sign_with(rs256(Some("x' OR '1'='1")), &claims(json!({})), &key),
    ));
    forged.push((
        "kid with SQL statement",
        sign_with(
            rs256(Some("1; DROP TABLE users;--")),
            &claims(json!({})),
            &key,
        ),
    ));
    forged.push((
        "kid with url",
        sign_with(
            rs256(Some("https://evil.example/jwks.json")),
            &claims(json!({})),
            &key,
        ),
    ));

    // Other issuers and keys.
    let other_claims = other.claims("auth0|mallory", json!({}));
    forged.push(("token from another issuer", other.mint(&other_claims)));
    forged.push((
        "another key claiming our issuer",
        sign_with(
            rs256(Some(KID)),
            &claims(json!({})),
            &rsa_key(OTHER_KEY_PEM),
        ),
    ));
    let mut embedded = rs256(Some(KID));
    embedded.jwk = serde_json::from_value(jwk_for(OTHER_KEY_PEM, KID)).ok();
    embedded.jku = Some(format!("{}/jwks", other.base));
    forged.push((
        "embedded jwk/jku header with the attacker's key",
        sign_with(embedded, &claims(json!({})), &rsa_key(OTHER_KEY_PEM)),
    ));

    // Tampering and shape.
    let genuine = issuer.mint(&claims(json!({})));
    let parts: Vec<&str> = genuine.split('.').collect();
    let escalated = b64(&claims(
        json!({"sub": "auth0|admin", "email": "admin@localhost"}),
    ));
    forged.push((
        "payload swapped under a valid signature",
        format!("{}.{escalated}.{}", parts[0], parts[2]),
    ));
    forged.push(("signature stripped", format!("{}.{}.", parts[0], parts[1])));
    forged.push(("two parts", format!("{}.{}", parts[0], parts[1])));
    forged.push(("four parts", format!("{genuine}.x")));
    forged.push(("garbage", "a.b.c".to_owned()));
    forged.push((
        "oversized",
        format!("{}.{}.{}", parts[0], "A".repeat(20_000), parts[2]),
    ));

    for (name, token) in &forged {
        let r = get_me(&server.app, token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], "unauthenticated", "{name}");
        assert!(r.headers.contains_key("www-authenticate"), "{name}");
    }
    // No forged token created or linked a user (only the admin and "good" exist).
    assert!(server.directory.by_subject("auth0|mallory").await.is_none());
    assert!(server.directory.by_subject("auth0|admin").await.is_none());
    // The unknown/odd kids did not hammer the JWKS endpoint: the initial fetch only
    // (the refetch interval is 60 s by default).
    assert_eq!(
        issuer.jwks_hits(),
        1,
        "jwks fetched more than the rate limit allows"
    );
}

#[tokio::test]
async fn other_authorization_schemes_are_refused() {
    let issuer = TestIssuer::start().await;
    let server = oidc_server(&issuer, &[]).await;
    for value in ["Basic YWRtaW46YWRtaW4=", "Bearer", "Token abc", "bearer  "] {
        let req = Request::get("/auth/me")
            .header("authorization", value)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            call(&server.app, req).await.status,
            StatusCode::UNAUTHORIZED,
            "{value}"
        );
    }
    let req = Request::get("/auth/me").body(Body::empty()).unwrap();
    let r = call(&server.app, req).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.body["error"]["message"],
        "unauthenticated: missing credentials"
    );
}

#[tokio::test]
async fn unknown_kid_refetch_is_rate_limited_and_rotation_is_picked_up() {
    let issuer = TestIssuer::start().await;
    let server = oidc_server(&issuer, &[("OIDC_JWKS_MIN_REFRESH_SECS", "2")]).await;
    // Sign everything up front: RSA signing in a debug build is slow, and the interval
    // under test starts with the first fetch.
    let token = issuer.mint(&issuer.claims("auth0|bob", json!({})));
    let rotated = sign_with(
        rs256(Some("rotated-2")),
        &issuer.claims("auth0|bob", json!({})),
        &rsa_key(OTHER_KEY_PEM),
    );
    let unknown: Vec<String> = (0..25)
        .map(|i| {
            sign_with(
                rs256(Some(&format!("random-{i}"))),
                &issuer.claims("auth0|bob", json!({})),
                &rsa_key(TEST_KEY_PEM),
            )
        })
        .collect();
    let burst: Vec<String> = (0..20)
        .map(|i| {
            sign_with(
                rs256(Some(&format!("burst-{i}"))),
                &issuer.claims("auth0|bob", json!({})),
                &rsa_key(TEST_KEY_PEM),
            )
        })
        .collect();

    assert_eq!(get_me(&server.app, &token).await.status, StatusCode::OK);
    assert_eq!(issuer.jwks_hits(), 1);

    // The provider rotates in a new key.
    issuer.set_jwks(
        json!({"keys": [jwk_for(TEST_KEY_PEM, KID), jwk_for(OTHER_KEY_PEM, "rotated-2")]}),
    );

    // A burst of unknown kids within the interval: no refetch at all.
    for t in &unknown {
        assert_eq!(
            get_me(&server.app, t).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        get_me(&server.app, &rotated).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(issuer.jwks_hits(), 1);

    // After the interval, one refetch finds the rotated key.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get_me(&server.app, &rotated).await.status, StatusCode::OK);
    assert_eq!(issuer.jwks_hits(), 2);

    // Concurrent unknown kids after the next interval share one fetch.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut tasks = Vec::new();
    for t in burst {
        let app = server.app.clone();
        tasks.push(tokio::spawn(async move { get_me(&app, &t).await.status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(issuer.jwks_hits(), 3);
}

#[tokio::test]
async fn jwks_down_keeps_the_cached_keys() {
    let issuer = TestIssuer::start().await;
    let server = oidc_server(
        &issuer,
        &[
            ("OIDC_JWKS_MIN_REFRESH_SECS", "1"),
            ("OIDC_JWKS_MAX_AGE_SECS", "1"),
        ],
    )
    .await;
    let token = issuer.mint(&issuer.claims("auth0|carol", json!({})));
    assert_eq!(get_me(&server.app, &token).await.status, StatusCode::OK);
    issuer.set_jwks_up(false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The set is stale, the refresh fails, the cached key still verifies.
    let r = get_me(&server.app, &token).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(issuer.jwks_hits(), 2, "a refresh was attempted");
    // A garbage JWKS is no better than a down one: keys are kept.
    issuer.set_jwks_up(true);
    issuer.set_jwks(json!({"keys": "not a list"}));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get_me(&server.app, &token).await.status, StatusCode::OK);
    assert_eq!(issuer.jwks_hits(), 3);
    // Unknown kids are still refused as invalid tokens (401), not as an outage.
    let t = sign_with(
        rs256(Some("nope")),
        &issuer.claims("auth0|carol", json!({})),
        &rsa_key(TEST_KEY_PEM),
    );
    assert_eq!(
        get_me(&server.app, &t).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_provider_down_from_the_start_is_an_outage_not_a_login_failure() {
    let issuer = TestIssuer::start().await;
    issuer.set_jwks_up(false);
    let server = oidc_server(&issuer, &[]).await;
    let token = issuer.mint(&issuer.claims("auth0|dave", json!({})));
    let r = get_me(&server.app, &token).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "unavailable");
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_refused() {
    let issuer = TestIssuer::start().await;
    // Configured without the trailing slash: the document says otherwise (mix-up defence).
    let server = server_with(&[
        ("OIDC_ISSUER", issuer.issuer.trim_end_matches('/')),
        ("OIDC_AUDIENCE", AUDIENCE),
    ])
    .await;
    let mut claims = issuer.claims("auth0|erin", json!({}));
    claims["iss"] = json!(issuer.issuer.trim_end_matches('/'));
    let r = get_me(&server.app, &issuer.mint(&claims)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
}

#[tokio::test]
async fn unverified_email_neither_creates_nor_links() {
    let issuer = TestIssuer::start().await;
    let server = oidc_server(&issuer, &[]).await;
    // An attacker's account at the provider claiming the admin's email, unverified.
    let t = issuer.mint(&issuer.claims(
        "auth0|attacker",
        json!({"email": "admin@localhost", "email_verified": false}),
    ));
    let r = get_me(&server.app, &t).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert!(
        server
            .directory
            .by_subject("auth0|attacker")
            .await
            .is_none()
    );
    // email_verified as the string "true" is not a verification either.
    let t = issuer.mint(&issuer.claims(
        "auth0|attacker",
        json!({"email": "admin@localhost", "email_verified": "true"}),
    ));
    assert_eq!(get_me(&server.app, &t).await.status, StatusCode::FORBIDDEN);
    // No email at all: nothing to create the user from.
    let t = issuer.mint(&issuer.claims("auth0|anon", json!({"email": null})));
    assert_eq!(
        get_me(&server.app, &t).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn verified_email_links_once_and_a_second_subject_conflicts() {
    let issuer = TestIssuer::start().await;
    let server = oidc_server(&issuer, &[]).await;
    let t = issuer.mint(&issuer.claims("auth0|real-admin", json!({"email": "Admin@Localhost"})));
    let r = get_me(&server.app, &t).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["super_admin"], true);
    let t2 =
        issuer.mint(&issuer.claims("google-oauth2|someone", json!({"email": "admin@localhost"})));
    let r2 = get_me(&server.app, &t2).await;
    assert_eq!(r2.status, StatusCode::CONFLICT, "{:?}", r2.body);
}

#[tokio::test]
async fn deactivated_users_are_refused() {
    let issuer = TestIssuer::start().await;
    let server = oidc_server(&issuer, &[]).await;
    let t = issuer.mint(&issuer.claims("auth0|frank", json!({})));
    let r = get_me(&server.app, &t).await;
    assert_eq!(r.status, StatusCode::OK);
    let id = uuid::Uuid::parse_str(r.body["user_id"].as_str().unwrap()).unwrap();
    server.directory.set_active(id, false).await;
    assert_eq!(get_me(&server.app, &t).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_dev_token_route_does_not_exist_with_oidc() {
    let issuer = TestIssuer::start().await;
    let server = oidc_server(&issuer, &[]).await;
    let r = post_json(
        &server.app,
        "/auth/dev/token",
        r#"{"email":"admin@localhost"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

struct LoginStart {
    state: String,
    nonce: String,
    challenge: String,
    cookie: String,
}

async fn start_login(server: &TestServer, issuer: &TestIssuer) -> LoginStart {
    let r = call(
        &server.app,
        Request::get("/auth/login").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let location = Url::parse(r.headers["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        location.as_str().split('?').next().unwrap(),
        format!("{}/authorize", issuer.base)
    );
    let q: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], REDIRECT);
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(
        q["code_challenge"].len(),
        43,
        "S256 challenge is 32 bytes base64url"
    );
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43);
    let (cookie_state, raw) =
        set_cookie_value(&r.headers, "stratai_login_state").expect("state cookie");
    assert_eq!(cookie_state, q["state"]);
    assert!(
        raw.contains("HttpOnly")
            && raw.contains("SameSite=Lax")
            && raw.contains("Path=/auth/callback"),
        "{raw}"
    );
    LoginStart {
        state: q["state"].clone(),
        nonce: q["nonce"].clone(),
        challenge: q["code_challenge"].clone(),
        cookie: format!("stratai_login_state={cookie_state}"),
    }
}

fn id_claims(issuer: &TestIssuer, sub: &str) -> Value {
    issuer.claims(sub, json!({"aud": CLIENT_ID, "azp": CLIENT_ID}))
}

async fn callback(server: &TestServer, query: &str, cookie: Option<&str>) -> TestResponse {
    let mut req = Request::get(format!("/auth/callback?{query}"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    call(&server.app, req.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn login_redirect_carries_pkce_state_and_nonce_and_they_are_fresh() {
    let issuer = TestIssuer::start().await;
    let server = oidc_server(&issuer, &[]).await;
    let a = start_login(&server, &issuer).await;
    let b = start_login(&server, &issuer).await;
    assert_ne!(a.state, b.state);
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.challenge, b.challenge);
    // POST works too (the seed lists POST /auth/login).
    let r = call(
        &server.app,
        Request::post("/auth/login").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn full_login_session_and_logout() {
    let issuer = TestIssuer::start().await;
    let server = oidc_server(&issuer, &[]).await;
    let login = start_login(&server, &issuer).await;
    issuer.grant(
        "code-1",
        Grant {
            challenge: login.challenge.clone(),
            nonce: login.nonce.clone(),
            claims: id_claims(&issuer, "auth0|gina"),
        },
    );
    let r = callback(
        &server,
        &format!("code=code-1&state={}", login.state),
        Some(&login.cookie),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    assert_eq!(r.headers["location"], "/");
    let (session, raw) = set_cookie_value(&r.headers, "stratai_session").expect("session cookie");
    assert!(
        raw.contains("HttpOnly") && raw.contains("SameSite=Lax") && raw.contains("Path=/"),
        "{raw}"
    );
    assert!(
        !raw.contains("Secure"),
        "plain-http loopback dev setup: no Secure flag"
    );
    let cleared =
        set_cookie_value(&r.headers, "stratai_login_state").expect("state cookie cleared");
    assert!(cleared.1.contains("Max-Age=0"));

    let me = call(
        &server.app,
        Request::get("/auth/me")
            .header("cookie", format!("stratai_session={session}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    assert_eq!(me.body["email"], "auth0-gina@example.com");

    // The same state cannot be used twice.
    issuer.grant(
        "code-2",
        Grant {
            challenge: login.challenge.clone(),
            nonce: login.nonce.clone(),
            claims: id_claims(&issuer, "auth0|gina"),
        },
    );
    let replay = callback(
        &server,
        &format!("code=code-2&state={}", login.state),
        Some(&login.cookie),
    )
    .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);

    // Logout ends the session and sends the browser to the provider's logout.
    let out = call(
        &server.app,
        Request::post("/auth/logout")
            .header("cookie", format!("stratai_session={session}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.headers["location"]
            .to_str()
            .unwrap()
            .starts_with(&format!("{}/oidc/logout?client_id=", issuer.base))
    );
    assert!(
        set_cookie_value(&out.headers, "stratai_session")
            .unwrap()
            .1
            .contains("Max-Age=0")
    );
    let me = call(
        &server.app,
        Request::get("/auth/me")
            .header("cookie", format!("stratai_session={session}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn callback_rejects_wrong_or_missing_state() {
    let issuer = TestIssuer::start().await;
    let server = oidc_server(&issuer, &[]).await;
    let login = start_login(&server, &issuer).await;
    let grant = || Grant {
        challenge: login.challenge.clone(),
        nonce: login.nonce.clone(),
        claims: id_claims(&issuer, "auth0|hank"),
    };

    // State in the query differs from the browser's cookie (login CSRF).
    issuer.grant("c", grant());
    let r = callback(&server, "code=c&state=attacker-state", Some(&login.cookie)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Both forged consistently: no such pending login.
    let r = callback(
        &server,
        "code=c&state=forged",
        Some("stratai_login_state=forged"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // No state cookie at all (another browser).
    let r = callback(&server, &format!("code=c&state={}", login.state), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Missing state parameter.
    let r = callback(&server, "code=c", Some(&login.cookie)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Provider error and an iss parameter from another issuer.
    let r = callback(
        &server,
        &format!("error=access_denied&state={}", login.state),
        Some(&login.cookie),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = callback(
        &server,
        &format!(
            "code=c&state={}&iss=https%3A%2F%2Fevil.example%2F",
            login.state
        ),
        Some(&login.cookie),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(set_cookie_value(&r.headers, "stratai_session").is_none());
    // The refusals were about the state: the genuine callback still completes, once.
    let ok = callback(
        &server,
        &format!("code=c&state={}", login.state),
        Some(&login.cookie),
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{:?}", ok.body);
    assert!(set_cookie_value(&ok.headers, "stratai_session").is_some());
}

#[tokio::test]
async fn callback_rejects_a_wrong_nonce_audience_or_pkce() {
    let issuer = TestIssuer::start().await;
    let server = oidc_server(&issuer, &[]).await;

    let login = start_login(&server, &issuer).await;
    issuer.grant(
        "n",
        Grant {
            challenge: login.challenge.clone(),
            nonce: "another-nonce".into(),
            claims: id_claims(&issuer, "auth0|ivy"),
        },
    );
    let r = callback(
        &server,
        &format!("code=n&state={}", login.state),
        Some(&login.cookie),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "nonce");

    let login = start_login(&server, &issuer).await;
    issuer.grant(
        "a",
        Grant {
            challenge: login.challenge.clone(),
            nonce: login.nonce.clone(),
            claims: issuer.claims("auth0|ivy", json!({"aud": "another-client"})),
        },
    );
    let r = callback(
        &server,
        &format!("code=a&state={}", login.state),
        Some(&login.cookie),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "audience");

    let login = start_login(&server, &issuer).await;
    issuer.grant(
        "z",
        Grant {
            challenge: login.challenge.clone(),
            nonce: login.nonce.clone(),
            claims: issuer.claims(
                "auth0|ivy",
                json!({"aud": [CLIENT_ID, "x"], "azp": "another-client"}),
            ),
        },
    );
    let r = callback(
        &server,
        &format!("code=z&state={}", login.state),
        Some(&login.cookie),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "azp");

    // The provider refuses the code because the verifier does not match the challenge
    // registered at /authorize (an intercepted code is useless without the verifier).
    let login = start_login(&server, &issuer).await;
    issuer.grant(
        "p",
        Grant {
            challenge: "not-the-challenge".into(),
            nonce: login.nonce.clone(),
            claims: id_claims(&issuer, "auth0|ivy"),
        },
    );
    let r = callback(
        &server,
        &format!("code=p&state={}", login.state),
        Some(&login.cookie),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "pkce");
    assert!(server.directory.by_subject("auth0|ivy").await.is_none());
}

#[tokio::test]
async fn cookie_sessions_refuse_cross_site_writes() {
    let issuer = TestIssuer::start().await;
    let server = oidc_server(&issuer, &[]).await;
    let login = start_login(&server, &issuer).await;
    issuer.grant(
        "csrf",
        Grant {
            challenge: login.challenge.clone(),
            nonce: login.nonce.clone(),
            claims: id_claims(&issuer, "auth0|kim"),
        },
    );
    let r = callback(
        &server,
        &format!("code=csrf&state={}", login.state),
        Some(&login.cookie),
    )
    .await;
    let (session, _) = set_cookie_value(&r.headers, "stratai_session").unwrap();
    let cookie = format!("stratai_session={session}");
    let post = |origin: Option<&str>| {
        let mut req = Request::post("/api/profiles")
            .header("cookie", cookie.clone())
            .header("content-type", "application/json");
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.body(Body::from(r#"{"name":"p","default_tiers":[]}"#))
            .unwrap()
    };
    // No Origin, or a foreign one: refused before anything else.
    for origin in [None, Some("https://evil.example"), Some("null")] {
        let r = call(&server.app, post(origin)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{origin:?}");
        assert_eq!(
            r.body["error"]["message"],
            "forbidden: cross-site request refused"
        );
    }
    // Our own origin passes the check (this auth-only server then has no store user: 401).
    let r = call(&server.app, post(Some("http://localhost:8080"))).await;
    assert_ne!(
        r.body["error"]["message"],
        "forbidden: cross-site request refused"
    );
    // Reads with the cookie need no Origin.
    let r = call(
        &server.app,
        Request::get("/auth/me")
            .header("cookie", cookie.clone())
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}
