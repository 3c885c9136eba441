"""Transfer sets: text without labels that the teacher labels for the students.

A transfer set (config.yaml ``transfer:``) is made of

- ``unlabeled``: in-domain text without labels, ``builtin`` (the built-in corpus's tweets that are
  in neither train nor dev, neutral ones included) or a file with one text, or one tab-separated
  pair for a pair task, per line;
- ``augment: tang``: new variants of the training texts after Tang et al. 2019 (each word masked
  with ``p_mask``, then the whole example cut to a random n-gram of 1 to 5 words with
  ``p_ngram``; ``variants`` per training example). The paper's third rule, replacing a word by
  one of the same part of speech, needs a tagger and is left out;
- ``augment: tinybert``: variants after TinyBERT (Jiao et al. 2020): each word replaced with
  ``p_replace`` by one of ``candidates`` words that the pretrained folder's masked LM or its
  word-embedding neighbours propose (:mod:`kdlib.data.augment_tinybert`).

:func:`build` streams both sources into ``data/transfer/{task}/{name}.tsv`` (columns ``text_a``
and, for a pair task, ``text_b``). It drops empty texts, every text equal to a dev or training
text after :func:`normalise`, and duplicates, and keeps at most ``max_examples`` (a seeded
reservoir draw); it reports how many it dropped for each reason. Memory is one 8-byte hash per
distinct text seen, plus the reservoir.

:func:`mix` interleaves a task's labelled training records with the transfer set's records in a
seeded order; the transfer rows carry ``is_real_example = 0``, so the hard-label loss leaves them
out (:meth:`kdlib.distill.recipes.Recipe.hard`) while the teacher's terms use every row.
"""
from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import ConfigError, DataError
from ..io import atomic_path
from .augment_tinybert import Candidates, tinybert_variants
from .convert import MASK_WORD, text_rows
from .ofrecord import RecordWriter, count_records, iter_payloads

MASK = MASK_WORD
MAX_NGRAM = 5
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class TransferSpec:
    """One entry of config.yaml's ``transfer:`` (defaults: kdlib/config.schema.yaml)."""
    name: str
    unlabeled: str | None = None       # builtin | a path | None
    augment: str | None = None         # tang | tinybert | None
    variants: int = 20                 # augmented variants per training example
    p_mask: float = 0.1                # tang
    p_ngram: float = 0.25              # tang
    p_replace: float = 0.4             # tinybert
    candidates: int = 15               # tinybert: K replacements per word
    max_examples: int = 0              # 0 = no cap
    seed: int = 0

    @classmethod
    def from_dict(cls, name: str, values: dict) -> "TransferSpec":
        keys = {"unlabeled", "augment", "variants", "p_mask", "p_ngram", "p_replace", "candidates",
                "max_examples", "seed"}
        return cls(name=name, **{k: v for k, v in values.items() if k in keys})


AUGMENT_KEYS = {"tang": ("variants", "p_mask", "p_ngram"),
                "tinybert": ("variants", "p_replace", "candidates")}


def result_settings(values: dict) -> dict:
    """The settings of a transfer set (a config.yaml entry, defaults filled in) that change its
    texts: an augmenter's keys only where that augmenter runs, so that a setting the set does not
    use (or a new default for one) rebuilds nothing."""
    keep = ("unlabeled", "augment", "max_examples", "seed") + AUGMENT_KEYS.get(values.get("augment"), ())
    return {k: values[k] for k in keep if k in values}


def normalise(text: str) -> str:
    """The form two texts are compared in: lower case, runs of white space as one space."""
    return _SPACE.sub(" ", text).strip().lower()


def _key(row: tuple) -> int:
    joined = "\t".join(normalise(t) for t in row if t is not None)
    return int.from_bytes(hashlib.blake2b(joined.encode("utf-8"), digest_size=8).digest(), "little")


# ---- sources -------------------------------------------------------------------------------------

