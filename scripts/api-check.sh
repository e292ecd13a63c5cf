#!/usr/bin/env bash
# The API as its users see it, checked with third-party tools against a real server (run by
# scripts/test.sh without arguments, so by .ci/run):
#
# 1. the served /openapi.json is a valid OpenAPI 3.1 document (openapi-spec-validator);
# 2. Schemathesis runs every check on every operation against the server on a fresh SQLite
#    database, seeded with an organization, a member, a group, a budget, guardrail rules and an
#    invitation so every path parameter names something that exists, and finds no failure;
# 3. a client generated from the document by openapi-python-client drives the README's admin
#    session (scripts/api-check/admin_session.py).
#
# The Python tools are pinned below and installed with pip (from the Python package index)
# into a virtualenv under the cargo target directory, once (scripts/pyvenv.sh, shared with
# scripts/smtp-sink.sh). Without python3 (or its venv
# module) the check says it was skipped; under CI=true it fails. It leaves nothing behind: the
# server is stopped and its scratch folder (`stratai-api-check.*` in the temp dir, which
# scripts/test-leftovers.sh counts) removed on exit, also when interrupted.
# STRATAI_API_CHECK_EXAMPLES: Schemathesis examples per operation (default 12).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

log() { printf '[api-check] %s\n' "$*" >&2; }

SCHEMATHESIS=schemathesis==4.32.5
VALIDATOR=openapi-spec-validator==0.9.0
GENERATOR=openapi-python-client==0.29.1

unavailable() {
  if [ "${CI:-}" = "true" ]; then
    log "ERROR: $1 (CI=true: this is a failure)"
    exit 1
  fi
  log "SKIPPED: $1"
  exit 0
}

# shellcheck source=scripts/pyvenv.sh
. "$root/scripts/pyvenv.sh"
target=${CARGO_TARGET_DIR:-$root/target}
venv="$target/api-check/venv"
pyvenv_install "$venv" $SCHEMATHESIS $VALIDATOR $GENERATOR || unavailable "$PYVENV_ERROR"
py="$venv/bin/python"

# The workspace's feature set, as `cargo test --workspace --all-features` built it (no rebuild).
cargo build --quiet --workspace --all-features --bin stratai-server
server_bin="$target/debug/stratai-server"

work=$(mktemp -d "${TMPDIR:-/tmp}/stratai-api-check.XXXXXX")
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
(
  cd "$work"
  exec env -u STRATAI_CONFIG -u LITELLM_URL -u OIDC_ISSUER \
    DATABASE_URL="sqlite://$work/stratai.db?mode=rwc" STRATAI_BIND="127.0.0.1:$port" \
    STRATAI_USAGE_SPOOL="$work/usage.spool" RUST_LOG=warn "$server_bin" >"$work/server.log" 2>&1
) &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fs "$base/health/ready" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; log "the server exited"; exit 1; }
  sleep 0.2
done

status=0
curl -fs "$base/openapi.json" -o "$work/openapi.json"
if "$py" -c 'import json, sys
from openapi_spec_validator import validate
from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator
validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)' "$work/openapi.json"; then
  log "the served document is valid OpenAPI 3.1"
else
  log "FAILED: the served document is not valid OpenAPI 3.1"
  status=1
fi

# The admin session first, on the fresh database (it creates its organization once).
"$venv/bin/openapi-python-client" generate --path "$work/openapi.json" \
  --output-path "$work/client" --meta none >"$work/generate.log" 2>&1 \
  || { cat "$work/generate.log" >&2; log "FAILED: openapi-python-client could not generate a client"; exit 1; }
if PYTHONPATH="$work" "$py" scripts/api-check/admin_session.py "$base" client; then
  log "the generated client ran the README's admin session"
else
  log "FAILED: the generated client's admin session"
  status=1
fi

"$py" scripts/api-check/seed.py "$base" "$work/schemathesis.toml"
examples=${STRATAI_API_CHECK_EXAMPLES:-12}
log "Schemathesis: every check, $examples examples per operation"
start=$(date +%s)
# From the scratch directory: Schemathesis keeps its cache in the working directory.
if (cd "$work" && "$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$work/openapi.json" \
  --url "$base" --checks all --max-examples "$examples" --workers 1 --seed 1 \
  --phases examples,coverage,fuzzing --no-color --output-truncate true \
  --report junit --report-dir "$work/report") >"$work/schemathesis.log" 2>&1; then
  sed -n '/= WARNINGS =/,$p' "$work/schemathesis.log" >&2
  log "Schemathesis found no failure ($(($(date +%s) - start)) s)"
else
  cat "$work/schemathesis.log" >&2
  log "FAILED: Schemathesis ($(($(date +%s) - start)) s)"
  status=1
fi
if grep -q "panicked" "$work/server.log"; then
  grep -B2 -A5 "panicked" "$work/server.log" >&2
  log "FAILED: the server panicked"
  status=1
fi
exit $status
