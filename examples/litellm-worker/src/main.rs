//! `litellm-worker`: runs StratAI's LiteLLM sync loop and its reconcilers.
//!
//! ```text
//! litellm-worker [--once] [--demo] [--repair] [--interval-ms N] [--reconcile-every-s N]
//!                [--spend-every-s N] [--spend-window-min N] [--model STRATAI=LITELLM]...
//!                [--vault-replace-foreign]
//! env (or the file named by STRATAI_CONFIG, the server's keys):
//!      LITELLM_URL, LITELLM_MASTER_KEY (required),
//!      DATABASE_URL: `sqlite:PATH` or `postgres://...` (app role; required unless --demo),
//!      STRATAI_DATABASE_OWNER_URL: migrates first as the owner role,
//!      STRATAI_ALLOW_MEMORY_DATABASE=true: accept an in-memory DATABASE_URL,
//!      STRATAI_VAULT_KEY: the key vault's master key (required with a database file or
//!      PostgreSQL; the same as the server's), STRATAI_VAULT_REPLACE_FOREIGN
//! ```
//!
//! The configuration is read by [`config`] with the loader the server uses; the former names
//! `STRATAI_DATABASE_URL`, `STRATAI_LITELLM_URL` and `STRATAI_LITELLM_MASTER_KEY` still work,
//! each with a warning on stderr. An in-memory database is refused unless
//! `STRATAI_ALLOW_MEMORY_DATABASE=true` says it is meant: a worker on an empty directory
//! would find nothing to sync, and with `--repair` delete every key it does not know.
//!
//! Every `--interval-ms` (1000) it runs a sync pass over the outbox; every
//! `--reconcile-every-s` (300) a drift reconcile (repairing with `--repair`); every
//! `--spend-every-s` (`STRATAI_LITELLM_SPEND_POLL_SECS`, 60) an import of LiteLLM's spend
//! logs of the last `--spend-window-min` (`STRATAI_LITELLM_SPEND_WINDOW_SECS`, 60 minutes),
//! ending 15 s ago (spend logs are written in batches): calls through StratAI are matched
//! with their usage records, calls made with a member's key directly are recorded as their
//! usage and charged to their budgets (stratai-litellm's `spend` module, the server's path). `--once` runs each step once
//! and exits: 0 when clean, 1 when drift, a spend gap or a dead letter was found. `--demo` uses
//! an in-memory store seeded with one organization, group and member, syncs it, chats once
//! with the member's key and reports (needs the proxy's `mock-gpt` models).
//!
//! LiteLLM (client, key vault, sync engine, spend importer) is wired by stratai-litellm's
//! `Integration`, the server's wiring, with the `--model` names
//! (`Integration::with_options`) and the worker's cadences (`Integration::standalone_runner`).
//! Members' keys carry the rate-limit guardrails that apply to them as their `rpm_limit`
//! (stratai-litellm's `PolicyKeyLimits`, as in the server): the worker compiles the guardrail
//! rules from the database at start and every [`GUARDRAIL_RELOAD`] (the server's reload
//! interval), and a rule change re-pushes every member at the next sync pass. Until the rules
//! have loaded once, members are not pushed (retried), rather than pushed without limits.
//!
//! Virtual key secrets are sealed into the database
//! (`stratai_litellm::vault::EncryptedKeyVault` over the store's `KeyVaultStore`) with the master key in `STRATAI_VAULT_KEY` (32 bytes as 64 hex digits or
//! base64, e.g. `openssl rand -base64 32`): a restart does not regenerate keys, and the server
//! (`STRATAI_LITELLM_SYNC=worker`, same database and key) serves chat with the keys this worker
//! creates. A secret sealed under another master key is refused with an error naming both key
//! ids; `--vault-replace-foreign` replaces such members' keys instead (after losing the master
//! key). Without `STRATAI_VAULT_KEY`, `--demo` and an in-memory database use an ephemeral key,
//! said so on stderr; any other database refuses to start.

mod config;

use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use rust_decimal::Decimal;
use stratai_core::Money;
use stratai_core::directory::{
    BillingPlan, Email, Group, GroupMembership, GroupRole, Membership, OrgRole, OrgSettings,
    Organization, PlatformRole, Slug, User,
};
use stratai_core::ids::{ModelId, TierSlug};
use stratai_core::ports::{DirectoryStore, TierStore};
use stratai_core::tiers::{BASIC_TIER_ID, PREMIUM_TIER_ID, default_tiers, subscriptions_for};
use stratai_litellm::config::ProcessEnv;
use stratai_litellm::integration::{Integration, IntegrationOptions, IntegrationStores};
use stratai_litellm::spend::Imported;
use stratai_litellm::sync::runner::{Cadence, ReloadFailure, SpendPoll};
use stratai_litellm::sync::{ModelNames, SyncRunner, SyncSchedule, TickReport};
use stratai_litellm::{Attribution, ChatMessage, ChatRequest, LiteLlmClient};
use stratai_store::Stores;

