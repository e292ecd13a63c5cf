//! The web UI: server-rendered pages for members (`/app`), organization admins (`/org`) and
//! platform operators (`/admin`), with a sign-in page.
//!
//! - Templates are askama's (`templates/ui/`), compiled into the binary and HTML-escaped by
//!   default; the stylesheet is embedded too. No script at all: every form works without one
//!   (the CSV upload is a plain `multipart/form-data` form, the report filters a `GET` form).
//! - Tables paginate on the server (`view::PAGE_SIZE` rows a page), times show in the
//!   organization's timezone, money as exact decimals (`view::money`).
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
    post "/org/{org_id}/users/bulk" => pages::people::bulk_invite;
    get "/org/{org_id}/users/{user_id}" => pages::people::user;
    post "/org/{org_id}/users/{user_id}" => pages::people::update_user;
    post "/org/{org_id}/users/{user_id}/remove" => pages::people::remove_user;
    get "/org/{org_id}/groups" => pages::org::groups;
    post "/org/{org_id}/groups" => pages::org::create_group;
    get "/org/{org_id}/groups/{group_id}" => pages::group::group;
    post "/org/{org_id}/groups/{group_id}" => pages::group::update_group;
    post "/org/{org_id}/groups/{group_id}/members" => pages::group::add_member;
    post "/org/{org_id}/groups/{group_id}/members/{user_id}/remove" => pages::group::remove_member;
    post "/org/{org_id}/groups/{group_id}/delete" => pages::group::delete_group;
    get "/org/{org_id}/access" => pages::access::access;
    post "/org/{org_id}/access/tiers/{tier_id}" => pages::access::put_subscription;
    get "/org/{org_id}/usage" => pages::reports::report;
    get "/org/{org_id}/usage.csv" => pages::reports::export;
    get "/org/{org_id}/billing" => pages::reports::billing;
    get "/org/{org_id}/invoices/{invoice_id}" => pages::invoices::invoice;
    post "/org/{org_id}/invoices/{invoice_id}/status" => pages::invoices::set_status;
    get "/org/{org_id}/guardrails" => pages::rules::list;
    post "/org/{org_id}/guardrails" => pages::rules::create;
    get "/org/{org_id}/guardrails/{rule_id}" => pages::rules::edit;
    post "/org/{org_id}/guardrails/{rule_id}" => pages::rules::update;
    post "/org/{org_id}/guardrails/{rule_id}/delete" => pages::rules::delete;
    get "/org/{org_id}/explain" => pages::rules::explain;
    get "/org/{org_id}/settings" => pages::settings::settings;
    post "/org/{org_id}/settings" => pages::settings::save;
    get "/admin" => pages::admin::overview;
    get "/admin/organizations" => pages::admin::organizations;
    get "/invitations/{token}" => pages::invitation::show;
    post "/invitations/{token}" => pages::invitation::accept;
    post "/admin/organizations" => pages::admin::create_organization;
    get "/admin/organizations/{org_id}" => pages::admin::organization;
    post "/admin/organizations/{org_id}/active" => pages::admin::set_active;
    get "/admin/modules" => pages::admin::modules;
    get "/admin/users" => pages::platform::users;
    post "/admin/users/{user_id}" => pages::platform::update_user;
    get "/admin/settings" => pages::platform::settings;
    get "/admin/billing" => pages::admin::billing;
    get "/admin/guardrails" => pages::admin::guardrails_list;
    post "/admin/guardrails" => pages::admin::guardrails_create;
    post "/admin/guardrails/{rule_id}/delete" => pages::admin::guardrails_delete;
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
