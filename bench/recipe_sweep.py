"""Train variants of the default's students and print their validation scores: how the default's
budgets and hyperparameters were chosen without looking at dev.

    .venv/bin/python bench/recipe_sweep.py bench/recipes/round1.yaml [--cores 2] [--dry-run]

A variants file is a config file (merged over config.yaml by Snakemake) that names new students,
with `equal_steps: false` and each baseline's cap given as its own epochs. The script asks
Snakemake for each variant's `results/<task>/<variant>/train_summary.json` only: the students are
trained and selected on validation, and neither evaluated on dev nor reported. It then prints one
row per variant from its training summary: the budget, the steps run, and the best validation
score with its step. Run it in a working directory where the default has run (its records,
teacher and logit cache are reused).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml


def budget(spec: dict) -> str:
    phases = [spec[k] for k in ("first_phase_train", "train") if k in spec]
    return " + ".join(f"{p.get('epochs', 1)} ep" for p in phases) or "1 ep"


def lr_of(spec: dict) -> str:
    rates = [str(spec[k]["lr"]) for k in ("first_phase_train", "train") if "lr" in spec.get(k, {})]
    return " / ".join(dict.fromkeys(rates)) or "default"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("variants", type=Path)
    p.add_argument("--task", default="tweets")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--dry-run", action="store_true", help="only print the table of what exists")
    args = p.parse_args(argv)
    students = yaml.safe_load(args.variants.read_text())["students"]
    targets = [f"results/{args.task}/{name}/train_summary.json" for name in students]
    if not args.dry_run:
        subprocess.run([".venv/bin/snakemake", *targets, "--cores", str(args.cores), "--configfile",
                        "config.yaml", str(args.variants)], check=True)
    print("| variant | algorithm | budget | lr | steps allowed | steps run | best validation (step) |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: |")
    for name, spec in students.items():
        path = Path(f"results/{args.task}/{name}/train_summary.json")
        if not path.is_file():
            print(f"| {name} | {spec['algorithm']} | {budget(spec)} | {lr_of(spec)} | | | not trained |")
            continue
        selection = json.loads(path.read_text())["selection"]
        if selection["split"] != "validation":
            sys.exit(f"{name} selected on {selection['split']}: this table reads validation only")
        print(f"| {name} | {spec['algorithm']} | {budget(spec)} | {lr_of(spec)} | {selection['steps_allowed']:,} "
              f"| {selection['steps_run']:,} | {100 * selection['score']:.2f} ({selection['step']:,}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
