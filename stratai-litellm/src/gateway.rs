//! [`LiteLlmGateway`]: stratai-core's `LlmGateway` port over the LiteLLM proxy, calling with
//! the member's virtual key from the [`KeyVault`] the sync fills.

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

use crate::chat::{Attribution, ChatChunk, ChatMessage, ChatRequest, Usage};
use crate::client::LiteLlmClient;
use crate::error::LiteLlmError;
use crate::secret::Secret;
use crate::sync::KeyVault;

/// The `LlmGateway` of production: LiteLLM, with the member's virtual key and attribution
/// headers (`x-litellm-end-user-id` = the user id, `x-stratai-user-id`, `x-stratai-org-id`,
/// `x-stratai-request-id`).
pub struct LiteLlmGateway {
    client: LiteLlmClient,
    vault: Arc<dyn KeyVault>,
}

impl std::fmt::Debug for LiteLlmGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiteLlmGateway").finish_non_exhaustive()
    }
}

impl LiteLlmGateway {
    /// A gateway reading member keys from `vault`.
    pub fn new(client: LiteLlmClient, vault: Arc<dyn KeyVault>) -> Self {
        Self { client, vault }
    }

    async fn key(&self, ctx: &CallContext) -> Result<Secret, GatewayError> {
        match self.vault.get(ctx.org_id, ctx.user_id).await {
            Ok(Some((_, key))) => Ok(key),
            Ok(None) => Err(GatewayError::NotProvisioned(format!(
                "no LiteLLM key for user `{}` in organization `{}` yet",
                ctx.user_id, ctx.org_id
            ))),
            Err(e) => Err(GatewayError::Unavailable(format!("key vault: {e}"))),
        }
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

/// Maps the client's error onto the port's.
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
            retry_after_secs: retry_after.map(|d| d.as_secs()),
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
        created: 0,
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
        let answer = self
            .client
            .chat(&key, &attribution(ctx), &request(request_in))
            .await
            .map_err(gateway_error)?;
        let completion = answer.completion;
        Ok(CoreResponse {
            id: completion.id,
            object: "chat.completion".to_owned(),
            created: completion.created.unwrap_or_default(),
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
        let stream = self
            .client
            .chat_stream(&key, &attribution(ctx), &request(request_in))
            .await
            .map_err(gateway_error)?;
        let model = request_in.model.clone();
        Ok(stream
            .map(move |item| item.map(|c| chunk(c, &model)).map_err(gateway_error))
            .boxed())
    }
}
