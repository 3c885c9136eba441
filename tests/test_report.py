"""The metrics report (kdlib.evaluate.report and .plots, workflow_scripts/report.py,
rules/report.smk): baseline pairing, table rows and values, gain intervals and verdicts from the
predictions, side-by-side speed, several seeds, checkpoint selection (its columns, collapse
warnings and header), the training curves' panels, the Markdown/CSV/HTML/PNG outputs, one-line
errors, and the rule's planning.

The eval JSONs, predictions, speed JSON and training logs are made up here, so every expected
number is computed from them. Tests that draw the plots need matplotlib (only in .venv); the
others run in both runtimes.
"""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import HAS_SNAKEMAKE, REPO, error_lines

from kdlib import config
from kdlib.errors import DataError
from kdlib.evaluate import eval_json, plots, report, table
from workflow_scripts import report as report_script

TASK = "sst2"
N_DEV = 400
# name: (algorithm, model_type, layers, hidden, dev accuracy, parameters)
MODELS = {
    "teacher": ("teacher", "bert", 6, 384, 0.9125, 22_700_000),
    "kd": ("kd", "bert", 4, 312, 0.8800, 14_300_000),
    "bert_small_nokd": ("none", "bert", 4, 312, 0.8575, 14_300_000),
    "distilled_lstm": ("distilled_lstm", "bilstm", 1, 300, 0.8350, 3_200_000),
    "lstm_nokd": ("none", "bilstm", 1, 300, 0.8425, 3_200_000),
}
LATENCY = {"teacher": 8.0, "kd": 4.0, "bert_small_nokd": 4.1, "distilled_lstm": 1.0, "lstm_nokd": 1.05}
PAIRS = {"kd": "bert_small_nokd", "distilled_lstm": "lstm_nokd"}
EXPECTED_ORDER = ["teacher", "bert_small_nokd", "kd", "lstm_nokd", "distilled_lstm"]
GOLD = np.random.default_rng(99).integers(0, 2, N_DEV)


def eval_json_of(name: str, accuracy: float | None = None) -> dict:
    algorithm, model_type, layers, hidden, default, parameters = MODELS[name.split("_seed")[0]]
    accuracy = default if accuracy is None else accuracy
    return {"task": TASK, "model": name, "model_type": model_type, "algorithm": algorithm,
            "metric": "accuracy", "score": accuracy, "metrics": {"dev": {"accuracy": accuracy}},
            "parameters": parameters, "size_bytes": 4 * parameters + 12_345,
            "train_seconds": 10.0 * len(name), "backend": "torch", "device": "cpu",
            "precision": "bf16", "layers": layers, "hidden": hidden}


def selection_json(score: float, step: int = 15, mode: str = "validation", **changes) -> dict:
    """An eval JSON's ``selection``: a one-phase run that kept ``step`` and stopped early."""
    return {"mode": mode, "split": "dev" if mode == "dev" else "validation", "metric": "accuracy",
            "score": score, "step": step, "phase_step": step, "steps_allowed": 20, "steps_run": 18,
            "stopped_early": True, "patience": 3, "evaluations": 9, "collapsed": False, **changes}


def logits_with_accuracy(accuracy: float, seed: int) -> np.ndarray:
    """(N_DEV, 2) logits right on exactly ``accuracy`` of GOLD, the right examples drawn at random."""
    rng = np.random.default_rng(seed)
    right = np.zeros(N_DEV, bool)
    right[rng.permutation(N_DEV)[:round(accuracy * N_DEV)]] = True
    pred = np.where(right, GOLD, 1 - GOLD)
    logits = np.zeros((N_DEV, 2), np.float32)
    logits[np.arange(N_DEV), pred] = 3.0
    return logits


def speed_json(names) -> dict:
    rounds = 3
    return {"models": {n: {"latency_ms_batch1": LATENCY[n.split("_seed")[0]],
                           "throughput_batch32": 250 / LATENCY[n.split("_seed")[0]],
                           "latency_rounds": [LATENCY[n.split("_seed")[0]] * f for f in
                                              ((1.0, 1.02, 0.99) if n == "teacher" else (1.0, 0.98, 1.03))],
                           "throughput_rounds": [250 / LATENCY[n.split("_seed")[0]]] * rounds}
                       for n in names},
            "rounds": rounds, "latency_examples": 200, "throughput_examples": 64, "dev_examples": N_DEV,
            "threads": 2,
            "backend": "torch", "device": "cpu", "precision": "bf16"}


def train_log(n_steps: int = 20, column: str = "eval_score") -> pd.DataFrame:
    """A train_log.csv evaluated every 10 steps (0.60 at step 10, 0.70 at step 20); ``column``
    ``dev_score`` as in logs written before the rename."""
    steps = np.arange(1, n_steps + 1)
    return pd.DataFrame({"step": steps, "epoch": steps / n_steps, "lr": 1e-4,
                         "loss": 1.0 / steps, "examples_per_s": 100.0,
                         column: ["" if s % 10 else f"{0.5 + s / 100:.6f}" for s in steps]})


