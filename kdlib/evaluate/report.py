"""The metrics report of one task: the teacher and every student in one table, each distilled
student beside its no-KD baseline with the gain's confidence interval and a verdict, as Markdown,
CSV and HTML, plus a plot of accuracy against speed-up and the training curves
(:mod:`kdlib.evaluate.plots`).

Units of the table (the eval JSONs hold fractions and bytes):

- task metrics are x100, as GLUE reports them (accuracy 0.8688 -> 86.88), the mean over a
  student's runs (``seeds: N``), with their range when there are several;
- ``retained (%)`` = 100 * score / teacher score, on the primary metric of the first dev split;
- ``gain <metric> (pts)`` = 100 * (score - baseline score), with its 95% paired bootstrap interval
  over the dev examples (pooled over the seeds, :mod:`kdlib.evaluate.stats`), for every metric of
  the first dev split; ``verdict`` says whether the primary metric's interval lies above zero
  (better), below (worse) or across it (no clear difference); ``McNemar p`` is the exact test of
  the two models' right/wrong answers (classification);
- latency at batch 1, throughput at batch 32 and ``speed-up`` (the teacher's latency over the
  model's) come from the speed stage, which times every model side by side; the speed-up's range
  over its rounds is shown;
- ``parameters (M)`` = parameters / 1e6, ``size (MB)`` = bytes on disk / 1e6;
- ``<split> <metric> (selection)`` (x100, the mean over the runs) is the score of the published
  checkpoint on the split that selected it, measured during training (the eval JSON's
  ``selection``): ``validation accuracy (selection)`` under ``selection: validation`` or ``last``,
  ``dev accuracy (selection)`` under ``selection: dev``, whose dev scores are then optimistic;
  models selected on different splits fill different columns;
- ``selected at step`` is the published checkpoint's step, ``training steps`` the steps run and
  ``steps allowed`` the budget, all phases of the first run: fewer steps run than allowed is an
  early stop. With ``training rows`` and ``of them transfer`` (a transfer set's rows, without a
  label) they say how much training a gain cost: a student that trains more steps than its
  baseline may owe part of its gain to the steps alone;
- ``warning`` says ``one class`` when a model's published checkpoint predicts one class for every
  example of its selection split (``one class (seeds 0, 2)`` when only some of its runs do);
- ``speed warning`` names the model's speed figures that are unreliable
  (:func:`kdlib.evaluate.speed.unreliable_figures`: their rounds disagree, or the machine was busy
  while they were measured), its speed-up too when its latency or the teacher's is; the notes say
  why.

Eval JSONs without ``selection`` (written before it) leave those cells empty.

The baseline of a distilled student is the ``algorithm: none`` student with the same architecture
(:func:`kdlib.config.baselines`). Only the plots need matplotlib, imported when one is drawn.
"""
from __future__ import annotations

import base64
import html
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import BASELINE_ALGORITHM, run_of
from ..errors import DataError
from ..io import atomic_path, write_text
from . import stats
from .speed import BUSY_BOUND, SPREAD_BOUND, machine_words, unreliable_figures, unreliable_reasons
from .table import (
    ALGORITHM,
    ARCHITECTURE,
    BACKEND,
    BASELINE,
    CSV_DECIMALS,
    DECIMALS,
    DEVICE,
    HIGH,
    LATENCY,
    LOW,
    MCNEMAR,
    METRIC_DECIMALS,
    NAME,
    PARAMETERS,
    PRECISION,
    RETAINED,
    ROLE,
    ROWS,
    SEEDS,
    SELECTED_STEP,
    SELECTION,
    SIZE,
    SPEED_WARNING,
    SPEEDUP,
    STEPS,
    STEPS_ALLOWED,
    TEXT_COLUMNS,
    THROUGHPUT,
    TRAIN,
    TRANSFER_ROWS,
    VERDICT,
    WARNING,
    gain_column,
    group_runs,
    selection_column,
)

if TYPE_CHECKING:   # pandas itself loads inside the functions: the Snakefile imports this module
    import pandas as pd

