"""Gains over seeds for chosen student/baseline pairs (BENCHMARKS.md, issue 14, "Seeds").

    .venv/bin/snakemake --cores 4 results/tweets/{kd,bert_small_nokd}_seed{1,2}_eval.json \\
        --rerun-triggers mtime --config seeds=3
    .venv/bin/python bench/seed_gains.py kd:bert_small_nokd distilled_lstm:lstm_nokd

Run after ``make run`` in the same folder. For each ``student:baseline`` pair, reads the dev
predictions of runs 0 to ``--seeds`` - 1 (``<name>`` and ``<name>_seed<k>``) and prints a Markdown
row: each run's dev accuracy, their mean, and the mean gain with its pooled 95% bootstrap interval
(:func:`kdlib.evaluate.stats.compare`, as the report computes it with ``seeds: N``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kdlib.evaluate import stats
from kdlib.evaluate.eval_json import read_predictions


def runs(results: Path, name: str, seeds: int):
    """Dev logits of runs 0 .. seeds - 1 of ``name``, and the dev labels."""
    pairs = [read_predictions(results / f"{name if k == 0 else f'{name}_seed{k}'}_predictions.npz", "dev")
             for k in range(seeds)]
    return [logits for logits, _ in pairs], pairs[0][1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("pairs", nargs="+", help="student:baseline")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--results", type=Path, default=Path("results/tweets"))
    args = p.parse_args(argv)
    print("| student | dev acc. per seed | mean | baseline | per seed | mean | gain (pts) [95%] "
          "| verdict |")
    print("| --- | --- | ---: | --- | --- | ---: | ---: | --- |")
    for pair in args.pairs:
        student, baseline = pair.split(":")
        a, gold = runs(args.results, student, args.seeds)
        b, _ = runs(args.results, baseline, args.seeds)
        acc = {name: [100 * float((r.argmax(1) == gold).mean()) for r in rs]
               for name, rs in ((student, a), (baseline, b))}
        c = stats.compare("accuracy", a, b, gold, regression=False)
        pts = lambda x: f"{100 * x:+.2f}".replace("-", "−")  # noqa: E731
        per_seed = {name: " / ".join(f"{x:.2f}" for x in values) for name, values in acc.items()}
        print(f"| {student} | {per_seed[student]} | {np.mean(acc[student]):.2f} | {baseline} "
              f"| {per_seed[baseline]} | {np.mean(acc[baseline]):.2f} "
              f"| {pts(c['gain'])} [{pts(c['low'])}, {pts(c['high'])}] | {c['verdict']} |")


if __name__ == "__main__":
    main()
