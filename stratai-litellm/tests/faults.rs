#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Faults injected with wiremock: 5xx, timeouts, refused connections, malformed JSON, slow
//! answers, throttling, broken streams. Retries happen only for idempotent calls (and for
//! connections that could not be made).

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use stratai_litellm::*;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const MASTER: &str = "sk-master-fault-1234";

fn client_for(base: &str, timeout: Duration) -> LiteLlmClient {
    let mut config = ClientConfig::new(base, Secret::new(MASTER));
    config.request_timeout = timeout;
    config.connect_timeout = Duration::from_millis(500);
    config.stream_idle_timeout = Duration::from_millis(400);
    config.retry = RetryPolicy {
        max_retries: 2,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    LiteLlmClient::new(config).unwrap()
}

fn team_body(id: &str) -> serde_json::Value {
    json!({"team_id": id, "team_info": {"team_id": id, "models": ["mock-gpt"], "max_budget": 10.0, "spend": 0.07200000000000001}, "keys": []})
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn idempotent_reads_retry_through_500s() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/team/info"))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/team/info"))
        .and(header("authorization", format!("Bearer {MASTER}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(team_body("t1")))
        .mount(&server)
        .await;
    let client = client_for(&server.uri(), Duration::from_secs(2));
    let info = client.team_info("t1").await.unwrap();
    assert_eq!(
        info.team_info.spend,
        rust_decimal_macros::dec!(0.07200000000000001)
    );
    assert_eq!(requests(&server).await, 3);
}

#[tokio::test]
async fn persistent_500s_give_a_typed_upstream_error_after_the_retries() {
    let server = MockServer::start().await;
    Mock::given(path("/team/info")).respond_with(ResponseTemplate::new(503).set_body_json(json!({"error": {"message": "db down", "type": "internal_server_error", "param": null, "code": "503"}})))
        .mount(&server).await;
    let client = client_for(&server.uri(), Duration::from_secs(2));
    let err = client.team_info("t1").await.unwrap_err();
    let LiteLlmError::Upstream(api) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(api.status, 503);
    assert_eq!(api.message, "db down");
    assert!(err.is_transient());
    assert_eq!(requests(&server).await, 3, "1 attempt + 2 retries");
}

#[tokio::test]
async fn creates_and_chat_are_not_retried_on_500() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("internal"))
        .mount(&server)
        .await;
    let client = client_for(&server.uri(), Duration::from_secs(2));
    let err = client
        .team_new(&TeamNew {
            team_id: Some("t1".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, LiteLlmError::Upstream(_)), "{err:?}");
    assert_eq!(requests(&server).await, 1);
    let err = client
        .chat(
            &Secret::new("sk-user-key-abcdef"),
            &Attribution::default(),
            &ChatRequest::new("mock-gpt", vec![ChatMessage::user("hi")], 4),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, LiteLlmError::Upstream(_)), "{err:?}");
    assert_eq!(requests(&server).await, 2);
}

#[tokio::test]
async fn timeouts_are_typed_and_retried_only_when_idempotent() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(team_body("t1"))
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({}))
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&server)
        .await;
    let client = client_for(&server.uri(), Duration::from_millis(200));
    let started = Instant::now();
    let err = client.team_info("t1").await.unwrap_err();
    assert!(
        matches!(
            err,
            LiteLlmError::Timeout {
                endpoint: "/team/info",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "the timeout did not cut the call"
    );
    assert_eq!(requests(&server).await, 3);
    let err = client.user_new(&UserNew::new("u1")).await.unwrap_err();
    assert!(matches!(err, LiteLlmError::Timeout { .. }), "{err:?}");
    assert_eq!(
        requests(&server).await,
        4,
        "a create is not repeated after a timeout"
    );
}

#[tokio::test]
async fn slow_answers_within_the_timeout_succeed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(team_body("t1"))
                .set_delay(Duration::from_millis(300)),
        )
        .mount(&server)
        .await;
    let client = client_for(&server.uri(), Duration::from_secs(2));
    assert_eq!(
        client.team_info("t1").await.unwrap().team_info.team_id,
        "t1"
    );
    assert_eq!(requests(&server).await, 1);
}

