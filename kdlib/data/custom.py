"""Tasks defined in config.yaml (``custom_tasks:``): a user's own files, read like a GLUE task's.

A custom task names its ``train`` file, one or more ``dev`` files and optionally a ``test`` file
(predicted, not scored), each TSV, CSV or JSON Lines (by the file's extension, or ``format:``), the
columns that hold ``text_a``, optional ``text_b`` and ``label``, and ``labels:`` (their order) or
not: then the labels are the distinct values of the training file's label column, sorted (as
numbers when they all are integers), and the record stages write them to the records' meta.json so
that every later stage agrees. ``regression: true`` reads a numeric label.

:func:`read_table` streams a file as tables of its raw columns with the file line of each row, and
turns every problem with the file into one :class:`DataError` line naming the file (and line):
a missing or empty file, bytes that are not UTF-8, a field too long for a CSV or TSV (a quote never
closed, or no line breaks), duplicated column names, a missing column, a line that is not JSON. An
empty or NaN label (:func:`missing_labels`) is an error too, never a class of its own.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..errors import ConfigError, DataError
from .task import Task

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")
BINARY_ONLY = ("f1", "mcc")
# a missing label: an empty cell (JSON's null reads as one) or NaN, as pandas or JSON write it
MISSING_LABEL = r"\s*([+-]?nan)?\s*"


def file_format(path: str | Path, given: str | None = None) -> str:
    """``tsv``, ``csv`` or ``jsonl``: ``given``, or else the file's extension."""
    if given:
        return given
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"{path}: cannot tell the format from the extension; name the file .tsv, "
                          ".csv or .jsonl, or set format: tsv | csv | jsonl")
    return fmt


def dev_names(count: int) -> tuple[str, ...]:
    """The split names of ``count`` dev files: dev, dev_2, dev_3 ..."""
    return ("dev",) + tuple(f"dev_{k}" for k in range(2, count + 1))


def task_from_config(name: str, spec: dict):
    """The :class:`kdlib.data.task.Task` of ``custom_tasks.<name>`` (schema defaults filled)."""

    where = f"custom_tasks.{name}"
    devs = spec["dev"] if isinstance(spec["dev"], list) else [spec["dev"]]
    if not devs:
        raise ConfigError(f"config error at {where}.dev: give one dev file or more")
    regression = bool(spec["regression"])
    labels = None if regression else (tuple(str(v) for v in spec["labels"]) if spec["labels"] else ())
    if regression and spec["labels"]:
        raise ConfigError(f"config error at {where}.labels: a regression task has no labels")
    if labels is not None and len(set(labels)) != len(labels):
        raise ConfigError(f"config error at {where}.labels: {list(labels)} repeats a label")
    if labels and any(re.fullmatch(MISSING_LABEL, label, re.IGNORECASE) for label in labels):
        raise ConfigError(f"config error at {where}.labels: {list(labels)}: an empty or NaN label "
                          "stands for a missing one; name every class")
    allowed = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
    metrics = tuple(spec["metrics"] or (("pearson", "spearman") if regression else ("accuracy", "macro_f1")))
    wrong = [m for m in metrics if m not in allowed]
    if wrong:
        raise ConfigError(f"config error at {where}.metrics: {', '.join(wrong)} does not fit a "
                          f"{'regression' if regression else 'classification'} task "
                          f"(use {', '.join(allowed)})")
    if labels and len(labels) != 2 and any(m in BINARY_ONLY for m in metrics):
        raise ConfigError(f"config error at {where}.metrics: f1 and mcc need two labels; use macro_f1")
    files = {"train": spec["train"], **dict(zip(dev_names(len(devs)), devs))}
    if spec.get("validation"):
        files["validation"] = spec["validation"]
    if spec.get("test"):
        files["test"] = spec["test"]
    files = {split: str(Path(path).expanduser()) for split, path in files.items()}
    formats = set()
    for split, path in files.items():
        try:
            formats.add(file_format(path, spec.get("format")))
        except ConfigError as exc:
            key = split if split in ("train", "validation", "test") else "dev"
            raise ConfigError(f"config error at {where}.{key}: {exc}") from None
    if len(formats) > 1:
        raise ConfigError(f"config error at {where}: its files have different formats "
                          f"({', '.join(sorted(formats))}); use one, or set format:")
    return Task(name, name, None, spec["text_a"], spec.get("text_b"), spec["label"], labels, metrics,
                dev_splits=dev_names(len(devs)), files=tuple(files.items()), fmt=formats.pop(),
                max_length=spec.get("max_length"), custom=True,
                predict_splits=("test",) if "test" in files else (),
                validation_file="validation" in files)


# ---- reading ------------------------------------------------------------------------------------

