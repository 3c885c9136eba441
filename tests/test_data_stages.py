"""The data stages end to end: prepare_builtin, ofrecord_bert, ofrecord_lstm, and their Snakemake rules.

The stage scripts run in-process through their ``main(argv)``; the Snakemake tests (``.venv`` only)
run ``snakemake`` in a subprocess on a temporary copy of the workflow, against a local HTTP server.

Every task's records hold a validation split: the built-in tasks' own ``validation.tsv``; the other
tasks' carved from the training file (:mod:`kdlib.data.validation`). The expected records of a
carved task are computed here from the carve's mask (:func:`carved`), read independently of the
stages' own splitting.
"""
from __future__ import annotations

import collections
import csv
import hashlib
import io
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CARVE_ARGS, error_lines_of
from localhttp import dead_port, serve
from tokenizers import BertWordPieceTokenizer

from kdlib.data import builtin, ofrecord, tasks, validation
from kdlib.models.pretrained import resolve_pretrained
from workflow_scripts import ofrecord_bert, ofrecord_lstm, prepare_builtin
from workflow_scripts._cli import carve_from

REPO = Path(__file__).resolve().parents[1]
WORDS = ("the a movie film plot actor great awful boring fine tender dull witty slow bright "
         "Unaffable kdflowish café naïve 1997 don't well-made !? , .").split()


# --------------------------------------------------------------------------- helpers


def read_tsv(task: str, path: Path) -> pd.DataFrame:
    return pd.concat(list(tasks.read_split(tasks.get_task(task), path)), ignore_index=True)


def raw_tsv(path: Path) -> pd.DataFrame:
    """A GLUE TSV's columns as written, without the task's parsing."""
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)


CARVE = validation.Carve()   # the carve that CARVE_ARGS ask for (checked by the first records test)


def carved(task: str, root: Path) -> np.ndarray:
    """(N,) bool over the rows of the task's training file: True for the validation rows."""
    return validation.task_mask(tasks.get_task(task), root, CARVE)


def split_rows(task: str, root: Path, split: str, read=None) -> pd.DataFrame:
    """The rows record split ``split`` must hold, in file order, as ``read(path)`` (default:
    :func:`read_tsv`) gives a file's rows: the split's own file; for the train and validation
    splits of a task without a validation file, the training file's rows that the carve keeps,
    or those it holds out."""
    t = tasks.get_task(task)
    read = read or (lambda path: read_tsv(task, path))
    if split not in ("train", "validation") or t.validation_file:
        return read(tasks.glue_file(root, t, split))
    rows, mask = read(tasks.glue_file(root, t, "train")), carved(task, root)
    assert len(mask) == len(rows)
    return rows[mask == (split == "validation")].reset_index(drop=True)


def record_of_row(out: Path, mask: np.ndarray, i: int) -> dict[str, np.ndarray]:
    """The record of row ``i`` of a carved training file: in validation or train, after the rows of
    that split before it."""
    split = "validation" if mask[i] else "train"
    return records(ofrecord.record_file(out, split))[int((mask[:i] == mask[i]).sum())]


def records(path: Path) -> list[dict[str, np.ndarray]]:
    return list(ofrecord.iter_records(path))


def stack(recs: list[dict], name: str) -> np.ndarray:
    return np.stack([r[name] for r in recs])


def sentence(rng: random.Random, lo: int = 1, hi: int = 12) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def write_tsv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(map(str, r)) + "\n" for r in [header, *rows]),
                    encoding="utf-8")
    return path


def sst2_rows(rng: random.Random, n: int) -> list[list]:
    rows = [[sentence(rng), rng.randint(0, 1)] for _ in range(n)]
    rows[1][0] = ""                                            # an empty text
    rows[2][0] = " ".join(rng.choice(WORDS) for _ in range(60))  # longer than any max length
    return rows


def make_sst2(root: Path, seed: int = 0, n_train: int = 40, n_dev: int = 12) -> Path:
    rng = random.Random(seed)
    write_tsv(root / "SST-2" / "train.tsv", ["sentence", "label"], sst2_rows(rng, n_train))
    write_tsv(root / "SST-2" / "dev.tsv", ["sentence", "label"], sst2_rows(rng, n_dev))
    return root


def pair_rows(rng: random.Random, n: int, label) -> list[list]:
    rows = [[i, sentence(rng), sentence(rng), label(rng)] for i in range(n)]
    rows[0][1:3] = [" ".join(rng.choice(WORDS) for _ in range(50)),   # both sides long
                    " ".join(rng.choice(WORDS) for _ in range(45))]
    rows[1][1:3] = ["short one", " ".join(rng.choice(WORDS) for _ in range(70))]  # b long
    rows[2][2] = ""                                                          # b empty
    return rows


MNLI_LABELS = ["contradiction", "entailment", "neutral"]


def make_mnli(root: Path, seed: int = 1) -> Path:
    rng = random.Random(seed)
    header = ["index", "sentence1", "sentence2", "gold_label"]
    label = lambda r: r.choice(MNLI_LABELS)  # noqa: E731
    for split, n in [("train", 30), ("dev_matched", 9), ("dev_mismatched", 8)]:
        write_tsv(root / "MNLI" / f"{split}.tsv", header, pair_rows(rng, n, label))
    return root


def make_stsb(root: Path, seed: int = 2) -> Path:
    """STS-B pairs whose scores are all different, so that record order can be checked."""
    rng = random.Random(seed)
    header = ["index", "sentence1", "sentence2", "score"]
    scores = iter(rng.sample(range(500), 40))
    label = lambda r: f"{next(scores) / 100:.2f}"  # noqa: E731
    write_tsv(root / "STS-B" / "train.tsv", header, pair_rows(rng, 28, label))
    write_tsv(root / "STS-B" / "dev.tsv", header, pair_rows(rng, 12, label))
    return root


@pytest.fixture(scope="module")
def vocab() -> Path:
    return resolve_pretrained("builtin:minilm-l6") / "vocab.txt"


def run_bert(root: Path, out: Path, task: str, vocab: Path, max_length: int) -> int:
    return ofrecord_bert.main(["--task", task, "--glue-root", str(root), *CARVE_ARGS, "--out-dir", str(out),
                               "--tokenizer", str(vocab), "--max-length", str(max_length)])


