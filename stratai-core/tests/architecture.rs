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

/// `cargo metadata --no-deps` of the workspace.
fn metadata() -> serde_json::Value {
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
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Normal (non-dev, non-build) dependency names of every workspace package.
fn normal_dependencies(meta: &serde_json::Value) -> BTreeMap<String, Vec<String>> {
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

/// Dependencies on an example or on the benches, found by where the crates are (manifest and
/// dependency paths), not by their names: no package outside `examples/` may depend on one
/// under it, in any dependency kind (nor on `benches/`); an example may use another example
/// only as a dev-dependency (the mock upstream, a test fixture of the server's tests and load
/// harness), never to build itself.
fn dependencies_on_examples(meta: &serde_json::Value, root: &Path) -> Vec<String> {
    let examples = root.join("examples");
    let benches = root.join("benches");
    let mut violations = Vec::new();
    for pkg in meta["packages"].as_array().unwrap() {
        let name = pkg["name"].as_str().unwrap();
        let manifest = Path::new(pkg["manifest_path"].as_str().unwrap());
        let is_example = manifest.starts_with(&examples);
        for dep in pkg["dependencies"].as_array().unwrap() {
            let Some(path) = dep["path"].as_str().map(Path::new) else {
                continue;
            };
            let kind = dep["kind"].as_str().unwrap_or("normal");
            let dep_name = dep["name"].as_str().unwrap();
            if path.starts_with(&benches) {
                violations.push(format!(
                    "{name} depends on the benches ({dep_name}, {kind})"
                ));
            } else if path.starts_with(&examples) && (!is_example || kind != "dev") {
                violations.push(format!(
                    "{name} ({}) depends on the example {dep_name} ({kind})",
                    manifest.display()
                ));
            }
        }
    }
    violations
}

#[test]
fn nothing_depends_on_an_example() {
    let violations = dependencies_on_examples(&metadata(), &workspace_root());
    assert!(violations.is_empty(), "{violations:#?}");
}

/// The check above can fail: a doctored metadata with the dependencies it forbids.
#[test]
fn the_example_dependency_check_catches_each_kind_of_violation() {
    let root = Path::new("/ws");
    let meta = serde_json::json!({"packages": [
        {"name": "stratai-benches", "manifest_path": "/ws/benches/Cargo.toml", "dependencies": [
            // named like a library crate, but it is the server: caught by its path
            {"name": "stratai-core", "path": "/ws/examples/server", "kind": null},
        ]},
        {"name": "stratai-store", "manifest_path": "/ws/stratai-store/Cargo.toml", "dependencies": [
            {"name": "fixture", "path": "/ws/examples/mock-upstream", "kind": "dev"},
            {"name": "stratai-benches", "path": "/ws/benches", "kind": "dev"},
            {"name": "stratai-core", "path": "/ws/stratai-core", "kind": null},
        ]},
        {"name": "stratai-server", "manifest_path": "/ws/examples/server/Cargo.toml", "dependencies": [
            {"name": "stratai-mock-upstream", "path": "/ws/examples/mock-upstream", "kind": "dev"},
            {"name": "worker", "path": "/ws/examples/litellm-worker", "kind": null},
            {"name": "serde", "kind": null},
        ]},
    ]});
    let violations = dependencies_on_examples(&meta, root);
    assert_eq!(violations.len(), 4, "{violations:#?}");
    assert!(
        violations[0].starts_with("stratai-benches ("),
        "{violations:#?}"
    );
    assert!(
        violations[1].contains("example fixture (dev)"),
        "{violations:#?}"
    );
    assert!(
        violations[2].contains("depends on the benches"),
        "{violations:#?}"
    );
    assert!(
        violations[3].contains("example worker (normal)"),
        "{violations:#?}"
    );
}

#[test]
fn dependency_direction_holds() {
    let deps = normal_dependencies(&metadata());
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
    // guardrails depends on core only; litellm on core and the rules engine (its members'
    // key limits, without the runtime); store on core (+ the guardrails runtime's `FreshCache`, the
    // auth cache of its `signin` feature).
    assert_eq!(ours("stratai-guardrails"), ["stratai-core"]);
    assert_eq!(
        ours("stratai-litellm"),
        ["stratai-core", "stratai-guardrails"]
    );
    for dep in ours("stratai-store") {
        assert!(
            dep == "stratai-core" || dep == "stratai-guardrails",
            "stratai-store must not depend on {dep}"
        );
    }
    // The test kit is for tests: a dev-dependency only.
    for (pkg, list) in &deps {
        assert!(
            !list.iter().any(|d| d == "stratai-testkit"),
            "{pkg} depends on stratai-testkit outside its dev-dependencies"
        );
    }
}

/// The files allowed to read the process environment: the configuration loader's
/// `ProcessEnv` (every setting of the server and the worker goes through it).
const ENV_READERS: &[&str] = &["stratai-litellm/src/config.rs"];

/// Lines of `text` that read the process environment (`std::env::var`, `var_os`, `vars`).
fn env_reads(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if ["env::var(", "env::var_os(", "env::vars(", "env::vars_os("]
            .iter()
            .any(|call| compact.contains(call))
        {
            out.push((n + 1, line.trim().to_owned()));
        }
    }
    out
}

#[test]
fn only_the_config_module_reads_the_environment() {
    // Every package's `src/` (what ships); tests and harnesses read their own switches
    // (`CI`, the LiteLLM kit's URLs), never a product setting. The test kit is a harness
    // (a dev-dependency only, see `dependency_direction_holds`): its PostgreSQL harness reads
    // `CI`, `DATABASE_URL` and `STRATAI_TEST_PG`.
    let mut files = Vec::new();
    for pkg in metadata()["packages"].as_array().unwrap() {
        if pkg["name"] == "stratai-testkit" {
            continue;
        }
        let manifest = PathBuf::from(pkg["manifest_path"].as_str().unwrap());
        let src = manifest.parent().unwrap().join("src");
        if src.exists() {
            rust_sources(&src, &mut files);
        }
    }
    assert!(files.len() > 50, "only {} sources found", files.len());
    let root = workspace_root();
    let mut offenders = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if ENV_READERS.contains(&relative.as_str()) {
            continue;
        }
        for (n, line) in env_reads(&std::fs::read_to_string(&file).unwrap()) {
            offenders.push(format!("{relative}:{n}: {line}"));
        }
    }
    assert!(
        offenders.is_empty(),
        "the environment read outside the config module (add the setting to the config \
         instead):\n{}",
        offenders.join("\n")
    );
    // The allowed reader does read it (the list is not stale).
    let loader = std::fs::read_to_string(root.join(ENV_READERS[0])).unwrap();
    assert!(!env_reads(&loader).is_empty());
}

