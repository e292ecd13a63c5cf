//! The admin API (the seed's Appendix B). Handlers are thin: load the caller, ask
//! [`stratai_core::access::authorize`] through [`allow`], call a port, shape the answer.
//!
//! Isolation: a resource of an organization the caller does not belong to answers 404 (never
//! 403, which would confirm it exists); a forbidden action inside the caller's own
//! organization answers 403.

pub mod audit;
pub mod billing;
pub mod budgets;
pub mod groups;
pub mod guardrails;
pub mod invitations;
pub mod litellm;
pub mod members;
pub mod orgs;
pub mod profiles;
pub mod tiers;
pub mod usage;
pub mod users;

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use stratai_core::access::{Action, Actor, DenyReason, GroupGrant, OrgGrant, Resource, authorize};
use stratai_core::directory::User;
use stratai_core::{GroupId, OrgId, StoreError, UserId};

use crate::app::AppState;
use crate::error::ApiError;
use crate::stores::Stores;

/// The authenticated caller with everything access decisions need.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user.
    pub user: User,
    /// Their roles, for [`authorize`].
    pub actor: Actor,
}

impl Caller {
    /// The caller's user id.
    #[must_use]
    pub fn id(&self) -> UserId {
        self.user.id
    }

    /// Whether the caller is an active platform super admin.
    #[must_use]
    pub fn is_super_admin(&self) -> bool {
        self.user.is_super_admin()
    }

    /// `org` if named, else the caller's only organization (404 with none; 422 naming
    /// `org_id` with several: the caller must say which).
    pub fn org_or_only(&self, org: Option<OrgId>) -> Result<OrgId, ApiError> {
        match (org, self.actor.orgs.as_slice()) {
            (Some(org), _) => Ok(org),
            (None, [only]) => Ok(only.org_id),
            (None, []) => Err(ApiError::NotFound("organization".to_owned())),
            (None, _) => Err(ApiError::invalid(
                "org_id",
                "you belong to several organizations; name one",
            )),
        }
    }
}

impl Caller {
    /// Loads `user` with their memberships and group roles (for the CLI and handlers).
    pub async fn load(stores: &Stores, user: UserId) -> Result<Self, ApiError> {
        let dir = &stores.directory;
        let user = match dir.get_user(user).await {
            Ok(u) => u,
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::Unauthenticated("unknown user"));
            }
            Err(e) => return Err(e.into()),
        };
        let memberships = dir.memberships_of_user(user.id).await?;
        let mut groups = Vec::new();
        for m in &memberships {
            for (group, role) in dir.groups_of_member(m.org_id, user.id).await? {
                groups.push(GroupGrant {
                    org_id: m.org_id,
                    group_id: group.id,
                    role,
                });
            }
        }
        let actor = Actor {
            user_id: user.id,
            platform_role: user.platform_role,
            active: user.active,
            orgs: memberships
                .iter()
                .map(|m| OrgGrant {
                    org_id: m.org_id,
                    role: m.role,
                })
                .collect(),
            groups,
        };
        Ok(Self { user, actor })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = state
            .auth
            .authenticate(&parts.method, &parts.headers)
            .await?;
        let caller = Self::load(&state.stores, UserId::from_uuid(principal.user_id)).await?;
        // The author of whatever this request changes (the audit trail).
        stratai_store::audited::note_actor(caller.id());
        Ok(caller)
    }
}

/// Asks core's access function. Not a member of the resource's organization -> 404;
/// any other refusal -> 403.
pub fn allow(caller: &Caller, action: Action, resource: Resource) -> Result<(), ApiError> {
    authorize(&caller.actor, action, &resource).map_err(|denied| match denied.reason {
        DenyReason::NotAMember => ApiError::NotFound(
            match resource {
                Resource::Group { .. } => "group",
                Resource::Member { .. } => "member",
                _ => "organization",
            }
            .to_owned(),
        ),
        DenyReason::WrongResource => ApiError::internal(denied),
        other => ApiError::Forbidden(other.to_string()),
    })
}

/// A path parameter; an unparsable id cannot name anything, so it answers 404.
#[derive(Clone, Copy, Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|_| ApiError::NotFound("resource".to_owned()))
    }
}

