#!/usr/bin/env bash
# usage: scripts/test-leftovers.sh [--sweep] [--end] [--since EPOCH_SECONDS] [--kit] [--no-count]
#
# Counts what the test suite left on this machine, prints one line and exits 1 when anything
# was left behind (0 otherwise):
#   [test] left behind: 0 databases, 0 roles, 0 temp folders, 0 processes
# - databases `stratai_test_*` on the test server (DATABASE_URL, else postgres@127.0.0.1:5432);
# - the roles `stratai_test_owner` / `stratai_test_app` the PostgreSQL harness shares;
# - `stratai-*` entries in the temp dir (${TMPDIR:-/tmp}): scratch folders, SQLite files,
#   the throwaway PostgreSQL cluster's folder;
# - processes: the throwaway cluster's, programs run from the cargo target dir (test binaries
#   and what they spawned) and, with --kit, the LiteLLM kit's (proxy and mock upstream).
#
# Databases and scratch folders carry their creator's tag (stratai-testkit's `Creator`: the
# machine's boot id and PID namespace, the pid and the process's start time). What belongs to
# a process that still runs (a concurrent run) is "in use": never removed, never counted as
# left behind. Names without the tag (older harness versions, which checkouts on older
# branches still run) are never this run's, nor, with --since, things created before that
# time: both are counted apart ("older").
#
# --sweep  first removes what killed runs left: databases and scratch folders whose creator is
#          gone. Those whose creator cannot be checked (another machine or PID namespace, or
#          named by harness versions before the creator tag, which checkouts on older branches
#          still run) only when older than 3 hours.
# --end    first drops the shared roles (PostgreSQL refuses while any test database still
#          uses them) and stops and removes the throwaway cluster (scripts/test.sh, at the end).
# --kit    counts the LiteLLM kit's processes as left behind (test.sh passes it when it
#          started the kit; otherwise a running kit is someone else's and only mentioned).
# --no-count  only the cleanup asked for (scripts/test.sh's --sweep at its start).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

sweep=0 end=0 since=0 kit=0 count=1
while [ $# -gt 0 ]; do
  case $1 in
    --sweep) sweep=1 ;;
    --end) end=1 ;;
    --kit) kit=1 ;;
    --no-count) count=0 ;;
    --since)
      [[ ${2:-} =~ ^[0-9]+$ ]] || { echo "test-leftovers.sh: --since needs epoch seconds" >&2; exit 2; }
      since=$2
      shift
      ;;
    *) echo "test-leftovers.sh: unknown argument \`$1\`" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[test] %s\n' "$*" >&2; }

tmp=${TMPDIR:-/tmp}
tmp=${tmp%/}
target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target=$root/$target
kit_dir=${STRATAI_LITELLM_WORK_DIR:-${WORK_DIR:-$HOME/.cache/stratai/litellm}}
pg_url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
roles_lock=32497656931836265 # ROLES_LOCK of stratai-store/testkit/src/pg.rs
uncheckable_max_age=$((3 * 3600)) # stratai-testkit's UNCHECKABLE_MAX_AGE
now=$(date +%s)

