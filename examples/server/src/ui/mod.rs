//! The web UI: server-rendered pages for members (`/app`), organization admins (`/org`) and
//! platform operators (`/admin`), with a sign-in page.
//!
//! - Templates are askama's (`templates/ui/`), compiled into the binary and HTML-escaped by
//!   default; the stylesheet is embedded too. No script at all: every form works without one.
//! - Pages never decide access themselves: they call the admin API's handlers (which ask core's
//!   `authorize`) or ask [`crate::api::allow`] with the action of the API route they mirror, so
//!   a page answers what its API route answers (another organization's ids: 404, a forbidden
//!   action: the 403 page, signed out: the sign-in page).
//! - Every form is protected by [`csrf`]; every answer carries [`CONTENT_SECURITY_POLICY`].

pub mod charts;
pub mod csrf;
mod pages;
mod view;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::app::AppState;

/// The policy of every UI answer: nothing but this server's stylesheet and forms; no script,
/// no inline style, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The stylesheet, embedded at build time.
const STYLESHEET: &str = include_str!("../../assets/ui.css");

macro_rules! ui_routes {
    ($( $method:ident $path:literal => $handler:path ;)*) => {
        /// Every UI route as `(METHOD, path template)`, for the authorization sweep.
        pub const ROUTES: &[(&str, &str)] = &[ $( (ui_routes!(@upper $method), $path) ),* ];

        fn page_routes() -> Router<AppState> {
            let mut router = Router::new();
            $( router = router.route($path, axum::routing::$method($handler)); )*
            router
        }
    };
    (@upper get) => { "GET" };
    (@upper post) => { "POST" };
}

ui_routes! {
    get "/" => pages::home;
    get "/signin" => pages::signin_page;
    post "/signin" => pages::signin;
    post "/signout" => pages::signout;
    get "/app" => pages::member::home;
    post "/app/playground" => pages::member::playground;
    get "/org" => pages::org::pick;
    get "/org/{org_id}" => pages::org::dashboard;
    get "/org/{org_id}/users" => pages::org::users;
    post "/org/{org_id}/users" => pages::org::invite;
    get "/org/{org_id}/groups" => pages::org::groups;
    post "/org/{org_id}/groups" => pages::org::create_group;
    get "/org/{org_id}/guardrails" => pages::org::guardrails;
    get "/admin" => pages::admin::overview;
    get "/admin/organizations" => pages::admin::organizations;
    get "/invitations/{token}" => pages::invitation::show;
    post "/invitations/{token}" => pages::invitation::accept;
    post "/admin/organizations" => pages::admin::create_organization;
    get "/ui/style.css" => stylesheet;
}

/// The UI's routes, each answer with the content security policy and a referrer policy.
pub fn router() -> Router<AppState> {
    page_routes()
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
}
