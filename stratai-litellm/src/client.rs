//! [`LiteLlmClient`]: management calls with the master key, chat calls with virtual keys.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Secret;
use crate::chat::{
    Attribution, ChatChunk, ChatCompletion, ChatRequest, ChatResponse, ResponseMeta,
};
use crate::error::{LiteLlmError, RateLimitHeaders, Redactor, classify};
use crate::types::*;

/// Retry settings: exponential backoff with full jitter, via the `backon` crate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retries).
    pub max_retries: usize,
    /// First delay.
    pub min_delay: Duration,
    /// Largest delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Proxy base URL, e.g. `http://127.0.0.1:4000`.
    pub base_url: String,
    /// The master key, for management calls.
    pub master_key: Secret,
    /// Limit for a whole call, body included (not for streams: see `stream_idle_timeout`).
    pub request_timeout: Duration,
    /// Limit for opening a connection.
    pub connect_timeout: Duration,
    /// Longest silence between two chunks of a stream.
    pub stream_idle_timeout: Duration,
    /// Retries of idempotent calls and of connection failures.
    pub retry: RetryPolicy,
}

impl ClientConfig {
    /// Defaults: 30 s per call, 5 s to connect, 60 s between stream chunks, 3 retries.
    pub fn new(base_url: impl Into<String>, master_key: Secret) -> Self {
        Self {
            base_url: base_url.into(),
            master_key,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            stream_idle_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

/// Whether a call may be repeated without changing the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Idempotency {
    /// Reads, updates that set fields, deletes: retried on transient failures.
    Idempotent,
    /// Creates and chat calls: retried only when the connection could not be made.
    NotIdempotent,
}

fn should_retry(error: &LiteLlmError, idempotency: Idempotency, policy: &RetryPolicy) -> bool {
    match error {
        LiteLlmError::Connect { .. } => true,
        LiteLlmError::RateLimited { retry_after, .. } => {
            idempotency == Idempotency::Idempotent
                && retry_after.is_none_or(|after| after <= policy.max_delay)
        }
        LiteLlmError::Timeout { .. }
        | LiteLlmError::Transport { .. }
        | LiteLlmError::Upstream(_) => idempotency == Idempotency::Idempotent,
        _ => false,
    }
}

struct Call<'a> {
    endpoint: &'static str,
    method: Method,
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    auth: &'a Secret,
    headers: HeaderMap,
    idempotency: Idempotency,
}

/// Typed client of a LiteLLM proxy. Cheap to clone (shares the connection pool).
#[derive(Clone, Debug)]
pub struct LiteLlmClient {
    http: reqwest::Client,
    base: Url,
    config: ClientConfig,
    redactor: Redactor,
}

impl LiteLlmClient {
    /// Builds a client; fails on a malformed base URL.
    pub fn new(config: ClientConfig) -> Result<Self, LiteLlmError> {
        let mut base_text = config.base_url.trim().to_owned();
        if !base_text.ends_with('/') {
            base_text.push('/');
        }
        let base = Url::parse(&base_text).map_err(|e| {
            LiteLlmError::InvalidInput(format!("base url `{}`: {e}", config.base_url))
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.stream_idle_timeout)
            // Below uvicorn's 5 s keep-alive (LiteLLM's server), so a pooled connection is never
            // reused just as the proxy closes it.
            .pool_idle_timeout(Duration::from_secs(4))
            .build()
            .map_err(|e| LiteLlmError::InvalidInput(format!("http client: {}", e.without_url())))?;
        let redactor = Redactor::new([config.master_key.expose().to_owned()]);
        Ok(Self {
            http,
            base,
            config,
            redactor,
        })
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn url(&self, endpoint: &str) -> Result<Url, LiteLlmError> {
        self.base
            .join(endpoint.trim_start_matches('/'))
            .map_err(|e| LiteLlmError::InvalidInput(format!("endpoint `{endpoint}`: {e}")))
    }

    fn json<T: Serialize>(body: &T) -> Result<Vec<u8>, LiteLlmError> {
        serde_json::to_vec(body)
            .map_err(|e| LiteLlmError::InvalidInput(format!("request body: {e}")))
    }

    fn decode<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        body: &[u8],
    ) -> Result<T, LiteLlmError> {
        serde_json::from_slice(body)
            .map_err(|e| LiteLlmError::decode(endpoint, e, body, &self.redactor))
    }

    fn request(&self, call: &Call<'_>) -> Result<reqwest::RequestBuilder, LiteLlmError> {
        let mut url = self.url(call.endpoint)?;
        if !call.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(call.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut builder = self
            .http
            .request(call.method.clone(), url)
            .bearer_auth(call.auth.expose())
            .headers(call.headers.clone());
        if let Some(body) = &call.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        Ok(builder)
    }

    async fn attempt(&self, call: &Call<'_>) -> Result<(HeaderMap, Bytes), LiteLlmError> {
        let timeout = self.config.request_timeout;
        let response = self
            .request(call)?
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| LiteLlmError::from_reqwest(call.endpoint, e, timeout))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| LiteLlmError::from_reqwest(call.endpoint, e, timeout))?;
        if status.is_success() {
            Ok((headers, body))
        } else {
            Err(classify(
                call.endpoint,
                status.as_u16(),
                RateLimitHeaders::from_headers(&headers),
                &body,
                &self.redactor,
            ))
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        let policy = &self.config.retry;
        ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.max_retries)
            .with_jitter()
    }