#[test]
fn the_environment_scan_sees_every_spelling() {
    for line in [
        r#"let v = std::env::var("X");"#,
        r#"env::var_os("PATH")"#,
        r#"std :: env :: var ("X")"#,
        "for (k, v) in std::env::vars() {}",
    ] {
        assert_eq!(env_reads(line).len(), 1, "{line}");
    }
    for line in [
        "std::env::temp_dir ()",
        "std::env::args()",
        r#"// std::env::var("X") in a comment"#,
    ] {
        assert!(env_reads(line).is_empty(), "{line}");
    }
}

/// Tests put files in the temp dir only through `stratai_testkit::Scratch`, which removes them
/// when the test ends and lets a later run sweep what a killed one left. The exceptions: the
/// kit itself, the PostgreSQL harness's throwaway cluster (shared by a run's processes,
/// removed by `scripts/test.sh`), the benches and the load harness (not tests).
#[test]
fn tests_use_the_temp_dir_only_through_scratch() {
    let root = workspace_root();
    let mut files = Vec::new();
    rust_sources(&root, &mut files);
    let allowed = [
        "stratai-store/testkit/",
        "benches/",
        "examples/server/examples/",
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
    "append_platform_audit",
    "list_platform_audit",
    "list_all_audit",
    "platform_audit_chain",
    "platform_audit_page",
    "create_org",
    "get_org",
    "find_org_by_slug",
    "update_org",
    "list_orgs",
    "create_user",
    "get_user",
    "get_users",
    "count_people_in_orgs",
    "totals_by_org",
    "find_user_by_email",
    "find_user_by_subject",
    "update_user",
    "list_users",
    "set_user_active",
    "set_platform_role",
    "memberships_of_user",
    "locate_group",
    "create_profile",
    "update_profile",
    "delete_profile",
    "get_profile",
    "list_profiles",
    "find_invitation_by_token_hash",
    "pending_invitations_for",
    "accept_invitation",
    "upsert_tier",
    "list_tiers",
    "get_tier",
    "reclaim_expired",
    // Instance liveness: heartbeats and the leases of dead instances span organizations.
    "beat",
    "retire_instance",
    "abandoned_leases",
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

/// The rules engine stays runtime-free: in `stratai-guardrails` every dependency of the
/// runtime (tokio, the metrics facade, the webhook's HTTP client) is optional and enabled only
/// by the `runtime` feature (or `webhook`, which implies it), the runtime's module is
/// compiled only with that feature, and no rules-engine source names tokio. (CI also runs
/// `cargo check -p stratai-guardrails --no-default-features`.)
#[test]
fn the_rules_engine_does_not_need_the_runtime() {
    let meta = metadata();
    let pkg = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "stratai-guardrails")
        .expect("stratai-guardrails is a workspace package");
    let runtime_deps = ["tokio", "metrics", "reqwest", "url"];
    for dep in pkg["dependencies"].as_array().unwrap() {
        let name = dep["name"].as_str().unwrap();
        if !dep["kind"].is_null() {
            continue;
        }
        for banned in ["axum", "hyper", "sqlx", "redis"] {
            assert_ne!(
                name, banned,
                "stratai-guardrails must not depend on {banned}"
            );
        }
        if runtime_deps.contains(&name) {
            assert_eq!(
                dep["optional"], true,
                "stratai-guardrails' `{name}` must be optional (the `runtime` feature's)"
            );
        }
    }
    // stratai-litellm uses the rules engine alone: no default features, none enabled.
    let litellm = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "stratai-litellm")
        .expect("stratai-litellm is a workspace package");
    for dep in litellm["dependencies"].as_array().unwrap() {
        if dep["name"] == "stratai-guardrails" && dep["kind"].is_null() {
            assert_eq!(
                dep["uses_default_features"], false,
                "stratai-litellm must not enable stratai-guardrails' runtime"
            );
            assert_eq!(dep["features"], serde_json::json!([]), "{dep}");
        }
    }
    let features = pkg["features"].as_object().unwrap();
    assert_eq!(features["default"], serde_json::json!(["runtime"]));
    for (feature, enables) in features {
        for item in enables.as_array().unwrap() {
            let item = item.as_str().unwrap();
            if item == "dep:tokio" {
                assert_eq!(feature, "runtime", "tokio enabled by feature `{feature}`");
            }
            if ["dep:reqwest", "dep:url", "dep:metrics"].contains(&item) {
                assert!(
                    feature == "runtime" || feature == "webhook",
                    "{item} enabled by feature `{feature}`"
                );
            }
        }
        if feature == "webhook" {
            assert!(enables.as_array().unwrap().contains(&"runtime".into()));
        }
    }
    let src = workspace_root().join("stratai-guardrails/src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    assert!(
        lib.contains("#[cfg(feature = \"runtime\")]\npub mod runtime;"),
        "lib.rs must compile `mod runtime` only with the `runtime` feature"
    );
    let mut files = Vec::new();
    rust_sources(&src, &mut files);
    let runtime_dir = src.join("runtime");
    let engine: Vec<_> = files
        .iter()
        .filter(|f| !f.starts_with(&runtime_dir))
        .collect();
    assert!(engine.len() >= 10, "{engine:?}");
    for file in engine {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            !text.contains("tokio::") && !text.contains("use tokio"),
            "{} (rules engine) names tokio: it belongs under src/runtime",
            file.display()
        );
    }
}
