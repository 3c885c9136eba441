"""How far apart the speed stage puts models of the same architecture, over repeated runs.

    .venv/bin/python bench/bench_speed_spread.py [--task tweets] [--runs 5]

Run in a working directory where the task's report has been built (e.g. after ``make run``). Each
run reruns the ``measure_speed`` stage alone (``snakemake --forcerun measure_speed``, which times
the teacher and every student side by side in one process) and reads its ``speed.json``. For each
run it computes every model's speed-up over the teacher as the report does (the median over the
rounds of teacher latency / model latency, at batch 1), then, for each group of models of the same
architecture (read from their ``config.json``), the gap between the fastest and the slowest:
``max / min - 1``. The target (issue 12) is under 5% in every run. It prints a Markdown table for
BENCHMARKS.md. Nothing else should run on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path


def architecture(folder: Path) -> str:
    cfg = json.loads((folder / "config.json").read_text())
    if cfg.get("model_type") == "bert":
        return f"{cfg['num_hidden_layers']}L/{cfg['hidden_size']}"
    return f"BiLSTM {cfg.get('hidden_size')}"


def speedups(speed: dict) -> dict[str, float]:
    teacher = speed["models"]["teacher"]["latency_rounds"]
    return {name: statistics.median(t / m for t, m in zip(teacher, model["latency_rounds"]))
            for name, model in speed["models"].items() if name != "teacher"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--task", default="tweets")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--snakemake", default=".venv/bin/snakemake")
    args = p.parse_args(argv)
    results = Path("results") / args.task
    target = results / "speed.json"
    runs = []
    for k in range(args.runs):
        subprocess.run([args.snakemake, "--cores", "4", "--forcerun", "measure_speed", str(target),
                        "--quiet"], check=True)
        runs.append(json.loads(target.read_text()))
        shutil.copy(target, results / f"speed_run{k + 1}.json")
        print(f"run {k + 1}: {runs[-1]['models']['teacher']['latency_ms_batch1']} ms teacher",
              file=sys.stderr)
    groups: dict[str, list[str]] = {}
    for name in runs[0]["models"]:
        if name != "teacher":
            groups.setdefault(architecture(results / name), []).append(name)
    groups = {arch: names for arch, names in groups.items() if len(names) > 1}
    ups = [speedups(run) for run in runs]
    print("| run | " + " | ".join(f"{n} ({a})" for a, names in groups.items() for n in names)
          + " | " + " | ".join(f"gap {a}" for a in groups) + " |")
    print("| --- |" + " ---: |" * (sum(map(len, groups.values())) + len(groups)))
    worst = {a: 0.0 for a in groups}
    for k, up in enumerate(ups, 1):
        cells = [f"{up[n]:.2f}" for names in groups.values() for n in names]
        gaps = []
        for a, names in groups.items():
            gap = max(up[n] for n in names) / min(up[n] for n in names) - 1
            worst[a] = max(worst[a], gap)
            gaps.append(f"{100 * gap:.1f}%")
        print(f"| {k} | " + " | ".join(cells + gaps) + " |")
    print("\nlargest gap over the runs: " + ", ".join(f"{a} {100 * g:.1f}%" for a, g in worst.items()))
    print(f"threads {runs[0]['threads']}, {runs[0]['backend']}/{runs[0]['device']}, "
          f"{runs[0]['precision']}, {runs[0]['rounds']} rounds a run, "
          f"{runs[0]['latency_examples']} latency examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
