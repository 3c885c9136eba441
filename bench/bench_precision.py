"""Mixed precision on this machine: fp32 against bf16 through kdlib, side by side in one process.

    .venv/bin/python bench/bench_precision.py [--rounds 3] [--steps 6] [--json out.json]

For the teacher (the packaged MiniLM-L6, 6L/384), a 4L/312 student, a 3L/384 student (the
teacher's width, as PKD and Theseus build it) and the BiLSTM it measures, each round alternating
fp32 and bf16 on the same model:

- training: examples/s of kdlib's training step (forward and loss under ``B.autocast()``,
  backward, clipping, AdamW: :func:`kdlib.distill.train._update`), batch 32 x 40 tokens;
- inference: examples/s at batch 32 and latency at batch 1 (40 tokens), as the evaluation stages
  run it (``no_grad`` and autocast);
- the teacher's achieved training GFLOP/s (3 x the forward FLOPs: 8H^2 + 4HI + 4TH per token and
  layer) as a share of the bf16 matmul peak of the same machine (2048 x 2048, measured here).

It prints a Markdown table (medians over rounds, and each round) for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

from kdlib import backend
from kdlib.distill import ops, train
from kdlib.models.bert import BertConfig, build_bert
from kdlib.models.lstm import LstmConfig, build_bilstm
from kdlib.models.pretrained import load_pretrained_bert, resolve_pretrained

BATCH, LENGTH = 32, 40


def batch(vocab: int, n: int, rng) -> dict:
    return {"input_ids": rng.integers(1000, vocab, size=(n, LENGTH)),
            "attention_mask": np.ones((n, LENGTH), np.int64),
            "labels": rng.integers(0, 2, size=n)}


def models(B) -> dict:
    teacher, cfg = load_pretrained_bert(B, resolve_pretrained("builtin:minilm-l6"), 2, log=lambda m: None)
    small = BertConfig(vocab_size=cfg.vocab_size, hidden_size=312, num_hidden_layers=4,
                       num_attention_heads=12, intermediate_size=1200)
    wide = BertConfig(**{**cfg.to_dict(), "num_hidden_layers": 3})
    return {"teacher 6L/384": teacher, "student 4L/312": build_bert(B, small),
            "student 3L/384": build_bert(B, wide),
            "BiLSTM 300": build_bilstm(B, LstmConfig(vocab_size=10002))}


def forward_flops(model) -> float:
    """Forward FLOPs per token of a BERT's encoder (matmuls only)."""
    c = model.config
    H, I, T = c.hidden_size, c.intermediate_size, LENGTH
    return c.num_hidden_layers * (8 * H * H + 4 * H * I + 4 * T * H)


def timed(fn, repeats: int) -> list[float]:
    fn()                                                          # warm-up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def train_rate(B, model, feed, labels, steps: int) -> float:
    model.train()
    cfg = train.TrainConfig.from_dict({"lr": 1e-5})
    optimizer = train.make_optimizer(B, {"model": model}, cfg)
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        with B.autocast():
            loss = ops.hard_loss(B.F, model(**feed)["logits"], labels)
        optimizer.zero_grad()
        train._update(B, optimizer, None, loss, params, 1.0)
    return BATCH / statistics.median(timed(step, steps))


def infer(B, model, feed) -> float:
    model.eval()
    with B.no_grad(), B.autocast():
        return statistics.median(timed(lambda: model(**feed), 5))


def matmul_peak(lib, dtype, n: int = 2048) -> float:
    a, b = lib.randn(n, n).to(dtype), lib.randn(n, n).to(dtype)
    return 2 * n ** 3 / statistics.median(timed(lambda: a @ b, 5)) / 1e9


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=6, help="timed training steps per measurement")
    p.add_argument("--json", help="also write the raw numbers here")
    args = p.parse_args(argv)
    runs = {"fp32": backend.Backend("torch", "cpu", "fp32"), "bf16": backend.Backend("torch", "cpu", "bf16")}
    B = runs["fp32"]
    B.seed(0)
    rng = np.random.default_rng(0)
    nets = models(B)
    raw: dict = {"train": {}, "infer32": {}, "latency1": {}, "peak": {}}
    for r in range(args.rounds):
        for precision, run in runs.items():
            raw["peak"].setdefault(precision, []).append(
                matmul_peak(B.lib, B.lib.float32 if precision == "fp32" else B.lib.bfloat16))
        for name, model in nets.items():
            vocab = model.config.vocab_size
            big, one = batch(vocab, BATCH, rng), batch(vocab, 1, rng)
            feed = {k: B.tensor(v) for k, v in big.items() if k != "labels"}
            feed1 = {k: B.tensor(v) for k, v in one.items() if k != "labels"}
            labels = B.tensor(big["labels"])
            for precision, run in runs.items():
                key = (name, precision)
                raw["train"].setdefault(key, []).append(train_rate(run, model, feed, labels, args.steps))
                raw["infer32"].setdefault(key, []).append(BATCH / infer(run, model, feed))
                raw["latency1"].setdefault(key, []).append(1000 * infer(run, model, feed1))
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    med = {kind: {k: statistics.median(v) for k, v in values.items()} for kind, values in raw.items()}
    print(f"\ntorch {B.lib.__version__}, {B.lib.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"native bf16: {backend.cpu_has_bf16()}; {args.rounds} rounds, medians\n")
    print("| model | training fp32 (ex/s) | training bf16 (ex/s) | ratio | batch 32 fp32 (ex/s) | "
          "batch 32 bf16 (ex/s) | ratio | batch 1 fp32 (ms) | batch 1 bf16 (ms) | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in nets:
        t32, t16 = med["train"][(name, "fp32")], med["train"][(name, "bf16")]
        i32, i16 = med["infer32"][(name, "fp32")], med["infer32"][(name, "bf16")]
        l32, l16 = med["latency1"][(name, "fp32")], med["latency1"][(name, "bf16")]
        print(f"| {name} | {t32:.1f} | {t16:.1f} | {t16 / t32:.2f}x | {i32:.1f} | {i16:.1f} | "
              f"{i16 / i32:.2f}x | {l32:.2f} | {l16:.2f} | {l32 / l16:.2f}x |")
    teacher = nets["teacher 6L/384"]
    flops = 3 * forward_flops(teacher) * BATCH * LENGTH
    peak = med["peak"]["bf16"]
    print(f"\nmatmul 2048^2: fp32 {med['peak']['fp32']:.0f} GFLOP/s, bf16 {peak:.0f} GFLOP/s")
    for precision in ("fp32", "bf16"):
        rate = med["train"][("teacher 6L/384", precision)] / BATCH          # steps/s
        achieved = flops * rate / 1e9
        print(f"teacher training {precision}: {achieved:.0f} GFLOP/s = {100 * achieved / peak:.0f}% "
              f"of the bf16 matmul peak")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({kind: {f"{k[0]}|{k[1]}" if isinstance(k, tuple) else k: v
                              for k, v in values.items()} for kind, values in raw.items()}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
