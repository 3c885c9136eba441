"""The profiles plan the workflow (the launcher in the rules, Slurm and local planning), and the
CPUs a stage uses (kdlib.backend.usable_cpus, applied by workflow_scripts._cli.backend_from).

The unit tests run in both runtimes; the profile tests need Snakemake and the Slurm executor plugin
(`make setup-cluster`, which `make test` runs).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess

import pytest

from conftest import HAS_SNAKEMAKE, ONEFLOW_PYTHON, REPO, TORCH_PYTHON
from kdlib import backend
from workflow_scripts import _cli


# ---- the CPUs a stage may use --------------------------------------------------------------------

@pytest.fixture
def cpus(monkeypatch):
    """Set the process's CPU affinity (``set(n)``) and SLURM_CPUS_PER_TASK (``set(n, slurm)``) as
    the stage would see them, on a node whose os.cpu_count() is 64."""
    monkeypatch.setattr(os, "cpu_count", lambda: 64)

    def set_(affinity: int, slurm: str | None = None):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
        if slurm is None:
            monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
        else:
            monkeypatch.setenv("SLURM_CPUS_PER_TASK", slurm)
    return set_


def test_usable_cpus_are_the_affinity_capped_by_slurm_cpus_per_task(cpus):
    cpus(3)
    assert backend.usable_cpus() == 3                 # the affinity, not the node's 64
    cpus(16, "4")
    assert backend.usable_cpus() == 4                 # a 4-CPU Slurm job on an unconfined node
    cpus(2, "8")
    assert backend.usable_cpus() == 2


@pytest.mark.parametrize("garbage", ["", "abc", "0", "-4", "4(x2)", "2.5"])
def test_usable_cpus_ignore_a_slurm_cpus_per_task_that_is_not_a_count(cpus, garbage):
    cpus(6, garbage)
    assert backend.usable_cpus() == 6


def test_usable_cpus_without_affinity_fall_back_to_the_cpu_count(cpus, monkeypatch):
    cpus(1, "12")
    monkeypatch.delattr(os, "sched_getaffinity")
    assert backend.usable_cpus() == 12                # min(os.cpu_count() = 64, 12)


class _Recorder:
    def __init__(self):
        self.threads = []

    def set_num_threads(self, n):
        self.threads.append(n)


def test_backend_from_applies_the_requested_threads_up_to_the_usable_cpus(cpus, monkeypatch):
    recorder = _Recorder()
    monkeypatch.setattr(backend, "load", lambda name, device: recorder)
    parser = argparse.ArgumentParser()
    _cli.add_runtime_args(parser)
    for requested, affinity, slurm, applied in [
        (16, 4, None, 4),      # --threads 16 in a job bound to 4 CPUs
        (16, 64, "4", 4),      # ... or given 4 by Slurm on an unconfined node
        (2, 8, "4", 2),        # fewer than the job may use: as asked
    ]:
        cpus(affinity, slurm)
        assert _cli.backend_from(parser.parse_args(["--threads", str(requested)])) is recorder
        assert recorder.threads.pop() == applied, (requested, affinity, slurm)
    _cli.backend_from(parser.parse_args(["--threads", "0"]))     # 0: the library's default
    assert recorder.threads == []


# ---- profiles: the launcher in the rules, Slurm and local planning ------------------------------

def dry_run(work, *args) -> str:
    cmd = [str(REPO / ".venv" / "bin" / "snakemake"), "-n", "-p", "-s", str(work / "Snakefile"),
           "--directory", str(work), *args]
    out = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def job(text: str, rule: str) -> str:
    """The dry run's block for the first job of ``rule`` (its resources and shell command)."""
    return text.split(f"rule {rule}:")[1].split("\n\n")[0]


def test_profiles_plan_the_users_target_with_the_launcher(tmp_path):
    if not HAS_SNAKEMAKE:
        pytest.skip("needs Snakemake (the workflow runtime, .venv)")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed: run 'make setup-cluster'")
    import yaml

    for item in ("Snakefile", "rules", "report"):
        src = REPO / item
        if src.exists():
            (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["runtimes"] = {"torch": str(TORCH_PYTHON), "oneflow": str(ONEFLOW_PYTHON)}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/sst2/tinybert_eval.json"
    slurm = ["--profile", str(REPO / "profiles" / "slurm")]

    text = dry_run(tmp_path, *slurm, "--config", "backend=torch", "--", target)
    for rule in ("download_glue", "finetune_teacher", "cache_teacher_logits", "distill", "evaluate_student"):
        assert f"rule {rule}:" in text
    teacher = job(text, "finetune_teacher")
    assert f"Shell command: {TORCH_PYTHON} -m workflow_scripts.finetune_teacher --task sst2" in teacher   # as ever
    assert "gpu=1" in teacher and "slurm_partition=gpu" in teacher and "runtime=720" in teacher

    text = dry_run(tmp_path, *slurm, "--config", "backend=torch", "processes=4", "--", target)
    for rule, script in (("finetune_teacher", "finetune_teacher"), ("distill", "distill")):
        block = job(text, rule)
        assert (f"Shell command: {TORCH_PYTHON} -m torch.distributed.run --standalone --nproc_per_node 4"
                f" -m workflow_scripts.{script} ") in block
        assert "gpu=4" in block and "cpus_per_task=16" in block
    assert "gpu=1" in job(text, "evaluate_student")

    if ONEFLOW_PYTHON.exists():
        text = dry_run(tmp_path, *slurm, "--config", "backend=oneflow", "processes=2", "--", target)
        assert (f"Shell command: {ONEFLOW_PYTHON} -m oneflow.distributed.launch --nproc_per_node 2"
                " --master_port $((20000 + RANDOM % 20000)) -m workflow_scripts.finetune_teacher ") \
            in job(text, "finetune_teacher")

    text = dry_run(tmp_path, "--profile", str(REPO / "profiles" / "local"), "--config", "backend=torch",
                   "--", target)
    assert "rule distill:" in text
