//! The server's one test harness, declared by every `tests/*.rs` as `mod harness;`:
//!
//! - here: the server on memory, SQLite or PostgreSQL (the store crate's PostgreSQL harness,
//!   [`pg`]: a fresh database served by an unprivileged app role, so RLS is the second wall)
//!   called through its router, with a fixture world of organizations and request helpers
//!   ([`Api`], [`on_every_backend!`]);
//! - [`gateway`]: the gateway end to end, the server on a port over a database that outlives
//!   it (restarts, several instances), the server binary as a process, tenants, fault
//!   injection ([`on_both!`]: SQLite and PostgreSQL);
//! - [`litellm`]: the real LiteLLM proxy from the environment and the kit's prices;
//! - [`oidc`]: a local OIDC issuer and the server on an in-memory directory for the
//!   authentication tests.

#![allow(
    dead_code,
    unused_macros,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod gateway;
pub mod litellm;
pub mod oidc;
#[allow(unused_imports)]
pub use gateway::*;
#[allow(unused_imports)]
pub use litellm::*;
#[allow(unused_imports)]
pub use oidc::*;

pub use stratai_testkit::pg;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::Utc;
use serde_json::Value;
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope};
use stratai_core::directory::{
    BillingPlan, Email, Group, GroupMembership, GroupRole, Invitation, InvitationRequest,
    Membership, OrgRole, OrgSettings, Organization, PlatformRole, Slug, User,
};
use stratai_core::money::Money;
use stratai_core::ports::{RuleAction, RuleRecord, RuleScope};
use stratai_core::tiers::{BASIC_TIER_ID, STANDARD_TIER_ID, subscriptions_for};
use stratai_core::{BudgetId, GroupId, OrgId, RuleId, TierId, TierSlug};
use stratai_server::app::{AppState, router};
use stratai_server::auth::Mode;
use stratai_server::config::{Config, FileConfig};
use stratai_server::server::{Backends, build_state, limits};
use stratai_server::stores::Stores;
use stratai_testkit::Scratch;
use tower::ServiceExt as _;

/// Keeps a backend's resources alive (scratch folder, database) for the test's duration and
/// removes them when dropped.
pub enum Guard {
    None,
    Folder(Scratch),
    Pg(Box<pg::PgTestDb>),
}

/// Which backend: the test kit's (its backend matrix names them `memory`, `sqlite`, `postgres`).
pub type Kind = stratai_testkit::Backend;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A number unique in this process (for slugs, emails, names).
pub fn unique() -> usize {
    COUNTER.fetch_add(1, Ordering::Relaxed) + std::process::id() as usize * 1_000_000
}

/// The stores of `kind`, or `None` when PostgreSQL is unavailable outside CI.
pub async fn stores(kind: Kind) -> Option<(Stores, Guard)> {
    match kind {
        Kind::Memory => Some((Stores::memory(), Guard::None)),
        Kind::Sqlite => {
            let scratch = Scratch::new();
            let url = format!("sqlite://{}?mode=rwc", scratch.join("server.db").display());
            let stores = Stores::open(&url, None).await.expect("sqlite");
            Some((stores, Guard::Folder(scratch)))
        }
        Kind::Postgres => {
            let db = pg::fresh_db().await?;
            let stores = Stores::from_backend(db.store.clone());
            Some((stores, Guard::Pg(Box::new(db))))
        }
    }
}

