"""A model's size, and the speed of several models measured side by side.

:func:`side_by_side` times the teacher and every student in one process, on the same dev
examples, in the run's backend, device and precision, after a warm-up. The models take turns input
by input (every model runs an example, or a batch, before the next one is run), in a seeded random
order drawn for each input, so that load from elsewhere on the machine falls on all of them alike
and no model always follows the teacher (which evicts the caches; that costs the next model about
3%):

- latency at batch 1: the mean over a fixed, seeded sample of distinct dev examples (100 by
  default), each trimmed to its own length;
- throughput at batch 32: the dev split's batches of 32 in file order, each trimmed to its longest
  example as evaluation runs them, of which a fixed, seeded sample (enough batches for 256
  examples by default) is timed: the whole split, timed for every model and round, was most of
  the stage's cost and measured nothing the sample does not.

Each model's figure is the median over the rounds; the rounds themselves are kept, so the report
can show the spread. Measured this way, two models of the same architecture come out within a few
per cent of each other, which one fixed example timed in separate processes did not give. Before
the timed rounds every model runs every input once, untimed: in earlier runs the first timed round
was the slowest of five for most figures (by up to 30%), each input's shape running for the first
time.

A figure knows when it is unreliable (:func:`unreliable_figures`): when its rounds disagree by more
than :data:`SPREAD_BOUND`, or when other processes used more than :data:`BUSY_BOUND` of the CPUs
while the rounds ran (:func:`machine_during`, which also keeps the load average at the start and
the end). The stages that time side by side call :func:`no_spin_waiting` before any tensor library
is imported, so that no library's idle threads spin for long and steal the CPU from the runner
timed next (:data:`NO_SPIN`).
"""
from __future__ import annotations

import os
import statistics
import sys
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
FIGURES = ("latency", "throughput")

# A figure is unreliable when its rounds disagree by more than this ((max - min) / median). In four
# earlier runs of the default on the 2-core development machine the rounds after the first spread by
# 1% to 24% (about 6% typically); a burst of load that catches one round of three ([10, 30, 10] ms) spreads
# them by 200%. The bound sits above the quiet spreads, so a flag means something happened.
SPREAD_BOUND = 0.25
# Every figure of a run is unreliable when other processes used more than this share of the usable
# CPUs' time while the rounds ran. A runner that needs every core then lost at least that share of
# its CPU time, near the 15% by which a figure may move before it misleads (bench/bench_load.py), and
# more where a thread descheduled at a barrier holds up its peers; a quiet machine's own background
# (the workflow manager, the system) should stay within a few per cent. Steady load (a busy loop on
# every core) slows every round alike, so the rounds' spread alone cannot see it. The load average is
# kept but not used: it trails the last minute, so right after the workflow's training jobs it reads
# busy on a machine that is quiet now.
BUSY_BOUND = 0.10

# Environment settings that bound how long idle worker threads spin-wait for work. Spinning threads
# of one runner take the CPU from the runner timed next, and under load a spinning thread waits for
# a peer that is descheduled: the eager teacher measured 591 ms a text with a busy loop on both
# cores against 10.8 ms quiet. Not spinning at all costs more than it saves: with
# OMP_WAIT_POLICY=PASSIVE every operator wakes its sleeping peers, and the quiet default's eager
# teacher took 12.2 ms a text at batch 1 against 4.7 ms, a BiLSTM 5.7 ms against 1.25 ms; a spin of
# 10,000 iterations took 5.1 ms and 1.5 ms (BENCHMARKS.md, "Measurements that know when they are
# unreliable"). Each library reads them once, when it is loaded.
NO_SPIN = {
    # GNU OpenMP (libgomp, which torch's wheels ship; their intra-op pool, MKL and oneDNN run on it):
    # a waiting thread spins 10,000 times, not 300,000 (or without end under OMP_WAIT_POLICY=ACTIVE,
    # which no_spin_waiting removes), then sleeps
    "GOMP_SPINCOUNT": "10000",
    # Intel and LLVM OpenMP (builds of torch that ship libiomp5 or libomp): spin 1 ms after a
    # region, not 200 (not measured here: this machine's wheel ships libgomp)
    "KMP_BLOCKTIME": "1",
    # OpenBLAS's own threads (OneFlow 0.9 links it in): sleep after 2^4 cycles, its least, not 2^28
    "OPENBLAS_THREAD_TIMEOUT": "4",
}
# The libraries that read NO_SPIN when loaded (onnxruntime's sessions are told in their options:
# kdlib.export.onnx.session).
SPINNING_LIBRARIES = ("torch", "oneflow")


