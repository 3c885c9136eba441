"""Evaluation: predictions over a record file, task metrics, model size and CPU/GPU speed."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from ..data import batching, ofrecord
from ..data.batching import model_inputs
from ..data.tasks import Task
from ..io import read_json
from . import metrics


def predict(B, model, path: str | Path, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N, C), labels (N,))`` for every record of ``path``, in file order.

    Batches come from length-sorted pools (less padding); rows are put back in file order.
    """
    ofrecord.checked_count(path)                 # a file cut short is an error, not a smaller set
    model.eval()
    logits, labels, index = [], [], []
    with B.no_grad():
        for batch in batching.batches(path, batch_size, bucket=20):
            logits.append(B.to_numpy(model(**model_inputs(B, batch))["logits"]))
            labels.append(batch["label_ids"])
            index.append(batch["index"])
    order = np.argsort(np.concatenate(index), kind="stable")
    return np.concatenate(logits)[order], np.concatenate(labels)[order]


def evaluate(B, model, task: Task, path: str | Path, batch_size: int = 128) -> dict[str, float]:
    """The task's metrics on one record file."""
    logits, labels = predict(B, model, path, batch_size)
    return metrics.compute(task.metrics, logits, labels, task.is_regression)


def dev_evaluator(B, model, task: Task, dev_path: str | Path, batch_size: int = 128):
    """A callable for :func:`kdlib.distill.train.fit`: ``() -> (primary metric, all metrics)``."""
    def run():
        result = evaluate(B, model, task, dev_path, batch_size)
        return result[task.metric], result
    return run


def count_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def folder_size(folder: str | Path) -> int:
    return int(sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()))


def _timed(B, fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after two warm-up runs."""
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        fn()
        if B.device_name == "cuda":
            B.lib.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_speed(B, model, path: str | Path, repeats: int = 20) -> dict[str, float]:
    """Latency at batch 1 (ms) and throughput at batch 32 (examples/s) on real dev records.

    Batches are trimmed to their longest real sequence, as in training and evaluation.
    """
    model.eval()
    batch = next(iter(batching.batches(path, 32)))
    one = batching.trim_batch({k: v[:1] for k, v in batch.items()})
    inputs_1, inputs_32 = model_inputs(B, one), model_inputs(B, batch)
    with B.no_grad():
        latency = _timed(B, lambda: model(**inputs_1), repeats)
        batch_time = _timed(B, lambda: model(**inputs_32), max(3, repeats // 4))
    return {"latency_ms_batch1": round(latency * 1000, 3),
            "throughput_batch32": round(len(batch["label_ids"]) / batch_time, 1)}


def report(B, task: Task, model_dir: str | Path, records: str | Path, name: str,
           reference: dict | None = None, batch_size: int = 128) -> dict:
    """Everything an ``*_eval.json`` holds for the checkpoint in ``model_dir``.

    Metrics on every dev split, parameter count, size on disk, latency at batch 1 and throughput at
    batch 32 on this backend and device, training seconds (from ``train_summary.json``), and,
    given the teacher's report as ``reference``, speed-up and retained share of its metric.
    """
    from ..data.ofrecord import record_file
    from ..models.checkpoint import load_checkpoint

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
        "backend": B.name, "device": B.device_name,
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