/// A download: `body` as `content_type`, saved as `filename` by a browser.
pub fn attachment(body: axum::body::Body, content_type: &'static str, filename: &str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let disposition = format!("attachment; filename=\"{filename}\"");
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// The organization of a group, or 404. Super admins see every group; others only groups
/// of their organizations (checked by [`allow`] afterwards).
pub async fn group_org(state: &AppState, group: GroupId) -> Result<OrgId, ApiError> {
    state
        .stores
        .directory
        .locate_group(group)
        .await?
        .ok_or_else(|| ApiError::NotFound("group".to_owned()))
}

macro_rules! api_routes {
    ($( $method:ident $path:literal => $handler:path ;)*) => {
        /// Every admin API route as `(METHOD, path template)`: the route table the
        /// authorization sweep test is built from.
        pub const ROUTES: &[(&str, &str)] = &[ $( (api_routes!(@upper $method), $path) ),* ];

        /// Every admin API route as `(METHOD, path template, handler)`, for the OpenAPI document.
        pub const OPERATIONS: &[(&str, &str, &str)] = &[ $( (api_routes!(@upper $method), $path, stringify!($handler)) ),* ];

        /// The admin API router.
        pub fn router() -> Router<AppState> {
            let mut router = Router::new();
            $( router = router.route($path, axum::routing::$method($handler)); )*
            router
        }
    };
    (@upper get) => { "GET" };
    (@upper post) => { "POST" };
    (@upper put) => { "PUT" };
    (@upper patch) => { "PATCH" };
    (@upper delete) => { "DELETE" };
}

api_routes! {
    get "/api/me" => profiles::me;
    get "/api/me/budgets" => budgets::mine;
    get "/api/organizations" => orgs::list;
    post "/api/organizations" => orgs::create;
    get "/api/organizations/{org_id}" => orgs::get;
    patch "/api/organizations/{org_id}" => orgs::update;
    delete "/api/organizations/{org_id}" => orgs::deactivate;
    get "/api/organizations/{org_id}/members" => members::list;
    post "/api/organizations/{org_id}/members" => members::add;
    get "/api/organizations/{org_id}/members/{user_id}" => members::get;
    get "/api/organizations/{org_id}/members/{user_id}/groups" => members::groups;
    patch "/api/organizations/{org_id}/members/{user_id}" => members::update;
    delete "/api/organizations/{org_id}/members/{user_id}" => members::remove;
    get "/api/organizations/{org_id}/groups" => groups::list;
    post "/api/organizations/{org_id}/groups" => groups::create;
    get "/api/organizations/{org_id}/invitations" => invitations::list;
    delete "/api/organizations/{org_id}/invitations/{invitation_id}" => invitations::revoke;
    get "/api/organizations/{org_id}/tiers" => tiers::org_tiers;
    put "/api/organizations/{org_id}/tiers/{tier_id}" => tiers::put_subscription;
    get "/api/groups/{group_id}" => groups::get;
    patch "/api/groups/{group_id}" => groups::update;
    delete "/api/groups/{group_id}" => groups::delete;
    get "/api/groups/{group_id}/members" => groups::list_members;
    post "/api/groups/{group_id}/members" => groups::add_member;
    delete "/api/groups/{group_id}/members/{user_id}" => groups::remove_member;
    post "/api/invitations" => invitations::create;
    get "/api/invitations/{token}" => invitations::show;
    post "/api/invitations/{token}/accept" => invitations::accept;
    get "/api/tiers" => tiers::list;
    get "/api/tiers/accessible" => tiers::accessible;
    patch "/api/tiers/{tier_id}" => tiers::update;
    post "/api/tiers/{tier_id}/rates" => tiers::change_rates;
    get "/api/usage" => usage::summary;
    get "/api/usage/export" => usage::export;
    get "/api/budgets" => budgets::list;
    post "/api/budgets" => budgets::create;
    patch "/api/budgets/{budget_id}" => budgets::update;
    get "/api/organizations/{org_id}/guardrails" => guardrails::list_org;
    post "/api/organizations/{org_id}/guardrails" => guardrails::create_org;
    patch "/api/organizations/{org_id}/guardrails/{rule_id}" => guardrails::update_org;
    delete "/api/organizations/{org_id}/guardrails/{rule_id}" => guardrails::delete_org;
    get "/api/guardrails" => guardrails::list_platform;
    post "/api/guardrails" => guardrails::create_platform;
    patch "/api/guardrails/{rule_id}" => guardrails::update_platform;
    delete "/api/guardrails/{rule_id}" => guardrails::delete_platform;
    get "/api/profiles" => profiles::list;
    post "/api/profiles" => profiles::create;
    get "/api/profiles/{profile_id}" => profiles::get;
    patch "/api/profiles/{profile_id}" => profiles::update;
    delete "/api/profiles/{profile_id}" => profiles::delete;
    get "/api/users" => users::list;
    get "/api/users/{user_id}" => users::get;
    patch "/api/users/{user_id}" => users::update;
    get "/api/organizations/{org_id}/invoices" => billing::list;
    post "/api/organizations/{org_id}/invoices" => billing::draft;
    get "/api/organizations/{org_id}/invoices/{invoice_id}" => billing::get;
    patch "/api/organizations/{org_id}/invoices/{invoice_id}" => billing::set_status;
    get "/api/organizations/{org_id}/invoices/{invoice_id}/csv" => billing::export_csv;
    get "/api/billing/invoices" => billing::list_all;
    get "/api/billing/overview" => billing::overview;
    get "/api/billing/pricing-report" => billing::pricing_report;
    get "/api/billing/provider-prices" => billing::provider_prices;
    get "/api/litellm/spend" => litellm::spend_status;
    post "/api/litellm/spend-callback" => litellm::spend_callback;
    get "/api/organizations/{org_id}/audit" => audit::list_org;
    get "/api/organizations/{org_id}/audit/verify" => audit::verify_org;
    get "/api/organizations/{org_id}/audit/export" => audit::export_org;
    get "/api/audit" => audit::list_all;
    get "/api/audit/verify" => audit::verify_all;
    get "/api/audit/export" => audit::export_all;
}
