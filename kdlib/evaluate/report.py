"""The metrics report of one task: the teacher and every student in one table, each distilled
student beside its no-KD baseline, as Markdown, CSV and HTML, plus a plot of accuracy against
speed-up.

Units of the table (the eval JSONs hold fractions and bytes):

- task metrics are x100, as GLUE reports them (accuracy 0.8688 -> 86.88);
- ``retained (%)`` = 100 * score / teacher score, on the primary metric of the first dev split;
- ``gain vs baseline (pts)`` = 100 * (score - baseline score): points of that same metric;
- ``speed-up`` = teacher latency / latency, both at batch 1 (the teacher's is 1);
- ``parameters (M)`` = parameters / 1e6, ``size (MB)`` = bytes on disk / 1e6.

The baseline of a distilled student is the ``algorithm: none`` student with the same architecture
(:func:`kdlib.config.baselines`). Only the plot needs matplotlib, imported when a plot is drawn.
"""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import BASELINE_ALGORITHM
from ..errors import DataError, KdflowError
from ..io import atomic_path, write_text

if TYPE_CHECKING:   # pandas itself loads inside the functions: the Snakefile imports this module
    import pandas as pd

# Column names, with how many decimals the Markdown and HTML tables show.
NAME, ROLE, ALGORITHM, ARCHITECTURE = "model", "role", "algorithm", "layers/hidden"
PARAMETERS, SIZE, RETAINED = "parameters (M)", "size (MB)", "retained (%)"
BASELINE, GAIN = "baseline", "gain vs baseline (pts)"
LATENCY, THROUGHPUT = "latency at batch 1 (ms)", "throughput at batch 32 (ex/s)"
SPEEDUP, TRAIN, BACKEND, DEVICE = "speed-up", "training time (s)", "backend", "device"
PRECISION = "precision"
DECIMALS = {PARAMETERS: 2, SIZE: 1, RETAINED: 1, GAIN: 2, LATENCY: 2, THROUGHPUT: 1, SPEEDUP: 2,
            TRAIN: 0}
METRIC_DECIMALS = 2
CSV_DECIMALS = 4      # the CSV keeps more than the tables show


def check_consistent(task: str, evals: dict[str, dict], paths: dict[str, str]) -> None:
    """Every eval JSON must be of ``task`` and score the same primary metric as the teacher's."""
    metric = evals["teacher"]["metric"]
    for name, result in evals.items():
        if result.get("task", task) != task:
            raise DataError(f"{paths[name]}: holds task {result['task']!r}, not {task!r}")
        if result["metric"] != metric:
            raise DataError(f"{paths[name]}: primary metric {result['metric']!r} differs from the "
                            f"teacher's {metric!r}")


# ---- the table ------------------------------------------------------------------------------------

def role_of(name: str, result: dict) -> str:
    if name == "teacher":
        return "teacher"
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


def table(teacher: dict, students: dict[str, dict], pairs: dict[str, str]) -> pd.DataFrame:
    """One row for the teacher and each student, numbers in the units of the module docstring.

    ``students`` maps names to eval JSONs; ``pairs`` is :func:`baselines`' mapping (entries whose
    baseline is not among ``students`` are ignored).
    """
    import pandas as pd  # lazily: the Snakefile imports this module
    evals = {"teacher": teacher, **students}
    metric_columns = _metric_columns(evals)
    reference, reference_latency = teacher["score"], teacher["latency_ms_batch1"]
    rows = []
    for name in ["teacher"] + row_order(students, pairs):
        result = evals[name]
        base = pairs.get(name) if name != "teacher" else None
        base = base if base in students else None
        row = {
            NAME: name,
            ROLE: role_of(name, result),
            ALGORITHM: result.get("algorithm") or "",
            ARCHITECTURE: _architecture(result),
            PARAMETERS: result["parameters"] / 1e6,
            SIZE: result["size_bytes"] / 1e6,
        }
        for split, metric in metric_columns:
            value = result["metrics"].get(split, {}).get(metric)
            row[f"{split} {metric}"] = None if value is None else 100 * value
        row[RETAINED] = 100 * result["score"] / reference if reference else None
        row[BASELINE] = base or ""
        row[GAIN] = 100 * (result["score"] - students[base]["score"]) if base else None
        row[LATENCY] = result["latency_ms_batch1"]
        row[THROUGHPUT] = result["throughput_batch32"]
        row[SPEEDUP] = reference_latency / result["latency_ms_batch1"]
        row[TRAIN] = result.get("train_seconds")
        row[BACKEND] = result.get("backend") or ""
        row[DEVICE] = result.get("device") or ""
        row[PRECISION] = result.get("precision") or "fp32"      # eval JSONs before mixed precision
        rows.append(row)
    frame = pd.DataFrame(rows)
    numeric = [c for c in frame.columns if _decimals(c) is not None]
    frame[numeric] = frame[numeric].astype(float)
    return frame


def _decimals(column: str) -> int | None:
    if column in DECIMALS:
        return DECIMALS[column]
    if column in (NAME, ROLE, ALGORITHM, ARCHITECTURE, BASELINE, BACKEND, DEVICE, PRECISION):
        return None
    return METRIC_DECIMALS


