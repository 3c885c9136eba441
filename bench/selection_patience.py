"""What each early-stopping patience would have done, from one run trained without early stopping.

A run with ``patience: 0`` evaluates every model on the validation split at its ten evaluations and
trains its whole budget. Early stopping only cuts a run short (the steps before the stop are the
same), so its validation history tells, for every patience p, where each model would have stopped,
which step it would have kept and that step's validation score. Only validation numbers are read:
this is how the default `patience` is chosen without looking at dev.

    .venv/bin/python bench/selection_patience.py results/tweets [--patience 1 2 3 4 5 6]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from kdlib.distill import train


def simulate(history: list[dict], metric: str, patience: int) -> dict:
    """The evaluation a run with ``patience`` keeps, and the step it stops at, from the
    validation ``history`` (``{"step", metric, ...}`` per evaluation) of a run without a stop, by
    the rules of :func:`kdlib.distill.train.fit` (its ``since_best`` and its preference for
    evaluations that predict more than one class)."""
    seen, best, best_step = [], -math.inf, -1
    for entry in history:
        kept = next((h for h in seen if h["step"] == best_step), None)
        seen.append(entry)
        if best_step < 0 or (train._learning(entry), entry[metric]) > (train._learning(kept), best):
            best, best_step = entry[metric], entry["step"]
        if patience and train.since_best(seen, best_step) >= patience and entry is not history[-1]:
            return {"score": best, "step": best_step, "stop": entry["step"]}
    return {"score": best, "step": best_step, "stop": history[-1]["step"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="a task's results folder from a run with patience: 0")
    p.add_argument("--patience", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    args = p.parse_args(argv)
    summaries = {s.parent.name: json.loads(s.read_text()) for s in sorted(args.results.glob("*/train_summary.json"))}
    rows, totals = [], {k: [0, 0, 0.0] for k in args.patience}
    print("| model | evaluations (last phase) | best validation (step) | "
          + " | ".join(f"p={k}: kept (step) / stop" for k in args.patience) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in args.patience) + " |")
    for name, summary in summaries.items():
        selection = summary.get("selection") or {}
        if selection.get("patience", 0) != 0:
            raise SystemExit(f"{name}: trained with patience {selection.get('patience')}; this needs patience 0")
        metric, history = selection["metric"], summary["history"]
        full = simulate(history, metric, 0)
        cells = []
        for k in args.patience:
            got = simulate(history, metric, k)
            cells.append(f"{100 * got['score']:.2f} ({got['step']}) / {got['stop']}")
            totals[k][0] += got["score"] == full["score"]
            totals[k][1] += history[-1]["step"] - got["stop"]
            totals[k][2] += 100 * (got["score"] - full["score"])
        rows.append(name)
        print(f"| {name} | {len(history)} | {100 * full['score']:.2f} ({full['step']}) | " + " | ".join(cells) + " |")
    print()
    for k in args.patience:
        kept, saved, lost = totals[k]
        print(f"patience {k}: keeps the full run's best validation score for {kept} of {len(rows)} "
              f"models, {lost:+.2f} validation points in all, {saved:,} steps of the last phases saved")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
