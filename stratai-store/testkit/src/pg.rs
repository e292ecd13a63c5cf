//! PostgreSQL test harness: one fresh, migrated database per test, served by a real app role.
//!
//! Which server:
//! 1. `DATABASE_URL` when set (a role that may create databases and roles, e.g. `postgres`);
//! 2. else `postgres://postgres@127.0.0.1:5432/postgres` when that port answers;
//! 3. else a throwaway cluster started with the `initdb`/`pg_ctl` found on `PATH` or in
//!    `/usr/lib/postgresql/*/bin`, in `$TMPDIR/stratai-test-pg` on a free port (shared by the
//!    test processes and reused by later runs: `scripts/test.sh` stops and removes it at its
//!    end, or `scripts/test-leftovers.sh --end` alone); as root the
//!    tools run as the `postgres` (or `nobody`) user through `runuser`, since PostgreSQL refuses
//!    root. `STRATAI_TEST_PG=throwaway` skips step 2, to exercise this fallback;
//! 4. else the test prints why it cannot run and is skipped — under `CI=true` it panics instead,
//!    so CI never passes by doing nothing.
//!
//! Each test gets its own database `stratai_test_<time>_<creator>_<n>` (the creator tag of
//! `stratai-testkit`: machine, pid and start time of the test process), owned by the
//! non-superuser role `stratai_test_owner` that runs the migrations; the store connects as
//! `stratai_test_app` (`NOSUPERUSER NOBYPASSRLS`, owns nothing), set up with
//! `PgStore::setup_app_role`.
//!
//! Cleanup: dropping a [`PgTestDb`] drops its database (the test passed, failed or panicked).
//! A killed process drops nothing, so the first test of every process drops the databases
//! whose creator is gone; those of running processes (concurrent runs) are left alone. The
//! two roles are shared by all test processes on the server and stay; `scripts/test.sh`
//! drops them at the end of a run (under an advisory lock that `create_db` holds shared
//! while it needs them, so a concurrent run never loses them halfway).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Creator, UNCHECKABLE_MAX_AGE};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use stratai_store::{PgOptions, PgStore};
use tokio::sync::OnceCell;

/// The role owning the test databases and running migrations.
pub const OWNER_ROLE: &str = "stratai_test_owner";
/// The serving role the stores connect as.
pub const APP_ROLE: &str = "stratai_test_app";
const ROLE_PASSWORD: &str = "stratai-test";
/// The prefix of every test database.
pub const DB_PREFIX: &str = "stratai_test_";
/// The advisory lock (in the admin database) under which the roles are created and used
/// (shared) or dropped (exclusive, by `scripts/test-leftovers.sh`): "stratai" in ASCII.
pub const ROLES_LOCK: i64 = 0x0073_7472_6174_6169;

/// A fresh database with a store connected as the app role.
pub struct PgTestDb {
    /// The store (app role).
    pub store: PgStore,
    /// Database name.
    pub name: String,
    /// Admin (superuser) URL of the database.
    pub admin_url: String,
    /// Owner role URL of the database.
    pub owner_url: String,
    /// App role URL of the database.
    pub app_url: String,
    /// Drops the database with the rest of this.
    _drop: DropDatabase,
}

impl PgTestDb {
    /// Another store on the same database (e.g. with a different pool size).
    pub async fn connect(&self, options: PgOptions) -> PgStore {
        PgStore::connect_with(&self.app_url, options)
            .await
            .expect("connect as the app role")
    }

    /// A plain connection as the app role.
    pub async fn app_connection(&self) -> PgConnection {
        PgConnection::connect(&self.app_url)
            .await
            .expect("app connection")
    }

    /// A plain connection as the admin (superuser).
    pub async fn admin_connection(&self) -> PgConnection {
        PgConnection::connect(&self.admin_url)
            .await
            .expect("admin connection")
    }
}

/// Drops a test database when dropped.
struct DropDatabase {
    server_admin_url: String,
    name: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let admin = self.server_admin_url.clone();
        let name = self.name.clone();
        // A runtime of its own on a plain thread: this runs inside the test's runtime, or while
        // that runtime shuts down and drops its tasks (a server task holding the database).
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                // The server may be short of connections while many tests run: try a while.
                let mut last = String::new();
                for attempt in 0..20 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    match PgConnection::connect(&admin).await {
                        Ok(mut conn) => {
                            let dropped = drop_database(&mut conn, &name).await;
                            let _ = conn.close().await;
                            match dropped {
                                Ok(()) => return Ok(()),
                                Err(e) => last = e,
                            }
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(last)
            })
        })
        .join();
        let outcome = dropped.unwrap_or_else(|_| Err("the dropping thread panicked".to_owned()));
        if let Err(e) = outcome {
            // Not a panic (this may run while unwinding); the next test process sweeps it.
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
    }
}

