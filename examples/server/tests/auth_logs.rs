//! Request logs hold no secrets. In a test binary of its own: tracing's callsite interest
//! cache is process-wide, and a test running in parallel without a subscriber could make
//! this test's scoped subscriber miss events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::io::Write;
use std::sync::{Arc, Mutex};

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

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn request_logs_hold_no_tokens_cookies_or_raw_paths() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = server_with(&[]).await;
        let token = dev_token(&server, "admin@localhost").await;
        let req = Request::get("/auth/me")
            .header("authorization", format!("Bearer {token}"))
            .header("cookie", "stratai_session=SESSIONSECRET123")
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(&server.app, req).await.status, StatusCode::OK);
        let req = Request::get("/auth/callback?code=OAUTHCODESECRET&state=STATESECRET")
            .body(Body::empty())
            .unwrap();
        call(&server.app, req).await;
        let req = Request::get("/api/invitations/INVITETOKENSECRET")
            .body(Body::empty())
            .unwrap();
        call(&server.app, req).await;
        let req = Request::get("/auth/me")
            .header("authorization", "Bearer FORGED.TOKEN.SECRET")
            .body(Body::empty())
            .unwrap();
        call(&server.app, req).await;
        // The dev token itself must not appear either.
        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(
            logs.contains("route=/auth/me"),
            "requests are traced with their route template:\n{logs}"
        );
        assert!(logs.contains("status=200"), "responses are traced:\n{logs}");
        for secret in [
            token.as_str(),
            "SESSIONSECRET123",
            "OAUTHCODESECRET",
            "STATESECRET",
            "INVITETOKENSECRET",
            "FORGED.TOKEN.SECRET",
        ] {
            assert!(
                !logs.contains(secret),
                "`{secret}` leaked into the logs:\n{logs}"
            );
        }
    });
}
