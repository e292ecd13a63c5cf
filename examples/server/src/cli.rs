//! Command-line operations of the server binary.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use stratai_core::directory::{Email, Slug};
use stratai_core::{OpError, OrgId};

use crate::api::Caller;
use crate::api::billing::{PricingReportQuery, pricing_report_for};
use crate::api::invitations::{BulkOutcome, bulk_invite_with_progress};
use crate::config::Config;
use crate::error::ApiError;
use crate::server::{Backends, build_state};

/// Why a CLI command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The input file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The server refused (validation errors are listed one per line).
    #[error("{0}")]
    Refused(String),
}

fn refused(e: ApiError) -> CliError {
    match e {
        ApiError::Validation(fields) => CliError::Refused(
            std::iter::once("nothing was written; fix these rows:".to_owned())
                .chain(
                    fields
                        .iter()
                        .map(|f| format!("  {}: {}", f.path, f.message)),
                )
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        other => CliError::Refused(other.to_string()),
    }
}

/// `stratai-server invite --org <slug|id> --file members.csv [--as <email>]`: the bulk
/// invite of the members endpoint, run against the configured database, as `acting_email`
/// (default: the configured super admin), with a progress bar on stderr.
pub async fn invite(
    config: &Config,
    backends: Backends,
    org: &str,
    file: &Path,
    acting_email: Option<&str>,
) -> Result<BulkOutcome, CliError> {
    let text = std::fs::read_to_string(file).map_err(|source| CliError::Read {
        path: file.display().to_string(),
        source,
    })?;
    let state = build_state(config, backends).map_err(refused)?;
    let stores = &state.stores;
    let org_id = match org.parse::<OrgId>() {
        Ok(id) => id,
        Err(_) => {
            let slug = Slug::new(org).map_err(|e| CliError::Usage(e.to_string()))?;
            stores
                .directory
                .find_org_by_slug(&slug)
                .await
                .map_err(|e| refused(e.into()))?
                .ok_or_else(|| CliError::Usage(format!("no organization `{org}`")))?
                .id
        }
    };
    let email = Email::new(acting_email.unwrap_or(&config.super_admin_email))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let actor = stores
        .directory
        .find_user_by_email(&email)
        .await
        .map_err(|e| refused(e.into()))?
        .ok_or_else(|| CliError::Usage(format!("no user `{email}`")))?;
    let caller = Caller::load(stores, actor.id).await.map_err(refused)?;

    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} invitations")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let outcome = bulk_invite_with_progress(&state, &caller, org_id, &text, &progress)
        .await
        .map_err(refused)?;
    bar.finish();
    Ok(outcome)
}

/// The outcome as printed lines: `row email status [token]`.
#[must_use]
pub fn report(outcome: &BulkOutcome) -> Vec<String> {
    let mut lines: Vec<String> = outcome
        .rows
        .iter()
        .map(|r| match &r.token {
            Some(t) => format!("{}\t{}\t{}\t{}", r.row, r.email, r.status, t),
            None => format!("{}\t{}\t{}", r.row, r.email, r.status),
        })
        .collect();
    lines.push(format!(
        "{} invited, {} already members",
        outcome.created, outcome.already_member
    ));
    lines
}

/// Arguments of `stratai-server pricing-report`, as typed.
#[derive(Clone, Debug, Default)]
pub struct PricingArgs {
    /// Organization slug or id (none: every organization).
    pub org: Option<String>,
    /// Inclusive start: `YYYY-MM-DD` (midnight UTC) or RFC 3339.
    pub from: String,
    /// Exclusive end.
    pub to: String,
    /// Margin of the suggestions (decimal text).
    pub margin: Option<String>,
    /// Peak hours to list.
    pub peak_hours: Option<u8>,
}

fn instant(flag: &str, text: &str) -> Result<chrono::DateTime<chrono::Utc>, CliError> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--{flag}: `{text}` is neither a date (YYYY-MM-DD) nor an RFC 3339 instant"
            ))
        })
}

async fn org_id_of(state: &crate::app::AppState, org: &str) -> Result<OrgId, CliError> {
    match org.parse::<OrgId>() {
        Ok(id) => Ok(id),
        Err(_) => {
            let slug = Slug::new(org).map_err(|e| CliError::Usage(e.to_string()))?;
            Ok(state
                .stores
                .directory
                .find_org_by_slug(&slug)
                .await
                .map_err(|e| refused(e.into()))?
                .ok_or_else(|| CliError::Usage(format!("no organization `{org}`")))?
                .id)
        }
    }
}

/// `stratai-server pricing-report --from <date> --to <date> [--org <slug|id>] [--margin m]
/// [--peak-hours n]`: the report of `GET /api/billing/pricing-report` (the same function),
/// as pretty JSON.
pub async fn pricing_report(
    config: &Config,
    backends: Backends,
    args: &PricingArgs,
) -> Result<String, CliError> {
    let state = build_state(config, backends).map_err(refused)?;
    let org_id = match &args.org {
        Some(org) => Some(org_id_of(&state, org).await?),
        None => None,
    };
    let margin = args
        .margin
        .as_deref()
        .map(|m| {
            m.parse::<rust_decimal::Decimal>()
                .map_err(|_| CliError::Usage(format!("--margin: `{m}` is not a decimal")))
        })
        .transpose()?;
    let query = PricingReportQuery {
        org_id,
        from: instant("from", &args.from)?,
        to: instant("to", &args.to)?,
        margin,
        peak_hours: args.peak_hours,
    };
    let report = pricing_report_for(&state, &query)
        .await
        .map_err(|e| match e {
            OpError::Invalid(fields) => CliError::Usage(
                fields
                    .iter()
                    .map(|f| format!("--{}: {}", f.field.replace('_', "-"), f.reason))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            other => refused(ApiError::from(other)),
        })?;
    serde_json::to_string_pretty(&report).map_err(|e| CliError::Refused(e.to_string()))
}
