#!/usr/bin/env bash
# The GPU check of BENCHMARKS.md ("Mixed precision on a GPU"), prepared for the lent GPU machine
# (torch, no Snakemake, no OneFlow, no network): the device tool runs `bash bench/gpu_check.sh`,
# with $OUT set. On a CPU: DEVICE=cpu bash bench/gpu_check.sh --tiny (what tests/test_gpu_check.py
# runs). Under 8 minutes on an H200: 300 steps each of the teacher and TinyBERT, in fp32 and bf16.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpu_check}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python="${PYTHON:-python3}"
"$python" bench/gpu_check.py --device "${DEVICE:-cuda}" --out "$out" "$@"
if "$python" -c "import pytest" 2>/dev/null; then
  "$python" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_precision.py 2>&1 | tail -n 30
else
  echo "gpu_check: pytest is not installed here; the CUDA tests were not run"
fi
