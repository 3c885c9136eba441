"""Throughput of `python -m kdlib.predict` (texts per second) on a file of texts, per model folder.

Each round runs the command as a user does, as a subprocess writing a TSV, for every model in a
shuffled order; the figure is texts / wall seconds (start-up, loading, tokenising, batching and
writing included), the median of the rounds, with the summary line's backend and precision.

    .venv/bin/python bench/bench_predict.py --texts /tmp/tweets10k.txt \
        results/tweets/bert_pkd results/tweets/distilled_lstm
"""
from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model folders")
    p.add_argument("--texts", required=True, help="one text per line")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="--threads of the command (0: its default)")
    args = p.parse_args()
    n = sum(1 for _ in open(args.texts, encoding="utf-8"))
    rates = {m: [] for m in args.models}
    summary = {}
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for model in rng.sample(args.models, len(args.models)):
                start = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "kdlib.predict", model, args.texts, "--out",
                                       str(Path(tmp) / "labels.tsv"), "--threads", str(args.threads)],
                                      capture_output=True, text=True, check=False)
                seconds = time.perf_counter() - start
                if done.returncode:
                    sys.exit(f"{model}: {done.stderr.strip().splitlines()[-1]}")
                rates[model].append(n / seconds)
                summary[model] = done.stderr.strip().splitlines()[-1]
    print(f"kdlib.predict on {n} texts of {args.texts}, {args.rounds} rounds, medians\n")
    print("| model | texts/s | rounds | summary |\n| --- | ---: | --- | --- |")
    for model, values in rates.items():
        print(f"| {Path(model).name} | {statistics.median(values):.0f} | "
              f"{', '.join(f'{v:.0f}' for v in values)} | {summary[model]} |")


if __name__ == "__main__":
    main()
