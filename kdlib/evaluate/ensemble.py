"""Several teachers as one (config ``teacher.ensemble``): their mean prediction, and the ensemble's
eval JSON built from its members' predictions on dev.

The ensemble's prediction is the mean of the members' probabilities (a regression: the mean of
their scores). Probabilities, not logits: the logits of different models differ in scale and
offset, so their mean would let the most confident teacher outvote the rest and is not what the
ensemble predicts. The mean is kept as logits, ``log(mean probability)``, whose softmax is exactly
that mean, so the logit cache and every recipe read an ensemble like one teacher (at temperature
T the soft targets are the mean probabilities raised to 1/T, renormalised).
"""
from __future__ import annotations

import numpy as np

from ..data.task import Task
from .eval_json import read_predictions
from .metrics import compute

TINY = 1e-30       # the log of a probability that underflowed to 0 stays finite


def mean_probabilities(logits: list[np.ndarray], regression: bool) -> np.ndarray:
    """(N, C) float32 logits of the members' mean prediction, from each member's (N, C) logits."""
    if regression:
        return np.mean(np.stack(logits), axis=0).astype(np.float32)               # (N, 1)
    probs = []
    for z in logits:
        z = z.astype(np.float64)
        e = np.exp(z - z.max(axis=1, keepdims=True))                              # (N, C)
        probs.append(e / e.sum(axis=1, keepdims=True))
    return np.log(np.clip(np.mean(probs, axis=0), TINY, None)).astype(np.float32)  # (N, C)


def build(task: Task, members: dict[str, tuple[dict, str]]) -> tuple[dict, dict]:
    """The eval JSON and predictions of the ensemble of ``members`` (name -> (its eval JSON, its
    predictions file)): metrics of the mean prediction on every dev split, the members' parameters
    and sizes summed (running the ensemble runs them all), and each member's score."""
    evals = [result for result, _ in members.values()]
    predictions, splits = {}, {}
    for split in task.dev_splits:
        pairs = [read_predictions(path, split) for _, path in members.values()]
        labels = pairs[0][1]
        logits = mean_probabilities([z for z, _ in pairs], task.is_regression)
        splits[split] = compute(task.metrics, logits, labels, task.is_regression)
        predictions[f"{split}_logits"], predictions[f"{split}_labels"] = logits, labels
    first = splits[task.dev_splits[0]]
    seconds = [r.get("train_seconds") for r in evals if r.get("train_seconds") is not None]
    out = {
        "task": task.name, "model": "teacher", "model_type": "ensemble", "algorithm": "ensemble",
        "metric": task.metric, "score": first[task.metric], "metrics": splits,
        "parameters": sum(r["parameters"] for r in evals), "size_bytes": sum(r["size_bytes"] for r in evals),
        "train_seconds": sum(seconds) if seconds else None, "train_steps": None, "selection": None,
        "training_rows": None, "transfer_rows": None, "layers": None, "hidden": None,
        "backend": evals[0].get("backend"), "device": evals[0].get("device"),
        "precision": evals[0].get("precision"),
        "members": [{"model": name, "score": result["score"]} for name, (result, _) in members.items()],
    }
    return out, predictions
