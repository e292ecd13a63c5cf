//! `mock-load [--url URL] [--requests N] [--concurrency C] [--stream]`: a small load harness
//! printing throughput and latency of chat completions. Without `--url` it measures an
//! in-process mock upstream on port 0 (the mock's own cost); with `--url` any
//! OpenAI-compatible base URL (e.g. `http://127.0.0.1:18080/v1`). Use a release build.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

struct Options {
    url: Option<String>,
    requests: usize,
    concurrency: usize,
    stream: bool,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        url: None,
        requests: 20_000,
        concurrency: 8,
        stream: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("`{flag}` needs a value"));
        match arg.as_str() {
            "--url" => options.url = Some(value("--url")?),
            "--requests" => {
                options.requests = value("--requests")?
                    .parse()
                    .map_err(|_| "`--requests` is not a number")?
            }
            "--concurrency" => {
                options.concurrency = value("--concurrency")?
                    .parse()
                    .map_err(|_| "`--concurrency` is not a number")?;
            }
            "--stream" => options.stream = true,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    options.concurrency = options.concurrency.max(1);
    Ok(options)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mock-load: {e}");
            return ExitCode::from(2);
        }
    };
    let mut _server = None;
    let base = match &options.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("mock-load: bind: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match mock_upstream::MockServer::start(listener, mock_upstream::MockConfig::default()) {
                Ok(server) => {
                    let url = server.base_url();
                    _server = Some(server);
                    url
                }
                Err(e) => {
                    eprintln!("mock-load: start: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let url = Arc::new(format!("{base}/chat/completions"));
    let body = if options.stream {
        r#"{"model":"mock-gpt","messages":[{"role":"user","content":"hello"}],"max_tokens":10,"stream":true,"stream_options":{"include_usage":true}}"#
    } else {
        r#"{"model":"mock-gpt","messages":[{"role":"user","content":"hello"}],"max_tokens":10}"#
    };
    let http = reqwest::Client::new();
    let started = Instant::now();
    let results: Vec<Result<Duration, String>> = futures::stream::iter(0..options.requests)
        .map(|_| {
            let (http, url) = (http.clone(), Arc::clone(&url));
            async move {
                let t = Instant::now();
                let response = http
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.without_url().to_string())?;
                let status = response.status();
                response
                    .bytes()
                    .await
                    .map_err(|e| e.without_url().to_string())?;
                if status.is_success() {
                    Ok(t.elapsed())
                } else {
                    Err(format!("status {status}"))
                }
            }
        })
        .buffer_unordered(options.concurrency)
        .collect()
        .await;
    let wall = started.elapsed();
    let mut latencies: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let errors = results.len() - latencies.len();
    latencies.sort();
    println!(
        "{} requests ({}), concurrency {}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, {} errors",
        results.len(),
        if options.stream { "stream" } else { "json" },
        options.concurrency,
        latencies.len() as f64 / wall.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        errors
    );
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
