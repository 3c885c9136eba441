"""Faults a user meets through Snakemake: a path from the config that would run a command or split
in the shell, and a model that a failed rerun removed while the results made from it stayed.

Runs in the workflow runtime (.venv) only: it drives Snakemake.
"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("snakemake")

from tinydata import write_tickets  # noqa: E402
from workflows import BERT_STUDENT, copy_workflow, override, planned, snakemake, write_config  # noqa: E402

pytestmark = pytest.mark.slow

HOSTILE = "x$(touch PWNED)y `touch PWNED2` dir"      # a command substitution, backticks and spaces


def test_a_hostile_or_spaced_path_in_the_config_reaches_the_shell_as_one_quoted_word(tmp_path):
    (tmp_path / "work").mkdir()
    work = copy_workflow(tmp_path / "work")
    own = work / HOSTILE / "sub"
    own.mkdir(parents=True)
    write_tickets(own / "train.csv", 60, 1)
    write_tickets(own / "dev.csv", 20, 2)
    write_config(work, tasks=["tickets"], custom_tasks={
        "tickets": {"train": f"{HOSTILE}/sub/train.csv", "dev": f"{HOSTILE}/sub/dev.csv",
                    "text_a": "body", "label": "category"}},
        students={"kd": {"algorithm": "kd", "architecture": BERT_STUDENT}},
        transfer={"raw": {"unlabeled": str(own / "train.csv")}})
    snakemake(work, "data/ofrecord/tickets/bert16/meta.json", "data/ofrecord/tickets/lstm32/meta.json")
    meta = json.loads((work / "data/ofrecord/tickets/bert16/meta.json").read_text())
    assert meta["counts"]["dev"] == 20
    assert not list(work.rglob("PWNED*")) and not list(tmp_path.rglob("PWNED*"))


def test_a_removed_model_is_trained_again_and_a_longer_trained_teacher_retrains_no_baseline(tmp_path):
    """A complete run, then the student's weights gone (a rerun killed after Snakemake removed its
    incomplete outputs): the default target trains it again and remakes what was made from it,
    though its eval JSON and the report still exist."""
    (tmp_path / "work").mkdir()
    work = copy_workflow(tmp_path / "work")
    write_tickets(work / "train.csv", 60, 1)
    write_tickets(work / "dev.csv", 20, 2)
    write_config(work, tasks=["tickets"], custom_tasks={
        "tickets": {"train": "train.csv", "dev": "dev.csv", "text_a": "body", "label": "category"}},
        teacher={"train": {"epochs": 1}}, students_train={"epochs": 1},
        students={"kd": {"algorithm": "kd", "architecture": BERT_STUDENT},
                  "base": {"algorithm": "none", "architecture": BERT_STUDENT}})
    snakemake(work)
    assert planned(work) == {}
    # a teacher trained longer retrains the student it teaches, not the baseline, which follows
    # only its widths (known before it trains)
    longer = override(work, "longer", {"teacher": {"train": {"epochs": 2}}})
    assert planned(work, *longer).get("distill") == 1
    (work / "results/tickets/kd/model.safetensors").unlink()
    again = planned(work)
    assert again.get("distill") == 1 and again.get("evaluate_student") == 1 and again.get("report") == 1, again
    assert "finetune_teacher" not in again