    async fn execute(&self, call: Call<'_>) -> Result<(HeaderMap, Bytes), LiteLlmError> {
        let policy = self.config.retry.clone();
        let idempotency = call.idempotency;
        (|| self.attempt(&call))
            .retry(self.backoff())
            .sleep(tokio::time::sleep)
            .when(|e| should_retry(e, idempotency, &policy))
            .await
    }

    async fn management<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        method: Method,
        query: Vec<(&'static str, String)>,
        body: Option<Vec<u8>>,
        idempotency: Idempotency,
    ) -> Result<T, LiteLlmError> {
        let call = Call {
            endpoint,
            method,
            query,
            body,
            auth: &self.config.master_key,
            headers: HeaderMap::new(),
            idempotency,
        };
        let (_, body) = self.execute(call).await?;
        self.decode(endpoint, &body)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        body: &B,
        idempotency: Idempotency,
    ) -> Result<T, LiteLlmError> {
        self.management(
            endpoint,
            Method::POST,
            Vec::new(),
            Some(Self::json(body)?),
            idempotency,
        )
        .await
    }

    async fn get<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        query: Vec<(&'static str, String)>,
    ) -> Result<T, LiteLlmError> {
        self.management(endpoint, Method::GET, query, None, Idempotency::Idempotent)
            .await
    }

    // ------------------------------------------------------------------------- health

    /// `GET /health/readiness`: Ok when the proxy answers.
    pub async fn readiness(&self) -> Result<Value, LiteLlmError> {
        self.get("/health/readiness", Vec::new()).await
    }

    // ------------------------------------------------------------------------- teams

    /// `POST /team/new`. With `team_id` set, a second create fails with `AlreadyExists`.
    pub async fn team_new(&self, team: &TeamNew) -> Result<Team, LiteLlmError> {
        self.post("/team/new", team, Idempotency::NotIdempotent)
            .await
    }

    /// `POST /team/update`.
    pub async fn team_update(&self, update: &TeamUpdate) -> Result<Team, LiteLlmError> {
        let mut body = serde_json::to_value(update)
            .map_err(|e| LiteLlmError::InvalidInput(format!("request body: {e}")))?;
        if update.clear_max_budget
            && let Some(map) = body.as_object_mut()
        {
            map.insert("max_budget".to_owned(), Value::Null);
        }
        let envelope: DataEnvelope<Team> = self
            .post("/team/update", &body, Idempotency::Idempotent)
            .await?;
        Ok(envelope.data)
    }

    /// `GET /team/info`: the team and its keys; `NotFound` when missing.
    pub async fn team_info(&self, team_id: &str) -> Result<TeamInfo, LiteLlmError> {
        self.get("/team/info", vec![("team_id", team_id.to_owned())])
            .await
    }

    /// `GET /team/list`: every team.
    pub async fn team_list(&self) -> Result<Vec<Team>, LiteLlmError> {
        self.get("/team/list", Vec::new()).await
    }

    /// `POST /team/delete`; `NotFound` when missing.
    pub async fn team_delete(&self, team_ids: &[String]) -> Result<(), LiteLlmError> {
        #[derive(Serialize)]
        struct Body<'a> {
            team_ids: &'a [String],
        }
        let _: Value = self
            .post("/team/delete", &Body { team_ids }, Idempotency::Idempotent)
            .await?;
        Ok(())
    }

