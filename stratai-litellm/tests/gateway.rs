#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `LiteLlmGateway` (core's `LlmGateway` port) against a fake LiteLLM (wiremock).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use stratai_core::gateway::{CallContext, ChatMessage, ChatRequest, GatewayError};
use stratai_core::ids::{OrgId, RequestId, UserId};
use stratai_core::ports::LlmGateway;
use stratai_litellm::gateway::LiteLlmGateway;
use stratai_litellm::sync::{KeyVault, MemoryKeyVault};
use stratai_litellm::{ClientConfig, LiteLlmClient, RetryPolicy, Secret};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-member-key-123456";

async fn setup(server: &MockServer) -> (LiteLlmGateway, CallContext) {
    let mut config = ClientConfig::new(server.uri(), Secret::new("sk-master-x"));
    config.retry = RetryPolicy {
        max_retries: 0,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
    };
    let vault = Arc::new(MemoryKeyVault::new());
    let ctx = CallContext {
        request_id: RequestId::new(),
        org_id: OrgId::new(),
        user_id: UserId::new(),
    };
    vault
        .put(ctx.org_id, ctx.user_id, "token", &Secret::new(KEY))
        .await
        .unwrap();
    (
        LiteLlmGateway::new(LiteLlmClient::new(config).unwrap(), vault),
        ctx,
    )
}

fn request(stream: bool) -> ChatRequest {
    ChatRequest {
        model: "mock-gpt".into(),
        messages: vec![ChatMessage {
            role: "user".into(),
            content: "hi".into(),
        }],
        max_tokens: Some(4),
        temperature: None,
        stream,
        user: None,
    }
}

fn error(status: u16, kind: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("retry-after", "60")
        .set_body_json(json!({"error": {"message": format!("{kind} happened"), "type": kind, "param": null, "code": status.to_string()}}))
}

#[tokio::test]
async fn chat_uses_the_members_key_and_attribution() {
    let server = MockServer::start().await;
    let (gateway, ctx) = setup(&server).await;
    Mock::given(method("POST")).and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(header("x-litellm-end-user-id", ctx.user_id.to_string().as_str()))
        .and(header("x-stratai-org-id", ctx.org_id.to_string().as_str()))
        .and(header("x-stratai-request-id", ctx.request_id.to_string().as_str()))
        .and(body_partial_json(json!({"model": "mock-gpt", "max_tokens": 4, "stream": false})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "chatcmpl-9", "created": 7, "model": "mock-gpt", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})))
        .mount(&server).await;
    let answer = gateway.chat(&ctx, &request(false)).await.unwrap();
    assert_eq!(answer.id, "chatcmpl-9");
    assert_eq!(answer.choices[0].message.content, "hello");
    assert_eq!(answer.usage.total_tokens, 2);
}

#[tokio::test]
async fn a_member_without_a_key_is_not_provisioned() {
    let server = MockServer::start().await;
    let (gateway, mut ctx) = setup(&server).await;
    ctx.user_id = UserId::new();
    let err = gateway.chat(&ctx, &request(false)).await.unwrap_err();
    assert!(matches!(err, GatewayError::NotProvisioned(_)), "{err:?}");
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn litellm_errors_map_onto_the_port() {
    for (status, kind, check) in [
        (
            403,
            "key_model_access_denied",
            (|e: &GatewayError| matches!(e, GatewayError::Refused(_))) as fn(&GatewayError) -> bool,
        ),
        (403, "team_model_access_denied", |e| {
            matches!(e, GatewayError::Refused(_))
        }),
        (422, "budget_exceeded", |e| {
            matches!(e, GatewayError::BudgetExceeded(_))
        }),
        (429, "throttling_error", |e| {
            matches!(
                e,
                GatewayError::RateLimited {
                    retry_after_secs: Some(60)
                }
            )
        }),
        (401, "token_not_found_in_db", |e| {
            matches!(e, GatewayError::NotProvisioned(_))
        }),
        (400, "invalid_request_error", |e| {
            matches!(e, GatewayError::BadRequest(_))
        }),
        (503, "internal_server_error", |e| {
            matches!(e, GatewayError::Unavailable(_))
        }),
    ] {
        let server = MockServer::start().await;
        let (gateway, ctx) = setup(&server).await;
        Mock::given(method("POST"))
            .respond_with(error(status, kind))
            .mount(&server)
            .await;
        let err = gateway.chat(&ctx, &request(false)).await.unwrap_err();
        assert!(check(&err), "{status} {kind}: {err:?}");
        assert!(!err.to_string().contains(KEY));
        // The messages the server shows the member are the proxy's own, without our
        // endpoint and status (an outage's full detail is only logged).
        if matches!(
            err,
            GatewayError::Refused(_)
                | GatewayError::BudgetExceeded(_)
                | GatewayError::BadRequest(_)
        ) {
            assert!(
                err.to_string().ends_with(&format!("{kind} happened")),
                "{err}"
            );
            assert!(!err.to_string().contains("/chat/completions"), "{err}");
        }
    }
}

#[tokio::test]
async fn a_sub_second_retry_after_is_one_second() {
    let server = MockServer::start().await;
    let (gateway, ctx) = setup(&server).await;
    Mock::given(method("POST"))
        .respond_with(error(429, "throttling_error").insert_header("retry-after", "0"))
        .mount(&server)
        .await;
    let err = gateway.chat(&ctx, &request(false)).await.unwrap_err();
    assert!(
        matches!(
            err,
            GatewayError::RateLimited {
                retry_after_secs: Some(1)
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn streams_convert_chunks() {
    let server = MockServer::start().await;
    let (gateway, ctx) = setup(&server).await;
    let body = [
        r#"{"id":"c1","model":"mock-gpt","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        r#"{"id":"c1","model":"mock-gpt","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}"#,
        r#"{"id":"c1","model":"mock-gpt","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"cost":0.003}}"#,
        "[DONE]",
    ]
    .iter()
    .map(|e| format!("data: {e}\n\n"))
    .collect::<String>();
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(body),
        )
        .mount(&server)
        .await;
    let chunks: Vec<_> = gateway
        .chat_stream(&ctx, &request(true))
        .await
        .unwrap()
        .collect()
        .await;
    let chunks: Vec<_> = chunks.into_iter().map(Result::unwrap).collect();
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[1].choices[0].delta.content.as_deref(), Some("Hi"));
    assert_eq!(chunks[2].usage.unwrap().total_tokens, 2);
}
