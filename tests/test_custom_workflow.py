"""The whole workflow on tasks of the user's own files: a five-class CSV task (relative paths, a
test file) and a pair task in JSON Lines (absolute paths), each with a teacher, one student and a
report; editing one task's dev file plans only that task's jobs.

Runs in the workflow runtime (.venv) only: it drives Snakemake.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("snakemake")

from tinydata import CLASSES, write_pairs, write_tickets  # noqa: E402
from workflows import BERT_STUDENT, copy_workflow, override, planned, snakemake, write_config  # noqa: E402

pytestmark = pytest.mark.slow
TICKETS_CHAIN = {"ofrecord_bert": 1, "finetune_teacher": 1, "evaluate_teacher": 1,
                 "cache_teacher_logits": 1, "distill": 1, "evaluate_student": 1, "measure_speed": 1,
                 "report": 1, "model_card": 2, "all": 1}          # the cards of teacher and kd


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("custom"))
    own = work / "own"                     # the tickets by relative path, the pairs by absolute path
    own.mkdir()
    write_tickets(own / "tickets_train.csv", 150, 1)
    write_tickets(own / "tickets_dev.csv", 50, 2)
    write_tickets(own / "tickets_test.csv", 9, 3, with_label=False)
    pairs = tmp_path_factory.mktemp("pairs")
    write_pairs(pairs / "train.jsonl", 120, 4)
    write_pairs(pairs / "dev.jsonl", 40, 5)
    write_config(work, tasks=["tickets", "pairs"], custom_tasks={
        "tickets": {"train": "own/tickets_train.csv", "dev": "own/tickets_dev.csv",
                    "test": "own/tickets_test.csv", "text_a": "body", "label": "category"},
        "pairs": {"train": str(pairs / "train.jsonl"), "dev": str(pairs / "dev.jsonl"),
                  "text_a": "q1", "text_b": "q2", "label": "duplicate", "max_length": 12},
    }, students={"kd": {"algorithm": "kd", "architecture": BERT_STUDENT}})
    return work


def test_custom_tasks_run_end_to_end_and_rerun_only_their_own_jobs(work):
    chain = planned(work)
    assert chain == {k: (1 if k == "all" else 2 * n) for k, n in TICKETS_CHAIN.items()}
    snakemake(work)

    # tickets: five classes read from the training file, the metrics of a multi-class task
    teacher = json.loads((work / "results/tickets/teacher_eval.json").read_text())
    assert teacher["metric"] == "accuracy" and set(teacher["metrics"]["dev"]) == {"accuracy", "macro_f1"}
    meta = json.loads((work / "data/ofrecord/tickets/bert16/meta.json").read_text())
    assert meta["task_definition"]["labels"] == sorted(CLASSES) and meta["num_labels"] == 5
    with np.load(work / "results/tickets/teacher_predictions.npz") as npz:
        assert npz["dev_logits"].shape == (50, 5) and npz["test_logits"].shape == (9, 5)
    assert teacher["score"] > 0.2 + 0.1, teacher        # learned something over a 5-class guess
    report = (work / "results/tickets/report.md").read_text()
    assert "macro_f1" in report or "macro-F1" in report, report
    assert re.search(r"\| kd \|", report)

    # pairs: two segments, its own length, F1 not offered by default (accuracy, macro_f1)
    meta = json.loads((work / "data/ofrecord/pairs/bert12/meta.json").read_text())
    assert meta["task_definition"]["labels"] == ["0", "1"]
    assert meta["counts"] == {"train": 108, "validation": 12, "dev": 40}
    assert (work / "results/pairs/report.md").is_file()
    assert planned(work) == {}

    # editing the tickets' dev file plans the tickets' jobs after its records, and no job of pairs
    dev = work / "own/tickets_dev.csv"
    dev.write_text(dev.read_text() + "999,w1 w2 w3,bug\n")
    assert planned(work) == TICKETS_CHAIN
    dry = snakemake(work, "-n")
    assert "task=pairs" not in dry.stdout + dry.stderr
    # and a change to the tickets' definition reruns its records as well
    dev.write_text("\n".join(dev.read_text().splitlines()[:-1]) + "\n")
    changed = override(work, "changed", {"custom_tasks": {"tickets": {"labels": CLASSES}}})
    assert planned(work, *changed) == TICKETS_CHAIN
