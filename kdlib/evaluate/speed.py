"""A model's size, and the speed of several models measured side by side.

:func:`side_by_side` times the teacher and every student in one process, on the same dev
examples, in the run's backend, device and precision, after a warm-up. The models take turns input
by input (every model runs an example, or a batch, before the next one is run), in a seeded random
order drawn for each input, so that load from elsewhere on the machine falls on all of them alike
and no model always follows the teacher (which evicts the caches; that costs the next model about
3%):

- latency at batch 1: the mean over a fixed, seeded sample of distinct dev examples (200 by
  default), each trimmed to its own length;
- throughput at batch 32: the dev split's batches of 32 in file order, each trimmed to its longest
  example as evaluation runs them, of which a fixed, seeded sample (enough batches for 256
  examples by default) is timed: the whole split, timed for every model and round, was most of
  the stage's cost and measured nothing the sample does not.

Each model's figure is the median over the rounds; the rounds themselves are kept, so the report
can show the spread. Measured this way, two models of the same architecture come out within a few
per cent of each other, which one fixed example timed in separate processes did not give.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from ..data import batching
from ..data.batching import model_inputs
from ..data.ofrecord import checked_count, iter_records
from ..errors import DataError
from ..io import read_json

SPEED_KEYS = ("models", "rounds", "latency_examples", "throughput_examples", "dev_examples", "threads",
              "backend", "device", "precision")
MODEL_KEYS = ("latency_ms_batch1", "throughput_batch32", "latency_rounds", "throughput_rounds")


def count_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# What a model folder holds besides the model: its training's log and summary (their timings vary
# from run to run) and its card (written from the evaluation).
NOT_THE_MODEL = ("train_log.csv", "train_summary.json", "README.md")


def folder_size(folder: str | Path) -> int:
    """The bytes of the model a folder ships: weights, config and tokenizer files, not
    :data:`NOT_THE_MODEL`, so two runs that train the same weights report the same size."""
    return int(sum(f.stat().st_size for f in Path(folder).rglob("*")
                   if f.is_file() and f.name not in NOT_THE_MODEL))


def _one_by_one(path: Path, indices: set[int]) -> list[dict]:
    """Batch-1 numpy batches of the records at ``indices`` (file order), each trimmed."""
    out = []
    for i, record in enumerate(iter_records(path)):
        if i in indices:
            batch = {k: v[None] if k in batching.SEQUENCE_FEATURES else v for k, v in record.items()}
            out.append(batching.trim_batch(batch))
    return out


def _interleaved(feeds: dict[str, tuple[object, list]], rng, sync) -> dict[str, float]:
    """Seconds each runner spends on its list of inputs, the runners taking turns input by input
    (the i-th input of every runner, then the (i+1)-th), in an order drawn afresh from ``rng`` for
    each input: a burst of load on the machine falls on all of them alike, and no runner always
    runs right after the one (the teacher) that has just evicted the caches. ``sync()`` waits for
    the device before and after each timed call."""
    total = dict.fromkeys(feeds, 0.0)
    names = list(feeds)
    for i in range(max(len(inputs) for _, inputs in feeds.values())):
        for k in rng.permutation(len(names)).tolist():
            run, inputs = feeds[names[k]]
            if i < len(inputs):
                sync()
                start = time.perf_counter()
                run(inputs[i])
                sync()
                total[names[k]] += time.perf_counter() - start
    return total


def _sampled_batches(path: Path, batch_size: int, examples: int, seed: int) -> list[dict]:
    """A fixed, seeded sample of the file's batches (file order, trimmed), in file order: as many
    as hold ``examples`` examples; all of them when ``examples`` is 0 or the file is smaller."""
    full = list(batching.batches(path, batch_size))
    wanted = -(-examples // batch_size) if examples > 0 else len(full)
    if wanted >= len(full):
        return full
    keep = sorted(np.random.default_rng(seed).permutation(len(full))[:wanted].tolist())
    return [full[i] for i in keep]


def time_side_by_side(runners: dict[str, tuple], rounds: int = 5, latency_examples: int = 100,
                      throughput_examples: int = 256, batch_size: int = 32, seed: int = 0,
                      sync=lambda: None) -> dict:
    """Latency at batch 1 and throughput at batch 32 of ``runners`` (name -> ``(run, prepare, dev
    record file)``: ``run(prepare(numpy batch))`` is what is timed; ``prepare`` is not), measured
    as the module docstring says; any runtime (a kdlib model, an onnxruntime session) can be
    timed beside any other. The files must hold the same examples in the same order. Returns
    ``{"models": {name: {latency_ms_batch1, throughput_batch32, latency_rounds,
    throughput_rounds}}, "rounds", "latency_examples", "throughput_examples", "dev_examples"}``."""
    counts = {name: checked_count(path) for name, (_, _, path) in runners.items()}
    n = min(counts.values())
    if len(set(counts.values())) > 1:
        raise ValueError(f"the models' dev records differ in size: {counts}")
    sample = set(np.random.default_rng(seed).permutation(n)[:latency_examples].tolist())
    feeds = {}
    for name, (run, prepare, path) in runners.items():
        ones = [prepare(b) for b in _one_by_one(Path(path), sample)]
        sampled = _sampled_batches(Path(path), batch_size, throughput_examples, seed)
        full = [prepare(b) for b in sampled]
        feeds[name] = (run, ones, full)
    timed = sum(len(b["index"]) for b in sampled)
    timings = {name: {"latency": [], "throughput": []} for name in runners}
    names = list(runners)
    for name in names:                                             # warm-up
        run, ones, full = feeds[name]
        for inputs in ones[:10] + full[:2]:
            run(inputs)
    order = np.random.default_rng(seed + 1)
    for _ in range(rounds):
        latency = _interleaved({name: (feeds[name][0], feeds[name][1]) for name in names}, order, sync)
        throughput = _interleaved({name: (feeds[name][0], feeds[name][2]) for name in names}, order, sync)
        for name in names:
            timings[name]["latency"].append(1000 * latency[name] / len(feeds[name][1]))
            timings[name]["throughput"].append(timed / throughput[name])
    return {"models": {name: {"latency_ms_batch1": round(statistics.median(t["latency"]), 4),
                              "throughput_batch32": round(statistics.median(t["throughput"]), 2),
                              "latency_rounds": [round(v, 4) for v in t["latency"]],
                              "throughput_rounds": [round(v, 2) for v in t["throughput"]]}
                       for name, t in timings.items()},
            "rounds": rounds, "latency_examples": len(sample), "throughput_examples": timed,
            "dev_examples": n}


def side_by_side(B, models: dict[str, tuple[object, Path]], rounds: int = 5,
                 latency_examples: int = 100, throughput_examples: int = 256, batch_size: int = 32,
                 seed: int = 0) -> dict:
    """Speed of kdlib ``models`` (name -> (model, dev record file)) in backend ``B``, in the run's
    precision (:func:`time_side_by_side`), plus ``"threads", "backend", "device", "precision"``."""
    def sync():
        if B.device_name == "cuda":
            B.lib.cuda.synchronize()

    runners = {}
    for name, (model, path) in models.items():
        model.eval()
        runners[name] = (lambda inputs, model=model: model(**inputs),
                         lambda batch: model_inputs(B, batch), path)
    with B.no_grad(), B.autocast():             # the run's precision, as in evaluation
        result = time_side_by_side(runners, rounds, latency_examples, throughput_examples, batch_size,
                                   seed, sync)
    threads = B.lib.get_num_threads() if hasattr(B.lib, "get_num_threads") else None
    return {**result, "threads": threads, "backend": B.name, "device": B.device_name,
            "precision": B.precision}


def run_in_turn(result: dict, names: list[str], into: str = "teacher") -> dict:
    """``result`` with ``into``: the models ``names`` run one after the other on every input (an
    ensemble), round by round: latency their latencies' sum, throughput ``1 / sum(1 / t)``."""
    models = result["models"]
    latency = [sum(v) for v in zip(*(models[n]["latency_rounds"] for n in names))]
    throughput = [1 / sum(1 / t for t in v) for v in zip(*(models[n]["throughput_rounds"] for n in names))]
    models[into] = {"latency_ms_batch1": round(statistics.median(latency), 4),
                    "throughput_batch32": round(statistics.median(throughput), 2),
                    "latency_rounds": [round(v, 4) for v in latency],
                    "throughput_rounds": [round(v, 2) for v in throughput], "members": list(names)}
    return result


def read_speed(path: str | Path) -> dict:
    """The speed stage's JSON; a missing, unreadable or incomplete file is one DataError."""
    result = read_json(path)
    missing = [k for k in SPEED_KEYS if not isinstance(result, dict) or k not in result]
    if not missing:
        missing = [f"models.{name}.{k}" for name, m in result["models"].items() for k in MODEL_KEYS
                   if not isinstance(m, dict) or k not in m]
    if missing or "teacher" not in result["models"]:
        lacks = ", ".join(missing or ["models.teacher"])
        raise DataError(f"{path}: not the speed stage's JSON (lacks {lacks})")
    return result
