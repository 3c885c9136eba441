"""The metrics report (kdlib.evaluate.report, workflow_scripts/report.py, rules/report.smk): baseline pairing,
table rows and values, the Markdown/CSV/HTML/PNG outputs, one-line errors, and the rule's planning.

The eval JSONs are made up here, so every expected number is computed from them. Tests that draw
the plot need matplotlib (only in .venv); the others run in both runtimes.
"""
from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import HAS_SNAKEMAKE, REPO, error_lines

from kdlib import config
from kdlib.evaluate import report
from kdlib.models.weights import load_state_numpy, state_dict_numpy
from workflow_scripts import report as report_script

TASK = "sst2"
# name: (algorithm, model_type, layers, hidden, dev accuracy, latency ms, parameters)
MODELS = {
    "teacher": ("teacher", "bert", 6, 384, 0.9125, 60.0, 22_700_000),
    "kd": ("kd", "bert", 4, 312, 0.8800, 12.0, 14_300_000),
    "bert_small_nokd": ("none", "bert", 4, 312, 0.8575, 12.5, 14_300_000),
    "distilled_lstm": ("distilled_lstm", "bilstm", 1, 300, 0.8350, 1.6, 3_200_000),
    "lstm_nokd": ("none", "bilstm", 1, 300, 0.8425, 1.5, 3_200_000),
}
PAIRS = {"kd": "bert_small_nokd", "distilled_lstm": "lstm_nokd"}
EXPECTED_ORDER = ["teacher", "bert_small_nokd", "kd", "lstm_nokd", "distilled_lstm"]


def eval_json(name: str) -> dict:
    algorithm, model_type, layers, hidden, accuracy, latency, parameters = MODELS[name]
    teacher_latency, teacher_score = MODELS["teacher"][5], MODELS["teacher"][4]
    out = {
        "task": TASK, "model": name, "model_type": model_type, "algorithm": algorithm,
        "metric": "accuracy", "score": accuracy, "metrics": {"dev": {"accuracy": accuracy}},
        "parameters": parameters, "size_bytes": 4 * parameters + 12_345,
        "latency_ms_batch1": latency, "throughput_batch32": 32_000 / (8 * latency),
        "train_seconds": 10.0 * len(name), "backend": "torch", "device": "cpu",
        "layers": layers, "hidden": hidden,
    }
    if name != "teacher":
        out.update(speedup=teacher_latency / latency, retained=accuracy / teacher_score)
    return out


@pytest.fixture
def evals(tmp_path):
    """The five eval JSONs on disk: ``{name: path}``."""
    paths = {}
    for name in MODELS:
        paths[name] = tmp_path / f"{name}_eval.json"
        paths[name].write_text(json.dumps(eval_json(name), indent=2))
    return paths


def students() -> dict[str, dict]:
    return {name: eval_json(name) for name in MODELS if name != "teacher"}


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


# ---- the table ------------------------------------------------------------------------------------

def test_table_rows_gain_retained_and_speedup():
    teacher = eval_json("teacher")
    frame = report.table(teacher, students(), PAIRS).set_index(report.NAME)
    assert list(frame.index) == EXPECTED_ORDER
    assert list(frame[report.ROLE]) == ["teacher", "baseline", "distilled", "baseline", "distilled"]
    assert list(frame[report.ARCHITECTURE]) == ["6L/384", "4L/312", "4L/312", "BiLSTM 300",
                                                "BiLSTM 300"]
    for name in EXPECTED_ORDER:
        given = eval_json(name)
        row = frame.loc[name]
        assert row["dev accuracy"] == pytest.approx(100 * given["score"])
        assert row[report.RETAINED] == pytest.approx(100 * given["score"] / teacher["score"])
        assert row[report.SPEEDUP] == pytest.approx(teacher["latency_ms_batch1"]
                                                    / given["latency_ms_batch1"])
        assert row[report.PARAMETERS] == pytest.approx(given["parameters"] / 1e6)
        assert row[report.SIZE] == pytest.approx(given["size_bytes"] / 1e6)
        assert row[report.LATENCY] == given["latency_ms_batch1"]
        assert row[report.THROUGHPUT] == pytest.approx(given["throughput_batch32"])
        assert row[report.TRAIN] == given["train_seconds"]
        if name in PAIRS:
            base = eval_json(PAIRS[name])
            assert row[report.BASELINE] == PAIRS[name]
            assert row[report.GAIN] == pytest.approx(100 * (given["score"] - base["score"]))
            assert row[report.RETAINED] == pytest.approx(100 * given["retained"])
            assert row[report.SPEEDUP] == pytest.approx(given["speedup"])
        else:
            assert row[report.BASELINE] == "" and pd.isna(row[report.GAIN])
    assert frame.loc["teacher", report.SPEEDUP] == 1.0
    # One gain is positive, one negative: signs are shown.
    cells = report.format_table(frame.reset_index()).set_index(report.NAME)
    assert cells.loc["kd", report.GAIN] == "+2.25"
    assert cells.loc["distilled_lstm", report.GAIN] == "-0.75"


