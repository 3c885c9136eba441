"""Throughput and peak memory of building a transfer set (kdlib.data.transfer.build).

    .venv/bin/python bench/bench_transfer.py [--train 67349] [--dev 872] [--variants 20]

SST-2-sized input by default: 67,349 training texts and 872 dev texts of 4 to 30 words drawn from
a 20,000-word vocabulary (seeded; Zipf-like word frequencies), then the ``tang`` augmentation with
``variants`` per training text (1.3 million candidates at 20), deduplicated against themselves and
the dev and training texts, written to a temporary TSV. Prints candidates per second, the kept
count and the peak resident memory of the process. An unlabeled set of the same texts is timed too.
"""
from __future__ import annotations

import argparse
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


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # Linux: kB


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--train", type=int, default=67_349)
    p.add_argument("--dev", type=int, default=872)
    p.add_argument("--variants", type=int, default=20)
    args = p.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
