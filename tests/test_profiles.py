"""The CPUs a stage uses (kdlib.backend.usable_cpus, applied by workflow_scripts._cli.backend_from).

The unit tests run in both runtimes.
"""
from __future__ import annotations

import argparse
import os

import pytest

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