    /// `POST /team/member_add` with role `user`; `AlreadyExists` when already a member.
    pub async fn team_member_add(
        &self,
        team_id: &str,
        user_id: &str,
    ) -> Result<Team, LiteLlmError> {
        let body =
            serde_json::json!({"team_id": team_id, "member": {"role": "user", "user_id": user_id}});
        self.post("/team/member_add", &body, Idempotency::NotIdempotent)
            .await
    }

    /// `POST /team/member_delete`; `BadRequest` when not a member.
    pub async fn team_member_delete(
        &self,
        team_id: &str,
        user_id: &str,
    ) -> Result<Team, LiteLlmError> {
        let body = serde_json::json!({"team_id": team_id, "user_id": user_id});
        self.post("/team/member_delete", &body, Idempotency::Idempotent)
            .await
    }

    // ------------------------------------------------------------------------- users

    /// `POST /user/new` (without a key); `AlreadyExists` for a known `user_id`.
    pub async fn user_new(&self, user: &UserNew) -> Result<User, LiteLlmError> {
        self.post("/user/new", user, Idempotency::NotIdempotent)
            .await
    }

    /// `POST /user/update` (LiteLLM creates unknown users here).
    pub async fn user_update(&self, update: &UserUpdate) -> Result<User, LiteLlmError> {
        let envelope: DataEnvelope<User> = self
            .post("/user/update", update, Idempotency::Idempotent)
            .await?;
        Ok(envelope.data)
    }

    /// `GET /user/info`: the user and its keys; `NotFound` when missing.
    pub async fn user_info(&self, user_id: &str) -> Result<UserInfo, LiteLlmError> {
        self.get("/user/info", vec![("user_id", user_id.to_owned())])
            .await
    }

    /// `GET /user/list`, every page.
    pub async fn user_list(&self) -> Result<Vec<User>, LiteLlmError> {
        let mut users = Vec::new();
        let mut page = 1u64;
        loop {
            let answer: UserPage = self
                .get(
                    "/user/list",
                    vec![("page", page.to_string()), ("page_size", "100".to_owned())],
                )
                .await?;
            let done =
                answer.users.is_empty() || answer.total_pages.is_none_or(|total| page >= total);
            users.extend(answer.users);
            if done {
                return Ok(users);
            }
            page += 1;
        }
    }

