#!/usr/bin/env bash
# Install everything the test suite needs on a Debian machine, then run the whole suite.
#   apt packages (Mosquitto, InfluxDB 1.x, VictoriaMetrics, RabbitMQ, systemd for
#   systemd-analyze, Chromium and its driver for the page's browser test),
#   a venv in .venv, the package with its test extras, ruff, pytest.
# Then: the install test (scripts/test-install.sh: the built wheel in a fresh venv, run from
# outside the tree); when .ci/floors.txt exists, the unit tests against every dependency at
# its floor. Before pytest: ruff and `mypy --strict gateway drivers` (0 errors).
# Exit status is non-zero on any failure, and also when no test ran.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(mosquitto influxdb victoria-metrics rabbitmq-server openssl systemd python3-venv
              chromium chromium-driver)
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

. scripts/venv.sh
ensure_venv .venv test

.venv/bin/ruff check .
.venv/bin/mypy --strict gateway drivers
# pytest exits 5 when it collected no test: that is a failure here too, not a pass.
.venv/bin/python -m pytest "$@"

# The install as an operator does it: a green run from the checkout must not hide a wheel
# that lacks its profiles or a command that only works from the source tree.
PYTHON=.venv/bin/python bash scripts/test-install.sh

# Every dependency at the lowest version pyproject.toml allows (.ci/floors.txt pins them).
if [ -f .ci/floors.txt ]; then
  echo "unit tests with the dependency floors (.ci/floors.txt)"
  ensure_venv .venv-floors test .ci/floors.txt
  .venv-floors/bin/python -m pytest tests/unit -q
fi