def check_consistent(task: str, evals: dict[str, dict], paths: dict[str, str]) -> None:
    """Every eval JSON must be of ``task`` and score the same primary metric as the teacher's."""
    metric = evals["teacher"]["metric"]
    for name, result in evals.items():
        if result.get("task", task) != task:
            raise DataError(f"{paths[name]}: holds task {result['task']!r}, not {task!r}")
        if result["metric"] != metric:
            raise DataError(f"{paths[name]}: primary metric {result['metric']!r} differs from the "
                            f"teacher's {metric!r}")


# ---- the rows -------------------------------------------------------------------------------------

MEMBER_ROLE = "ensemble member"     # one teacher of teacher.ensemble; the ensemble is the teacher


def role_of(name: str, result: dict) -> str:
    if name == "teacher":
        return "teacher"
    if result.get("role") == MEMBER_ROLE:
        return MEMBER_ROLE
    return "baseline" if result.get("algorithm") == BASELINE_ALGORITHM else "distilled"


def row_order(students: dict[str, dict], pairs: dict[str, str]) -> list[str]:
    """Student names grouped for reading: each baseline followed by the students it is the
    baseline of, groups in the order their first member appears; unpaired students stay alone."""
    order: list[str] = []

    def place(name):
        if name not in order:
            order.append(name)

    for name, result in students.items():
        base = name if role_of(name, result) == "baseline" else pairs.get(name)
        if base is None or base not in students:
            place(name)
            continue
        place(base)
        for other in students:
            if pairs.get(other) == base:
                place(other)
    return order


def _architecture(result: dict) -> str:
    model_type, layers, hidden = result.get("model_type"), result.get("layers"), result.get("hidden")
    if model_type == "bilstm":
        return f"BiLSTM {hidden}"
    if model_type == "ensemble":
        return f"{len(result.get('members') or [])} teachers"
    if layers is None or hidden is None:
        return ""
    return f"{layers}L/{hidden}"


def _metric_columns(evals: dict[str, dict]) -> list[tuple[str, str]]:
    """``(split, metric)`` of every dev metric in any eval JSON, the teacher's order first."""
    columns: list[tuple[str, str]] = []
    for result in evals.values():
        for split, values in result["metrics"].items():
            for metric in values:
                if (split, metric) not in columns:
                    columns.append((split, metric))
    return columns


def primary_column(teacher: dict) -> str:
    """The table column of the primary metric on the first dev split (the eval JSONs' ``score``)."""
    return f"{next(iter(teacher['metrics']), 'dev')} {teacher['metric']}"


def selection_of(result: dict) -> dict:
    """The eval JSON's ``selection`` (how training picked the published checkpoint), ``{}`` in
    eval JSONs written before it."""
    selection = result.get("selection")
    return selection if isinstance(selection, dict) else {}


def _selection_columns(evals: dict[str, dict]) -> list[str]:
    """The selection score columns of any eval JSON (one per split: modes may be mixed)."""
    columns = [selection_column(selection_of(result)) for result in evals.values()]
    return list(dict.fromkeys(c for c in columns if c))


def collapsed_runs(evals: dict[str, dict]) -> list[str]:
    """The runs whose published checkpoint predicts one class for every example of its
    selection split."""
    return [name for name, result in evals.items() if selection_of(result).get("collapsed")]


def collapse_warning(runs: dict[str, dict]) -> str:
    """The ``warning`` cell of a model with ``runs`` (``{run: eval JSON}``): ``one class`` when
    its one run collapsed, ``one class (every seed)`` when all of its runs did, ``one class
    (seeds 0, 2)`` when some did (seed indices, as in ``kd_seed2``), else empty."""
    collapsed = collapsed_runs(runs)
    if not collapsed:
        return ""
    if len(collapsed) == len(runs):
        return "one class" if len(runs) == 1 else "one class (every seed)"
    seeds = [str(run_of(name)[1]) for name in collapsed]
    return f"one class (seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)})"


def _speedups(speed: dict, name: str) -> list[float]:
    """The model's speed-up over the teacher in each round of the speed stage."""
    teacher = speed["models"]["teacher"]["latency_rounds"]
    return [t / m for t, m in zip(teacher, speed["models"][name]["latency_rounds"])]


def speed_warning(speed: dict, name: str) -> str:
    """The ``speed warning`` cell of model ``name``: ``unreliable: <figures>``, its latency and
    throughput where unreliable, its speed-up where its latency or the teacher's is; empty when
    all are sound."""
    machine = speed.get("machine")
    mine = unreliable_figures(speed["models"][name], machine)
    teacher = unreliable_figures(speed["models"]["teacher"], machine)
    figures = mine + (["speed-up"] if name != "teacher" and "latency" in mine + teacher else [])
    return f"unreliable: {', '.join(figures)}" if figures else ""


