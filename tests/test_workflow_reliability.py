"""What a user meets when a run is repeated with other settings, or fails: a rerun after a changed
setting gives a clean run's weights, a failing stage shows its one-line error on the console, a
failed rerun leaves no stale outputs, and a broken teacher config is one line naming the file.

Runs in the workflow runtime (.venv) only: it drives Snakemake on the end-to-end tests' tiny config
(tests/workflows.py, make_workdir) against a GLUE mirror served on 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import re
import subprocess

import numpy as np
import pytest
import yaml

pytest.importorskip("snakemake")

from conftest import TORCH_PYTHON  # noqa: E402
from workflows import make_workdir, override, planned, snakemake  # noqa: E402

from kdlib.backend import resolve_precision  # noqa: E402

pytestmark = pytest.mark.slow
KD = "results/sst2/kd_eval.json"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, mirror):
    work = make_workdir(tmp_path_factory, mirror)
    snakemake(work, KD)
    return work


def kd_spec(work, *configs) -> str:
    """The kd student's resolved settings, as the distill rule passes them (config files merged)."""
    from kdlib import config
    from kdlib.distill.spec import student_spec
    merged = {}
    for path in configs:
        merged = config.merge(merged, yaml.safe_load(path.read_text()))
    return json.dumps(student_spec(config.validate(merged), "kd"), sort_keys=True)


