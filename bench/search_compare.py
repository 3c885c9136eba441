"""A search's pick beside the hand-chosen students of the same task, on the search's target.

    .venv/bin/python bench/search_compare.py results/tweets

For every student of the task's report (after `make run`, and `make deploy` for an onnx_int8
target) and for the pick (after `make search`): the target's figure as the search measures it
(onnx_int8: the deployment table's int8 timings over the eager PyTorch teacher, and the int8 file's
size; kdlib: the speed stage's, and model.safetensors), whether it meets the target, its validation
score (selection) and its dev score. The hand-chosen students' figures come from their own stage's
run, the pick's from the search's re-measurement: each is a ratio to the teacher timed beside it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from kdlib.search.feasibility import figures
from kdlib.search.space import comparison, meets


def hand_chosen(results: Path, target: dict) -> list[dict]:
    report = pd.read_csv(results / "report.csv")
    metric = next(c for c in report.columns if c.startswith("dev ") and not c.endswith((" low", " high")))
    selection = next(c for c in report.columns if c.endswith(" (selection)"))
    if target["runtime"] == "onnx_int8":
        models = json.loads((results / "deployment.json").read_text())["models"]
        teacher = models["teacher"]["torch_fp32"]
        timing = {m: models[m]["onnx_int8"] for m in models}
        size = {m: (results / "export" / m / "onnx" / "model.int8.onnx").stat().st_size for m in models}
    else:
        models = json.loads((results / "speed.json").read_text())["models"]
        teacher, timing = models["teacher"], models
        size = {m: (results / m / "model.safetensors").stat().st_size for m in models}
    rows = []
    for _, row in report.iterrows():
        name = row["model"]
        if name == "teacher" or name not in timing:
            continue
        value = figures({**timing[name], "size_mb": size[name] / 1e6}, teacher)[target["metric"]]
        rows.append({"model": name, "chosen": "by hand", "algorithm": row["algorithm"],
                     "layers/hidden": row["layers/hidden"], target["metric"]: value,
                     "meets target": meets(target, value), "validation": row[selection], "dev": row[metric]})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="a task's results folder, e.g. results/tweets")
    args = p.parse_args(argv)
    search = json.loads((args.results / "search.json").read_text())
    target = search["target"]
    pick = next(r for r in search["dev"] if r["model"] == search["pick"])
    metric = next(k for k in pick if k.startswith("dev ") and not k.endswith((" low", " high")))
    selection = next(k for k in pick if k.endswith(" (selection)"))
    rows = hand_chosen(args.results, target) + [{
        "model": search["pick"], "chosen": "by the search", "algorithm": pick["algorithm"],
        "layers/hidden": pick["layers/hidden"], target["metric"]: search["after_training"]["value"],
        "meets target": search["after_training"]["meets"], "validation": pick[selection], "dev": pick[metric]}]
    frame = pd.DataFrame(rows).sort_values("validation", ascending=False)
    print(f"target: {target['metric']} {comparison(target)} {target['bound']} in {target['runtime']}")
    print(frame.to_markdown(index=False, floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
