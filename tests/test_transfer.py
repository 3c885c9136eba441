"""Transfer sets (kdlib.data.transfer, workflow_scripts/transfer_set.py, ofrecord_transfer.py): no
dev or training text and no duplicate in a set, seeded and reproducible augmentation and draws,
the interleaving with the labelled records, the hard loss that skips transfer rows, and bad input
as one line."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import tinydata
from conftest import CARVE_ARGS, error_lines

from kdlib import config
from kdlib.data import transfer
from kdlib.data.batching import batches
from kdlib.data.ofrecord import iter_records, record_file
from kdlib.distill import ops
from kdlib.distill.spec import student_spec, transfer_of
from kdlib.errors import ConfigError, DataError
from workflow_scripts import ofrecord_bert, ofrecord_transfer, transfer_set


def spec(**values) -> transfer.TransferSpec:
    return transfer.TransferSpec.from_dict("t", {"seed": 0, **values})


def texts(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[1:]


# ---- the set -------------------------------------------------------------------------------------

def test_a_set_holds_no_dev_or_training_text_and_no_duplicate(tmp_path):
    dev = [("Hello World", None), ("the dev text", None)]
    train = [("a training text", None)]
    unlabeled = [("hello   WORLD ", None), ("new one", None), ("New  one", None), ("  ", None),
                 ("A training text", None), ("another", None)]
    counts = transfer.build(spec(unlabeled="x"), train, dev, tmp_path / "t.tsv", False, unlabeled)
    assert texts(tmp_path / "t.tsv") == ["new one", "another"]
    assert counts == {"kept": 2, "unlabeled": 6, "augmented": 0, "dropped_empty": 1, "dropped_dev": 1,
                      "dropped_validation": 0, "dropped_train": 1, "dropped_duplicate": 1,
                      "dropped_over_cap": 0}
    line = transfer.describe("t", counts)
    assert "2 texts kept" in line and "1 dev" in line and "1 duplicate" in line


def test_augmented_variants_that_equal_a_dev_text_are_dropped(tmp_path):
    # every variant of "a b c" is a 1- to 3-gram of it; "a b" and "b c" are dev texts
    dev = [("a b", None), ("B C", None)]
    counts = transfer.build(spec(augment="tang", variants=200, p_mask=0.0, p_ngram=1.0),
                            [("a b c", None)], dev, tmp_path / "t.tsv", False)
    kept = texts(tmp_path / "t.tsv")
    assert sorted(kept) == ["a", "b", "c"]           # and "a b c" itself is a training text
    assert counts["dropped_dev"] > 0 and counts["dropped_train"] > 0
    assert not {transfer.normalise(t) for t in kept} & {"a b", "b c", "a b c"}


def test_pairs_are_compared_whole(tmp_path):
    dev = [("q one", "q two")]
    unlabeled = [("Q one", "q TWO"), ("q one", "q three"), ("q one", "")]
    transfer.build(spec(unlabeled="x"), [], dev, tmp_path / "t.tsv", True, unlabeled)
    lines = (tmp_path / "t.tsv").read_text().splitlines()
    assert lines == ["text_a\ttext_b", "q one\tq three"]


def test_the_cap_is_a_seeded_draw(tmp_path):
    rows = [(f"text {i}", None) for i in range(50)]

    def draw(seed):
        out = tmp_path / f"t{seed}.tsv"
        counts = transfer.build(spec(unlabeled="x", max_examples=10, seed=seed), [], [], out, False, rows)
        assert counts["kept"] == 10 and counts["dropped_over_cap"] == 40
        return texts(out)
    assert draw(1) == draw(1)
    assert draw(1) != draw(2)
    assert len(set(draw(3))) == 10
    # over many seeds, every row is about equally likely (a reservoir, not the first ten)
    hits = np.zeros(50)
    for seed in range(200):
        for t in draw(seed):
            hits[int(t.split()[1])] += 1
    assert hits[:10].mean() < 2 * hits[40:].mean() and hits[40:].mean() < 2 * hits[:10].mean()


def test_tang_variants_are_seeded_and_follow_the_probabilities():
    row = (" ".join(f"w{i}" for i in range(40)), None)

    def variants(seed, **p):
        return list(transfer.tang_variants(row, 30, np.random.default_rng(seed), **p))
    assert variants(0, p_mask=0.1, p_ngram=0.25) == variants(0, p_mask=0.1, p_ngram=0.25)
    assert variants(0, p_mask=0.1, p_ngram=0.25) != variants(1, p_mask=0.1, p_ngram=0.25)
    masked = [v[0].split() for v in variants(0, p_mask=0.1, p_ngram=0.0)]
    share = np.mean([w == transfer.MASK for words in masked for w in words])
    assert 0.05 < share < 0.15 and all(len(words) == 40 for words in masked)
    for (text, b) in variants(0, p_mask=0.0, p_ngram=1.0):
        words = text.split()
        assert b is None and 1 <= len(words) <= transfer.MAX_NGRAM
        assert " ".join(words) in row[0]                 # a contiguous n-gram
    assert all(v[0] == row[0] for v in variants(0, p_mask=0.0, p_ngram=0.0))


def test_a_masked_word_is_one_unknown_word_in_the_word_records():
    from kdlib.data.convert import WordTokenizer
    words = WordTokenizer()
    assert words(f"I {transfer.MASK} it,{transfer.MASK}") == ["i", transfer.MASK, "it", ",", transfer.MASK]
    assert words("a", f"{transfer.MASK} b") == ["a", transfer.MASK, "b"]
    assert words("[mask]") == ["[", "mask", "]"]            # only the token itself, in capitals


def test_a_set_with_nothing_left_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no text left"):
        transfer.build(spec(unlabeled="x"), [("same", None)], [], tmp_path / "t.tsv", False,
                       [("same", None)])
    assert not (tmp_path / "t.tsv").exists()


@pytest.mark.parametrize("content, pairs, message", [
    (b"one\ttwo\n", False, ":1: 2 tab-separated field(s); one text per line"),
    (b"ok\tfine\nonly one\n", True, ":2: 1 tab-separated field(s); a pair task needs"),
    (b"fine\n\xff\xfe\n", False, ":2: not UTF-8"),
])
def test_a_bad_unlabeled_file_names_its_line(tmp_path, content, pairs, message):
    path = tmp_path / "raw.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(message)):
        list(transfer.read_unlabeled(path, pairs))


def test_unlabeled_files_skip_blank_lines_and_builtin_is_for_the_builtin_tasks(tmp_path):
    path = tmp_path / "raw.txt"
    path.write_text("first\n\n  \nsecond\r\n", encoding="utf-8")
    assert list(transfer.read_unlabeled(path, False)) == [("first", None), ("second", None)]
    with pytest.raises(DataError, match="not found"):
        list(transfer.read_unlabeled(tmp_path / "missing.txt", False))
    with pytest.raises(DataError, match="built-in tasks"):
        list(transfer.builtin_unlabeled("sst2"))


def test_builtin_unlabeled_keeps_every_sentiment(tmp_path):
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("sentiment,confidence,text\nnegative,1,bad  day\nneutral,1,a day\n"
                      "positive,1,good day\nneutral,1,\n", encoding="utf-8")
    assert list(transfer.builtin_unlabeled("tweets", corpus)) == [("bad day", None), ("a day", None),
                                                                  ("good day", None)]


# ---- labelled + transfer -------------------------------------------------------------------------

def test_mix_interleaves_in_a_seeded_order_keeping_each_sources_order(tmp_path):
    labelled = tinydata.write_split(tmp_path / "l.of_record-0", tinydata.make_examples(30, 1))
    extra = tinydata.make_examples(20, 2)
    extra["is_real_example"][:] = 0
    unlabeled = tinydata.write_split(tmp_path / "u.of_record-0", extra)
    counts = transfer.mix(labelled, unlabeled, tmp_path / "m.of_record-0", seed=3)
    assert counts == {"labelled": 30, "transfer": 20}
    mixed = list(iter_records(tmp_path / "m.of_record-0"))
    real = np.array([int(r["is_real_example"][0]) for r in mixed])
    assert real.sum() == 30 and len(real) == 50
    assert (real == transfer.mix_order(30, 20, 3)).all()
    assert not (real[:30] == 1).all()                         # really interleaved
    ids = [r["input_ids"].tolist() for r in mixed]
    assert [i for i, r in zip(ids, real) if r] == [r["input_ids"].tolist() for r in iter_records(labelled)]
    assert [i for i, r in zip(ids, real) if not r] == extra["input_ids"].tolist()
    assert (transfer.mix_order(30, 20, 3) == transfer.mix_order(30, 20, 3)).all()
    assert not (transfer.mix_order(30, 20, 3) == transfer.mix_order(30, 20, 4)).all()


def test_the_masked_hard_loss_ignores_the_transfer_rows(B):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 0, 0, 0])
    weight = np.array([1, 1, 1, 0, 0, 0], np.float32)

    def loss(logits, labels, weight=None):
        w = None if weight is None else B.tensor(weight)
        return float(B.to_numpy(ops.hard_loss(B.F, B.tensor(logits), B.tensor(labels), weight=w)))
    masked = loss(logits, labels, weight)
    assert masked == pytest.approx(loss(logits[:3], labels[:3]), rel=1e-6)
    other = logits.copy()
    other[3:] = rng.normal(size=(3, 3)) * 10                   # the transfer rows change ...
    assert loss(other, np.array([0, 2, 1, 2, 1, 2]), weight) == pytest.approx(masked, rel=1e-6)
    assert loss(logits, labels) != pytest.approx(masked, rel=1e-3)   # ... which the plain loss sees
    # no labelled row: 0, still attached to the logits
    t = B.tensor(logits)
    t.requires_grad = True
    zero = ops.hard_loss(B.F, t, B.tensor(labels), weight=B.tensor(np.zeros(6, np.float32)))
    zero.backward()
    assert float(B.to_numpy(zero)) == 0.0 and np.all(B.to_numpy(t.grad) == 0)
    # regression: the mean squared error over the labelled rows
    scores = rng.normal(size=(6, 1)).astype(np.float32)
    targets = rng.normal(size=6).astype(np.float32)
    got = float(B.to_numpy(ops.hard_loss(B.F, B.tensor(scores), B.tensor(targets), True, B.tensor(weight))))
    assert got == pytest.approx(float(((scores[:3, 0] - targets[:3]) ** 2).mean()), rel=1e-5)


# ---- the stages ----------------------------------------------------------------------------------

@pytest.fixture()
def tickets(tmp_path):
    """A custom single-text task with its records, and an unlabeled file holding a dev text."""
    own = tmp_path / "own"
    own.mkdir()
    (own / "train.tsv").write_text("text\tlabel\nw1 w2 w3\tpos\nw4 w5\tneg\nw1 w4\tpos\n", encoding="utf-8")
    (own / "dev.tsv").write_text("text\tlabel\nw2 w3\tpos\nw5 w6\tneg\n", encoding="utf-8")
    (own / "raw.txt").write_text("w7 w8\nW2  w3\nw1 w2 w3\nw9\nw7 w8\n", encoding="utf-8")
    definition = {"train": str(own / "train.tsv"), "dev": str(own / "dev.tsv"), "text_a": "text",
                  "label": "label"}
    tinydata.write_pretrained(tmp_path / "bert")
    custom = json.dumps(definition)
    assert ofrecord_bert.main(["--task", "tickets", "--custom", custom, "--glue-root", "data/glue", *CARVE_ARGS,
                               "--out-dir", str(tmp_path / "bert8"), "--tokenizer",
                               str(tmp_path / "bert/vocab.txt"), "--max-length", "8"]) == 0
    return tmp_path, custom


def test_the_stages_build_the_set_and_a_mixed_record_folder(tickets, capsys):
    root, custom = tickets
    out = root / "transfer.tsv"
    definition = json.dumps({"unlabeled": str(root / "own/raw.txt"), "augment": "tang", "variants": 2})
    assert transfer_set.main(["--task", "tickets", "--custom", custom, "--glue-root", "data/glue", *CARVE_ARGS,
                              "--name", "raw", "--definition", definition, "--out", str(out)]) == 0
    kept = texts(out)
    assert kept[:2] == ["w7 w8", "w9"]                 # the dev text, the training text, the repeat: out
    assert not {transfer.normalise(t) for t in kept} & {"w2 w3", "w5 w6", "w1 w2 w3", "w4 w5", "w1 w4"}
    assert "transfer set raw:" in capsys.readouterr().err
    assert ofrecord_transfer.main(["--task", "tickets", "--records", str(root / "bert8"), "--transfer",
                                   str(out), "--name", "raw",
                                   "--seed", "0", "--out-dir", str(root / "bert8+raw")]) == 0
    meta = json.loads((root / "bert8+raw/meta.json").read_text())
    assert meta["transfer"] == {"name": "raw", "labelled": 2, "transfer": len(kept)}   # 1 carved
    assert meta["counts"] == {"train": 2 + len(kept), "validation": 1, "dev": 2}
    assert meta["task_definition"]["labels"] == ["neg", "pos"]
    assert (root / "bert8+raw/dev.of_record-0").read_bytes() == (root / "bert8/dev.of_record-0").read_bytes()
    mixed = record_file(root / "bert8+raw", "train")
    real = np.concatenate([b["is_real_example"] for b in batches(mixed, 4)])
    assert real.sum() == 2 and len(real) == 2 + len(kept)


def test_the_stages_refuse_bad_input_in_one_line(tickets, tmp_path, capsys):
    root, custom = tickets
    args = ["--task", "tickets", "--custom", custom, "--glue-root", "data/glue", *CARVE_ARGS, "--name", "raw",
            "--out", str(tmp_path / "t.tsv"), "--definition"]
    assert transfer_set.main(args + [json.dumps({"unlabeled": str(tmp_path / "nope.txt")})]) == 1
    assert error_lines(capsys) == [f"error: {tmp_path / 'nope.txt'}: unlabeled text file not found"]
    assert transfer_set.main(args + [json.dumps({"unlabeled": "builtin"})]) == 1
    assert "built-in tasks" in error_lines(capsys)[0]
    assert transfer_set.main(args + [json.dumps({"augment": "eda"})]) == 1
    assert "--definition" in error_lines(capsys)[0]
    shutil.copytree(root / "bert8", tmp_path / "bare8")        # records without their tokenizer copy
    (tmp_path / "bare8/vocab.txt").unlink()
    (tmp_path / "t.tsv").write_text("text_a\nw1\n", encoding="utf-8")
    assert ofrecord_transfer.main(["--task", "tickets", "--records", str(tmp_path / "bare8"), "--transfer",
                                   str(tmp_path / "t.tsv"), "--name", "raw", "--seed", "0",
                                   "--out-dir", str(root / "x")]) == 1
    assert "no tokenizer.json or vocab.txt" in error_lines(capsys)[0]
    assert not (root / "x").exists()


def test_the_config_refuses_a_transfer_set_that_cannot_work():
    student = {"algorithm": "kd", "transfer": "raw"}
    with pytest.raises(ConfigError, match="students.s.transfer: no transfer set 'raw'"):
        config.validate({"students": {"s": student}})
    with pytest.raises(ConfigError, match="transfer.raw: give unlabeled, augment or both"):
        config.validate({"transfer": {"raw": {}}, "students": {"s": student}})
    with pytest.raises(ConfigError, match="algorithm none learns from the labels alone"):
        config.validate({"transfer": {"raw": {"unlabeled": "builtin"}},
                         "students": {"s": {"algorithm": "none", "transfer": "raw"}}})
    with pytest.raises(ConfigError, match="augment"):
        config.validate({"transfer": {"raw": {"augment": "eda"}}})
    cfg = config.validate({"transfer": {"raw": {"unlabeled": "builtin"}},
                           "students": {"s": student, "b": {"algorithm": "kd"}}})
    assert student_spec(cfg, "s")["transfer"] == "raw"
    assert "transfer" not in student_spec(cfg, "b")     # nothing changes for the others


def test_a_set_made_for_some_tasks_leaves_the_others_without_it():
    student = {"algorithm": "kd", "transfer": "raw"}
    cfg = config.validate({"transfer": {"raw": {"unlabeled": "builtin", "tasks": ["tweets", "tweets3"]}},
                           "students": {"s": student}})
    assert student_spec(cfg, "s", "tweets")["transfer"] == "raw"
    assert student_spec(cfg, "s_seed2", "tweets3")["transfer"] == "raw"
    assert "transfer" not in student_spec(cfg, "s", "sst2")
    assert transfer_of(cfg, "s", "sst2") is None and transfer_of(cfg, "s", None) == "raw"
    with pytest.raises(ConfigError, match=r"transfer.raw.tasks: tweet is no task"):
        config.validate({"transfer": {"raw": {"unlabeled": "builtin", "tasks": ["tweet"]}}})
    shipped = config.load("config.yaml")                     # the default: tweets only, not GLUE
    assert student_spec(shipped, "kd", "tweets")["transfer"] == "tweets_raw"
    assert "transfer" not in student_spec(shipped, "kd", "sst2")
    assert transfer.result_settings(shipped["transfer"]["tweets_raw"]).keys().isdisjoint({"tasks"})


def test_only_the_settings_a_set_uses_are_its_identity():
    values = config.validate_section({"unlabeled": "builtin"}, "transfer_set", "transfer.raw")
    assert transfer.result_settings(values) == {"unlabeled": "builtin", "augment": None,
                                                "max_examples": 0, "seed": 0}
    tang = config.validate_section({"augment": "tang", "p_replace": 0.9}, "transfer_set", "transfer.t")
    assert transfer.result_settings(tang) == {"unlabeled": None, "augment": "tang", "max_examples": 0,
                                              "seed": 0, "variants": 20, "p_mask": 0.1, "p_ngram": 0.25}
    tiny = config.validate_section({"augment": "tinybert"}, "transfer_set", "transfer.b")
    assert {"p_replace", "candidates", "variants"} <= transfer.result_settings(tiny).keys()
    assert "p_mask" not in transfer.result_settings(tiny)