def inputs(seeds: int = 1):
    """(teacher, runs, predictions, speed) for the five models, ``seeds`` runs per student."""
    runs, predictions = {}, {"teacher": (logits_with_accuracy(MODELS["teacher"][4], 0), GOLD)}
    for i, name in enumerate(n for n in MODELS if n != "teacher"):
        for k in range(seeds):
            run = config.runs({"seeds": seeds}, name)[k]
            accuracy = MODELS[name][4] + 0.01 * k               # the runs differ
            runs[run] = eval_json_of(run, accuracy)
            predictions[run] = (logits_with_accuracy(accuracy, 10 * i + k + 1), GOLD)
    return eval_json_of("teacher"), runs, predictions, speed_json(MODELS)


@pytest.fixture
def files(tmp_path):
    """The script's input files: ``{"evals": {run: path}, "predictions": [...], "logs": [...],
    "speed": path}``; every eval JSON has a ``selection``, the teacher's log the older
    ``dev_score`` column."""
    teacher, runs, predictions, speed = inputs()
    evals, npz = {}, []
    for name, result in {"teacher": teacher, **runs}.items():
        result["selection"] = selection_json(result["score"] - 0.01)
        evals[name] = tmp_path / f"{name}_eval.json"
        evals[name].write_text(json.dumps(result))
        path = tmp_path / f"{name}_predictions.npz"
        eval_json.write_predictions(path, {"dev_logits": predictions[name][0],
                                           "dev_labels": predictions[name][1]})
        npz.append(path)
    logs = []
    for name in MODELS:
        (tmp_path / name).mkdir()
        train_log(column="dev_score" if name == "teacher" else "eval_score").to_csv(
            tmp_path / name / "train_log.csv", index=False)
        logs.append(tmp_path / name / "train_log.csv")
    (tmp_path / "speed.json").write_text(json.dumps(speed))
    return {"evals": evals, "predictions": npz, "logs": logs, "speed": tmp_path / "speed.json"}


