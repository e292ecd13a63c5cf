#!/usr/bin/env bash
# A real SMTP server for the invitation email tests (examples/server/tests/invitations_mail.rs):
# installs aiosmtpd (pinned) into a virtualenv under the cargo target directory, the same way
# api-check.sh installs its tools (scripts/pyvenv.sh), and prints the virtualenv's python.
# The test then runs `python -m aiosmtpd -n -l 127.0.0.1:PORT -c aiosmtpd.handlers.Mailbox DIR`,
# which stores every message it receives in the Maildir DIR.
#
# Usage: scripts/smtp-sink.sh [TARGET_DIR]   (default: $CARGO_TARGET_DIR, else ./target)
# Exit 0: the python path on stdout. Exit 2: unavailable (the reason on stderr); the test says
# it was skipped, or fails under CI=true.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/pyvenv.sh
. "$root/scripts/pyvenv.sh"

AIOSMTPD=aiosmtpd==1.4.6

target=${1:-${CARGO_TARGET_DIR:-$root/target}}
venv="$target/smtp-sink/venv"
if ! pyvenv_install "$venv" "$AIOSMTPD"; then
  echo "smtp-sink: $PYVENV_ERROR" >&2
  exit 2
fi
"$venv/bin/python" -c 'import aiosmtpd.handlers' >&2 || {
  echo "smtp-sink: aiosmtpd does not import" >&2
  exit 2
}
echo "$venv/bin/python"
