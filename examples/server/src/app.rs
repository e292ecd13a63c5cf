//! The application: shared state, the route table and the HTTP middleware stack.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, MatchedPath, State};
use axum::http::{HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth::Auth;
use crate::error::ApiError;
use stratai_store::people::delivery::Postman;

/// Whether the server's dependencies answer (database, later LiteLLM).
#[async_trait]
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` when ready; `Err` names what is not.
    async fn check(&self) -> Result<(), String>;
}

/// Readiness with no dependencies to check.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysReady;

#[async_trait]
impl Readiness for AlwaysReady {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// State shared by all handlers. Built by [`AppState::new`] (and
/// [`AppState::with_gateway`]), the one place that derives it from the configuration.
#[derive(Clone)]
pub struct AppState {
    /// Authentication.
    pub(crate) auth: Arc<Auth>,
    /// Readiness probe.
    pub(crate) readiness: Arc<dyn Readiness>,
    /// The storage ports.
    pub(crate) stores: crate::stores::Stores,
    /// The governed gateway (`/v1`, `/api/explain`, `/metrics`), when built.
    pub(crate) gateway: Option<crate::gateway::GatewayState>,
    /// Sends invitation emails.
    pub(crate) mail: Arc<Postman>,
    /// The provider prices (`STRATAI_PROVIDER_PRICES` over the built-in list), for the
    /// price list routes and the pricing report.
    pub(crate) prices: Arc<stratai_core::pricing::PriceTable>,
    /// The effective configuration, secrets already masked ([`crate::config::Config::summary`]):
    /// what the operators' settings page shows.
    pub(crate) settings: Arc<[crate::config::SettingLine]>,
}

impl AppState {
    /// The state of `config` over `stores`, without the gateway: the provider prices, the
    /// invitation mailer and the settings page come from `config`. The routes see `stores`
    /// audited (`stratai_store::audited`): every admin change is recorded with its entry in
    /// one transaction, whoever builds the state (the binary, the tests). Errors when the
    /// mailer cannot be built.
    pub fn new(
        config: &crate::config::Config,
        auth: Arc<Auth>,
        readiness: Arc<dyn Readiness>,
        stores: crate::stores::Stores,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            auth,
            readiness,
            stores: stratai_store::audited::audited(stores),
            gateway: None,
            mail: Arc::new(crate::server::postman(config)?),
            prices: Arc::new(config.prices.clone()),
            settings: config.summary().into(),
        })
    }

    /// The same state serving the governed gateway too.
    #[must_use]
    pub fn with_gateway(mut self, gateway: crate::gateway::GatewayState) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// Authentication.
    #[must_use]
    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    /// The storage ports the routes use.
    #[must_use]
    pub fn stores(&self) -> &crate::stores::Stores {
        &self.stores
    }

    /// The governed gateway, when built.
    #[must_use]
    pub fn gateway(&self) -> Option<&crate::gateway::GatewayState> {
        self.gateway.as_ref()
    }

    /// The invitation mailer.
    #[must_use]
    pub fn mail(&self) -> &Arc<Postman> {
        &self.mail
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl FromRef<AppState> for Arc<Auth> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// Limits applied to every request.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Largest request body.
    pub body_limit_bytes: usize,
    /// Time limit per request.
    pub request_timeout: Duration,
}

/// The full router with middleware.
pub fn router(state: AppState, limits: HttpLimits) -> Router {
    let routes = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/openapi.json", get(crate::openapi::serve))
        .merge(crate::auth::routes::router::<AppState>())
        .merge(crate::api::router().layer(axum::middleware::from_fn(crate::audit::scope)))
        .merge(crate::gateway::maybe_router(state.gateway.clone()))
        .merge(crate::ui::router().layer(axum::middleware::from_fn(crate::audit::scope)))
        .fallback(not_found)
        .method_not_allowed_fallback(crate::error::method_not_allowed)
        .layer(axum::middleware::from_fn(crate::metrics::track_requests))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forget_views_after_changes,
        ))
        .with_state(state);
    with_middleware(routes, limits)
}

/// After a change through the admin API or the web UI (any request but `GET`, `HEAD` and
/// `OPTIONS`, outside the gateway's `/v1` routes, authentication, `/api/explain` and
/// LiteLLM's spend callback), this instance's cached caller views are dropped: a budget,
/// member, group, tier subscription or organization setting changed here applies to the very
/// next request; on other instances after at most `STRATAI_GATEWAY_CACHE_MS`.
async fn forget_views_after_changes(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    let changes = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    ) && !["/v1/", "/auth/", "/api/explain", "/api/litellm/"]
        .iter()
        .any(|p| path.starts_with(p));
    let response = next.run(req).await;
    if changes && let Some(gateway) = &state.gateway {
        gateway.pipeline.forget_views();
    }
    response
}

/// Wraps `routes` in the standard stack: gateway timing, sensitive headers marked, request
/// id, tracing, panic to 500, timeout, body limit, security headers.
pub fn with_middleware(routes: Router, limits: HttpLimits) -> Router {
    let sensitive: Arc<[HeaderName]> = Arc::new([
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::COOKIE,
    ]);
    let x_request_id = HeaderName::from_static("x-request-id");
    let middleware = ServiceBuilder::new()
        // Outermost, so a gateway answer's `Server-Timing` covers the whole stack below.
        .layer(axum::middleware::from_fn(crate::gateway::server_timing))
        .layer(SetSensitiveRequestHeadersLayer::from_shared(sensitive))
        .layer(SetSensitiveResponseHeadersLayer::new([header::SET_COOKIE]))
        .layer(SetRequestIdLayer::new(
            x_request_id.clone(),
            MakeRequestUuid,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                .on_failure(DefaultOnFailure::new().level(Level::ERROR)),
        )
        .layer(PropagateRequestIdLayer::new(x_request_id))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
        // Outside the body limit, so its refusals (a `Content-Length` over the limit, or a
        // body that grows past it) answer in the JSON error shape.
        .layer(axum::middleware::map_response(json_payload_too_large))
        .layer(axum::middleware::from_fn(one_authorization))
        .layer(RequestBodyLimitLayer::new(limits.body_limit_bytes))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
    routes
        .layer(DefaultBodyLimit::max(limits.body_limit_bytes))
        .layer(middleware)
}

/// A 413 that is not already JSON (tower-http's body limit answers `text/plain`
/// "length limit exceeded") becomes the API's JSON error.
async fn json_payload_too_large(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return ApiError::PayloadTooLarge.into_response();
    }
    response
}

/// Refuses a request with more than one `Authorization` header (400): which credential
/// would count is ambiguous, and proxies disagree on it.
async fn one_authorization(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return ApiError::BadRequest("more than one `Authorization` header".to_owned())
            .into_response();
    }
    next.run(req).await
}

/// The request span: method, the route *template* (never the raw path or query, which can
/// hold invitation tokens or OAuth codes) and the request id. Headers are not recorded.
fn make_span<B>(req: &Request<B>) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("<unmatched>", MatchedPath::as_str);
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %req.method(), route = %route, request_id = %request_id)
}

fn panic_response(_panic: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::internal("handler panicked").into_response()
}

/// The answer of `GET /health/live`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Live {
    /// Always `live`.
    pub status: &'static str,
}

/// The answer of `GET /health/ready` (200 when ready, else 503).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// `ok` or `unavailable`.
    pub database: &'static str,
    /// `demo`, `ok`, `unreachable`, or `none` before the gateway is built.
    pub llm_upstream: &'static str,
}

async fn live() -> axum::Json<Live> {
    axum::Json(Live { status: "live" })
}

/// Ready when the database answers. The LLM upstream's status is reported too (`demo`, `ok`,
/// `unreachable`, or `none` before the gateway is built) but does not make the instance
/// unready: the admin API still serves, and chat answers 502 until LiteLLM is back.
async fn ready(State(state): State<AppState>) -> Response {
    let llm_upstream = match &state.gateway {
        Some(gateway) => gateway.upstream_status().await,
        None => "none",
    };
    match state.readiness.check().await {
        Ok(()) => axum::Json(Ready {
            status: "ready",
            database: "ok",
            llm_upstream,
        })
        .into_response(),
        Err(what) => {
            tracing::warn!(reason = %what, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(Ready {
                    status: "not_ready",
                    database: "unavailable",
                    llm_upstream,
                }),
            )
                .into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route".to_owned())
}
