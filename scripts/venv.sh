# Sourced by scripts/demo.sh and scripts/test.sh: `ensure_venv DIR EXTRA [CONSTRAINTS]`
# creates the venv DIR when it is missing and (re)installs the checkout into it, editable,
# with EXTRA, only when the venv is new or pyproject.toml (or CONSTRAINTS) changed since the
# last successful install. A stamp file in the venv holds the hash of what was installed, so
# a second run starts at once and works offline.

ensure_venv() {
  local venv=$1 extra=$2 constraints=${3:-}
  local python=${PYTHON:-python3}
  if ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c 'import ensurepip' 2>/dev/null; then
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq python3-venv >/dev/null
  fi
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  local stamp="$venv/.sensegate-$extra.sha256" want
  want=$(cat pyproject.toml ${constraints:+"$constraints"} | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  # pip and setuptools are chatty (build warnings); keep their output unless it failed.
  local log="$venv/pip-install.log"
  if ! { "$venv/bin/python" -m pip install -q --upgrade pip &&
         "$venv/bin/python" -m pip install -q ${constraints:+-c "$constraints"} -e ".[$extra]"; } \
      >"$log" 2>&1; then
    cat "$log" >&2
    echo "installing sensegate into $venv failed (log above, also in $log)" >&2
    return 1
  fi
  echo "$want" >"$stamp"
}
