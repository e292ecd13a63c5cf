#!/usr/bin/env bash
# Runs the whole test suite: every crate, every backend, against real services.
#
# - PostgreSQL: DATABASE_URL if set, else 127.0.0.1:5432; the store's test harness starts a
#   throwaway cluster (initdb/pg_ctl) when neither answers.
# - LiteLLM: a real proxy from ../shared/litellm (STRATAI_LITELLM_KIT to point elsewhere) with
#   the project's mock upstream, started once for the run and stopped at the end. Without the
#   kit the LiteLLM tests say they were skipped; under CI=true they fail instead.
# - Leftovers: first removes what killed runs left (test databases and scratch folders whose
#   creating process is gone), at the end drops the shared test roles, stops the throwaway
#   cluster and the LiteLLM kit, then counts what is still there
#   (`[test] left behind: 0 databases, 0 roles, 0 temp folders, 0 processes`, see
#   scripts/test-leftovers.sh); under CI=true anything left behind fails the run.
#
# - Without arguments, also scripts/api-check.sh (OpenAPI 3.1 validation, Schemathesis, a
#   generated client; its Python tools are installed from PyPI into the target dir). Without
#   python3 it says it was skipped; under CI=true that fails the run.
#
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p stratai-core`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

log() { printf '[test] %s\n' "$*" >&2; }

started=$(date +%s)
bash "$root/scripts/test-leftovers.sh" --sweep --no-count || true

# PostgreSQL: make sure the local server answers when it is installed as a service.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql >/dev/null 2>&1; then
    log "starting the local PostgreSQL cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi

# LiteLLM proxy + mock upstream, once for the whole run.
litellm_started=0
finished=0
cleanup() {
  if [ "$litellm_started" = 1 ]; then
    log "stopping the LiteLLM proxy and mock upstream"
    bash "$root/scripts/litellm-down.sh" >&2 || true
    litellm_started=0
  fi
  if [ "$finished" = 0 ]; then
    # Interrupted: what the killed tests left goes now, not only at the next run's start.
    bash "$root/scripts/test-leftovers.sh" --sweep --end --no-count || true
  fi
}
trap cleanup EXIT
if [ -z "${STRATAI_LITELLM_URL:-}" ] && [ -x "$root/scripts/litellm-up.sh" -o -f "$root/scripts/litellm-up.sh" ]; then
  kit=${STRATAI_LITELLM_KIT:-$root/../shared/litellm}
  if [ -d "$kit" ]; then
    log "starting the LiteLLM proxy from $kit"
    if exports=$(bash "$root/scripts/litellm-up.sh"); then
      eval "$exports"
      litellm_started=1
    elif [ "${CI:-}" = "true" ]; then
      log "ERROR: the LiteLLM proxy did not start (CI=true: this is a failure)"
      exit 1
    else
      log "the LiteLLM proxy did not start: its tests will report themselves skipped"
    fi
  else
    log "no LiteLLM kit at $kit: its tests will report themselves skipped (fail under CI=true)"
  fi
fi

status=0
cargo test --workspace --all-features --no-fail-fast "$@" || status=$?

# The store's fallback for machines without a PostgreSQL server: a throwaway cluster from the
# machine's initdb/pg_ctl. Exercised here once (RLS tests); stopped and removed below.
if [ $# -eq 0 ]; then
  log "PostgreSQL fallback: the RLS tests on a throwaway cluster"
  STRATAI_TEST_PG=throwaway cargo test -p stratai-store --all-features --test pg_rls || status=$?
  # The API as its users see it: the served document validated as OpenAPI 3.1, Schemathesis
  # with every check, a generated client running the README's admin session (issue 26).
  log "the API checked by third-party tools: scripts/api-check.sh"
  bash "$root/scripts/api-check.sh" || status=$?
fi

# What the run leaves: stop the LiteLLM kit (when this run started it), then drop the shared
# test roles, stop and remove the throwaway cluster, and count what is still there.
kit_flag=
[ "$litellm_started" = 1 ] && kit_flag=--kit
finished=1
cleanup
if ! bash "$root/scripts/test-leftovers.sh" --end --since "$started" $kit_flag; then
  if [ "${CI:-}" = "true" ]; then
    log "ERROR: the run left the above behind (CI=true: this is a failure)"
    [ "$status" = 0 ] && status=1
  fi
fi
exit $status
