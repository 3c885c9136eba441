"""The ``*_eval.json`` of a model: what the evaluation stages write (:func:`build`) and the one
reader of it (:func:`read_eval`), for the report and for the teacher's reference."""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from ..data.ofrecord import record_file
from ..data.task import Task
from ..errors import DataError
from ..io import atomic_path, read_json
from ..models.checkpoint import load_checkpoint
from ..models.families import width
from .evaluation import predict
from .metrics import compute
from .speed import count_parameters, folder_size

# What every eval JSON holds, and so what read_eval checks.
REQUIRED_KEYS = ("metric", "score", "metrics", "parameters", "size_bytes")


def build(B, task: Task, model_dir: str | Path, records: str | Path, name: str,
          reference: dict | None = None, *, batch_size: int) -> tuple[dict, dict]:
    """Everything an ``*_eval.json`` holds for the checkpoint in ``model_dir``, and the model's
    predictions it was computed from.

    The JSON: metrics on every dev split, parameter count, size on disk, training seconds and steps
    and how the checkpoint was selected (``selection``: split, step, score, patience, early stop,
    collapse; from ``train_summary.json``), backend, device and precision, and, given the teacher's eval JSON as
    ``reference``, the retained share of its primary metric. (Speed is measured for all models
    side by side by the speed stage, :mod:`kdlib.evaluate.speed`.) The predictions:
    ``{"<split>_logits": (N, C) float32, "<split>_labels": (N,)}`` in record order, so that any
    statistic can be computed later without running the model again, and ``test_logits`` of a
    custom task's test file (predicted, not scored)."""
    model, config = load_checkpoint(B, model_dir)
    splits, predictions = {}, {}
    for split in task.dev_splits:
        logits, labels = predict(B, model, record_file(records, split), batch_size)
        splits[split] = compute(task.metrics, logits, labels, task.is_regression)
        predictions[f"{split}_logits"], predictions[f"{split}_labels"] = logits.astype("float32"), labels
    for split in task.predict_splits:                     # a custom task's test file: no labels
        logits, _ = predict(B, model, record_file(records, split), batch_size)
        predictions[f"{split}_logits"] = logits.astype("float32")
    first = splits[task.dev_splits[0]]
    summary_path = Path(model_dir) / "train_summary.json"
    summary = read_json(summary_path) if summary_path.exists() else {}
    out = {
        "task": task.name, "model": name, "model_type": config.get("model_type"),
        "algorithm": config.get("algorithm") or ("teacher" if config.get("role") == "teacher" else None),
        "metric": task.metric, "score": first[task.metric], "metrics": splits,
        "parameters": count_parameters(model), "size_bytes": folder_size(model_dir),
        "train_seconds": summary.get("train_seconds"),
        "train_steps": summary.get("steps"),
        "selection": summary.get("selection"),   # the split, step and score that picked the checkpoint
        "training_rows": summary.get("training_rows"), "transfer_rows": summary.get("transfer_rows"),
        "backend": B.name, "device": B.device_name, "precision": B.precision,
    }
    if config.get("model_type") == "bilstm":
        out["layers"], out["hidden"] = 1, config.get("hidden_size")
    else:                                    # kdlib's BERT, or a teacher of any encoder family
        out["layers"], out["hidden"] = width(config, "num_hidden_layers"), width(config, "hidden_size")
    if reference:
        out["retained"] = round(out["score"] / reference["score"], 4) if reference["score"] else None
    return out, predictions


def write_predictions(path: str | Path, predictions: dict) -> None:
    """The predictions of :func:`build` as one .npz, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **predictions)


def read_predictions(path: str | Path, split: str) -> tuple:
    """``(logits (N, C), labels (N,))`` of ``split`` from a predictions file; a missing or
    damaged file is one DataError naming it."""
    try:
        with np.load(path) as data:
            return data[f"{split}_logits"], data[f"{split}_labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable predictions file for split {split} ({exc})") from None


def read_eval(path: str | Path) -> dict:
    """One ``*_eval.json``; a missing, unreadable or incomplete file is one DataError naming it."""
    result = read_json(path)
    if not isinstance(result, dict):
        raise DataError(f"{path}: not an eval JSON (not a JSON object)")
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:
        raise DataError(f"{path}: not an eval JSON (lacks {', '.join(missing)})")
    if not isinstance(result["metrics"], dict) or not all(
            isinstance(m, dict) for m in result["metrics"].values()):
        raise DataError(f"{path}: 'metrics' must map each dev split to its metrics")
    numbers = ("score", "parameters", "size_bytes")
    wrong = [k for k in numbers if not _is_number(result[k])]
    if wrong:
        raise DataError(f"{path}: {', '.join(wrong)} must be numbers")
    return result


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
