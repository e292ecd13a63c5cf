//! Architecture invariants of ARCHITECTURE.md, checked mechanically (rust-analyzer's tidy habit).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Normal (non-dev, non-build) dependency names of every workspace package.
fn normal_dependencies() -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut map = BTreeMap::new();
    for pkg in meta["packages"].as_array().unwrap() {
        let deps = pkg["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect();
        map.insert(pkg["name"].as_str().unwrap().to_owned(), deps);
    }
    map
}

#[test]
fn dependency_direction_holds() {
    let deps = normal_dependencies();
    let ours = |name: &str| -> Vec<String> {
        deps[name]
            .iter()
            .filter(|d| d.starts_with("stratai-"))
            .cloned()
            .collect()
    };

    // core depends on no other crate of ours, and does no I/O: no runtime, database, HTTP.
    assert!(
        ours("stratai-core").is_empty(),
        "{:?}",
        ours("stratai-core")
    );
    for banned in ["tokio", "sqlx", "reqwest", "axum", "hyper", "redis"] {
        assert!(
            !deps["stratai-core"].iter().any(|d| d == banned),
            "stratai-core must not depend on {banned}"
        );
    }
    // guardrails and litellm depend on core only; store on core (+ guardrails types it persists).
    assert_eq!(ours("stratai-guardrails"), ["stratai-core"]);
    assert_eq!(ours("stratai-litellm"), ["stratai-core"]);
    for dep in ours("stratai-store") {
        assert!(
            dep == "stratai-core" || dep == "stratai-guardrails",
            "stratai-store must not depend on {dep}"
        );
    }
    // Nothing of ours depends on an example or the benches.
    for (pkg, list) in &deps {
        if pkg.starts_with("stratai-") && !pkg.ends_with("-example") {
            for dep in list {
                assert!(
                    !dep.ends_with("-example") && dep != "stratai-benches",
                    "{pkg} depends on {dep}"
                );
            }
        }
    }
    // The test kit is for tests: a dev-dependency only.
    for (pkg, list) in &deps {
        assert!(
            !list.iter().any(|d| d == "stratai-testkit"),
            "{pkg} depends on stratai-testkit outside its dev-dependencies"
        );
    }
}

/// Tests put files in the temp dir only through `stratai_testkit::Scratch`, which removes them
/// when the test ends and lets a later run sweep what a killed one left. The exceptions: the
/// kit itself, the PostgreSQL harness's throwaway cluster (shared by a run's processes,
/// removed by `scripts/test.sh`) and the benches (not tests).
#[test]
fn tests_use_the_temp_dir_only_through_scratch() {
    let root = workspace_root();
    let mut files = Vec::new();
    rust_sources(&root, &mut files);
    let allowed = [
        "stratai-testkit/",
        "stratai-store/tests/support/pg.rs",
        "benches/",
    ];
    let offenders: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(path).unwrap();
            (text.contains(concat!("temp", "_dir()"))
                && !allowed.iter().any(|a| rel.starts_with(a)))
            .then_some(rel)
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "the temp dir used outside Scratch in {offenders:?}"
    );
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_sources(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_money_in_floats() {
    let money_word = [
        "cost", "amount", "spend", "price", "budget", "billed", "rate_per",
    ];
    let mut files = Vec::new();
    for krate in [
        "stratai-core",
        "stratai-guardrails",
        "stratai-store",
        "stratai-litellm",
        "examples",
    ] {
        let dir = workspace_root().join(krate);
        if dir.exists() {
            rust_sources(&dir, &mut files);
        }
    }
    let mut offenders = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            let has_float_type = lower.contains(": f64")
                || lower.contains(": f32")
                || lower.contains("<f64>")
                || lower.contains("as f64");
            if has_float_type && money_word.iter().any(|w| lower.contains(w)) {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "money in floats:\n{}",
        offenders.join("\n")
    );
}

/// Store methods that are platform-wide by design, documented as such in ports.rs.
const PLATFORM_METHODS: &[&str] = &[
    "create_org",
    "get_org",
    "find_org_by_slug",
    "update_org",
    "list_orgs",
    "create_user",
    "get_user",
    "find_user_by_email",
    "find_user_by_subject",
    "update_user",
    "memberships_of_user",
    "locate_group",
    "create_profile",
    "get_profile",
    "list_profiles",
    "find_invitation_by_token_hash",
    "accept_invitation",
    "upsert_tier",
    "list_tiers",
    "get_tier",
    "reclaim_expired",
    "put_platform_rule",
    "delete_platform_rule",
    "list_platform_rules",
    "pending",
    "complete",
    "fail",
    "dead_letter",
    "dead_letters",
    // RateLimitStore: buckets of global rules span organizations; the key names the tenant.
    "acquire",
    "peek",
];

#[test]
fn every_tenant_store_method_takes_the_org() {
    let ports =
        std::fs::read_to_string(workspace_root().join("stratai-core/src/ports.rs")).unwrap();
    let mut in_store_trait = false;
    let mut signature = String::new();
    let mut checked = 0;
    for line in ports.lines() {
        let trimmed = line.trim();
        if line.starts_with('}') {
            // The end of an item: what follows (a type's impl) is not a trait method.
            in_store_trait = false;
            continue;
        }
        if trimmed.starts_with("pub trait ") {
            let name = trimmed.trim_start_matches("pub trait ");
            in_store_trait = name.contains("Store") || name.contains("Ledger");
            continue;
        }
        if !in_store_trait {
            continue;
        }
        if trimmed.starts_with("async fn ") || trimmed.starts_with("fn ") || !signature.is_empty() {
            signature.push_str(trimmed);
            if !(trimmed.contains(';') || trimmed.ends_with('{')) {
                continue;
            }
            let name = signature
                .trim_start_matches("async ")
                .trim_start_matches("fn ")
                .split('(')
                .next()
                .unwrap()
                .to_owned();
            if !PLATFORM_METHODS.contains(&name.as_str()) {
                assert!(
                    signature.contains("org: OrgId"),
                    "store method `{name}` neither takes `org: OrgId` nor is a documented platform method"
                );
            }
            checked += 1;
            signature.clear();
        }
    }
    assert!(
        checked > 40,
        "only {checked} store methods found: parser broken?"
    );
}
