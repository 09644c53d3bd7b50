#!/usr/bin/env bash
# Install sensegate into .venv and run the simulated site: `bash scripts/demo.sh [--duration 60s]`.
# Needs only python3 (with venv) — no broker, database or hardware. The install runs only
# when .venv is missing or pyproject.toml changed, so later runs start at once, offline too.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
ensure_venv .venv demo
exec .venv/bin/sensegate demo "$@"
