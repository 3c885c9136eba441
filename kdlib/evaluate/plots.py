"""The report's two plots, as PNG bytes (matplotlib, imported when a plot is drawn):

- :func:`accuracy_vs_speedup`: the primary dev metric of every model against its speed-up over the
  teacher, with error bars: the metric's 95% bootstrap interval over the dev examples (pooled over
  the seeds) and the speed-up's range over the speed stage's rounds;
- :func:`training_curves`: training loss and dev metric against step, for the teacher and every
  student (first run; a two-phase student's log holds its last phase).
"""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from ..errors import KdflowError
from . import stats

if TYPE_CHECKING:
    import pandas as pd

MARKERS = {"teacher": ("*", 260, "tab:red"), "baseline": ("s", 70, "tab:gray"),
           "distilled": ("o", 70, "tab:blue")}
LABELS = {"teacher": "teacher", "baseline": "no-KD baseline", "distilled": "distilled"}


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
    from .report import NAME, group_runs
    groups = {"teacher": ["teacher"], **group_runs(runs)}
    gold = predictions["teacher"][1]
    return {name: tuple(100 * v for v in stats.metric_interval(
                teacher["metric"], [predictions[r][0] for r in groups[name]], gold, regression))
            for name in frame[NAME]}


def accuracy_vs_speedup(frame: pd.DataFrame, task: str, column: str,
                        errors: dict[str, tuple[float, float]]) -> bytes:
    """The metric (x100) against the speed-up at batch 1, one labelled point per model with its
    error bars, baselines and distilled students in different markers, a dotted line from each
    baseline to its students."""
    from .report import BASELINE, HIGH, LOW, NAME, ROLE, SPEEDUP
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


def training_curves(logs: dict[str, pd.DataFrame], task: str, metric: str) -> bytes:
    """Two panels: each model's training loss (a moving average over 10 steps) and its dev metric
    (x100, at each evaluation) against the step."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 7), dpi=120, sharex=False)
    for name, log in logs.items():
        step, loss = log["step"].to_numpy(), log["loss"].astype(float)
        line, = top.plot(step, loss.rolling(10, min_periods=1).mean().to_numpy(), linewidth=1,
                         label=name)
        dev = log[log["dev_score"].astype(str).str.strip() != ""]
        if len(dev):
            bottom.plot(dev["step"].to_numpy(), 100 * dev["dev_score"].astype(float).to_numpy(),
                        "o-", markersize=3, linewidth=1, color=line.get_color(), label=name)
    top.set_ylabel("training loss (mean of 10 steps)")
    top.set_title(f"{task}: training curves (the last phase of two-phase students)")
    bottom.set_ylabel(f"dev {metric} (x100)")
    for ax in (top, bottom):
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    top.legend(fontsize=7, ncol=2)
    return _png(fig, plt)
