"""Evaluation: a model's predictions over a record file, in file order, and the task's metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import batching, ofrecord
from ..data.batching import model_inputs
from ..data.task import Task
from . import metrics


def predict(B, model, path: str | Path, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N, C), labels (N,))`` for every record of ``path``, in file order.

    Batches come from length-sorted pools (less padding); rows are put back in file order.
    """
    ofrecord.checked_count(path)                 # a file cut short is an error, not a smaller set
    model.eval()
    logits, labels, index = [], [], []
    with B.no_grad(), B.autocast():             # in the run's precision; logits back as fp32
        for batch in batching.batches(path, batch_size, bucket=20):
            logits.append(B.to_numpy(model(**model_inputs(B, batch))["logits"].float()))
            labels.append(batch["label_ids"])
            index.append(batch["index"])
    order = np.argsort(np.concatenate(index), kind="stable")
    return np.concatenate(logits)[order], np.concatenate(labels)[order]


def evaluate(B, model, task: Task, path: str | Path, batch_size: int = 128) -> dict[str, float]:
    """The task's metrics on one record file."""
    logits, labels = predict(B, model, path, batch_size)
    return metrics.compute(task.metrics, logits, labels, task.is_regression)


def split_evaluator(B, model, task: Task, path: str | Path, batch_size: int = 128):
    """A callable for :func:`kdlib.distill.train.fit` that scores ``model`` on one record file (the
    selection split): ``() -> (primary metric, all metrics)``; for classification the metrics also
    hold ``classes_predicted``, the number of distinct classes the model predicts there (1: it has
    collapsed to one class)."""
    def run():
        logits, labels = predict(B, model, path, batch_size)
        result = metrics.compute(task.metrics, logits, labels, task.is_regression)
        if not task.is_regression:
            result["classes_predicted"] = int(len(np.unique(logits.argmax(-1))))
        return result[task.metric], result
    return run
