"""The GPU check: the teacher and TinyBERT stages on an SST-2-sized synthetic task, fp32 against bf16.

    python bench/gpu_check.py --device cuda --out OUT          # on a GPU machine (bench/gpu_check.sh)
    python bench/gpu_check.py --device cpu --tiny --out OUT    # the same path on tiny sizes (tests)

No Snakemake and no OneFlow are needed: it writes a synthetic task (67,000 train and 872 dev
examples of 128 WordPieces; the label is whether the first word ids sum to an even number, so
there is something to learn) and a BERT-base-shaped pretrained folder with random weights (12
layers x 768, 12 heads, FFN 3072, vocabulary 30,522: no real weights exist there), then runs the
stage scripts ``finetune_teacher`` and ``distill`` (TinyBERT, 4L/312) in each precision for a
fixed number of steps, and the tests that touch CUDA. It writes ``OUT/gpu_check.json`` and prints
examples/s, the share of the GPU's bf16 peak (measured here with a 8192^2 matmul) and the minutes
a 3-epoch SST-2 teacher (67,349 examples, batch 32) would take.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SST2_TRAIN = 67_349
BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, max_position_embeddings=512)
TINY = dict(vocab_size=300, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=96, max_position_embeddings=64)


def write_task(folder: Path, n_train: int, n_dev: int, length: int, vocab: int, seed: int = 0) -> None:
    """BERT records of a learnable synthetic rule, with the meta.json and vocab.txt ofrecord_bert writes."""
    from kdlib.data.ofrecord import RecordWriter, record_file

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, n in (("train", n_train), ("validation", n_dev), ("dev", n_dev)):
        with RecordWriter(record_file(folder, split)) as writer:
            for start in range(0, n, 4096):
                m = min(4096, n - start)
                ids = rng.integers(1000 if vocab > 2000 else 5, vocab, size=(m, length)).astype(np.int32)
                ids[:, 0] = 101 if vocab > 2000 else 2                   # [CLS]
                labels = (ids[:, 1:4].sum(axis=1) % 2).astype(np.int32)
                writer.write_batch({"input_ids": ids, "input_mask": np.ones_like(ids),
                                    "segment_ids": np.zeros_like(ids), "label_ids": labels,
                                    "is_real_example": np.ones(m, np.int32)})
        counts[split] = n
    (folder / "meta.json").write_text(json.dumps({"task": "sst2", "kind": "bert", "max_length": length,
                                                  "num_labels": 2, "counts": counts}))
    (folder / "vocab.txt").write_text("\n".join(vocab_tokens(vocab)) + "\n", encoding="utf-8")


def vocab_tokens(size: int) -> list[str]:
    """The placeholder vocabulary of ``size`` tokens of the pretrained folder and its records."""
    return [f"[unused{i}]" for i in range(size)]


def write_pretrained(folder: Path, cfg: dict, seed: int = 0) -> None:
    """A HuggingFace-layout BERT folder with random weights (N(0, 0.02), unit LayerNorm)."""
    from safetensors.numpy import save_file

    from kdlib.models.bert import BertConfig
    H, I, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
    arrays = {"bert.embeddings.word_embeddings.weight": normal(cfg["vocab_size"], H),
              "bert.embeddings.position_embeddings.weight": normal(cfg["max_position_embeddings"], H),
              "bert.embeddings.token_type_embeddings.weight": normal(2, H),
              "bert.embeddings.LayerNorm.weight": np.ones(H, np.float32),
              "bert.embeddings.LayerNorm.bias": np.zeros(H, np.float32),
              "bert.pooler.dense.weight": normal(H, H), "bert.pooler.dense.bias": np.zeros(H, np.float32)}
    for i in range(L):
        p = f"bert.encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):
            arrays[p + name + ".weight"], arrays[p + name + ".bias"] = normal(H, H), np.zeros(H, np.float32)
        arrays[p + "intermediate.dense.weight"] = normal(I, H)
        arrays[p + "intermediate.dense.bias"] = np.zeros(I, np.float32)
        arrays[p + "output.dense.weight"], arrays[p + "output.dense.bias"] = normal(H, I), np.zeros(H, np.float32)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            arrays[p + ln + ".weight"], arrays[p + ln + ".bias"] = np.ones(H, np.float32), np.zeros(H, np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(folder / "model.safetensors"))
    BertConfig.from_dict(cfg)                                         # the sizes are valid
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "bert", "hidden_act": "gelu"}))
    (folder / "vocab.txt").write_text("\n".join(vocab_tokens(cfg["vocab_size"])) + "\n")


def run_stage(args: list[str], log: Path) -> float:
    """One stage script in a subprocess; returns its wall seconds."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed; see {log}:\n" + log.read_text()[-3000:])
    return time.perf_counter() - start


