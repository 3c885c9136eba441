"""Dev scores and verdicts of the same default under different `selection` modes, side by side.

    .venv/bin/python bench/selection_compare.py validation=results/tweets dev=../run_dev/results/tweets

Each argument names a run and its task's results folder (report.csv and the eval JSONs). For every
model: the dev score of the checkpoint each run published, the step it kept and the steps it ran,
and for every distilled student its gain over its baseline, the interval and the verdict.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def read_run(folder: Path) -> pd.DataFrame:
    frame = pd.read_csv(folder / "report.csv").set_index("model")
    frame["verdict"] = frame["verdict"].fillna("") if "verdict" in frame else ""
    for model in frame.index:
        selection = json.loads((folder / f"{model}_eval.json").read_text()).get("selection") or {}
        frame.loc[model, "kept"] = selection.get("step")
        frame.loc[model, "run"] = selection.get("steps_run")
        frame.loc[model, "mode"] = selection.get("mode", "")
    return frame


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="name=results folder, e.g. validation=results/tweets")
    args = p.parse_args(argv)
    runs = {}
    for item in args.runs:
        name, _, folder = item.partition("=")
        runs[name] = read_run(Path(folder))
    first = next(iter(runs.values()))
    metric = next(c for c in first.columns if c.startswith("dev ") and not c.endswith((" low", " high")))
    gain = f"gain {metric.split(' ', 1)[1]} (pts)"
    header = ["model"]
    for name in runs:
        header += [f"{name}: dev", f"{name}: kept / run", f"{name}: gain [95%]", f"{name}: verdict"]
    print("| " + " | ".join(header) + " |")
    print("| --- | " + " | ".join("---:" if i % 4 != 3 else "---" for i in range(len(header) - 1)) + " |")
    for model in first.index:
        cells = [model]
        for frame in runs.values():
            row = frame.loc[model]
            cells.append(f"{row[metric]:.2f}")
            cells.append(f"{int(row['kept']):,} / {int(row['run']):,}" if row["kept"] == row["kept"] else "")
            if isinstance(row.get("baseline"), str) and row["baseline"]:
                cells.append(f"{row[gain]:+.2f} [{row[gain + ' low']:+.2f}, {row[gain + ' high']:+.2f}]")
                cells.append(row["verdict"])
            else:
                cells += ["", ""]
        print("| " + " | ".join(cells).replace("-", "−") + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
