"""Distil to a budget, end to end on a tiny custom task: a search of four candidates whose size
target drops two before training trains only the other two, picks the better on validation, and
scores only the pick and its baseline on dev; a rerun with the space widened trains only the new
feasible candidate (and the baseline of a new pick).

Runs in the workflow runtime (.venv) only: it drives Snakemake.
"""
from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("snakemake")

from tinydata import write_tickets  # noqa: E402
from workflows import BERT_STUDENT, copy_workflow, override, snakemake, write_config  # noqa: E402

pytestmark = pytest.mark.slow

# hidden 16: ~0.03-0.05 MB of weights; hidden 128: ~0.5 MB. The bound sits between, far from both.
TARGET = {"metric": "size_mb", "bound": 0.15, "runtime": "kdlib"}
SPACE = {"recipes": ["kd"], "bert": {"layers": [1, 2], "hidden": [16, 128], "intermediate": [32], "heads": [4]}}


def trained(text: str) -> list[str]:
    """The students rule distill trained in a Snakemake run's output."""
    return re.findall(r"rule distill:.*?wildcards: task=\w+, student=(\w+)", text, flags=re.S)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("search"))
    write_tickets(work / "train.csv", 300, 1)
    write_tickets(work / "dev.csv", 30, 2)
    write_config(work, tasks=["tickets"], custom_tasks={
        "tickets": {"train": "train.csv", "dev": "dev.csv", "text_a": "body", "label": "category"}},
        teacher={"train": {"epochs": 3}}, students_train={"epochs": 4},
        students={"kd": {"algorithm": "kd", "architecture": BERT_STUDENT},
                  "base": {"algorithm": "none", "architecture": BERT_STUDENT}},
        search={"target": TARGET, "space": SPACE})
    out = snakemake(work, "search")
    return work, out.stdout + out.stderr


def test_the_search_trains_only_feasible_candidates_and_scores_only_the_pick_on_dev(searched):
    work, log = searched
    results = work / "results/tickets"
    feasibility = json.loads((results / "search/feasibility.json").read_text())
    candidates = feasibility["candidates"]
    assert len(candidates) == 4
    small = {n for n in candidates if "_h16_" in n}
    assert {n for n, c in candidates.items() if c["feasible"]} == small
    assert all(c["size_mb"] > TARGET["bound"] for n, c in candidates.items() if n not in small)
    chosen = json.loads((results / "search/pick.json").read_text())
    assert sorted(trained(log)) == sorted([*small, chosen["baseline"]])
    for name in candidates:                          # the dropped never trained
        assert (results / name / "model.safetensors").exists() == (name in small)
    scores = {n: json.loads((results / n / "train_summary.json").read_text())["selection"]["score"] for n in small}
    assert chosen["pick"] == max(sorted(small), key=lambda n: scores[n])
    assert chosen["baseline"] == chosen["pick"] + "_nokd"
    evaluated = {p.name.removesuffix("_eval.json") for p in results.glob("search_*_eval.json")}
    assert evaluated == {chosen["pick"], chosen["baseline"]}            # dev: the pick and its baseline alone
    summary = json.loads((results / "search.json").read_text())
    assert summary["pick"] == chosen["pick"] and summary["after_training"]["meets"]
    assert {row["candidate"] for row in summary["candidates"]} == set(candidates)
    assert sorted(row["model"] for row in summary["dev"]) == sorted(["teacher", chosen["pick"], chosen["baseline"]])
    md = (results / "search.md").read_text()
    assert chosen["pick"] in md and "dropped" in md
    assert (results / "search.png").read_bytes()[:4] == b"\x89PNG"
    card = (results / chosen["pick"] / "README.md").read_text()                  # shipped: its card,
    assert "results/tickets/search/speed.json" in card                           # (the search's speed)
    assert (results / "export" / chosen["pick"] / "onnx" / "model.int8.onnx").exists()   # ONNX and HF
    assert (results / "export" / chosen["pick"] / "hf" / "config.json").exists()
    assert (results / "search/deployment.md").exists()


def test_widening_the_space_trains_only_the_new_feasible_candidate(searched):
    work, _ = searched
    results = work / "results/tickets"
    before = json.loads((results / "search/pick.json").read_text())
    wider = override(work, "wider", {"search": {"space": {"bert": {"layers": [1, 2, 3]}}}})
    out = snakemake(work, "search", *wider)
    after = json.loads((results / "search/pick.json").read_text())
    new = "search_kd_l3_h16_i32_a4"
    expected = [new] + ([after["baseline"]] if after["pick"] != before["pick"] else [])
    assert sorted(trained(out.stdout + out.stderr)) == sorted(expected)
    assert not (results / "search_kd_l3_h128_i32_a4").exists()
