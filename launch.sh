#!/usr/bin/env bash
# OTCXR-JAX launcher.
#
# Local modes (each creates ./.venv and installs the pinned requirements on first use):
#   bash launch.sh demo  [WORKDIR] [--config.FIELD=VALUE ...]   synthetic demo -> WORKDIR/report.md
#   bash launch.sh tests [PYTEST ARGS ...]                      the test suite
#   bash launch.sh run CONFIG [WORKDIR] [--config.FIELD=VALUE ...]  any experiment config
#   bash launch.sh setup [test]                                 only install
#
# Environment: OTCXR_VENV (default .venv), PYTHON (default python3), PYTEST_WORKERS (default 2).
set -euo pipefail
cd "$(dirname "$0")"

VENV="${OTCXR_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

setup() {  # setup [main|test]
  local kind="${1:-main}" req="requirements.txt"
  [[ "$kind" == test ]] && req="requirements-test.txt"
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "[launch] creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.installed-$kind" digest
  digest="$(cat requirements.txt "$req" | sha256sum | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$digest" ]]; then
    echo "[launch] installing $req into $VENV"
    "$VENV/bin/python" -m pip install --upgrade --quiet pip
    "$VENV/bin/python" -m pip install --quiet -r "$req"
    echo "$digest" > "$stamp"
  fi
}

cmd="${1:-help}"
shift || true
case "$cmd" in
  setup)
    setup "${1:-main}"
    ;;
  demo)
    setup main
    workdir="workdirs/demo"
    if [[ $# -gt 0 && "$1" != --* ]]; then workdir="$1"; shift; fi
    exec "$VENV/bin/python" -m otcxr_jax.main --config configs/demo.py --workdir "$workdir" "$@"
    ;;
  run)
    [[ $# -ge 1 ]] || { echo "usage: bash launch.sh run CONFIG [WORKDIR] [--config.FIELD=VALUE ...]" >&2; exit 2; }
    setup main
    config="$1"; shift
    args=(--config "$config")
    if [[ $# -gt 0 && "$1" != --* ]]; then args+=(--workdir "$1"); shift; fi
    exec "$VENV/bin/python" -m otcxr_jax.main "${args[@]}" "$@"
    ;;
  tests)
    setup test
    exec "$VENV/bin/python" -m pytest -q -n "${PYTEST_WORKERS:-2}" "$@"
    ;;
  help|-h|--help)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    echo "unknown command '$cmd'; try: bash launch.sh help" >&2
    exit 2
    ;;
esac
