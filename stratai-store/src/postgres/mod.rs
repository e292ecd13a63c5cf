//! PostgreSQL backend with row-level security (production).
//!
//! # Two roles, two connection strings
//!
//! - The **owner** role ([`PgStore::OWNER_URL_ENV`], `STRATAI_DATABASE_OWNER_URL`) runs the
//!   embedded migrations ([`PgStore::migrate`]) and so owns every table and the platform
//!   functions. It never serves requests.
//! - The **app** role ([`PgStore::APP_URL_ENV`], `DATABASE_URL`) serves: `LOGIN`,
//!   `NOSUPERUSER`, `NOBYPASSRLS`, owns nothing, granted only DML on the tables and `EXECUTE`
//!   on the platform functions. [`PgStore::setup_app_role`] creates and grants it (run as the
//!   owner, after migrating). [`PgStore::connect`] refuses a superuser, a `BYPASSRLS` role or a
//!   role owning (or a member of a role owning) a table: such a role would silently switch
//!   tenant isolation off. [`PgOptions::running_migrations`] lifts the refusal, explicitly.
//!
//! # Tenant isolation
//!
//! Every tenant table has row-level security enabled and forced, with a policy on
//! `NULLIF(current_setting('app.current_org_id', true), '')::uuid`: without a context nothing
//! is visible or writable. Every tenant-scoped operation runs in a transaction that first
//! calls `select set_config('app.current_org_id', $1, true)` (transaction-local, so nothing
//! survives on a pooled connection, not even after an aborted transaction).
//!
//! Platform tables (`users`, `user_profiles`, `model_tiers`, `tier_models`) have no
//! organization and no policy: identities, profiles and the tier catalog are platform-wide.
//! Platform rules (guardrails with a NULL organization) are readable by every tenant and
//! written only through a platform function.
//!
//! Platform-wide operations (`list_orgs`, `find_org_by_slug`, `memberships_of_user`,
//! `locate_group`, `find_invitation_by_token_hash`, the outbox, `reclaim_expired`, platform
//! rule writes) go through one explicit path: `SECURITY DEFINER` SQL functions owned by the
//! owner role (`stratai_*` in the migration), each doing one thing. The owner has policies
//! for exactly what those functions touch, nothing more.

#[macro_use]
mod rows;
mod audit;
mod directory;
mod guardrails;
mod invoices;
mod key_vault;
mod ledger;
mod outbox;
mod tiers;
mod usage;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use stratai_core::{OrgId, StoreError};

use crate::error::db;

/// The embedded PostgreSQL migrations.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How [`PgStore::connect_with`] connects.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Pool size.
    pub max_connections: u32,
    /// How long to wait for a free connection.
    pub acquire_timeout: Duration,
    /// Accept a privileged role (superuser, `BYPASSRLS`, table owner). Only for tools that run
    /// migrations with the same connection; a serving process leaves this `false`.
    pub running_migrations: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            running_migrations: false,
        }
    }
}

/// Every port on PostgreSQL. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

/// What the connected role may do, as the catalog says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolePrivileges {
    /// The role name (`current_user`).
    pub role: String,
    /// Superuser: bypasses row-level security.
    pub superuser: bool,
    /// `BYPASSRLS`: bypasses row-level security.
    pub bypass_rls: bool,
    /// Owns (directly or through a role it is a member of) at least one table of the
    /// database: forced RLS aside, an owner can alter or disable the policies.
    pub owns_tables: bool,
}

impl RolePrivileges {
    /// Whether the role could defeat tenant isolation.
    #[must_use]
    pub fn is_privileged(&self) -> bool {
        self.superuser || self.bypass_rls || self.owns_tables
    }
}

impl PgStore {
    /// Environment variable conventionally holding the app (serving) role's URL.
    pub const APP_URL_ENV: &'static str = "DATABASE_URL";
    /// Environment variable conventionally holding the owner (migrating) role's URL.
    pub const OWNER_URL_ENV: &'static str = "STRATAI_DATABASE_OWNER_URL";
    /// The app role name [`PgStore::setup_app_role`] is usually given.
    pub const DEFAULT_APP_ROLE: &'static str = "stratai_app";

    /// Connects as the app role with default options; refuses a privileged role.
    pub async fn connect(app_url: &str) -> Result<Self, StoreError> {
        Self::connect_with(app_url, PgOptions::default()).await
    }

