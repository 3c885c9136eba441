"""The transfer-set ablation of BENCHMARKS.md (issue 14): kd and distilled_lstm with no transfer
set, unlabeled tweets, Tang et al.'s augmentation and both, each against its default baseline.

    .venv/bin/snakemake --cores 4 results/tweets/{kd,lstm}_{none,aug,both}_eval.json \\
        --rerun-triggers mtime --configfile config.yaml bench/transfer_ablation.yaml
    .venv/bin/python bench/transfer_ablation.py

Run after ``make run`` in the same folder (the default kd, distilled_lstm and baselines are the
other rows); ``--rerun-triggers mtime`` keeps the new students out of the baselines' parameters, so
the baselines are not retrained. Prints a Markdown table: dev accuracy, training rows and steps,
and the gain over the baseline with its 95% paired bootstrap interval
(:func:`kdlib.evaluate.stats.compare`).
"""
from __future__ import annotations

import json
from pathlib import Path

from kdlib.evaluate import stats
from kdlib.evaluate.eval_json import read_predictions

KINDS = ("none", "unlabeled (tweets_raw)", "augmentation (tang)", "both")
ROWS = [("kd", name, kind) for name, kind in zip(("kd_none", "kd", "kd_aug", "kd_both"), KINDS)] + \
       [("distilled_lstm", name, kind)
        for name, kind in zip(("lstm_none", "distilled_lstm", "lstm_aug", "lstm_both"), KINDS)]
BASELINE = {"kd": "bert_small_nokd", "distilled_lstm": "lstm_nokd"}


def points(x: float) -> str:
    return f"{100 * x:+.2f}".replace("-", "−")


def main(results: Path = Path("results/tweets")) -> None:
    print("| student | transfer set | training rows | steps | dev acc. | baseline | gain (pts) [95%] "
          "| verdict |")
    print("| --- | --- | ---: | ---: | ---: | --- | ---: | --- |")
    for family, name, kind in ROWS:
        student, gold = read_predictions(results / f"{name}_predictions.npz", "dev")
        baseline, _ = read_predictions(results / f"{BASELINE[family]}_predictions.npz", "dev")
        c = stats.compare("accuracy", [student], [baseline], gold, regression=False)
        summary = json.loads((results / name / "train_summary.json").read_text())
        accuracy = float((student.argmax(1) == gold).mean())
        gain = f"{points(c['gain'])} [{points(c['low'])}, {points(c['high'])}]"
        print(f"| {family} | {kind} | {summary['training_rows']:,} | {summary['steps']:,} "
              f"| {100 * accuracy:.2f} | {BASELINE[family]} | {gain} | {c['verdict']} |")


if __name__ == "__main__":
    main()