def _duplicates(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


def not_utf8(path: Path) -> DataError:
    """The error of a file that holds bytes that are not UTF-8, naming the first such line."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return DataError(f"{path}:{lineno}: bytes that are not UTF-8 ({exc})")
    return DataError(f"{path}: bytes that are not UTF-8")


def read_table(task, path: Path, needed: list[str], chunksize: int = 50_000) -> Iterator[tuple]:
    """``(table of the needed columns as strings, their file lines)`` chunks of a custom task's
    TSV, CSV or JSON Lines file, in file order."""
    try:
        if task.fmt == "jsonl":
            yield from _jsonl(path, needed, chunksize)
        else:
            yield from _delimited(task, path, needed, chunksize)
    except UnicodeDecodeError:
        raise not_utf8(path) from None


def _header(task, path: Path, sep: str) -> list[str] | None:
    """The first row of a TSV or CSV file; a field longer than the csv module takes (a quote never
    closed, or a file without line breaks) is one line."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter=sep)
        try:
            return next(reader, None)
        except csv.Error as exc:
            hint = (" (a quote never closed, or not a file of one row per line?)"
                    if "field limit" in str(exc) else "")
            raise DataError(f"{path}:{max(1, reader.line_num)}: malformed {task.fmt.upper()} header: "
                            f"{exc}{hint}") from None


def _delimited(task, path: Path, needed: list[str], chunksize: int) -> Iterator[tuple]:
    import pandas as pd
    sep = "\t" if task.fmt == "tsv" else ","
    header = _header(task, path, sep)
    if not header:
        raise DataError(f"{path}: the file is empty")
    twice = _duplicates(header)
    if twice:
        raise DataError(f"{path}:1: the column name(s) {', '.join(twice)} appear more than once")
    _check_columns(task, path, header, needed)
    try:
        reader = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, chunksize=chunksize,
                             encoding="utf-8", usecols=needed)
        rows = 0
        for chunk in reader:
            # the line of each row: 1 + header; a quoted field with a line break is counted as one
            yield chunk, range(2 + rows, 2 + rows + len(chunk))
            rows += len(chunk)
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed {task.fmt.upper()}: {str(exc).strip()}") from None


def _check_columns(task, path, have, needed):
    missing = [str(c) for c in needed if c not in have]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; {task.name} expects "
                        f"{', '.join(map(str, needed))} (it has {_listed(have)})")


def _listed(names: list, most: int = 12, width: int = 40) -> str:
    """``names`` for an error line, each cut to ``width`` characters, the first ``most`` of them."""
    shown = [n if len(n) <= width else n[:width] + "..." for n in map(str, names[:most])]
    return ", ".join(shown) + (f" and {len(names) - most} more" if len(names) > most else "")


def _jsonl(path: Path, needed: list[str], chunksize: int):
    import pandas as pd

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        twice = _duplicates(keys)
        if twice:
            raise ValueError(f"the key(s) {', '.join(twice)} appear more than once")
        return dict(pairs)

    rows, lines, any_line = [], [], False
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            any_line = True
            try:
                obj = json.loads(line, object_pairs_hook=no_duplicates)
            except ValueError as exc:
                raise DataError(f"{path}:{lineno}: not a JSON object ({exc})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: not a JSON object (one object per line)")
            missing = [c for c in needed if c not in obj]
            if missing:
                raise DataError(f"{path}:{lineno}: missing key(s) {', '.join(missing)}; expects "
                                f"{', '.join(needed)}")
            rows.append({c: "" if obj[c] is None else str(obj[c]) for c in needed})
            lines.append(lineno)
            if len(rows) == chunksize:
                yield pd.DataFrame(rows, columns=needed), lines
                rows, lines = [], []
    if not any_line:
        raise DataError(f"{path}: the file is empty")
    if rows:
        yield pd.DataFrame(rows, columns=needed), lines


def missing_labels(values: pd.Series) -> np.ndarray:
    """Which label cells (strings) are missing: empty or NaN (:data:`MISSING_LABEL`)."""
    return values.str.fullmatch(MISSING_LABEL, case=False).to_numpy(dtype=bool)


def missing_label(task, path: Path, line: int, value: str) -> DataError:
    """The error of a row whose label is missing (:func:`missing_labels`)."""
    what = (f"{value.strip()!r}, a missing value" if value.strip() else
            "an empty or null value" if task.fmt == "jsonl" else "an empty cell")
    return DataError(f"{path}:{line}: no label ({what}); give every row one, or remove the row")


def infer_labels(task, path: Path) -> tuple[str, ...]:
    """The distinct labels of a training file, sorted: as numbers when all are integers. A missing
    label is an error, not a class."""
    seen: set[str] = set()
    for chunk, lines in read_table(task, path, [task.label]):
        values = chunk[task.label]
        missing = missing_labels(values)
        if missing.any():
            i = int(missing.argmax())
            raise missing_label(task, path, lines[i], values.iloc[i])
        seen.update(values.tolist())
    if not seen:
        raise DataError(f"{path}: no labels in column {task.label}")
    if all(v.lstrip("-").isdigit() for v in seen):
        return tuple(sorted(seen, key=int))
    return tuple(sorted(seen))


def with_labels(task, log=print):
    """``task`` with its labels read from the training file where config.yaml gives none."""
    import dataclasses

    if task.is_regression or task.labels:
        return task
    path = Path(dict(task.files)["train"])
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    labels = infer_labels(task, path)
    log(f"{task.name}: labels read from {path}: {', '.join(labels)}")
    return dataclasses.replace(task, labels=labels)


def split_table(task, path: Path, split: str) -> Iterator[tuple[pd.DataFrame, object]]:
    """The raw chunks of one split: the text columns and, but for a prediction-only split, the
    label column."""
    needed = [c for c in (task.text_a, task.text_b) if c is not None]
    if split not in task.predict_splits:
        needed.append(task.label)
    return read_table(task, path, needed)
