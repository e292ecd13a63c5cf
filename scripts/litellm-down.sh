#!/usr/bin/env bash
# usage: scripts/litellm-down.sh
# Stops the LiteLLM proxy and the mock upstream started by scripts/litellm-up.sh (only the
# processes named in their pid files). Same env as litellm-up.sh.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIT=${STRATAI_LITELLM_KIT:-$REPO/../shared/litellm}
WORK_DIR=${STRATAI_LITELLM_WORK_DIR:-${WORK_DIR:-$HOME/.cache/stratai/litellm}}

log() { printf '[litellm-down] %s\n' "$*" >&2; }

if [[ -x $KIT/stop.sh ]]; then
  "$KIT/stop.sh" "$WORK_DIR" >&2 || log "the kit's stop.sh failed"
else
  log "no kit at $KIT: not stopping a proxy"
fi

MOCK_PID_FILE=$WORK_DIR/mock-upstream.pid
pid=$(cat "$MOCK_PID_FILE" 2>/dev/null || true)
if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
  kill "$pid"
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  log "mock upstream (pid $pid) stopped"
else
  log "mock upstream: not running"
fi
rm -f "$MOCK_PID_FILE"
