"""The README's results table, from a task's report.csv (the report stage's numbers, unrounded).

    .venv/bin/python bench/readme_table.py results/tweets

One row per model, in the report's order: the selection score on validation, the dev score, the
retained share, the gain over the baseline with its interval and verdict, the rows trained on, the
steps (selected / run / allowed), the speed-ups and the training time.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd


def number(value, decimals: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = f"{value:{'+' if signed else ''},.{decimals}f}"
    return text.replace("-", "−")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="a task's results folder, e.g. results/tweets")
    args = p.parse_args(argv)
    frame = pd.read_csv(args.results / "report.csv")
    text = ["model", "algorithm", "layers/hidden", "baseline", "verdict", "warning"]
    columns = [c for c in text if c in frame]
    frame[columns] = frame[columns].astype(object).fillna("")
    metric = next(c for c in frame.columns if c.startswith("dev ") and not c.endswith((" low", " high")))
    selection = next((c for c in frame.columns if c.endswith(" (selection)")), None)
    gain = f"gain {metric.split(' ', 1)[1]} (pts)"
    print("| model | algorithm | layers/hidden | params (M) | validation | dev | retained | baseline | "
          "gain (pts) [95%] | verdict | rows (transfer) | steps: selected / run / allowed | "
          "speed-up b1 | x teacher b32 | train (s) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    teacher = frame.loc[frame["model"] == "teacher"].iloc[0]
    for _, row in frame.iterrows():
        gain_cell = ""
        if row["baseline"]:
            gain_cell = (f"{number(row[gain], 2, True)} [{number(row[gain + ' low'], 2, True)}, "
                         f"{number(row[gain + ' high'], 2, True)}]")
        rows = row["training rows"]
        transfer = row["of them transfer"]
        steps = (f"{number(row['selected at step'], 0)} / {number(row['training steps'], 0)} / "
                 f"{number(row['steps allowed'], 0)}")
        speedup = f"{number(row['speed-up'], 2)} ({number(row['speed-up low'], 2)}-{number(row['speed-up high'], 2)})"
        b32 = row["throughput at batch 32 (ex/s)"] / teacher["throughput at batch 32 (ex/s)"]
        warning = f" ({row['warning']})" if row.get("warning") else ""
        cells = [row["model"], row["algorithm"], row["layers/hidden"], number(row["parameters (M)"], 2),
                 number(row[selection], 2) if selection else "", number(row[metric], 2) + warning,
                 f"{number(row['retained (%)'], 1)}%", row["baseline"], gain_cell, row["verdict"],
                 f"{number(rows, 0)} ({number(transfer, 0)})", steps, speedup, number(b32, 2),
                 number(row["training time (s)"], 0)]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
