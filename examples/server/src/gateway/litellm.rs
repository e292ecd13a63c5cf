//! The LiteLLM-backed [`LlmGateway`]: every call goes through the member's own virtual key,
//! with attribution headers, so LiteLLM's spend logs and budgets see the person, not the
//! server.
//!
//! Where the key comes from is a [`VirtualKeys`] source. [`ProvisionedKeys`] (the default)
//! keeps the secret of each member's key in memory and, on first use, creates the key with the
//! master key (alias `stratai:<org>:<user>`, owner `user_id` = our user id, metadata with the
//! org and user ids). A key with that alias created elsewhere (whose secret this process never
//! saw) is replaced, because LiteLLM shows a secret only once. A deployment with several
//! server instances should give the secrets a shared home instead (see the crate README).

use std::collections::HashMap;
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use stratai_core::gateway::{
    CallContext, ChatChoice, ChatChunk, ChatDelta, ChatMessage, ChatRequest, ChatResponse,
    ChunkChoice, GatewayError, TokenUsage,
};
use stratai_core::ids::{OrgId, UserId};
use stratai_core::ports::LlmGateway;
use stratai_litellm::{
    Attribution, KeyGenerate, KeyListQuery, KeyRef, LiteLlmClient, LiteLlmError, Secret,
};
use tokio::sync::Mutex;

/// Where members' virtual keys come from.
#[async_trait]
pub trait VirtualKeys: Send + Sync {
    /// The secret of the member's key in the organization, creating it if needed.
    async fn key_for(&self, org: OrgId, user: UserId) -> Result<Secret, GatewayError>;
    /// Forgets a key the proxy refused (deleted or rotated elsewhere), so the next call
    /// provisions a fresh one.
    async fn forget(&self, org: OrgId, user: UserId);
}

/// The alias of a member's key, as the sync engine names it.
#[must_use]
pub fn key_alias(org: OrgId, user: UserId) -> String {
    format!("stratai:{org}:{user}")
}

/// Keys created on first use with the master key and kept in memory (see the module docs).
#[derive(Debug)]
pub struct ProvisionedKeys {
    client: LiteLlmClient,
    keys: Mutex<HashMap<(OrgId, UserId), Secret>>,
}

impl ProvisionedKeys {
    /// A source using `client`'s master key for provisioning.
    #[must_use]
    pub fn new(client: LiteLlmClient) -> Self {
        Self {
            client,
            keys: Mutex::new(HashMap::new()),
        }
    }
}

fn provisioning_failed(e: &LiteLlmError) -> GatewayError {
    GatewayError::NotProvisioned(format!("cannot provision the member's virtual key: {e}"))
}

#[async_trait]
impl VirtualKeys for ProvisionedKeys {
    async fn key_for(&self, org: OrgId, user: UserId) -> Result<Secret, GatewayError> {
        // Held across provisioning so two first calls of one member create one key.
        let mut keys = self.keys.lock().await;
        if let Some(k) = keys.get(&(org, user)) {
            return Ok(k.clone());
        }
        let alias = key_alias(org, user);
        // A key with our alias whose secret we do not hold is useless to us: replace it.
        let existing = self
            .client
            .key_list(&KeyListQuery {
                key_alias: Some(alias.clone()),
                ..KeyListQuery::default()
            })
            .await
            .map_err(|e| provisioning_failed(&e))?;
        let stale: Vec<KeyRef> = existing
            .into_iter()
            .filter(|k| k.key_alias.as_deref() == Some(alias.as_str()))
            .filter_map(|k| k.token.map(KeyRef::Token))
            .collect();
        if !stale.is_empty() {
            self.client
                .key_delete(&stale)
                .await
                .map_err(|e| provisioning_failed(&e))?;
        }
        let mut metadata = serde_json::Map::new();
        metadata.insert("stratai_org_id".to_owned(), org.to_string().into());
        metadata.insert("stratai_user_id".to_owned(), user.to_string().into());
        let generated = self
            .client
            .key_generate(&KeyGenerate {
                key_alias: Some(alias),
                user_id: Some(user.to_string()),
                metadata: Some(metadata),
                ..KeyGenerate::default()
            })
            .await
            .map_err(|e| provisioning_failed(&e))?;
        keys.insert((org, user), generated.key.clone());
        Ok(generated.key)
    }

    async fn forget(&self, org: OrgId, user: UserId) {
        self.keys.lock().await.remove(&(org, user));
    }
}

/// The LiteLLM provider. See the module docs.
pub struct LiteLlmProvider {
    client: LiteLlmClient,
    keys: Box<dyn VirtualKeys>,
}

impl std::fmt::Debug for LiteLlmProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiteLlmProvider").finish_non_exhaustive()
    }
}

impl LiteLlmProvider {
    /// A provider calling through `client` with keys from `keys`.
    pub fn new(client: LiteLlmClient, keys: Box<dyn VirtualKeys>) -> Self {
        Self { client, keys }
    }

    /// A provider that provisions members' keys itself ([`ProvisionedKeys`]).
    #[must_use]
    pub fn with_provisioned_keys(client: LiteLlmClient) -> Self {
        let keys = Box::new(ProvisionedKeys::new(client.clone()));
        Self { client, keys }
    }

