"""What ``torch.compile`` costs and saves per model size: the table behind ``compile: auto``.

    .venv/bin/python bench/bench_compile.py RECORDS [--steps 40] [--threads 1]

RECORDS is a BERT record folder (e.g. data/ofrecord/tweets/bert64+tweets_raw after `make run`);
its BiLSTM twin is found beside it (lstm32...). For each model of the embedded default's sizes it
trains the same real batches (batch 32, length-bucketed and trimmed as training does, bf16 where
the CPU computes it natively) on the run's thread count: eager steps, then the compiled model's
first steps (compilation, once per new shape family, and the switch to evaluation that validation
needs) and its steady steps, alternating eager and compiled rounds so that load hits both alike.
It prints, per model, the compilation seconds, the eager and compiled seconds per step and the
break-even: the steps a job must run before compiling pays back. kdlib.distill.compiling keeps
the figures for this machine class.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from kdlib import backend
from kdlib.data import batching
from kdlib.data.ofrecord import record_file
from kdlib.distill import compiling, train
from kdlib.distill.teacher import supervised_loss_fn
from kdlib.models.bert import BertConfig, build_bert
from kdlib.models.lstm import LstmConfig, build_bilstm

SIZES = {
    "BERT 4L/312 (kd, tinybert)": ("bert", dict(num_hidden_layers=4, hidden_size=312, num_attention_heads=12,
                                                intermediate_size=1200)),
    "BERT 3L/384 (bert_pkd, theseus)": ("bert", dict(num_hidden_layers=3, hidden_size=384,
                                                     num_attention_heads=12, intermediate_size=1536)),
    "BERT 6L/384 (the teacher)": ("bert", dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12,
                                               intermediate_size=1536)),
    "BiLSTM 150 (distilled_lstm)": ("bilstm", {}),
}


def build(B, kind: str, sizes: dict, vocab: int):
    B.seed(0)
    if kind == "bert":
        return build_bert(B, BertConfig(vocab_size=vocab, num_labels=2, **sizes))
    return build_bilstm(B, LstmConfig(vocab_size=vocab, hidden_size=150, fc_size=200, num_labels=2))


def stepper(B, model, batches, compiled: bool):
    if compiled:
        compiling.compile_model(B, model)
    model.train()
    optimizer = train.make_optimizer(B, {"model": model}, train.TrainConfig.from_dict({"lr": 1e-4}))
    loss_fn = supervised_loss_fn(B, model, regression=False)
    position = [0]

    def step():
        batch = batches[position[0] % len(batches)]
        position[0] += 1
        with B.autocast():
            loss, _ = loss_fn(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def seconds(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("records", type=Path)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    B = backend.load("torch", "cpu", backend.resolve_precision("auto", "torch", "cpu"))
    B.set_num_threads(args.threads)
    lstm_dir = next(args.records.parent.glob("lstm*" + args.records.name.partition("+")[1]
                                              + args.records.name.partition("+")[2]))
    print("| model | compile (s) | eager (s/step) | compiled (s/step) | speed-up | break-even (steps) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (kind, sizes) in SIZES.items():
        folder = args.records if kind == "bert" else lstm_dir
        data = batching.batches(record_file(folder, "train"), 32, shuffle_buffer=1000, seed=0, bucket=50)
        batches = [next(data) for _ in range(args.steps)]
        vocab = 30522 if kind == "bert" else 10002
        eager = stepper(B, build(B, kind, sizes, vocab), batches, compiled=False)
        fast_model = build(B, kind, sizes, vocab)
        fast = stepper(B, fast_model, batches, compiled=True)
        eager()
        first = time.perf_counter()
        for batch in batches[:8]:               # the first shapes: compilation, dynamic shapes after
            fast()
        fast_model.eval()
        with B.no_grad(), B.autocast():         # validation: the evaluation graph
            fast_model(**batching.model_inputs(B, batches[0]))
        fast_model.train()
        warm = time.perf_counter() - first
        e_times, c_times = [], []
        for _ in range(args.rounds):
            e_times.append(seconds(eager, args.steps) / args.steps)
            c_times.append(seconds(fast, args.steps) / args.steps)
        e, c = statistics.median(e_times), statistics.median(c_times)
        compile_s = warm - 8 * c
        gain = e - c
        even = f"{compile_s / gain:,.0f}" if gain > 0 else "never"
        print(f"| {name} | {compile_s:.0f} | {e:.3f} | {c:.3f} | {e / c:.2f}x | {even} |", flush=True)
    print(f"\n{args.threads} thread(s), {B.precision}, batch 32, {args.steps} steps x {args.rounds} rounds "
          "of each, alternating")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