# --- creators (mirrors stratai-testkit's Creator) -------------------------------------------
# FNV-1a of the boot id and the PID namespace: whether a pid in a name can be checked here.
host=00000000
if boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null) && ns=$(readlink /proc/self/ns/pid 2>/dev/null); then
  text=$boot$ns h=2166136261
  for ((i = 0; i < ${#text}; i++)); do
    printf -v c '%d' "'${text:i:1}"
    h=$((((h ^ c) * 16777619) & 0xffffffff))
  done
  printf -v host '%08x' "$h"
fi

# creator_state HOST PID START: alive | gone | unknown
creator_state() {
  if [[ $host == 00000000 || $1 != "$host" ]]; then echo unknown; return; fi
  local stat fields
  if ! stat=$(cat "/proc/$2/stat" 2>/dev/null); then echo gone; return; fi
  read -r -a fields <<<"${stat##*)}"
  if [[ ${fields[0]} != [ZX] && ${fields[19]} == "$3" ]]; then echo alive; else echo gone; fi
}

# classify CREATED_SECS HOST PID START (the creator fields are empty for a name without a
# tag, of an older harness version: never this run's): prints in-use | removable | older | left.
classify() {
  local state=unknown removable=0
  [[ -n $2 ]] && state=$(creator_state "$2" "$3" "$4")
  if [[ $state == alive ]]; then echo in-use; return; fi
  if [[ $state == gone ]] || ((now - $1 > uncheckable_max_age)); then removable=1; fi
  if [[ $sweep == 1 && $removable == 1 ]]; then echo removable
  elif [[ -z $2 ]] || (($1 < since)); then echo older
  else echo left
  fi
}

# --- PostgreSQL ------------------------------------------------------------------------------
psql_ok=0
psql_q() { psql -X -A -t -q -v ON_ERROR_STOP=1 -d "$pg_url" "$@"; }
if command -v psql >/dev/null 2>&1 && psql_q -c 'SELECT 1' >/dev/null 2>&1; then psql_ok=1; fi

databases() { psql_q -c "SELECT datname FROM pg_database WHERE datname LIKE 'stratai\\_test\\_%'"; }

# db_class NAME: the class of a test database from its name
# (`stratai_test_<secs>_<host>_<pid>_<start>_<n>`, or `stratai_test_<secs>_<uuid>` before the tag).
db_class() {
  local rest=${1#stratai_test_} parts
  IFS=_ read -r -a parts <<<"$rest"
  if [[ ${#parts[@]} == 5 && ${parts[0]} =~ ^[0-9]+$ && ${parts[1]} =~ ^[0-9a-f]{8}$ && ${parts[2]} =~ ^[0-9]+$ && ${parts[3]} =~ ^[0-9]+$ ]]; then
    classify "${parts[0]}" "${parts[1]}" "${parts[2]}" "${parts[3]}"
  elif [[ ${parts[0]} =~ ^[0-9]+$ ]]; then
    classify "${parts[0]}" "" "" ""
  else
    echo left
  fi
}

# --- temp dir --------------------------------------------------------------------------------
# The names tests used before scratch folders (checkouts on older branches still create them).
legacy_temp='^stratai-(spool-test|batch-test|cfg|test-spool|gw|gw-ll|cli|worker-vault|conformance|budget|vault|lease|server-test)-|^stratai-[0-9a-f-]{36}\.db'

# temp_class NAME
temp_class() {
  local name=$1 mtime parts
  mtime=$(stat -c %Y "$tmp/$name" 2>/dev/null || echo "$now")
  if [[ $name =~ ^stratai-test-([0-9a-f]{8})-([0-9]+)-([0-9]+)-[0-9]+$ ]]; then
    classify "$mtime" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}"
  elif [[ $name =~ $legacy_temp ]]; then
    classify "$mtime" "" "" ""
  elif ((mtime < since)); then
    echo older
  else
    echo left
  fi
}

# --- processes -------------------------------------------------------------------------------
alive() { [[ $1 =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null && [[ $(ps -o stat= -p "$1" 2>/dev/null) != Z* ]]; }

# The throwaway cluster's postmaster and its children.
cluster_pids() {
  local pm
  for pm in $(pgrep -f -- "$tmp/stratai-test-pg/data" 2>/dev/null || true); do
    echo "$pm"
    pgrep -P "$pm" 2>/dev/null || true
  done
}

# Processes running a program from the target dir.
target_pids() {
  local exe pid
  for exe in /proc/[0-9]*/exe; do
    pid=${exe#/proc/}
    pid=${pid%/exe}
    [[ $(readlink "$exe" 2>/dev/null) == "$target"/* ]] && echo "$pid"
  done
  return 0
}

# The LiteLLM kit's: its pid files and whatever runs from its work dir.
kit_pids() {
  local f pid
  for f in "$kit_dir/proxy.pid" "$kit_dir/mock-upstream.pid"; do
    pid=$(cat "$f" 2>/dev/null || true)
    alive "$pid" && echo "$pid"
  done
  pgrep -f -- "$kit_dir/" 2>/dev/null || true
}

stop_cluster() {
  local pgdata=$tmp/stratai-test-pg/data pgctl
  if [ -f "$pgdata/postmaster.pid" ]; then
    pgctl=$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | tail -n1)
    if [ "$(id -u)" = 0 ]; then
      # From `/`: the cluster's owner may not enter the checkout (a private temp dir, say).
      (cd / && runuser -u "$(stat -c %U "$pgdata")" -- "$pgctl" -D "$pgdata" stop -m fast >/dev/null) || true
    else
      "$pgctl" -D "$pgdata" stop -m fast >/dev/null || true
    fi
  fi
}

# --- cleanup ---------------------------------------------------------------------------------
if [[ $sweep == 1 ]]; then
  swept_db=0 swept_tmp=0
  if [[ $psql_ok == 1 ]]; then
    for name in $(databases); do
      if [[ $name =~ ^[a-z0-9_]+$ && $(db_class "$name") == removable ]] &&
        psql_q -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" 2>/dev/null; then
        swept_db=$((swept_db + 1))
      fi
    done
  fi
  for path in "$tmp"/stratai-*; do
    [[ -e $path ]] || continue
    name=${path##*/}
    if [[ $(temp_class "$name") == removable ]] && rm -rf -- "$path"; then
      swept_tmp=$((swept_tmp + 1))
    fi
  done
  log "removed what killed runs left: $swept_db databases, $swept_tmp temp folders"
  sweep=0
fi

if [[ $end == 1 ]]; then
  stop_cluster
  rm -rf -- "$tmp/stratai-test-pg"
  if [[ $psql_ok == 1 ]]; then
    # Exclusive: the harness holds this lock shared while it creates a database with them.
    # stratai_test_drop_database: made by harness versions before the creator tag.
    psql_q >/dev/null <<SQL || log "could not drop the test roles"
SET client_min_messages = warning;
SELECT pg_advisory_lock($roles_lock);
DO \$\$ BEGIN DROP ROLE IF EXISTS stratai_test_app;
EXCEPTION WHEN dependent_objects_still_exist THEN NULL; END \$\$;
DO \$\$ BEGIN DROP ROLE IF EXISTS stratai_test_owner;
EXCEPTION WHEN dependent_objects_still_exist THEN NULL; END \$\$;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_database WHERE datname LIKE 'stratai\\_test\\_%') THEN
    DROP FUNCTION IF EXISTS stratai_test_drop_database(TEXT);
  END IF;
END \$\$;
SELECT pg_advisory_unlock($roles_lock);
SQL
  fi
fi

# --- count -----------------------------------------------------------------------------------
[[ $count == 1 ]] || exit 0
declare -A left=() other=()
add() { # add left|other KIND ITEM
  local -n counts=$1
  counts[$2]=$((${counts[$2]:-0} + 1))
  [[ $1 == left ]] && log "  left: $2 $3"
  return 0
}

db_note=
if [[ $psql_ok == 1 ]]; then
  others_db=0
  for name in $(databases); do
    case $(db_class "$name") in
      in-use | older) add other databases "$name"; others_db=1 ;;
      *) add left databases "$name" ;;
    esac
  done
  for role in $(psql_q -c "SELECT rolname FROM pg_roles WHERE rolname IN ('stratai_test_owner', 'stratai_test_app')"); do
    # Other runs' databases keep the shared roles alive.
    if [[ $others_db == 1 ]]; then add other roles "$role"; else add left roles "$role"; fi
  done
else
  db_note=" (databases and roles not checked: no PostgreSQL at the test server)"
fi

for path in "$tmp"/stratai-*; do
  [[ -e $path ]] || continue
  name=${path##*/}
  case $(temp_class "$name") in
    in-use | older) add other "temp folders" "$path" ;;
    *) add left "temp folders" "$path" ;;
  esac
done

declare -A seen=()
for pid in $(cluster_pids) $(target_pids); do
  [[ -n ${seen[$pid]:-} ]] && continue
  seen[$pid]=1
  add left processes "$pid $(ps -o args= -p "$pid" 2>/dev/null | cut -c1-120)"
done
kit_count=0
for pid in $(kit_pids); do
  [[ -n ${seen[$pid]:-} ]] && continue
  seen[$pid]=1
  if [[ $kit == 1 ]]; then
    add left processes "$pid $(ps -o args= -p "$pid" 2>/dev/null | cut -c1-120)"
  else
    kit_count=$((kit_count + 1))
  fi
done

summary() { # summary ARRAY
  local -n counts=$1
  printf '%s databases, %s roles, %s temp folders, %s processes' "${counts[databases]:-0}" \
    "${counts[roles]:-0}" "${counts[temp folders]:-0}" "${counts[processes]:-0}"
}
if [[ ${#other[@]} -gt 0 ]]; then
  log "not this run's (in use by running tests, older than this run or named by older harness versions): $(summary other)"
fi
if [[ $kit_count -gt 0 ]]; then
  log "the LiteLLM kit runs ($kit_count processes; not started by this run)"
fi
log "left behind: $(summary left)$db_note"
[[ ${#left[@]} -eq 0 ]]