def read_unlabeled(path: str | Path, pairs: bool) -> Iterator[tuple]:
    """Rows of a user's unlabeled file: one text per line, or ``text_a<TAB>text_b`` for a pair
    task. Blank lines are skipped; anything else malformed is a DataError naming ``file:line``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: unlabeled text file not found")
    want = 2 if pairs else 1
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise DataError(f"{path}:{number}: not UTF-8 text") from None
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != want:
                kind = "a pair task needs text_a<TAB>text_b" if pairs else "one text per line, no tab"
                raise DataError(f"{path}:{number}: {len(fields)} tab-separated field(s); {kind}")
            yield tuple(fields) if pairs else (fields[0], None)


def builtin_unlabeled(task_name: str, source: str | Path | None = None) -> Iterator[tuple]:
    """Every text of the built-in corpus, whatever its sentiment (neutral included); the dev,
    validation and training texts among them are dropped by :func:`build`."""
    from . import builtin
    if task_name not in builtin.LABELS:
        raise DataError(f"unlabeled: builtin is the corpus of the built-in tasks "
                        f"({', '.join(builtin.LABELS)}), not of {task_name}; give a file instead")
    for text in builtin.all_texts(source or builtin.corpus_path()):
        yield text, None


def tang_variants(row: tuple, n: int, rng: np.random.Generator, p_mask: float,
                  p_ngram: float) -> Iterator[tuple]:
    """``n`` variants of ``row`` (text_a, text_b or None): in each text every word becomes
    ``[MASK]`` with probability ``p_mask``; then, with probability ``p_ngram``, the text is cut to
    a random n-gram of 1 to 5 of its words (Tang et al. 2019, section 3.1, without the
    part-of-speech rule)."""
    texts = [t.split() if t is not None else None for t in row]
    for _ in range(n):
        out = []
        for words in texts:
            if words is None:
                out.append(None)
                continue
            hits = rng.random(len(words)) < p_mask                  # (n_words,) one draw each
            masked = [MASK if hit else w for w, hit in zip(words, hits.tolist())]
            if masked and rng.random() < p_ngram:
                size = int(rng.integers(1, min(MAX_NGRAM, len(masked)) + 1))
                start = int(rng.integers(0, len(masked) - size + 1))
                masked = masked[start:start + size]
            out.append(" ".join(masked))
        yield tuple(out)


# ---- the set -------------------------------------------------------------------------------------

def _clean(text: str | None) -> str | None:
    return None if text is None else _SPACE.sub(" ", text).strip()


def build(spec: TransferSpec, train_rows: list[tuple], dev_rows: Iterable[tuple], out: str | Path,
          pairs: bool, unlabeled: Iterable[tuple] = (), tinybert: Candidates | None = None,
          validation_rows: Iterable[tuple] = ()) -> dict[str, int]:
    """Write the transfer set ``out`` (TSV) from ``unlabeled`` rows and, with ``augment``, variants
    of ``train_rows``; leave out every dev, validation and training text, duplicates and empty
    texts. Returns the counts: ``kept`` and ``dropped_<reason>``. ``augment: tinybert`` needs
    ``tinybert``, its candidate words (from the pretrained folder)."""
    if spec.augment not in (None, "tang", "tinybert"):
        raise DataError(f"transfer.{spec.name}: unknown augment {spec.augment!r}; known: tang, tinybert")
    if spec.augment == "tinybert" and tinybert is None:
        raise ConfigError(f"transfer.{spec.name}: augment: tinybert needs the pretrained folder "
                          "(teacher.pretrained) for its candidate words")
    counts = dict.fromkeys(("kept", "unlabeled", "augmented", "dropped_empty", "dropped_dev",
                            "dropped_validation", "dropped_train", "dropped_duplicate",
                            "dropped_over_cap"), 0)
    blocked = {_key(r): "dropped_dev" for r in dev_rows}
    for r in validation_rows:
        blocked.setdefault(_key(r), "dropped_validation")
    for r in train_rows:
        blocked.setdefault(_key(r), "dropped_train")
    seen: set[int] = set()
    rng = np.random.default_rng([spec.seed, 0])      # the augmenter's draws
    cap_rng = np.random.default_rng([spec.seed, 1])  # the reservoir's draws

    def candidates() -> Iterator[tuple]:
        for row in unlabeled:
            counts["unlabeled"] += 1
            yield row
        if spec.augment == "tang":
            for row in train_rows:
                for variant in tang_variants(row, spec.variants, rng, spec.p_mask, spec.p_ngram):
                    counts["augmented"] += 1
                    yield variant
        elif spec.augment == "tinybert":
            for variant in tinybert_variants(train_rows, spec.variants, rng, spec.p_replace, tinybert):
                counts["augmented"] += 1
                yield variant

    reservoir: list[str] = []
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("text_a\ttext_b\n" if pairs else "text_a\n")       # _clean leaves no tab or newline
        for row in candidates():
            row = tuple(_clean(t) for t in row)
            if not row[0] or (pairs and not row[1]):
                counts["dropped_empty"] += 1
                continue
            key = _key(row)
            if key in blocked:
                counts[blocked[key]] += 1
                continue
            if key in seen:
                counts["dropped_duplicate"] += 1
                continue
            seen.add(key)
            line = ("\t".join(row) if pairs else row[0]) + "\n"
            if not spec.max_examples:
                fh.write(line)
                counts["kept"] += 1
                continue
            seen_kept = counts["kept"] + counts["dropped_over_cap"]   # distinct rows so far
            if len(reservoir) < spec.max_examples:
                reservoir.append(line)
                counts["kept"] += 1
            else:                                    # Algorithm R: keep with p = cap / seen
                slot = int(cap_rng.integers(0, seen_kept + 1))
                counts["dropped_over_cap"] += 1
                if slot < spec.max_examples:
                    reservoir[slot] = line
        fh.writelines(reservoir)
        if not counts["kept"]:
            raise DataError(f"transfer set {spec.name}: no text left ({describe(spec.name, counts)})")
    return counts


def describe(name: str, counts: dict[str, int]) -> str:
    dropped = ", ".join(f"{counts[k]} {k[len('dropped_'):].replace('_', ' ')}"
                        for k in counts if k.startswith("dropped_"))
    return (f"transfer set {name}: {counts['kept']} texts kept of {counts['unlabeled']} unlabeled "
            f"and {counts['augmented']} augmented; dropped {dropped}")


def read_transfer(path: str | Path, pairs: bool, label, chunksize: int = 50_000):
    """The transfer set's TSV as ``text_a``, ``text_b``, ``label`` chunks for the record converters
    (:mod:`kdlib.data.convert`); ``label`` is a placeholder that no loss reads."""
    import pandas as pd

    path = Path(path)
    try:
        reader = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False,
                             chunksize=chunksize, encoding="utf-8")
        for chunk in reader:
            expected = ["text_a", "text_b"] if pairs else ["text_a"]
            if list(chunk.columns) != expected:
                raise DataError(f"{path}: columns {list(chunk.columns)}, expected {expected}; "
                                "rebuild the transfer set")
            yield pd.DataFrame({"text_a": chunk["text_a"],
                                "text_b": chunk["text_b"] if pairs else None,
                                "label": label})
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: an empty transfer set file; rebuild it") from None


# ---- labelled + transfer -------------------------------------------------------------------------

def mix_order(n_labelled: int, n_transfer: int, seed: int) -> np.ndarray:
    """(n_labelled + n_transfer,) bool: True where the next labelled record goes, in a seeded
    random interleaving (record order within each source is kept)."""
    order = np.zeros(n_labelled + n_transfer, dtype=bool)
    order[:n_labelled] = True
    return np.random.default_rng([seed, 2]).permutation(order)


def mix(labelled: str | Path, transfer: str | Path, out: str | Path, seed: int) -> dict[str, int]:
    """Write ``out``: the records of ``labelled`` and ``transfer`` interleaved by :func:`mix_order`
    (streaming both). The same seed and counts give the same order, so the BERT and the word
    records of one task and set line up row for row, as the teacher-logit cache needs."""
    n_l, n_t = count_records(labelled), count_records(transfer)
    order = mix_order(n_l, n_t, seed)
    sources = (iter_payloads(labelled), iter_payloads(transfer))
    with RecordWriter(out) as writer:
        for take_labelled in order.tolist():
            _, payload = next(sources[0] if take_labelled else sources[1])
            writer.write_encoded(payload)
    return {"labelled": n_l, "transfer": n_t}



def rows_of(chunks) -> Iterator[tuple]:
    """``(text_a, text_b or None)`` rows of :func:`kdlib.data.tasks.read_split` chunks."""
    for chunk in chunks:
        yield from text_rows(chunk)
