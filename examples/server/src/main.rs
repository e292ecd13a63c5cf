//! `stratai-server`: see the crate README.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stratai_server::cli;
use stratai_server::config::{Config, ProcessEnv};
use stratai_server::server::{Backends, init_tracing, serve};

/// mimalloc instead of glibc's malloc: the gateway allocates per request (headers, JSON,
/// records), and glibc's allocator showed as about a tenth of its CPU profile under load.
/// Built without transparent huge pages (the workspace's `no_thp` feature): with them, a
/// request whose allocation touched a fresh 2 MiB page stalled its worker while the kernel
/// zeroed the page.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Allow dev mode (no OIDC) on a non-loopback address (as `STRATAI_DEV_ALLOW_REMOTE`).
        #[arg(long, default_value_t = false)]
        dev_allow_remote: bool,
    },
    /// Invite many people to an organization from a CSV file (`email,role,groups`; groups
    /// separated by `;`). Every row is checked first; nothing is written if one is invalid.
    Invite {
        /// Organization slug or id.
        #[arg(long)]
        org: String,
        /// The CSV file.
        #[arg(long)]
        file: std::path::PathBuf,
        /// Act as this user (default: STRATAI_SUPER_ADMIN_EMAIL).
        #[arg(long = "as")]
        acting: Option<String>,
    },
    /// Print the seed's pricing-discovery report (JSON) of a period: of one organization, or
    /// of every organization without `--org`. Runs against the configured database as the
    /// platform operator.
    PricingReport {
        /// Organization slug or id (default: every organization).
        #[arg(long)]
        org: Option<String>,
        /// Inclusive start: a date (`2026-01-01`, midnight UTC) or an RFC 3339 instant.
        #[arg(long)]
        from: String,
        /// Exclusive end: a date or an RFC 3339 instant.
        #[arg(long)]
        to: String,
        /// Margin of the suggested prices over provider cost (default 0.30).
        #[arg(long)]
        margin: Option<String>,
        /// How many peak hours to list (default 3).
        #[arg(long)]
        peak_hours: Option<u8>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(&ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            // Logging is configured by the config that did not load.
            eprintln!("stratai-server: configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(&config.log);
    let backends = match Backends::open(&config).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let allow_remote = match cli.command {
        Some(Command::Invite { org, file, acting }) => {
            return match cli::invite(&config, backends, &org, &file, acting.as_deref()).await {
                Ok(outcome) => {
                    for line in cli::report(&outcome) {
                        println!("{line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::PricingReport {
            org,
            from,
            to,
            margin,
            peak_hours,
        }) => {
            let args = cli::PricingArgs {
                org,
                from,
                to,
                margin,
                peak_hours,
            };
            return match cli::pricing_report(&config, backends, &args).await {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Serve { dev_allow_remote }) => dev_allow_remote,
        None => false,
    };
    config.dev_allow_remote |= allow_remote;
    match serve(config, backends).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
