"""The pick of a search: the feasible candidate with the best validation score.

Every feasible candidate trained as a student, and its training summary holds the score of its
published checkpoint on the selection split (validation: ``selection.score``), measured during
training. The pick is the best of those; dev plays no part. A candidate whose checkpoint predicts
one class for every validation example (``collapsed``) cannot be picked. Ties go to the candidate
first in the search's seeded order.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..io import read_json
from .space import AT_LEAST, baseline_name, comparison


def feasible(feasibility: dict) -> list[str]:
    """The candidates that met the target before training, in the search's order."""
    return [name for name, c in feasibility["candidates"].items() if c["feasible"]]


def read_scores(summaries: dict[str, str | Path]) -> dict[str, dict]:
    """``{candidate: {"score", "metric", "split", "collapsed"}}`` from each one's train_summary.json."""
    scores = {}
    for name, path in summaries.items():
        summary = read_json(path)
        selection = summary.get("selection") if isinstance(summary, dict) else None
        if not isinstance(selection, dict) or selection.get("score") is None:
            raise DataError(f"{path}: a training summary without a selection score; retrain {name}")
        if selection.get("split") == "dev":
            raise DataError(f"{path}: {name} was selected on dev (selection: dev); a search picks on "
                            "validation alone: set selection: validation")
        scores[name] = {"score": selection["score"], "metric": selection.get("metric"),
                        "split": selection.get("split"), "collapsed": bool(selection.get("collapsed"))}
    return scores


def choose(feasibility: dict, scores: dict[str, dict]) -> dict:
    """``{"pick", "baseline", "metric", "scores"}``: the best validation score among the feasible
    candidates that did not collapse. No feasible candidate, or none that learnt, is one
    DataError that says what the closest candidates measured."""
    names = feasible(feasibility)
    target = feasibility["target"]
    if not names:
        closest = sorted(feasibility["candidates"].items(), key=lambda kv: -_goodness(target, kv[1]["value"]))[:3]
        measured = ", ".join(f"{n} {c['value']:.3g}" for n, c in closest) or "no candidates"
        raise DataError(f"no candidate meets {target['metric']} {comparison(target)} {target['bound']} in "
                        f"{target['runtime']} (closest: {measured}); widen search.space or relax the target")
    learnt = [n for n in names if not scores[n]["collapsed"]]
    if not learnt:
        raise DataError(f"every feasible candidate ({', '.join(names)}) predicts one class on validation; "
                        "nothing was learnt: check their training (lr, epochs)")
    best = max(learnt, key=lambda n: (scores[n]["score"], -names.index(n)))
    return {"pick": best, "baseline": baseline_name(best), "metric": scores[best]["metric"],
            "scores": {n: scores[n] for n in names}}


def _goodness(target: dict, value: float) -> float:
    return value if target["metric"] in AT_LEAST else -value
