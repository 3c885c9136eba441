"""Tasks of the user's own files (custom_tasks:): their definition, the record stages on TSV, CSV
and JSON Lines, one clear line for each kind of bad data, and the whole workflow on a five-class
CSV task and a pair task in JSON Lines."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tinydata
import yaml
from conftest import CARVE_ARGS, error_lines, error_lines_of
from tinydata import CLASSES, write_pairs, write_tickets

from kdlib import config
from kdlib.data import ofrecord, tasks
from kdlib.data.task import Task
from kdlib.errors import ConfigError
from workflow_scripts import ofrecord_bert, ofrecord_lstm


def spec(**values) -> dict:
    """A custom task's definition with the schema's defaults, as the workflow passes it."""
    return config.validate_section(values, "custom_task", "test")


def convert(stage, task: str, definition: dict, out: Path, vocab: Path, length: int = 16):
    argv = ["--task", task, "--custom", json.dumps(definition), "--glue-root", "unused", *CARVE_ARGS,
            "--out-dir", str(out), "--max-length", str(length)]
    argv += ["--tokenizer", str(vocab)] if stage is ofrecord_bert else ["--vocab-size", "50"]
    return stage.main(argv)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    return tinydata.write_pretrained(tmp_path_factory.mktemp("tiny")) / "vocab.txt"


def labels_of(folder: Path, split: str) -> list[int]:
    return [int(r["label_ids"][0]) for r in ofrecord.iter_records(ofrecord.record_file(folder, split))]


# ---- the definition -------------------------------------------------------------------------------

def test_the_definition_reads_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    task = tasks.get_task("tickets", {"tickets": spec(train="~/own/train.csv", dev=["a.csv", "/b.csv"],
                                                      test="t.csv", text_a="body", label="y")})
    assert dict(task.files) == {"train": str(tmp_path / "own/train.csv"), "dev": "a.csv",
                                "dev_2": "/b.csv", "test": "t.csv"}
    assert task.splits == ("train", "dev", "dev_2", "test") and task.dev_splits == ("dev", "dev_2")
    assert task.fmt == "csv" and task.metrics == ("accuracy", "macro_f1") and task.labels == ()
    pair = tasks.get_task("p", {"p": spec(train="t.jsonl", dev="d.jsonl", text_a="q1", text_b="q2",
                                          label="s", regression=True)})
    assert pair.is_regression and pair.metrics == ("pearson", "spearman") and pair.fmt == "jsonl"
    tsv = tasks.get_task("p", {"p": spec(train="t.txt", dev="d.txt", format="tsv", text_a="q",
                                         label="s", labels=["b", "a"], max_length=40)})
    assert tsv.fmt == "tsv" and tsv.labels == ("b", "a")
    assert config.max_length(config.load("config.yaml", {"custom_tasks": {"p": {
        "train": "t.tsv", "dev": "d.tsv", "text_a": "q", "label": "s", "max_length": 40}}}), "p") == 40
    assert Task.from_dict(json.loads(json.dumps(task.to_dict()))) == task


@pytest.mark.parametrize("name, changes, message", [
    ("tweets", {}, r"custom_tasks.tweets: 'tweets' is a built-in task"),
    ("x", {"train": None}, r"custom_tasks.x: 'train' is a required property"),
    ("x", {"labels": ["a", "b", "c"], "metrics": ["f1"]}, "f1 and mcc need two labels"),
    ("x", {"regression": True, "metrics": ["accuracy"]}, "accuracy does not fit a regression"),
    ("x", {"regression": True, "labels": ["a"]}, "a regression task has no labels"),
    ("x", {"labels": ["a", "a"]}, "repeats a label"),
    ("x", {"labels": ["a", "NaN"]}, r"custom_tasks.x.labels: \['a', 'NaN'\]: an empty or NaN label"),
    ("x", {"dev": "d.tsv"}, r"custom_tasks.x: its files have different formats \(csv, tsv\)"),
    ("x", {"train": "t.txt", "dev": "d.txt"}, r"custom_tasks.x.train: t.txt: cannot tell the format"),
    ("x", {"metrics": ["bleu"]}, "custom_tasks.x.metrics.0: 'bleu' is not one of"),
    ("Bad-Name", {}, "does not match"),
])
def test_a_bad_definition_is_one_config_error(name, changes, message):
    definition = {"train": "t.csv", "dev": "d.csv", "text_a": "t", "label": "l", **changes}
    definition = {k: v for k, v in definition.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        config.load("config.yaml", {"custom_tasks": {name: definition}})


def test_a_task_neither_built_in_nor_defined_is_a_config_error():
    with pytest.raises(ConfigError, match=r"tasks.0: 'tickets' is neither a built-in task"):
        config.load("config.yaml", {"tasks": ["tickets"]})


# ---- the record stages ----------------------------------------------------------------------------

def test_a_five_class_csv_becomes_records_with_its_labels_read_and_kept(tmp_path, vocab, capsys):
    train = write_tickets(tmp_path / "train.csv", 60, 1)
    dev = write_tickets(tmp_path / "dev.csv", 20, 2)
    write_tickets(tmp_path / "test.csv", 7, 3, with_label=False)
    definition = spec(train=str(tmp_path / "train.csv"), dev=str(tmp_path / "dev.csv"),
                      test=str(tmp_path / "test.csv"), text_a="body", label="category")
    assert convert(ofrecord_bert, "tickets", definition, tmp_path / "bert", vocab) == 0
    err = capsys.readouterr().err
    assert f"labels read from {tmp_path / 'train.csv'}: {', '.join(sorted(CLASSES))}" in err
    meta = json.loads((tmp_path / "bert" / "meta.json").read_text())
    assert meta["num_labels"] == 5
    assert meta["counts"] == {"train": 54, "validation": 6, "dev": 20, "test": 7}   # 10% carved
    task = tasks.task_of_records(tmp_path / "bert", "tickets")
    assert task.labels == tuple(sorted(CLASSES)) and task.custom and task.predict_splits == ("test",)
    kept = labels_of(tmp_path / "bert", "train")
    assert sorted(kept + labels_of(tmp_path / "bert", "validation")) == sorted(
        task.labels.index(c) for c in train)
    assert labels_of(tmp_path / "bert", "dev") == [task.labels.index(c) for c in dev]
    assert labels_of(tmp_path / "bert", "test") == [-1] * 7

    # the BiLSTM's records agree, and a fixed label order is kept as given
    fixed = {**definition, "labels": CLASSES[::-1]}
    assert convert(ofrecord_lstm, "tickets", fixed, tmp_path / "lstm", vocab) == 0
    assert tasks.task_of_records(tmp_path / "lstm", "tickets").labels == tuple(CLASSES[::-1])
    assert labels_of(tmp_path / "lstm", "dev") == [CLASSES[::-1].index(c) for c in dev]


def test_a_pair_task_in_json_lines_with_two_dev_files(tmp_path, vocab):
    for name, n, seed in [("train", 40, 1), ("dev", 12, 2), ("dev2", 10, 3)]:
        write_pairs(tmp_path / f"{name}.jsonl", n, seed)
    definition = spec(train=str(tmp_path / "train.jsonl"), dev=[str(tmp_path / "dev.jsonl"),
                      str(tmp_path / "dev2.jsonl")], text_a="q1", text_b="q2", label="duplicate",
                      metrics=["f1", "accuracy"])
    assert convert(ofrecord_bert, "pairs", definition, tmp_path / "bert", vocab) == 0
    task = tasks.task_of_records(tmp_path / "bert", "pairs")
    assert task.labels == ("0", "1") and task.dev_splits == ("dev", "dev_2") and task.metric == "f1"
    records = list(ofrecord.iter_records(ofrecord.record_file(tmp_path / "bert", "dev_2")))
    assert len(records) == 10
    assert all(1 in r["segment_ids"] for r in records)            # two segments: a pair
    gold = [json.loads(line)["duplicate"] for line in (tmp_path / "dev.jsonl").read_text().splitlines()]
    assert labels_of(tmp_path / "bert", "dev") == gold


def test_a_regression_task_in_tsv(tmp_path, vocab):
    (tmp_path / "train.tsv").write_text("text\tscore\nw1 w2\t0.5\nw3\t4\n")
    (tmp_path / "dev.tsv").write_text("text\tscore\nw4 w5\t-1.25\n")
    definition = spec(train=str(tmp_path / "train.tsv"), dev=str(tmp_path / "dev.tsv"), text_a="text",
                      label="score", regression=True)
    assert convert(ofrecord_bert, "scores", definition, tmp_path / "bert", vocab) == 0
    record = next(ofrecord.iter_records(ofrecord.record_file(tmp_path / "bert", "dev")))
    assert record["label_ids"][0] == pytest.approx(-1.25)
    assert tasks.task_of_records(tmp_path / "bert", "scores").num_labels == 1


BAD = {  # name: (train text, dev text, format, extra definition, the line expected, its location)
    "missing column": ("body,category\nw1,bug\n", "text,category\nw2,bug\n", "csv", {},
                       "missing column(s) body", "dev"),
    "label not in labels": ("body,category\nw1,bug\nw2,login\n", "body,category\nw1,bug\nw3,refunds\n",
                            "csv", {"labels": ["bug", "login"]}, "label 'refunds' is not one of bug, login",
                            "dev:3"),
    "label not in the training file": ("body,category\nw1,bug\n", "body,category\nw2,login\n", "csv",
                                       {}, "label 'login' is not one of bug", "dev:2"),
    "empty file": ("", "body,category\nw2,bug\n", "csv", {}, "the file is empty", "train"),
    "header only": ("body,category\nw1,bug\n", "body,category\n", "csv", {}, "no rows after the header",
                    "dev"),
    "non-numeric regression label": ("body\tscore\nw1\t0.5\n", "body\tscore\nw2\t1\nw3\thigh\n", "tsv",
                                     {"regression": True}, "label 'high' is not a number", "dev:3"),
    "duplicated columns": ("body,category,body\nw1,bug,w2\n", "body,category\nw2,bug\n", "csv", {},
                           "the column name(s) body appear more than once", "train:1"),
    "duplicated keys": ('{"body": "w1", "category": "bug", "body": "w2"}\n',
                        '{"body": "w1", "category": "bug"}\n', "jsonl", {},
                        "the key(s) body appear more than once", "train:1"),
    "not JSON": ('{"body": "w1", "category": "bug"}\n', '{"body": "w1", "category": "bug"}\n{"body": w2\n',
                 "jsonl", {}, "not a JSON object", "dev:2"),
    "missing key": ('{"body": "w1", "category": "bug"}\n',
                    '{"body": "w1", "category": "bug"}\n{"body": "w2"}\n',
                    "jsonl", {}, "missing key(s) category", "dev:2"),
    "missing file": (None, "body,category\nw2,bug\n", "csv", {}, "file not found", "train"),
    "not UTF-8": ("body,category\nw1,bug\n", b"body,category\nw1,bug\n\xff\xfe,bug\n", "csv", {},
                  "bytes that are not UTF-8", "dev:3"),
    "not UTF-8 where the labels are read": (b"body,category\nw1,bug\nw2,bug\nw\xe9,login\n",
                                            "body,category\nw1,bug\n", "csv", {}, "bytes that are not UTF-8",
                                            "train:4"),
    "not UTF-8 in JSON Lines where the labels are read": (
        b'{"body": "w1", "category": "bug"}\n{"body": "w\xe9", "category": "bug"}\n',
        '{"body": "w1", "category": "bug"}\n', "jsonl", {}, "bytes that are not UTF-8", "train:2"),
    "5 MB without a line break, labels read": ("w1 " * 1_700_000, "body,category\nw2,bug\n", "csv", {},
                                               "malformed CSV header: field larger than field limit", "train:1"),
    "100 KB without a line break": ("w1 " * 34_000, "body,category\nw2,bug\n", "csv", {},
                                    f"(it has {'w1 ' * 13}w...)", "train"),
    "5 MB without a line break, labels given": ("w1 " * 1_700_000, "body\tcategory\nw2\tbug\n", "tsv",
                                                {"labels": ["bug"]},
                                                "malformed TSV header: field larger than field limit", "train:1"),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("stage", [ofrecord_bert, ofrecord_lstm], ids=["bert", "lstm"])
def test_bad_data_is_one_line_naming_the_file_and_line(case, stage, tmp_path, vocab, capsys):
    train, dev, fmt, extra, message, where = BAD[case]
    paths = {"train": tmp_path / f"train.{fmt}", "dev": tmp_path / f"dev.{fmt}"}
    if isinstance(train, str) and train.count("\n") == (1 if fmt == "jsonl" else 2):
        train += train.splitlines(keepends=True)[-1]     # two rows: validation carves one of them
    for split, content in (("train", train), ("dev", dev)):
        if content is not None:
            (paths[split].write_bytes if isinstance(content, bytes) else paths[split].write_text)(content)
    definition = spec(train=str(paths["train"]), dev=str(paths["dev"]), text_a="body",
                      label="score" if extra.get("regression") else "category", **extra)
    rc = convert(stage, "tickets", definition, tmp_path / "out", vocab)
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    lines = error_lines_of(err)
    assert len(lines) == 1, err
    split, _, line = where.partition(":")
    located = f"{paths[split]}:{line}:" if line else f"{paths[split]}:"
    assert located in lines[0] and message in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


MISSING = {  # format, the line of a row whose label is missing, what the error line says of it
    "NaN in a CSV": ("csv", "w9,NaN", "no label ('NaN', a missing value)"),
    "nan in a TSV": ("tsv", "w9\tnan", "no label ('nan', a missing value)"),
    "an empty CSV cell": ("csv", "w9,", "no label (an empty cell)"),
    "an empty TSV cell": ("tsv", "w9\t", "no label (an empty cell)"),
    "NaN in JSON Lines": ("jsonl", '{"body": "w9", "category": NaN}', "no label ('nan', a missing value)"),
    "null in JSON Lines": ("jsonl", '{"body": "w9", "category": null}', "no label (an empty or null value)"),
}


def rows_of(fmt: str, rows: list[tuple[str, str]], header=("body", "category")) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(dict(zip(header, row))) + "\n" for row in rows)
    sep = "\t" if fmt == "tsv" else ","
    return "".join(sep.join(row) + "\n" for row in [header, *rows])


@pytest.mark.parametrize("case", list(MISSING))
@pytest.mark.parametrize("where", ["train", "dev"])
@pytest.mark.parametrize("labels", [[], ["bug", "login"]], ids=["labels read", "labels given"])
def test_an_empty_or_nan_label_is_one_line_naming_the_line_never_a_class(case, where, labels, tmp_path, vocab,
                                                                          capsys):
    fmt, bad, says = MISSING[case]
    good = [("w1", "bug"), ("w2", "login"), ("w3", "bug"), ("w4", "login")]
    paths = {split: tmp_path / f"{split}.{fmt}" for split in ("train", "dev")}
    for split, path in paths.items():
        text = rows_of(fmt, good)
        if split == where:                                 # line 3's label is missing
            lines = text.splitlines(keepends=True)
            text = "".join(lines[:2] + [bad + "\n"] + lines[2:])
        path.write_text(text)
    definition = spec(train=str(paths["train"]), dev=str(paths["dev"]), text_a="body", label="category",
                      labels=labels)
    assert convert(ofrecord_bert, "tickets", definition, tmp_path / "out", vocab) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    read = [line for line in err.splitlines() if "labels read from" in line]           # never a class
    assert read == ([] if labels or where == "train" else [f"tickets: labels read from {paths['train']}: bug, login"])
    assert error_lines_of(err) == [f"error: {paths[where]}:3: {says}; give every row one, or remove the row"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt, bad, says", [
    ("tsv", "w9\tNaN", "no label ('NaN', a missing value)"),
    ("csv", "w9,", "no label (an empty cell)"),
    ("jsonl", '{"body": "w9", "score": NaN}', "no label ('nan', a missing value)"),
    ("tsv", "w9\tinf", "label 'inf' is not a finite number"),
])
def test_a_nan_or_infinite_score_of_a_regression_task_is_one_line_naming_the_line(fmt, bad, says, tmp_path, vocab,
                                                                                   capsys):
    text = rows_of(fmt, [("w1", "0.5"), ("w2", "1.5")], header=("body", "score"))
    lines = text.splitlines(keepends=True)
    (tmp_path / f"train.{fmt}").write_text("".join(lines[:2] + [bad + "\n"] + lines[2:]))   # line 3
    (tmp_path / f"dev.{fmt}").write_text(text)
    definition = spec(train=str(tmp_path / f"train.{fmt}"), dev=str(tmp_path / f"dev.{fmt}"), text_a="body",
                      label="score", regression=True)
    assert convert(ofrecord_lstm, "scores", definition, tmp_path / "out", vocab) == 1
    assert error_lines(capsys) == [f"error: {tmp_path / f'train.{fmt}'}:3: {says}"
                                   + ("; give every row one, or remove the row" if "no label" in says else "")]


def test_a_dev_label_never_in_training_is_a_warning_when_labels_are_given(tmp_path, vocab, capsys):
    (tmp_path / "train.csv").write_text("body,category\nw1,bug\nw2,bug\n")
    (tmp_path / "dev.csv").write_text("body,category\nw1,bug\nw3,login\n")
    definition = spec(train=str(tmp_path / "train.csv"), dev=str(tmp_path / "dev.csv"), text_a="body",
                      label="category", labels=["bug", "login"])
    assert convert(ofrecord_bert, "tickets", definition, tmp_path / "bert", vocab) == 0
    err = capsys.readouterr().err
    assert error_lines_of(err) == []
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {tmp_path / 'dev.csv'} (dev): label(s) login never occur in the "
                        "training rows; the students cannot learn them"]
    assert labels_of(tmp_path / "bert", "dev") == [0, 1]


def test_bad_custom_json_is_one_line(tmp_path, vocab, capsys):
    for text, message in [("{", "--custom is not valid JSON"),
                          ('{"train": "t.csv"}', "config error at --custom: 'dev' is a required property")]:
        rc = ofrecord_bert.main(["--task", "x", "--custom", text, "--glue-root", ".", *CARVE_ARGS, "--out-dir",
                                 str(tmp_path / "o"), "--tokenizer", str(vocab), "--max-length", "16"])
        lines = error_lines_of(capsys.readouterr().err)
        assert rc == 1 and len(lines) == 1 and message in lines[0], lines


def test_records_without_a_definition_name_the_fix(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "meta.json").write_text('{"task": "tickets", "kind": "bert"}')
    with pytest.raises(Exception, match="holds no task definition of 'tickets'; rebuild the records"):
        tasks.task_of_records(tmp_path / "r", "tickets")
    np.testing.assert_equal(tasks.task_of_records(tmp_path / "r", "sst2").labels, ("0", "1"))


def test_the_readme_example_is_a_valid_task(tmp_path, vocab, monkeypatch, capsys):
    """docs/configuring.md, "Your own data": its CSV as both files and its YAML as the config give
    records of the five classes."""
    from conftest import REPO
    section = (REPO / "docs/configuring.md").read_text().split("## Your own data")[1].split("\n## ")[0]
    sample = section.split("```text\n")[1].split("```")[0]
    block = yaml.safe_load(section.split("```yaml\n")[1].split("```")[0])
    monkeypatch.chdir(tmp_path)
    definition = block["custom_tasks"]["tickets"]
    for key in ("train", "dev", "test"):
        Path(definition[key]).parent.mkdir(parents=True, exist_ok=True)
        Path(definition[key]).write_text(sample)
    cfg = config.load(REPO / "config.yaml", block)
    assert cfg["tasks"] == ["tickets"]
    assert convert(ofrecord_bert, "tickets", cfg["custom_tasks"]["tickets"], tmp_path / "bert", vocab) == 0
    task = tasks.task_of_records(tmp_path / "bert", "tickets")
    assert task.labels == ("billing", "bug", "feature", "login", "refund")
    assert labels_of(tmp_path / "bert", "dev") == [0, 1, 2, 3, 4]
