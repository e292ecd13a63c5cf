//! A local OIDC issuer for tests: discovery document, JWKS (which can be switched off),
//! and a token endpoint that checks PKCE and mints id tokens; plus the server on an in-memory
//! store (`server_with`, `oidc_server`) and plain request helpers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Form, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use stratai_core::UserId;
use stratai_core::directory::{Email, PlatformRole, User};
use stratai_server::auth::Principal;
use stratai_server::auth::session::MemorySessionStore;
use stratai_server::config::{Config, FileConfig};
use stratai_server::server::{Backends, build};
use stratai_server::stores::Stores;
use tower::ServiceExt as _;

pub const TEST_KEY_PEM: &[u8] = include_bytes!("../fixtures/test_issuer_rsa.pem");
pub const TEST_PUBLIC_PEM: &[u8] = include_bytes!("../fixtures/test_issuer_rsa.pub.pem");
pub const OTHER_KEY_PEM: &[u8] = include_bytes!("../fixtures/other_issuer_rsa.pem");
pub const KID: &str = "test-key-1";
pub const AUDIENCE: &str = "https://api.stratai.test";
pub const CLIENT_ID: &str = "stratai-test-client";
pub const CLIENT_SECRET: &str = "test-client-secret";
pub const REDIRECT: &str = "http://localhost:8080/auth/callback";

/// What `/authorize` would have granted: the code's PKCE challenge and the claims to mint.
#[derive(Clone, Debug)]
pub struct Grant {
    pub challenge: String,
    pub nonce: String,
    pub claims: Value,
}

pub struct IssuerState {
    pub issuer: String,
    pub jwks_up: AtomicBool,
    pub jwks_hits: AtomicU64,
    pub jwks: Mutex<Value>,
    pub grants: Mutex<HashMap<String, Grant>>,
    pub key: EncodingKey,
}

pub struct TestIssuer {
    pub base: String,
    pub issuer: String,
    pub state: Arc<IssuerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn rsa_key(pem: &[u8]) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem).unwrap()
}

pub fn jwk_for(pem: &[u8], kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(&rsa_key(pem), Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).unwrap()
}

