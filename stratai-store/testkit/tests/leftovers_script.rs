#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `scripts/test-leftovers.sh` against a temp dir and target dir of its own: it counts what
//! gone processes left, leaves alone (and does not count) what a running process holds, sweeps
//! only what it may, counts processes run from the target dir, and reads the creator tags
//! exactly as `Creator` writes them (the host tag is computed in bash and in Rust). With a
//! PostgreSQL server and `psql`, the same for databases; skipped without them, failing under
//! `CI=true`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, SystemTime};

use stratai_testkit::{Creator, SCRATCH_PREFIX, Scratch};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-leftovers.sh")
}

struct Run {
    ok: bool,
    stderr: String,
}

impl Run {
    fn summary(&self) -> &str {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("[test] left behind: "))
            .unwrap_or_else(|| panic!("no count in:\n{}", self.stderr))
    }
    fn others(&self) -> Option<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("[test] not this run's ("))
            .find_map(|l| l.split_once("): ").map(|(_, counts)| counts))
    }
    fn lists(&self, item: &str) -> bool {
        self.stderr
            .lines()
            .any(|l| l.starts_with("[test]   left: ") && l.ends_with(item))
    }
}

fn run(tmp: &Path, target: &Path, database_url: &str, args: &[&str]) -> Run {
    let Output { status, stderr, .. } = Command::new("bash")
        .arg(script())
        .args(args)
        .env("TMPDIR", tmp)
        .env("CARGO_TARGET_DIR", target)
        .env("DATABASE_URL", database_url)
        .env("STRATAI_LITELLM_WORK_DIR", tmp.join("no-kit"))
        .output()
        .unwrap();
    Run {
        ok: status.success(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// A running process and its creator tag, killed and reaped on drop.
struct Proc(Child);

impl Proc {
    fn sleep(program: &Path) -> Proc {
        Proc(Command::new(program).arg("600").spawn().unwrap())
    }
    fn creator(&self) -> Creator {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .collect();
        Creator {
            host: Creator::current().host.clone(),
            pid: self.0.id(),
            start: fields[19].parse().unwrap(),
        }
    }
    fn stop(mut self) -> Creator {
        let creator = self.creator();
        self.0.kill().unwrap();
        self.0.wait().unwrap();
        creator
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn age(path: &Path, by: Duration) {
    let file = std::fs::File::open(path).unwrap();
    file.set_modified(SystemTime::now() - by).unwrap();
}

const NO_SERVER: &str = "postgres://nobody@127.0.0.1:1/none";

#[test]
fn temp_folders_and_processes_are_counted_and_swept_by_their_creators() {
    let tmp = Scratch::new();
    let target = Scratch::new();
    let gone = Proc::sleep(Path::new("sleep")).stop();
    let running = Proc::sleep(Path::new("sleep"));
    let folder = |c: &Creator| tmp.join(format!("{SCRATCH_PREFIX}{}-0", c.tag('-')));
    std::fs::create_dir_all(folder(&gone).join("inner")).unwrap();
    std::fs::create_dir_all(folder(&running.creator())).unwrap();
    // Names of older harness versions: never this run's; only age tells whether their run
    // still goes on.
    let legacy_old = tmp.join("stratai-spool-test-1");
    let legacy_new = tmp.join("stratai-gw-2");
    std::fs::create_dir_all(&legacy_old).unwrap();
    std::fs::create_dir_all(&legacy_new).unwrap();
    age(&legacy_old, Duration::from_secs(4 * 3600));
    std::fs::write(tmp.join("stratai-something-else.db"), "").unwrap();
    std::fs::write(tmp.join("unrelated"), "").unwrap();

    let counted = run(tmp.path(), target.path(), NO_SERVER, &[]);
    assert!(!counted.ok, "{}", counted.stderr);
    assert!(
        counted
            .summary()
            .starts_with("0 databases, 0 roles, 2 temp folders, 0 processes"),
        "{}",
        counted.stderr
    );
    assert!(
        counted
            .summary()
            .contains("databases and roles not checked")
    );
    assert_eq!(
        counted.others(),
        Some("0 databases, 0 roles, 3 temp folders, 0 processes"),
        "{}",
        counted.stderr
    );
    assert!(counted.lists(&folder(&gone).display().to_string()));
    for other in [
        folder(&running.creator()),
        legacy_old.clone(),
        legacy_new.clone(),
    ] {
        assert!(!counted.lists(&other.display().to_string()), "{other:?}");
    }

    // The sweep removes the gone creator's folder and the old legacy one, nothing else.
    let swept = run(tmp.path(), target.path(), NO_SERVER, &["--sweep"]);
    assert!(
        swept
            .stderr
            .contains("removed what killed runs left: 0 databases, 2 temp folders"),
        "{}",
        swept.stderr
    );
    assert!(
        swept
            .summary()
            .starts_with("0 databases, 0 roles, 1 temp folders, 0 processes")
    );
    assert!(!folder(&gone).exists() && !legacy_old.exists());
    assert!(folder(&running.creator()).exists() && legacy_new.exists());
    assert!(tmp.join("unrelated").exists());

    // Things older than the run (--since) are counted apart; a process running a program from
    // the target dir is left behind.
    let program = target.join("sleep");
    std::fs::copy(
        Command::new("sh")
            .args(["-c", "command -v sleep"])
            .output()
            .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned())
            .unwrap(),
        &program,
    )
    .unwrap();
    let stray = Proc::sleep(&program);
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 10;
    let later = run(
        tmp.path(),
        target.path(),
        NO_SERVER,
        &["--since", &since.to_string()],
    );
    assert!(
        later
            .summary()
            .starts_with("0 databases, 0 roles, 0 temp folders, 1 processes"),
        "{}",
        later.stderr
    );
    assert!(
        later.lists(&format!("{} 600", program.display())),
        "{}",
        later.stderr
    );
    drop(stray);

    // Once the running creator is gone too, its folder is a leftover; after the last sweep
    // only what is not the tests' remains.
    let running = running.stop();
    std::fs::remove_dir_all(&legacy_new).unwrap();
    std::fs::remove_file(tmp.join("stratai-something-else.db")).unwrap();
    let last = run(tmp.path(), target.path(), NO_SERVER, &["--sweep"]);
    assert!(last.ok, "{}", last.stderr);
    assert!(!folder(&running).exists());
    assert_eq!(
        last.summary(),
        "0 databases, 0 roles, 0 temp folders, 0 processes (databases and roles not checked: no PostgreSQL at the test server)"
    );
    assert!(tmp.join("unrelated").exists());
}

fn psql(url: &str, sql: &str) -> bool {
    Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn databases_are_counted_and_swept_by_their_creators() {
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    if !psql(&url, "SELECT 1") {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("PostgreSQL and psql are required under CI=true");
        }
        eprintln!("SKIPPED: no psql or no PostgreSQL at the test server");
        return;
    }
    let tmp = Scratch::new();
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let gone = Proc::sleep(Path::new("sleep")).stop();
    let running = Proc::sleep(Path::new("sleep"));
    let name = |c: &Creator| format!("stratai_test_{secs}_{}_0", c.tag('_'));
    let (dead_db, live_db) = (name(&gone), name(&running.creator()));
    // Names of older harness versions: swept after 3 hours, never counted as this run's.
    let random = format!("{:032x}", (u128::from(gone.pid) << 64) | u128::from(secs));
    let legacy_old = format!("stratai_test_{}_{random}", secs - 4 * 3600);
    let legacy_new = format!("stratai_test_{secs}_{random}");
    for db in [&dead_db, &live_db, &legacy_old, &legacy_new] {
        assert!(psql(&url, &format!("CREATE DATABASE {db}")));
    }
    let exists = |db: &str| {
        Command::new("psql")
            .args(["-X", "-A", "-t", "-d", &url, "-c"])
            .arg(format!(
                "SELECT count(*) FROM pg_database WHERE datname = '{db}'"
            ))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "1")
            .unwrap()
    };

    let counted = run(tmp.path(), tmp.path(), &url, &[]);
    assert!(!counted.ok);
    assert!(counted.lists(&dead_db), "{}", counted.stderr);
    for other in [&live_db, &legacy_old, &legacy_new] {
        assert!(!counted.lists(other), "{other}: {}", counted.stderr);
    }

    let swept = run(tmp.path(), tmp.path(), &url, &["--sweep", "--no-count"]);
    assert!(swept.ok, "{}", swept.stderr);
    assert!(!exists(&dead_db), "{}", swept.stderr);
    assert!(!exists(&legacy_old), "{}", swept.stderr);
    assert!(exists(&live_db) && exists(&legacy_new));

    drop(running);
    run(tmp.path(), tmp.path(), &url, &["--sweep", "--no-count"]);
    assert!(!exists(&live_db));
    assert!(psql(&url, &format!("DROP DATABASE {legacy_new}")));
}