def no_spin_waiting() -> bool:
    """Set :data:`NO_SPIN` in this process's environment, over any value there, before a tensor
    library is imported: the speed and deployment stages call it first. True when it takes effect;
    False, leaving the environment alone, where torch or OneFlow is loaded already (each read its
    settings when it was loaded)."""
    if any(name in sys.modules for name in SPINNING_LIBRARIES):
        return False
    os.environ.pop("OMP_WAIT_POLICY", None)         # ACTIVE spins without end, PASSIVE never spins
    os.environ.update(NO_SPIN)
    return True


def spread(rounds: list[float]) -> float:
    """How far a figure's rounds disagree: ``(max - min) / median`` (0 for one round)."""
    middle = statistics.median(rounds)
    return (max(rounds) - min(rounds)) / middle if middle else 0.0


def unreliable_figures(timing: dict, machine: dict | None = None) -> list[str]:
    """Which of a model's figures (``latency``, ``throughput``; ``timing`` is its entry in the
    stage's JSON) are not sound: every one when ``machine`` (the JSON's ``machine``) says the machine
    was busy, else those whose rounds disagree by more than :data:`SPREAD_BOUND`. A JSON written
    before ``machine`` existed is judged by its rounds alone."""
    busy = bool(machine and machine.get("busy"))
    return [f for f in FIGURES if busy or spread(timing[f"{f}_rounds"]) > SPREAD_BOUND]


def unreliable_reasons(models: dict[str, dict], machine: dict | None = None) -> list[str]:
    """Why figures of ``models`` (name -> its entry in the JSON) are unreliable, one phrase per
    reason (none when every figure is sound): the machine was busy; the rounds of some figures
    disagree."""
    reasons = []
    if machine and machine.get("busy"):
        reasons.append(f"other processes used {100 * machine['others_cpu_share']:.0f}% of the "
                       f"{machine['usable_cpus']} usable CPUs' time while the rounds ran (more than "
                       f"{100 * BUSY_BOUND:.0f}%)")
    spreads = [f"{name} {figure} {100 * spread(timing[f'{figure}_rounds']):.0f}%"
               for name, timing in models.items() for figure in FIGURES
               if spread(timing[f"{figure}_rounds"]) > SPREAD_BOUND]
    if spreads:
        reasons.append(f"the rounds of {', '.join(spreads)} disagree by more than {100 * SPREAD_BOUND:.0f}% "
                       "((max - min) / median)")
    return reasons


def machine_words(machine: dict | None) -> str:
    """A sentence on the machine while the rounds ran, for the report and the deployment table
    (empty for a JSON written before ``machine`` existed)."""
    if not machine:
        return ""
    start, end = (machine.get(k) for k in ("load_average_start", "load_average_end"))
    load = " and ".join(f"{v[0]:.2f} at the {when}" for v, when in ((start, "start"), (end, "end")) if v)
    share = machine.get("others_cpu_share")
    others = "" if share is None else \
        f"other processes used {100 * share:.0f}% of the {machine['usable_cpus']} usable CPUs' time"
    spin = {True: " Idle threads of every library spun briefly, then slept (bounded spin-waiting).",
            False: " The tensor library kept its idle threads' default spin-waiting (it was loaded "
                   "before the stage could set it)."}.get(machine.get("no_spin_waiting"), "")
    parts = [p for p in (f"the 1-minute load average was {load}" if load else "", others) if p]
    text = f"While the rounds ran, {'; '.join(parts)}." if parts else ""
    return (text + spin).strip()