/// The server under test (dev mode: tokens from `/auth/dev/token`).
pub struct Api {
    pub app: Router,
    pub state: AppState,
    pub stores: Stores,
    pub super_admin: User,
    pub internal_org: OrgId,
    /// Holds the spool file and the mailbox folder (`mailbox/`).
    pub scratch: Scratch,
    _guard: Guard,
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Api {
    pub async fn start(kind: Kind) -> Option<Self> {
        Self::start_with::<&str>(kind, &[]).await
    }

    /// The server with these settings (as environment variables) over the defaults. Mail goes
    /// to a mailbox folder in the test's scratch space unless `STRATAI_SMTP_URL` is given.
    ///
    /// The gateway runs in the strict mode unless `settings` say otherwise (a reservation per
    /// request, each usage record written before the answer, no bearer-token cache): these
    /// tests read the ledger and the records right after an answer, and change budgets and
    /// members between two requests. [`Api::start_defaults`] runs the shipped defaults.
    pub async fn start_with<S: AsRef<str>>(kind: Kind, settings: &[(&str, S)]) -> Option<Self> {
        let mut env: HashMap<String, String> = settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_ref().to_owned()))
            .collect();
        for (key, strict) in [
            ("STRATAI_BUDGET_LEASE_MS", "0"),
            ("STRATAI_USAGE_BATCH", "false"),
            ("STRATAI_AUTH_CACHE_MS", "0"),
        ] {
            env.entry(key.to_owned())
                .or_insert_with(|| strict.to_owned());
        }
        Self::start_env(kind, env, Duration::from_secs(5)).await
    }

    /// The server with the shipped defaults (the fast path: budget leases, batched usage
    /// writes, cached bearer tokens and views) and these settings over them; the guardrail
    /// policy is reloaded every `reload`.
    pub async fn start_defaults<S: AsRef<str>>(
        kind: Kind,
        settings: &[(&str, S)],
        reload: Duration,
    ) -> Option<Self> {
        let env = settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_ref().to_owned()))
            .collect();
        Self::start_env(kind, env, reload).await
    }

    async fn start_env(
        kind: Kind,
        mut env: HashMap<String, String>,
        reload: Duration,
    ) -> Option<Self> {
        let (stores, guard) = stores(kind).await?;
        let spool = Scratch::new();
        env.entry("STRATAI_MAILBOX_DIR".to_owned())
            .or_insert_with(|| spool.join("mailbox").display().to_string());
        let config = Config::from_parts(FileConfig::default(), &env).unwrap();
        let backends = Backends::seeded(stores.clone(), &config).await.unwrap();
        let state = build_state(&config, backends).unwrap();
        // The governed gateway too (offline demo provider), so every route is served.
        let mut options = stratai_server::gateway::setup::GatewayOptions::from_config(&config);
        options.runtime.spool = Some(spool.join("usage.spool"));
        options.runtime.guardrail_reload = Some(reload);
        let gateway = stratai_server::gateway::setup::build_state(
            &config,
            state.auth().clone(),
            &stores,
            options,
        )
        .await
        .unwrap();
        let state = state.with_gateway(gateway);
        let app = router(state.clone(), limits(&config));
        let super_admin = stores
            .directory
            .find_user_by_email(&Email::new("admin@localhost").unwrap())
            .await
            .unwrap()
            .unwrap();
        let internal = stores
            .directory
            .find_org_by_slug(&Slug::new("internal").unwrap())
            .await
            .unwrap()
            .unwrap();
        Some(Self {
            app,
            state,
            stores,
            super_admin,
            internal_org: internal.id,
            scratch: spool,
            _guard: guard,
        })
    }

    /// The database behind the server (the SQLite file is `server.db` in the folder), for
    /// tests that reach below the stores.
    pub fn database(&self) -> &Guard {
        &self._guard
    }

    pub async fn token(&self, email: &str) -> String {
        let r = self
            .send(
                Method::POST,
                "/auth/dev/token",
                None,
                Some(serde_json::json!({ "email": email })),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "dev token for {email}: {}",
            r.text
        );
        r.json["token"].as_str().unwrap().to_owned()
    }

    /// A correctly signed, expired token for `user`.
    pub fn expired_token(&self, user: &User) -> String {
        let Mode::Dev(dev) = self.state.auth().signin().mode() else {
            panic!("dev mode expected")
        };
        dev.issue_expired(user.id.as_uuid(), user.email.as_str())
            .unwrap()
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        self.send_with(method, path, token, body, &[]).await
    }

    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        self.raw(req).await
    }

    pub async fn raw(&self, req: Request<Body>) -> Resp {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), 64 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.send(Method::DELETE, path, Some(token), None).await
    }
}

