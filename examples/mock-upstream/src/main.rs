//! `mock-upstream [--addr HOST:PORT] [--completion-tokens N]`: serves the mock OpenAI upstream.
//!
//! The address comes from `--addr`, else `127.0.0.1:18080`. (No environment variable: settings
//! of the workspace's programs are read by their config modules only, and this one has two
//! flags.)

use std::process::ExitCode;

use mock_upstream::MockConfig;

const USAGE: &str = "usage: mock-upstream [--addr HOST:PORT] [--completion-tokens N]\n\
    the address defaults to 127.0.0.1:18080";

fn parse_args() -> Result<(String, MockConfig), String> {
    let mut addr = "127.0.0.1:18080".to_owned();
    let mut config = MockConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().ok_or("`--addr` needs a value")?,
            "--completion-tokens" => {
                let value = args.next().ok_or("`--completion-tokens` needs a value")?;
                config.completion_tokens = value
                    .parse()
                    .map_err(|_| format!("`{value}` is not a token count"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok((addr, config))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (addr, config) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("mock-upstream: cannot bind `{addr}`: {err}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(bound) => eprintln!("mock-upstream: listening on http://{bound}/v1"),
        Err(_) => eprintln!("mock-upstream: listening on {addr}"),
    }
    match mock_upstream::serve_with(listener, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mock-upstream: server error: {err}");
            ExitCode::FAILURE
        }
    }
}
