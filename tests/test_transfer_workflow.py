"""The workflow with transfer sets on a task of the user's own files: a kd student with unlabeled
text, a Distilled-BiLSTM with augmented text, a baseline without; a transfer set's change reruns
only the students that use it; an augment: tinybert set reads the pretrained folder.

Runs in the workflow runtime (.venv) only: it drives Snakemake.
"""
from __future__ import annotations

import csv
import json

import pandas as pd
import pytest

pytest.importorskip("snakemake")

from tinydata import ticket_text, write_tickets  # noqa: E402
from workflows import (  # noqa: E402
    BERT_STUDENT,
    LSTM_STUDENT,
    copy_workflow,
    override,
    planned,
    snakemake,
    write_config,
)

from kdlib.data import transfer  # noqa: E402

pytestmark = pytest.mark.slow


def dev_bodies(path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [row["body"] for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    import random

    work = copy_workflow(tmp_path_factory.mktemp("transfer"))
    own = work / "own"
    own.mkdir()
    write_tickets(own / "train.csv", 120, 1)
    write_tickets(own / "dev.csv", 40, 2)
    rng = random.Random(3)
    dev_texts = dev_bodies(own / "dev.csv")[:3]
    raw = [ticket_text(i % 5, rng) for i in range(150)] + dev_texts      # three dev texts slipped in
    (own / "raw.txt").write_text("\n".join(raw) + "\n", encoding="utf-8")
    write_config(work, tasks=["tickets"],
                 custom_tasks={"tickets": {"train": "own/train.csv", "dev": "own/dev.csv", "text_a": "body",
                                           "label": "category"}},
                 data={"lstm": {"max_length": 16}},
                 teacher={"train": {"patience": 0}},
                 students_train={"epochs": 1, "batch_size": 16, "patience": 0},     # whole budgets
                 transfer={"raw": {"unlabeled": "own/raw.txt", "max_examples": 100},
                           "aug": {"augment": "tang", "variants": 2}},
                 students={"kd": {"algorithm": "kd", "architecture": BERT_STUDENT, "transfer": "raw"},
                           "small_nokd": {"algorithm": "none", "architecture": BERT_STUDENT},
                           "distilled_lstm": {"algorithm": "distilled_lstm", "architecture": LSTM_STUDENT,
                                              "transfer": "aug"},
                           "lstm_nokd": {"algorithm": "none", "architecture": LSTM_STUDENT}})
    return work


def test_students_train_on_their_transfer_sets_and_a_change_reruns_only_them(work):
    snakemake(work)
    raw = (work / "data/transfer/tickets/raw.tsv").read_text().splitlines()
    assert raw[0] == "text_a" and len(raw) - 1 <= 100
    dev = {transfer.normalise(t) for t in dev_bodies(work / "own/dev.csv")}
    assert not dev & {transfer.normalise(t) for t in raw[1:]}
    log = (work / "logs/tickets/transfer_set_raw.log").read_text()
    assert "dropped" in log and "3 dev" in log, log
    meta = json.loads((work / "data/ofrecord/tickets/bert16+raw/meta.json").read_text())
    assert meta["transfer"] == {"name": "raw", "labelled": 108, "transfer": len(raw) - 1}  # 12 validation
    meta = json.loads((work / "data/ofrecord/tickets/lstm16+aug/meta.json").read_text())
    assert meta["transfer"]["labelled"] == 108 and meta["transfer"]["transfer"] > 108
    # each student trained on every row of its set: steps = ceil(rows / 16), one epoch; each
    # baseline (equal_steps) as many steps over its 108 labelled rows, as its summary says
    for student, rows, like in (("kd", 108 + len(raw) - 1, None),
                                ("distilled_lstm", meta["counts"]["train"], None),
                                ("small_nokd", 108 + len(raw) - 1, "kd"),
                                ("lstm_nokd", meta["counts"]["train"], "distilled_lstm")):
        summary = json.loads((work / f"results/tickets/{student}/train_summary.json").read_text())
        assert summary["steps"] == -(-rows // 16), (student, summary["steps"], rows)
        assert summary.get("matched_steps_of") == like
        assert summary["training_rows"] == (108 if like else rows)
    assert (work / "results/tickets/teacher_logits+raw.npz").is_file()
    # the report says what each row trained on: rows, transfer rows among them, steps
    report = pd.read_csv(work / "results/tickets/report.csv").set_index("model")
    assert report.loc["kd", "training rows"] == 108 + len(raw) - 1
    assert report.loc["kd", "of them transfer"] == len(raw) - 1
    assert report.loc["kd", "training steps"] == -(-(108 + len(raw) - 1) // 16)
    assert report.loc["small_nokd", "of them transfer"] == 0
    assert report.loc["small_nokd", "training steps"] == report.loc["kd", "training steps"]
    assert report.loc["teacher", "training rows"] == 108 and report.loc["teacher", "training steps"] == 42
    assert planned(work) == {}

    # the unlabeled set's cap changes: its set, records, logits, kd and kd's baseline (its steps
    # follow kd's); not the BiLSTMs
    assert planned(work, *override(work, "cap", {"transfer": {"raw": {"max_examples": 50}}})) == {
        "transfer_set": 1, "ofrecord_transfer": 1, "cache_transfer_logits": 1, "distill": 2,
        "evaluate_student": 2, "measure_speed": 1, "report": 1, "model_card": 5, "all": 1}
    dry = snakemake(work, "-n", *override(work, "cap", {"transfer": {"raw": {"max_examples": 50}}}))
    assert "student=kd" in dry.stdout and "student=small_nokd" in dry.stdout
    assert "student=distilled_lstm" not in dry.stdout and "student=lstm_nokd" not in dry.stdout
    # without equal_steps the baselines keep their own steps
    off = override(work, "off", {"equal_steps": False})
    assert planned(work, *off) == {"distill": 2, "evaluate_student": 2, "measure_speed": 1, "report": 1,
                                   "model_card": 5, "all": 1}        # every card shows the speeds
    # editing the unlabeled file does the same
    with open(work / "own/raw.txt", "a", encoding="utf-8") as fh:
        fh.write("a brand new ticket text\n")
    assert planned(work)["distill"] == 2                   # kd and its baseline


def test_a_tinybert_set_reads_the_pretrained_folder_in_the_training_runtime(work):
    """Only an augment: tinybert set has the pretrained folder's files as inputs, the backend's
    arguments and every core; it builds (tiny_bert has no masked-LM head: embedding neighbours)."""
    extra = override(work, "tinybert", {"transfer": {"tb": {"augment": "tinybert", "variants": 2}}})
    targets = ["data/transfer/tickets/tb.tsv", "data/transfer/tickets/aug.tsv"]
    dry = snakemake(work, "-n", "-p", "--forceall", *targets, *extra).stdout   # --configfile takes the rest
    jobs = {job.split("wildcards: task=tickets, transfer=")[1].split()[0]: job
            for job in dry.split("rule transfer_set:")[1:]}
    assert "tiny_bert/model.safetensors" in jobs["tb"] and "tiny_bert" not in jobs["aug"]
    assert "--pretrained" in jobs["tb"] and "--backend torch" in jobs["tb"] and "--threads 1" in jobs["tb"]
    assert "--pretrained" not in jobs["aug"] and "--threads 1" in jobs["aug"]
    snakemake(work, targets[0], *extra)
    log = (work / "logs/tickets/transfer_set_tb.log").read_text()
    assert "embedding neighbours of" in log and "transfer set tb:" in log
