"""The ``*_eval.json`` of a model: what the evaluation stages write (:func:`build`) and the one
reader of it (:func:`read_eval`), for the report and for the teacher's reference."""
from __future__ import annotations

import math
from pathlib import Path

from ..data.ofrecord import record_file
from ..data.tasks import Task
from ..errors import DataError
from ..io import read_json
from ..models.checkpoint import load_checkpoint
from .evaluation import evaluate
from .speed import count_parameters, folder_size, measure_speed

# What every eval JSON holds, and so what read_eval checks.
REQUIRED_KEYS = ("metric", "score", "metrics", "parameters", "size_bytes", "latency_ms_batch1",
                 "throughput_batch32")


def build(B, task: Task, model_dir: str | Path, records: str | Path, name: str,
          reference: dict | None = None, *, batch_size: int) -> dict:
    """Everything an ``*_eval.json`` holds for the checkpoint in ``model_dir``.

    Metrics on every dev split, parameter count, size on disk, latency at batch 1 and throughput at
    batch 32 on this backend and device, training seconds (from ``train_summary.json``), and,
    given the teacher's report as ``reference``, speed-up and retained share of its metric.
    """
    model, config = load_checkpoint(B, model_dir)
    splits = {split: evaluate(B, model, task, record_file(records, split), batch_size)
              for split in task.dev_splits}
    first = splits[task.dev_splits[0]]
    summary_path = Path(model_dir) / "train_summary.json"
    summary = read_json(summary_path) if summary_path.exists() else {}
    out = {
        "task": task.name, "model": name, "model_type": config.get("model_type"),
        "algorithm": config.get("algorithm", "teacher" if name == "teacher" else None),
        "metric": task.metric, "score": first[task.metric], "metrics": splits,
        "parameters": count_parameters(model), "size_bytes": folder_size(model_dir),
        **measure_speed(B, model, record_file(records, task.dev_splits[0])),
        "train_seconds": summary.get("train_seconds"),
        "backend": B.name, "device": B.device_name, "precision": B.precision,
    }
    if config.get("model_type") == "bert":
        out["layers"] = config.get("num_hidden_layers")
        out["hidden"] = config.get("hidden_size")
    else:
        out["layers"], out["hidden"] = 1, config.get("hidden_size")
    if reference:
        out["speedup"] = round(reference["latency_ms_batch1"] / out["latency_ms_batch1"], 3)
        out["speedup_batch32"] = round(out["throughput_batch32"] / reference["throughput_batch32"], 3)
        out["retained"] = round(out["score"] / reference["score"], 4) if reference["score"] else None
    return out


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
    numbers = ("score", "parameters", "size_bytes", "latency_ms_batch1", "throughput_batch32")
    wrong = [k for k in numbers if not _is_number(result[k])]
    if wrong:
        raise DataError(f"{path}: {', '.join(wrong)} must be numbers")
    if result["latency_ms_batch1"] <= 0:
        raise DataError(f"{path}: latency_ms_batch1 must be positive")
    return result


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