/// One organization of the fixture world and the people in it.
#[derive(Clone, Debug)]
pub struct OrgFixture {
    pub org: OrgId,
    pub group: GroupId,
    pub owner: User,
    pub admin: User,
    pub member: User,
    pub lead: User,
    pub gmember: User,
    pub budget: BudgetId,
    pub invitation_token: String,
    /// The pending invitation's id.
    pub invitation: stratai_core::InvitationId,
    pub tier: TierId,
    /// An org-level guardrail rule.
    pub rule: RuleId,
    /// A global (platform) rule created with the fixture.
    pub platform_rule: RuleId,
    /// A draft invoice of January 2026.
    pub invoice: stratai_core::InvoiceId,
    /// A user profile created with the fixture (platform-wide, given to no one).
    pub profile: stratai_core::ProfileId,
}

impl OrgFixture {
    /// Every id of this organization's data, as text (for leak checks).
    pub fn ids(&self) -> Vec<String> {
        vec![
            self.org.to_string(),
            self.group.to_string(),
            self.owner.id.to_string(),
            self.admin.id.to_string(),
            self.member.id.to_string(),
            self.lead.id.to_string(),
            self.gmember.id.to_string(),
            self.budget.to_string(),
            self.rule.to_string(),
            self.invoice.to_string(),
        ]
    }
}

async fn user(stores: &Stores, email: &str) -> User {
    let u = User::new(
        Email::new(email).unwrap(),
        Some("Test Person"),
        PlatformRole::User,
        Utc::now(),
    )
    .unwrap();
    stores.directory.create_user(&u).await.unwrap();
    u
}

