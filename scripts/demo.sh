#!/usr/bin/env bash
# Install sensegate into .venv and run the simulated site: `bash scripts/demo.sh [--duration 60]`.
# Needs only python3 (with venv) — no broker, database or hardware.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# pip and setuptools are chatty (build warnings); keep their output unless it failed.
pip_log=.venv/pip-install.log
if ! { .venv/bin/python -m pip install -q --upgrade pip &&
       .venv/bin/python -m pip install -q -e '.[demo]'; } >"$pip_log" 2>&1; then
  cat "$pip_log" >&2
  echo "installing sensegate failed (log above, also in $pip_log)" >&2
  exit 1
fi
exec .venv/bin/sensegate demo "$@"