def test_a_student_without_a_baseline_stays_alone():
    pairs = {"kd": "bert_small_nokd"}            # distilled_lstm's baseline not given
    frame = report.table(eval_json("teacher"), students(), pairs)
    assert list(frame[report.NAME]) == ["teacher", "bert_small_nokd", "kd", "distilled_lstm",
                                        "lstm_nokd"]
    assert pd.isna(frame.set_index(report.NAME).loc["distilled_lstm", report.GAIN])


def test_every_metric_of_every_dev_split_gets_a_column():
    def mnli(name, matched, mismatched):
        out = eval_json(name)
        out.update(task="mnli", score=matched,
                   metrics={"dev_matched": {"accuracy": matched},
                            "dev_mismatched": {"accuracy": mismatched}})
        return out

    frame = report.table(mnli("teacher", 0.84, 0.85),
                         {"kd": mnli("kd", 0.80, 0.815),
                          "bert_small_nokd": mnli("bert_small_nokd", 0.78, 0.79)},
                         {"kd": "bert_small_nokd"}).set_index(report.NAME)
    assert frame.loc["kd", "dev_matched accuracy"] == pytest.approx(80.0)
    assert frame.loc["kd", "dev_mismatched accuracy"] == pytest.approx(81.5)
    assert frame.loc["kd", report.GAIN] == pytest.approx(2.0)          # on dev_matched
    assert report.primary_column(mnli("teacher", 0.84, 0.85)) == "dev_matched accuracy"


def test_markdown_table_parses_back_into_the_same_cells():
    frame = report.table(eval_json("teacher"), students(), PAIRS)
    text = report.markdown(TASK, frame, eval_json("teacher"), "accuracy_vs_speedup.png")
    header, rows = parse_markdown_table(text)
    cells = report.format_table(frame)
    assert header == list(cells.columns)
    assert rows == cells.values.tolist()
    assert [r[0] for r in rows] == EXPECTED_ORDER
    assert rows[2][header.index(report.GAIN)] == "+2.25"
    assert "![" in text and "(accuracy_vs_speedup.png)" in text


def test_markdown_escapes_pipes():
    frame = pd.DataFrame({report.NAME: ["a|b"], report.SPEEDUP: [2.0]})
    header, rows = parse_markdown_table(report.markdown_table(frame))
    assert rows == [["a|b", "2.00"]]


# ---- the stage script -----------------------------------------------------------------------------

def run_script(evals, out_dir, *extra) -> int:
    argv = ["--task", TASK, "--teacher", str(evals["teacher"]),
            "--students", str(evals["kd"]), str(evals["bert_small_nokd"]),
            str(evals["distilled_lstm"]), str(evals["lstm_nokd"]),
            "--baselines", json.dumps(PAIRS), *extra]
    if out_dir is not None:
        argv += ["--out-dir", str(out_dir)]
    return report_script.main(argv)


def test_script_writes_markdown_csv_html_and_png(evals, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    assert run_script(evals, out) == 0
    assert error_lines(capsys) == []
    png = (out / "accuracy_vs_speedup.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000

    csv = pd.read_csv(out / "report.csv", keep_default_na=False, na_values=[""])
    assert list(csv[report.NAME]) == EXPECTED_ORDER
    gains = dict(zip(csv[report.NAME], csv[report.GAIN]))
    assert gains["kd"] == pytest.approx(100 * (MODELS["kd"][4] - MODELS["bert_small_nokd"][4]))
    assert gains["distilled_lstm"] == pytest.approx(
        100 * (MODELS["distilled_lstm"][4] - MODELS["lstm_nokd"][4]))

    md = (out / "report.md").read_text()
    header, rows = parse_markdown_table(md)
    assert [r[0] for r in rows] == EXPECTED_ORDER
    assert md.startswith(f"# kdflow report: {TASK}")

    page = (out / "report.html").read_text()
    assert "<table" in page and "<title>kdflow report: sst2</title>" in page
    for cell in ("bert_small_nokd", "BiLSTM 300", "+2.25", "-0.75", "91.25"):
        assert f"<td>{cell}</td>" in page
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert embedded and base64.b64decode(embedded.group(1)) == png
    assert not list(out.glob(".*.tmp"))            # no temporary file left behind


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is not None,
                    reason="matplotlib is installed here")
def test_without_matplotlib_the_script_says_so(evals, tmp_path, capsys):
    assert run_script(evals, tmp_path / "out") == 1
    [line] = error_lines(capsys)
    assert "matplotlib" in line and ".venv" in line
    assert not (tmp_path / "out").exists()


def test_script_takes_explicit_output_paths(evals, tmp_path):
    pytest.importorskip("matplotlib")
    paths = {key: tmp_path / "x" / f"r.{key}" for key in ("md", "csv", "html", "png")}
    extra = [a for key, path in paths.items() for a in (f"--{key}", str(path))]
    assert run_script(evals, None, *extra) == 0
    assert all(path.exists() for path in paths.values())
    assert "(r.png)" in paths["md"].read_text()


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a readable JSON file"),
    ('["a list"]', "not an eval JSON"),
    ('{"model": "kd", "metric": "accuracy"}', "lacks score"),
    (None, "file not found"),
])
def test_a_bad_eval_json_is_one_error_line_naming_it(evals, tmp_path, capsys, content, message):
    if content is None:
        evals["kd"].unlink()
    else:
        evals["kd"].write_text(content)
    out = tmp_path / "out"
    assert run_script(evals, out) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and str(evals["kd"]) in lines[0] and message in lines[0]
    assert not out.exists()


