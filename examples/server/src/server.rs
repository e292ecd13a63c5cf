//! Starting and stopping the server.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::app::{AppState, HttpLimits, Readiness, router};
use crate::auth::session::{MemorySessionStore, SessionStore};
use crate::auth::{Auth, Mode};
use crate::config::{Config, LogConfig, MailTransportConfig, Secret};
use crate::error::ApiError;
use crate::stores::{StoreReadiness, Stores};
use stratai_core::mail::Mailer;
use stratai_store::people::delivery::Postman;
use stratai_store::people::identity::Identities;
use stratai_store::people::mail::{MailboxMailer, SmtpMailer};
use stratai_store::seed::seed;

/// What the server runs on besides its configuration.
pub struct Backends {
    /// Browser sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Readiness probe.
    pub readiness: Arc<dyn Readiness>,
    /// The storage ports.
    pub stores: Stores,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").finish_non_exhaustive()
    }
}

impl Backends {
    /// Backends over `stores` after the idempotent seed: in-memory sessions and a database
    /// readiness probe.
    pub async fn seeded(stores: Stores, config: &Config) -> Result<Self, ServeError> {
        let report = seed(&stores, &config.super_admin_email)
            .await
            .map_err(|e| ServeError::Startup(format!("seeding failed: {e}")))?;
        tracing::info!(
            internal_org = %report.internal_org.id,
            super_admin = %report.super_admin.email,
            tiers_created = report.tiers_created,
            "seed checked"
        );
        Ok(Self {
            sessions: Arc::new(MemorySessionStore::default()),
            readiness: Arc::new(StoreReadiness(stores.clone())),
            stores,
        })
    }

    /// Authentication for `config` over these backends: sign-in resolves identities in
    /// `stores`, browser sessions live in `sessions`.
    pub fn auth(&self, config: &Config) -> Result<Auth, ApiError> {
        Auth::from_config(
            config,
            Identities::over(&self.stores),
            self.sessions.clone(),
        )
    }

    /// Opens the configured database (migrating it) and seeds it.
    pub async fn open(config: &Config) -> Result<Self, ServeError> {
        let database = &config.database;
        let stores = Stores::open(
            database.url.expose(),
            database.owner_url.as_ref().map(Secret::expose),
        )
        .await
        .map_err(|e| ServeError::Startup(format!("database: {e}")))?;
        Self::seeded(stores, config).await
    }
}

/// Builds the application state for `config` (without the gateway).
pub fn build_state(config: &Config, backends: Backends) -> Result<AppState, ApiError> {
    let auth = Arc::new(backends.auth(config)?.with_auth_cache(config.auth_cache));
    AppState::new(config, auth, backends.readiness, backends.stores)
}

/// The invitation mailer of `config`: SMTP, or the mailbox folder (its bodies logged in dev
/// mode), under the [`Postman`] that emails invitations with links to the public URL.
pub fn postman(config: &Config) -> Result<Postman, ApiError> {
    let from = &config.mail.from;
    let mailer: Result<Arc<dyn Mailer>, _> = match &config.mail.transport {
        MailTransportConfig::Smtp {
            url,
            username,
            password,
        } => SmtpMailer::new(
            url.expose().trim(),
            username
                .clone()
                .zip(password.as_ref().map(|p| p.expose().to_owned())),
            from,
        )
        .map(|m| Arc::new(m) as Arc<dyn Mailer>),
        MailTransportConfig::Mailbox(dir) => {
            MailboxMailer::new(dir.clone(), from, config.dev_mode())
                .map(|m| Arc::new(m) as Arc<dyn Mailer>)
        }
    };
    let mailer = mailer.map_err(|e| ApiError::internal(format!("mail: {e}")))?;
    Ok(Postman::new(mailer, config.public_url.clone()))
}

/// How often undelivered invitation emails are retried.
pub const MAIL_RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The HTTP limits of `config`.
#[must_use]
pub fn limits(config: &Config) -> HttpLimits {
    HttpLimits {
        body_limit_bytes: config.body_limit_bytes,
        request_timeout: config.request_timeout,
    }
}

/// Builds the application state and router for `config` (without the gateway).
pub fn build(config: &Config, backends: Backends) -> Result<axum::Router, ApiError> {
    Ok(router(build_state(config, backends)?, limits(config)))
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Dev mode on a non-loopback address without the explicit opt-in.
    #[error(
        "dev mode refuses to listen on non-loopback `{0}`; configure OIDC or set STRATAI_DEV_ALLOW_REMOTE=true"
    )]
    DevModeExposed(SocketAddr),
    /// Binding failed.
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Building the application failed.
    #[error("startup failed: {0}")]
    Startup(String),
    /// The server stopped with an I/O error.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Logs the mode loudly so nobody runs dev mode by accident.
