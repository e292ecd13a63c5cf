//! The backend matrix: one test body run once per backend, as one `#[tokio::test]` each.
//!
//! [`backend_matrix!`](crate::backend_matrix) is the only place that lays the matrix out, for
//! every crate's tests (the store's conformance suite, its audit tests, the server's API and
//! gateway tests). What differs between suites is only how a backend is started and handed to
//! the body: the calling file says that in a small macro of its own, the *runner*, which the
//! matrix calls as `runner!(<backend>, <path to the body>)` inside each generated test.
//!
//! ```
//! # async fn count(backend: stratai_testkit::Backend) -> usize { backend.name().len() }
//! // How this file starts a backend and calls a body with it.
//! macro_rules! run {
//!     ($backend:ident, $body:path) => {
//!         assert!($body(stratai_testkit::backend!($backend)).await > 0)
//!     };
//! }
//! // `count::memory`, `count::sqlite` and `count::postgres`, three tests.
//! stratai_testkit::backend_matrix!(run, [memory, sqlite, postgres]: count);
//! # fn main() {}
//! ```
//!
//! Tests are named `<body>::<backend>` (`cargo test postgres` runs one backend's). With
//! `in <module>` the bodies are that module's (`backend_matrix!(run, [..], in directory:
//! group_crud)` calls `super::directory::group_crud`).
//! Each test runs on tokio's multi-thread runtime with two workers unless the call says
//! `threads = N` (more workers, for bodies that race tasks) or `threads = current` (tokio's
//! default current-thread runtime).

/// The backends a test can run on. The names the matrix takes (`memory`, `sqlite`,
/// `postgres`) are these in lower case; [`backend!`](crate::backend) turns one into its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The in-memory store.
    Memory,
    /// SQLite, the embedded default: a file in a scratch folder.
    Sqlite,
    /// PostgreSQL: a fresh database of the `pg` harness (skipped when none can be had, outside
    /// CI).
    Postgres,
}

impl Backend {
    /// Its name in the matrix and in test names.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// The [`Backend`] a matrix name stands for: `backend!(sqlite)` is `Backend::Sqlite`. Another
/// name does not compile.
#[macro_export]
macro_rules! backend {
    (memory) => {
        $crate::Backend::Memory
    };
    (sqlite) => {
        $crate::Backend::Sqlite
    };
    (postgres) => {
        $crate::Backend::Postgres
    };
}

/// Runs each named `async fn` once per listed backend: `backend_matrix!(runner, [memory,
/// sqlite, postgres]: a, b)` makes the tests `a::memory` ... `b::postgres`, each calling
/// `runner!(<backend>, super::a)`. The runner is a macro of the calling file or a path to one
/// (`crate::harness::on_api`). `in m` names bodies of the module `m` (`super::m::a`);
/// `threads = N` or `threads = current` chooses the runtime. See [the module](crate::matrix).
#[macro_export]
macro_rules! backend_matrix {
    ($($runner:ident)::+, $backends:tt $(, in $module:ident)? $(, threads = $threads:tt)? : $($name:ident),+ $(,)?) => {
        $crate::backend_matrix!(
            @tests ($($runner)::+), ($($threads)?), $backends, ($($module ::)?): $($name),+
        );
    };
    (@tests $runner:tt, (), $($rest:tt)*) => {
        $crate::backend_matrix!(@tests $runner, (2), $($rest)*);
    };
    (@tests $runner:tt, ($threads:tt), $backends:tt, $prefix:tt: $($name:ident),+) => {
        $( $crate::backend_matrix!(@test $runner, $threads, $backends, $prefix, $name); )+
    };
    (@test $runner:tt, $threads:tt, $backends:tt, ($($prefix:tt)*), $name:ident) => {
        $crate::backend_matrix!(@mod $runner, $threads, $backends, $name, super::$($prefix)* $name);
    };
    (@mod $runner:tt, $threads:tt, [$($backend:ident),+ $(,)?], $name:ident, $body:path) => {
        mod $name {
            $( $crate::backend_matrix!(@fn $runner, $threads, $backend, $body); )+
        }
    };
    (@fn ($($runner:tt)*), current, $backend:ident, $body:path) => {
        #[tokio::test]
        async fn $backend() {
            $($runner)*!($backend, $body);
        }
    };
    (@fn ($($runner:tt)*), $threads:tt, $backend:ident, $body:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
        async fn $backend() {
            $($runner)*!($backend, $body);
        }
    };
}
