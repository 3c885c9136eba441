"""A model's size and speed: parameters, bytes on disk, latency at batch 1 and throughput at
batch 32 on real dev records, on the backend and device in use."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from ..data import batching
from ..data.batching import model_inputs


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
    with B.no_grad(), B.autocast():             # the run's precision, as in evaluation
        latency = _timed(B, lambda: model(**inputs_1), repeats)
        batch_time = _timed(B, lambda: model(**inputs_32), max(3, repeats // 4))
    return {"latency_ms_batch1": round(latency * 1000, 3),
            "throughput_batch32": round(len(batch["label_ids"]) / batch_time, 1)}