pub fn announce(config: &Config, auth_mode: &Mode) {
    match auth_mode {
        Mode::Dev(dev) => {
            let bar = "=".repeat(72);
            tracing::warn!("{bar}");
            tracing::warn!(
                "DEV MODE: no OIDC issuer configured (OIDC_ISSUER / AUTH0_DOMAIN unset)"
            );
            tracing::warn!(
                "POST /auth/dev/token hands out {}s tokens for ANY existing user, no password",
                dev.ttl().as_secs()
            );
            tracing::warn!("never expose this server; configure OIDC for real use");
            tracing::warn!(
                "try: curl -s -X POST http://{}/auth/dev/token -H 'content-type: application/json' -d '{{\"email\":\"{}\"}}'",
                config.bind,
                config.super_admin_email
            );
            tracing::warn!("{bar}");
        }
        Mode::Oidc { login, .. } => {
            tracing::info!(
                issuer = config.oidc.as_ref().map_or("", |o| o.issuer.as_str()),
                browser_login = login.is_some(),
                "OIDC authentication"
            );
        }
    }
}

/// Says where invitation emails go; loudly when they go to a folder outside dev mode.
pub fn announce_mail(config: &Config, mail: &Postman) {
    match &config.mail.transport {
        crate::config::MailTransportConfig::Smtp { .. } => {
            tracing::info!(to = %mail.describe(), "invitation emails are sent by SMTP");
        }
        crate::config::MailTransportConfig::Mailbox(_) if config.dev_mode() => {
            tracing::warn!(
                "DEV MAILBOX: no STRATAI_SMTP_URL; invitation emails are written to {} and logged",
                mail.describe()
            );
        }
        crate::config::MailTransportConfig::Mailbox(_) => {
            tracing::warn!(
                "no STRATAI_SMTP_URL: invitation emails are NOT sent, only written to {}",
                mail.describe()
            );
        }
    }
}

/// Runs the server until SIGINT/SIGTERM, then drains in-flight requests.
pub async fn serve(config: Config, backends: Backends) -> Result<(), ServeError> {
    if config.dev_mode() && !config.bind.ip().is_loopback() && !config.dev_allow_remote {
        return Err(ServeError::DevModeExposed(config.bind));
    }
    let auth = Arc::new(
        backends
            .auth(&config)
            .map_err(|e| ServeError::Startup(e.to_string()))?
            .with_auth_cache(config.auth_cache),
    );
    announce(&config, auth.signin().mode());
    let state = AppState::new(
        &config,
        auth.clone(),
        backends.readiness,
        backends.stores.clone(),
    )
    .map_err(|e| ServeError::Startup(e.to_string()))?;
    announce_mail(&config, state.mail());
    let _retries = state
        .mail()
        .clone()
        .spawn_retries(backends.stores.directory.clone(), MAIL_RETRY_EVERY);
    let gateway = crate::gateway::setup::build_state(
        &config,
        auth,
        &backends.stores,
        crate::gateway::setup::GatewayOptions::from_config(&config),
    )
    .await
    .map_err(ServeError::Startup)?;
    let drainer = gateway.drainer.clone();
    let state = state.with_gateway(gateway);
    let app = router(
        state,
        HttpLimits {
            body_limit_bytes: config.body_limit_bytes,
            request_timeout: config.request_timeout,
        },
    );
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.bind,
            source,
        })?;
    tracing::info!(addr = %config.bind, "listening");
    // The one line a person who just ran `cargo run` needs: where to point the browser.
    println!(
        "StratAI is running: open {} in your browser",
        config.public_url
    );
    axum::serve(no_delay(listener), app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    drainer.shutdown(std::time::Duration::from_secs(10)).await;
    tracing::info!("stopped");
    Ok(())
}

/// `listener` with `TCP_NODELAY` set on every accepted connection (`axum::serve` leaves
/// Nagle's algorithm on). With it on, a response written in two segments waits for the
/// client's delayed acknowledgement, up to 40 ms on Linux: stalls that showed as the
/// gateway's p99 latency in the load harness. A connection whose option cannot be set is
/// served anyway.
pub fn no_delay(
    listener: TcpListener,
) -> axum::serve::TapIo<TcpListener, impl FnMut(&mut tokio::net::TcpStream) + Send + 'static> {
    use axum::serve::ListenerExt as _;
    listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set on a connection");
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; draining");
}

/// Installs the log subscriber: the `RUST_LOG` filter, JSON lines when
/// `STRATAI_LOG_FORMAT=json` (both checked by the config).
pub fn init_tracing(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&log.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = log.json;
    // Logs go to stderr: stdout is for command output (the CLI's results).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("tracing already initialised: {e}");
    }
}
