#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The client against a real LiteLLM proxy (see `tests/common` for how to get one).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;
use stratai_litellm::*;

fn metadata(value: serde_json::Value) -> Option<Metadata> {
    value.as_object().cloned()
}

fn hello(model: &str) -> ChatRequest {
    ChatRequest::new(model, vec![ChatMessage::user("hello")], 4)
}

/// mock-gpt: $0.001 per prompt token, $0.002 per completion token; the mock upstream answers
/// "hello" with 1 prompt token and `max_tokens` (4) completion tokens.
/// LiteLLM computes in float and prints e.g. `0.009000000000000001`; the client keeps that
/// text exactly, so comparisons round to 9 places.
const HELLO_COST: Decimal = dec!(0.009);

fn dollars(amount: Option<Decimal>) -> Option<Decimal> {
    amount.map(|a| a.round_dp(9).normalize())
}

#[tokio::test]
async fn lifecycle_team_user_key_chat_update_spend_delete() {
    let Some((client, _)) = common::proxy("lifecycle_team_user_key_chat_update_spend_delete")
    else {
        return;
    };
    let run = common::run_id();
    let team_id = format!("grp-{run}");
    let user_id = format!("usr-{run}");
    let org_id = format!("org-{run}");

    // group -> team, with our id: the second create is "already exists", not a second team.
    let team = TeamNew {
        team_id: Some(team_id.clone()),
        team_alias: Some(format!("acme-{run}/eng")),
        models: Some(vec!["mock-gpt".into()]),
        max_budget: Some(dec!(10)),
        budget_duration: Some("30d".into()),
        metadata: metadata(json!({"stratai_org_id": org_id})),
        ..Default::default()
    };
    let created = client.team_new(&team).await.unwrap();
    assert_eq!(created.team_id, team_id);
    assert_eq!(created.max_budget, Some(dec!(10)));
    let again = client.team_new(&team).await.unwrap_err();
    assert!(matches!(again, LiteLlmError::AlreadyExists(_)), "{again:?}");
    let same_alias = client
        .team_list()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.team_alias == team.team_alias)
        .count();
    assert_eq!(same_alias, 1);

    // member -> user + key
    let mut user = UserNew::new(&user_id);
    user.user_email = Some(format!("{run}@acme.test"));
    client.user_new(&user).await.unwrap();
    assert!(matches!(
        client.user_new(&user).await.unwrap_err(),
        LiteLlmError::AlreadyExists(_)
    ));
    let team_now = client.team_member_add(&team_id, &user_id).await.unwrap();
    assert!(team_now.has_member(&user_id));
    assert!(matches!(
        client
            .team_member_add(&team_id, &user_id)
            .await
            .unwrap_err(),
        LiteLlmError::AlreadyExists(_)
    ));

    let alias = format!("stratai:{org_id}:{user_id}");
    let generate = KeyGenerate {
        key_alias: Some(alias.clone()),
        user_id: Some(user_id.clone()),
        team_id: Some(team_id.clone()),
        models: Some(vec!["mock-gpt".into()]),
        max_budget: Some(dec!(1)),
        budget_duration: Some("30d".into()),
        metadata: metadata(json!({"stratai_org_id": org_id, "stratai_user_id": user_id})),
        ..Default::default()
    };
    let key = client.key_generate(&generate).await.unwrap();
    assert!(key.key.expose().starts_with("sk-"));
    assert!(!format!("{key:?}").contains(key.key.expose()));
    assert_eq!(key.token_hash(), key_token(&key.key));
    let dup = client.key_generate(&generate).await.unwrap_err();
    assert!(matches!(dup, LiteLlmError::AlreadyExists(_)), "{dup:?}");
    assert!(!dup.to_string().contains(key.key.expose()));

    // chat on an allowed model, with attribution
    let who = Attribution {
        end_user_id: Some(user_id.clone()),
        user_id: Some(user_id.clone()),
        org_id: Some(org_id.clone()),
        request_id: Some(format!("req-{run}")),
    };
    let answer = client
        .chat(&key.key, &who, &hello("mock-gpt"))
        .await
        .unwrap();
    assert!(answer.completion.id.starts_with("chatcmpl-"));
    let usage = answer.completion.usage.clone().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (1, 4));
    assert_eq!(dollars(answer.meta.response_cost), Some(HELLO_COST));
    assert_eq!(answer.meta.model_group.as_deref(), Some("mock-gpt"));
    assert!(answer.meta.call_id.is_some());
    assert_eq!(answer.meta.key_max_budget, Some(dec!(1)));

    // streaming: typed chunks, one id, usage with cost at the end
    let mut stream = client
        .chat_stream(&key.key, &who, &hello("mock-gpt"))
        .await
        .unwrap();
    let mut text = String::new();
    let mut ids = HashSet::new();
    let mut last_usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        ids.insert(chunk.id.clone());
        text.push_str(chunk.text().unwrap_or(""));
        if chunk.usage.is_some() {
            last_usage = chunk.usage;
        }
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(text.split_whitespace().count(), 4);
    let stream_usage = last_usage.expect("usage chunk");
    assert_eq!(stream_usage.completion_tokens, 4);
    assert_eq!(dollars(stream_usage.cost), Some(HELLO_COST));
    let stream_id = ids.into_iter().next().unwrap();

    // a disallowed model -> the typed denial
    let denied = client
        .chat(&key.key, &who, &hello("mock-gpt-premium"))
        .await
        .unwrap_err();
    assert!(
        matches!(denied, LiteLlmError::KeyModelDenied(_)),
        "{denied:?}"
    );

    // tier change: key models updated; the team must allow the model too
    let update = KeyUpdate {
        models: Some(vec!["mock-gpt".into(), "mock-gpt-premium".into()]),
        ..Default::default()
    };
    let updated = client
        .key_update(&KeyRef::Token(key.token_hash()), &update)
        .await
        .unwrap();
    assert_eq!(updated.models, ["mock-gpt", "mock-gpt-premium"]);
    let team_denied = client
        .chat(&key.key, &who, &hello("mock-gpt-premium"))
        .await
        .unwrap_err();
    assert!(
        matches!(team_denied, LiteLlmError::TeamModelDenied(_)),
        "{team_denied:?}"
    );
    let team_update = TeamUpdate {
        team_id: team_id.clone(),
        models: Some(vec!["mock-gpt".into(), "mock-gpt-premium".into()]),
        ..Default::default()
    };
    assert_eq!(
        client.team_update(&team_update).await.unwrap().models.len(),
        2
    );
    let premium = client
        .chat(&key.key, &who, &hello("mock-gpt-premium"))
        .await
        .unwrap();
    assert_eq!(
        dollars(premium.meta.response_cost),
        Some(HELLO_COST * dec!(10))
    );

    // key info and listings
    let info = client
        .key_info(&KeyRef::Token(key.token_hash()))
        .await
        .unwrap();
    assert_eq!(info.key_alias.as_deref(), Some(alias.as_str()));
    assert_eq!(
        info.metadata.as_ref().unwrap()["stratai_user_id"],
        json!(user_id)
    );
    let listed = client
        .key_list(&KeyListQuery {
            team_id: Some(team_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].token.as_deref(), Some(key.token_hash().as_str()));
    let team_info = client.team_info(&team_id).await.unwrap();
    assert_eq!(team_info.keys.len(), 1);
    let user_info = client.user_info(&user_id).await.unwrap();
    assert!(user_info.user_info.teams.contains(&team_id));

    // spend logs (written in batches): v1 by key and by user, v2 by date range
    let expected: HashSet<String> = [
        answer.completion.id.clone(),
        stream_id.clone(),
        premium.completion.id.clone(),
    ]
    .into();
    let rows = common::eventually(Duration::from_secs(25), || async {
        let rows = client
            .spend_logs(&SpendLogsFilter::Key(KeyRef::Secret(key.key.clone())))
            .await
            .ok()?;
        let got: HashSet<String> = rows
            .iter()
            .filter(|r| r.is_success())
            .map(|r| r.request_id.clone())
            .collect();
        expected.is_subset(&got).then_some(rows)
    })
    .await
    .expect("spend logs never showed the three calls");
    let ok_rows: Vec<_> = rows
        .iter()
        .filter(|r| expected.contains(&r.request_id))
        .collect();
    let total: Decimal = ok_rows.iter().map(|r| r.spend).sum();
    assert_eq!(dollars(Some(total)), Some(HELLO_COST * dec!(12)));
    assert!(
        ok_rows
            .iter()
            .all(|r| r.end_user.as_deref() == Some(user_id.as_str()))
    );
    assert!(
        ok_rows
            .iter()
            .all(|r| r.api_key.as_deref() == Some(key.token_hash().as_str()))
    );
    let by_user = client
        .spend_logs(&SpendLogsFilter::User(user_id.clone()))
        .await
        .unwrap();
    assert!(
        expected
            .iter()
            .all(|id| by_user.iter().any(|r| &r.request_id == id))
    );
    let mut query = SpendLogsQuery::between(
        Utc::now() - chrono::Duration::hours(1),
        Utc::now() + chrono::Duration::minutes(5),
    );
    query.page_size = 2;
    let ranged = client.spend_logs_range(&query).await.unwrap();
    assert!(
        expected
            .iter()
            .all(|id| ranged.iter().any(|r| &r.request_id == id)),
        "v2 pages missed a call"
    );
    query.api_key = Some(key.token_hash());
    let by_key = client.spend_logs_range(&query).await.unwrap();
    assert!(
        by_key
            .iter()
            .all(|r| r.api_key.as_deref() == Some(key.token_hash().as_str()))
    );
    assert!(
        expected
            .iter()
            .all(|id| by_key.iter().any(|r| &r.request_id == id))
    );
    query.api_key = None;
    query.user_id = Some(user_id.clone());
    let by_user_v2 = client.spend_logs_range(&query).await.unwrap();
    assert!(
        by_user_v2
            .iter()
            .all(|r| r.user.as_deref() == Some(user_id.as_str()))
    );
    assert!(
        expected
            .iter()
            .all(|id| by_user_v2.iter().any(|r| &r.request_id == id))
    );

    // member removed -> key gone
    client
        .key_delete(&[KeyRef::Token(key.token_hash())])
        .await
        .unwrap();
    let gone = client.key_info(&KeyRef::Token(key.token_hash())).await;
    assert!(
        matches!(&gone, Ok(info) if info.is_deleted())
            || matches!(&gone, Err(LiteLlmError::NotFound(_))),
        "{gone:?}"
    );
    let after = client
        .chat(&key.key, &who, &hello("mock-gpt"))
        .await
        .unwrap_err();
    assert!(matches!(after, LiteLlmError::Unauthorized(_)), "{after:?}");
    assert!(matches!(
        client
            .key_delete(&[KeyRef::Token(key.token_hash())])
            .await
            .unwrap_err(),
        LiteLlmError::NotFound(_)
    ));
    client.team_member_delete(&team_id, &user_id).await.unwrap();
    client
        .user_delete(std::slice::from_ref(&user_id))
        .await
        .unwrap();
    assert!(matches!(
        client.user_info(&user_id).await.unwrap_err(),
        LiteLlmError::NotFound(_)
    ));
    client
        .team_delete(std::slice::from_ref(&team_id))
        .await
        .unwrap();
    assert!(matches!(
        client.team_info(&team_id).await.unwrap_err(),
        LiteLlmError::NotFound(_)
    ));
}

