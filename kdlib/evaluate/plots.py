"""The report's two plots, as PNG bytes (matplotlib, imported when a plot is drawn):

- :func:`accuracy_vs_speedup`: the primary dev metric of every model against its speed-up over the
  teacher, with error bars: the metric's 95% bootstrap interval over the dev examples (pooled over
  the seeds) and the speed-up's range over the speed stage's rounds;
- :func:`training_curves`: one panel per model (the teacher and every student's first run; a
  two-phase student's log holds its last phase): its training loss and its score on the selection
  split against the step, the published checkpoint marked.
"""
from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np

from ..errors import KdflowError
from . import stats
from .table import BASELINE, HIGH, LOW, NAME, ROLE, SPEEDUP, group_runs

if TYPE_CHECKING:
    import pandas as pd

MARKERS = {"teacher": ("*", 260, "tab:red"), "ensemble member": ("P", 120, "tab:orange"),
           "baseline": ("s", 70, "tab:gray"), "distilled": ("o", 70, "tab:blue")}
LABELS = {"teacher": "teacher", "ensemble member": "ensemble member", "baseline": "no-KD baseline",
          "distilled": "distilled"}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise KdflowError("the report's plots need matplotlib: run the report stage in the "
                          "workflow runtime (.venv)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig, plt) -> bytes:
    buffer = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buffer, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
    return buffer.getvalue()


def metric_errors(frame: pd.DataFrame, runs: dict[str, dict], predictions: dict[str, tuple],
                  teacher: dict, regression: bool) -> dict[str, tuple[float, float]]:
    """``{model: (low, high)}``: the 95% interval (x100) of each model's primary metric."""
    groups = {"teacher": ["teacher"], **group_runs(runs)}
    gold = predictions["teacher"][1]
    return {name: tuple(100 * v for v in stats.metric_interval(
                teacher["metric"], [predictions[r][0] for r in groups.get(name, [name])], gold, regression))
            for name in frame[NAME]}


def accuracy_vs_speedup(frame: pd.DataFrame, task: str, column: str,
                        errors: dict[str, tuple[float, float]]) -> bytes:
    """The metric (x100) against the speed-up at batch 1, one labelled point per model with its
    error bars, baselines and distilled students in different markers, a dotted line from each
    baseline to its students."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter
    x, y = frame[SPEEDUP].to_numpy(), frame[column].to_numpy()
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    position = dict(zip(frame[NAME], zip(x, y)))
    for name, base in zip(frame[NAME], frame[BASELINE]):
        if base:
            (x0, y0), (x1, y1) = position[base], position[name]
            ax.plot([x0, x1], [y0, y1], ":", color="0.6", linewidth=1, zorder=1)
    xerr = np.vstack([x - frame[SPEEDUP + LOW].to_numpy(), frame[SPEEDUP + HIGH].to_numpy() - x])
    yerr = np.vstack([[y[i] - errors[n][0] for i, n in enumerate(frame[NAME])],
                      [errors[n][1] - y[i] for i, n in enumerate(frame[NAME])]])
    ax.errorbar(x, y, xerr=np.clip(xerr, 0, None), yerr=np.clip(yerr, 0, None), fmt="none",
                ecolor="0.5", elinewidth=0.8, capsize=2, zorder=1)
    for role, (marker, size, color) in MARKERS.items():
        rows = (frame[ROLE] == role).to_numpy()
        if rows.any():
            ax.scatter(x[rows], y[rows], marker=marker, s=size, color=color, edgecolor="black",
                       linewidth=0.5, label=LABELS[role], zorder=2)
    for name, xi, yi in zip(frame[NAME], x, y):
        ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(6, 5), fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlim(min(x.min(), 1.0) / 1.3, max(x.max(), 1.0) * 1.6)
    ax.set_xlabel("speed-up over the teacher, latency at batch 1 (log scale; bars: range over rounds)")
    ax.set_ylabel(f"{column} (x100; bars: 95% interval)")
    ax.set_title(f"{task}: {column} against speed-up")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png(fig, plt)


COLUMNS = 3              # panels per row of the training curves


def grid_shape(panels: int, columns: int = COLUMNS) -> tuple[int, int]:
    """``(rows, columns)`` of a grid for ``panels`` panels, at most ``columns`` wide."""
    columns = max(1, min(panels, columns))
    return math.ceil(panels / columns), columns


def eval_points(log: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, scores)`` of the steps of a ``train_log.csv`` with an evaluation: its
    ``eval_score`` column, or ``dev_score`` in logs written before the rename; empty cells are
    steps without one."""
    import pandas as pd
    column = next((c for c in ("eval_score", "dev_score") if c in log.columns), None)
    if column is None:
        return np.array([]), np.array([])
    scores = pd.to_numeric(log[column].astype(str).str.strip(), errors="coerce")
    rows = scores.notna().to_numpy()
    return log["step"].to_numpy()[rows], scores.to_numpy(dtype=float)[rows]


def panel_title(name: str, selection: dict) -> str:
    """``kd``, with ``stopped early at 900/1092`` (steps run of allowed, all phases) after an
    early stop and ``one class`` when the published checkpoint collapsed."""
    notes = []
    if selection.get("stopped_early"):
        notes.append(f"stopped early at {selection.get('steps_run')}/{selection.get('steps_allowed')}")
    if selection.get("collapsed"):
        notes.append("one class")
    return " – ".join([name, *notes])


def training_curves(logs: dict[str, pd.DataFrame], selections: dict[str, dict], task: str,
                    metric: str) -> bytes:
    """A grid of panels (:data:`COLUMNS` wide), one per model of ``logs`` (``{model: its
    train_log.csv}``): the training loss (a moving average over 10 steps) on the left axis, the
    score on the selection split (x100, at each evaluation, a line with markers) on the right
    axis, against the step of the log (the last phase). ``selections`` maps models to their eval
    JSON's ``selection`` (``{}`` or missing when unknown): a vertical line and a star mark the
    published checkpoint (``phase_step``, ``score``), the title an early stop
    (:func:`panel_title`)."""
    plt = _pyplot()
    rows, columns = grid_shape(max(1, len(logs)))
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), dpi=100,
                             squeeze=False)
    for ax, (name, log) in zip(axes.flat, logs.items()):
        selection = selections.get(name) or {}
        loss = log["loss"].astype(float).rolling(10, min_periods=1).mean()
        ax.plot(log["step"].to_numpy(), loss.to_numpy(), color="tab:blue", linewidth=1)
        ax.set_ylabel("loss (mean of 10 steps)", color="tab:blue", fontsize=8)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        score = ax.twinx()
        steps, scores = eval_points(log)
        score.plot(steps, 100 * scores, "o-", color="tab:orange", markersize=3, linewidth=1)
        split = selection.get("split", "eval")
        score.set_ylabel(f"{split} {metric} (x100)", color="tab:orange", fontsize=8)
        score.tick_params(labelsize=7)
        if selection.get("phase_step") is not None:
            ax.axvline(selection["phase_step"], color="0.4", linestyle="--", linewidth=0.8)
            if selection.get("score") is not None:
                score.plot([selection["phase_step"]], [100 * selection["score"]], "*", color="tab:red",
                           markersize=12, markeredgecolor="black", markeredgewidth=0.5)
        ax.set_title(panel_title(name, selection), fontsize=9)
    for ax in axes.flat[len(logs):]:
        ax.set_visible(False)
    fig.suptitle(f"{task}: training loss (left) and {metric} on the selection split (right); the "
                 "star marks the published checkpoint", fontsize=10)
    return _png(fig, plt)
