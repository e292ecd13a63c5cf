//! Rate limits shared across server instances through Redis (`STRATAI_REDIS_URL`), end to end
//! through HTTP on SQLite and PostgreSQL: two servers over the same database and the same
//! Redis admit, together, exactly the rule's limit; the rest get 429 with Retry-After, and
//! `/api/explain` on either server sees the shared bucket without taking from it.
//!
//! Redis: `STRATAI_TEST_REDIS_URL`, else `REDIS_URL`, else `redis://127.0.0.1:6379`. Without
//! one the tests say they were skipped; under `CI=true` they fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use futures::future::join_all;
use harness::*;
use serde_json::json;
use stratai_core::ports::RuleAction;

on_both!(two_instances_share_the_rate_limit);

async fn two_instances_share_the_rate_limit(db: Db) {
    let Some(redis) = redis_url().await else {
        return;
    };
    let Some(backing) = Backing::new(db).await else {
        return;
    };
    let setup = Setup {
        redis_url: Some(redis),
        ..Setup::default()
    };
    let a = serve(backing.clone(), setup.clone()).await;
    let b = serve(backing, setup).await;
    let t = tenant(&a, 2).await;
    // Dev tokens are per process: the second server issues its own.
    let mut tokens_b = Vec::new();
    for email in &t.emails {
        tokens_b.push(token(&b, email).await);
    }
    const LIMIT: usize = 5;
    rule(
        &a,
        t.org,
        "five per minute",
        "rate_limit",
        json!({"requests": LIMIT, "period": "minute", "bucket": "scope"}),
        RuleAction::Block,
    )
    .await;
    b.gateway.pipeline.reload_guardrails().await.unwrap();
    // Looking takes nothing, on either server.
    for _ in 0..3 {
        assert_eq!(
            explain(&a, &t.users[0].1, json!({"model": MODEL})).await["outcome"],
            "allow"
        );
        assert_eq!(
            explain(&b, &tokens_b[1], json!({"model": MODEL})).await["outcome"],
            "allow"
        );
    }

    // 16 concurrent requests, alternating servers and members.
    let calls = (0..16).map(|i| {
        let (gw, token) = if i % 2 == 0 {
            (&a, t.users[(i / 2) % 2].1.clone())
        } else {
            (&b, tokens_b[(i / 2) % 2].clone())
        };
        async move { chat(gw, &token, ask(MODEL, &format!("request {i}"))).await }
    });
    let answers = join_all(calls).await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(ok, LIMIT, "the limit holds across both servers");
    for answer in answers.iter().filter(|a| a.status != 200) {
        assert_eq!(answer.status, 429, "{}", answer.body);
        assert_eq!(answer.body["error"]["type"], "rate_limit_error");
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("five per minute"),
            "{}",
            answer.body
        );
        let retry: u64 = answer.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // 5 per minute refill one every 12 s.
        assert!((1..=12).contains(&retry), "{retry}");
    }
    // Both servers' what-if sees the exhausted shared bucket.
    for (gw, token) in [(&a, &t.users[1].1), (&b, &tokens_b[0])] {
        let r = explain(gw, token, json!({"model": MODEL})).await;
        assert_eq!(r["outcome"], "deny", "{r}");
        assert!(r["reasons"].to_string().contains("five per minute"), "{r}");
    }
}
