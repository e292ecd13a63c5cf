//! Dev mode (no OIDC issuer): the dev token route, and the server basics every request
//! sees (health, errors, limits, request ids, logs without secrets).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use harness::*;
use serde_json::json;

async fn dev_token(server: &TestServer, email: &str) -> String {
    let r = post_json(
        &server.app,
        "/auth/dev/token",
        &json!({"email": email}).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["token_type"], "Bearer");
    r.body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn dev_token_for_an_existing_user_goes_through_the_validator() {
    let server = server_with(&[]).await;
    let token = dev_token(&server, "admin@localhost").await;
    let r = get_me(&server.app, &token).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["email"], "admin@localhost");
    assert_eq!(r.body["super_admin"], true);
    // Email matching is case-insensitive.
    let token = dev_token(&server, " Admin@LOCALHOST ").await;
    assert_eq!(get_me(&server.app, &token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn dev_token_requests_are_validated() {
    let server = server_with(&[]).await;
    let r = post_json(
        &server.app,
        "/auth/dev/token",
        r#"{"email":"nobody@example.com"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["error"]["code"], "not_found");

    let r = post_json(
        &server.app,
        "/auth/dev/token",
        r#"{"email":"not-an-email"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["error"]["fields"][0]["path"], "email");

    let r = post_json(
        &server.app,
        "/auth/dev/token",
        r#"{"email":"admin@localhost","super_admin":true}"#,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown fields are refused"
    );
    assert!(
        r.body["error"]["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("super_admin")
    );

    let r = post_json(&server.app, "/auth/dev/token", r#"{"email":5}"#).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["error"]["fields"][0]["path"], "email");

    let r = post_json(&server.app, "/auth/dev/token", r#"{"email":"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["code"], "bad_request");

    let req = Request::post("/auth/dev/token")
        .header("content-type", "text/plain")
        .body(Body::from(r#"{"email":"admin@localhost"}"#))
        .unwrap();
    assert_eq!(
        call(&server.app, req).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
}

#[tokio::test]
async fn deactivated_users_get_no_dev_token_and_lose_their_tokens() {
    let server = server_with(&[]).await;
    let user = server.directory.add_user("pat@example.com", false).await;
    let token = dev_token(&server, "pat@example.com").await;
    server.directory.set_active(user.user_id, false).await;
    assert_eq!(
        get_me(&server.app, &token).await.status,
        StatusCode::FORBIDDEN
    );
    let r = post_json(
        &server.app,
        "/auth/dev/token",
        r#"{"email":"pat@example.com"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn dev_tokens_are_bound_to_their_process_key_and_expire() {
    let server = server_with(&[("STRATAI_DEV_TOKEN_TTL_SECS", "1")]).await;
    let token = dev_token(&server, "admin@localhost").await;
    // Another server process has another random key.
    let other = server_with(&[]).await;
    assert_eq!(
        get_me(&other.app, &token).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Tampered signature.
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        get_me(&server.app, &tampered).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Expiry (1 s lifetime, no leeway for the server's own tokens).
    assert_eq!(get_me(&server.app, &token).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get_me(&server.app, &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"]["message"], "unauthenticated: token expired");
}

#[tokio::test]
async fn oidc_login_routes_do_not_exist_in_dev_mode() {
    let server = server_with(&[]).await;
    for (method, path) in [
        ("GET", "/auth/login"),
        ("POST", "/auth/login"),
        ("GET", "/auth/callback"),
        ("POST", "/auth/logout"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            call(&server.app, req).await.status,
            StatusCode::NOT_FOUND,
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn health_request_ids_and_unknown_routes() {
    let server = server_with(&[]).await;
    let r = call(
        &server.app,
        Request::get("/health/live").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "live");
    assert!(r.headers.contains_key("x-request-id"));
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    let r = call(
        &server.app,
        Request::get("/health/ready").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // A caller-supplied request id is kept.
    let r = call(
        &server.app,
        Request::get("/health/live")
            .header("x-request-id", "abc-123")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.headers["x-request-id"], "abc-123");
    let r = call(
        &server.app,
        Request::get("/nope").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["error"]["code"], "not_found");
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let server = server_with(&[("STRATAI_BODY_LIMIT_BYTES", "64")]).await;
    let big = json!({"email": format!("{}@example.com", "a".repeat(200))}).to_string();
    let r = post_json(&server.app, "/auth/dev/token", &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Without a Content-Length (streamed body), the limit still holds.
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(axum::body::Bytes::from(big))]);
    let req = Request::post("/auth/dev/token")
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap();
    assert_eq!(
        call(&server.app, req).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

/// The optional auth cache: a deactivation is seen at once without it, after at most its TTL
/// with it; a token that does not validate is refused all the same.
#[tokio::test]
async fn the_principal_cache_delays_a_deactivation_by_at_most_its_ttl() {
    use std::sync::Arc;
    use stratai_server::auth::session::MemorySessionStore;
    use stratai_server::auth::{Auth, Mode};
    use stratai_server::config::{Config, FileConfig};
    use stratai_store::people::identity::Identities;
    let config = Config::from_parts(FileConfig::default(), &env(&[])).unwrap();
    let directory = People(stratai_server::stores::Stores::memory());
    let identities = Identities::over(&directory.0);
    let sessions = Arc::new(MemorySessionStore::default());
    let uncached = Auth::from_config(&config, identities.clone(), sessions.clone()).unwrap();
    let cached = Auth::from_config(&config, identities, sessions)
        .unwrap()
        .with_auth_cache(Duration::from_millis(300));
    let user = directory.add_user("kim@example.com", false).await;
    let token = |auth: &Auth| match auth.signin().mode() {
        Mode::Dev(dev) => dev.issue(user.user_id, &user.email).unwrap(),
        Mode::Oidc { .. } => panic!("dev mode expected"),
    };
    let (t_uncached, t_cached) = (token(&uncached), token(&cached));
    assert!(
        uncached
            .signin()
            .authenticate_bearer(&t_uncached)
            .await
            .is_ok()
    );
    assert!(cached.signin().authenticate_bearer(&t_cached).await.is_ok());
    directory.set_active(user.user_id, false).await;
    assert!(
        uncached
            .signin()
            .authenticate_bearer(&t_uncached)
            .await
            .is_err()
    );
    // Within the TTL the cached principal still passes ...
    assert!(cached.signin().authenticate_bearer(&t_cached).await.is_ok());
    // ... but never a token that does not validate.
    assert!(
        cached
            .signin()
            .authenticate_bearer("not-a-token")
            .await
            .is_err()
    );
    assert!(
        cached
            .signin()
            .authenticate_bearer(&t_uncached)
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        cached
            .signin()
            .authenticate_bearer(&t_cached)
            .await
            .is_err()
    );
}

/// The auth cache also remembers verified tokens, but never serves one past its expiry, and
/// an altered token is verified in full (and refused) while the original is remembered.
#[tokio::test]
async fn the_auth_cache_still_refuses_altered_and_expired_tokens() {
    use std::sync::Arc;
    use stratai_server::auth::session::MemorySessionStore;
    use stratai_server::auth::{Auth, AuthError, Mode};
    use stratai_server::config::{Config, FileConfig};
    use stratai_store::people::identity::Identities;
    let config = Config::from_parts(
        FileConfig::default(),
        &env(&[("STRATAI_DEV_TOKEN_TTL_SECS", "1")]),
    )
    .unwrap();
    let directory = People(stratai_server::stores::Stores::memory());
    let auth = Auth::from_config(
        &config,
        Identities::over(&directory.0),
        Arc::new(MemorySessionStore::default()),
    )
    .unwrap()
    .with_auth_cache(Duration::from_secs(60));
    let user = directory.add_user("kim@example.com", false).await;
    let Mode::Dev(dev) = auth.signin().mode() else {
        panic!("dev mode expected")
    };
    let token = dev.issue(user.user_id, &user.email).unwrap();
    assert!(auth.signin().authenticate_bearer(&token).await.is_ok());
    // A character in the middle of the signature changed (every bit of it counts there).
    let signature_at = token.rfind('.').unwrap() + 10;
    let mut altered = token.clone().into_bytes();
    altered[signature_at] = if altered[signature_at] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let altered = String::from_utf8(altered).unwrap();
    assert!(matches!(
        auth.signin().authenticate_bearer(&altered).await,
        Err(AuthError::BadSignature)
    ));
    assert!(auth.signin().authenticate_bearer(&token).await.is_ok());
    // Past `exp` (1 s lifetime, no leeway), well within the cache's 60 s.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(matches!(
        auth.signin().authenticate_bearer(&token).await,
        Err(AuthError::Expired)
    ));
}
