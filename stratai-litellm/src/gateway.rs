//! [`LiteLlmGateway`]: stratai-core's `LlmGateway` port over the LiteLLM proxy, calling with
//! the member's virtual key from the [`KeyVault`] the sync fills.
//!
//! Built over a [`SyncEngine`] ([`LiteLlmGateway::with_sync_engine`], what the server runs),
//! the gateway reads the key from the engine's vault and, when the vault has none yet (the
//! outbox has not reached the member), asks the engine to push the member now; a key the
//! proxy refuses (deleted or rotated elsewhere) is handed back to the engine to replace. The
//! gateway never creates, replaces or deletes keys itself: the engine is the only code path
//! that does, so the two never fight over a member's key (alias `stratai:<org>:<user>`).
//! Built over a bare vault ([`LiteLlmGateway::new`]) it only reads.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;
use stratai_core::gateway::{
    CallContext, ChatChoice, ChatChunk as CoreChunk, ChatDelta, ChatMessage as CoreMessage,
    ChatRequest as CoreRequest, ChatResponse as CoreResponse, ChunkChoice as CoreChunkChoice,
    GatewayError, TokenUsage,
};
use stratai_core::ports::LlmGateway;

use crate::Secret;
use crate::chat::{Attribution, ChatChunk, ChatMessage, ChatRequest, Usage};
use crate::client::LiteLlmClient;
use crate::error::LiteLlmError;
use crate::sync::{KeyVault, SyncEngine};

/// The `LlmGateway` of production: LiteLLM, with the member's virtual key and attribution
/// headers (`x-litellm-end-user-id` = the user id, `x-stratai-user-id`, `x-stratai-org-id`,
/// `x-stratai-request-id`).
pub struct LiteLlmGateway {
    client: LiteLlmClient,
    keys: Keys,
}

/// Where members' keys come from.
enum Keys {
    /// Read only: a member without a key is not provisioned.
    Vault(Arc<dyn KeyVault>),
    /// The sync engine's vault, provisioned on demand by the engine.
    Engine(Arc<SyncEngine>),
}

impl std::fmt::Debug for LiteLlmGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiteLlmGateway").finish_non_exhaustive()
    }
}

impl LiteLlmGateway {
    /// A gateway reading member keys from `vault` (never provisioning them).
    pub fn new(client: LiteLlmClient, vault: Arc<dyn KeyVault>) -> Self {
        Self {
            client,
            keys: Keys::Vault(vault),
        }
    }

    /// A gateway reading member keys from `engine`'s vault and asking `engine` for a key the
    /// vault lacks or the proxy refused (see the module docs).
    pub fn with_sync_engine(engine: Arc<SyncEngine>) -> Self {
        Self {
            client: engine.client().clone(),
            keys: Keys::Engine(engine),
        }
    }

    async fn key(&self, ctx: &CallContext) -> Result<Secret, GatewayError> {
        let not_provisioned = || {
            GatewayError::NotProvisioned(format!(
                "no LiteLLM key for user `{}` in organization `{}` yet",
                ctx.user_id, ctx.org_id
            ))
        };
        match &self.keys {
            Keys::Vault(vault) => match vault.get(ctx.org_id, ctx.user_id).await {
                Ok(Some((_, key))) => Ok(key),
                Ok(None) => Err(not_provisioned()),
                Err(e) => Err(GatewayError::Unavailable(format!("key vault: {e}"))),
            },
            Keys::Engine(engine) => {
                // The common case: one read of the shared vault.
                match engine.member_key(ctx.org_id, ctx.user_id).await {
                    Ok(Some(key)) => return Ok(key),
                    Ok(None) => {}
                    Err(e) => return Err(GatewayError::Unavailable(format!("key vault: {e}"))),
                }
                match engine.provision_member(ctx.org_id, ctx.user_id, None).await {
                    Ok(Some(key)) => Ok(key),
                    Ok(None) => Err(not_provisioned()),
                    Err(e) => Err(GatewayError::NotProvisioned(format!(
                        "cannot provision the member's virtual key: {e}"
                    ))),
                }
            }
        }
    }

