"""The search's report: ``results/<task>/search.{md,csv,json}`` and ``search.png``.

- the candidates, one row each: shape, recipe, the figures measured before training (untrained,
  beside the teacher, in the target's runtime), whether they met the target, and for those that
  did, their score on validation, which picked the best;
- the pick beside its equal-budget baseline on dev, with the gain's interval and verdict
  (:func:`kdlib.evaluate.report.table`): the only dev scores of the search;
- the pick's figures re-measured after training (the search's speed stage in kdlib, its
  deployment table in onnxruntime int8), and whether it still meets the target;
- the plot: validation score against the target's figure for every trained candidate, the target
  line, the pick, the Pareto front, and the candidates dropped before training along the bottom.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..evaluate import report as task_report
from ..evaluate.plots import _png, _pyplot
from ..evaluate.speed import unreliable_reasons
from ..export.deploy import DECIMALS
from ..io import write_text
from .feasibility import figures, unreliable
from .pick import feasible
from .space import AT_LEAST, comparison, meets

if TYPE_CHECKING:
    import pandas as pd

METRIC_WORDS = {"latency_ms_batch1": "latency at batch 1 (ms)",
                "throughput_batch32": "throughput at batch 32 (ex/s)",
                "speedup_batch1": "speed-up at batch 1 (x teacher)",
                "speedup_batch32": "speed-up at batch 32 (x teacher)",
                "size_mb": "size (MB)"}
SIZE_FILES = {"kdlib": "model.safetensors", "onnx_int8": "model.int8.onnx"}
RUNTIME_WORDS = {"kdlib": "kdlib (the run's backend and precision)", "onnx_int8": "onnxruntime int8"}


def _shape(architecture: dict) -> str:
    if architecture["model"] == "bilstm":
        return f"BiLSTM {architecture['hidden']} (emb {architecture['embedding']})"
    return (f"BERT {architecture['layers']}L H{architecture['hidden']} I{architecture['intermediate']} "
            f"A{architecture['heads']}")


def candidates_table(feasibility: dict, pick: dict) -> pd.DataFrame:
    """One row per candidate, in the search's order."""
    import pandas as pd
    scores = pick["scores"]
    rows = []
    for name, c in feasibility["candidates"].items():
        score = scores.get(name, {})
        rows.append({"candidate": name, "recipe": c["recipe"], "algorithm": c["algorithm"],
                     "shape": _shape(c["architecture"]), "transfer": c["transfer"] or "",
                     "latency b1 (ms)": c["latency_ms_batch1"], "throughput b32 (ex/s)": c["throughput_batch32"],
                     "x teacher b1": c["speedup_batch1"], "x teacher b32": c["speedup_batch32"],
                     "size (MB)": c["size_mb"], "meets target": "yes" if c["feasible"] else "no (dropped)",
                     f"validation {pick['metric']}": 100 * score["score"] if score else None,
                     "picked": "pick" if name == pick["pick"] else ("one class" if score.get("collapsed") else ""),
                     "speed warning": ", ".join(c["unreliable"])})
    return pd.DataFrame(rows)


def remeasured(target: dict, pick: str, speed: dict, deployment: dict, size_bytes: int) -> dict:
    """The pick's figures after training, in the target's runtime (the search's speed JSON for
    kdlib, its deployment JSON for onnx_int8; ``size_bytes``: its weights file in that runtime):
    ``{figures..., "value", "meets", "unreliable"}``."""
    if target["runtime"] == "onnx_int8":
        models, machine = deployment["models"], deployment.get("machine")
        timing, teacher = models[pick]["onnx_int8"], models["teacher"]["torch_fp32"]
    else:
        models, machine = speed["models"], speed.get("machine")
        timing, teacher = models[pick], models["teacher"]
    values = figures({**timing, "size_mb": size_bytes / 1e6}, teacher)
    value = values[target["metric"]]
    return {**{k: round(v, 4) for k, v in values.items()}, "value": round(value, 4),
            "meets": meets(target, value), "unreliable": unreliable(timing, teacher, machine)}