struct Options {
    once: bool,
    demo: bool,
    repair: bool,
    interval: Duration,
    reconcile_every: Duration,
    spend_every: Option<Duration>,
    spend_window: Option<Duration>,
    models: ModelNames,
    vault_replace_foreign: bool,
}

/// How often the guardrail rules are recompiled from the database (the server's interval).
const GUARDRAIL_RELOAD: Duration = Duration::from_secs(5);

const USAGE: &str = "usage: litellm-worker [--once] [--demo] [--repair] [--interval-ms N] \
[--reconcile-every-s N] [--spend-every-s N] [--spend-window-min N] [--model STRATAI=LITELLM]... \
[--vault-replace-foreign]\n\
env: LITELLM_URL, LITELLM_MASTER_KEY, DATABASE_URL (sqlite:... or postgres://...), \
STRATAI_VAULT_KEY (32 bytes, hex or base64: `openssl rand -base64 32`); see the README";

fn number(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<u64, String> {
    let value = args
        .next()
        .ok_or_else(|| format!("`{flag}` needs a value"))?;
    value
        .parse()
        .map_err(|_| format!("`{flag}`: `{value}` is not a number"))
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        once: false,
        demo: false,
        repair: false,
        interval: Duration::from_millis(1000),
        reconcile_every: Duration::from_secs(300),
        spend_every: None,
        spend_window: None,
        models: ModelNames::identity(),
        vault_replace_foreign: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--once" => options.once = true,
            "--demo" => options.demo = true,
            "--repair" => options.repair = true,
            "--vault-replace-foreign" => options.vault_replace_foreign = true,
            "--interval-ms" => {
                options.interval = Duration::from_millis(number(&mut args, &arg)?.max(10))
            }
            "--reconcile-every-s" => {
                options.reconcile_every = Duration::from_secs(number(&mut args, &arg)?.max(1))
            }
            "--spend-every-s" => {
                options.spend_every = Some(Duration::from_secs(number(&mut args, &arg)?.max(1)))
            }
            "--spend-window-min" => {
                let seconds = number(&mut args, &arg)?
                    .max(1)
                    .checked_mul(60)
                    .ok_or("`--spend-window-min` is too large")?;
                options.spend_window = Some(Duration::from_secs(seconds));
            }
            "--model" => {
                let pair = args.next().ok_or("`--model` needs STRATAI=LITELLM")?;
                let (ours, theirs) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("`--model {pair}`: expected STRATAI=LITELLM"))?;
                options.models = options.models.with(ours, theirs);
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(clean) => {
            if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(message) => {
            eprintln!("litellm-worker: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<bool, String> {
    let options = parse_args()?;
    let mut config = config::WorkerConfig::load(&ProcessEnv, options.demo)
        .map_err(|e| format!("configuration: {e}\n{USAGE}"))?;
    for warning in &config.warnings {
        eprintln!("litellm-worker: warning: {warning}");
    }
    config.litellm.vault_replace_foreign |= options.vault_replace_foreign;
    let (stores, demo) = match &config.database {
        None => {
            let store = stratai_store::MemoryStore::new();
            let (org, user) = seed_demo(&store).await?;
            println!("demo: organization {org}, member {user}");
            (Stores::from_backend(store), Some((org, user)))
        }
        Some(database) => (
            Stores::open(
                database.url.expose(),
                database.owner_url.as_ref().map(|u| u.expose()),
            )
            .await
            .map_err(|e| format!("database: {e}"))?,
            None,
        ),
    };
    let wired = Integration::with_options(
        &config.litellm,
        IntegrationStores {
            directory: stores.directory.clone(),
            tiers: stores.tiers.clone(),
            budgets: stores.budgets.clone(),
            usage: stores.usage.clone(),
            outbox: stores.outbox.clone(),
            key_vault: stores.key_vault.clone(),
        },
        IntegrationOptions {
            model_names: options.models.clone(),
        },
    )?;
    if wired.vault_ephemeral {
        eprintln!(
            "key vault: STRATAI_VAULT_KEY is not set; using an EPHEMERAL master key (id {}): \
             fine for an in-memory store, whose keys die with this process anyway",
            wired.vault_key_id
        );
    } else {
        eprintln!("key vault: master key id {}", wired.vault_key_id);
    }
    // The worker's cadences; the members' key limits come from the guardrail rules it
    // compiles from the database itself (no guardrail runtime here).
    let schedule = SyncSchedule {
        interval: options.interval,
        reconcile: Cadence::after_first(options.reconcile_every),
        repair: options.repair,
        spend_poll: Cadence::after_first(options.spend_every.unwrap_or(config.litellm.spend_poll)),
        spend_window: options.spend_window.unwrap_or(config.litellm.spend_window),
        guardrail_reload: Cadence::from_start(GUARDRAIL_RELOAD),
    };
    let runner = wired.standalone_runner(schedule, stores.guardrails.clone());
    work(runner, &wired.client, &stores, &options, demo).await
}

/// One organization with a group (basic tier) and a member with a $1 budget, on a catalog
/// whose basic and premium tiers are the proxy's `mock-gpt` and `mock-gpt-premium`.
async fn seed_demo(
    store: &stratai_store::MemoryStore,
) -> Result<(stratai_core::ids::OrgId, stratai_core::ids::UserId), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let now = Utc::now();
    for mut tier in default_tiers() {
        tier.models = match tier.id {
            id if id == BASIC_TIER_ID => vec![ModelId::new("mock-gpt").map_err(|x| e(&x))?],
            id if id == PREMIUM_TIER_ID => {
                vec![ModelId::new("mock-gpt-premium").map_err(|x| e(&x))?]
            }
            _ => Vec::new(),
        };
        store.upsert_tier(&tier).await.map_err(|x| e(&x))?;
    }
    let run = &uuid_suffix();
    let basic = TierSlug::new("basic").map_err(|x| e(&x))?;
    let premium = TierSlug::new("premium").map_err(|x| e(&x))?;
    let settings =
        OrgSettings::new(vec![basic.clone(), premium], basic.clone()).map_err(|x| e(&x))?;
    let slug = Slug::new(format!("demo-{run}")).map_err(|x| e(&x))?;
    let org =
        Organization::new("Demo", slug, settings, BillingPlan::Business, now).map_err(|x| e(&x))?;
    store.create_org(&org).await.map_err(|x| e(&x))?;
    let tiers: Vec<_> = default_tiers().iter().map(|t| t.id).collect();
    for subscription in subscriptions_for(org.id, &tiers, now) {
        store
            .put_subscription(org.id, &subscription)
            .await
            .map_err(|x| e(&x))?;
    }
    let user = User::new(
        Email::new(format!("demo-{run}@example.com")).map_err(|x| e(&x))?,
        Some("Demo"),
        PlatformRole::User,
        now,
    )
    .map_err(|x| e(&x))?;
    store.create_user(&user).await.map_err(|x| e(&x))?;
    let membership = Membership::new(org.id, user.id, OrgRole::Member, now)
        .with_monthly_budget(Money::new(Decimal::ONE).map_err(|x| e(&x))?);
    store
        .add_member(org.id, &membership)
        .await
        .map_err(|x| e(&x))?;
    let group = Group::new(org.id, "engineering", now)
        .map_err(|x| e(&x))?
        .with_allowed_tiers(vec![basic])
        .map_err(|x| e(&x))?;
    store
        .create_group(org.id, &group)
        .await
        .map_err(|x| e(&x))?;
    store
        .put_group_member(
            org.id,
            &GroupMembership::new(org.id, group.id, user.id, GroupRole::Member, now),
        )
        .await
        .map_err(|x| e(&x))?;
    Ok((org.id, user.id))
}

fn uuid_suffix() -> String {
    stratai_core::ids::OrgId::new()
        .as_uuid()
        .simple()
        .to_string()[20..]
        .to_owned()
}

/// Runs `runner` until Ctrl-C (printing each tick), or with `--once` each step once, printing
/// what it found: `Ok(false)` when drift, a spend gap or a dead letter was found.
async fn work(
    runner: SyncRunner,
    client: &LiteLlmClient,
    stores: &Stores,
    options: &Options,
    demo: Option<(stratai_core::ids::OrgId, stratai_core::ids::UserId)>,
) -> Result<bool, String> {
    if !options.once {
        runner
            .run_until(
                async {
                    let _ = tokio::signal::ctrl_c().await;
                },
                print_tick,
            )
            .await;
        return Ok(true);
    }

    if let Some(Err(failure)) = runner.reload_guardrails().await {
        print_reload_failure(&failure);
    }
    let engine = runner.engine().clone();
    let mut clean = true;
    loop {
        let pass = engine
            .run_once()
            .await
            .map_err(|e| format!("outbox: {e}"))?;
        println!("sync: {pass:?}");
        if pass.events == 0 || pass.completed == 0 {
            break;
        }
    }
    let dead = stores
        .outbox
        .dead_letters(100)
        .await
        .map_err(|e| format!("outbox: {e}"))?;
    for event in &dead {
        println!(
            "dead letter: seq {} {:?}: {}",
            event.seq,
            event.entity,
            event.last_error.as_deref().unwrap_or("")
        );
    }
    clean &= dead.is_empty();
    if let Some((org, user)) = demo {
        let key = engine
            .member_key(org, user)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the demo member has no key")?;
        let who = Attribution {
            end_user_id: Some(user.to_string()),
            user_id: Some(user.to_string()),
            org_id: Some(org.to_string()),
            request_id: None,
        };
        let answer = client
            .chat(
                &key,
                &who,
                &ChatRequest::new(
                    "mock-gpt",
                    vec![ChatMessage::user("hello from the worker demo")],
                    8,
                ),
            )
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "demo chat: id {} cost {:?}: {}",
            answer.completion.id,
            answer.meta.response_cost,
            answer.completion.text().unwrap_or("")
        );
    }
    let drift = engine
        .reconcile(options.repair)
        .await
        .map_err(|e| format!("reconcile: {e}"))?;
    println!(
        "reconcile: {} orgs, {} drifts, {} repaired, {} foreign",
        drift.orgs,
        drift.drifts.len(),
        drift.repaired,
        drift.foreign
    );
    for d in &drift.drifts {
        println!(
            "  drift {:?} {} {}: {}",
            d.kind, d.org_id, d.subject, d.detail
        );
    }
    clean &= drift.is_clean() || options.repair;
    if demo.is_none()
        && let Some(poll) = runner.poll_spend(Utc::now()).await
    {
        let poll = poll.map_err(|e| format!("spend: {e}"))?;
        clean &= print_spend(&poll);
    }
    Ok(clean)
}

/// What the loop says about one tick: each step's outcome, on stdout, its failures on stderr.
fn print_tick(tick: &TickReport) {
    if let Some(Err(failure)) = &tick.guardrails {
        print_reload_failure(failure);
    }
    match &tick.pass {
        Ok(pass) if pass.events > 0 => println!("sync: {pass:?}"),
        Ok(_) => {}
        Err(e) => eprintln!("sync: outbox failed: {e}"),
    }
    match &tick.reconcile {
        Some((_, Ok(report))) => println!(
            "reconcile: {} drifts, {} repaired",
            report.drifts.len(),
            report.repaired
        ),
        Some((_, Err(e))) => eprintln!("reconcile failed: {e}"),
        None => {}
    }
    match &tick.rotation {
        Some(Ok(r)) if !r.rotated.is_empty() || r.revoked > 0 => println!(
            "keys: {} rotated ahead of expiry, {} rotated keys revoked",
            r.rotated.len(),
            r.revoked
        ),
        Some(Ok(_)) | None => {}
        Some(Err(e)) => eprintln!("key rotation failed: {e}"),
    }
    match &tick.spend {
        Some(Ok(poll)) => {
            print_spend(poll);
        }
        Some(Err(e)) => eprintln!("spend reconciliation failed: spend: {e}"),
        None => {}
    }
}

/// A guardrail reload that failed: the policy in force stays (none before the first
/// success: members wait rather than lose limits).
fn print_reload_failure(failure: &ReloadFailure) {
    let e = &failure.error;
    if failure.previous_in_force {
        eprintln!("guardrail rules not reloaded; the previous ones stay in force: {e}");
    } else {
        eprintln!(
            "guardrail rules not loaded (members' keys wait for them; retried every {}s): {e}",
            GUARDRAIL_RELOAD.as_secs()
        );
    }
}

/// Prints a spend-log import (the window ends 15 s ago, spend logs being written in
/// batches): calls through StratAI are matched with their usage records, calls made with a
/// member's key directly are recorded as their usage and charged to their budgets (the same
/// idempotent path as the server's callback). Clean when nothing was spent outside StratAI
/// and no record disagrees with LiteLLM.
fn print_spend(poll: &SpendPoll) -> bool {
    let report = &poll.report;
    println!(
        "spend: {} rows, {} through StratAI, {} recorded outside StratAI, {} already settled, {} pending, {} ignored, {} mismatches",
        report.rows,
        report.gateway,
        report.direct_recorded,
        report.repeated,
        report.pending,
        report.ignored,
        report.mismatches
    );
    for outcome in &poll.outcomes {
        match outcome {
            Imported::Direct {
                record,
                fresh: true,
                ..
            } => println!(
                "  spend outside StratAI: member {} of {} used their key directly ({} billed, LiteLLM request {})",
                record.user_id,
                record.org_id,
                record.billed_amount,
                record.litellm_request_id.as_deref().unwrap_or("")
            ),
            Imported::Gateway {
                mismatch: Some(m), ..
            } => println!("  mismatch: {m:?}"),
            _ => {}
        }
    }
    report.direct_recorded == 0 && report.mismatches == 0
}
