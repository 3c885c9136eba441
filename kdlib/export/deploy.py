"""Deployment numbers: every model under onnxruntime, fp32 and int8, timed side by side in one
process with the teacher in eager PyTorch fp32, and the table of them.

The runners (each model's ``model.onnx`` and ``model.int8.onnx`` sessions, and the eager teacher,
the reference the speed-up targets are stated against) take turns input by input exactly as the
speed stage's models do (:func:`kdlib.evaluate.speed.time_side_by_side`): latency at batch 1 over
a seeded sample of dev examples, throughput at batch 32 over the dev split, medians of the rounds.
The dev scores come from each export's ``check.json`` (:func:`kdlib.export.onnx.check_onnx`).

A figure the speed stage's rules call unreliable (:func:`kdlib.evaluate.speed.unreliable_figures`:
rounds that disagree, a busy machine) is named in the row's ``warning``, with every speed-up
computed from it, and the page says why above the table.
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
            rounds: int, latency_examples: int, throughput_examples: int, batch_size: int = 32,
            runtimes: tuple[str, ...] = tuple(FILES)) -> dict:
    """Time every model of ``onnx_dirs`` (name -> its ONNX folder; the table's holds ``teacher``)
    under onnxruntime fp32 and int8 (``runtimes``: those of :data:`FILES` to time; the search's
    feasibility stage times int8 alone) and the teacher folder in eager PyTorch fp32, side by side,
    on the record files ``records[name]`` (``records["teacher"]``: the eager teacher's; the same
    examples in every file).
    Returns ``{"models": {name: {runtime: timings}}, "rounds", "latency_examples",
    "throughput_examples", "dev_examples", "threads", "versions"}`` (runtime: ``onnx_fp32``,
    ``onnx_int8``; the teacher also ``torch_fp32``)."""
    import onnxruntime
    import torch

    from ..backend import load
    from ..models.checkpoint import load_checkpoint
    from .onnx import onnx_feed, session

    runners = {}
    for name, folder in onnx_dirs.items():
        for runtime in runtimes:
            sess = session(Path(folder) / FILES[runtime], threads)
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
    batch 32, the speed-ups over the teacher in the same runtime and over the eager teacher, and
    the ``warning`` on unreliable figures (:func:`warning`)."""
    models, machine = deployment["models"], deployment.get("machine")
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
                "x eager teacher b1": eager["latency_ms_batch1"] / t["latency_ms_batch1"],
                "warning": warning(t, ref, eager, machine)})
    return pd.DataFrame(rows)


# The columns each figure of a row's own and of its references' makes (their units left out).
OWN = {"latency": ("latency b1", "x teacher b1", "x eager teacher b1"),
       "throughput": ("throughput b32", "x teacher b32")}
SAME_RUNTIME_TEACHER = {"latency": ("x teacher b1",), "throughput": ("x teacher b32",)}
EAGER_TEACHER = {"latency": ("x eager teacher b1",), "throughput": ()}


def warning(timing: dict, teacher: dict, eager: dict, machine: dict | None) -> str:
    """The ``warning`` cell of a row of ``timing``, beside the teacher in the same runtime and the
    eager teacher: ``unreliable: <columns>``, the columns that an unreliable figure makes (its
    own, or a speed-up over a teacher figure that is), ``unreliable: every figure`` when that is
    all of them; empty when all are sound."""
    columns = [c for t, made in ((timing, OWN), (teacher, SAME_RUNTIME_TEACHER), (eager, EAGER_TEACHER))
               for figure in speed.unreliable_figures(t, machine) for c in made[figure]]
    order = [c for made in OWN.values() for c in made]
    columns = sorted(set(columns), key=order.index)
    if columns == order:
        return "unreliable: every figure"
    return f"unreliable: {', '.join(columns)}" if columns else ""


def unreliable_reasons(deployment: dict) -> list[str]:
    """Why figures of the deployment JSON are unreliable (:func:`kdlib.evaluate.speed.unreliable_reasons`),
    each runner named ``<model> <runtime>``."""
    runners = {f"{name} {RUNTIME_NAMES[runtime]}": timing
               for name, runtimes in deployment["models"].items() for runtime, timing in runtimes.items()}
    return speed.unreliable_reasons(runners, deployment.get("machine"))


TEXT = ("model", "runtime", "warning")
DECIMALS = {"vs fp32": 2, "latency b1 (ms)": 2, "throughput b32 (ex/s)": 0, "x teacher b1": 2,
            "x teacher b32": 2, "x eager teacher b1": 2}


def markdown(task: str, frame: pd.DataFrame, deployment: dict) -> str:
    """The deployment table of ``task`` as a Markdown page, with how it was measured."""
    def cell(column, value):
        if column in TEXT:
            return value
        if value is None or value != value:
            return ""
        return f"{value:{'+' if column == 'vs fp32' else ''}.{DECIMALS.get(column, 2)}f}"

    cells = pd.DataFrame({c: [cell(c, v) for v in frame[c].tolist()] for c in frame.columns})
    v = deployment["versions"]
    reasons = unreliable_reasons(deployment)
    warned = "" if not reasons else (
        "**Warning: the figures named in `warning` are unreliable, and so is every speed-up computed "
        f"from them: {'; '.join(reasons)}. Measure again on a quiet machine (`snakemake --cores 4 "
        "--forcerun measure_deployment deploy`) before quoting them.**\n\n")
    machine = speed.machine_words(deployment.get("machine"))
    return (f"# {task}: deployment\n\n{warned}"
            + markdown_cells(cells, [c for c in frame.columns if c not in TEXT])
            + f"\nEvery model exported to ONNX (`results/{task}/export/<model>/onnx/`) and run by "
            f"onnxruntime {v['onnxruntime']} on the CPU with {deployment['threads']} threads, in fp32 and "
            "with int8 weights (dynamic quantisation); the teacher also in eager PyTorch "
            f"{v['torch']} fp32, the reference of `x eager teacher b1`. All runners were timed side by "
            "side in one process, taking turns input by input: latency over "
            f"{deployment['latency_examples']} dev examples at batch 1, throughput over "
            f"{deployment['throughput_examples']} of the {deployment['dev_examples']} dev examples "
            f"at batch 32, medians of {deployment['rounds']} "
            "rounds. `x teacher` compares with the teacher in the same runtime. Dev scores are each "
            "runtime's own, on the whole dev split. `warning` names the figures whose rounds disagree "
            f"by more than {100 * speed.SPREAD_BOUND:.0f}% ((max - min) / median), or every figure when "
            f"other processes used more than {100 * speed.BUSY_BOUND:.0f}% of the CPUs' time while the "
            f"rounds ran. {machine}".rstrip() + "\n")

