//! The OpenAPI document matches the router, and the checked-in `openapi.json` matches the
//! document (regenerate with `STRATAI_UPDATE_OPENAPI=1 cargo test -p stratai-server --test openapi`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use harness::*;

fn request(method: &str, path: &str) -> Request<Body> {
    let uri = path
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "00000000-0000-7000-8000-000000000000"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap()
}

async fn probe(server: &TestServer, method: &str, path: &str) -> (StatusCode, serde_json::Value) {
    let uri = path
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "00000000-0000-7000-8000-000000000000"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let r = call(&server.app, req).await;
    (r.status, r.body)
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    // The full dev-mode server, gateway included.
    let dev = harness::Api::start(harness::Kind::Memory).await.unwrap();
    // An OIDC server whose provider never answers: its login routes exist (and fail with 503).
    let oidc = server_with(&[
        ("OIDC_ISSUER", "http://127.0.0.1:9/"),
        ("OIDC_AUDIENCE", "api"),
        ("OIDC_CLIENT_ID", "client"),
        ("OIDC_REDIRECT_URL", "http://localhost:8080/auth/callback"),
    ])
    .await;
    let r = call(
        &dev.app,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.body;
    let mut count = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let m = method.to_ascii_uppercase();
            let oidc_only =
                ["/auth/login", "/auth/callback", "/auth/logout"].contains(&path.as_str());
            let (status, body) = if oidc_only {
                probe(&oidc, &m, path).await
            } else {
                let r = dev.raw(request(&m, path)).await;
                (r.status, r.json)
            };
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{m} {path} is documented but not routed"
            );
            assert_ne!(
                body["error"]["message"], "not found: route",
                "{m} {path} is documented but not routed"
            );
            count += 1;
        }
    }
    let routed =
        stratai_server::api::ROUTES.len() + stratai_server::openapi::OTHER_OPERATIONS.len();
    assert_eq!(count, routed, "every route is documented once");
}

#[test]
fn every_operation_has_its_request_and_answers_described() {
    assert_eq!(
        stratai_server::openapi::undescribed(),
        Vec::<String>::new(),
        "add these operations to `describe` in src/openapi.rs"
    );
}

#[tokio::test]
async fn a_method_a_path_does_not_have_answers_a_json_405_with_allow() {
    let dev = harness::Api::start(harness::Kind::Memory).await.unwrap();
    let doc = stratai_server::openapi::document();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let documented: Vec<String> = ops
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        for method in ["TRACE", "PUT", "DELETE", "PATCH", "POST"] {
            if documented.iter().any(|m| m == method) {
                continue;
            }
            let r = dev.raw(request(method, path)).await;
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(
                r.json["error"]["code"], "method_not_allowed",
                "{method} {path}: {}",
                r.json
            );
            let allow = r.headers["allow"].to_str().unwrap().to_owned();
            for m in &documented {
                assert!(
                    allow.contains(m.as_str()),
                    "{method} {path}: Allow `{allow}` lacks {m}"
                );
            }
        }
    }
}

#[test]
fn the_checked_in_document_is_current() {
    let generated =
        serde_json::to_string_pretty(&stratai_server::openapi::document()).unwrap() + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if std::env::var("STRATAI_UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
        println!("wrote {}", path.display());
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "examples/server/openapi.json is stale: run STRATAI_UPDATE_OPENAPI=1 cargo test -p stratai-server --test openapi"
    );
}

/// Each error response lists its codes, and they are what the server answers: a body that
/// does not fit (the admin API: 422 `validation_failed`, broken JSON 400 `bad_request`; the
/// OpenAI-compatible routes: 400 `invalid_request`, as OpenAI), a caller of several
/// organizations without `x-stratai-org` (400 `organization_required`).
#[tokio::test]
async fn the_error_codes_of_each_status_are_listed() {
    use axum::http::Method;
    use serde_json::json;
    let doc = stratai_server::openapi::document();
    let listed = |method: &str, path: &str, r: &harness::Resp, code: &str| {
        assert_eq!(r.json["error"]["code"], code, "{method} {path}: {}", r.text);
        let op = &doc["paths"][path][method.to_ascii_lowercase()];
        let description = op["responses"][r.status.as_str()]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            description.contains(&format!("`{code}`")),
            "{method} {path} {}: `{code}` not in {description:?}",
            r.status
        );
    };
    let api = harness::Api::start(harness::Kind::Memory).await.unwrap();
    let admin = api.token("admin@localhost").await;
    let org = [("x-stratai-org", "internal".to_owned())];

    let r = api
        .post("/api/organizations", &admin, json!({"name": 5}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    listed("POST", "/api/organizations", &r, "validation_failed");
    let broken = Request::post("/api/organizations")
        .header("authorization", format!("Bearer {admin}"))
        .header("content-type", "application/json")
        .body(Body::from("{"))
        .unwrap();
    let r = api.raw(broken).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    listed("POST", "/api/organizations", &r, "bad_request");

    let bad_chat = json!({"model": 5, "messages": []});
    let r = api
        .send_with(
            Method::POST,
            "/v1/chat/completions",
            Some(&admin),
            Some(bad_chat),
            &org,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    listed("POST", "/v1/chat/completions", &r, "invalid_request");
    // A role the chat route refuses is refused by the what-if route too.
    let question = json!({"model": "gpt-4o-mini", "messages": [{"role": "AAA", "content": ""}]});
    let r = api
        .send_with(
            Method::POST,
            "/api/explain",
            Some(&admin),
            Some(question),
            &org,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    listed("POST", "/api/explain", &r, "invalid_request");

    // The super admin in a second organization must name one.
    let second = harness::org_fixture(&api.stores, "second").await;
    let membership = stratai_core::directory::Membership::new(
        second.org,
        api.super_admin.id,
        stratai_core::directory::OrgRole::Member,
        chrono::Utc::now(),
    );
    api.stores
        .directory
        .add_member(second.org, &membership)
        .await
        .unwrap();
    let r = api.get("/v1/models", &admin).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    listed("GET", "/v1/models", &r, "organization_required");
    let r = api
        .send_with(Method::GET, "/v1/models", Some(&admin), None, &org)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}