#[tokio::test]
async fn budget_exceeded_is_typed() {
    let Some((client, _)) = common::proxy("budget_exceeded_is_typed") else {
        return;
    };
    let run = common::run_id();
    let key = client
        .key_generate(&KeyGenerate {
            key_alias: Some(format!("budget-{run}")),
            models: Some(vec!["mock-gpt".into()]),
            max_budget: Some(dec!(0.02)),
            ..Default::default()
        })
        .await
        .unwrap();
    let who = Attribution::default();
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        match client.chat(&key.key, &who, &hello("mock-gpt")).await {
            Ok(_) => outcomes.push("ok"),
            Err(LiteLlmError::BudgetExceeded(e)) => {
                assert_eq!(e.status, 422);
                assert!(!e.message.contains(key.key.expose()));
                outcomes.push("budget");
                break;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
        // Reservations are released shortly after each answer.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // 0.009 per call on 0.02: the check runs before a call against current spend, so calls
    // pass while spend < budget (3 calls reach 0.027) and the next is refused.
    assert_eq!(outcomes.last(), Some(&"budget"), "{outcomes:?}");
    assert!(outcomes.len() >= 3, "{outcomes:?}");
    client.key_delete(&[KeyRef::Secret(key.key)]).await.unwrap();
}

#[tokio::test]
async fn rpm_limit_is_rate_limited_with_retry_after() {
    let Some((client, _)) = common::proxy("rpm_limit_is_rate_limited_with_retry_after") else {
        return;
    };
    let run = common::run_id();
    let key = client
        .key_generate(&KeyGenerate {
            key_alias: Some(format!("rpm-{run}")),
            models: Some(vec!["mock-gpt".into()]),
            rpm_limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    let who = Attribution::default();
    let first = client
        .chat(&key.key, &who, &hello("mock-gpt"))
        .await
        .unwrap();
    assert_eq!(first.meta.rate_limits.key_limit_requests, Some(2));
    client
        .chat(&key.key, &who, &hello("mock-gpt"))
        .await
        .unwrap();
    let limited = client
        .chat(&key.key, &who, &hello("mock-gpt"))
        .await
        .unwrap_err();
    let LiteLlmError::RateLimited {
        retry_after,
        limit_type,
        reset_at,
        error,
    } = limited
    else {
        panic!("{limited:?}")
    };
    assert_eq!(error.status, 429);
    assert!(
        retry_after.is_some_and(|d| d > Duration::ZERO && d <= Duration::from_secs(60)),
        "{retry_after:?}"
    );
    assert_eq!(limit_type.as_deref(), Some("requests"));
    assert!(reset_at.is_some());
    client.key_delete(&[KeyRef::Secret(key.key)]).await.unwrap();
}

#[tokio::test]
async fn enterprise_gates_budgets_and_models() {
    let Some((client, _)) = common::proxy("enterprise_gates_budgets_and_models") else {
        return;
    };
    let run = common::run_id();

    // Organizations are Enterprise-only here: a distinct error, and the probe says so.
    let org = OrganizationNew {
        organization_alias: format!("acme-{run}"),
        ..Default::default()
    };
    let err = client.organization_new(&org).await.unwrap_err();
    assert!(matches!(err, LiteLlmError::EnterpriseOnly(_)), "{err:?}");
    assert!(!client.organizations_available().await.unwrap());
    let regen = client
        .key_regenerate(&KeyRef::Token("0".repeat(64)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            regen,
            LiteLlmError::EnterpriseOnly(_) | LiteLlmError::NotFound(_)
        ),
        "{regen:?}"
    );

    // Budgets: idempotent create with our id, update, info, exact decimals.
    let budget = BudgetNew {
        budget_id: format!("tier-{run}"),
        max_budget: Some(dec!(5.25)),
        soft_budget: Some(dec!(4)),
        budget_duration: Some("30d".into()),
        rpm_limit: Some(10),
        ..Default::default()
    };
    let created = client.budget_new(&budget).await.unwrap();
    assert_eq!(created.max_budget, Some(dec!(5.25)));
    assert!(created.budget_reset_at.is_some());
    assert!(matches!(
        client.budget_new(&budget).await.unwrap_err(),
        LiteLlmError::AlreadyExists(_)
    ));
    let updated = client
        .budget_update(&BudgetNew {
            max_budget: Some(dec!(6.5)),
            ..budget.clone()
        })
        .await
        .unwrap();
    assert_eq!(updated.max_budget, Some(dec!(6.5)));
    let info = client
        .budget_info(std::slice::from_ref(&budget.budget_id))
        .await
        .unwrap();
    assert_eq!(info[0].max_budget, Some(dec!(6.5)));
    let missing = client
        .budget_update(&BudgetNew {
            budget_id: format!("nope-{run}"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(missing, LiteLlmError::NotFound(_)), "{missing:?}");

    // Model prices, exact.
    let models = client.model_info().await.unwrap();
    let gpt = models
        .iter()
        .find(|m| m.model_name == "mock-gpt")
        .expect("mock-gpt");
    assert_eq!(gpt.litellm_params.input_cost_per_token, Some(dec!(0.001)));
    assert_eq!(gpt.litellm_params.output_cost_per_token, Some(dec!(0.002)));

    // Not found and unauthorized shapes.
    assert!(matches!(
        client.team_info(&format!("nope-{run}")).await.unwrap_err(),
        LiteLlmError::NotFound(_)
    ));
    assert!(matches!(
        client
            .key_info(&KeyRef::Secret(Secret::new(format!("sk-nope{run}"))))
            .await
            .unwrap_err(),
        LiteLlmError::NotFound(_)
    ));
    let bad = client
        .chat(
            &Secret::new(format!("sk-not-a-key-{run}")),
            &Attribution::default(),
            &hello("mock-gpt"),
        )
        .await
        .unwrap_err();
    assert!(matches!(bad, LiteLlmError::Unauthorized(_)), "{bad:?}");
    assert!(!bad.to_string().contains(&run), "the key leaked: {bad}");
}