    /// Connects with `options`; refuses a privileged role unless
    /// [`PgOptions::running_migrations`].
    pub async fn connect_with(app_url: &str, options: PgOptions) -> Result<Self, StoreError> {
        let connect: PgConnectOptions = app_url
            .parse()
            .map_err(|e| StoreError::Backend(format!("invalid database url: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(db)?;
        Self::from_pool(pool, options.running_migrations).await
    }

    /// Wraps an existing pool, after the same role check as [`PgStore::connect_with`].
    pub async fn from_pool(pool: PgPool, running_migrations: bool) -> Result<Self, StoreError> {
        let store = Self { pool };
        let privileges = store.role_privileges().await?;
        if privileges.is_privileged() && !running_migrations {
            return Err(StoreError::Backend(format!(
                "refusing to serve as role `{}` (superuser: {}, bypassrls: {}, owns tables: {}): \
                 connect as the app role (see PgStore::setup_app_role), or set \
                 PgOptions::running_migrations when migrating",
                privileges.role,
                privileges.superuser,
                privileges.bypass_rls,
                privileges.owns_tables
            )));
        }
        Ok(store)
    }

    /// Runs the embedded migrations, connected as the owner role.
    pub async fn migrate(owner_url: &str) -> Result<(), StoreError> {
        let mut conn = owner_connection(owner_url).await?;
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Backend(format!("migration failed: {e}")))?;
        conn.close().await.map_err(db)
    }

    /// Connected as the owner role (after [`PgStore::migrate`]): creates the login role
    /// `role` when missing (needs `CREATEROLE`) — `NOSUPERUSER NOBYPASSRLS NOCREATEDB
    /// NOCREATEROLE`, with `password` when given — and grants it what serving needs (DML on
    /// the tables, `EXECUTE` on the platform functions). Idempotent; run it again after a
    /// migration adds tables. The role name is quoted server-side (`format('%I')`).
    pub async fn setup_app_role(
        owner_url: &str,
        role: &str,
        password: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut conn = owner_connection(owner_url).await?;
        sqlx::query("SELECT stratai_create_app_role($1, $2)")
            .bind(role)
            .bind(password)
            .execute(&mut conn)
            .await
            .map_err(db)?;
        grant_audit(&mut conn, role).await?;
        conn.close().await.map_err(db)
    }

    /// Like [`PgStore::setup_app_role`] for a role that already exists (created by an
    /// operator): only the grants.
    pub async fn grant_app_role(owner_url: &str, role: &str) -> Result<(), StoreError> {
        let mut conn = owner_connection(owner_url).await?;
        sqlx::query("SELECT stratai_grant_app_role($1)")
            .bind(role)
            .execute(&mut conn)
            .await
            .map_err(db)?;
        grant_audit(&mut conn, role).await?;
        conn.close().await.map_err(db)
    }

    /// The connected role's privileges, read from the catalog.
    pub async fn role_privileges(&self) -> Result<RolePrivileges, StoreError> {
        let row: (String, bool, bool, bool) = sqlx::query_as(
            "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls,
                    EXISTS (
                        SELECT 1 FROM pg_class c
                        JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S')
                          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                          AND n.nspname NOT LIKE 'pg\\_toast%'
                          AND pg_has_role(r.oid, c.relowner, 'MEMBER')
                    )
             FROM pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(RolePrivileges {
            role: row.0,
            superuser: row.1,
            bypass_rls: row.2,
            owns_tables: row.3,
        })
    }

    /// The pool (connected as the app role): for diagnostics and tests. Queries on it see no
    /// tenant row unless they set `app.current_org_id` in their own transaction.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction acting for `org`: `app.current_org_id` is set transaction-locally, in
    /// the same round trip as the `BEGIN`.
    async fn tenant(&self, org: OrgId) -> Result<Transaction<'static, Postgres>, StoreError> {
        // An organization id prints as a hyphenated UUID (hex digits and `-`): nothing in it
        // can leave the quoted literal.
        let begin = format!("BEGIN; SET LOCAL app.current_org_id = '{}'", org.as_uuid());
        self.pool
            .begin_with(sqlx::AssertSqlSafe(begin))
            .await
            .map_err(db)
    }
}

/// The audit tables' grants (a function of their own, so the audit migration did not have to
/// restate `stratai_grant_app_role`): read and append, never change.
async fn grant_audit(conn: &mut PgConnection, role: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT stratai_grant_audit($1)")
        .bind(role)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

async fn owner_connection(owner_url: &str) -> Result<PgConnection, StoreError> {
    let options: PgConnectOptions = owner_url
        .parse()
        .map_err(|e| StoreError::Backend(format!("invalid database url: {e}")))?;
    PgConnection::connect_with(&options).await.map_err(db)
}

/// `StoreError::TenantMismatch` unless `actual == expected`.
fn same_tenant(expected: OrgId, actual: OrgId, what: &str) -> Result<(), StoreError> {
    if expected == actual {
        Ok(())
    } else {
        Err(StoreError::TenantMismatch(format!(
            "{what} belongs to organization `{actual}`, not `{expected}`"
        )))
    }
}
