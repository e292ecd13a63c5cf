//! Test support shared by the workspace's tests (a dev-dependency only): scratch folders that
//! are removed when the test ends, and the creator tag that lets a later run remove what a
//! killed test process left behind.
//!
//! Rust runs no `Drop` for statics and nothing at all when a process is killed, so a test
//! process cannot promise to clean up after itself. Instead everything a test creates outside
//! itself (a [`Scratch`] folder, a PostgreSQL database of the `pg` harness)
//! carries its creator's [`Creator`] tag: the machine (boot id and PID namespace), the pid and
//! the process's start time. A guard removes the thing when the test ends (pass, fail or
//! panic); whatever a killed process left is removed by the next test process that starts,
//! as soon as [`Creator::state`] says its creator is [`Liveness::Gone`] — never while it runs,
//! so concurrent runs do not disturb each other. `scripts/test-leftovers.sh` reads the same
//! tags (its `creator_state` mirrors [`Creator::state`]) to count what a run left behind.
//!
//! `pg` (feature `pg`) is the PostgreSQL harness: a fresh, migrated database per test served by
//! an unprivileged app role, shared by the store's and the server's tests.
//!
//! [`backend_matrix!`] runs a test body once per backend ([`matrix`]), for every crate's tests.
//!
//! [`usage`] builds usage records ([`usage_record`]), for every crate's tests; `tenant`
//! (feature `stores`) writes a tenant to test against: an organization, a member, her budget.
#![deny(missing_docs)]

pub mod matrix;
pub mod usage;

#[cfg(feature = "stores")]
pub mod tenant;

// Test support: a test that cannot get its database fails loudly at its own line.
#[cfg(feature = "pg")]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod pg;

pub use matrix::Backend;
pub use usage::{Amount, UsageRecordBuilder, usage_record};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// How long a leftover whose creator cannot be checked is kept: one from another machine or
/// PID namespace sharing the server, from before a reboot, or named by an older version of the
/// harness without a creator tag. Such a creator may still be running, so only age tells.
pub const UNCHECKABLE_MAX_AGE: Duration = Duration::from_secs(3 * 3600);

/// The prefix of every scratch folder in the temp dir.
pub const SCRATCH_PREFIX: &str = "stratai-test-";

/// The process that created a test resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creator {
    /// 8 hex digits of FNV-1a over the boot id and the PID namespace; `00000000` without
    /// `/proc` (then no creator can be checked).
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Start time of the process in clock ticks since boot (field 22 of `/proc/<pid>/stat`),
    /// so a reused pid is not mistaken for the creator.
    pub start: u64,
}

/// Whether a creator still runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The creator runs: leave its resources alone.
    Alive,
    /// The creator is gone (exited, killed, a zombie): its resources may be removed.
    Gone,
    /// The creator is on another machine, PID namespace or boot: only age can tell.
    Unknown,
}

const NO_HOST: &str = "00000000";

impl Creator {
    /// This process.
    pub fn current() -> &'static Creator {
        static CURRENT: OnceLock<Creator> = OnceLock::new();
        CURRENT.get_or_init(|| {
            let pid = std::process::id();
            Creator {
                host: host_tag().unwrap_or_else(|| NO_HOST.to_owned()),
                pid,
                start: process_start(pid).map_or(0, |(start, _)| start),
            }
        })
    }

    /// `<host><sep><pid><sep><start>`, for names (`-` in folder names, `_` in database names).
    pub fn tag(&self, sep: char) -> String {
        format!("{}{sep}{}{sep}{}", self.host, self.pid, self.start)
    }

    /// The creator named by the first three of `parts` (as written by [`Creator::tag`]).
    pub fn parse(parts: &[&str]) -> Option<Creator> {
        let [host, pid, start, ..] = parts else {
            return None;
        };
        let hex = host.len() == 8 && host.bytes().all(|b| b.is_ascii_hexdigit());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !hex || !digits(pid) || !digits(start) {
            return None;
        }
        Some(Creator {
            host: (*host).to_owned(),
            pid: pid.parse().ok()?,
            start: start.parse().ok()?,
        })
    }

    /// Whether this creator still runs, as far as this process can see.
    pub fn state(&self) -> Liveness {
        let me = Creator::current();
        if me.host == NO_HOST || self.host != me.host {
            return Liveness::Unknown;
        }
        match process_start(self.pid) {
            Some((start, zombie)) if start == self.start && !zombie => Liveness::Alive,
            _ => Liveness::Gone,
        }
    }

    /// Whether a resource of this creator, `age` old, may be removed now.
    pub fn may_remove(&self, age: Duration) -> bool {
        match self.state() {
            Liveness::Alive => false,
            Liveness::Gone => true,
            Liveness::Unknown => age > UNCHECKABLE_MAX_AGE,
        }
    }
}

/// FNV-1a (32 bits) of the boot id and the PID namespace: one short field that tells whether
/// a pid in a name can be checked here.
fn host_tag() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let text = format!("{}{}", boot.trim(), ns.display());
    let hash = text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    Some(format!("{hash:08x}"))
}

/// The start time of process `pid` and whether it is a zombie, from `/proc/<pid>/stat`.
fn process_start(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so split after the
    // last `)`; the state is field 3 and the start time field 22.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let zombie = matches!(fields.first(), Some(&"Z") | Some(&"X"));
    Some((fields.get(19)?.parse().ok()?, zombie))
}

