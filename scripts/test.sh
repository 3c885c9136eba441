#!/usr/bin/env bash
# Runs the whole test suite in each runtime that exists. Tests that need the other runtime start it
# themselves as a subprocess (backend parity, OneFlow's native reader).
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
echo "=== tests in .venv (torch backend, snakemake) ==="
.venv/bin/python -m pytest -q "$@" || status=1
if [[ -x .venv-oneflow/bin/python ]]; then
  echo "=== tests in .venv-oneflow (oneflow backend) ==="
  .venv-oneflow/bin/python -m pytest -q "$@" || status=1
elif [[ "${CI:-}" == "true" ]]; then
  # In CI a missing OneFlow runtime is a failure: every OneFlow and cross-backend test would
  # otherwise vanish behind a green run.
  echo "=== error: .venv-oneflow is missing, so the OneFlow tests cannot run (CI=true); see 'make setup' ===" >&2
  status=1
else
  echo "=== .venv-oneflow missing: OneFlow tests not run (see 'make setup') ==="
fi
exit $status
