//! `stratai-server`: see the crate README.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stratai_server::config::{Config, ProcessEnv};
use stratai_server::server::{Backends, init_tracing, serve};

#[derive(Debug, Parser)]
#[command(name = "stratai-server", version, about = "StratAI governance server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (the default).
    Serve {
        /// Allow dev mode (no OIDC) on a non-loopback address.
        #[arg(long, env = "STRATAI_DEV_ALLOW_REMOTE", default_value_t = false)]
        dev_allow_remote: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let config = match Config::load(&ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let allow_remote = match cli.command {
        Some(Command::Serve { dev_allow_remote }) => dev_allow_remote,
        None => std::env::var("STRATAI_DEV_ALLOW_REMOTE").is_ok_and(|v| v == "true" || v == "1"),
    };
    let backends = match Backends::open(&config).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match serve(config, backends, allow_remote).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