def test_an_eval_json_of_another_task_is_refused(evals, tmp_path, capsys):
    other = eval_json("lstm_nokd")
    other["task"] = "rte"
    evals["lstm_nokd"].write_text(json.dumps(other))
    assert run_script(evals, tmp_path / "out") == 1
    [line] = error_lines(capsys)
    assert str(evals["lstm_nokd"]) in line and "'rte'" in line


def test_baselines_must_name_given_students(evals, tmp_path, capsys):
    assert run_script(evals, tmp_path / "out", "--baselines", '{"kd": "tinybert"}') == 1
    [line] = error_lines(capsys)
    assert "--baselines" in line and "tinybert" in line


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="the plot needs matplotlib")
def test_the_report_of_eval_jsons_that_evaluate_model_wrote(B, tmp_path):
    """The contract between the two stages: eval JSONs written by evaluate_model for a teacher, an
    ``algorithm: none`` student and a kd student, paired as the config pairs them, give the
    report's baseline and gain."""
    import numpy as np
    import tinydata

    from kdlib.models import checkpoint
    from kdlib.models.bert import BertConfig, build_bert
    from workflow_scripts import evaluate_model

    records = tinydata.write_records(tmp_path / "records", n_train=8, n_dev=40, seed=2)
    students_config = {
        "small_nokd": {"algorithm": "none", "architecture": {"layers": 1, "hidden": 16, "heads": 4}},
        "kd": {"algorithm": "kd", "architecture": {"layers": 1, "hidden": 16, "heads": 4}}}
    paths = {}
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
        paths[name] = tmp_path / f"{name}_eval.json"
        argv = ["--task", TASK, "--name", name, "--model", str(tmp_path / name), "--records",
                str(records), "--out", str(paths[name]), "--eval-batch-size", "16", "--backend",
                B.name, "--device", "cpu", "--precision", "fp32", "--threads", "0"]
        if name != "teacher":
            argv += ["--reference", str(paths["teacher"])]
        assert evaluate_model.main(argv) == 0
    pairs = config.baselines(students_config)
    assert pairs == {"kd": "small_nokd"}
    out = tmp_path / "out"
    assert report_script.main(["--task", TASK, "--teacher", str(paths["teacher"]), "--students",
                               str(paths["small_nokd"]), str(paths["kd"]), "--baselines",
                               json.dumps(pairs), "--out-dir", str(out)]) == 0
    frame = pd.read_csv(out / "report.csv").set_index(report.NAME)
    scores = {name: json.loads(paths[name].read_text())["score"] for name in paths}
    assert scores["kd"] != scores["small_nokd"]
    assert frame.loc["kd", report.BASELINE] == "small_nokd"
    assert frame.loc["kd", report.GAIN] == pytest.approx(100 * (scores["kd"] - scores["small_nokd"]),
                                                         abs=1e-3)
    assert frame.loc["small_nokd", report.ROLE] == "baseline" and frame.loc["kd", report.ROLE] == "distilled"
    assert frame.loc["kd", "dev accuracy"] == pytest.approx(100 * scores["kd"], abs=1e-3)


# ---- the rule -------------------------------------------------------------------------------------

@pytest.mark.skipif(not HAS_SNAKEMAKE, reason="snakemake is only in the workflow runtime")
def test_the_workflow_plans_the_report(tmp_path):
    """A dry run of a copy of the workflow with rules/report.smk included plans one report job per
    task, fed by every student's eval JSON, with the baseline pairing as a parameter."""
    for item in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / item, tmp_path / item)
    for folder in ("rules", "report"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    snakefile = tmp_path / "Snakefile"
    text = snakefile.read_text()
    if 'include: "rules/report.smk"' not in text:
        text = text.replace('include: "rules/evaluate.smk"\n',
                            'include: "rules/evaluate.smk"\ninclude: "rules/report.smk"\n')
        snakefile.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p",
         f"results/{TASK}/report.md"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    plan = result.stdout + result.stderr
    command = next(line for line in plan.splitlines() if "workflow_scripts.report" in line)
    students = list(config.load(tmp_path / "config.yaml")["students"])
    for name in students:
        assert f"results/{TASK}/{name}_eval.json" in command
    pairs = json.loads(re.search(r"--baselines '([^']*)'", command).group(1))
    assert pairs == config.baselines(config.load(tmp_path / "config.yaml")["students"])
    assert f"--png results/{TASK}/accuracy_vs_speedup.png" in command