def test_a_changed_student_lr_retrains_that_student_like_a_clean_run(workdir, tmp_path):
    """students.kd.train.lr changed after a full run: only kd's jobs rerun, and its published
    weights equal those of the distill stage run from scratch with the new lr."""
    before = (workdir / "results/sst2/kd/model.safetensors").read_bytes()
    args = override(workdir, "kd_lr", {"students": {"kd": {"train": {"lr": 1.0e-3}}}})
    assert planned(workdir, KD, *args) == {"distill": 1, "evaluate_student": 1}
    out = snakemake(workdir, KD, *args)
    log = (workdir / "logs/sst2/distill_kd.log").read_text()
    assert "resuming" not in log, log[-2000:]
    after = (workdir / "results/sst2/kd/model.safetensors").read_bytes()
    assert after != before
    assert "kd (kd) on sst2: best validation accuracy" in out.stdout + out.stderr     # the summary line

    spec = kd_spec(workdir, workdir / "config.yaml", workdir / "kd_lr.yaml")
    clean = subprocess.run(
        [str(TORCH_PYTHON), "-m", "workflow_scripts.distill", "--task", "sst2", "--student", "kd",
         "--spec", spec, "--records", "data/ofrecord/sst2/bert16", "--teacher", "results/sst2/teacher",
         "--logits", "results/sst2/teacher_logits.npz", "--out", str(tmp_path / "kd"),
         "--work", str(tmp_path / "work"),
         "--selection", "validation", "--eval-batch-size", "128", "--backend", "torch",
         "--device", "cpu", "--precision", resolve_precision("auto", "torch", "cpu"), "--threads", "1"],
        cwd=workdir, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert (tmp_path / "kd" / "model.safetensors").read_bytes() == after
    assert not (workdir / "work/sst2/kd").exists()               # cleared once published


def test_a_failing_stage_shows_its_error_line_and_leaves_no_stale_outputs(workdir):
    """A teacher-logit cache of the wrong width (newer than the student, so kd reruns): the
    distill job fails, its one-line error is on the console, and results/sst2/kd/ holds nothing
    of the old run."""
    logits = workdir / "results/sst2/teacher_logits.npz"
    original, stat = logits.read_bytes(), logits.stat()
    try:
        with np.load(logits) as arrays:
            wide = {k: np.zeros((len(arrays[k]), 3), np.float32) for k in arrays.files}
        with open(logits, "wb") as fh:
            np.savez(fh, **wide)
        out = snakemake(workdir, KD, check=False)
        assert out.returncode != 0
        console = out.stdout + out.stderr
        assert "error: results/sst2/teacher_logits.npz: the train logits have shape (144, 3)" in console, \
            console[-3000:]
        assert "Traceback" not in console
        assert not [p.name for p in (workdir / "results/sst2/kd").glob("*")]
    finally:                                  # the cache as it was, and kd built again from it
        logits.write_bytes(original)
        os.utime(logits, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        snakemake(workdir, KD)


@pytest.mark.parametrize("broken, fragment", [
    (lambda cfg: {k: v for k, v in cfg.items() if k != "num_attention_heads"}, "lacks num_attention_heads"),
    (lambda cfg: {k: v for k, v in cfg.items() if k != "hidden_size"}, "lacks hidden_size"),
    (None, "not a readable JSON file"),
])
def test_a_broken_teacher_config_is_one_line_naming_it(tmp_path_factory, mirror, broken, fragment):
    work = make_workdir(tmp_path_factory, mirror)
    path = work / "tiny_bert" / "config.json"
    if broken is None:
        path.write_text('{"hidden_size": 32,')
    else:
        path.write_text(json.dumps(broken(json.loads(path.read_text()))))
    out = snakemake(work, "-n", KD, check=False)
    console = out.stdout + out.stderr
    assert out.returncode != 0 and "Traceback" not in console and "KeyError" not in console
    assert f"{path}: " in console and fragment in console, console[-2000:]



def test_how_often_the_resume_state_is_saved_reruns_nothing(workdir):
    """save_seconds says how a job runs, not what it makes: changing it plans nothing."""
    args = override(workdir, "save_often", {"teacher": {"train": {"save_seconds": 0}},
                                            "students_train": {"save_seconds": 0}})
    assert planned(workdir, KD, *args) == {}
    args = override(workdir, "lr_too", {"students_train": {"save_seconds": 0, "lr": 1.0e-3}})
    assert planned(workdir, KD, *args) == {"distill": 1, "evaluate_student": 1}


def test_adding_a_seed_plans_only_the_new_runs(workdir):
    """seeds: 2 adds run kd_seed1 (its seeds raised by 1); kd's own run is not redone."""
    args = override(workdir, "two_seeds", {"seeds": 2})
    assert planned(workdir, KD, *args) == {}
    assert planned(workdir, "results/sst2/kd_seed1_eval.json", *args) == \
        {"distill": 1, "evaluate_student": 1}
    text = snakemake(workdir, "-n", "-p", "results/sst2/kd_seed1_eval.json", *args).stdout
    spec = json.loads(re.search(r"--spec '([^']*)'", text).group(1))
    assert spec["train"]["seed"] == json.loads(kd_spec(workdir, workdir / "config.yaml"))["train"]["seed"] + 1


def test_jobs_side_by_side_give_the_results_of_jobs_in_turn(tmp_path_factory, mirror):
    """On the CPU every training and evaluation job computes with one thread (rules/common.smk,
    JOB_THREADS), so Snakemake runs as many side by side as it has cores, and neither the core
    count nor what runs beside a job changes what it makes: --cores 3 (the two students train
    together) and --cores 1 (one job at a time) publish the same bytes."""
    targets = [KD, "results/sst2/tinybert_eval.json"]
    side, turn = make_workdir(tmp_path_factory, mirror), make_workdir(tmp_path_factory, mirror)
    plan = snakemake(side, "-n", "-p", *targets).stdout
    commands = [line for line in plan.splitlines() if "workflow_scripts.distill" in line
                or "workflow_scripts.finetune_teacher" in line]
    assert len(commands) == 3 and all("--threads 1 " in c for c in commands), commands
    snakemake(side, *targets)                                   # --cores 4
    snakemake(turn, *targets, "--cores", "1")
    for name in ("teacher", "kd", "tinybert"):
        a = (side / f"results/sst2/{name}/model.safetensors").read_bytes()
        b = (turn / f"results/sst2/{name}/model.safetensors").read_bytes()
        assert a == b, name
    for target in targets:
        a, b = (yaml.safe_load((w / target).read_text()) for w in (side, turn))
        assert a["score"] == b["score"] and a["metrics"] == b["metrics"], target
