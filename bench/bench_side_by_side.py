"""Two small training jobs side by side on one thread each, against the same two in turn on every
core: the measurement behind ``threads: 1`` for CPU training jobs (rules/common.smk, JOB_THREADS).

    .venv/bin/python bench/bench_side_by_side.py RECORDS [--steps 150] [--rounds 2]

RECORDS is a BERT record folder (e.g. data/ofrecord/tweets/bert64+tweets_raw after `make run`). A
job is ``--steps`` training steps of the default's 4L/312 BERT student (batch 32, real batches,
length-bucketed and trimmed, bf16 where the CPU computes it natively), run by this script in a
child process. "In turn": two jobs one after the other, each with every core the machine gives
this process. "Side by side": two jobs started together, one thread each. Rounds alternate the two
ways; the figure is the median wall time of each way and their ratio. Nothing else should run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def job(records: Path, steps: int, threads: int) -> None:
    from kdlib import backend
    from kdlib.data import batching
    from kdlib.data.ofrecord import record_file
    from kdlib.distill import train
    from kdlib.distill.teacher import supervised_loss_fn
    from kdlib.models.bert import BertConfig, build_bert

    B = backend.load("torch", "cpu", backend.resolve_precision("auto", "torch", "cpu"))
    B.set_num_threads(threads)
    B.seed(0)
    model = build_bert(B, BertConfig(vocab_size=30522, num_hidden_layers=4, hidden_size=312,
                                     num_attention_heads=12, intermediate_size=1200, num_labels=2))
    model.train()
    optimizer = train.make_optimizer(B, {"model": model}, train.TrainConfig.from_dict({"lr": 1e-4}))
    loss_fn = supervised_loss_fn(B, model, regression=False)
    data = batching.batches(record_file(records, "train"), 32, shuffle_buffer=1000, seed=0, bucket=50)
    for _ in range(steps):
        with B.autocast():
            loss, _ = loss_fn(next(data))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def run(records: Path, steps: int, threads: list[int]) -> float:
    """Seconds until every job of ``threads`` (one job per entry, started together) has ended."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, str(records), "--job", str(t), "--steps", str(steps)],
                              env=env) for t in threads]
    if any(p.wait() for p in procs):
        raise SystemExit("a job failed")
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("records", type=Path)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--job", type=int, default=0, help=argparse.SUPPRESS)   # internal: one job's threads
    args = p.parse_args(argv)
    if args.job:
        job(args.records, args.steps, args.job)
        return 0
    from kdlib.backend import usable_cpus
    cores = usable_cpus()
    turn, side = [], []
    for _ in range(args.rounds):
        turn.append(run(args.records, args.steps, [cores]) + run(args.records, args.steps, [cores]))
        side.append(run(args.records, args.steps, [1, 1]))
    t, s = statistics.median(turn), statistics.median(side)
    print(f"| two jobs of {args.steps} steps (4L/312, batch 32) | wall time (s) | steps per second |")
    print("| --- | ---: | ---: |")
    print(f"| in turn, {cores} threads each | {t:.1f} | {2 * args.steps / t:.2f} |")
    print(f"| side by side, 1 thread each | {s:.1f} | {2 * args.steps / s:.2f} |")
    print(f"\nside by side makes {t / s:.2f}x the steps per second of in turn "
          f"(medians of {args.rounds} rounds, {cores} usable CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
