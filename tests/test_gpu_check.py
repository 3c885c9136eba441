"""bench/gpu_check.sh, the GPU check prepared for a lent GPU machine, runs its whole path on the
CPU at tiny sizes: the synthetic task and BERT folder, the teacher, the logit cache and TinyBERT
in fp32 and bf16, and the summary it writes."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import HAS_TORCH, REPO, TORCH_PYTHON

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not HAS_TORCH, reason="the check runs in the torch runtime")]


def test_the_gpu_check_runs_on_the_cpu_at_tiny_sizes(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "DEVICE": "cpu", "PYTHON": str(TORCH_PYTHON)}
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--tiny"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    for precision in ("fp32", "bf16"):
        assert result[precision]["teacher_examples_per_s"] > 0
        assert result[precision]["tinybert_examples_per_s"] > 0
        assert (tmp_path / precision / "tinybert" / "model.safetensors").is_file()
    assert "bf16: teacher" in done.stdout