def run_lstm(root: Path, out: Path, task: str, max_length: int, vocab_size: int = 10000) -> int:
    return ofrecord_lstm.main(["--task", task, "--glue-root", str(root), *CARVE_ARGS, "--out-dir", str(out),
                               "--max-length", str(max_length), "--vocab-size", str(vocab_size)])


# --------------------------------------------------------------------------- prepare_builtin


def _expected_corpus(path: Path) -> dict[str, int]:
    """An independent reading of the corpus: lower-cased normalised text -> its one label."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    labels: dict[str, set] = {}
    for row in csv.DictReader(io.StringIO(text, newline="")):
        if row["sentiment"] not in ("positive", "negative"):
            continue
        key = re.sub(r"\s+", " ", row["text"]).strip().lower()
        if key:
            labels.setdefault(key, set()).add(int(row["sentiment"] == "positive"))
    return {k: v.pop() for k, v in labels.items() if len(v) == 1}


@pytest.fixture(scope="module")
def builtin_runs(tmp_path_factory):
    """prepare_builtin on the real corpus: seed 13 twice, seed 14, seed 13 with no cap, and seed 13
    with no validation rows."""
    base = tmp_path_factory.mktemp("tweets")
    runs = {"a": ("13", "4000", "2000"), "b": ("13", "4000", "2000"), "other": ("14", "4000", "2000"),
            "all": ("13", "0", "2000"), "one": ("13", "4000", "1")}
    for name, (seed, cap, held) in runs.items():
        rc = prepare_builtin.main(["--task", "tweets", "--out-dir", str(base / name), "--dev-fraction", "0.1",
                                   "--max-train", cap, "--seed", seed, "--validation", held])
        assert rc == 0
    return base


def test_builtin_split_rules_on_the_real_corpus(builtin_runs):
    expected = _expected_corpus(builtin.corpus_path())
    assert len(expected) > 20_000
    parts = {s: read_tsv("tweets", builtin_runs / "a" / f"{s}.tsv") for s in ("train", "validation", "dev")}
    train, held, dev = parts["train"], parts["validation"], parts["dev"]
    for df in parts.values():
        assert set(df["label"]) == {0, 1}
        assert (df["text_a"] != "").all()
        keys = df["text_a"].str.lower()
        assert not keys.duplicated().any()
        # every row is a corpus text with its (unique, binary) label
        assert [expected.get(k) for k in keys] == df["label"].tolist()
    for (_, x), (_, y) in itertools.combinations(parts.items(), 2):   # no text in two splits
        assert not set(x["text_a"].str.lower()) & set(y["text_a"].str.lower())
    assert (len(train), len(held)) == (4000, 2000)
    assert len(dev) == pytest.approx(0.1 * len(expected), abs=2)
    assert abs(train["label"].mean() - dev["label"].mean()) < 0.01
    # without a cap, train, validation and dev hold the whole deduplicated corpus
    uncapped = {s: read_tsv("tweets", builtin_runs / "all" / f"{s}.tsv") for s in parts}
    full = pd.concat(list(uncapped.values()), ignore_index=True)
    assert sorted(full["text_a"].str.lower()) == sorted(expected)
    # the cap draws from train only
    assert set(uncapped["dev"]["text_a"]) == set(dev["text_a"])
    assert set(uncapped["validation"]["text_a"]) == set(held["text_a"])
    # validation and train are stratified draws from the rows outside dev: each label's share is met
    # within rounding
    rest = pd.concat([uncapped["train"], uncapped["validation"]], ignore_index=True)
    for df, n in [(held, 2000), (train, 4000)]:
        assert abs(df["label"].sum() - n * rest["label"].mean()) <= 0.5
    assert abs(held["label"].mean() - train["label"].mean()) < 0.005


def test_builtin_is_deterministic_per_seed(builtin_runs):
    for split in ("train", "validation", "dev"):
        same = (builtin_runs / "a" / f"{split}.tsv").read_bytes()
        assert same == (builtin_runs / "b" / f"{split}.tsv").read_bytes()
        assert same != (builtin_runs / "other" / f"{split}.tsv").read_bytes()
    for split in ("train", "validation"):
        assert (read_tsv("tweets", builtin_runs / "a" / f"{split}.tsv")["text_a"].tolist()[:50]
                != read_tsv("tweets", builtin_runs / "other" / f"{split}.tsv")["text_a"].tolist()[:50])


def test_builtin_validation_rows_leave_train_and_dev_as_they_were(builtin_runs):
    """The validation tweets come from the rows that neither train nor dev takes: with the same seed
    and cap, holding out 2000 of them or 1 changes no byte of train.tsv or dev.tsv."""
    for split in ("train", "dev"):
        assert ((builtin_runs / "a" / f"{split}.tsv").read_bytes()
                == (builtin_runs / "one" / f"{split}.tsv").read_bytes())
    assert len((builtin_runs / "one" / "validation.tsv").read_text().splitlines()) == 2


@pytest.mark.parametrize("held", ["0", "-3"])
def test_builtin_validation_of_no_row_is_one_error_line(tmp_path, capsys, held):
    rc = prepare_builtin.main(["--task", "tweets", "--out-dir", str(tmp_path / "out"), "--dev-fraction",
                               "0.1", "--max-train", "4000", "--seed", "13", "--validation", held])
    assert rc == 1
    assert error_lines_of(capsys.readouterr().err) == [
        f"error: data.builtin.validation: {held}; the validation split needs at least 1 row"]
    assert not (tmp_path / "out").exists()


def _fake_corpus(path: Path) -> dict[str, int]:
    """A small corpus CSV exercising every rule; returns the expected sentence -> label."""
    expected = {}
    lines = [b"sentiment,confidence,text"]
    for i in range(10):
        lines.append(f"positive,1.0,happy tweet number {i}".encode())
        lines.append(f"negative,1.0,angry tweet number {i}".encode())
        expected[f"happy tweet number {i}"] = 1
        expected[f"angry tweet number {i}"] = 0
    lines += [
        b"positive,1.0,Great flight today",
        b"negative,0.9,Lost my   bag again",           # whitespace normalised
        b"neutral,1.0,Boarding now",                    # neither label: dropped
        b'positive,0.8,"  great FLIGHT\ttoday "',       # duplicate, same label: first kept
        b"positive,1.0,Seats are fine",
        b"negative,1.0,seats are FINE",                 # conflicting labels: both dropped
        b"negative,1.0,Bad byte \xff here",             # not UTF-8: U+FFFD
        b'positive,1.0,"Multi\nline, quoted"',
        b"negative,1.0,   ",                            # empty after normalising: dropped
    ]
    expected.update({"Great flight today": 1, "Lost my bag again": 0,
                     "Bad byte \ufffd here": 0, "Multi line, quoted": 1})
    path.write_bytes(b"\n".join(lines) + b"\n")
    return expected


def _prepare_fake(source: Path, out: Path, cap: int = 0, held: int = 2, task: str = "tweets") -> int:
    return prepare_builtin.main(["--task", task, "--out-dir", str(out), "--source", str(source),
                                 "--dev-fraction", "0.25", "--max-train", str(cap), "--seed", "13",
                                 "--validation", str(held)])


def _parts(task: str, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """train, dev and validation of a prepare_builtin folder."""
    return tuple(read_tsv(task, out / f"{s}.tsv") for s in ("train", "dev", "validation"))


def test_builtin_rules_on_a_fake_corpus(tmp_path):
    source = tmp_path / "corpus.csv"
    expected = _fake_corpus(source)
    assert len(expected) == 24 and sum(expected.values()) == 12
    out = tmp_path / "all"
    assert _prepare_fake(source, out) == 0
    train, dev, held = _parts("tweets", out)
    got = (dict(zip(train["text_a"], train["label"])) | dict(zip(dev["text_a"], dev["label"]))
           | dict(zip(held["text_a"], held["label"])))
    assert got == expected
    assert (len(train), len(dev), len(held)) == (16, 6, 2)
    # stratified: 25% of each label to dev, one of each to validation
    assert (train["label"].sum(), dev["label"].sum(), held["label"].sum()) == (8, 3, 1)
    keys = [set(df["text_a"].str.lower()) for df in (train, dev, held)]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])

    # the validation rows come out of train's share: dev keeps its rows
    corpus = builtin.load_corpus(source)
    train0, dev0, held0 = builtin.split(corpus, 0.25, 0, 13, validation=0)
    assert len(train0) == 18 and len(held0) == 0
    assert set(dev0["sentence"]) == set(dev["text_a"])
    assert set(train0["sentence"]) == set(train["text_a"]) | set(held["text_a"])
    # ... and it is a pure function of the seed
    assert _prepare_fake(source, tmp_path / "again") == 0
    for split in ("train", "dev", "validation"):
        assert (out / f"{split}.tsv").read_bytes() == (tmp_path / "again" / f"{split}.tsv").read_bytes()

    # the cap keeps the label shares and is met exactly
    for cap, positives in [(10, 5), (7, None), (3, None)]:
        capped = tmp_path / f"cap{cap}"
        assert _prepare_fake(source, capped, cap=cap) == 0
        small, small_dev, small_held = _parts("tweets", capped)
        assert len(small) == cap
        assert abs(small["label"].sum() - cap / 2) <= 0.5
        assert set(small["text_a"]) <= set(train["text_a"])
        assert set(small_dev["text_a"]) == set(dev["text_a"])
        assert set(small_held["text_a"]) == set(held["text_a"])   # the cap draws from train only


def test_builtin_validation_takes_all_but_one_training_row_at_most(tmp_path, capsys):
    """18 labelled rows of the fake corpus lie outside dev: 17 can be held out, leaving one to train."""
    source = tmp_path / "corpus.csv"
    _fake_corpus(source)
    assert _prepare_fake(source, tmp_path / "most", held=17) == 0
    train, dev, held = _parts("tweets", tmp_path / "most")
    assert (len(train), len(dev), len(held)) == (1, 6, 17)
    assert abs(held["label"].sum() - 17 / 2) <= 0.5
    capsys.readouterr()
    for too_many in (18, 500):
        out = tmp_path / f"held{too_many}"
        assert _prepare_fake(source, out, held=too_many) == 1
        err = capsys.readouterr().err
        lines = error_lines_of(err)
        assert len(lines) == 1 and err.count("\n") == 1, err
        assert lines[0].startswith("error: data.builtin.validation: ")
        assert f"{too_many} rows asked for" in lines[0] and "only 18 labelled rows" in lines[0]
        assert not out.exists()


def test_tweets3_keeps_the_three_classes(tmp_path):
    """tweets3: the same rules with neutral kept, labels by name, each class split 25% to dev."""
    source = tmp_path / "corpus.csv"
    lines = ["sentiment,confidence,text"]
    for i in range(8):
        lines += [f"positive,1.0,happy {i}", f"negative,1.0,angry {i}", f"neutral,1.0,boarding {i}"]
    lines += ["neutral,1.0,Seats are fine", "positive,1.0,seats are FINE"]   # conflicting: dropped
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert _prepare_fake(source, out, held=3, task="tweets3") == 0
    task = tasks.get_task("tweets3")
    assert task.labels == ("negative", "neutral", "positive") and task.metric == "accuracy"
    assert task.validation_file and task.splits == ("train", "validation", "dev")
    train, dev, held = _parts("tweets3", out)
    assert train["label"].value_counts().to_dict() == {0: 5, 1: 5, 2: 5}
    assert dev["label"].value_counts().to_dict() == {0: 2, 1: 2, 2: 2}
    assert held["label"].value_counts().to_dict() == {0: 1, 1: 1, 2: 1}
    got = (dict(zip(train["text_a"], train["label"])) | dict(zip(dev["text_a"], dev["label"]))
           | dict(zip(held["text_a"], held["label"])))
    assert len(got) == 24
    assert got["boarding 3"] == 1 and got["happy 0"] == 2 and "Seats are fine" not in got
    for split in ("train", "validation"):
        assert "neutral" in (out / f"{split}.tsv").read_text()      # the file holds the names
    # the binary task from the same corpus drops neutral first: its "seats are FINE" conflicts with nothing
    assert _prepare_fake(source, tmp_path / "bin", held=2) == 0
    binary = pd.concat(_parts("tweets", tmp_path / "bin"))
    assert len(binary) == 17 and set(binary["label"]) == {0, 1}


def test_builtin_cap_rounding_keeps_the_total():
    """Label shares rounded one by one could overshoot (1.5 + 1.5 -> 4) or undershoot the cap, or
    the validation rows asked for."""
    for sizes, cap in [((3, 3), 3), ((7, 7), 5), ((5, 3, 2), 7), ((1, 9), 5)]:
        labels = np.repeat(np.arange(len(sizes)), sizes)
        df = pd.DataFrame({"sentence": [f"t{i}" for i in range(len(labels))], "label": labels})
        for kept, held in [(cap, 0), (sum(sizes) - cap, cap)]:
            train, dev, validation_rows = builtin.split(df, 0.0, 0 if held else cap, seed=0,
                                                        validation=held)
            assert (len(train), len(dev), len(validation_rows)) == (kept, 0, held)
            assert not set(train["sentence"]) & set(validation_rows["sentence"])
            for part, n in [(train, kept), (validation_rows, held)]:
                counts = part["label"].value_counts().reindex(range(len(sizes)), fill_value=0)
                assert np.all(np.abs(counts.to_numpy() - np.array(sizes) * n / sum(sizes)) < 1)


@pytest.mark.parametrize("content", [None, b"", b"label,words\npositive,hi\n"])
def test_builtin_bad_source_is_one_error_line(tmp_path, capsys, content):
    source = tmp_path / "corpus.csv"
    if content is not None:
        source.write_bytes(content)
    rc = prepare_builtin.main(["--task", "tweets", "--out-dir", str(tmp_path / "out"),
                               "--source", str(source), "--dev-fraction", "0.1", "--max-train", "0",
                               "--seed", "13", "--validation", "2"])
    err = capsys.readouterr().err
    assert rc == 1
    assert len(error_lines_of(err)) == 1 and err.count("\n") == 1
    assert str(source) in error_lines_of(err)[0]
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- ofrecord_bert


def _reference(vocab: Path, max_length: int):
    """The reference tokeniser (as the task states it) plus one without truncation."""
    ref = BertWordPieceTokenizer(str(vocab), lowercase=True)
    ref.enable_truncation(max_length=max_length)
    full = BertWordPieceTokenizer(str(vocab), lowercase=True)
    return ref, full


def test_the_carve_of_these_tests_is_the_one_the_stages_are_given():
    args = ofrecord_bert.parse_args(["--task", "sst2", "--glue-root", "glue", *CARVE_ARGS,
                                     "--out-dir", "out", "--tokenizer", "vocab.txt", "--max-length", "16"])
    assert carve_from(args) == CARVE


def test_bert_records_single_sentences(tmp_path, vocab):
    root, out, L = make_sst2(tmp_path / "glue"), tmp_path / "bert16", 16
    assert run_bert(root, out, "sst2", vocab, L) == 0
    ref, full = _reference(vocab, L)
    cls, sep = full.token_to_id("[CLS]"), full.token_to_id("[SEP]")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"] == {"train": 36, "validation": 4, "dev": 12}   # 10% of train carved
    assert (meta["kind"], meta["max_length"], meta["num_labels"], meta["task"]) == \
        ("bert", L, 2, "sst2")
    assert sorted(p.name for p in out.iterdir()) == \
        ["dev.of_record-0", "meta.json", "train.of_record-0", "validation.of_record-0", "vocab.txt"]
    assert (out / "vocab.txt").read_bytes() == Path(vocab).read_bytes()  # model folders carry it
    held = carved("sst2", root)
    assert len(held) == 40 and held.sum() == 4
    for split in ("train", "validation", "dev"):
        df = split_rows("sst2", root, split)
        recs = records(ofrecord.record_file(out, split))
        assert len(recs) == len(df)
        for r, text, label in zip(recs, df["text_a"], df["label"]):
            assert set(r) == set(ofrecord.BERT_FEATURES)
            ids, mask, seg = r["input_ids"], r["input_mask"], r["segment_ids"]
            assert ids.dtype == np.int32 and ids.shape == (L,)
            n = int(mask.sum())
            assert mask.tolist() == [1] * n + [0] * (L - n)
            assert ids[:n].tolist() == ref.encode(text).ids
            assert not ids[n:].any() and not seg.any()
            whole = full.encode(text).ids
            assert whole[0] == cls and whole[-1] == sep
            if len(whole) <= L:
                assert ids[:n].tolist() == whole
            else:                      # truncated: the first L - 2 pieces, then [SEP]
                assert ids.tolist() == whole[:L - 1] + [sep]
            assert r["label_ids"].tolist() == [label]
            assert r["label_ids"].dtype == np.int32 and r["is_real_example"].tolist() == [1]
    assert record_of_row(out, held, 1)["input_ids"][:3].tolist() == [cls, sep, 0]   # the empty text
    assert record_of_row(out, held, 2)["input_mask"].all()                 # the long one fills L


def test_bert_records_pairs_mnli(tmp_path, vocab):
    root, out, L = make_mnli(tmp_path / "glue"), tmp_path / "bert24", 24
    assert run_bert(root, out, "mnli", vocab, L) == 0
    ref, full = _reference(vocab, L)
    sep = full.token_to_id("[SEP]")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"] == {"train": 27, "validation": 3, "dev_matched": 9, "dev_mismatched": 8}
    assert meta["num_labels"] == 3
    truncated = 0
    for split in ("train", "validation", "dev_matched", "dev_mismatched"):
        raw = split_rows("mnli", root, split, read=raw_tsv)
        recs = records(ofrecord.record_file(out, split))
        assert len(recs) == len(raw)
        for r, a, b, gold in zip(recs, raw["sentence1"], raw["sentence2"], raw["gold_label"]):
            ids, mask, seg = (r[k].tolist() for k in ("input_ids", "input_mask", "segment_ids"))
            n = sum(mask)
            assert mask == [1] * n + [0] * (L - n)
            assert ids[:n] == ref.encode(a, b).ids
            a_ids = full.encode(a, add_special_tokens=False).ids
            b_ids = full.encode(b, add_special_tokens=False).ids
            first_sep = ids.index(sep)
            kept_a, kept_b = ids[1:first_sep], ids[first_sep + 1:n - 1]
            assert ids[n - 1] == sep
            assert seg == [0] * (first_sep + 1) + [1] * (n - first_sep - 1) + [0] * (L - n)
            assert kept_a == a_ids[:len(kept_a)] and kept_b == b_ids[:len(kept_b)]
            if len(a_ids) + len(b_ids) + 3 <= L:
                assert (kept_a, kept_b) == (a_ids, b_ids)
            else:                      # longest first: the shorter side loses least
                truncated += 1
                assert n == L
                if len(a_ids) <= (L - 3) // 2:
                    assert kept_a == a_ids
                if len(b_ids) <= (L - 3) // 2:
                    assert kept_b == b_ids
                assert min(len(kept_a), len(kept_b)) >= min(len(a_ids), len(b_ids),
                                                            (L - 3) // 2)
            assert r["label_ids"].tolist() == [MNLI_LABELS.index(gold)]
    assert truncated >= 6   # two truncated pairs in each file at least (rows 0 and 1)


def test_bert_records_stsb_float_labels(tmp_path, vocab):
    root, out = make_stsb(tmp_path / "glue"), tmp_path / "bert32"
    assert run_bert(root, out, "stsb", vocab, 32) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num_labels"] == 1
    assert meta["counts"] == {"train": 25, "validation": 3, "dev": 12}
    for split in ("train", "validation", "dev"):
        raw = split_rows("stsb", root, split, read=raw_tsv)
        labels = stack(records(ofrecord.record_file(out, split)), "label_ids")[:, 0]
        assert len(labels) == len(raw)
        assert labels.dtype == np.float32
        np.testing.assert_allclose(labels, raw["score"].astype(float), rtol=1e-6)
        assert len(set(labels.tolist())) == len(labels) and not np.all(labels == labels.round())


def test_bert_rerun_overwrites(tmp_path, vocab):
    root, out = make_sst2(tmp_path / "glue"), tmp_path / "bert16"
    assert run_bert(root, out, "sst2", vocab, 16) == 0
    sizes = {p.name: p.stat().st_size for p in out.iterdir()}
    data = ofrecord.record_file(out, "train").read_bytes()
    assert run_bert(root, out, "sst2", vocab, 16) == 0
    assert {p.name: p.stat().st_size for p in out.iterdir()} == sizes
    assert ofrecord.record_file(out, "train").read_bytes() == data
    assert ofrecord.count_records(ofrecord.record_file(out, "train")) == 36
    assert ofrecord.count_records(ofrecord.record_file(out, "validation")) == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # new data replaces the old files whole
    make_sst2(root, seed=5, n_train=25, n_dev=4)
    assert run_bert(root, out, "sst2", vocab, 16) == 0
    assert json.loads((out / "meta.json").read_text())["counts"] == \
        {"train": 23, "validation": 2, "dev": 4}                 # round(2.5) rows carved
    assert ofrecord.count_records(ofrecord.record_file(out, "train")) == 23
    assert ofrecord.count_records(ofrecord.record_file(out, "validation")) == 2


# --------------------------------------------------------------------------- ofrecord_lstm


def test_lstm_vocab_from_train_with_ties_broken_alphabetically(tmp_path):
    root = tmp_path / "glue"
    #              counts in the training rows: b 3, a 3, d 2, c 2, e 1 (zebra only in dev; yak only
    #              in the row carved out as validation)
    write_tsv(root / "SST-2" / "train.tsv", ["sentence", "label"],
              [["b a d", 1], ["B c A", 0], ["yak yak yak yak", 1], ["b A c d", 1], ["e", 0]])
    write_tsv(root / "SST-2" / "dev.tsv", ["sentence", "label"],
              [["zebra a", 1], ["c e zebra", 0], ["", 1]])
    assert carved("sst2", root).tolist() == [False, False, True, False, False]   # the fixture's premise
    out = tmp_path / "lstm4"
    assert run_lstm(root, out, "sst2", max_length=4, vocab_size=3) == 0
    vocab = (out / "vocab.txt").read_text().splitlines()
    assert vocab == ["<pad>", "<unk>", "a", "b", "c"]
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["kind"], meta["vocab_size"], meta["max_length"]) == ("lstm", 5, 4)
    assert meta["counts"] == {"train": 4, "validation": 1, "dev": 3}
    held = records(ofrecord.record_file(out, "validation"))
    assert stack(held, "input_ids").tolist() == [[1, 1, 1, 1]]    # yak: unknown to the vocabulary
    assert stack(held, "label_ids")[:, 0].tolist() == [1]
    dev = records(ofrecord.record_file(out, "dev"))
    assert stack(dev, "input_ids").tolist() == [[1, 2, 0, 0], [4, 1, 1, 0], [1, 0, 0, 0]]
    assert stack(dev, "input_mask").tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]]
    assert stack(dev, "label_ids")[:, 0].tolist() == [1, 0, 1]
    train = records(ofrecord.record_file(out, "train"))
    assert stack(train, "input_ids").tolist() == [[3, 2, 1, 0], [3, 4, 2, 0], [3, 2, 4, 1],
                                                  [1, 0, 0, 0]]
    assert set(train[0]) == {"input_ids", "input_mask", "label_ids", "is_real_example"}
    # all words fit: every train word is known, counts decide the order, then the word
    assert run_lstm(root, out, "sst2", max_length=4, vocab_size=100) == 0
    assert (out / "vocab.txt").read_text().splitlines() == \
        ["<pad>", "<unk>", "a", "b", "c", "d", "e"]


def _words(text: str) -> list[str]:
    """An independent word split: lower-case without accents, then runs of letters/digits and
    single punctuation marks."""
    text = "".join(c for c in unicodedata.normalize("NFD", text.lower())
                   if unicodedata.category(c) != "Mn")
    return re.findall(r"\w+|[^\w\s]", text)


@pytest.mark.parametrize("task, make", [("sst2", make_sst2), ("stsb", make_stsb),
                                        ("mnli", make_mnli)])
def test_lstm_records_follow_the_bert_records(tmp_path, vocab, task, make):
    root, L = make(tmp_path / "glue"), 8
    assert run_bert(root, tmp_path / "bert", task, vocab, 32) == 0
    assert run_lstm(root, tmp_path / "lstm", task, max_length=L) == 0
    words = (tmp_path / "lstm" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert words[:2] == ["<pad>", "<unk>"] and len(set(words)) == len(words)
    index = {w: i for i, w in enumerate(words)}
    t = tasks.get_task(task)
    assert "validation" in t.record_splits and not t.validation_file
    for split in t.record_splits:
        bert = records(ofrecord.record_file(tmp_path / "bert", split))
        lstm = records(ofrecord.record_file(tmp_path / "lstm", split))
        df = split_rows(task, root, split)
        assert len(lstm) == len(bert) == len(df) > 0
        np.testing.assert_array_equal(stack(lstm, "label_ids"), stack(bert, "label_ids"))
        assert stack(lstm, "label_ids").dtype == stack(bert, "label_ids").dtype
        np.testing.assert_allclose(stack(lstm, "label_ids")[:, 0], df["label"].to_numpy(), rtol=1e-6)
        for r, a, b in zip(lstm, df["text_a"], df["text_b"]):
            expected = _words(a) + (_words(b) if isinstance(b, str) else [])
            expected = [index.get(w, 1) for w in expected][:L] or [1]
            n = int(r["input_mask"].sum())
            assert r["input_ids"].tolist() == expected + [0] * (L - len(expected))
            assert n == len(expected)
    meta = json.loads((tmp_path / "lstm" / "meta.json").read_text())
    assert meta["counts"] == json.loads((tmp_path / "bert" / "meta.json").read_text())["counts"]
    assert set(meta["counts"]) == set(t.record_splits)


def test_bert_and_word_records_hold_the_same_carved_validation_rows_in_file_order(tmp_path, vocab):
    """STS-B scores all differ, so each record's label names its row: both kinds of records hold
    the carved rows in validation and the others in train, each in file order."""
    rng = random.Random(7)
    root = tmp_path / "glue"
    header = ["index", "sentence1", "sentence2", "score"]
    scores = iter(rng.sample(range(500), 160))
    label = lambda r: f"{next(scores) / 100:.2f}"  # noqa: E731
    write_tsv(root / "STS-B" / "train.tsv", header, pair_rows(rng, 140, label))
    write_tsv(root / "STS-B" / "dev.tsv", header, pair_rows(rng, 20, label))
    assert run_bert(root, tmp_path / "bert", "stsb", vocab, 32) == 0
    assert run_lstm(root, tmp_path / "lstm", "stsb", max_length=8) == 0
    train_scores = raw_tsv(root / "STS-B" / "train.tsv")["score"].astype(float).to_numpy()
    mask = carved("stsb", root)
    assert mask.sum() == 14
    # stratified by score decile: every decile of the training scores gives validation rows
    deciles = np.argsort(np.argsort(train_scores)) * 10 // len(train_scores)
    assert set(deciles[mask]) == set(range(10))
    for kind in ("bert", "lstm"):
        assert json.loads((tmp_path / kind / "meta.json").read_text())["counts"] == \
            {"train": 126, "validation": 14, "dev": 20}
    for split, rows in [("validation", mask), ("train", ~mask)]:
        bert, lstm = (stack(records(ofrecord.record_file(tmp_path / kind, split)), "label_ids")[:, 0]
                      for kind in ("bert", "lstm"))
        np.testing.assert_array_equal(bert, lstm)
        np.testing.assert_allclose(bert, train_scores[rows], rtol=1e-6)


def test_the_word_vocabulary_leaves_out_words_that_only_carved_validation_rows_hold(tmp_path):
    rng = random.Random(11)
    root = tmp_path / "glue"
    rows = sst2_rows(rng, 60)
    write_tsv(root / "SST-2" / "dev.tsv", ["sentence", "label"], sst2_rows(rng, 10))
    write_tsv(root / "SST-2" / "train.tsv", ["sentence", "label"], rows)
    mask = carved("sst2", root)
    held, kept = int(np.flatnonzero(mask)[0]), int(np.flatnonzero(~mask)[3])
    # a word only in a validation row (the most frequent word of the file, were it counted), and
    # one only in a training row
    rows[held][0] = "zyzzyva " * 40 + rows[held][0]
    rows[kept][0] = "quokka " + rows[kept][0]
    write_tsv(root / "SST-2" / "train.tsv", ["sentence", "label"], rows)
    assert (carved("sst2", root) == mask).all()             # the carve reads the labels alone
    out, L = tmp_path / "lstm", 16
    assert run_lstm(root, out, "sst2", max_length=L) == 0
    words = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert "quokka" in words and "zyzzyva" not in words
    # the vocabulary is the training rows' words alone, by count, ties by the word
    counts = collections.Counter(w for text in split_rows("sst2", root, "train")["text_a"]
                                 for w in _words(text))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    assert words == ["<pad>", "<unk>"] + [w for w, _ in ranked]
    # ... and the validation row reads the word as <unk>
    record = record_of_row(out, mask, held)
    assert record["input_ids"].tolist() == [1] * L


def test_a_task_with_its_own_validation_file_records_that_file_and_carves_nothing(tmp_path, vocab,
                                                                                   capsys):
    rng = random.Random(12)
    root = tmp_path / "glue"
    files = {split: write_tsv(root / "tweets" / f"{split}.tsv", ["sentence", "label"],
                              [[sentence(rng), rng.randint(0, 1)] for _ in range(n)])
             for split, n in [("train", 30), ("validation", 7), ("dev", 9)]}
    assert tasks.get_task("tweets").validation_file
    assert run_bert(root, tmp_path / "bert", "tweets", vocab, 16) == 0
    assert "tweets validation: its own file" in capsys.readouterr().err
    assert run_lstm(root, tmp_path / "lstm", "tweets", max_length=8) == 0
    for kind in ("bert", "lstm"):
        assert json.loads((tmp_path / kind / "meta.json").read_text())["counts"] == \
            {"train": 30, "validation": 7, "dev": 9}
        for split, path in files.items():
            labels = stack(records(ofrecord.record_file(tmp_path / kind, split)), "label_ids")[:, 0]
            assert labels.tolist() == read_tsv("tweets", path)["label"].tolist()
    # the word vocabulary: train's words (all of them, 10000 allowed), none from validation alone
    rows = split_rows("tweets", root, "train")["text_a"]
    assert set((tmp_path / "lstm" / "vocab.txt").read_text(encoding="utf-8").splitlines()[2:]) == \
        {w for text in rows for w in _words(text)}


@pytest.mark.parametrize("task", ["sst2", "tweets"])
def test_labels_the_training_rows_lack_are_warned_of_per_split(tmp_path, capsys, task):
    """Training rows of label 0 only: dev's (and a validation file's) label 1 gets one warning line
    naming the file and the split; a carved validation split is drawn from the training rows, so
    holds no label they lack."""
    root, folder = tmp_path / "glue", tasks.get_task(task).glue_dir
    write_tsv(root / folder / "train.tsv", ["sentence", "label"], [[f"calm {i}", 0] for i in range(10)])
    write_tsv(root / folder / "dev.tsv", ["sentence", "label"], [["bright", 1], ["dull", 0]])
    if task == "tweets":
        write_tsv(root / folder / "validation.tsv", ["sentence", "label"], [["witty", 1], ["slow", 0]])
    assert run_lstm(root, tmp_path / "lstm", task, max_length=4) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    said = "label(s) 1 never occur in the training rows; the students cannot learn them"
    expected = [f"warning: {root / folder / 'dev.tsv'} (dev): {said}"]
    if task == "tweets":
        expected.insert(0, f"warning: {root / folder / 'validation.tsv'} (validation): {said}")
    assert warnings == expected
    assert not error_lines_of(err)


# --------------------------------------------------------------------------- bad input


def _corrupt(root: Path, problem: str) -> str:
    """Break one SST-2 file; returns the 'file[:line]' the error must name."""
    train, dev = root / "SST-2" / "train.tsv", root / "SST-2" / "dev.tsv"
    if problem == "label":
        lines = dev.read_text().splitlines(keepends=True)
        lines[3] = "a fine film\t2\n"
        dev.write_text("".join(lines))
        return f"{dev}:4"
    if problem == "column":
        dev.write_text(dev.read_text().replace("sentence\tlabel", "sentence\tpolarity", 1))
        return str(dev)
    lines = train.read_bytes().splitlines(keepends=True)      # not UTF-8, line 5 of train
    lines[4] = b"caf\xe9 latte\t1\n"
    train.write_bytes(b"".join(lines))
    return f"{train}:5"


@pytest.mark.parametrize("stage", ["bert", "lstm"])
@pytest.mark.parametrize("problem", ["label", "column", "utf8"])
def test_bad_input_leaves_no_output(tmp_path, vocab, capsys, stage, problem):
    root = make_sst2(tmp_path / "glue")
    where = _corrupt(root, problem)
    out = tmp_path / "records" / "sst2" / "x16"
    if stage == "bert":
        rc = run_bert(root, out, "sst2", vocab, 16)
    else:
        rc = run_lstm(root, out, "sst2", 16)
    err = capsys.readouterr().err
    assert rc == 1
    lines = error_lines_of(err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {where}")
    assert "Traceback" not in err
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no temp folder


def test_unknown_task_and_missing_vocab(tmp_path, capsys):
    root = make_sst2(tmp_path / "glue")
    assert run_bert(root, tmp_path / "o", "sst3", tmp_path / "vocab.txt", 16) == 1
    assert run_bert(root, tmp_path / "o", "sst2", tmp_path / "vocab.txt", 16) == 1
    lines = error_lines_of(capsys.readouterr().err)
    assert len(lines) == 2 and "unknown task 'sst3'" in lines[0]
    assert f"{tmp_path / 'vocab.txt'}: vocabulary file not found" in lines[1]
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- QQP; meta.json vocab


def make_qqp(root: Path, seed: int = 4) -> tuple[Path, list[int]]:
    """QQP with rows that lack fields in train (as in GLUE's file); returns the kept labels."""
    rng = random.Random(seed)
    header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    rows, kept = [], []
    for i in range(30):
        if i in (3, 17):                  # a question broken by a newline: two short lines
            rows += [[i, 2 * i, 2 * i + 1, sentence(rng)], [sentence(rng) + "?", 1]]
        elif i == 25:                     # no label
            rows.append([i, 2 * i, 2 * i + 1, sentence(rng), sentence(rng)])
        else:
            kept.append(rng.randint(0, 1))
            rows.append([i, 2 * i, 2 * i + 1, sentence(rng) + "?", sentence(rng) + "?", kept[-1]])
    write_tsv(root / "QQP" / "train.tsv", header, rows)
    write_tsv(root / "QQP" / "dev.tsv", header,
              [[i, i, i, sentence(rng), sentence(rng), rng.randint(0, 1)] for i in range(9)])
    return root, kept


def test_qqp_stages_skip_the_same_malformed_rows_and_log_them(tmp_path, vocab, capsys):
    root, kept = make_qqp(tmp_path / "glue")
    assert run_bert(root, tmp_path / "bert", "qqp", vocab, 32) == 0
    bert_err = capsys.readouterr().err
    assert run_lstm(root, tmp_path / "lstm", "qqp", max_length=8) == 0
    lstm_err = capsys.readouterr().err
    # rows 3 and 17 are lines 5-6 and 20-21 of the file, row 25 is line 29
    for err in (bert_err, lstm_err):
        assert "qqp train: skipped 5 malformed rows (first at line 5)" in err
        assert "qqp dev: skipped" not in err and not error_lines_of(err)
        assert "qqp validation: skipped" not in err            # train's rows, said once
    mask = carved("qqp", root)           # over the 27 well-formed rows
    assert len(mask) == len(kept) == 27 and mask.sum() == 3
    for kind in ("bert", "lstm"):
        meta = json.loads((tmp_path / kind / "meta.json").read_text())
        assert meta["counts"] == {"train": 24, "validation": 3, "dev": 9}
        for split, rows in [("train", ~mask), ("validation", mask)]:
            labels = stack(records(ofrecord.record_file(tmp_path / kind, split)), "label_ids")
            # record i is the same example in both files
            assert labels[:, 0].tolist() == np.array(kept)[rows].tolist()


def test_bert_meta_names_the_vocab_by_hash_and_a_portable_path(tmp_path, vocab, monkeypatch):
    root = make_sst2(tmp_path / "glue")
    digest = hashlib.sha256(vocab.read_bytes()).hexdigest()
    work = tmp_path / "work"
    (work / "models" / "bert").mkdir(parents=True)
    inside = shutil.copy(vocab, work / "models" / "bert" / "vocab.txt")
    outside = shutil.copy(vocab, tmp_path / "vocab.txt")
    monkeypatch.chdir(work)
    for given, named in [(inside, "models/bert/vocab.txt"), (outside, "vocab.txt"),
                         ("models/bert/vocab.txt", "models/bert/vocab.txt"),
                         ("../vocab.txt", "vocab.txt")]:
        out = tmp_path / "records"
        assert run_bert(root, out, "sst2", Path(given), 16) == 0
        text = (out / "meta.json").read_text()
        meta = json.loads(text)
        assert (meta["vocab"], meta["vocab_sha256"]) == (named, digest), given
        assert str(tmp_path) not in text


# --------------------------------------------------------------------------- Snakemake

SNAKEMAKE = REPO / ".venv" / "bin" / "snakemake"
ALL_TASKS = "[cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, tweets]"


@pytest.fixture
def workflow(tmp_path):
    """A copy of the workflow in tmp_path, and a function that runs snakemake on it."""
    pytest.importorskip("snakemake")
    if not SNAKEMAKE.exists():
        pytest.skip("needs .venv/bin/snakemake")
    wf = tmp_path / "wf"
    wf.mkdir()
    shutil.copy(REPO / "Snakefile", wf)
    shutil.copy(REPO / "config.yaml", wf)
    shutil.copytree(REPO / "rules", wf / "rules")
    runtimes = {"torch": str(REPO / ".venv" / "bin" / "python"),
                "oneflow": str(REPO / ".venv-oneflow" / "bin" / "python")}

    def snakemake(*targets: str, config: tuple[str, ...] = (), override: dict | None = None,
                  dry_run: bool = False) -> subprocess.CompletedProcess:
        # Nested values given with --config stay strings (Snakemake parses them with YAML's
        # BaseLoader), so typed overrides go in a second config file.
        files = [str(wf / "config.yaml")]
        if override:
            (wf / "override.json").write_text(json.dumps(override))
            files.append(str(wf / "override.json"))
        cmd = [str(SNAKEMAKE), *targets, "-s", str(wf / "Snakefile"), "--directory", str(wf),
               "--cores", "2", *(["-n"] if dry_run else []), "--configfile", *files,
               "--config", "runtimes=" + json.dumps(runtimes), *config]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("http_", "https_",
                                                                        "HTTP_", "HTTPS_"))}
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env=env)

    snakemake.dir = wf
    return snakemake


