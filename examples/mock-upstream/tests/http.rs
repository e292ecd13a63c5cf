#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The mock upstream over real HTTP, on port 0.

use std::collections::HashSet;

use mock_upstream::{MockConfig, MockServer};
use serde_json::{Value, json};

async fn start() -> MockServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    MockServer::start(listener, MockConfig::default()).unwrap()
}

#[tokio::test]
async fn chat_completion_has_unique_ids_and_deterministic_usage() {
    let server = start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.base_url());
    let mut ids = HashSet::new();
    for _ in 0..20 {
        let body: Value = http
            .post(&url)
            .json(&json!({"model":"mock-gpt","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello there world"}],"max_tokens":5}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "mock-gpt");
        assert_eq!(body["usage"]["prompt_tokens"], 5);
        assert_eq!(body["usage"]["completion_tokens"], 5);
        assert_eq!(body["usage"]["total_tokens"], 10);
        let content = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(content.split_whitespace().count(), 5);
        assert!(
            ids.insert(body["id"].as_str().unwrap().to_owned()),
            "duplicate id"
        );
    }
    assert_eq!(server.requests(), 20);
}

#[tokio::test]
async fn default_completion_tokens_apply_without_max_tokens() {
    let server = start().await;
    let body: Value = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .json(&json!({"model":"m","messages":[{"role":"user","content":"hi"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], 1);
    assert_eq!(body["usage"]["completion_tokens"], 8);
}

#[tokio::test]
async fn streaming_sends_chunks_usage_and_done() {
    let server = start().await;
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .json(&json!({"model":"mock-gpt","messages":[{"role":"user","content":"one two"}],"max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    // role, 3 words, finish, usage
    assert_eq!(chunks.len(), 6);
    let ids: HashSet<&str> = chunks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1);
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content.split_whitespace().count(), 3);
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"].as_array().unwrap().len(), 0);
    assert_eq!(chunks[5]["usage"]["prompt_tokens"], 2);
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn streaming_without_include_usage_has_no_usage_chunk() {
    let server = start().await;
    let text = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .json(&json!({"model":"mock-gpt","messages":[{"role":"user","content":"x"}],"max_tokens":2,"stream":true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("\"usage\""));
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn models_and_bad_requests() {
    let server = start().await;
    let http = reqwest::Client::new();
    let models: Value = http
        .get(format!("{}/models", server.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["mock-gpt", "mock-gpt-premium"]);

    let response = http
        .post(format!("{}/chat/completions", server.base_url()))
        .json(&json!({"model":"mock-gpt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "messages");

    let response = http
        .post(format!("{}/chat/completions", server.base_url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}
