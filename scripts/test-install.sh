#!/usr/bin/env bash
# The install test (issue 14): build the wheel, install it into a fresh venv outside the
# source tree, and from a directory outside the tree run what an operator runs first:
#   sensegate --version; sensegate check on a copy of every shipped example config (without
#   the profiles beside them: the wheel must carry those); `sensegate demo` without the demo
#   extra (one line naming the extra, exit 2); then with the extra, `sensegate demo
#   --duration 20`, which must end with nothing lost.
# Called by scripts/test.sh (so `.ci/run` runs it); alone: `bash scripts/test-install.sh`.
# Offline: pip resolves from the machine's configured index and its cache.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/sensegate-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
step() { echo "test-install: $*"; }
fail() { echo "test-install: FAILED: $*" >&2; exit 1; }

# 1. Build the wheel from a copy of the tree's files (tracked and new, not ignored), so the
#    build leaves nothing behind in the checkout and an ignored file cannot sneak in.
step "building the wheel"
mkdir -p "$work/src" "$work/dist"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard |
    (cd "$ROOT" && xargs -0 cp --parents -t "$work/src" 2>/dev/null || true)
  # files deleted in the work tree but still tracked are skipped by `cp` above
else
  tar -C "$ROOT" --exclude=.venv --exclude=.git -cf - . | tar -C "$work/src" -xf -
fi
if "$PYTHON" -c 'import build' 2>/dev/null; then
  (cd "$work/src" && "$PYTHON" -m build -q --wheel --outdir "$work/dist" . >"$work/build.log" 2>&1) ||
    { cat "$work/build.log" >&2; fail "building the wheel"; }
else
  "$PYTHON" -m pip wheel -q --no-deps -w "$work/dist" "$work/src" >"$work/build.log" 2>&1 ||
    { cat "$work/build.log" >&2; fail "building the wheel"; }
fi
wheel=$(ls "$work"/dist/sensegate-*.whl)
step "built $(basename "$wheel")"
"$PYTHON" - "$wheel" <<'PY' || fail "the wheel lacks its package data"
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
missing = [n for n in ("gateway/py.typed", "drivers/py.typed",
                       # the technician's page: its template and static files
                       "gateway/edge/page/layout.html", "gateway/edge/page/static/page.css",
                       "gateway/edge/page/static/page.js") if n not in names]
if missing:
    sys.exit(f"not in the wheel: {', '.join(missing)}")
PY

# 2. A fresh venv outside the tree, the plain install first.
"$PYTHON" -m venv "$work/venv"
pip_install() {
  "$work/venv/bin/python" -m pip install -q "$@" >"$work/pip.log" 2>&1 ||
    { cat "$work/pip.log" >&2; fail "pip install $*"; }
}
pip_install "$wheel"
sensegate="$work/venv/bin/sensegate"
mkdir -p "$work/site"
cd "$work/site"   # outside the source tree: nothing may be found through the checkout
export PYTHONPATH=""  # and not through the caller's path either
unset SENSEGATE_CONFIG

version=$("$sensegate" --version) || fail "sensegate --version"
want=$("$work/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("sensegate"))')
[ "$version" = "sensegate $want" ] || fail "sensegate --version printed '$version', not 'sensegate $want'"
step "$version"

# 3. Every shipped example, copied alone (no profiles/ beside it), with the variables the
#    examples name set to placeholders.
export MQTT_USER=user MQTT_PASSWORD=secret BRIDGE_MQTT_USER=bridge BRIDGE_MQTT_PASSWORD=secret \
  INFLUX_TOKEN=token
checked=0
for example in "$ROOT"/config/*.yaml; do
  cp "$example" .
  name=$(basename "$example")
  if ! out=$("$sensegate" check -c "$name" 2>&1); then
    echo "$out" >&2
    fail "sensegate check -c $name (a copy of config/$name)"
  fi
  checked=$((checked + 1))
done
((checked > 0)) || fail "no example config under config/"
step "sensegate check: $checked example configs valid"

# 4. The demo without its extra: one line naming the extra, exit 2, no traceback.
set +e
out=$("$sensegate" demo --duration 5s 2>&1); code=$?
set -e
[ "$code" = 2 ] || { echo "$out" >&2; fail "sensegate demo without the extra exited $code, not 2"; }
[ "$(printf '%s\n' "$out" | wc -l)" = 1 ] && [[ $out == *"pip install 'sensegate[demo]'"* ]] ||
  { echo "$out" >&2; fail "sensegate demo without the extra did not name it in one line"; }
step "sensegate demo without the extra: $out"

# 5. With the extra: the whole simulated site, nothing lost.
pip_install "$wheel[demo]"
set +e
out=$("$sensegate" demo --duration 20 --no-live 2>"$work/demo.err"); code=$?
set -e
last=$(printf '%s\n' "$out" | tail -n 1)
if [ "$code" != 0 ] || ! [[ $last =~ ^demo:\ polled=([0-9]+)\ delivered=[0-9]+\ received=[0-9]+\ lost=0$ ]] ||
   [ "${BASH_REMATCH[1]}" = 0 ]; then
  printf '%s\n' "$out"; cat "$work/demo.err" >&2
  fail "sensegate demo --duration 20 (exit $code)"
fi
step "sensegate demo --duration 20: $last"
step "ok"