/// Drops the test database `name` (its connections too); refuses names not of the harness.
async fn drop_database(conn: &mut PgConnection, name: &str) -> Result<(), String> {
    let ours = name.starts_with(DB_PREFIX)
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ours {
        return Err(format!("`{name}` is not a test database"));
    }
    // Identifiers can not be bound; the name was checked above.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(conn)
    .await
    .map(drop)
    .map_err(|e| e.to_string())
}

/// A fresh database and store, or `None` (with the reason printed) when no PostgreSQL is
/// available and `CI` is not `true`. Under `CI=true` a missing server panics.
pub async fn fresh_db() -> Option<PgTestDb> {
    let admin = match server().await {
        Ok(url) => url,
        Err(reason) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL is required under CI=true but unavailable: {reason}");
            }
            eprintln!("SKIPPED: no PostgreSQL for this test: {reason}");
            return None;
        }
    };
    Some(create_db(&admin).await)
}

/// The admin URL of the server, found once per test process.
async fn server() -> Result<String, String> {
    static SERVER: OnceCell<Result<String, String>> = OnceCell::const_new();
    SERVER
        .get_or_init(|| async {
            let url = find_server()?;
            prepare_server(&url).await?;
            Ok(url)
        })
        .await
        .clone()
}

fn find_server() -> Result<String, String> {
    if let Ok(url) = std::env::var("DATABASE_URL")
        && !url.is_empty()
    {
        return Ok(url);
    }
    let local: SocketAddr = ([127, 0, 0, 1], 5432).into();
    // STRATAI_TEST_PG=throwaway skips the local server (to exercise the fallback).
    let throwaway_only = std::env::var("STRATAI_TEST_PG").is_ok_and(|v| v == "throwaway");
    if !throwaway_only && TcpStream::connect_timeout(&local, Duration::from_millis(500)).is_ok() {
        return Ok("postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    }
    throwaway_cluster()
        .map_err(|e| format!("DATABASE_URL is unset, nothing answers on 127.0.0.1:5432, and {e}"))
}

/// Checks the server answers and drops what killed test processes left on it.
async fn prepare_server(admin_url: &str) -> Result<(), String> {
    let mut conn = PgConnection::connect(admin_url)
        .await
        .map_err(|e| format!("cannot connect to `{}`: {e}", redact(admin_url)))?;
    drop_leftover_databases(&mut conn).await;
    let _ = conn.close().await;
    Ok(())
}

/// Drops the test databases whose creator is gone: killed runs (their guards never ran).
/// Databases of running processes are left alone, whatever their age. Databases named by
/// harness versions before the creator tag (`stratai_test_<time>_<uuid>`), and those whose
/// creator cannot be checked from here (another machine or PID namespace), are dropped only
/// when older than `UNCHECKABLE_MAX_AGE` (3 hours): checkouts on older branches still run
/// their tests with the old names, and nothing else tells whether such a run still goes on.
async fn drop_leftover_databases(conn: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE datname LIKE 'stratai\\_test\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    let now = now_secs();
    for name in names {
        let parts: Vec<&str> = name[DB_PREFIX.len()..].split('_').collect();
        let Some(created) = parts.first().and_then(|secs| secs.parse::<u64>().ok()) else {
            continue;
        };
        let age = Duration::from_secs(now.saturating_sub(created));
        let leftover = match parts.len() {
            5 => Creator::parse(&parts[1..]).is_some_and(|creator| creator.may_remove(age)),
            2 => age > UNCHECKABLE_MAX_AGE,
            _ => false,
        };
        if leftover {
            let _ = drop_database(conn, &name).await;
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Creates the two roles when they are missing; concurrent processes may race: a duplicate
/// is fine.
async fn create_roles(admin: &mut PgConnection) {
    sqlx::raw_sql(
        "DO $$ BEGIN
             CREATE ROLE stratai_test_owner LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB
                 NOCREATEROLE PASSWORD 'stratai-test';
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
         DO $$ BEGIN
             CREATE ROLE stratai_test_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB
                 NOCREATEROLE PASSWORD 'stratai-test';
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;",
    )
    .execute(admin)
    .await
    .expect("create the test roles");
}

async fn create_db(server_admin_url: &str) -> PgTestDb {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = format!(
        "{DB_PREFIX}{}_{}_{}",
        now_secs(),
        Creator::current().tag('_'),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut admin = PgConnection::connect(server_admin_url)
        .await
        .expect("admin connection");
    // Held until the database references both roles (owner, grants): from then on PostgreSQL
    // refuses to drop them, so the end-of-run cleanup of a concurrent run cannot pull them
    // away in between.
    sqlx::query("SELECT pg_advisory_lock_shared($1)")
        .bind(ROLES_LOCK)
        .execute(&mut admin)
        .await
        .expect("lock the test roles");
    create_roles(&mut admin).await;
    // Identifiers can not be bound; the name is generated above from digits and hex only.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} OWNER {OWNER_ROLE}"
    )))
    .execute(&mut admin)
    .await
    .expect("create the test database");

    let base: PgConnectOptions = server_admin_url.parse().expect("admin url");
    let admin_url = with_role(&base, None, &name);
    let owner_url = with_role(&base, Some(OWNER_ROLE), &name);
    let app_url = with_role(&base, Some(APP_ROLE), &name);
    // From here on the guard drops the database, whatever fails below.
    let guard = DropDatabase {
        server_admin_url: server_admin_url.to_owned(),
        name: name.clone(),
    };

    PgStore::migrate(&owner_url)
        .await
        .expect("migrate as owner");
    PgStore::setup_app_role(&owner_url, APP_ROLE, None)
        .await
        .expect("grant the app role");
    let _ = admin.close().await;
    let store = PgStore::connect_with(
        &app_url,
        PgOptions {
            max_connections: 8,
            ..PgOptions::default()
        },
    )
    .await
    .expect("connect as the app role");
    PgTestDb {
        store,
        name,
        admin_url,
        owner_url,
        app_url,
        _drop: guard,
    }
}

/// The server's URL for `database`, as `role` (the admin's role when `None`).
fn with_role(base: &PgConnectOptions, role: Option<&str>, database: &str) -> String {
    let options = base.clone().database(database);
    let options = match role {
        Some(role) => options.username(role).password(ROLE_PASSWORD),
        None => options,
    };
    options.to_url_lossy().to_string()
}

fn redact(url: &str) -> String {
    match url.parse::<PgConnectOptions>() {
        Ok(options) => format!(
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        ),
        Err(_) => "<unparsable url>".to_owned(),
    }
}

/// Starts (or reuses) a throwaway cluster; returns its admin URL.
fn throwaway_cluster() -> Result<String, String> {
    let bin = pg_bin_dir().ok_or("no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin")?;
    let root = std::env::temp_dir().join("stratai-test-pg");
    let data = root.join("data");
    let port_file = root.join("port");
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {root:?}: {e}"))?;
    if let Some(port) = std::fs::read_to_string(&port_file)
        .ok()
        .and_then(|p| p.trim().parse::<u16>().ok())
    {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        if TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
            return Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"));
        }
    }
    if !data.join("PG_VERSION").exists() {
        let out = cluster_command(&bin.join("initdb"), &root)?
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .output()
            .map_err(|e| format!("initdb did not run: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    let port = free_port().ok_or("no free port")?;
    let out = cluster_command(&bin.join("pg_ctl"), &root)?
        .arg("-D")
        .arg(&data)
        .args(["-w", "-l"])
        .arg(root.join("log"))
        .arg("-o")
        .arg(format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            root.display()
        ))
        .arg("start")
        .output()
        .map_err(|e| format!("pg_ctl did not run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::write(&port_file, port.to_string()).map_err(|e| format!("{port_file:?}: {e}"))?;
    Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
}

/// A command running a cluster tool. PostgreSQL refuses to run as root, so as root the tools
/// run as the `postgres` user (or `nobody`) through `runuser`, and `root` is handed to it.
fn cluster_command(tool: &Path, root: &Path) -> Result<Command, String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("`id -u` did not run: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Ok(Command::new(tool));
    }
    let id_of = |user: &str, flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    let user = ["postgres", "nobody"]
        .into_iter()
        .find(|u| id_of(u, "-u").is_some())
        .ok_or("running as root and neither a `postgres` nor a `nobody` user exists")?;
    let (uid, gid) = (id_of(user, "-u"), id_of(user, "-g"));
    std::os::unix::fs::chown(root, uid, gid)
        .map_err(|e| format!("cannot hand {root:?} to `{user}`: {e}"))?;
    for entry in std::fs::read_dir(root)
        .map_err(|e| format!("{root:?}: {e}"))?
        .flatten()
    {
        // The data directory and log, when a previous run created them as root.
        let _ = std::os::unix::fs::lchown(entry.path(), uid, gid);
    }
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", user, "--"]).arg(tool);
    Ok(cmd)
}

fn pg_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_tools(&dir) {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|dir| has_tools(dir))
        .collect();
    versions.sort();
    versions.pop()
}

fn free_port() -> Option<u16> {
    TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()
        .map(|a| a.port())
}
