"""The validation split: the rows that pick each model's checkpoint and stop its training early.

Dev is scored once, by the evaluation stages; everything decided during training (the published
checkpoint, early stopping) looks at the validation split alone. It comes from

- a file of its own: the built-in tasks' ``validation.tsv`` (labelled tweets in neither train nor
  dev, :mod:`kdlib.data.builtin`) or a custom task's ``validation:`` file;
- else the training file: :func:`carve_mask` holds out a seeded, stratified share of its rows
  (``data.validation``: ``fraction`` up to ``max_rows``) and the rest trains.

The carve is a pure function of the training file's labels and the settings, so the BERT records,
the word records and the transfer sets of a task all hold out the same rows, and the teacher and
every student see the same split. The labels are read in one streaming pass (one small integer per
row, a few MB for MNLI's 393k rows); the texts stay on disk.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError
from .task import VALIDATION, Task
from .tasks import Skipped, glue_file, read_split


@dataclass(frozen=True)
class Carve:
    """How a validation split is carved from a training file (config.yaml ``data.validation``)."""
    fraction: float = 0.1
    max_rows: int = 2000          # 0 = no cap
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict) -> "Carve":
        return cls(**{k: values[k] for k in ("fraction", "max_rows", "seed") if k in values})


def shares(sizes: list[int], total: int) -> np.ndarray:
    """Each group's share of ``total`` rows in proportion to ``sizes``, rounded on the running total
    so that the shares add up to ``total``: the bounds of each group's share, (len(sizes) + 1,)."""
    return np.concatenate([[0], np.round(np.cumsum(sizes) * total / max(1, sum(sizes))).astype(int)])


def strata(labels: np.ndarray, regression: bool) -> np.ndarray:
    """(N,) int: a row's stratum, its label; for a regression score, its decile."""
    if not regression:
        return labels.astype(np.int64)
    ranks = np.argsort(np.argsort(labels, kind="stable"), kind="stable")
    return (ranks * 10 // max(1, len(labels))).astype(np.int64)


def carve_mask(labels: np.ndarray, carve: Carve, regression: bool = False,
               source: str | Path = "the training file") -> np.ndarray:
    """(N,) bool, True for the rows held out: ``round(N * fraction)`` rows (at most ``max_rows``,
    at least 1), shared among the strata in proportion to their sizes (rounded on the running
    total, so the shares add up), each stratum's rows a seeded draw. At least one row trains."""
    n = len(labels)
    if n < 2:
        raise DataError(f"{source}: {n} training row(s), too few to carve a validation split from "
                        "(give the task a validation file, or more training rows)")
    want = int(round(n * carve.fraction))
    if carve.max_rows:
        want = min(want, carve.max_rows)
    want = min(max(1, want), n - 1)
    groups = strata(np.asarray(labels), regression)
    rng = np.random.default_rng([carve.seed, 7])
    keys = np.unique(groups)
    bounds = shares([int((groups == k).sum()) for k in keys], want)
    mask = np.zeros(n, dtype=bool)
    for key, lo, hi in zip(keys, bounds, bounds[1:]):
        rows = rng.permutation(np.flatnonzero(groups == key))
        mask[rows[:hi - lo]] = True
    return mask


def train_labels(task: Task, glue_root: str | Path) -> np.ndarray:
    """Every label of the training file, in file order (malformed rows skipped as the converters
    skip them), read in chunks."""
    chunks = read_split(task, glue_file(glue_root, task, "train"), skipped=Skipped())
    return np.concatenate([chunk["label"].to_numpy() for chunk in chunks])


def task_mask(task: Task, glue_root: str | Path, carve: Carve) -> np.ndarray:
    """:func:`carve_mask` of the task's training file."""
    return carve_mask(train_labels(task, glue_root), carve, task.is_regression,
                      glue_file(glue_root, task, "train"))


def _where(chunks, mask: np.ndarray, keep: bool) -> Iterator:
    start = 0
    for chunk in chunks:
        rows = mask[start:start + len(chunk)] == keep
        start += len(chunk)
        if rows.any():
            yield chunk[rows].reset_index(drop=True)


def split_chunks(task: Task, glue_root: str | Path, split: str, carve: Carve,
                 mask: np.ndarray | None = None, skipped: Skipped | None = None) -> Iterator:
    """The ``text_a``, ``text_b``, ``label`` chunks of any record split (:attr:`Task.record_splits`):
    a split's own file; or, for a task without a validation file, ``train`` without the carved rows
    and ``validation`` made of them (``mask``: :func:`carve_mask` of :func:`train_labels`, computed
    here when not given)."""
    if split not in ("train", VALIDATION) or task.validation_file:
        return read_split(task, glue_file(glue_root, task, split), skipped=skipped, split=split)
    if mask is None:
        mask = task_mask(task, glue_root, carve)
    chunks = read_split(task, glue_file(glue_root, task, "train"), skipped=skipped)
    return _where(chunks, mask, keep=split == VALIDATION)


def describe(task: Task, carve: Carve) -> str:
    """Where the task's validation split comes from, for logs."""
    if task.validation_file:
        return f"{VALIDATION}: its own file"
    cap = f", at most {carve.max_rows:,} rows" if carve.max_rows else ""
    return f"{VALIDATION}: {carve.fraction:.0%} of the training file{cap}, seed {carve.seed}"