def parse_markdown_table(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and body cells of the first Markdown table in ``text``."""
    lines = [line for line in text.splitlines() if line.startswith("|")]

    def cells(line):
        return [c.strip().replace(r"\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]

    assert all(re.fullmatch(r"-+:?", c) for c in cells(lines[1])), "second line is not the rule"
    return cells(lines[0]), [cells(line) for line in lines[2:]]


# ---- baselines ------------------------------------------------------------------------------------

def test_baselines_of_the_shipped_config():
    expected = {"kd": "bert_small_nokd", "tinybert": "bert_small_nokd",
                "bert_pkd": "bert_pkd_nokd", "theseus": "bert_pkd_nokd",
                "distilled_lstm": "lstm_nokd"}
    assert config.baselines(config.load("config.yaml")["students"]) == expected
    # The raw YAML, without the schema's defaults filled in, pairs the same way.
    raw = yaml.safe_load((REPO / "config.yaml").read_text())["students"]
    assert config.baselines(raw) == expected


def test_baselines_need_the_same_architecture():
    bert = {"model": "bert", "layers": 4, "hidden": 312, "heads": 12, "intermediate": 1200}
    students = {
        "kd": {"algorithm": "kd", "architecture": bert},
        "kd_wide": {"algorithm": "kd", "architecture": {**bert, "intermediate": 1536}},
        "kd_heads": {"algorithm": "kd", "architecture": {**bert, "heads": 4}},
        "kd_init": {"algorithm": "kd", "architecture": {**bert, "init": "teacher"}},
        "pkd_top": {"algorithm": "bert_pkd",
                    "architecture": {"model": "bert", "layers": 3, "init": "teacher",
                                     "init_layers": [2, 4, 6]}},
        "lstm": {"algorithm": "distilled_lstm", "architecture": {"model": "bilstm", "layers": 2}},
        "lstm_small": {"algorithm": "distilled_lstm",
                       "architecture": {"model": "bilstm", "embedding": 100}},
        "base": {"algorithm": "none", "architecture": bert},
        "base_again": {"algorithm": "none", "architecture": dict(bert)},
        "base_init": {"algorithm": "none", "architecture": {**bert, "init": "teacher"}},
        "base_pkd": {"algorithm": "none", "architecture": {"model": "bert", "layers": 3,
                                                          "init": "teacher"}},
        "base_lstm": {"algorithm": "none", "architecture": {"model": "bilstm"}},
    }
    assert config.baselines(students) == {
        "kd": "base",                  # the first matching baseline in config order
        "kd_init": "base_init",        # init is part of the architecture
        "pkd_top": "base_pkd",         # init_layers is not
        "lstm": "base_lstm",           # a BiLSTM has no layers setting
    }
    # teacher and pretrained layers are both copied layers: a teacher-initialised student is
    # measured against the baseline that starts from the pretrained folder's layers
    pretrained = {"model": "bert", "layers": 3, "init": "pretrained"}
    assert config.baselines({"pkd": students["pkd_top"], "base_random": {
        "algorithm": "none", "architecture": {"model": "bert", "layers": 3}},
        "base_pre": {"algorithm": "none", "architecture": pretrained}}) == {"pkd": "base_pre"}


# ---- the table ------------------------------------------------------------------------------------

def test_table_rows_gain_interval_verdict_and_speedup():
    teacher, runs, predictions, speed = inputs()
    frame = report.table(teacher, runs, PAIRS, predictions, speed, regression=False).set_index(table.NAME)
    assert list(frame.index) == EXPECTED_ORDER
    assert list(frame[table.ROLE]) == ["teacher", "baseline", "distilled", "baseline", "distilled"]
    assert list(frame[table.ARCHITECTURE]) == ["6L/384", "4L/312", "4L/312", "BiLSTM 300",
                                                "BiLSTM 300"]
    gain = table.gain_column("accuracy")
    for name in EXPECTED_ORDER:
        given = eval_json_of(name)
        row = frame.loc[name]
        assert row["dev accuracy"] == pytest.approx(100 * given["score"])
        assert row[table.RETAINED] == pytest.approx(100 * given["score"] / teacher["score"])
        assert row[table.PARAMETERS] == pytest.approx(given["parameters"] / 1e6)
        assert row[table.SIZE] == pytest.approx(given["size_bytes"] / 1e6)
        assert row[table.LATENCY] == LATENCY[name]
        # the speed-up is the teacher's latency over the model's, round by round
        ups = [t / m for t, m in zip(speed["models"]["teacher"]["latency_rounds"],
                                     speed["models"][name]["latency_rounds"])]
        assert row[table.SPEEDUP] == pytest.approx(float(np.median(ups)))
        assert (row[table.SPEEDUP + table.LOW], row[table.SPEEDUP + table.HIGH]) == \
            pytest.approx((min(ups), max(ups)))
        if name in PAIRS:
            base = eval_json_of(PAIRS[name])
            assert row[table.BASELINE] == PAIRS[name]
            assert row[gain] == pytest.approx(100 * (given["score"] - base["score"]))
            assert row[gain + table.LOW] < row[gain] < row[gain + table.HIGH]
            assert row[table.VERDICT] in ("better", "worse", "no clear difference")
            assert 0 < row[table.MCNEMAR] <= 1
        else:
            assert row[table.BASELINE] == "" and pd.isna(row[gain])
    assert frame.loc["teacher", table.SPEEDUP] == 1.0
    # +2.25 points on 400 examples with independent errors is within noise; so is -0.75
    assert frame.loc["kd", table.VERDICT] == "no clear difference"
    cells = report.format_table(frame.reset_index()).set_index(table.NAME)
    assert re.fullmatch(r"\+2\.25 \[-?\+?\d+\.\d\d, \+\d+\.\d\d\]", cells.loc["kd", gain])
    assert cells.loc["distilled_lstm", gain].startswith("-0.75 [")
    assert re.fullmatch(r"2\.00 \(1\.9\d-2\.0\d\)", cells.loc["kd", table.SPEEDUP])


def test_a_clear_gain_is_called_better_and_a_clear_loss_worse():
    teacher, runs, predictions, speed = inputs()
    predictions["kd"] = (logits_with_accuracy(0.97, 5), GOLD)            # +11 points
    runs["kd"] = eval_json_of("kd", 0.97)
    predictions["distilled_lstm"] = (logits_with_accuracy(0.70, 6), GOLD)  # -14 points
    runs["distilled_lstm"] = eval_json_of("distilled_lstm", 0.70)
    frame = report.table(teacher, runs, PAIRS, predictions, speed, False).set_index(table.NAME)
    assert frame.loc["kd", table.VERDICT] == "better"
    assert frame.loc["distilled_lstm", table.VERDICT] == "worse"
    assert frame.loc["kd", table.MCNEMAR] < 1e-6


def test_with_two_seeds_rows_are_means_with_ranges():
    teacher, runs, predictions, speed = inputs(seeds=2)
    assert "kd_seed1" in runs
    frame = report.table(teacher, runs, PAIRS, predictions, speed, False).set_index(table.NAME)
    assert list(frame.index) == EXPECTED_ORDER                    # one row per student, not per run
    kd = frame.loc["kd"]
    assert kd[table.SEEDS] == 2
    assert kd["dev accuracy"] == pytest.approx(100 * (0.88 + 0.89) / 2)
    assert (kd["dev accuracy" + table.LOW], kd["dev accuracy" + table.HIGH]) == pytest.approx((88, 89))
    gain = table.gain_column("accuracy")
    assert kd[gain] == pytest.approx(100 * ((0.88 - 0.8575) + (0.89 - 0.8675)) / 2)
    assert kd[gain + table.LOW] < kd[gain] < kd[gain + table.HIGH]
    cells = report.format_table(frame.reset_index()).set_index(table.NAME)
    assert cells.loc["kd", "dev accuracy"] == "88.50 (88.00-89.00)"
    # a student whose baseline has fewer runs cannot be paired
    del runs["bert_small_nokd_seed1"], predictions["bert_small_nokd_seed1"]
    with pytest.raises(DataError, match="same seeds"):
        report.table(teacher, runs, PAIRS, predictions, speed, False)


def test_every_metric_of_the_first_split_gets_a_gain():
    teacher, runs, predictions, speed = inputs()
    for result in [teacher, *runs.values()]:
        acc = result["score"]
        result["metrics"] = {"dev": {"f1": acc, "accuracy": acc}}
        result["metric"] = "f1"
    frame = report.table(teacher, runs, PAIRS, predictions, speed, False).set_index(table.NAME)
    for metric in ("f1", "accuracy"):
        assert table.gain_column(metric) in frame.columns
    assert report.primary_column(teacher) == "dev f1"


def test_markdown_table_parses_back_into_the_same_cells():
    teacher, runs, predictions, speed = inputs()
    frame = report.table(teacher, runs, PAIRS, predictions, speed, False)
    note = report.notes(teacher, speed, frame)
    text = report.markdown(TASK, frame, note, "accuracy_vs_speedup.png", "training_curves.png", "accuracy")
    header, rows = parse_markdown_table(text)
    cells = report.format_table(frame)
    assert header == list(cells.columns)
    assert rows == cells.values.tolist()
    assert [r[0] for r in rows] == EXPECTED_ORDER
    assert "(accuracy_vs_speedup.png)" in text and "(training_curves.png)" in text
    assert "side by side" in note and "200 dev examples" in note and "10,000 resamples" in note


def test_markdown_escapes_pipes():
    frame = pd.DataFrame({table.NAME: ["a|b"], table.SPEEDUP: [2.0]})
    header, rows = parse_markdown_table(report.markdown_table(frame))
    assert rows == [["a|b", "2.00"]]


# ---- checkpoint selection -------------------------------------------------------------------------

VALIDATION = "validation accuracy (selection)"


def test_selection_columns_hold_each_models_selection_score_steps_and_budget():
    teacher, runs, predictions, speed = inputs(seeds=2)
    teacher["selection"] = selection_json(0.93, step=40, steps_allowed=60, steps_run=60,
                                          stopped_early=False)
    for i, result in enumerate(runs.values()):
        result["selection"] = selection_json(result["score"] + 0.01, step=100 + i, steps_allowed=300)
        result["train_steps"] = 200 + i
    frame = report.table(teacher, runs, PAIRS, predictions, speed, False)
    assert table.selection_column(teacher["selection"]) == VALIDATION
    columns = list(frame.columns)       # right after the metric columns, then the warning
    assert columns[columns.index("dev accuracy" + table.HIGH) + 1:][:2] == [VALIDATION, table.WARNING]
    assert columns[columns.index(table.STEPS) - 1:][:3] == [table.SELECTED_STEP, table.STEPS,
                                                              table.STEPS_ALLOWED]
    frame = frame.set_index(table.NAME)
    assert frame.loc["teacher", VALIDATION] == pytest.approx(93)
    kd, first = frame.loc["kd"], list(runs).index("kd")     # kd's runs: 0.88 and 0.89 on dev
    assert kd[VALIDATION] == pytest.approx(100 * ((0.88 + 0.01) + (0.89 + 0.01)) / 2)
    assert (kd[table.SELECTED_STEP], kd[table.STEPS], kd[table.STEPS_ALLOWED]) == \
        (100 + first, 200 + first, 300)                     # the first run's
    assert list(frame[table.WARNING]) == [""] * len(EXPECTED_ORDER)
    cells = report.format_table(frame.reset_index()).set_index(table.NAME)
    assert cells.loc["kd", VALIDATION] == "89.50"
    assert cells.loc["kd", table.SELECTED_STEP] == str(100 + first)
    assert cells.loc["teacher", table.STEPS_ALLOWED] == "60"


def test_a_collapsed_run_is_flagged_in_the_table_and_the_notes():
    teacher, runs, predictions, speed = inputs(seeds=3)
    for run, result in runs.items():
        collapsed = run in ("kd", "kd_seed2") or run.startswith("lstm_nokd")
        result["selection"] = selection_json(result["score"], collapsed=collapsed)
    frame = report.table(teacher, runs, PAIRS, predictions, speed, False)
    assert dict(zip(frame[table.NAME], frame[table.WARNING])) == {
        "teacher": "", "bert_small_nokd": "", "kd": "one class (seeds 0, 2)",
        "lstm_nokd": "one class (every seed)", "distilled_lstm": ""}
    assert frame[table.SELECTED_STEP].dtype == float and frame[VALIDATION].dtype == float
    note = report.notes(teacher, speed, frame)
    assert note.startswith("Warning: the published checkpoint of kd (seeds 0, 2), lstm_nokd (every "
                           "seed) predicts one class")
    assert report.collapsed_runs(runs) == ["kd", "kd_seed2", "lstm_nokd", "lstm_nokd_seed1",
                                           "lstm_nokd_seed2"]
    collapsed = {"selection": {"collapsed": True}}
    assert report.collapse_warning({"kd": {}, "kd_seed1": collapsed}) == "one class (seed 1)"
    assert report.collapse_warning({"kd": collapsed}) == "one class"
    assert report.collapse_warning({"kd": {}}) == ""


@pytest.mark.parametrize("mode, words", [
    ("dev", "so the dev scores are optimistic"),
    ("validation", "selected on the validation split"),
    ("last", "The last checkpoint of each training run was kept"),
])
def test_the_header_says_which_split_selected_the_checkpoints(mode, words):
    teacher, runs, predictions, speed = inputs()
    for result in [teacher, *runs.values()]:
        result["selection"] = selection_json(result["score"], mode=mode)
    frame = report.table(teacher, runs, PAIRS, predictions, speed, False)
    header = report.selection_header(teacher, runs)
    text = report.markdown(TASK, frame, report.notes(teacher, speed, frame), "a.png", "c.png",
                           "accuracy", header)
    title, _, line = text.splitlines()[:3]
    assert title == f"# kdflow report: {TASK}" and line == f"**{header}**" and words in header
    assert ("optimistic" in header) == (mode == "dev")
    split = "dev" if mode == "dev" else "validation"
    assert [c for c in frame.columns if c.endswith(table.SELECTION)] == [f"{split} accuracy (selection)"]
    assert f"`{split} accuracy (selection)` is the published checkpoint's score" in \
        report.notes(teacher, speed, frame)
    page = report.html_page(TASK, frame, "notes", b"", b"", "accuracy", header)
    assert f"<p><strong>{header.replace('`', '')}</strong></p>" in page


def test_models_selected_in_different_ways_are_called_mixed():
    teacher, runs, predictions, speed = inputs()
    for name, result in runs.items():
        result["selection"] = selection_json(0.5, mode="dev" if name == "kd" else "validation")
    header = report.selection_header(teacher, runs)       # the teacher's eval JSON has none
    assert header == ("Checkpoints were selected in mixed ways: not recorded for teacher; on dev for "
                      "kd; on validation for bert_small_nokd, distilled_lstm, lstm_nokd. The dev "
                      "scores of the models selected on dev are optimistic.")
    frame = report.table(teacher, runs, PAIRS, predictions, speed, False).set_index(table.NAME)
    dev = "dev accuracy (selection)"
    assert pd.isna(frame.loc["kd", VALIDATION]) and frame.loc["kd", dev] == pytest.approx(50)
    assert pd.isna(frame.loc["lstm_nokd", dev]) and frame.loc["lstm_nokd", VALIDATION] == pytest.approx(50)


def test_eval_jsons_without_selection_leave_its_cells_empty():
    teacher, runs, predictions, speed = inputs()
    frame = report.table(teacher, runs, PAIRS, predictions, speed, False)
    assert not [c for c in frame.columns if c.endswith(table.SELECTION)]
    assert frame[[table.SELECTED_STEP, table.STEPS_ALLOWED]].isna().all().all()
    cells = report.format_table(frame)
    for column in (table.SELECTED_STEP, table.STEPS_ALLOWED, table.WARNING):
        assert set(cells[column]) == {""}
    assert "not recorded" in report.selection_header(teacher, runs)
    note = report.notes(teacher, speed, frame)
    assert "(selection)" not in note and "one class" not in note
    # only the teacher's eval JSON is older: its cells alone are empty
    for result in runs.values():
        result["selection"] = selection_json(result["score"], step=7)
    frame = report.table(teacher, runs, PAIRS, predictions, speed, False).set_index(table.NAME)
    assert pd.isna(frame.loc["teacher", VALIDATION]) and pd.isna(frame.loc["teacher", table.SELECTED_STEP])
    assert frame.loc["kd", VALIDATION] == pytest.approx(88) and frame.loc["kd", table.SELECTED_STEP] == 7


# ---- the training curves --------------------------------------------------------------------------

def test_the_grid_of_panels_is_at_most_three_wide():
    assert [plots.grid_shape(n) for n in (1, 2, 3, 4, 7, 9)] == \
        [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3), (3, 3)]


def test_a_panel_title_notes_an_early_stop_and_a_collapse():
    assert plots.panel_title("kd", {}) == "kd"
    stopped = selection_json(0.9, steps_run=900, steps_allowed=1092)
    assert plots.panel_title("kd", stopped) == "kd – stopped early at 900/1092"
    collapsed = {**stopped, "stopped_early": False, "collapsed": True}
    assert plots.panel_title("kd", collapsed) == "kd – one class"


def test_eval_points_read_eval_score_or_the_older_dev_score(tmp_path):
    for column in ("eval_score", "dev_score"):
        path = tmp_path / column / "train_log.csv"
        path.parent.mkdir()
        train_log(column=column).to_csv(path, index=False)
        [log] = report_script.read_logs([str(path)]).values()       # as the stage reads it
        for frame in (log, train_log(column=column)):
            steps, scores = plots.eval_points(frame)
            assert list(steps) == [10, 20] and list(scores) == pytest.approx([0.6, 0.7])
    steps, scores = plots.eval_points(train_log().drop(columns="eval_score"))
    assert len(steps) == len(scores) == 0


def test_training_curves_draw_one_panel_per_model(monkeypatch):
    pytest.importorskip("matplotlib")
    logs = {name: train_log(column="dev_score" if name == "teacher" else "eval_score") for name in MODELS}
    logs["kd"]["loss"] *= 30                       # a large loss has its own axis
    selections = {"kd": selection_json(0.6, step=10, steps_run=12)}
    figures = []
    monkeypatch.setattr(plots, "_png", lambda fig, plt: figures.append(fig) or b"")
    plots.training_curves(logs, selections, TASK, "accuracy")
    [fig] = figures
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["teacher", "kd – stopped early at 12/20",
                                                 "bert_small_nokd", "distilled_lstm", "lstm_nokd"]
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2 * len(MODELS)     # each with its twin
    kd = panels[1]
    [loss, marker] = kd.get_lines()                 # the moving average and the selected step
    assert loss.get_ydata()[0] == pytest.approx(30) and list(marker.get_xdata()) == [10, 10]
    [twin] = [ax for ax in fig.axes if ax is not kd and ax.bbox.bounds == kd.bbox.bounds]
    scores, star = twin.get_lines()
    assert list(scores.get_xdata()) == [10, 20] and list(scores.get_ydata()) == pytest.approx([60, 70])
    assert star.get_marker() == "*" and (star.get_xdata()[0], star.get_ydata()[0]) == (10, pytest.approx(60))
    assert twin.get_ylabel() == "validation accuracy (x100)"
    teacher = panels[0]                             # an older log, no selection: no marker
    assert len(teacher.get_lines()) == 1
    plots._pyplot().close(fig)


def test_the_curves_png_grows_with_the_number_of_models():
    plt = pytest.importorskip("matplotlib.pyplot")
    sizes = []
    for names in (["teacher"], list(MODELS)):
        png = plots.training_curves({n: train_log() for n in names}, {}, TASK, "accuracy")
        sizes.append(plt.imread(io.BytesIO(png)).shape[:2])
    (h1, w1), (h5, w5) = sizes
    assert (h5, w5) == (2 * h1, 3 * w1)             # 2 rows of 3 panels


# ---- the stage script -----------------------------------------------------------------------------

def run_script(files, out_dir, *extra) -> int:
    evals = files["evals"]
    argv = ["--task", TASK, "--records", "data/ofrecord/sst2/bert128", "--teacher", str(evals["teacher"]),
            "--students", *[str(evals[n]) for n in evals if n != "teacher"],
            "--predictions", *map(str, files["predictions"]), "--logs", *map(str, files["logs"]),
            "--speed", str(files["speed"]), "--baselines", json.dumps(PAIRS), *extra]
    if out_dir is not None:
        argv += ["--out-dir", str(out_dir)]
    return report_script.main(argv)


def test_script_writes_markdown_csv_html_and_both_plots(files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    assert run_script(files, out) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" not in err and "collapsed" not in err
    images = {name: (out / name).read_bytes() for name in ("accuracy_vs_speedup.png", "training_curves.png")}
    for png in images.values():
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000

    csv = pd.read_csv(out / "report.csv", keep_default_na=False, na_values=[""])
    assert list(csv[table.NAME]) == EXPECTED_ORDER
    gains = dict(zip(csv[table.NAME], csv[table.gain_column("accuracy")]))
    assert gains["kd"] == pytest.approx(100 * (MODELS["kd"][4] - MODELS["bert_small_nokd"][4]))
    assert {table.gain_column("accuracy") + table.LOW, table.VERDICT, table.MCNEMAR} <= set(csv.columns)

    md = (out / "report.md").read_text()
    header, rows = parse_markdown_table(md)
    assert [r[0] for r in rows] == EXPECTED_ORDER
    assert md.startswith(f"# kdflow report: {TASK}")

    page = (out / "report.html").read_text()
    assert "<table" in page and "<title>kdflow report: sst2</title>" in page
    for cell in ("bert_small_nokd", "BiLSTM 300", "no clear difference", "91.25"):
        assert f"<td>{cell}</td>" in page
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(e) for e in embedded] == list(images.values())
    assert not list(out.glob(".*.tmp"))            # no temporary file left behind


def test_the_summary_line_counts_collapsed_runs(files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    kd = json.loads(files["evals"]["kd"].read_text())
    kd["selection"]["collapsed"] = True
    files["evals"]["kd"].write_text(json.dumps(kd))
    assert run_script(files, tmp_path / "out") == 0
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("report of")]
    assert "worse); 1 collapsed to one class: kd; wrote" in line
    csv = pd.read_csv(tmp_path / "out" / "report.csv", keep_default_na=False, na_values=[""])
    assert dict(zip(csv[table.NAME], csv[table.WARNING].fillna(""))) == {
        name: "one class" if name == "kd" else "" for name in EXPECTED_ORDER}
    for column in (VALIDATION, table.SELECTED_STEP, table.STEPS_ALLOWED):
        assert csv[column].dtype == float or csv[column].dtype == int, column
    assert dict(zip(csv[table.NAME], csv[VALIDATION]))["kd"] == pytest.approx(100 * MODELS["kd"][4] - 1)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Warning: the published checkpoint of kd predicts one class" in md
    assert "**Checkpoints were selected on the validation split" in md


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is not None,
                    reason="matplotlib is installed here")
def test_without_matplotlib_the_script_says_so(files, tmp_path, capsys):
    assert run_script(files, tmp_path / "out") == 1
    [line] = error_lines(capsys)
    assert "matplotlib" in line and ".venv" in line
    assert not (tmp_path / "out").exists()


def test_script_takes_explicit_output_paths(files, tmp_path):
    pytest.importorskip("matplotlib")
    paths = {key: tmp_path / "x" / f"r.{key}" for key in ("md", "csv", "html", "png", "curves")}
    extra = [a for key, path in paths.items() for a in (f"--{key}", str(path))]
    assert run_script(files, None, *extra) == 0
    assert all(path.exists() for path in paths.values())
    assert "(r.png)" in paths["md"].read_text() and "(r.curves)" in paths["md"].read_text()


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a readable JSON file"),
    ('["a list"]', "not an eval JSON"),
    ('{"model": "kd", "metric": "accuracy"}', "lacks score"),
    (None, "file not found"),
])
def test_a_bad_eval_json_is_one_error_line_naming_it(files, tmp_path, capsys, content, message):
    kd = files["evals"]["kd"]
    if content is None:
        kd.unlink()
    else:
        kd.write_text(content)
    out = tmp_path / "out"
    assert run_script(files, out) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and str(kd) in lines[0] and message in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("broken", ["predictions", "speed"])
def test_bad_predictions_or_speed_are_one_error_line(files, tmp_path, capsys, broken):
    path = files["predictions"][2] if broken == "predictions" else files["speed"]
    path.write_text('{"models": {}}')
    assert run_script(files, tmp_path / "out") == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and str(path) in lines[0], lines


def test_an_eval_json_of_another_task_is_refused(files, tmp_path, capsys):
    other = eval_json_of("lstm_nokd")
    other["task"] = "rte"
    files["evals"]["lstm_nokd"].write_text(json.dumps(other))
    assert run_script(files, tmp_path / "out") == 1
    [line] = error_lines(capsys)
    assert str(files["evals"]["lstm_nokd"]) in line and "'rte'" in line


def test_baselines_must_name_given_students(files, tmp_path, capsys):
    assert run_script(files, tmp_path / "out", "--baselines", '{"kd": "tinybert"}') == 1
    [line] = error_lines(capsys)
    assert "--baselines" in line and "tinybert" in line


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="the plot needs matplotlib")
def test_the_report_of_what_evaluate_model_and_measure_speed_wrote(B, tmp_path):
    """The contract between the stages: the eval JSONs and predictions written by evaluate_model
    and the speed JSON of measure_speed for a teacher, an ``algorithm: none`` student and a kd
    student, paired as the config pairs them, give the report's baseline, gain and speed-up."""
    import tinydata

    from kdlib.models import checkpoint
    from kdlib.models.bert import BertConfig, build_bert
    from kdlib.models.weights import load_state_numpy, state_dict_numpy
    from workflow_scripts import evaluate_model, measure_speed

    records = tinydata.write_records(tmp_path / "records", n_train=8, n_dev=40, seed=2)
    students_config = {
        "small_nokd": {"algorithm": "none", "architecture": {"layers": 1, "hidden": 16, "heads": 4}},
        "kd": {"algorithm": "kd", "architecture": {"layers": 1, "hidden": 16, "heads": 4}}}
    runtime = ["--eval-batch-size", "16", "--backend", B.name, "--device", "cpu", "--precision",
               "fp32", "--threads", "0"]
    paths, npz = {}, []
    for seed, (name, algorithm, layers) in enumerate([("teacher", None, 2), ("small_nokd", "none", 1),
                                                     ("kd", "kd", 1)]):
        model = build_bert(B, BertConfig(**{**tinydata.TINY_BERT, "num_hidden_layers": layers}))
        rng = np.random.default_rng(seed)    # large random weights (from numpy: the same in either
        load_state_numpy(model, {  # backend), whose predictions differ between seeds
            k: v if "LayerNorm" in k else (rng.standard_normal(v.shape) * 0.3).astype(np.float32)
            for k, v in state_dict_numpy(model).items()})
        meta = {"task": TASK} if algorithm is None else {"task": TASK, "algorithm": algorithm,
                                                         "student": name}
        checkpoint.save_checkpoint(model, tmp_path / name, meta)
        train_log().to_csv(tmp_path / name / "train_log.csv", index=False)
        paths[name] = tmp_path / f"{name}_eval.json"
        npz.append(tmp_path / f"{name}_predictions.npz")
        argv = ["--task", TASK, "--name", name, "--model", str(tmp_path / name), "--records",
                str(records), "--out", str(paths[name]), "--predictions", str(npz[-1]), *runtime]
        if name != "teacher":
            argv += ["--reference", str(paths["teacher"])]
        assert evaluate_model.main(argv) == 0
    assert measure_speed.main(["--task", TASK, "--models", *[str(tmp_path / n) for n in paths],
                               "--records", *[str(records)] * 3, "--rounds", "2",
                               "--latency-examples", "10", "--throughput-examples", "32",
                               "--out", str(tmp_path / "speed.json"),
                               *runtime]) == 0
    pairs = config.baselines(students_config)
    assert pairs == {"kd": "small_nokd"}
    out = tmp_path / "out"
    assert report_script.main(["--task", TASK, "--records", str(records), "--teacher", str(paths["teacher"]),
                               "--students",
                               str(paths["small_nokd"]), str(paths["kd"]),
                               "--predictions", *map(str, npz),
                               "--logs", *[str(tmp_path / n / "train_log.csv") for n in paths],
                               "--speed", str(tmp_path / "speed.json"), "--baselines", json.dumps(pairs),
                               "--out-dir", str(out)]) == 0
    frame = pd.read_csv(out / "report.csv").set_index(table.NAME)
    scores = {name: json.loads(paths[name].read_text())["score"] for name in paths}
    assert scores["kd"] != scores["small_nokd"]
    assert frame.loc["kd", table.BASELINE] == "small_nokd"
    gain = table.gain_column("accuracy")
    assert frame.loc["kd", gain] == pytest.approx(100 * (scores["kd"] - scores["small_nokd"]), abs=1e-3)
    assert frame.loc["small_nokd", table.ROLE] == "baseline" and frame.loc["kd", table.ROLE] == "distilled"
    assert frame.loc["kd", "dev accuracy"] == pytest.approx(100 * scores["kd"], abs=1e-3)
    speed = json.loads((tmp_path / "speed.json").read_text())
    assert speed["latency_examples"] == 10 and len(speed["models"]["kd"]["latency_rounds"]) == 2
    assert frame.loc["kd", table.LATENCY] == pytest.approx(speed["models"]["kd"]["latency_ms_batch1"])


# ---- the rule -------------------------------------------------------------------------------------

@pytest.mark.skipif(not HAS_SNAKEMAKE, reason="snakemake is only in the workflow runtime")
def test_the_workflow_plans_the_report(tmp_path):
    """A dry run of a copy of the workflow plans one report job per task, fed by every student's
    eval JSON and predictions, the speed stage and the training logs, with the baseline pairing
    as a parameter."""
    for item in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / item, tmp_path / item)
    for folder in ("rules", "report"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", f"results/{TASK}/report.md"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    plan = result.stdout + result.stderr
    command = next(line for line in plan.splitlines() if "workflow_scripts.report" in line)
    students = list(config.load(tmp_path / "config.yaml")["students"])
    for name in students:
        assert f"results/{TASK}/{name}_eval.json" in command
        assert f"results/{TASK}/{name}_predictions.npz" in command
        assert f"results/{TASK}/{name}/train_log.csv" in command
    assert f"--speed results/{TASK}/speed.json" in command
    assert "rule measure_speed:" in plan
    assert f"--png results/{TASK}/accuracy_vs_speedup.png" in command
    assert f"--curves results/{TASK}/training_curves.png" in command


# ---- speed figures that know when they are unreliable (given rounds, never measured ones) ---------

def test_sound_speed_figures_carry_no_speed_warning():
    teacher, runs, predictions, speed = inputs()
    frame = report.table(teacher, runs, PAIRS, predictions, speed, False)
    assert list(frame[table.SPEED_WARNING]) == [""] * len(EXPECTED_ORDER)
    assert "unreliable:" not in report.notes(teacher, speed, frame)


def test_rounds_that_disagree_mark_the_models_speed_figures_and_the_notes_say_why():
    teacher, runs, predictions, speed = inputs()
    speed["models"]["kd"]["latency_rounds"] = [4.0, 12.0, 4.0]            # a burst caught one round
    frame = report.table(teacher, runs, PAIRS, predictions, speed, False)
    assert dict(zip(frame[table.NAME], frame[table.SPEED_WARNING])) == {
        "teacher": "", "bert_small_nokd": "", "kd": "unreliable: latency, speed-up", "lstm_nokd": "",
        "distilled_lstm": ""}
    note = report.notes(teacher, speed, frame)
    assert note.startswith("Warning: the speed figures named in `speed warning` are unreliable: the "
                           "rounds of kd latency 200% disagree by more than 25%")
    # the teacher's latency makes every speed-up unreliable
    speed["models"]["teacher"]["throughput_rounds"] = [100.0, 100.0, 300.0]
    speed["models"]["teacher"]["latency_rounds"] = [8.0, 8.0, 16.0]
    frame = report.table(teacher, runs, PAIRS, predictions, speed, False).set_index(table.NAME)
    assert frame.loc["teacher", table.SPEED_WARNING] == "unreliable: latency, throughput"
    assert frame.loc["lstm_nokd", table.SPEED_WARNING] == "unreliable: speed-up"


def test_a_busy_machine_marks_every_speed_figure_and_the_report_says_so(files, tmp_path):
    pytest.importorskip("matplotlib")
    speed = json.loads(files["speed"].read_text())
    speed["machine"] = {"usable_cpus": 2, "load_average_start": [2.1, 1.5, 0.9],
                        "load_average_end": [2.6, 1.7, 1.0], "others_cpu_share": 0.45, "busy": True,
                        "no_spin_waiting": True}
    files["speed"].write_text(json.dumps(speed))
    assert run_script(files, tmp_path / "out") == 0
    csv = pd.read_csv(tmp_path / "out" / "report.csv", keep_default_na=False)
    assert dict(zip(csv[table.NAME], csv[table.SPEED_WARNING])) == {
        name: "unreliable: latency, throughput" + ("" if name == "teacher" else ", speed-up")
        for name in EXPECTED_ORDER}
    assert csv[table.LATENCY].dtype == float                       # the figures themselves stay
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Warning: the speed figures named in `speed warning` are unreliable: other processes used " \
           "45% of the 2 usable CPUs' time while the rounds ran" in md
    assert "the 1-minute load average was 2.10 at the start and 2.60 at the end" in md
    header, rows = parse_markdown_table(md)
    assert rows[EXPECTED_ORDER.index("kd")][header.index(table.SPEED_WARNING)] == \
        "unreliable: latency, throughput, speed-up"
