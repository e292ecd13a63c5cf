//! The audit trail's request side: each mutating admin request (API and UI) runs inside
//! `stratai_store::audited::in_request` with its `x-request-id`, and the
//! [`crate::api::Caller`] extractor notes the signed-in caller in it
//! (`stratai_store::audited::note_actor`). The recording itself is the store's
//! (`stratai_store::audited`): every admin change and its entry are written in one transaction.

use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::RequestId;

/// Middleware of the admin API and UI routes: runs a mutating request (`POST`, `PUT`, `PATCH`,
/// `DELETE`) inside the store's audit context with its request id.
pub async fn scope(req: Request, next: Next) -> Response {
    if !matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return next.run(req).await;
    }
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .map(str::to_owned);
    stratai_store::audited::in_request(request_id, next.run(req)).await
}