    async fn key(&self, ctx: &CallContext) -> Result<Secret, GatewayError> {
        self.keys.key_for(ctx.org_id, ctx.user_id).await
    }

    async fn on_error(&self, ctx: &CallContext, e: LiteLlmError) -> GatewayError {
        if matches!(e, LiteLlmError::Unauthorized(_)) {
            self.keys.forget(ctx.org_id, ctx.user_id).await;
        }
        map_error(e)
    }
}

fn attribution(ctx: &CallContext) -> Attribution {
    Attribution {
        end_user_id: Some(ctx.user_id.to_string()),
        user_id: Some(ctx.user_id.to_string()),
        org_id: Some(ctx.org_id.to_string()),
        request_id: Some(ctx.request_id.to_string()),
    }
}

fn to_litellm(request: &ChatRequest) -> stratai_litellm::ChatRequest {
    let mut extra = serde_json::Map::new();
    if let Some(user) = &request.user {
        extra.insert("user".to_owned(), user.clone().into());
    }
    stratai_litellm::ChatRequest {
        model: request.model.clone(),
        messages: request
            .messages
            .iter()
            .map(|m| stratai_litellm::ChatMessage {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect(),
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        extra,
    }
}

fn usage_of(u: Option<&stratai_litellm::Usage>) -> Option<TokenUsage> {
    u.map(|u| {
        let p = u32::try_from(u.prompt_tokens).unwrap_or(u32::MAX);
        let c = u32::try_from(u.completion_tokens).unwrap_or(u32::MAX);
        TokenUsage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: u32::try_from(u.total_tokens).unwrap_or(p.saturating_add(c)),
        }
    })
}

/// Maps the client's error to the port's.
#[must_use]
pub fn map_error(e: LiteLlmError) -> GatewayError {
    match e {
        LiteLlmError::KeyModelDenied(_)
        | LiteLlmError::TeamModelDenied(_)
        | LiteLlmError::Forbidden(_)
        | LiteLlmError::EnterpriseOnly(_)
        | LiteLlmError::Unauthorized(_) => GatewayError::Refused(e.to_string()),
        LiteLlmError::BudgetExceeded(_) => GatewayError::BudgetExceeded(e.to_string()),
        LiteLlmError::RateLimited { retry_after, .. } => GatewayError::RateLimited {
            retry_after_secs: retry_after.map(|d| d.as_secs().max(1)),
        },
        LiteLlmError::BadRequest(_) | LiteLlmError::InvalidInput(_) => {
            GatewayError::BadRequest(e.to_string())
        }
        other => GatewayError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl LlmGateway for LiteLlmProvider {
    async fn chat(
        &self,
        ctx: &CallContext,
        request: &ChatRequest,
    ) -> Result<ChatResponse, GatewayError> {
        let key = self.key(ctx).await?;
        let started = Instant::now();
        let result = self
            .client
            .chat(&key, &attribution(ctx), &to_litellm(request))
            .await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        crate::metrics::record_upstream_latency("litellm", outcome, started.elapsed());
        let answer = match result {
            Ok(a) => a,
            Err(e) => return Err(self.on_error(ctx, e).await),
        };
        let c = answer.completion;
        Ok(ChatResponse {
            id: c.id,
            object: "chat.completion".to_owned(),
            created: c.created.unwrap_or_else(|| chrono::Utc::now().timestamp()),
            model: c.model.unwrap_or_else(|| request.model.clone()),
            choices: c
                .choices
                .into_iter()
                .map(|ch| ChatChoice {
                    index: ch.index,
                    message: ChatMessage {
                        role: ch.message.role.unwrap_or_else(|| "assistant".to_owned()),
                        content: ch.message.content.unwrap_or_default(),
                    },
                    finish_reason: ch.finish_reason,
                })
                .collect(),
            usage: usage_of(c.usage.as_ref()).unwrap_or_default(),
        })
    }

    async fn chat_stream(
        &self,
        ctx: &CallContext,
        request: &ChatRequest,
    ) -> Result<BoxStream<'static, Result<ChatChunk, GatewayError>>, GatewayError> {
        let key = self.key(ctx).await?;
        let started = Instant::now();
        let stream = match self
            .client
            .chat_stream(&key, &attribution(ctx), &to_litellm(request))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                crate::metrics::record_upstream_latency("litellm", "error", started.elapsed());
                return Err(self.on_error(ctx, e).await);
            }
        };
        crate::metrics::record_upstream_latency("litellm", "first_byte", started.elapsed());
        let model = request.model.clone();
        Ok(stream
            .map(move |item| {
                item.map_err(map_error).map(|c| ChatChunk {
                    id: c.id,
                    object: "chat.completion.chunk".to_owned(),
                    created: chrono::Utc::now().timestamp(),
                    model: c.model.unwrap_or_else(|| model.clone()),
                    choices: c
                        .choices
                        .into_iter()
                        .map(|ch| ChunkChoice {
                            index: ch.index,
                            delta: ChatDelta {
                                role: ch.delta.role,
                                content: ch.delta.content,
                            },
                            finish_reason: ch.finish_reason,
                        })
                        .collect(),
                    usage: usage_of(c.usage.as_ref()),
                })
            })
            .boxed())
    }
}