    /// `POST /user/delete`; `NotFound` when missing.
    pub async fn user_delete(&self, user_ids: &[String]) -> Result<(), LiteLlmError> {
        #[derive(Serialize)]
        struct Body<'a> {
            user_ids: &'a [String],
        }
        let _: Value = self
            .post("/user/delete", &Body { user_ids }, Idempotency::Idempotent)
            .await?;
        Ok(())
    }

    // ------------------------------------------------------------------------- keys

    /// `POST /key/generate`: the only answer that carries the secret. A duplicate
    /// `key_alias` is `AlreadyExists`.
    pub async fn key_generate(&self, key: &KeyGenerate) -> Result<GeneratedKey, LiteLlmError> {
        self.post("/key/generate", key, Idempotency::NotIdempotent)
            .await
    }

    /// `POST /key/update`; `NotFound` for unknown or deleted keys.
    pub async fn key_update(
        &self,
        key: &KeyRef,
        update: &KeyUpdate,
    ) -> Result<KeyInfo, LiteLlmError> {
        let body = KeyUpdateBody {
            key: key.as_param(),
            models: update.models.as_deref(),
            max_budget: if update.clear_max_budget {
                Some(None)
            } else {
                update.max_budget.map(Some)
            },
            budget_duration: update.budget_duration.as_deref(),
            rpm_limit: match update.rpm_limit {
                Some(rpm) => Some(Some(rpm)),
                None => update.clear_limits.then_some(None),
            },
            tpm_limit: match update.tpm_limit {
                Some(tpm) => Some(Some(tpm)),
                None => update.clear_limits.then_some(None),
            },
            metadata: update.metadata.as_ref(),
            key_alias: update.key_alias.as_deref(),
            blocked: update.blocked,
            team_id: update.team_id.as_deref(),
            organization_id: update.organization_id.as_deref(),
            duration: update.duration.as_deref(),
        };
        let mut info: KeyInfo = self
            .post("/key/update", &body, Idempotency::Idempotent)
            .await?;
        info.token.get_or_insert_with(|| key.token());
        Ok(info)
    }

    /// `GET /key/info`; a deleted key still answers, with [`KeyInfo::is_deleted`].
    pub async fn key_info(&self, key: &KeyRef) -> Result<KeyInfo, LiteLlmError> {
        let envelope: KeyInfoEnvelope = self
            .get("/key/info", vec![("key", key.as_param().to_owned())])
            .await?;
        let mut info = envelope.info;
        info.token.get_or_insert_with(|| key.token());
        Ok(info)
    }

    /// `POST /key/delete`; `NotFound` when none of the keys exists.
    pub async fn key_delete(&self, keys: &[KeyRef]) -> Result<(), LiteLlmError> {
        #[derive(Serialize)]
        struct Body<'a> {
            keys: Vec<&'a str>,
        }
        let body = Body {
            keys: keys.iter().map(KeyRef::as_param).collect(),
        };
        let _: Value = self
            .post("/key/delete", &body, Idempotency::Idempotent)
            .await?;
        Ok(())
    }

    /// `POST /key/regenerate`: a new secret for the key (Enterprise-only in LiteLLM 1.108,
    /// where it is `EnterpriseOnly`).
    pub async fn key_regenerate(&self, key: &KeyRef) -> Result<GeneratedKey, LiteLlmError> {
        let body = serde_json::json!({"key": key.as_param()});
        self.post("/key/regenerate", &body, Idempotency::NotIdempotent)
            .await
    }

    /// `GET /key/list?return_full_object=true`, every page.
    pub async fn key_list(&self, query: &KeyListQuery) -> Result<Vec<KeyInfo>, LiteLlmError> {
        let size = query.page_size.unwrap_or(100).max(1);
        let mut keys = Vec::new();
        let mut page = 1u64;
        loop {
            let mut params = vec![
                ("return_full_object", "true".to_owned()),
                ("page", page.to_string()),
                ("size", size.to_string()),
            ];
            if let Some(user) = &query.user_id {
                params.push(("user_id", user.clone()));
            }
            if let Some(team) = &query.team_id {
                params.push(("team_id", team.clone()));
            }
            if let Some(alias) = &query.key_alias {
                params.push(("key_alias", alias.clone()));
            }
            let answer: KeyPage = self.get("/key/list", params).await?;
            let done =
                answer.keys.is_empty() || answer.total_pages.is_none_or(|total| page >= total);
            keys.extend(answer.keys);
            if done {
                return Ok(keys);
            }
            page += 1;
        }
    }

    // ------------------------------------------------------------------------- budgets

    /// `POST /budget/new`; `AlreadyExists` for a known `budget_id`.
    pub async fn budget_new(&self, budget: &BudgetNew) -> Result<Budget, LiteLlmError> {
        self.post("/budget/new", budget, Idempotency::NotIdempotent)
            .await
    }

    /// `POST /budget/update`; `NotFound` for an unknown id (LiteLLM answers `null`).
    pub async fn budget_update(&self, budget: &BudgetNew) -> Result<Budget, LiteLlmError> {
        let answer: Option<Budget> = self
            .post("/budget/update", budget, Idempotency::Idempotent)
            .await?;
        answer.ok_or_else(|| self.empty_answer("/budget/update", &budget.budget_id))
    }

    /// `POST /budget/info`; `NotFound` when none of the ids exists.
    pub async fn budget_info(&self, budget_ids: &[String]) -> Result<Vec<Budget>, LiteLlmError> {
        let body = serde_json::json!({"budgets": budget_ids});
        let budgets: Option<Vec<Budget>> = self
            .post("/budget/info", &body, Idempotency::Idempotent)
            .await?;
        match budgets {
            Some(budgets) if !budgets.is_empty() => Ok(budgets),
            _ => Err(self.empty_answer("/budget/info", &budget_ids.join(","))),
        }
    }

    fn empty_answer(&self, endpoint: &'static str, id: &str) -> LiteLlmError {
        LiteLlmError::NotFound(Box::new(crate::error::ApiError {
            endpoint,
            status: 200,
            kind: None,
            message: self.redactor.redact(&format!("no answer for `{id}`")),
            param: None,
            body: "null".to_owned(),
        }))
    }

    // ------------------------------------------------------------------------- organizations

    /// `POST /organization/new` (`EnterpriseOnly` without a LiteLLM Enterprise license). With
    /// `organization_id` set, a second create fails (LiteLLM 1.108 does not check first: the
    /// database refuses the duplicate, so look the organization up before creating it).
    pub async fn organization_new(
        &self,
        org: &OrganizationNew,
    ) -> Result<Organization, LiteLlmError> {
        self.post("/organization/new", org, Idempotency::NotIdempotent)
            .await
    }

    /// `PATCH /organization/update` (`EnterpriseOnly` without a license).
    pub async fn organization_update(
        &self,
        update: &OrganizationUpdate,
    ) -> Result<Organization, LiteLlmError> {
        let mut body = serde_json::to_value(update)
            .map_err(|e| LiteLlmError::InvalidInput(format!("request body: {e}")))?;
        if update.clear_max_budget
            && let Some(map) = body.as_object_mut()
        {
            map.insert("max_budget".to_owned(), Value::Null);
        }
        self.management(
            "/organization/update",
            Method::PATCH,
            Vec::new(),
            Some(Self::json(&body)?),
            Idempotency::Idempotent,
        )
        .await
    }

    /// `GET /organization/info`: `NotFound` when missing (`EnterpriseOnly` without a license).
    pub async fn organization_info(
        &self,
        organization_id: &str,
    ) -> Result<Organization, LiteLlmError> {
        self.get(
            "/organization/info",
            vec![("organization_id", organization_id.to_owned())],
        )
        .await
    }

    /// `GET /organization/list`: every organization (`EnterpriseOnly` without a license).
    pub async fn organization_list(&self) -> Result<Vec<Organization>, LiteLlmError> {
        self.get("/organization/list", Vec::new()).await
    }

    /// `DELETE /organization/delete`: LiteLLM also deletes the organizations' teams, keys and
    /// memberships; `NotFound` when one is missing (`EnterpriseOnly` without a license).
    pub async fn organization_delete(
        &self,
        organization_ids: &[String],
    ) -> Result<(), LiteLlmError> {
        #[derive(Serialize)]
        struct Body<'a> {
            organization_ids: &'a [String],
        }
        let _: Value = self
            .management(
                "/organization/delete",
                Method::DELETE,
                Vec::new(),
                Some(Self::json(&Body { organization_ids })?),
                Idempotency::Idempotent,
            )
            .await?;
        Ok(())
    }

    /// Whether the proxy offers organizations, probed with `GET /organization/info` for the
    /// empty id. LiteLLM checks the license before anything else, so `EnterpriseOnly` means
    /// no; an answer from past that check means yes: a licensed proxy says "Organization not
    /// found" (404) or refuses the id (400/422). A bare 404 that does not mention an
    /// organization is a proxy without the route: no. Other answers (unauthorized, down,
    /// ...) are errors: they say nothing about the license.
    pub async fn organizations_available(&self) -> Result<bool, LiteLlmError> {
        match self.organization_info("").await {
            Ok(_) | Err(LiteLlmError::BadRequest(_)) => Ok(true),
            Err(LiteLlmError::NotFound(e)) => {
                Ok(e.message.to_ascii_lowercase().contains("organization"))
            }
            Err(LiteLlmError::EnterpriseOnly(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    // ------------------------------------------------------------------------- spend

    /// `GET /spend/logs` (v1): the rows of a key or a user (all of them, unpaginated).
    pub async fn spend_logs(
        &self,
        filter: &SpendLogsFilter,
    ) -> Result<Vec<SpendLogRow>, LiteLlmError> {
        let query = match filter {
            SpendLogsFilter::Key(key) => vec![("api_key", key.as_param().to_owned())],
            SpendLogsFilter::User(user) => vec![("user_id", user.clone())],
        };
        self.get("/spend/logs", query).await
    }

    /// `GET /spend/logs/v2`: one page (1-based) of a date range.
    pub async fn spend_logs_page(
        &self,
        query: &SpendLogsQuery,
        page: u64,
    ) -> Result<SpendLogsPage, LiteLlmError> {
        let format = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
        let mut params = vec![
            ("start_date", format(&query.start)),
            ("end_date", format(&query.end)),
            ("page", page.to_string()),
            ("page_size", query.page_size.max(1).to_string()),
        ];
        if let Some(key) = &query.api_key {
            params.push(("api_key", key.clone()));
        }
        if let Some(user) = &query.user_id {
            params.push(("user_id", user.clone()));
        }
        if let Some(team) = &query.team_id {
            params.push(("team_id", team.clone()));
        }
        self.get("/spend/logs/v2", params).await
    }

    /// `GET /spend/logs/v2`, every page of a date range.
    pub async fn spend_logs_range(
        &self,
        query: &SpendLogsQuery,
    ) -> Result<Vec<SpendLogRow>, LiteLlmError> {
        let mut rows = Vec::new();
        let mut page = 1u64;
        loop {
            let answer = self.spend_logs_page(query, page).await?;
            let done = answer.data.is_empty() || page >= answer.total_pages;
            rows.extend(answer.data);
            if done {
                return Ok(rows);
            }
            page += 1;
        }
    }

    // ------------------------------------------------------------------------- models

    /// `GET /model/info`: every model with its prices.
    pub async fn model_info(&self) -> Result<Vec<ModelInfo>, LiteLlmError> {
        let list: ModelInfoList = self.get("/model/info", Vec::new()).await?;
        Ok(list.data)
    }

    // ------------------------------------------------------------------------- chat

    fn attribution_headers(attribution: &Attribution) -> Result<HeaderMap, LiteLlmError> {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-litellm-end-user-id", &attribution.end_user_id),
            ("x-stratai-user-id", &attribution.user_id),
            ("x-stratai-org-id", &attribution.org_id),
            ("x-stratai-request-id", &attribution.request_id),
        ] {
            if let Some(value) = value {
                let value = HeaderValue::from_str(value).map_err(|_| {
                    LiteLlmError::InvalidInput(format!("header `{name}` value `{value}`"))
                })?;
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        // LiteLLM keeps this object in the call's spend log row and its logging callback
        // payload (`metadata.spend_logs_metadata`): how the spend importer tells a call
        // through StratAI from a direct use of the member's key (`crate::spend`).
        if let Some(id) = &attribution.request_id {
            let value = serde_json::json!({ crate::spend::STRATAI_REQUEST_KEY: id }).to_string();
            let value = HeaderValue::from_str(&value).map_err(|_| {
                LiteLlmError::InvalidInput(format!("request id `{id}` as a header value"))
            })?;
            headers.insert(
                HeaderName::from_static("x-litellm-spend-logs-metadata"),
                value,
            );
        }
        Ok(headers)
    }

    /// `POST /v1/chat/completions` with a virtual key: the completion and LiteLLM's headers.
    /// Retried only when the connection could not be made (a chat call costs money).
    pub async fn chat(
        &self,
        key: &Secret,
        attribution: &Attribution,
        request: &ChatRequest,
    ) -> Result<ChatResponse, LiteLlmError> {
        const ENDPOINT: &str = "/v1/chat/completions";
        let mut body = serde_json::to_value(request)
            .map_err(|e| LiteLlmError::InvalidInput(format!("request body: {e}")))?;
        if let Some(map) = body.as_object_mut() {
            map.insert("stream".to_owned(), Value::Bool(false));
        }
        let call = Call {
            endpoint: ENDPOINT,
            method: Method::POST,
            query: Vec::new(),
            body: Some(Self::json(&body)?),
            auth: key,
            headers: Self::attribution_headers(attribution)?,
            idempotency: Idempotency::NotIdempotent,
        };
        let (headers, body) = self.execute(call).await?;
        let completion: ChatCompletion = self.decode(ENDPOINT, &body)?;
        Ok(ChatResponse {
            completion,
            meta: ResponseMeta::from_headers(&headers),
        })
    }

    /// `POST /v1/chat/completions` with `"stream": true` and
    /// `stream_options.include_usage`: LiteLLM's headers and a stream of typed chunks.
    /// Errors before the first byte are returned here; later ones end the stream.
    pub async fn chat_stream(
        &self,
        key: &Secret,
        attribution: &Attribution,
        request: &ChatRequest,
    ) -> Result<ChatStream, LiteLlmError> {
        const ENDPOINT: &str = "/v1/chat/completions";
        let mut body = serde_json::to_value(request)
            .map_err(|e| LiteLlmError::InvalidInput(format!("request body: {e}")))?;
        if let Some(map) = body.as_object_mut() {
            map.insert("stream".to_owned(), Value::Bool(true));
            map.entry("stream_options")
                .or_insert_with(|| serde_json::json!({"include_usage": true}));
        }
        let call = Call {
            endpoint: ENDPOINT,
            method: Method::POST,
            query: Vec::new(),
            body: Some(Self::json(&body)?),
            auth: key,
            headers: Self::attribution_headers(attribution)?,
            idempotency: Idempotency::NotIdempotent,
        };
        let timeout = self.config.request_timeout;
        let open = || async {
            let builder = self.request(&call)?;
            let response = tokio::time::timeout(timeout, builder.send())
                .await
                .map_err(|_| LiteLlmError::Timeout {
                    endpoint: ENDPOINT,
                    after: timeout,
                })?
                .map_err(|e| LiteLlmError::from_reqwest(ENDPOINT, e, timeout))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let headers = response.headers().clone();
            let body = tokio::time::timeout(timeout, response.bytes())
                .await
                .map_err(|_| LiteLlmError::Timeout {
                    endpoint: ENDPOINT,
                    after: timeout,
                })?
                .map_err(|e| LiteLlmError::from_reqwest(ENDPOINT, e, timeout))?;
            Err(classify(
                ENDPOINT,
                status.as_u16(),
                RateLimitHeaders::from_headers(&headers),
                &body,
                &self.redactor,
            ))
        };
        let policy = self.config.retry.clone();
        let response = open
            .retry(self.backoff())
            .sleep(tokio::time::sleep)
            .when(|e| should_retry(e, Idempotency::NotIdempotent, &policy))
            .await?;
        let meta = ResponseMeta::from_headers(response.headers());
        let redactor = self.redactor.clone();
        let idle = self.config.stream_idle_timeout;
        let events = response.bytes_stream().eventsource();
        let chunks = futures::stream::unfold(Some(Box::pin(events)), move |state| {
            let redactor = redactor.clone();
            async move {
                let mut events = state?;
                loop {
                    let next = match tokio::time::timeout(idle, events.next()).await {
                        Err(_) => {
                            return Some((
                                Err(LiteLlmError::Timeout {
                                    endpoint: ENDPOINT,
                                    after: idle,
                                }),
                                None,
                            ));
                        }
                        Ok(next) => next,
                    };
                    let event = match next {
                        None => return None,
                        Some(Err(eventsource_stream::EventStreamError::Transport(e))) => {
                            return Some((
                                Err(LiteLlmError::from_reqwest(ENDPOINT, e, idle)),
                                None,
                            ));
                        }
                        Some(Err(e)) => {
                            return Some((
                                Err(LiteLlmError::decode(ENDPOINT, e, b"", &redactor)),
                                None,
                            ));
                        }
                        Some(Ok(event)) => event,
                    };
                    let data = event.data.trim();
                    if data.is_empty() {
                        continue;
                    }
                    if data == "[DONE]" {
                        return None;
                    }
                    let item = parse_chunk(data, &redactor);
                    let keep_going = item.is_ok();
                    return Some((item, keep_going.then_some(events)));
                }
            }
        });
        Ok(ChatStream {
            meta,
            inner: Box::pin(chunks),
        })
    }
}

/// A chunk, or the error LiteLLM reports in the stream (`data: {"error": {...}}`).
fn parse_chunk(data: &str, redactor: &Redactor) -> Result<ChatChunk, LiteLlmError> {
    const ENDPOINT: &str = "/v1/chat/completions";
    if data.starts_with("{\"error\"")
        || (data.contains("\"error\"") && !data.contains("\"choices\""))
    {
        let status = serde_json::from_str::<Value>(data)
            .ok()
            .and_then(|v| v.pointer("/error/code").cloned())
            .and_then(|code| match code {
                Value::String(s) => s.parse::<u16>().ok(),
                Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                _ => None,
            })
            .unwrap_or(500);
        return Err(classify(
            ENDPOINT,
            status,
            RateLimitHeaders::default(),
            data.as_bytes(),
            redactor,
        ));
    }
    serde_json::from_str(data)
        .map_err(|e| LiteLlmError::decode(ENDPOINT, e, data.as_bytes(), redactor))
}

/// A streamed completion: LiteLLM's headers and the chunks. Ends after `[DONE]` or after
/// the first error.
pub struct ChatStream {
    /// The headers of the answer.
    pub meta: ResponseMeta,
    inner: Pin<Box<dyn Stream<Item = Result<ChatChunk, LiteLlmError>> + Send>>,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatChunk, LiteLlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