def format_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as strings, as the Markdown and HTML show it: fixed decimals per column, the gain
    signed, missing values empty."""
    import pandas as pd  # lazily: the Snakefile imports this module
    def cell(value, decimals, signed):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if decimals is None:
            return str(value)
        return f"{value:{'+' if signed else ''}.{decimals}f}"

    out = {}
    for column in frame.columns:
        decimals = _decimals(column)
        out[column] = [cell(v, decimals, column == GAIN) for v in frame[column].tolist()]
    return pd.DataFrame(out, columns=list(frame.columns), dtype=object)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of :func:`format_table` (numbers right-aligned, ``|`` escaped)."""
    cells = format_table(frame)

    def line(values):
        return "| " + " | ".join(str(v).replace("|", r"\|") for v in values) + " |"

    align = ["---:" if _decimals(c) is not None else "---" for c in cells.columns]
    lines = [line(cells.columns), line(align)] + [line(row) for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# ---- the plot -------------------------------------------------------------------------------------

def primary_column(teacher: dict) -> str:
    """The table column of the primary metric on the first dev split (the eval JSONs' ``score``)."""
    return f"{next(iter(teacher['metrics']), 'dev')} {teacher['metric']}"


MARKERS = {"teacher": ("*", 260, "tab:red"), "baseline": ("s", 70, "tab:gray"),
           "distilled": ("o", 70, "tab:blue")}


def plot_png(frame: pd.DataFrame, task: str, column: str) -> bytes:
    """PNG bytes: primary dev metric (x100) against speed-up at batch 1, one labelled point per
    model, baselines and distilled students in different markers, a dotted line from each
    baseline to its students."""
    try:
        import matplotlib
    except ImportError:
        raise KdflowError("the report's plot needs matplotlib: run the report stage in the "
                          "workflow runtime (.venv)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    x, y = frame[SPEEDUP].to_numpy(), frame[column].to_numpy()
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    try:
        position = dict(zip(frame[NAME], zip(x, y)))
        for name, base in zip(frame[NAME], frame[BASELINE]):
            if base:
                (x0, y0), (x1, y1) = position[base], position[name]
                ax.plot([x0, x1], [y0, y1], ":", color="0.6", linewidth=1, zorder=1)
        for role, (marker, size, color) in MARKERS.items():
            rows = frame[ROLE] == role
            if rows.any():
                label = {"teacher": "teacher", "baseline": "no-KD baseline",
                         "distilled": "distilled"}[role]
                ax.scatter(x[rows.to_numpy()], y[rows.to_numpy()], marker=marker, s=size,
                           color=color, edgecolor="black", linewidth=0.5, label=label, zorder=2)
        for name, xi, yi in zip(frame[NAME], x, y):
            ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(6, 5), fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        low, high = min(x.min(), 1.0), max(x.max(), 1.0)
        ax.set_xlim(low / 1.3, high * 1.6)
        ax.set_xlabel("speed-up over the teacher, latency at batch 1 (log scale)")
        ax.set_ylabel(f"{column} (x100)")
        ax.set_title(f"{task}: {column} against speed-up")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
    return buffer.getvalue()


# ---- the documents --------------------------------------------------------------------------------

def notes(teacher: dict) -> str:
    """The paragraph above the table: units and definitions."""
    return (f"Task metrics are x100. `retained (%)` and `gain vs baseline (pts)` use the primary "
            f"metric, {primary_column(teacher)}; the gain is in points over the student's no-KD "
            "baseline (the `algorithm: none` student of the same architecture). `speed-up` is "
            "the teacher's latency at batch 1 over the model's. Sizes are on disk, "
            "MB = 10^6 bytes.")


def markdown(task: str, frame: pd.DataFrame, teacher: dict, png_name: str) -> str:
    """The Markdown report: title, notes, the table and a link to the plot beside it."""
    return (f"# kdflow report: {task}\n\n{notes(teacher)}\n\n{markdown_table(frame)}\n"
            f"![{teacher['metric']} against speed-up]({png_name})\n")


HTML_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table.kdflow { border-collapse: collapse; font-size: 0.9em; }
table.kdflow th, table.kdflow td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
table.kdflow th { background: #f0f0f0; }
table.kdflow td { text-align: right; }
table.kdflow td:first-child { text-align: left; font-weight: bold; }
img { max-width: 100%; margin-top: 1.5em; }
"""


def html_page(task: str, frame: pd.DataFrame, teacher: dict, png: bytes) -> str:
    """A self-contained page: title, notes, the table and the plot as a base64 ``<img>``."""
    title = f"kdflow report: {task}"
    table_html = format_table(frame).to_html(index=False, escape=True, border=0,
                                             classes="kdflow")
    image = base64.b64encode(png).decode("ascii")
    note = html.escape(notes(teacher)).replace("`", "")
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{HTML_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n<p>{note}</p>\n{table_html}\n"
            f"<img alt=\"{html.escape(teacher['metric'])} against speed-up\" "
            f"src=\"data:image/png;base64,{image}\">\n</body>\n</html>\n")


def write_report(task: str, teacher: dict, students: dict[str, dict], pairs: dict[str, str],
                 md: str | Path, csv: str | Path, html_path: str | Path,
                 png: str | Path) -> pd.DataFrame:
    """Build the table and write the four outputs atomically; returns the table."""
    frame = table(teacher, students, pairs)
    image = plot_png(frame, task, primary_column(teacher))
    with atomic_path(png) as tmp:
        tmp.write_bytes(image)
    with atomic_path(csv) as tmp:
        frame.round(CSV_DECIMALS).to_csv(tmp, index=False)
    write_text(md, markdown(task, frame, teacher, Path(png).name))
    write_text(html_path, html_page(task, frame, teacher, image))
    return frame