/// A folder of its own in the temp dir for one test, `stratai-test-<creator>-<n>`, removed
/// with everything in it when dropped (the test passed, failed or panicked). The first one a
/// process creates first removes the scratch folders of creators that are gone.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A new, empty folder.
    ///
    /// # Panics
    /// When the folder cannot be created (a test cannot run without it).
    #[allow(clippy::panic)]
    pub fn new() -> Scratch {
        static SWEPT: OnceLock<usize> = OnceLock::new();
        SWEPT.get_or_init(|| sweep_scratch(&std::env::temp_dir()));
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "{SCRATCH_PREFIX}{}-{n}",
            Creator::current().tag('-')
        ));
        if let Err(e) = std::fs::create_dir_all(&path) {
            panic!("cannot create the scratch folder {}: {e}", path.display());
        }
        Scratch { path }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the folder.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The creator of a scratch folder named `name`, when it is one.
pub fn scratch_creator(name: &str) -> Option<Creator> {
    let parts: Vec<&str> = name.strip_prefix(SCRATCH_PREFIX)?.split('-').collect();
    let n = parts.get(3)?;
    if parts.len() != 4 || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Creator::parse(&parts)
}

/// Removes the scratch folders in `dir` whose creator is gone (or cannot be checked and whose
/// folder is older than [`UNCHECKABLE_MAX_AGE`]); returns how many. Folders of running
/// processes, and anything not named like a scratch folder, are left alone.
pub fn sweep_scratch(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Some(creator) = entry.file_name().to_str().and_then(scratch_creator) else {
            continue;
        };
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        if creator.may_remove(age) && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::process::Command;

    #[test]
    fn this_process_is_alive_and_tagged() {
        let me = Creator::current();
        assert_eq!(me.pid, std::process::id());
        assert_ne!(me.host, NO_HOST, "this test needs Linux's /proc");
        assert!(me.start > 0);
        assert_eq!(me.state(), Liveness::Alive);
        let tag = me.tag('_');
        assert_eq!(
            Creator::parse(&tag.split('_').collect::<Vec<_>>()),
            Some(me.clone())
        );
    }

    #[test]
    fn an_exited_process_is_gone_and_a_reused_pid_is_not_its_creator() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        let (start, _) = process_start(pid).unwrap();
        let creator = Creator {
            host: Creator::current().host.clone(),
            pid,
            start,
        };
        // Not yet reaped: a zombie is gone too.
        while !process_start(pid).is_some_and(|(_, zombie)| zombie) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(creator.state(), Liveness::Gone);
        child.wait().unwrap();
        assert_eq!(creator.state(), Liveness::Gone);
        assert!(creator.may_remove(Duration::ZERO));
        // This process's pid with another start time: a different process.
        let other = Creator {
            start: Creator::current().start + 1,
            ..Creator::current().clone()
        };
        assert_eq!(other.state(), Liveness::Gone);
    }

    #[test]
    fn another_machine_is_unknown_and_only_age_removes() {
        let foreign = Creator {
            host: if Creator::current().host == "0000beef" {
                "0000cafe"
            } else {
                "0000beef"
            }
            .to_owned(),
            ..Creator::current().clone()
        };
        assert_eq!(foreign.state(), Liveness::Unknown);
        assert!(!foreign.may_remove(Duration::from_secs(60)));
        assert!(foreign.may_remove(UNCHECKABLE_MAX_AGE + Duration::from_secs(1)));
        assert!(!Creator::current().may_remove(Duration::from_secs(365 * 86_400)));
    }

    #[test]
    fn names_that_are_not_tags_are_refused() {
        for bad in [
            "stratai-test-pg",
            "stratai-test-0123abcd-12-34",
            "stratai-test-0123abcd-12-34-5-6",
            "stratai-test-0123abcg-12-34-5",
            "stratai-test-0123abcd-x2-34-5",
            "stratai-test-0123abcd-12-34-",
            "stratai-spool-test-0123abcd-12-34-5",
        ] {
            assert_eq!(scratch_creator(bad), None, "{bad}");
        }
        assert_eq!(
            scratch_creator("stratai-test-0123abcd-12-34-5"),
            Some(Creator {
                host: "0123abcd".to_owned(),
                pid: 12,
                start: 34
            })
        );
    }

    #[test]
    fn a_scratch_folder_is_removed_on_drop_even_by_a_panic() {
        let kept = Scratch::new();
        let name = kept
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(scratch_creator(&name).as_ref(), Some(Creator::current()));
        std::fs::write(kept.join("file"), "x").unwrap();
        let path = kept.path().to_owned();
        drop(kept);
        assert!(!path.exists());

        let inner = std::panic::catch_unwind(|| {
            let scratch = Scratch::new();
            std::fs::create_dir_all(scratch.join("a/b")).unwrap();
            let path = scratch.path().to_owned();
            std::panic::panic_any(path);
        })
        .unwrap_err();
        let path = inner.downcast_ref::<PathBuf>().unwrap();
        assert!(!path.exists(), "{}", path.display());
    }

    #[test]
    fn the_sweep_removes_folders_of_gone_creators_only() {
        let dir = Scratch::new();
        let mut child = Command::new("true").spawn().unwrap();
        let (start, _) = process_start(child.id()).unwrap();
        let gone = Creator {
            host: Creator::current().host.clone(),
            pid: child.id(),
            start,
        };
        child.wait().unwrap();
        let names = [
            format!("{SCRATCH_PREFIX}{}-0", gone.tag('-')),
            format!("{SCRATCH_PREFIX}{}-0", Creator::current().tag('-')),
            format!("{SCRATCH_PREFIX}0000beef-{}-{}-0", gone.pid, gone.start),
            "stratai-test-pg".to_owned(),
        ];
        for name in &names {
            std::fs::create_dir_all(dir.join(name).join("inner")).unwrap();
        }
        assert_eq!(sweep_scratch(dir.path()), 1);
        assert!(!dir.join(&names[0]).exists());
        for kept in &names[1..] {
            assert!(dir.join(kept).exists(), "{kept}");
        }
    }
}
