"""Throughput and peak memory of building a transfer set (kdlib.data.transfer.build).

    .venv/bin/python bench/bench_transfer.py [--train 67349] [--dev 872] [--variants 20]
    .venv/bin/python bench/bench_transfer.py --augment tinybert [--train 67349] [--mlm-train 1000]

SST-2-sized input by default: 67,349 training texts and 872 dev texts of 4 to 30 words drawn from
a 20,000-word vocabulary (seeded; Zipf-like word frequencies), then the ``tang`` augmentation with
``variants`` per training text (1.3 million candidates at 20), deduplicated against themselves and
the dev and training texts, written to a temporary TSV. Prints candidates per second, the kept
count and the peak resident memory of the process. An unlabeled set of the same texts is timed too.

``--augment tinybert`` draws the words from the whole words of the packaged MiniLM's vocabulary
instead (Zipf-like, one word in ten two of them glued together, so several WordPieces), and times
the ``tinybert`` augmentation twice: the embedding-neighbour path with ``builtin:minilm-l6`` (no
masked-LM head) on ``--train`` texts, then the masked-LM path on the first ``--mlm-train`` of them
with a MiniLM-sized BERT of random weights and a masked-LM head, written to a temporary folder
(torch on the CPU, fp32, ``--batch-size`` masked copies per forward pass). The peak memory is the
process's so far, so the second figure includes the first run.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kdlib.data import transfer


def texts(n: int, rng: np.random.Generator) -> list[tuple]:
    vocab = np.array([f"w{i}" for i in range(20_000)])
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    lengths = rng.integers(4, 31, size=n)
    words = rng.choice(vocab, size=int(lengths.sum()), p=weights)
    out, start = [], 0
    for k in lengths.tolist():
        out.append((" ".join(words[start:start + k].tolist()), None))
        start += k
    return out


def vocab_texts(n: int, rng: np.random.Generator, tokens: list[str]) -> list[tuple]:
    """``n`` texts of 4 to 30 words from the alphabetic whole words of ``tokens``, Zipf-like in
    vocabulary order; one word in ten is two of them glued together."""
    vocab = np.array([t for t in tokens if t.isalpha() and t.isascii()])
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    lengths = rng.integers(4, 31, size=n)
    words = rng.choice(vocab, size=(int(lengths.sum()), 2), p=weights)
    glued = rng.random(len(words)) < 0.1
    joined = np.where(glued, np.char.add(words[:, 0], words[:, 1]), words[:, 0])
    out, start = [], 0
    for k in lengths.tolist():
        out.append((" ".join(joined[start:start + k].tolist()), None))
        start += k
    return out


def random_mlm_folder(folder: Path, like: Path) -> Path:
    """A BERT of ``like``'s size and vocabulary with random weights and a masked-LM head."""
    import shutil

    from safetensors.numpy import save_file

    from kdlib import backend
    from kdlib.models.bert import BertConfig, build_bert
    from kdlib.models.weights import state_dict_numpy

    folder.mkdir(parents=True)
    for name in ("config.json", "vocab.txt"):
        shutil.copy(like / name, folder / name)
    cfg = BertConfig.from_dict(json.loads((like / "config.json").read_text()))
    arrays = {k: v for k, v in state_dict_numpy(build_bert(backend.load("torch", "cpu"), cfg)).items()
              if not k.startswith("classifier.")}
    rng = np.random.default_rng(0)
    H = cfg.hidden_size
    arrays.update({"cls.predictions.transform.dense.weight": rng.normal(0, 0.02, (H, H)).astype(np.float32),
                   "cls.predictions.transform.dense.bias": np.zeros(H, np.float32),
                   "cls.predictions.transform.LayerNorm.weight": np.ones(H, np.float32),
                   "cls.predictions.transform.LayerNorm.bias": np.zeros(H, np.float32),
                   "cls.predictions.bias": np.zeros(cfg.vocab_size, np.float32)})   # decoder: tied
    save_file(arrays, str(folder / "model.safetensors"))
    return folder


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # Linux: kB


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--train", type=int, default=67_349)
    p.add_argument("--dev", type=int, default=872)
    p.add_argument("--variants", type=int, default=20)
    p.add_argument("--augment", choices=("tang", "tinybert"), default="tang")
    p.add_argument("--mlm-train", type=int, default=1000, help="tinybert: texts of the masked-LM run")
    p.add_argument("--batch-size", type=int, default=128, help="tinybert: masked copies per forward")
    args = p.parse_args(argv)
    if args.augment == "tinybert":
        return bench_tinybert(args)
    rng = np.random.default_rng(0)
    train, dev = texts(args.train, rng), texts(args.dev, rng)
    print(f"input: {len(train)} training and {len(dev)} dev texts; peak so far {peak_mb():.0f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        for what, spec, unlabeled in (
                ("unlabeled", transfer.TransferSpec("u", unlabeled="x"), train[::-1]),
                ("tang", transfer.TransferSpec("a", augment="tang", variants=args.variants), ())):
            start = time.perf_counter()
            counts = transfer.build(spec, train if what == "tang" else train[: len(train) // 2], dev,
                                    Path(tmp) / f"{what}.tsv", False, unlabeled)
            seconds = time.perf_counter() - start
            candidates = counts["unlabeled"] + counts["augmented"]
            print(f"{what}: {candidates} candidates in {seconds:.1f} s = {candidates / seconds:,.0f}/s; "
                  f"{transfer.describe(spec.name, counts)}; peak {peak_mb():.0f} MB")
    return 0


def bench_tinybert(args) -> int:
    from kdlib import backend
    from kdlib.data.augment_tinybert import Candidates, read_vocab
    from kdlib.models.pretrained import resolve_pretrained

    minilm = resolve_pretrained("builtin:minilm-l6")
    rng = np.random.default_rng(0)
    tokens = read_vocab(minilm / "vocab.txt")
    train, dev = vocab_texts(args.train, rng, tokens), vocab_texts(args.dev, rng, tokens)
    print(f"input: {len(train)} training and {len(dev)} dev texts; peak so far {peak_mb():.0f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        for what, rows in (("embedding neighbours (builtin:minilm-l6)", train),
                           ("masked LM (random MiniLM-sized BERT)", train[:args.mlm_train])):
            folder = minilm if rows is train else random_mlm_folder(Path(tmp) / "mlm", minilm)
            start = time.perf_counter()
            words = Candidates(folder, 15, lambda: backend.load("torch", "cpu", "fp32"),
                               batch_size=args.batch_size, log=lambda line: None)
            spec = transfer.TransferSpec("t", augment="tinybert", variants=args.variants)
            counts = transfer.build(spec, rows, dev, Path(tmp) / "t.tsv", False, tinybert=words)
            seconds = time.perf_counter() - start
            n = counts["augmented"]
            print(f"tinybert, {what}: {len(rows)} texts, {n} candidates in {seconds:.1f} s = "
                  f"{n / seconds:,.0f}/s ({len(rows) / seconds:,.1f} texts/s); "
                  f"{counts['kept']} kept; peak {peak_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