def _usable_cpu_ids() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _busy_seconds(cpus: set[int]) -> float | None:
    """Seconds the CPUs ``cpus`` have been busy since boot (user, nice, system, irq, softirq and
    steal time in /proc/stat); None where /proc/stat cannot be read (not Linux)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    ticks, found = 0, False
    for fields in map(str.split, lines):
        name = fields[0] if fields else ""
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            v = [int(x) for x in fields[1:]] + [0] * 8
            ticks += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
            found = True
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


def machine_now() -> dict:
    """A reading of the machine for :func:`machine_during`: the clock, this process's CPU time, the
    busy time of the CPUs it may use and the load average."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    cpus = _usable_cpu_ids()
    return {"wall": time.perf_counter(), "own": time.process_time(), "busy": _busy_seconds(cpus),
            "cpus": len(cpus), "load": load}


def machine_during(start: dict, end: dict) -> dict:
    """What the machine did between two :func:`machine_now` readings: the load average at each
    (1, 5 and 15 minutes), the usable CPUs, the share of their time that other processes used
    (busy time less this process's CPU time, over the wall time of every CPU; None where unknown),
    and ``busy``: that share above :data:`BUSY_BOUND`."""
    others = None
    if start["busy"] is not None and end["busy"] is not None:
        capacity = (end["wall"] - start["wall"]) * start["cpus"]
        used = (end["busy"] - start["busy"]) - (end["own"] - start["own"])
        others = round(min(1.0, max(0.0, used / capacity)), 4) if capacity > 0 else None
    return {"usable_cpus": start["cpus"], "load_average_start": start["load"], "load_average_end": end["load"],
            "others_cpu_share": others, "busy": others is not None and others > BUSY_BOUND}


def _figures(latency: list[float], throughput: list[float], machine: dict | None) -> dict:
    """A model's entry in the JSON: the medians of its rounds, the rounds, their spreads and the
    figures that are unreliable (judged from the rounds as the JSON keeps them, as its readers do)."""
    timing = {"latency_ms_batch1": round(statistics.median(latency), 4),
              "throughput_batch32": round(statistics.median(throughput), 2),
              "latency_rounds": [round(v, 4) for v in latency],
              "throughput_rounds": [round(v, 2) for v in throughput]}
    spreads = {f"{f}_spread": round(spread(timing[f"{f}_rounds"]), 4) for f in FIGURES}
    return {**timing, **spreads, "unreliable": unreliable_figures(timing, machine)}


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
    ``{"models": {name: {latency_ms_batch1, throughput_batch32, latency_rounds, throughput_rounds,
    latency_spread, throughput_spread, unreliable}}, "rounds", "latency_examples",
    "throughput_examples", "dev_examples", "machine"}`` (``machine``: :func:`machine_during` over
    the timed rounds; ``unreliable``: :func:`unreliable_figures`)."""
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
    ones = {name: (feeds[name][0], feeds[name][1]) for name in names}
    full = {name: (feeds[name][0], feeds[name][2]) for name in names}
    warm = np.random.default_rng(seed + 2)
    _interleaved(ones, warm, sync)                                  # warm-up: every input once
    _interleaved(full, warm, sync)
    order = np.random.default_rng(seed + 1)
    start = machine_now()
    for _ in range(rounds):
        latency = _interleaved(ones, order, sync)
        throughput = _interleaved(full, order, sync)
        for name in names:
            timings[name]["latency"].append(1000 * latency[name] / len(feeds[name][1]))
            timings[name]["throughput"].append(timed / throughput[name])
    machine = machine_during(start, machine_now())
    return {"models": {name: _figures(t["latency"], t["throughput"], machine) for name, t in timings.items()},
            "rounds": rounds, "latency_examples": len(sample), "throughput_examples": timed,
            "dev_examples": n, "machine": machine}


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
    models[into] = {**_figures(latency, throughput, result.get("machine")), "members": list(names)}
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
