"""The report table's columns: their names, how many decimals each shows, the suffixes of bounds
and of selection scores; and the runs that make one row (:func:`group_runs`). The report
(:mod:`.report`) builds the table, the plots (:mod:`.plots`) draw from it."""
from __future__ import annotations

from ..config import run_of

# Column names, with how many decimals the Markdown and HTML tables show.
NAME, ROLE, ALGORITHM, ARCHITECTURE = "model", "role", "algorithm", "layers/hidden"
PARAMETERS, SIZE, RETAINED = "parameters (M)", "size (MB)", "retained (%)"
BASELINE, VERDICT, MCNEMAR = "baseline", "verdict", "McNemar p"
LATENCY, THROUGHPUT = "latency at batch 1 (ms)", "throughput at batch 32 (ex/s)"
SPEEDUP, TRAIN, BACKEND, DEVICE = "speed-up", "training time (s)", "backend", "device"
PRECISION, SEEDS = "precision", "seeds"
STEPS, ROWS, TRANSFER_ROWS = "training steps", "training rows", "of them transfer"
SELECTED_STEP, STEPS_ALLOWED, WARNING = "selected at step", "steps allowed", "warning"
SPEED_WARNING = "speed warning"  # which of a row's speed figures are unreliable
SELECTION = " (selection)"       # suffix of the selection score's column: "validation accuracy" + it
TEXT_COLUMNS = (NAME, ROLE, ALGORITHM, ARCHITECTURE, BASELINE, VERDICT, BACKEND, DEVICE, PRECISION,
                WARNING, SPEED_WARNING)
DECIMALS = {PARAMETERS: 2, SIZE: 1, RETAINED: 1, LATENCY: 2, THROUGHPUT: 1, SPEEDUP: 2, TRAIN: 0,
            STEPS: 0, SELECTED_STEP: 0, STEPS_ALLOWED: 0, ROWS: 0, TRANSFER_ROWS: 0, MCNEMAR: 4,
            SEEDS: 0}
METRIC_DECIMALS = 2
CSV_DECIMALS = 4      # the CSV keeps more than the tables show
LOW, HIGH = " low", " high"     # suffixes of an interval's or a range's bounds


def gain_column(metric: str) -> str:
    return f"gain {metric} (pts)"


def selection_column(selection: dict) -> str | None:
    """The table column of a selection score, ``validation accuracy (selection)``; None for a
    selection that names no split or metric."""
    split, metric = selection.get("split"), selection.get("metric")
    return f"{split} {metric}{SELECTION}" if split and metric else None



def group_runs(evals: dict[str, dict]) -> dict[str, list[str]]:
    """``{student: its run names, seed order}`` of the eval JSONs of student runs."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for run in evals:
        student, k = run_of(run)
        groups.setdefault(student, []).append((k, run))
    return {student: [run for _, run in sorted(runs)] for student, runs in groups.items()}
