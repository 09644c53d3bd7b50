#!/usr/bin/env bash
# Install everything the test suite needs on a Debian machine, then run the whole suite.
#   apt packages (Mosquitto, InfluxDB 1.x, VictoriaMetrics, systemd for systemd-analyze),
#   a venv in .venv, the package with its test extras, ruff, pytest.
# Exit status is pytest's (or ruff's): non-zero on any failure, and also when no test ran.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(mosquitto influxdb victoria-metrics openssl systemd python3-venv)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# pip and setuptools are chatty (build warnings); keep their output unless it failed.
pip_log=.venv/pip-install.log
if ! { .venv/bin/python -m pip install -q --upgrade pip &&
       .venv/bin/python -m pip install -q -e '.[test]'; } >"$pip_log" 2>&1; then
  cat "$pip_log" >&2
  echo "installing sensegate failed (log above, also in $pip_log)" >&2
  exit 1
fi

.venv/bin/ruff check .
# pytest exits 5 when it collected no test: that is a failure here too, not a pass.
exec .venv/bin/python -m pytest "$@"