    /// The port's error for `error`; a refused key is handed to the engine to replace, so the
    /// member's next call (the client is told to retry) has a working one.
    async fn failed(&self, ctx: &CallContext, key: &Secret, error: LiteLlmError) -> GatewayError {
        if let (LiteLlmError::Unauthorized(_), Keys::Engine(engine)) = (&error, &self.keys)
            && let Err(e) = engine
                .provision_member(ctx.org_id, ctx.user_id, Some(key))
                .await
        {
            tracing::warn!(org = %ctx.org_id, user = %ctx.user_id, error = %e, "re-provisioning a refused virtual key failed; the next call retries");
        }
        gateway_error(error)
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

fn request(core: &CoreRequest) -> ChatRequest {
    let messages = core
        .messages
        .iter()
        .map(|m| ChatMessage {
            role: m.role.clone(),
            content: m.content.clone(),
        })
        .collect();
    let mut request = ChatRequest {
        model: core.model.clone(),
        messages,
        max_tokens: core.max_tokens,
        temperature: core.temperature,
        extra: serde_json::Map::new(),
    };
    if let Some(user) = &core.user {
        request
            .extra
            .insert("user".to_owned(), Value::String(user.clone()));
    }
    request
}

fn tokens(usage: Option<&Usage>) -> TokenUsage {
    let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    usage.map_or_else(TokenUsage::default, |u| TokenUsage {
        prompt_tokens: clamp(u.prompt_tokens),
        completion_tokens: clamp(u.completion_tokens),
        total_tokens: clamp(u.total_tokens),
    })
}

/// Maps the client's error onto the port's. Messages are the proxy's own (redacted), without
/// the endpoint and status, since the server shows some of them to the member. A refused or
/// unknown key is `NotProvisioned` (the member may retry once the sync replaced it), not a
/// refusal of the member; a throttled call's `retry-after` is at least a second.
pub fn gateway_error(error: LiteLlmError) -> GatewayError {
    match error {
        LiteLlmError::KeyModelDenied(e)
        | LiteLlmError::TeamModelDenied(e)
        | LiteLlmError::Forbidden(e)
        | LiteLlmError::EnterpriseOnly(e) => GatewayError::Refused(e.message),
        // An unknown key or a key whose team is missing: the sync has not (re)provisioned it.
        LiteLlmError::Unauthorized(e) | LiteLlmError::NotFound(e) => {
            GatewayError::NotProvisioned(e.message)
        }
        LiteLlmError::BudgetExceeded(e) => GatewayError::BudgetExceeded(e.message),
        LiteLlmError::RateLimited { retry_after, .. } => GatewayError::RateLimited {
            retry_after_secs: retry_after.map(|d| d.as_secs().max(1)),
        },
        LiteLlmError::BadRequest(e) | LiteLlmError::AlreadyExists(e) => {
            GatewayError::BadRequest(e.message)
        }
        LiteLlmError::InvalidInput(message) => GatewayError::BadRequest(message),
        other => GatewayError::Unavailable(other.to_string()),
    }
}

fn chunk(chunk: ChatChunk, model: &str) -> CoreChunk {
    CoreChunk {
        id: chunk.id,
        object: "chat.completion.chunk".to_owned(),
        created: chrono::Utc::now().timestamp(),
        model: chunk.model.unwrap_or_else(|| model.to_owned()),
        choices: chunk
            .choices
            .into_iter()
            .map(|c| CoreChunkChoice {
                index: c.index,
                delta: ChatDelta {
                    role: c.delta.role,
                    content: c.delta.content,
                },
                finish_reason: c.finish_reason,
            })
            .collect(),
        usage: chunk.usage.as_ref().map(|u| tokens(Some(u))),
    }
}

#[async_trait]
impl LlmGateway for LiteLlmGateway {
    async fn chat(
        &self,
        ctx: &CallContext,
        request_in: &CoreRequest,
    ) -> Result<CoreResponse, GatewayError> {
        let key = self.key(ctx).await?;
        let answer = match self
            .client
            .chat(&key, &attribution(ctx), &request(request_in))
            .await
        {
            Ok(answer) => answer,
            Err(e) => return Err(self.failed(ctx, &key, e).await),
        };
        let completion = answer.completion;
        Ok(CoreResponse {
            id: completion.id,
            object: "chat.completion".to_owned(),
            created: completion
                .created
                .unwrap_or_else(|| chrono::Utc::now().timestamp()),
            model: completion.model.unwrap_or_else(|| request_in.model.clone()),
            choices: completion
                .choices
                .into_iter()
                .map(|c| ChatChoice {
                    index: c.index,
                    message: CoreMessage {
                        role: c.message.role.unwrap_or_else(|| "assistant".to_owned()),
                        content: c.message.content.unwrap_or_default(),
                    },
                    finish_reason: c.finish_reason,
                })
                .collect(),
            usage: tokens(completion.usage.as_ref()),
        })
    }

    async fn chat_stream(
        &self,
        ctx: &CallContext,
        request_in: &CoreRequest,
    ) -> Result<BoxStream<'static, Result<CoreChunk, GatewayError>>, GatewayError> {
        let key = self.key(ctx).await?;
        let stream = match self
            .client
            .chat_stream(&key, &attribution(ctx), &request(request_in))
            .await
        {
            Ok(stream) => stream,
            Err(e) => return Err(self.failed(ctx, &key, e).await),
        };
        let model = request_in.model.clone();
        Ok(stream
            .map(move |item| item.map(|c| chunk(c, &model)).map_err(gateway_error))
            .boxed())
    }
}
