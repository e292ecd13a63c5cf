#!/usr/bin/env bash
# usage: scripts/litellm-up.sh
# Starts the mock OpenAI upstream (examples/mock-upstream) on 127.0.0.1:18080 and a real
# LiteLLM proxy from the kit (../shared/litellm) that talks to it. Idempotent: what already
# runs is kept. Progress goes to stderr; stdout gets only the line to eval:
#   export STRATAI_LITELLM_URL=http://127.0.0.1:4000 STRATAI_LITELLM_MASTER_KEY=sk-master-1234
# Typical use:  eval "$(scripts/litellm-up.sh)" && cargo test -p stratai-litellm
# The proxy's `generic_api` logging callback (LiteLLM's real-time spend report) posts to
# http://$STRATAI_LITELLM_CALLBACK_ADDR/api/litellm/spend-callback with
# `Authorization: Bearer $STRATAI_LITELLM_CALLBACK_SECRET`; both are exported too, so the
# tests that check the callback serve StratAI's route on that address. (Given an own
# LITELLM_CONFIG, the callback is not added: put it in that file, see the server README.)
# env: STRATAI_LITELLM_KIT (default $REPO/../shared/litellm), STRATAI_LITELLM_WORK_DIR (default
#      $HOME/.cache/stratai/litellm), MOCK_UPSTREAM_ADDR (default 127.0.0.1:18080),
#      STRATAI_LITELLM_CALLBACK_ADDR (default 127.0.0.1:18181), STRATAI_LITELLM_CALLBACK_SECRET
#      (default a fixed test secret), and the kit's LITELLM_PORT, LITELLM_MASTER_KEY,
#      LITELLM_DB, LITELLM_PG (see the kit README).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIT=${STRATAI_LITELLM_KIT:-$REPO/../shared/litellm}
WORK_DIR=${STRATAI_LITELLM_WORK_DIR:-${WORK_DIR:-$HOME/.cache/stratai/litellm}}
MOCK_ADDR=${MOCK_UPSTREAM_ADDR:-127.0.0.1:18080}
export LITELLM_MASTER_KEY=${LITELLM_MASTER_KEY:-sk-master-1234}
export LITELLM_UPSTREAM=${LITELLM_UPSTREAM:-http://$MOCK_ADDR/v1}
PORT=${LITELLM_PORT:-4000}

log() { printf '[litellm-up] %s\n' "$*" >&2; }
die() { printf '[litellm-up] ERROR: %s\n' "$*" >&2; exit 1; }
alive() { [[ $1 =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null && [[ $(ps -o stat= -p "$1" 2>/dev/null) != Z* ]]; }

[[ -x $KIT/setup.sh && -x $KIT/start.sh ]] || die "no LiteLLM kit at $KIT (set STRATAI_LITELLM_KIT)"
mkdir -p "$WORK_DIR"
command -v curl >/dev/null || die "curl is needed"

# --- mock upstream -------------------------------------------------------------------------
MOCK_PID_FILE=$WORK_DIR/mock-upstream.pid
mock_ok() { curl -sf -m 2 "http://$MOCK_ADDR/v1/models" >/dev/null 2>&1; }
old=$(cat "$MOCK_PID_FILE" 2>/dev/null || true)
if alive "$old" && mock_ok; then
  log "mock upstream: already running (pid $old) on $MOCK_ADDR"
elif mock_ok; then
  log "mock upstream: something already answers on $MOCK_ADDR; using it"
else
  TARGET=${CARGO_TARGET_DIR:-$REPO/target}
  log "mock upstream: building (cargo build --release -p stratai-mock-upstream --bin mock-upstream)"
  (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p stratai-mock-upstream --bin mock-upstream) >&2
  BIN=$TARGET/release/mock-upstream
  [[ -x $BIN ]] || die "mock upstream binary missing at $BIN"
  setsid "$BIN" --addr "$MOCK_ADDR" >"$WORK_DIR/mock-upstream.log" 2>&1 < /dev/null &
  echo $! >"$MOCK_PID_FILE"
  for _ in $(seq 1 50); do mock_ok && break; sleep 0.1; done
  mock_ok || die "mock upstream did not answer on $MOCK_ADDR (see $WORK_DIR/mock-upstream.log)"
  log "mock upstream: started (pid $(cat "$MOCK_PID_FILE")) on $MOCK_ADDR"
fi

# --- LiteLLM proxy -------------------------------------------------------------------------
CALLBACK_ADDR=${STRATAI_LITELLM_CALLBACK_ADDR:-127.0.0.1:18181}
CALLBACK_SECRET=${STRATAI_LITELLM_CALLBACK_SECRET:-stratai-test-callback-secret}
if [[ -z ${LITELLM_CONFIG:-} ]]; then
  # LiteLLM's HTTP logging callback to StratAI (the server README's snippet).
  export LITELLM_CONFIG=$WORK_DIR/stratai-callback.yaml
  cat >"$LITELLM_CONFIG" <<YAML
litellm_settings:
  callbacks: ["stratai_spend"]
callback_settings:
  stratai_spend:
    callback_type: generic_api
    endpoint: http://$CALLBACK_ADDR/api/litellm/spend-callback
    headers:
      Authorization: "Bearer $CALLBACK_SECRET"
    event_types: ["llm_api_success"]
    log_format: json_array
YAML
fi
"$KIT/setup.sh" "$WORK_DIR" >&2
URL=
if [[ -f $WORK_DIR/proxy.pid ]] && alive "$(cat "$WORK_DIR/proxy.pid")"; then
  URL=$(sed -n 's/^LITELLM_BASE_URL=//p' "$WORK_DIR/proxy.env" 2>/dev/null || true)
  KEY=$(sed -n 's/^LITELLM_MASTER_KEY=//p' "$WORK_DIR/proxy.env" 2>/dev/null || true)
  if [[ -n $URL ]] && curl -sf -m 5 "$URL/health/readiness" >/dev/null 2>&1; then
    log "proxy: already running at $URL"
    LITELLM_MASTER_KEY=${KEY:-$LITELLM_MASTER_KEY}
  else
    die "a proxy from $WORK_DIR runs but does not answer: run scripts/litellm-down.sh first"
  fi
else
  URL=$("$KIT/start.sh" "$WORK_DIR")
  printf 'CALLBACK_ADDR=%s\nCALLBACK_SECRET=%s\n' "$CALLBACK_ADDR" "$CALLBACK_SECRET" >"$WORK_DIR/stratai-callback.env"
fi
[[ -n $URL ]] || die "the kit did not print the proxy URL"
# The callback the running proxy was started with (it may predate this call's settings).
if [[ -f $WORK_DIR/stratai-callback.env ]]; then
  CALLBACK_ADDR=$(sed -n 's/^CALLBACK_ADDR=//p' "$WORK_DIR/stratai-callback.env")
  CALLBACK_SECRET=$(sed -n 's/^CALLBACK_SECRET=//p' "$WORK_DIR/stratai-callback.env")
fi
printf 'export STRATAI_LITELLM_URL=%s STRATAI_LITELLM_MASTER_KEY=%s STRATAI_LITELLM_CALLBACK_ADDR=%s STRATAI_LITELLM_CALLBACK_SECRET=%s\n' \
  "$URL" "$LITELLM_MASTER_KEY" "$CALLBACK_ADDR" "$CALLBACK_SECRET"