/// An organization named `name-n` with an owner, an admin, a member, a group lead and a group
/// member, a group, a budget on the member, a pending invitation and two tier subscriptions.
pub async fn org_fixture(stores: &Stores, name: &str) -> OrgFixture {
    let n = unique();
    let now = Utc::now();
    let slug = |s: &str| TierSlug::new(s).unwrap();
    let org = Organization::new(
        &format!("{name} {n}"),
        Slug::new(format!("{name}-{n}")).unwrap(),
        OrgSettings::new(vec![slug("basic"), slug("standard")], slug("standard")).unwrap(),
        BillingPlan::Business,
        now,
    )
    .unwrap();
    let dir = &stores.directory;
    dir.create_org(&org).await.unwrap();
    for sub in subscriptions_for(org.id, &[BASIC_TIER_ID, STANDARD_TIER_ID], now) {
        stores.tiers.put_subscription(org.id, &sub).await.unwrap();
    }
    let mk = |role: &str| format!("{role}-{n}@{name}.test");
    let owner = user(stores, &mk("owner")).await;
    let admin = user(stores, &mk("admin")).await;
    let member = user(stores, &mk("member")).await;
    let lead = user(stores, &mk("lead")).await;
    let gmember = user(stores, &mk("gmember")).await;
    for (u, role) in [
        (&owner, OrgRole::Owner),
        (&admin, OrgRole::Admin),
        (&member, OrgRole::Member),
        (&lead, OrgRole::Member),
        (&gmember, OrgRole::Member),
    ] {
        dir.add_member(org.id, &Membership::new(org.id, u.id, role, now))
            .await
            .unwrap();
    }
    let group = Group::new(org.id, "Engineering", now).unwrap();
    dir.create_group(org.id, &group).await.unwrap();
    for (u, role) in [(&lead, GroupRole::Lead), (&gmember, GroupRole::Member)] {
        dir.put_group_member(
            org.id,
            &GroupMembership {
                org_id: org.id,
                group_id: group.id,
                user_id: u.id,
                role,
                joined_at: now,
            },
        )
        .await
        .unwrap();
    }
    let budget = Budget::new(
        org.id,
        BudgetScope::User(member.id),
        Money::dollars(10),
        BudgetPeriod::Monthly,
        true,
        rust_decimal::Decimal::new(8, 1),
        now,
    )
    .unwrap();
    stores.budgets.create_budget(org.id, &budget).await.unwrap();
    let (invitation, token) = Invitation::issue(
        InvitationRequest {
            email: Email::new(mk("invitee")).unwrap(),
            org_id: org.id,
            role: OrgRole::Member,
            group_ids: vec![],
            profile_id: None,
            invited_by: Some(owner.id),
            valid_for: chrono::Duration::days(7),
        },
        now,
    )
    .unwrap();
    dir.create_invitation(org.id, &invitation).await.unwrap();
    let rule = |scope| RuleRecord {
        id: RuleId::new(),
        name: "no secrets".to_owned(),
        description: None,
        rule_type: "content_filter".to_owned(),
        config: serde_json::json!({"blocked_topics": ["project x"]}),
        scope,
        action: RuleAction::Block,
        priority: 0,
        active: true,
        created_at: now,
    };
    let org_rule = rule(RuleScope::Org { org_id: org.id });
    stores.guardrails.put_rule(org.id, &org_rule).await.unwrap();
    let platform_rule = rule(RuleScope::Global);
    stores
        .guardrails
        .put_platform_rule(&platform_rule)
        .await
        .unwrap();
    let catalog = stratai_core::tiers::TierCatalog::seed_default();
    let invoice =
        stratai_core::billing::draft_monthly_invoice(&stratai_core::billing::InvoiceDraft {
            org_id: org.id,
            month: "2026-01".parse().unwrap(),
            tz: chrono_tz::UTC,
            usage: &[],
            catalog: &catalog,
            tax_rate: rust_decimal::Decimal::ZERO,
            corrects: None,
            now,
        })
        .unwrap();
    stores
        .invoices
        .put_draft_invoice(org.id, &invoice)
        .await
        .unwrap();
    let profile = stratai_core::directory::UserProfile::new(
        &format!("fixture profile {}", unique()),
        vec![TierSlug::new("basic").unwrap()],
        stratai_core::directory::ProfileAvailability::All,
        now,
    )
    .unwrap();
    stores.directory.create_profile(&profile).await.unwrap();
    OrgFixture {
        profile: profile.id,
        invoice: invoice.id,
        rule: org_rule.id,
        platform_rule: platform_rule.id,
        org: org.id,
        group: group.id,
        owner,
        admin,
        member,
        lead,
        gmember,
        budget: budget.id,
        invitation_token: token.expose().to_owned(),
        invitation: invitation.id,
        tier: BASIC_TIER_ID,
    }
}

/// The backend matrix's runner for bodies taking an [`Api`]: starts the server on `$backend`
/// (a PostgreSQL that cannot be had skips the test outside CI) and runs the body.
macro_rules! on_api {
    ($backend:ident, $body:path) => {
        if let Some(api) = crate::harness::Api::start(stratai_testkit::backend!($backend)).await {
            $body(api).await;
        }
    };
}

/// The backend matrix's runner for bodies taking the [`Kind`] itself.
macro_rules! on_kind {
    ($backend:ident, $body:path) => {
        $body(stratai_testkit::backend!($backend)).await
    };
}

/// Runs each body (`async fn(Api)`) on memory, SQLite and PostgreSQL: the test kit's backend
/// matrix with the [`Api`] runner (`<body>::<backend>`).
macro_rules! on_every_backend {
    ($($name:ident),+ $(,)?) => {
        stratai_testkit::backend_matrix!(crate::harness::on_api, [memory, sqlite, postgres], threads = current: $($name),+);
    };
}

/// Runs each body (`async fn(Kind)`) on memory, SQLite and PostgreSQL.
macro_rules! on_every_kind {
    ($($name:ident),+ $(,)?) => {
        stratai_testkit::backend_matrix!(crate::harness::on_kind, [memory, sqlite, postgres], threads = current: $($name),+);
    };
}

#[allow(unused_imports)]
pub(crate) use {on_api, on_every_backend, on_every_kind, on_kind};

#[allow(unused_imports)]
pub use stratai_core::{ModelId, RequestId};
