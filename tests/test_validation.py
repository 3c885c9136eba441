"""The validation split (kdlib.data.validation): how it is carved from a training file, and that no
validation text reaches train, dev or a transfer set: the built-in tweets, a GLUE task, custom tasks
with and without a validation file of their own.
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import tinydata
from conftest import CARVE_ARGS, error_lines

from kdlib.data import ofrecord, tasks, transfer
from kdlib.data.validation import Carve, carve_mask, task_mask
from kdlib.errors import DataError
from workflow_scripts import ofrecord_bert, ofrecord_lstm, prepare_builtin, transfer_set

WORDS = [f"w{i}" for i in range(95)]          # the tiny vocabulary's words


# ---- the carve ------------------------------------------------------------------------------------

def test_the_carve_holds_out_a_seeded_stratified_share_with_a_cap():
    labels = np.repeat([0, 1, 2], [700, 200, 100])
    mask = carve_mask(labels, Carve(fraction=0.1, max_rows=2000, seed=0))
    assert mask.sum() == 100
    assert [int(mask[labels == k].sum()) for k in (0, 1, 2)] == [70, 20, 10]      # each label's share
    assert np.array_equal(mask, carve_mask(labels, Carve(0.1, 2000, 0)))          # seeded
    assert not np.array_equal(mask, carve_mask(labels, Carve(0.1, 2000, 1)))
    capped = carve_mask(labels, Carve(fraction=0.5, max_rows=30, seed=0))
    assert capped.sum() == 30 and [int(capped[labels == k].sum()) for k in (0, 1, 2)] == [21, 6, 3]
    assert carve_mask(labels, Carve(fraction=0.5, max_rows=0, seed=0)).sum() == 500    # no cap


def test_the_carve_always_leaves_training_rows_and_takes_at_least_one():
    assert carve_mask(np.array([0, 1, 1]), Carve(0.1, 2000, 0)).sum() == 1
    assert carve_mask(np.array([0, 1]), Carve(0.9, 2000, 0)).sum() == 1
    with pytest.raises(DataError, match=r"train.tsv: 1 training row\(s\), too few to carve"):
        carve_mask(np.array([1]), Carve(), source="train.tsv")


def test_a_regression_carve_is_stratified_by_decile():
    scores = np.random.default_rng(0).random(1000) * 5
    mask = carve_mask(scores, Carve(0.1, 2000, 0), regression=True)
    assert mask.sum() == 100
    deciles = np.searchsorted(np.sort(scores), scores) * 10 // 1000
    assert [int(mask[deciles == d].sum()) for d in range(10)] == [10] * 10


# ---- a GLUE task ----------------------------------------------------------------------------------

def sentence(rng: random.Random, i: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))) + f" w{i % 95}"


def make_sst2(root: Path, n_train: int = 60, n_dev: int = 12) -> dict[str, list[tuple[str, int]]]:
    rng, rows = random.Random(5), {}
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows[split] = list({sentence(rng, i): i % 2 for i in range(n)}.items())
        folder = root / "SST-2"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{split}.tsv", "w", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
            w.writerow(["sentence", "label"])
            w.writerows(rows[split])
    return rows


def record_texts(folder: Path, split: str, vocab: list[str]) -> list[str]:
    """The words of each BERT record (tiny vocabulary, one piece a word), in record order."""
    out = []
    for rec in ofrecord.iter_records(ofrecord.record_file(folder, split)):
        ids = rec["input_ids"][rec["input_mask"] == 1][1:-1]
        out.append(" ".join(vocab[i] for i in ids))
    return out


def test_a_glue_task_keeps_its_validation_rows_out_of_train_dev_and_the_transfer_set(tmp_path, capsys):
    root = tmp_path / "glue"
    rows = make_sst2(root)
    pretrained = tinydata.write_pretrained(tmp_path / "pretrained")
    vocab = (pretrained / "vocab.txt").read_text().splitlines()
    assert ofrecord_bert.main(["--task", "sst2", "--glue-root", str(root), *CARVE_ARGS, "--out-dir",
                               str(tmp_path / "bert"), "--tokenizer", str(pretrained / "vocab.txt"),
                               "--max-length", "16"]) == 0
    assert ofrecord_lstm.main(["--task", "sst2", "--glue-root", str(root), *CARVE_ARGS, "--out-dir",
                               str(tmp_path / "lstm"), "--max-length", "16", "--vocab-size", "100"]) == 0
    mask = task_mask(tasks.get_task("sst2"), root, Carve())
    train_texts = [t for t, _ in rows["train"]]
    held = [t for t, m in zip(train_texts, mask) if m]
    assert len(held) == 6 and record_texts(tmp_path / "bert", "validation", vocab) == held
    assert record_texts(tmp_path / "bert", "train", vocab) == [t for t, m in zip(train_texts, mask) if not m]
    assert not set(held) & {t for t, _ in rows["dev"]}
    meta = json.loads((tmp_path / "lstm/meta.json").read_text())
    assert meta["counts"] == {"train": 54, "validation": 6, "dev": 12}
    word_labels = [int(r["label_ids"][0]) for r in
                   ofrecord.iter_records(ofrecord.record_file(tmp_path / "lstm", "validation"))]
    assert word_labels == [label for (_, label), m in zip(rows["train"], mask) if m]   # row-aligned

    # a transfer set whose unlabeled file holds two validation texts (one re-spaced and upper-cased)
    raw = tmp_path / "raw.txt"
    raw.write_text(f"{held[0]}\n{held[1].upper().replace(' ', '  ')}\nw1 w2 w3 w4 w5 w6 w7 w8 w9\n")
    out = tmp_path / "set.tsv"
    capsys.readouterr()
    assert transfer_set.main(["--task", "sst2", "--glue-root", str(root), *CARVE_ARGS, "--name", "raw",
                              "--definition", json.dumps({"unlabeled": str(raw), "augment": "tang",
                                                          "variants": 3}), "--out", str(out)]) == 0
    kept = {transfer.normalise(t) for t in out.read_text().splitlines()[1:]}
    assert not kept & {transfer.normalise(t) for t in held + train_texts + [t for t, _ in rows["dev"]]}
    assert "w1 w2 w3 w4 w5 w6 w7 w8 w9" in kept
    assert "2 validation" in capsys.readouterr().err


# ---- custom tasks ---------------------------------------------------------------------------------

def write_custom(folder: Path, split: str, texts: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.tsv"
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{['neg', 'pos'][i % 2]}\n" for i, t in enumerate(texts)))
    return path


def test_a_custom_validation_file_is_the_validation_split_and_train_stays_whole(tmp_path, capsys):
    rng = random.Random(2)
    own = tmp_path / "own"
    texts = {split: [sentence(rng, i) + f" {split}" for i in range(n)]
             for split, n in (("train", 20), ("validation", 6), ("dev", 8))}
    definition = {"text_a": "text", "label": "label",
                  **{split: str(write_custom(own, split, t)) for split, t in texts.items()}}
    pretrained = tinydata.write_pretrained(tmp_path / "pretrained")
    vocab = (pretrained / "vocab.txt").read_text().splitlines()
    custom = json.dumps(definition)
    assert ofrecord_bert.main(["--task", "mine", "--custom", custom, "--glue-root", "unused", *CARVE_ARGS,
                               "--out-dir", str(tmp_path / "bert"), "--tokenizer", str(pretrained / "vocab.txt"),
                               "--max-length", "16"]) == 0
    task = tasks.task_of_records(tmp_path / "bert", "mine")
    assert task.validation_file and task.splits == ("train", "validation", "dev")
    meta = json.loads((tmp_path / "bert/meta.json").read_text())
    assert meta["counts"] == {"train": 20, "validation": 6, "dev": 8}       # nothing carved
    strip = [t.rsplit(" ", 1)[0] for t in texts["validation"]]              # "validation" is no word
    assert [t.rsplit(" ", 1)[0] for t in record_texts(tmp_path / "bert", "validation", vocab)] == strip

    raw = tmp_path / "raw.txt"
    raw.write_text("\n".join(texts["validation"][:3] + ["w3 w4 w5 w6 w7 w8 w9 w10"]) + "\n")
    out = tmp_path / "set.tsv"
    capsys.readouterr()
    assert transfer_set.main(["--task", "mine", "--custom", custom, "--glue-root", "unused", *CARVE_ARGS,
                              "--name", "raw", "--definition", json.dumps({"unlabeled": str(raw)}),
                              "--out", str(out)]) == 0
    assert out.read_text().splitlines()[1:] == ["w3 w4 w5 w6 w7 w8 w9 w10"]
    assert "3 validation" in capsys.readouterr().err


def test_a_custom_task_without_a_validation_file_carves_one_from_train(tmp_path):
    rng = random.Random(3)
    own = tmp_path / "own"
    definition = {"text_a": "text", "label": "label",
                  "train": str(write_custom(own, "train", [sentence(rng, i) for i in range(40)])),
                  "dev": str(write_custom(own, "dev", [sentence(rng, i) for i in range(8)]))}
    pretrained = tinydata.write_pretrained(tmp_path / "pretrained")
    assert ofrecord_bert.main(["--task", "mine", "--custom", json.dumps(definition), "--glue-root", "x",
                               *CARVE_ARGS, "--out-dir", str(tmp_path / "bert"), "--tokenizer",
                               str(pretrained / "vocab.txt"), "--max-length", "16"]) == 0
    task = tasks.task_of_records(tmp_path / "bert", "mine")
    assert not task.validation_file and task.splits == ("train", "dev")
    assert json.loads((tmp_path / "bert/meta.json").read_text())["counts"] == \
        {"train": 36, "validation": 4, "dev": 8}


def test_a_custom_validation_file_with_a_bad_label_is_one_line_naming_it(tmp_path, capsys):
    own = tmp_path / "own"
    definition = {"text_a": "text", "label": "label", "labels": ["neg", "pos"],
                  "train": str(write_custom(own, "train", ["w1 w2", "w3 w4"])),
                  "dev": str(write_custom(own, "dev", ["w5 w6"]))}
    (own / "validation.tsv").write_text("text\tlabel\nw7\tneg\nw8\tmaybe\n")
    definition["validation"] = str(own / "validation.tsv")
    pretrained = tinydata.write_pretrained(tmp_path / "pretrained")
    assert ofrecord_bert.main(["--task", "mine", "--custom", json.dumps(definition), "--glue-root", "x",
                               *CARVE_ARGS, "--out-dir", str(tmp_path / "bert"), "--tokenizer",
                               str(pretrained / "vocab.txt"), "--max-length", "16"]) == 1
    assert error_lines(capsys) == [f"error: {own / 'validation.tsv'}:3: label 'maybe' is not one of neg, pos"]
    assert not (tmp_path / "bert").exists()


# ---- the built-in tweets --------------------------------------------------------------------------

def test_no_validation_tweet_is_in_train_dev_or_the_builtin_transfer_set(tmp_path, capsys):
    glue = tmp_path / "glue"
    assert prepare_builtin.main(["--task", "tweets", "--out-dir", str(glue / "tweets"), "--dev-fraction",
                                 "0.1", "--max-train", "4000", "--seed", "13", "--validation", "2000"]) == 0
    split = {name: tasks.read_split(tasks.get_task("tweets"), glue / "tweets" / f"{name}.tsv", split=name)
             for name in ("train", "validation", "dev")}
    keys = {name: {transfer.normalise(t) for chunk in chunks for t in chunk["text_a"]}
            for name, chunks in split.items()}
    assert len(keys["validation"]) == 2000 and len(keys["train"]) == 4000
    assert not keys["validation"] & keys["train"] and not keys["validation"] & keys["dev"]
    out = tmp_path / "tweets_raw.tsv"
    capsys.readouterr()
    assert transfer_set.main(["--task", "tweets", "--glue-root", str(glue), *CARVE_ARGS, "--name", "raw",
                              "--definition", json.dumps({"unlabeled": "builtin"}), "--out", str(out)]) == 0
    kept = {transfer.normalise(t) for t in out.read_text(encoding="utf-8").splitlines()[1:]}
    assert not kept & (keys["validation"] | keys["train"] | keys["dev"])
    line = capsys.readouterr().err
    dropped = int(line.split(" validation,")[0].rsplit(" ", 1)[1])
    assert dropped >= 2000, line                    # every validation tweet, and its repeats
