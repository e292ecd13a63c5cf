# Sourced by the scripts that run pinned Python tools (api-check.sh, smtp-sink.sh):
# `pyvenv_install DIR PINS...` makes DIR a virtualenv holding exactly PINS (pip requirement
# specifiers, pinned with ==), reinstalling only when the pins change, and prints nothing.
# It returns 1 with the reason in $PYVENV_ERROR when python3, venv/pip or the install is
# unavailable; the caller decides whether that skips or fails (under CI=true it fails).
# Concurrent callers (several tests starting at once on a fresh target directory) take turns
# on a lock file beside DIR, so one creates the virtualenv and the others find it made.
pyvenv_install() {
  local venv=$1
  shift
  mkdir -p "$(dirname "$venv")"
  if ! command -v flock >/dev/null 2>&1; then
    pyvenv_install_now "$venv" "$@"
    return
  fi
  local fd rc=0
  exec {fd}>"$venv.lock"
  flock "$fd"
  pyvenv_install_now "$venv" "$@" || rc=$?
  exec {fd}>&-
  return "$rc"
}

# pyvenv_install without the lock.
pyvenv_install_now() {
  local venv=$1
  shift
  local wanted="$*"
  local stamp="$venv/.installed"
  PYVENV_ERROR=
  if ! command -v python3 >/dev/null 2>&1; then
    PYVENV_ERROR="python3 is not installed"
    return 1
  fi
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    PYVENV_ERROR="python3 has no venv/pip"
    return 1
  fi
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    return 0
  fi
  printf '[pyvenv] installing %s into %s\n' "$wanted" "$venv" >&2
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >&2; then
    PYVENV_ERROR="python3 could not create a virtualenv"
    return 1
  fi
  # shellcheck disable=SC2086 # the pins are separate words
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check $wanted >&2; then
    PYVENV_ERROR="pip could not install $wanted"
    return 1
  fi
  echo "$wanted" >"$stamp"
}