def table(teacher: dict, runs: dict[str, dict], pairs: dict[str, str], predictions: dict[str, tuple],
          speed: dict, regression: bool, members: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row for the teacher, each member of an ensemble teacher (``members``: name -> eval
    JSON, rows after the teacher's) and each student, in the units of the module docstring.

    ``runs`` maps run names (``kd``, ``kd_seed1`` ...) to eval JSONs; ``pairs`` is the
    ``{student: baseline}`` mapping; ``predictions`` maps ``teacher`` and every run to its
    ``(logits, labels)`` on the first dev split; ``speed`` is the speed stage's JSON. Cells an
    eval JSON cannot fill (an older one without ``selection``) are empty."""
    import pandas as pd  # lazily: the Snakefile imports this module
    groups = group_runs(runs)
    firsts = {student: runs[names[0]] for student, names in groups.items()}
    evals = {"teacher": teacher, **firsts}
    metric_columns = _metric_columns(evals)
    selection_columns = _selection_columns({"teacher": teacher, **runs})
    split = next(iter(teacher["metrics"]))
    first_metrics = [m for s, m in metric_columns if s == split]
    primary = primary_column(teacher)
    gold = predictions["teacher"][1]
    members = {name: {**result, "role": MEMBER_ROLE} for name, result in (members or {}).items()}
    alone = {"teacher": teacher, **members}        # rows of one model, never of seed runs
    rows = []
    for name in ["teacher", *members] + row_order(firsts, pairs):
        names = [name] if name in alone else groups[name]
        results = [alone[name]] if name in alone else [runs[r] for r in names]
        result = results[0]
        if name not in speed["models"]:
            raise DataError(f"the speed stage measured no model {name!r}")
        base = pairs.get(name) if name not in alone else None
        base = base if base in groups else None
        row = {NAME: name, ROLE: role_of(name, result), ALGORITHM: result.get("algorithm") or "",
               ARCHITECTURE: _architecture(result), PARAMETERS: result["parameters"] / 1e6,
               SIZE: result["size_bytes"] / 1e6}
        for s, metric in metric_columns:
            values = [r["metrics"].get(s, {}).get(metric) for r in results]
            values = [100 * v for v in values if v is not None]
            row[f"{s} {metric}"] = statistics.mean(values) if values else None
            if f"{s} {metric}" == primary:
                row[primary + LOW], row[primary + HIGH] = min(values), max(values)
        selections = [selection_of(r) for r in results]
        for column in selection_columns:
            values = [100 * s["score"] for s in selections
                      if selection_column(s) == column and s.get("score") is not None]
            row[column] = statistics.mean(values) if values else None
        row[WARNING] = collapse_warning(dict(zip(names, results)))
        row[RETAINED] = 100 * statistics.mean(r["score"] for r in results) / teacher["score"] \
            if teacher["score"] else None
        row[BASELINE] = base or ""
        if base:
            row.update(_gains(first_metrics, teacher["metric"], [predictions[r][0] for r in names],
                              [predictions[r][0] for r in groups[base]], gold, regression))
        timing = speed["models"][name]
        row[LATENCY], row[THROUGHPUT] = timing["latency_ms_batch1"], timing["throughput_batch32"]
        ups = _speedups(speed, name)
        row[SPEEDUP], row[SPEEDUP + LOW], row[SPEEDUP + HIGH] = statistics.median(ups), min(ups), max(ups)
        row[SPEED_WARNING] = speed_warning(speed, name)
        seconds = [r.get("train_seconds") for r in results if r.get("train_seconds") is not None]
        row[TRAIN] = statistics.mean(seconds) if seconds else None
        # the first run's (the others may stop early at other steps); None in older eval JSONs
        row[SELECTED_STEP], row[STEPS] = selections[0].get("step"), result.get("train_steps")
        row[STEPS_ALLOWED] = selections[0].get("steps_allowed")
        row[ROWS], row[TRANSFER_ROWS] = result.get("training_rows"), result.get("transfer_rows")
        row[BACKEND], row[DEVICE] = result.get("backend") or "", result.get("device") or ""
        row[PRECISION] = result.get("precision") or "fp32"      # eval JSONs before mixed precision
        row[SEEDS] = len(results)
        rows.append(row)
    frame = pd.DataFrame(rows)
    gains = [c for c in frame.columns if c.startswith("gain ")] + \
        [c for c in (VERDICT, MCNEMAR) if c in frame.columns]
    rest = [c for c in frame.columns if c not in gains]
    at = rest.index(BASELINE) + 1                    # the gains right after the baseline's name
    frame = frame[rest[:at] + gains + rest[at:]]
    numeric = [c for c in frame.columns if c not in TEXT_COLUMNS]
    frame[numeric] = frame[numeric].astype(float)
    return frame


def _gains(metrics: list[str], primary: str, runs_s: list, runs_b: list, gold, regression) -> dict:
    """The gain columns of a student over its baseline: per metric the mean gain and its interval
    (x100); the primary metric's verdict and McNemar's p."""
    row = {}
    if len(runs_s) != len(runs_b):
        raise DataError(f"a student has {len(runs_s)} runs, its baseline {len(runs_b)}; pair them "
                        "by running both with the same seeds")
    for metric in metrics:
        result = stats.compare(metric, runs_s, runs_b, gold, regression)
        column = gain_column(metric)
        row[column] = 100 * result["gain"]
        row[column + LOW], row[column + HIGH] = 100 * result["low"], 100 * result["high"]
        if metric == primary:
            row[VERDICT] = result["verdict"]
            row[MCNEMAR] = result["mcnemar_p"]
    return row


# ---- formatting -----------------------------------------------------------------------------------

def _decimals(column: str) -> int | None:
    if column in DECIMALS:
        return DECIMALS[column]
    if column in TEXT_COLUMNS:
        return None
    return METRIC_DECIMALS


def _number(value, decimals: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:{'+' if signed else ''}.{decimals}f}"


def format_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as the Markdown and HTML show it: fixed decimals per column; a gain with its
    interval, ``+1.90 [+0.60, +3.20]``; the primary metric and the speed-up with their ranges,
    ``83.68 (83.10-84.20)``, where there is one; missing values empty."""
    import pandas as pd  # lazily: the Snakefile imports this module
    bounds = {c[:-len(s)] for c in frame.columns for s in (LOW, HIGH) if c.endswith(s)}
    out = {}
    for column in frame.columns:
        if any(column == b + s for b in bounds for s in (LOW, HIGH)):
            continue
        decimals = _decimals(column)
        cells = []
        for i, value in enumerate(frame[column].tolist()):
            if decimals is None:
                cells.append("" if value is None or value != value else str(value))
                continue
            signed = column.startswith("gain ")
            cell = _number(value, decimals, signed)
            if column in bounds and cell:
                low, high = frame[column + LOW].iloc[i], frame[column + HIGH].iloc[i]
                if signed:
                    cell += f" [{_number(low, decimals, True)}, {_number(high, decimals, True)}]"
                elif not (math.isnan(low) or math.isnan(high)) and (low != high):
                    cell += f" ({_number(low, decimals)}-{_number(high, decimals)})"
            cells.append(cell)
        out[column] = cells
    return pd.DataFrame(out, dtype=object)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of :func:`format_table` (numbers right-aligned, ``|`` escaped)."""
    cells = format_table(frame)
    return markdown_cells(cells, [c for c in cells.columns if _decimals(c) is not None])


def markdown_cells(cells: pd.DataFrame, right: list[str]) -> str:
    """A GitHub Markdown table of text ``cells``; the ``right`` columns right-aligned."""
    def line(values):
        return "| " + " | ".join(str(v).replace("|", r"\|") for v in values) + " |"

    align = ["---:" if c in right else "---" for c in cells.columns]
    lines = [line(cells.columns), line(align)] + [line(row) for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# ---- the documents --------------------------------------------------------------------------------

# The header's sentence per selection mode, and its words for the models of a mode when they mix.
SELECTION_HEADERS = {
    "validation": "Checkpoints were selected on the validation split: each model kept its best "
                  "checkpoint on validation (stopping early after `patience` evaluations without "
                  "improvement, unless it is 0), and dev was scored once, after training.",
    "dev": "Checkpoints were selected on dev (`selection: dev`), the split scored here: each model "
           "kept its best dev checkpoint, so the dev scores are optimistic.",
    "last": "The last checkpoint of each training run was kept (`selection: last`): no selection, "
            "no early stop.",
    "unknown": "How the checkpoints were selected is not recorded (eval JSONs written before "
               "their `selection`).",
}
MIXED_MODES = {"validation": "on validation", "dev": "on dev", "last": "the last one kept",
               "unknown": "not recorded"}


def selection_modes(teacher: dict, runs: dict[str, dict]) -> dict[str, str]:
    """``{model: its selection mode}`` of the teacher and each student's first run; ``unknown``
    for an eval JSON without ``selection``."""
    firsts = {student: runs[names[0]] for student, names in group_runs(runs).items()}
    return {name: selection_of(result).get("mode") or "unknown"
            for name, result in {"teacher": teacher, **firsts}.items()}


def selection_header(teacher: dict, runs: dict[str, dict]) -> str:
    """The sentence under the report's title: which split selected the checkpoints, or
    ``mixed`` with the models of each mode. Whenever dev selected a checkpoint it says plainly
    that those dev scores are optimistic."""
    modes = selection_modes(teacher, runs)
    kinds = list(dict.fromkeys(modes.values()))
    if len(kinds) == 1:
        return SELECTION_HEADERS.get(kinds[0], f"Checkpoints were selected by `selection: {kinds[0]}`.")
    parts = [f"{MIXED_MODES.get(kind, kind)} for {', '.join(n for n, m in modes.items() if m == kind)}"
             for kind in kinds]
    optimistic = (" The dev scores of the models selected on dev are optimistic." if "dev" in kinds
                  else "")
    return f"Checkpoints were selected in mixed ways: {'; '.join(parts)}.{optimistic}"


def speed_caution(speed: dict) -> str:
    """The notes' warning on unreliable speed figures, with why (empty when all are sound)."""
    reasons = unreliable_reasons(speed["models"], speed.get("machine"))
    if not reasons:
        return ""
    return ("Warning: the speed figures named in `speed warning` are unreliable: "
            f"{'; '.join(reasons)}. Measure again on a quiet machine (`snakemake --cores 4 "
            "--forcerun measure_speed`) before quoting them. ")


def notes(teacher: dict, speed: dict, frame: pd.DataFrame) -> str:
    """The paragraph above the table: collapsed models and unreliable speed figures first, then
    units, definitions (the selection columns among them) and how speed was measured. ``frame``
    is :func:`table`'s."""
    seeds = int(frame[SEEDS].max())
    warned = [f"{name} {cell.removeprefix('one class').strip()}".strip()
              for name, cell in zip(frame[NAME], frame[WARNING]) if cell]
    collapse = (f"Warning: the published checkpoint of {', '.join(warned)} predicts one class for "
                "every example of its selection split (`warning`: `one class`); its scores are "
                "those of a constant guess. " if warned else "")
    runs = (f" Metrics are means over {seeds} runs per student (seeds), with their range; the "
            "intervals hold both the example and the seed noise." if seeds > 1 else "")
    chosen = [f"`{c}`" for c in frame.columns if c.endswith(SELECTION)]
    selection = (f" {' and '.join(chosen)} {'is' if len(chosen) == 1 else 'are'} the published "
                 "checkpoint's score on the selection split, measured during training "
                 "(validation, or dev under `selection: dev`); `selected at step` is that "
                 "checkpoint's step, `training steps` the steps run and `steps allowed` the "
                 "budget (the first run, all phases): fewer steps run than allowed is an early "
                 "stop." if chosen else "")
    rounds = f"{speed['rounds']} interleaved round" + ("s" if speed["rounds"] != 1 else "")
    machine = machine_words(speed.get("machine"))
    return (f"{collapse}{speed_caution(speed)}Task metrics are x100. `retained (%)` and the gains use "
            f"{primary_column(teacher)}; a gain is in points over the student's no-KD baseline (the "
            f"`algorithm: none` student of the same architecture) with its 95% paired bootstrap "
            f"interval over the dev examples ({stats.RESAMPLES:,} resamples); the verdict is "
            f"`better` or `worse` when the interval excludes zero, else `no clear difference`."
            f"{runs}{selection} Speed was measured side by side in one process ({rounds}, "
            f"{speed['threads']} threads, {speed['backend']}/{speed['device']}, "
            f"{speed['precision']}): latency over {speed['latency_examples']} dev examples at "
            f"batch 1, throughput over {speed['throughput_examples']} of the {speed['dev_examples']} dev "
            "examples at batch 32 (whole batches, a seeded sample); "
            "`speed-up` is the teacher's latency over the model's, with its range over the rounds. "
            f"`speed warning` names the figures whose rounds disagree by more than "
            f"{100 * SPREAD_BOUND:.0f}% ((max - min) / median), or every figure when other processes "
            f"used more than {100 * BUSY_BOUND:.0f}% of the CPUs' time while the rounds ran. "
            + (f"{machine} " if machine else "") + "Sizes are on disk, MB = 10^6 bytes.")


def markdown(task: str, frame: pd.DataFrame, note: str, png_name: str, curves_name: str,
             metric: str, header: str = "") -> str:
    """The Markdown report: title, ``header`` in bold (:func:`selection_header`), notes, the table
    and links to the two plots beside it."""
    header = f"**{header}**\n\n" if header else ""
    return (f"# kdflow report: {task}\n\n{header}{note}\n\n{markdown_table(frame)}\n"
            f"![{metric} against speed-up]({png_name})\n\n![training curves]({curves_name})\n")


HTML_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table.kdflow { border-collapse: collapse; font-size: 0.9em; }
table.kdflow th, table.kdflow td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
table.kdflow th { background: #f0f0f0; }
table.kdflow td { text-align: right; }
table.kdflow td:first-child { text-align: left; font-weight: bold; }
img { max-width: 100%; margin-top: 1.5em; }
"""


def html_page(task: str, frame: pd.DataFrame, note: str, png: bytes, curves: bytes, metric: str,
              header: str = "") -> str:
    """A self-contained page: title, ``header`` in bold, notes, the table and both plots as base64
    ``<img>``."""
    title = f"kdflow report: {task}"
    table_html = format_table(frame).to_html(index=False, escape=True, border=0, classes="kdflow")
    images = "".join(f"<img alt=\"{html.escape(alt)}\" src=\"data:image/png;base64,"
                     f"{base64.b64encode(data).decode('ascii')}\">\n"
                     for alt, data in ((f"{metric} against speed-up", png), ("training curves", curves)))
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{HTML_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n"
            + (f"<p><strong>{html.escape(header).replace('`', '')}</strong></p>\n" if header else "")
            + f"<p>{html.escape(note).replace('`', '')}</p>\n"
            f"{table_html}\n{images}</body>\n</html>\n")


def write_report(task: str, teacher: dict, runs: dict[str, dict], pairs: dict[str, str],
                 predictions: dict[str, tuple], speed: dict, logs: dict, regression: bool,
                 outputs: dict[str, Path], members: dict[str, dict] | None = None) -> pd.DataFrame:
    """Build the table and write the five outputs (``md``, ``csv``, ``html``, ``png``, ``curves``)
    atomically; returns the table. ``logs`` maps the teacher and each student (its first run's
    name) to its ``train_log.csv`` table; ``members``: an ensemble teacher's members (their
    predictions in ``predictions``)."""
    from . import plots
    frame = table(teacher, runs, pairs, predictions, speed, regression, members)
    errors = plots.metric_errors(frame, runs, predictions, teacher, regression)
    image = plots.accuracy_vs_speedup(frame, task, primary_column(teacher), errors)
    evals = {"teacher": teacher, **runs}
    selections = {name: selection_of(evals.get(name, {})) for name in logs}
    curves = plots.training_curves(logs, selections, task, teacher["metric"])
    for key, data in (("png", image), ("curves", curves)):
        with atomic_path(outputs[key]) as tmp:
            tmp.write_bytes(data)
    with atomic_path(outputs["csv"]) as tmp:
        frame.round(CSV_DECIMALS).to_csv(tmp, index=False)
    note, header = notes(teacher, speed, frame), selection_header(teacher, runs)
    write_text(outputs["md"], markdown(task, frame, note, Path(outputs["png"]).name,
                                       Path(outputs["curves"]).name, teacher["metric"], header))
    write_text(outputs["html"], html_page(task, frame, note, image, curves, teacher["metric"],
                                          header))
    return frame