def test_snakemake_builds_builtin_records_offline(workflow):
    target = "data/ofrecord/tweets/bert64/train.of_record-0"
    done = workflow(target)
    assert done.returncode == 0, done.stderr[-3000:]
    out = workflow.dir / "data" / "ofrecord" / "tweets" / "bert64"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"]["train"] == 4000 and meta["max_length"] == 64
    assert meta["counts"]["validation"] == 2000          # config.yaml's data.builtin.validation
    for split in ("dev", "validation"):
        assert ofrecord.count_records(out / f"{split}.of_record-0") == meta["counts"][split]
    for split in ("train", "validation", "dev"):
        assert (workflow.dir / "data" / "glue" / "tweets" / f"{split}.tsv").is_file()
    again = workflow(target, dry_run=True)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def test_snakemake_sst2_from_a_local_mirror(workflow, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    rng = random.Random(3)
    with zipfile.ZipFile(site / "SST-2.zip", "w") as zf:
        for split, n in [("train", 30), ("dev", 10)]:
            zf.writestr(f"SST-2/{split}.tsv", "sentence\tlabel\n" + "".join(
                f"{sentence(rng)}\t{rng.randint(0, 1)}\n" for _ in range(n)))
        zf.writestr("SST-2/test.tsv", "index\tsentence\n0\tno label here\n")
    target = "data/ofrecord/sst2/bert128/train.of_record-0"
    with serve(site) as (_, url):
        done = workflow(target, config=(f"data={{glue_url: {url}}}",))
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((workflow.dir / "data/ofrecord/sst2/bert128/meta.json").read_text())
    assert meta["counts"] == {"train": 27, "validation": 3, "dev": 10} and meta["max_length"] == 128

    assert not (workflow.dir / "data" / "glue" / "SST-2").exists()  # downloads: their own folder
    # the same target with no server: the job fails and its log says what to do
    shutil.rmtree(workflow.dir / "data" / "download" / "SST-2")
    shutil.rmtree(workflow.dir / "data" / "ofrecord" / "sst2")
    dead = f"http://127.0.0.1:{dead_port()}"
    failed = workflow(target, override={"data": {"glue_url": dead, "retries": 0, "timeout_s": 2}})
    assert failed.returncode != 0
    log = (workflow.dir / "logs" / "glue" / "SST-2" / "download.log").read_text()
    lines = error_lines_of(log)
    assert len(lines) == 1, log
    assert f"{dead}/SST-2.zip" in lines[0] and re.search(r"place .* by hand", lines[0])
    assert lines[0] in error_lines_of(failed.stderr)   # ... and so does the console
    assert not (workflow.dir / "data" / "glue" / "SST-2" / "train.tsv").exists()
    assert not (workflow.dir / "data" / "download" / "SST-2" / "train.tsv").exists()


def test_snakemake_dry_run_of_every_task(workflow):
    done = workflow(dry_run=True, config=(f"tasks={ALL_TASKS}",))
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout + done.stderr
    for rule, count in [("download_glue", 8), ("download_glue_mnli", 1), ("prepare_builtin", 1),
                        ("ofrecord_bert", 10), ("ofrecord_lstm", 10)]:
        assert re.search(rf"^{rule}\s+{count}$", text, re.M), rule


def test_snakemake_rejects_a_bad_backend(workflow):
    done = workflow(dry_run=True, config=("backend=jax",))
    assert done.returncode != 0
    assert re.search(r"backend.*jax", done.stdout + done.stderr)
