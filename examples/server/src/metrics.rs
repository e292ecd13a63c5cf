//! Prometheus metrics, served at `GET /metrics`.
//!
//! Recorded through the `metrics` facade; rendered by `metrics-exporter-prometheus`. The
//! recorder is process-wide (one per process, installed on first use), so several servers in
//! one test process share it; each series is labelled, never keyed by user or org (bounded
//! cardinality).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `stratai_http_requests_total` | counter | `route` (template), `method`, `status` |
//! | `stratai_gateway_decisions_total` | counter | `outcome` (`allow`/`warn`/`deny`), `reason` (kind) |
//! | `stratai_budget_refusals_total` | counter | `scope` (`org`/`group`/`user`/`tier`) |
//! | `stratai_upstream_latency_seconds` | histogram | `provider`, `outcome` |
//! | `stratai_gateway_overhead_seconds` | histogram | — |
//! | `stratai_usage_write_lag_seconds` | histogram | `path` (`direct`/`spool`) |
//! | `stratai_usage_spooled_total` | counter | — |
//! | `stratai_usage_spool_pending` | gauge | — |
//! | `stratai_abandoned_leases_total` | counter | `outcome` (`settled`/`released`) |
//! | `stratai_budget_late_overage_total` | counter | — |
//! | `stratai_budget_alerts_total` | counter | `scope` |

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds): fine below a millisecond, where the gateway's overhead lives.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder on first call; later calls return the same handle.
/// `None` when another recorder was installed first (metrics are then not served).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS);
            match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "prometheus recorder not installed; /metrics disabled");
                    None
                }
            }
        })
        .as_ref()
}

/// Installs the recorder (see [`handle`]) and starts, once per process, the thread that
/// runs its upkeep every 5 s. The recorder keeps every histogram sample until upkeep folds
/// it into the buckets; without it, a busy gateway that nobody scrapes would keep every
/// latency sample in memory. A scrape also runs upkeep.
pub fn start() {
    static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Some(h) = handle() else {
        return;
    };
    if STARTED.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                h.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep thread not started; histograms are folded at each scrape only");
    }
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn serve_metrics() -> Response {
    match handle() {
        Some(h) => {
            h.run_upkeep();
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                h.render(),
            )
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable",
        )
            .into_response(),
    }
}

/// Middleware counting every request by route template, method and status.
pub async fn track_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let response = next.run(req).await;
    metrics::counter!(
        "stratai_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => response.status().as_u16().to_string(),
    )
    .increment(1);
    response
}

pub use stratai_guardrails::runtime::metrics::{
    ReasonKind, record_budget_alert, record_budget_refusal, record_decision, record_spooled,
    record_upstream_latency, record_usage_write_lag, record_usage_write_lag_since, scope_label,
    set_spool_pending,
};

/// Records StratAI's own time on a chat request (the `gateway` part of its `Server-Timing`
/// header: received to response head, less the upstream call).
pub fn record_gateway_overhead(own: Duration) {
    metrics::histogram!("stratai_gateway_overhead_seconds").record(own.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use std::time::Instant;
    use stratai_core::budget::BudgetScope;
    use tower::ServiceExt;

    #[tokio::test]
    async fn exposes_recorded_series() {
        assert!(handle().is_some());
        let app = Router::new()
            .route("/metrics", get(serve_metrics))
            .route("/probe/{id}", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(track_requests));
        let probe = Request::builder()
            .uri("/probe/123")
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.clone().oneshot(probe).await.unwrap().status(), 200);
        record_decision("deny", ReasonKind::Budget);
        record_budget_refusal(&BudgetScope::Org);
        record_upstream_latency("demo", "ok", Duration::from_micros(300));
        record_usage_write_lag("direct", Instant::now());
        let res = app
            .oneshot(
                Request::builder()
                    .uri("/metrics")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains(
                r#"stratai_http_requests_total{route="/probe/{id}",method="GET",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"stratai_gateway_decisions_total{outcome="deny",reason="budget"}"#)
        );
        assert!(text.contains(r#"stratai_budget_refusals_total{scope="org"}"#));
        assert!(text.contains("stratai_upstream_latency_seconds_bucket"));
        assert!(text.contains("stratai_usage_write_lag_seconds_count"));
    }
}
