"""Training throughput of the MiniLM-L6 teacher (batch 32, length 64): kdlib on torch against a
plain PyTorch reference of the same size written here, and kdlib on OneFlow as a ratio to torch.

    .venv/bin/python bench/bench_train.py [--steps 8] [--rounds 3]

Every workload trains on the same fixed batch (no trimming: 32 x 64 tokens), with AdamW and
dropout on. Rounds alternate the contenders so that machine noise hits both alike; the figure is
the median over rounds. OneFlow runs in .venv-oneflow as a subprocess, in turn with the others.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BATCH, LENGTH = 32, 64


def fixed_batch(vocab: int = 30522, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(1000, vocab, (BATCH, LENGTH)),
            "input_mask": np.ones((BATCH, LENGTH), np.int64),
            "segment_ids": np.zeros((BATCH, LENGTH), np.int64),
            "label_ids": rng.integers(0, 2, BATCH)}


def time_steps(step, steps: int) -> float:
    """Examples per second over ``steps`` steps, after two warm-up steps."""
    step(), step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return BATCH * steps / (time.perf_counter() - start)


def kdlib_step(backend_name: str):
    """One kdlib training step: kdlib's BERT loaded from the packaged MiniLM, kdlib's AdamW groups."""
    from kdlib import backend
    from kdlib.distill import train
    from kdlib.distill.teacher import supervised_loss_fn
    from kdlib.models.pretrained import load_pretrained_bert, resolve_pretrained

    B = backend.load(backend_name, "cpu")
    model, _ = load_pretrained_bert(B, resolve_pretrained("builtin:minilm-l6"), 2, log=lambda _: None)
    model.train()
    optimizer = train.make_optimizer(B, {"model": model}, train.TrainConfig.from_dict({"lr": 2e-5}))
    loss_fn = supervised_loss_fn(B, model, regression=False)
    batch = fixed_batch()

    def step():
        loss, _ = loss_fn(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        float(loss.item())
    return step


def reference_step():
    """The same model written directly in PyTorch: embeddings, 6 post-LN encoder layers (GELU),
    pooler and classifier, trained with torch.optim.AdamW."""
    import torch
    from torch import nn

    class Reference(nn.Module):
        def __init__(self, vocab=30522, hidden=384, layers=6, heads=12, ffn=1536):
            super().__init__()
            self.word = nn.Embedding(vocab, hidden)
            self.position = nn.Embedding(512, hidden)
            self.segment = nn.Embedding(2, hidden)
            self.norm = nn.LayerNorm(hidden, eps=1e-12)
            self.drop = nn.Dropout(0.1)
            layer = nn.TransformerEncoderLayer(hidden, heads, ffn, dropout=0.1, activation="gelu",
                                               layer_norm_eps=1e-12, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.pooler = nn.Linear(hidden, hidden)
            self.classifier = nn.Linear(hidden, 2)

        def forward(self, ids, mask, segments):
            positions = torch.arange(ids.shape[1]).unsqueeze(0)
            h = self.drop(self.norm(self.word(ids) + self.position(positions) + self.segment(segments)))
            h = self.encoder(h, src_key_padding_mask=mask == 0)
            return self.classifier(self.drop(torch.tanh(self.pooler(h[:, 0]))))

    torch.manual_seed(0)
    model = Reference().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    batch = {k: torch.tensor(v) for k, v in fixed_batch().items()}

    def step():
        logits = model(batch["input_ids"], batch["input_mask"], batch["segment_ids"])
        loss = nn.functional.cross_entropy(logits, batch["label_ids"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        float(loss.item())
    return step


def oneflow_round(steps: int) -> float | None:
    python = REPO / ".venv-oneflow" / "bin" / "python"
    if not python.exists():
        return None
    out = subprocess.run([str(python), __file__, "--worker", "oneflow", "--steps", str(steps)],
                         capture_output=True, text=True, cwd=REPO, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(time_steps(kdlib_step(args.worker), args.steps))
        return
    import torch
    torch.set_num_threads(2)
    kd, ref = kdlib_step("torch"), reference_step()
    results = {"kdlib torch": [], "plain PyTorch": [], "kdlib oneflow": []}
    for _ in range(args.rounds):
        results["kdlib torch"].append(time_steps(kd, args.steps))
        results["plain PyTorch"].append(time_steps(ref, args.steps))
        of = oneflow_round(max(2, args.steps // 4))
        if of is not None:
            results["kdlib oneflow"].append(of)
    med = {k: statistics.median(v) for k, v in results.items() if v}
    print(f"Command: `.venv/bin/python bench/bench_train.py --steps {args.steps} --rounds {args.rounds}`\n")
    print("| contender | examples/s (median) | rounds | ratio |")
    print("| --- | --- | --- | --- |")
    for name, value in med.items():
        base = med["plain PyTorch"] if name == "kdlib torch" else med["kdlib torch"]
        ratio = "" if name == "plain PyTorch" else f"{value / base:.3f}x {'reference' if name == 'kdlib torch' else 'torch'}"
        print(f"| {name} | {value:.1f} | {', '.join(f'{x:.1f}' for x in results[name])} | {ratio} |")
    print(json.dumps(med))


if __name__ == "__main__":
    main()