def rate_of(folder: Path) -> float:
    """Median examples/s over the second half of a stage's train_log.csv (after warm-up)."""
    import csv
    with open(folder / "train_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return float(np.median([float(r["examples_per_s"]) for r in rows[len(rows) // 2:]]))


def bf16_peak(device: str) -> float:
    """TFLOP/s of a bf16 matmul (8192^2 on a GPU, 1024^2 on a CPU)."""
    import torch
    n = 8192 if device == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e12


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="tiny sizes (a check of the path, on a CPU)")
    p.add_argument("--steps", type=int, default=0, help="training steps per run (default: 300, tiny 4)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg, length, n_train, batch = (TINY, 16, 256, 16) if args.tiny else (BASE, 128, 67_000, 32)
    steps = args.steps or (4 if args.tiny else 300)
    write_task(out / "records", n_train, 64 if args.tiny else 872, length, cfg["vocab_size"])
    write_pretrained(out / "pretrained", cfg)
    epochs = steps * batch / n_train
    train = {"epochs": epochs, "batch_size": batch, "lr": 2e-5, "warmup": 0.1, "save_seconds": 10**6,
             "eval_every": 0, "patience": 0, "seed": 42}      # every step runs: a throughput check
    runtime = ["--backend", "torch", "--device", args.device, "--threads", "0", "--eval-batch-size", "256"]
    selection = ["--selection", "validation"]
    results = {"device": args.device, "steps": steps, "batch": batch, "length": length,
               "bf16_peak_tflops": bf16_peak(args.device)}
    teacher_flops = 3 * cfg["num_hidden_layers"] * (8 * cfg["hidden_size"] ** 2 + 4 * cfg["hidden_size"]
                                                    * cfg["intermediate_size"] + 4 * length * cfg["hidden_size"])
    for precision in ("fp32", "bf16"):
        teacher = out / precision / "teacher"
        seconds = run_stage(["workflow_scripts.finetune_teacher", "--task", "sst2", "--records",
                             str(out / "records"), "--pretrained", str(out / "pretrained"), "--out",
                             str(teacher), "--work", str(out / precision / "work_teacher"), "--spec",
                             json.dumps(train), "--precision", precision, *selection, *runtime],
                            out / f"teacher_{precision}.log")
        rate = rate_of(teacher)
        student = {"model": "bert", "layers": 2, "hidden": 24} if args.tiny else \
            {"model": "bert", "layers": 4, "hidden": 312, "intermediate": 1200}
        spec = {"algorithm": "tinybert", "architecture": {**student, "heads": cfg["num_attention_heads"]},
                "hyperparameters": {"temperature": 1}, "train": train, "first_phase_train": train}
        run_stage(["workflow_scripts.cache_teacher_logits", "--task", "sst2", "--teacher", str(teacher),
                   "--records", str(out / "records"), "--out", str(out / precision / "logits.npz"),
                   "--precision", precision, *runtime], out / f"logits_{precision}.log")
        distill_seconds = run_stage(["workflow_scripts.distill", "--task", "sst2", "--student", "tinybert",
                                     "--spec", json.dumps(spec), "--records", str(out / "records"),
                                     "--teacher", str(teacher), "--logits", str(out / precision / "logits.npz"),
                                     "--out", str(out / precision / "tinybert"), "--work",
                                     str(out / precision / "work_tinybert"), "--precision", precision,
                                     *selection, *runtime], out / f"tinybert_{precision}.log")
        tflops = teacher_flops * length * rate / 1e12
        results[precision] = {
            "teacher_examples_per_s": rate, "teacher_seconds": round(seconds, 1),
            "teacher_tflops": tflops, "share_of_bf16_peak": tflops / results["bf16_peak_tflops"],
            "sst2_3_epoch_teacher_minutes": 3 * SST2_TRAIN / rate / 60,
            "tinybert_examples_per_s": rate_of(out / precision / "tinybert"),
            "tinybert_seconds": round(distill_seconds, 1)}
        print(f"{precision}: teacher {rate:.0f} ex/s ({tflops:.1f} TFLOP/s, "
              f"{100 * results[precision]['share_of_bf16_peak']:.0f}% of the bf16 peak); "
              f"a 3-epoch SST-2 teacher: {results[precision]['sst2_3_epoch_teacher_minutes']:.1f} min; "
              f"TinyBERT {results[precision]['tinybert_examples_per_s']:.0f} ex/s", flush=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