def plot(feasibility: dict, pick: dict) -> bytes:
    """Validation score against the target's figure: trained candidates (the pick starred), the
    Pareto front among them, the target line, the dropped candidates as marks on the bottom axis."""
    plt = _pyplot()
    target, metric = feasibility["target"], feasibility["target"]["metric"]
    cands, scores = feasibility["candidates"], pick["scores"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    trained = [(cands[n]["value"], 100 * s["score"], n) for n, s in scores.items()]
    dropped = [c["value"] for n, c in cands.items() if not c["feasible"]]
    low = min(y for _, y, _ in trained)
    ax.scatter([x for x, _, _ in trained], [y for _, y, _ in trained], s=50, color="tab:blue",
               label="trained (met the target)", zorder=3)
    for x, y, n in trained:
        ax.annotate(n.removeprefix("search_"), (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    front = pareto(trained, metric in AT_LEAST)
    # the best score within the budget: a step at each front point, rising toward looser budgets
    ax.plot([x for x, _ in front], [y for _, y in front], color="tab:blue", alpha=0.5, drawstyle="steps-pre"
            if metric in AT_LEAST else "steps-post", label="Pareto front")
    best = next((x, y) for x, y, n in trained if n == pick["pick"])
    ax.scatter([best[0]], [best[1]], marker="*", s=260, color="tab:red", label="the pick", zorder=4)
    if dropped:
        ax.scatter(dropped, [low - 1.5] * len(dropped), marker="x", color="tab:gray",
                   label="dropped before training (no score)", zorder=3)
    ax.axvline(target["bound"], color="tab:red", linestyle="--", linewidth=1,
               label=f"target: {comparison(target)} {target['bound']:g}")
    ax.set_xlabel(f"{METRIC_WORDS[metric]}, untrained, {RUNTIME_WORDS[target['runtime']]}")
    ax.set_ylabel(f"validation {pick['metric']} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _png(fig, plt)


def pareto(points: list[tuple], higher_is_better: bool) -> list[tuple[float, float]]:
    """The (figure, score) points no other point beats in both, sorted by figure."""
    def better(a, b):
        return a >= b if higher_is_better else a <= b
    front = [(x, y) for x, y, *_ in points
             if not any(better(x2, x) and y2 >= y and (x2, y2) != (x, y) for x2, y2, *_ in points)]
    return sorted(set(front))


def write(task: str, out_stem: str, feasibility: dict, pick: dict, pair: pd.DataFrame, after: dict) -> dict:
    """Write ``<out_stem>.md``, ``.csv``, ``.json`` and ``.png``; return the JSON."""
    frame = candidates_table(feasibility, pick)
    target = feasibility["target"]
    frame.to_csv(f"{out_stem}.csv", index=False, float_format="%.4f")
    summary = {"task": task, "target": target, "reference": feasibility["reference"], "pick": pick["pick"],
               "baseline": pick["baseline"], "after_training": after,
               "candidates": json.loads(frame.to_json(orient="records")),
               "skipped": feasibility["skipped"],
               "dev": json.loads(pair.to_json(orient="records"))}
    write_text(f"{out_stem}.json", json.dumps(summary, indent=2) + "\n")
    png = plot(feasibility, pick)
    with open(f"{out_stem}.png", "wb") as fh:
        fh.write(png)
    write_text(f"{out_stem}.md", markdown(task, frame, feasibility, pick, pair, after, out_stem))
    return summary


MEASURE_AGAIN = ("`.venv/bin/snakemake --cores 4 --forcerun search_feasibility search_speed search_deployment "
                 "-- search`")


def caution(feasibility: dict) -> str:
    """The page's warning when figures measured before training are unreliable (empty when none is):
    which candidates were trained may then be wrong too."""
    flagged = [n for n, c in feasibility["candidates"].items() if c["unreliable"]]
    if not flagged:
        return ""
    reasons = unreliable_reasons({"teacher": feasibility["teacher"]}, feasibility.get("machine"))
    why = f" ({'; '.join(reasons)})" if reasons else ""
    size = feasibility["target"]["metric"] == "size_mb"          # sizes do not depend on the machine
    fate = "; the size target does not depend on them" if size else ", and so is which candidates met the target"
    return (f"**Warning: the speed figures of {len(flagged)} of {len(feasibility['candidates'])} candidates, named "
            f"in `speed warning`, are unreliable{why}{fate}. Measure again on a quiet machine ({MEASURE_AGAIN}) "
            "before trusting them.**\n\n")


def markdown(task: str, frame, feasibility: dict, pick: dict, pair, after: dict, out_stem: str) -> str:
    target = feasibility["target"]
    bound = f"`{target['metric']}` {comparison(target)} {target['bound']:g} in {RUNTIME_WORDS[target['runtime']]}"
    n, kept = len(frame), len(feasible(feasibility))
    cells = _cells(frame)
    right = [c for c in frame.columns if frame[c].dtype.kind == "f"]
    skipped = "".join(f"- `{name}`: {why}\n" for name, why in feasibility["skipped"].items())
    still = "meets" if after["meets"] else "**no longer meets**"
    remeasure = ("" if not after["unreliable"] else
                 f" (unreliable: {', '.join(after['unreliable'])}; measure again on a quiet machine)")
    return (
        f"# {task}: distil to a budget\n\n{caution(feasibility)}"
        f"Target: {bound}; speed-ups over {feasibility['reference']}. {n} candidates were measured "
        f"untrained beside the teacher; {kept} met the target and were trained (each selected on "
        f"validation), {n - kept} were dropped before training. The pick, **{pick['pick']}**, has the "
        f"best validation {pick['metric']} of those trained; it and its equal-budget baseline "
        f"`{pick['baseline']}` alone were scored on dev.\n\n"
        f"![validation score against {target['metric']}]({Path(out_stem).name}.png)\n\n"
        f"## The pick on dev\n\n{task_report.markdown_table(pair)}\n"
        f"After training, {pick['pick']} measured {after['value']:.3g} ({target['metric']}) and {still} "
        f"the target{remeasure}.\n\n"
        f"## Candidates\n\n{task_report.markdown_cells(cells, right)}\n"
        f"Figures measured untrained, side by side with the teacher in one process on "
        f"{feasibility['validation_examples']} validation examples (latency over {feasibility['latency_examples']} "
        f"at batch 1, throughput over {feasibility['throughput_examples']} at batch 32, medians of "
        f"{feasibility['rounds']} rounds). `size (MB)` is the weights file in that runtime "
        f"({SIZE_FILES[target['runtime']]}); the pick's table above gives its model folder on disk. "
        "Validation scores are those of each candidate's published checkpoint, as its training selected it.\n"
        + (f"\n## Not candidates\n\n{skipped}" if skipped else ""))


def _cells(frame):
    import pandas as pd
    out = {}
    for column in frame.columns:
        if frame[column].dtype.kind == "f":
            d = DECIMALS.get(column, 2)                 # the deployment table's, for the same columns
            out[column] = ["" if v != v else f"{v:.{d}f}" for v in frame[column].tolist()]
        else:
            out[column] = [str(v) for v in frame[column].tolist()]
    return pd.DataFrame(out, dtype=object)
