"""Deployment numbers: every model under onnxruntime, fp32 and int8, timed side by side in one
process with the teacher in eager PyTorch fp32, and the table of them.

The runners (each model's ``model.onnx`` and ``model.int8.onnx`` sessions, and the eager teacher,
the reference the speed-up targets are stated against) take turns input by input exactly as the
speed stage's models do (:func:`kdlib.evaluate.speed.time_side_by_side`): latency at batch 1 over
a seeded sample of dev examples, throughput at batch 32 over the dev split, medians of the rounds.
The dev scores come from each export's ``check.json`` (:func:`kdlib.export.onnx.check_onnx`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..data.batching import model_inputs
from ..evaluate import speed
from ..evaluate.report import markdown_cells

FILES = {"onnx_fp32": "model.onnx", "onnx_int8": "model.int8.onnx"}
EAGER = "torch_fp32"                  # the teacher in eager PyTorch fp32: the targets' reference
RUNTIME_NAMES = {"onnx_fp32": "onnxruntime fp32", "onnx_int8": "onnxruntime int8",
                 EAGER: "PyTorch eager fp32"}
CHECK_KEYS = {"onnx_fp32": "onnx_fp32", "onnx_int8": "onnx_int8", EAGER: "kdlib_fp32"}


def measure(onnx_dirs: dict[str, Path], records: dict[str, Path], teacher_dir: Path, threads: int,
            rounds: int, latency_examples: int, throughput_examples: int, batch_size: int = 32) -> dict:
    """Time every model of ``onnx_dirs`` (name -> its ONNX folder; ``teacher`` among them) under
    onnxruntime fp32 and int8 and the teacher folder in eager PyTorch fp32, side by side, on the
    dev records ``records[name]``. Returns ``{"models": {name: {runtime: timings}}, "rounds",
    "latency_examples", "throughput_examples", "dev_examples", "threads", "versions"}`` (runtime:
    ``onnx_fp32``, ``onnx_int8``; the teacher also ``torch_fp32``)."""
    import onnxruntime
    import torch

    from ..backend import load
    from ..models.checkpoint import load_checkpoint
    from .onnx import onnx_feed, session

    runners = {}
    for name, folder in onnx_dirs.items():
        for runtime, file in FILES.items():
            sess = session(Path(folder) / file, threads)
            runners[f"{name}/{runtime}"] = (lambda feed, sess=sess: sess.run(None, feed),
                                            lambda batch, sess=sess: onnx_feed(sess, batch), records[name])
    B = load("torch", "cpu", "fp32")
    B.set_num_threads(threads)
    teacher, _ = load_checkpoint(B, teacher_dir)
    runners[f"teacher/{EAGER}"] = (lambda inputs: teacher(**inputs), lambda batch: model_inputs(B, batch),
                                   records["teacher"])
    with B.no_grad():
        result = speed.time_side_by_side(runners, rounds, latency_examples, throughput_examples, batch_size)
    models: dict[str, dict] = {}
    for key, timings in result.pop("models").items():
        name, runtime = key.split("/")
        models.setdefault(name, {})[runtime] = timings
    return {"models": models, **result, "threads": threads, "device": "cpu",
            "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__.split("+")[0]}}


def table(deployment: dict, checks: dict[str, dict], metric: str) -> pd.DataFrame:
    """One row per model and runtime (the teacher's eager row first): the dev ``metric`` (%) as
    each runtime scores it, int8's change against fp32, latency at batch 1 and throughput at
    batch 32, the speed-ups over the teacher in the same runtime and over the eager teacher."""
    models = deployment["models"]
    eager = models["teacher"][EAGER]
    rows = []
    for name, runtimes in models.items():
        for runtime in (EAGER, *FILES):
            if runtime not in runtimes:
                continue
            t, ref = runtimes[runtime], models["teacher"][runtime]
            score = 100 * checks[name]["metrics"][CHECK_KEYS[runtime]][metric]
            fp32 = 100 * checks[name]["metrics"]["onnx_fp32"][metric]
            rows.append({
                "model": name, "runtime": RUNTIME_NAMES[runtime], f"dev {metric}": score,
                "vs fp32": score - fp32 if runtime == "onnx_int8" else None,
                "latency b1 (ms)": t["latency_ms_batch1"], "throughput b32 (ex/s)": t["throughput_batch32"],
                "x teacher b1": ref["latency_ms_batch1"] / t["latency_ms_batch1"],
                "x teacher b32": t["throughput_batch32"] / ref["throughput_batch32"],
                "x eager teacher b1": eager["latency_ms_batch1"] / t["latency_ms_batch1"]})
    return pd.DataFrame(rows)


DECIMALS = {"vs fp32": 2, "latency b1 (ms)": 2, "throughput b32 (ex/s)": 0, "x teacher b1": 2,
            "x teacher b32": 2, "x eager teacher b1": 2}


def markdown(task: str, frame: pd.DataFrame, deployment: dict) -> str:
    """The deployment table of ``task`` as a Markdown page, with how it was measured."""
    def cell(column, value):
        if column in ("model", "runtime"):
            return value
        if value is None or value != value:
            return ""
        return f"{value:{'+' if column == 'vs fp32' else ''}.{DECIMALS.get(column, 2)}f}"

    cells = pd.DataFrame({c: [cell(c, v) for v in frame[c].tolist()] for c in frame.columns})
    v = deployment["versions"]
    return (f"# {task}: deployment\n\n"
            + markdown_cells(cells, [c for c in frame.columns if c not in ("model", "runtime")])
            + f"\nEvery model exported to ONNX (`results/{task}/export/<model>/onnx/`) and run by "
            f"onnxruntime {v['onnxruntime']} on the CPU with {deployment['threads']} threads, in fp32 and "
            "with int8 weights (dynamic quantisation); the teacher also in eager PyTorch "
            f"{v['torch']} fp32, the reference of `x eager teacher b1`. All runners were timed side by "
            "side in one process, taking turns input by input: latency over "
            f"{deployment['latency_examples']} dev examples at batch 1, throughput over "
            f"{deployment['throughput_examples']} of the {deployment['dev_examples']} dev examples "
            "at batch 32, medians of {deployment['rounds']} "
            "rounds. `x teacher` compares with the teacher in the same runtime. Dev scores are each "
            "runtime's own, on the whole dev split.\n")