impl TestIssuer {
    /// An issuer on 127.0.0.1:0 signing with `pem` under `KID`.
    pub async fn start_with_key(pem: &[u8]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let issuer = format!("{base}/");
        let state = Arc::new(IssuerState {
            issuer: issuer.clone(),
            jwks_up: AtomicBool::new(true),
            jwks_hits: AtomicU64::new(0),
            jwks: Mutex::new(json!({"keys": [jwk_for(pem, KID)]})),
            grants: Mutex::new(HashMap::new()),
            key: rsa_key(pem),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base,
            issuer,
            state,
            task,
        }
    }

    pub async fn start() -> Self {
        Self::start_with_key(TEST_KEY_PEM).await
    }

    pub fn jwks_hits(&self) -> u64 {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn set_jwks_up(&self, up: bool) {
        self.state.jwks_up.store(up, Ordering::SeqCst);
    }

    pub fn set_jwks(&self, value: Value) {
        *self.state.jwks.lock().unwrap() = value;
    }

    /// Standard valid access-token claims for `sub`, overridable by `extra`.
    pub fn claims(&self, sub: &str, extra: Value) -> Value {
        let now = get_current_timestamp();
        let mut c = json!({
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": now,
            "exp": now + 600,
            "email": format!("{}@example.com", sub.replace('|', "-")),
            "email_verified": true,
        });
        if let (Some(obj), Some(more)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in more {
                if v.is_null() {
                    obj.remove(k);
                } else {
                    obj.insert(k.clone(), v.clone());
                }
            }
        }
        c
    }

    /// An RS256 token signed with this issuer's key under `KID`.
    pub fn mint(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KID.to_owned());
        encode(&header, claims, &self.state.key).unwrap()
    }

    /// Registers a code as `/authorize` would after the user logged in.
    pub fn grant(&self, code: &str, grant: Grant) {
        self.state
            .grants
            .lock()
            .unwrap()
            .insert(code.to_owned(), grant);
    }
}

async fn discovery(State(s): State<Arc<IssuerState>>) -> Json<Value> {
    let base = s.issuer.trim_end_matches('/');
    Json(json!({
        "issuer": s.issuer,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "end_session_endpoint": format!("{base}/oidc/logout"),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks(State(s): State<Arc<IssuerState>>) -> Response {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if !s.jwks_up.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    Json(s.jwks.lock().unwrap().clone()).into_response()
}

async fn token(
    State(s): State<Arc<IssuerState>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let bad = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return bad("grant_type");
    }
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return bad("client");
    }
    if form.get("redirect_uri").map(String::as_str) != Some(REDIRECT) {
        return bad("redirect_uri");
    }
    let Some(code) = form.get("code") else {
        return bad("code");
    };
    let Some(grant) = s.grants.lock().unwrap().remove(code) else {
        return bad("unknown code");
    };
    let Some(verifier) = form.get("code_verifier") else {
        return bad("no verifier");
    };
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != grant.challenge {
        return bad("pkce");
    }
    let mut claims = grant.claims.clone();
    claims["nonce"] = json!(grant.nonce);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.to_owned());
    let id_token = encode(&header, &claims, &s.key).unwrap();
    Json(json!({"access_token": "opaque", "token_type": "Bearer", "id_token": id_token, "expires_in": 600})).into_response()
}

pub fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The server under test, with its directory for assertions.
pub struct TestServer {
    pub app: Router,
    pub directory: People,
}

/// The people of a test server's in-memory store, for arranging and asserting.
#[derive(Clone)]
pub struct People(pub Stores);

impl People {
    /// Adds an active user (e.g. the configured super admin) and returns it.
    pub async fn add_user(&self, email: &str, super_admin: bool) -> Principal {
        let role = if super_admin {
            PlatformRole::SuperAdmin
        } else {
            PlatformRole::User
        };
        let user = User::new(Email::new(email).unwrap(), None, role, chrono::Utc::now()).unwrap();
        self.0.directory.create_user(&user).await.unwrap();
        Principal::from(&user)
    }

    /// The user linked to `subject`, if any.
    pub async fn by_subject(&self, subject: &str) -> Option<Principal> {
        let user = self
            .0
            .directory
            .find_user_by_subject(subject)
            .await
            .unwrap();
        user.as_ref().map(Principal::from)
    }

    /// Marks a user active or deactivated.
    pub async fn set_active(&self, id: uuid::Uuid, active: bool) {
        self.0
            .directory
            .set_user_active(UserId::from_uuid(id), active)
            .await
            .unwrap();
    }
}

pub async fn server_with(env_pairs: &[(&str, &str)]) -> TestServer {
    let mut env = env(env_pairs);
    // These tests change users in the directory between two requests: no bearer-token cache
    // unless a test asks for one.
    env.entry("STRATAI_AUTH_CACHE_MS".to_owned())
        .or_insert_with(|| "0".to_owned());
    let config = Config::from_parts(FileConfig::default(), &env).unwrap();
    let directory = People(Stores::memory());
    directory.add_user(&config.super_admin_email, true).await;
    let backends = Backends {
        sessions: Arc::new(MemorySessionStore::default()),
        readiness: Arc::new(stratai_server::app::AlwaysReady),
        stores: directory.0.clone(),
    };
    TestServer {
        app: build(&config, backends).unwrap(),
        directory,
    }
}

/// A server trusting `issuer`, with browser login configured.
pub async fn oidc_server(issuer: &TestIssuer, extra: &[(&str, &str)]) -> TestServer {
    let mut pairs = vec![
        ("OIDC_ISSUER", issuer.issuer.as_str()),
        ("OIDC_AUDIENCE", AUDIENCE),
        ("OIDC_CLIENT_ID", CLIENT_ID),
        ("OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ("OIDC_REDIRECT_URL", REDIRECT),
        ("STRATAI_PUBLIC_URL", "http://localhost:8080"),
    ];
    pairs.extend_from_slice(extra);
    server_with(&pairs).await
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

pub async fn call(app: &Router, req: Request<Body>) -> TestResponse {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    TestResponse {
        status,
        headers,
        body,
    }
}

pub async fn get_me(app: &Router, bearer: &str) -> TestResponse {
    let req = Request::get("/auth/me")
        .header("authorization", format!("Bearer {bearer}"))
        .body(Body::empty())
        .unwrap();
    call(app, req).await
}

pub async fn post_json(app: &Router, path: &str, body: &str) -> TestResponse {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    call(app, req).await
}

/// The value of `name` in the response's `Set-Cookie` headers.
pub fn set_cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<(String, String)> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let value = v[name.len() + 1..]
                .split(';')
                .next()
                .unwrap_or("")
                .to_owned();
            (value, v.to_owned())
        })
}

pub fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}
