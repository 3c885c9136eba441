"""Data-parallel training throughput on the CPU: kdlib's ``train.fit`` with one process against two
(torchrun, gloo), on a MiniLM-L6-sized BERT (6 layers, hidden 384, 12 heads, FFN 1536) at a global
batch of 32 x 64 tokens.

    .venv/bin/python bench/bench_ddp.py [--steps 10] [--rounds 2] [--layers 6]

Contenders: 1 process x 1 thread (the per-core baseline), 1 process x T threads and 2 processes x
T/2 threads each (T = the machine's cores), so the last two use the same cores. Each runs
``train.fit`` for ``--steps`` steps through ``torch.distributed.run``; the rate counts global
examples between the loss of step 2 and that of the last step (warm-up and the final checkpoint
left out). Rounds alternate the contenders; the figure is the median. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BATCH, LENGTH, WARMUP = 32, 64, 2


def write_records(folder: Path, n: int, vocab: int = 30522, seed: int = 0) -> Path:
    """``n`` full-length records (no padding, so every batch is 32 x 64 on every rank)."""
    from kdlib.data.ofrecord import RecordWriter, record_file

    rng = np.random.default_rng(seed)
    path = record_file(folder, "train")
    with RecordWriter(path) as w:
        w.write_batch({"input_ids": rng.integers(1000, vocab, (n, LENGTH)).astype(np.int32),
                       "input_mask": np.ones((n, LENGTH), np.int32),
                       "segment_ids": np.zeros((n, LENGTH), np.int32),
                       "label_ids": rng.integers(0, 2, (n, 1)).astype(np.int32),
                       "is_real_example": np.ones((n, 1), np.int32)})
    return path


def worker(records: str, steps: int, layers: int, threads: int) -> None:
    """One process of a run (started by torch.distributed.run): fit, and rank 0 prints the rate."""
    from kdlib import backend
    from kdlib.distill import train
    from kdlib.distill.teacher import supervised_loss_fn
    from kdlib.models.bert import BertConfig, build_bert

    B = backend.load("torch", "cpu")
    B.set_num_threads(threads)
    B.seed(0)
    model = build_bert(B, BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=layers,
                                     num_attention_heads=12, intermediate_size=1536, num_labels=2))
    loss_fn = supervised_loss_fn(B, model, regression=False)
    marks = {}

    def timed(batch):
        marks[int(batch["step"])] = time.perf_counter()
        return loss_fn(batch)
    cfg = train.TrainConfig.from_dict({"epochs": 1, "batch_size": BATCH, "lr": 1e-4, "save_seconds": 10**6,
                                       "shuffle_buffer": 0, "bucket": 0})
    with tempfile.TemporaryDirectory() as work:
        train.fit(B, {"model": model}, timed, train_path=records, cfg=cfg, work_dir=work,
                  desc=f"ddp x{B.world_size}")
    if B.rank == 0:
        last = steps - 1
        rate = BATCH * (last - WARMUP) / (marks[last] - marks[WARMUP])
        print(json.dumps({"examples_per_s": rate}))


def run(processes: int, threads: int, records: Path, steps: int, layers: int) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(processes), str(Path(__file__).resolve()), "--worker",
           str(records), "--steps", str(steps), "--layers", str(layers), "--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
    return json.loads(line)["examples_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--threads", type=int, default=0, help="(worker) threads per process")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.steps, args.layers, args.threads)
    if args.steps <= WARMUP + 1:
        raise SystemExit(f"--steps must exceed {WARMUP + 1}")
    cores = os.cpu_count() or 2
    contenders = [(1, 1), (1, cores), (2, max(1, cores // 2))]
    rates: dict = {c: [] for c in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        records = write_records(Path(tmp), BATCH * args.steps)
        for _ in range(args.rounds):
            for processes, threads in contenders:
                rates[(processes, threads)].append(run(processes, threads, records, args.steps, args.layers))
    base = statistics.median(rates[(1, cores)])
    print(f"Data-parallel training, kdlib `train.fit` on torch {__import__('torch').__version__} (CPU, gloo), "
          f"BERT {args.layers} layers x 384 (12 heads, FFN 1536: MiniLM-L6 has 6 layers), "
          f"global batch {BATCH} x {LENGTH}, "
          f"{cores} cores, median of {args.rounds} rounds of {args.steps} steps:\n")
    print("| processes x threads | examples/s | vs 1 process on all cores |")
    print("| --- | --- | --- |")
    for (processes, threads), values in rates.items():
        rate = statistics.median(values)
        print(f"| {processes} x {threads} | {rate:.1f} | {rate / base:.2f}x |")
    print(f"\nCommand: `.venv/bin/python bench/bench_ddp.py --steps {args.steps} --rounds {args.rounds}"
          f" --layers {args.layers}`")


if __name__ == "__main__":
    main()