#[tokio::test]
async fn refused_connections_are_typed_connect_errors() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = client_for(&format!("http://{addr}"), Duration::from_secs(1));
    let err = client.team_info("t1").await.unwrap_err();
    assert!(
        matches!(
            err,
            LiteLlmError::Connect {
                endpoint: "/team/info",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    // Even a chat call may be retried when the connection was never made; it still fails typed.
    let err = client
        .chat(
            &Secret::new("sk-user-key-abcdef"),
            &Attribution::default(),
            &ChatRequest::new("m", vec![ChatMessage::user("hi")], 1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, LiteLlmError::Connect { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("sk-user-key-abcdef"));
}

#[tokio::test]
async fn malformed_json_is_a_decode_error_with_a_redacted_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/key/generate"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(r#"{"key": "sk-leakedSecretValue123", "models": [oops"#),
        )
        .mount(&server)
        .await;
    let client = client_for(&server.uri(), Duration::from_secs(1));
    let err = client
        .key_generate(&KeyGenerate::default())
        .await
        .unwrap_err();
    let LiteLlmError::Decode { endpoint, body, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*endpoint, "/key/generate");
    assert!(body.contains("sk-***"));
    assert!(!format!("{err} {err:?}").contains("leakedSecretValue"));
    assert_eq!(requests(&server).await, 1);
}

#[tokio::test]
async fn error_bodies_echoing_credentials_are_redacted() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {"message": format!("bad header Authorization: Bearer {MASTER}"), "type": "auth_error", "param": "None", "code": "401"}})))
        .mount(&server).await;
    let client = client_for(&server.uri(), Duration::from_secs(1));
    let err = client
        .key_info(&KeyRef::Secret(Secret::new("sk-someUserKey42")))
        .await
        .unwrap_err();
    let LiteLlmError::Unauthorized(api) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(api.param, None, "the string \"None\" is no param");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("master-fault"), "{text}");
    assert_eq!(requests(&server).await, 1, "401 is not retried");
}

#[tokio::test]
async fn throttled_reads_are_retried_and_chat_429_is_typed() {
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0")
        .set_body_json(json!({"error": {"message": "slow down", "type": "throttling_error", "param": null, "code": "429"}})))
        .up_to_n_times(1).with_priority(1).mount(&server).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(team_body("t1")))
        .mount(&server)
        .await;
    Mock::given(method("POST")).and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "60").insert_header("rate_limit_type", "tokens")
            .insert_header("reset_at", "2026-11-28 15:11:27 UTC")
            .set_body_json(json!({"error": {"message": "Rate limit exceeded", "type": "throttling_error", "param": null, "code": "429"}})))
        .mount(&server).await;
    let client = client_for(&server.uri(), Duration::from_secs(1));
    client.team_info("t1").await.unwrap();
    assert_eq!(requests(&server).await, 2);
    let err = client
        .chat(
            &Secret::new("sk-user-key-abcdef"),
            &Attribution::default(),
            &ChatRequest::new("m", vec![ChatMessage::user("hi")], 1),
        )
        .await
        .unwrap_err();
    let LiteLlmError::RateLimited {
        retry_after,
        limit_type,
        reset_at,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(retry_after, Some(Duration::from_secs(60)));
    assert_eq!(limit_type.as_deref(), Some("tokens"));
    assert_eq!(
        reset_at,
        stratai_litellm::time::parse_timestamp("2026-11-28T15:11:27Z")
    );
    assert_eq!(requests(&server).await, 3, "chat is not retried");
}

#[tokio::test]
async fn chat_sends_the_key_and_attribution_headers() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-user-key-abcdef"))
        .and(header("x-litellm-end-user-id", "u-1"))
        .and(header("x-stratai-user-id", "u-1"))
        .and(header("x-stratai-org-id", "o-1"))
        .and(header("x-stratai-request-id", "r-1"))
        .respond_with(ResponseTemplate::new(200).insert_header("x-litellm-response-cost", "0.024")
            .set_body_json(json!({"id": "chatcmpl-1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})))
        .mount(&server).await;
    let client = client_for(&server.uri(), Duration::from_secs(1));
    let who = Attribution {
        end_user_id: Some("u-1".into()),
        user_id: Some("u-1".into()),
        org_id: Some("o-1".into()),
        request_id: Some("r-1".into()),
    };
    let answer = client
        .chat(
            &Secret::new("sk-user-key-abcdef"),
            &who,
            &ChatRequest::new("m", vec![ChatMessage::user("hi")], 1),
        )
        .await
        .unwrap();
    assert_eq!(answer.completion.text(), Some("hi"));
    assert_eq!(
        answer.meta.response_cost,
        Some(rust_decimal_macros::dec!(0.024))
    );
    let sent: serde_json::Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(sent["stream"], json!(false));
    assert_eq!(sent["max_tokens"], json!(1));
}

fn sse(events: &[&str]) -> String {
    events.iter().map(|e| format!("data: {e}\n\n")).collect()
}

#[tokio::test]
async fn streams_yield_typed_chunks_and_typed_errors() {
    let server = MockServer::start().await;
    let ok = sse(&[
        r#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hello"}}]}"#,
        r#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"cost":0.003}}"#,
        "[DONE]",
    ]);
    Mock::given(path("/v1/chat/completions"))
        .and(header("x-stratai-org-id", "ok"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(ok),
        )
        .mount(&server)
        .await;
    let broken = sse(&[
        r#"{"id":"c2","choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
        r#"{"id": "c2", "choices": [nope"#,
    ]);
    Mock::given(path("/v1/chat/completions"))
        .and(header("x-stratai-org-id", "broken"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(broken),
        )
        .mount(&server)
        .await;
    let failing = sse(&[
        r#"{"error":{"message":"upstream exploded","type":"internal_server_error","param":null,"code":"502"}}"#,
    ]);
    Mock::given(path("/v1/chat/completions"))
        .and(header("x-stratai-org-id", "failing"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(failing),
        )
        .mount(&server)
        .await;
    Mock::given(path("/v1/chat/completions")).and(header("x-stratai-org-id", "denied"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"error": {"message": "no", "type": "key_model_access_denied", "param": "model", "code": "403"}}))).mount(&server).await;

    let client = client_for(&server.uri(), Duration::from_secs(2));
    let key = Secret::new("sk-user-key-abcdef");
    let req = ChatRequest::new("m", vec![ChatMessage::user("hi")], 1);
    let who = |org: &str| Attribution {
        org_id: Some(org.into()),
        ..Default::default()
    };

    let chunks: Vec<_> = client
        .chat_stream(&key, &who("ok"), &req)
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(chunks.len(), 4);
    let chunks: Vec<ChatChunk> = chunks.into_iter().map(Result::unwrap).collect();
    assert_eq!(chunks[1].text(), Some("Hello"));
    assert_eq!(
        chunks[3].usage.as_ref().unwrap().cost,
        Some(rust_decimal_macros::dec!(0.003))
    );
    let sent: serde_json::Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(sent["stream"], json!(true));
    assert_eq!(sent["stream_options"]["include_usage"], json!(true));

    let items: Vec<_> = client
        .chat_stream(&key, &who("broken"), &req)
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(items.len(), 2, "the stream ends after the first error");
    assert!(items[0].is_ok());
    assert!(
        matches!(items[1], Err(LiteLlmError::Decode { .. })),
        "{:?}",
        items[1]
    );

    let items: Vec<_> = client
        .chat_stream(&key, &who("failing"), &req)
        .await
        .unwrap()
        .collect()
        .await;
    assert!(
        matches!(&items[..], [Err(LiteLlmError::Upstream(api))] if api.status == 502),
        "{items:?}"
    );

    let err = client
        .chat_stream(&key, &who("denied"), &req)
        .await
        .unwrap_err();
    assert!(matches!(err, LiteLlmError::KeyModelDenied(_)), "{err:?}");
}

#[tokio::test]
async fn a_stalled_stream_hits_the_idle_timeout() {
    // A raw server that sends headers and one chunk, then goes silent.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let _ = socket.read(&mut buf).await;
        let chunk =
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n";
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n",
            chunk.len()
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let client = client_for(&format!("http://{addr}"), Duration::from_secs(2));
    let started = Instant::now();
    let items: Vec<_> = client
        .chat_stream(
            &Secret::new("sk-user-key-abcdef"),
            &Attribution::default(),
            &ChatRequest::new("m", vec![ChatMessage::user("hi")], 1),
        )
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(
        matches!(
            items[1],
            Err(LiteLlmError::Timeout { .. }) | Err(LiteLlmError::Transport { .. })
        ),
        "{:?}",
        items[1]
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}
