"""kdlib.predict: any model folder labels new text exactly as evaluation scores its records, from a
file or stdin, in input order; a copied folder still predicts; bad input is one error line."""
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tinydata

from kdlib import predict
from kdlib.data import convert
from kdlib.data.ofrecord import iter_records, record_file
from kdlib.data.tasks import TASKS
from kdlib.evaluate.evaluation import predict as evaluate_records
from kdlib.models import checkpoint
from kdlib.models.bert import BertConfig, build_bert
from kdlib.models.lstm import LstmConfig, build_bilstm
from kdlib.models.weights import read_safetensors

WORDS = [f"w{i}" for i in range(95)]
TEXTS = ["w1 w2 w3", "w4", " ".join(WORDS[:40]), "W5 w6, w7!", "w8 w9 w10 w11 w12", "zzz unknown",
         "w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3", "w2"]
LENGTH = 10                                  # the first of TEXTS and the one of 19 words get cut


def make_folder(B, folder, kind="bert", labels=("neg", "pos"), pair=False, seed=0):
    """A random model folder as the training stages write it (config with tokeniser settings)."""
    B.seed(seed)
    if kind == "bert":
        vocab = tinydata.VOCAB
        model = build_bert(B, BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=64,
                                         max_position_embeddings=LENGTH, num_labels=max(1, len(labels))))
    else:
        vocab = [convert.PAD, convert.UNK] + WORDS
        model = build_bilstm(B, LstmConfig(vocab_size=len(vocab), embedding_dim=8, hidden_size=6,
                                           fc_size=10, num_labels=max(1, len(labels))))
    meta = {"task": "t", "labels": list(labels), "role": "student", "tokenizer":
            "wordpiece" if kind == "bert" else "words", "max_length": LENGTH, "text_pair": pair}
    checkpoint.save_checkpoint(model, folder, meta)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return folder


def records_of(folder, texts, tmp_path, pair=False):
    """``texts`` converted as the record stages convert a task's TSV, with the folder's vocab."""
    task = TASKS["mrpc" if pair else "sst2"]
    a = [t[0] for t in texts] if pair else texts
    b = [t[1] for t in texts] if pair else [None] * len(texts)
    chunk = pd.DataFrame({"text_a": a, "text_b": b, "label": [0] * len(texts)})
    out = record_file(tmp_path / "records", "dev")
    out.parent.mkdir(exist_ok=True)
    config = checkpoint.read_checkpoint_config(folder)
    if config["tokenizer"] == "wordpiece":
        convert.convert_bert(task, [chunk], out, convert.wordpiece(folder / "vocab.txt", LENGTH))
    else:
        convert.convert_lstm(task, [chunk], out, convert.read_word_vocab(folder / "vocab.txt"), LENGTH)
    return out


def read_table(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), sep="\t", dtype={"label": str}, keep_default_na=False)


def run(capsys, *argv):
    code = predict.main([*map(str, argv), "--precision", "fp32"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.mark.parametrize("kind", ["bert", "lstm"])
def test_predict_equals_evaluation_of_the_same_texts_as_records(kind, B, tmp_path, capsys):
    folder = make_folder(B, tmp_path / "model", kind)
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    code, out, err = run(capsys, folder, tmp_path / "texts.txt", "--batch-size", 3)
    assert code == 0, err
    table = read_table(out)
    assert list(table.columns) == ["label", "probability", "logit_neg", "logit_pos"]
    model, _ = checkpoint.load_checkpoint(B, folder)
    want, _ = evaluate_records(B, model, records_of(folder, TEXTS, tmp_path))       # (N, 2)
    got = table[["logit_neg", "logit_pos"]].to_numpy()
    np.testing.assert_allclose(got, want, atol=2e-6)                                 # 6 decimals
    assert table["label"].tolist() == [["neg", "pos"][k] for k in want.argmax(1)]
    p = np.exp(want) / np.exp(want).sum(1, keepdims=True)
    np.testing.assert_allclose(table["probability"], p.max(1), atol=2e-6)
    assert "truncated, as in training" in err.splitlines()[-1]


def lively(folder, seed=1):
    """Redraw the folder's weights (but its LayerNorms') from N(0, 1): at its initialisation a random
    model gives nearly the same logits for every text, which would hide rows swapped or cut
    differently."""
    from safetensors.numpy import save_file
    rng = np.random.default_rng(seed)
    weights = read_safetensors(folder / "model.safetensors")
    weights = {k: v if "LayerNorm" in k or v.dtype.kind != "f" else rng.normal(0.0, 1.0, v.shape).astype(v.dtype)
               for k, v in weights.items()}
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "kdflow"})
    return folder


def alone(B, folder, texts) -> np.ndarray:
    """Each text's logits predicted on its own (a batch of one: no sorting, no padding)."""
    predictor = predict.Predictor(B, folder, batch_size=1)
    return np.stack([predictor([text])[0] for text in texts])


@pytest.mark.parametrize("kind", ["bert", "lstm"])
def test_rows_come_out_in_input_order_across_batches_and_chunks(kind, B, tmp_path, capsys, monkeypatch):
    """Seven texts of unsorted lengths, run two to a batch (sorted by length inside each chunk) in
    chunks of three lines: row i of the table must be text i's own prediction."""
    folder = lively(make_folder(B, tmp_path / "model", kind))
    texts = ["w1 w2 w3 w4 w5 w6", "w7", "w8 w9 w10", "w11 w12 w13 w14 w15 w16 w17 w18", "w19 w20",
             "w21 w22 w23 w24", "w25"]
    want = alone(B, folder, texts)                                                   # (7, 2)
    gaps = [np.abs(want[i] - want[j]).max() for i in range(len(texts)) for j in range(i)]
    assert min(gaps) > 1e-2                              # every text's logits are its own
    monkeypatch.setattr(predict, "CHUNK", 3)
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    code, out, err = run(capsys, folder, tmp_path / "texts.txt", "--batch-size", 2)
    assert code == 0, err
    got = read_table(out)[["logit_neg", "logit_pos"]].to_numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)     # padding: OneFlow differs by ~1e-5


@pytest.mark.parametrize("kind, pair", [("bert", False), ("bert", True), ("lstm", False)])
def test_a_text_longer_than_max_length_is_cut_as_its_records_are(kind, pair, B, tmp_path, capsys):
    """With max_length 10: a BERT keeps [CLS], the first 8 pieces and [SEP]; a pair of 8 and 6
    pieces is cut longest first, each text losing its tail (7 pieces fit: 4 and 3); a BiLSTM keeps
    the first 10 words. The encoding must be that, equal to the records' rows, and the long text
    must be predicted as its kept part is. The summary counts the two texts that fill all 10
    positions, not the one that fills 9."""
    folder = lively(make_folder(B, tmp_path / "model", kind, pair=pair))
    ids = {w: i for i, w in enumerate(tinydata.VOCAB)}
    if pair:
        long = (" ".join(WORDS[1:9]), " ".join(WORDS[9:15]))           # 8 and 6 pieces
        kept = (" ".join(WORDS[1:5]), " ".join(WORDS[9:12]))           # 4 and 3
        pieces = [tinydata.CLS, *(ids[f"w{i}"] for i in range(1, 5)), tinydata.SEP,
                  *(ids[f"w{i}"] for i in range(9, 12)), tinydata.SEP]
        segments = [0] * 6 + [1] * 4
    elif kind == "bert":
        long, kept = " ".join(WORDS[1:20]), " ".join(WORDS[1:9])
        pieces = [tinydata.CLS, *(ids[f"w{i}"] for i in range(1, 9)), tinydata.SEP]
    else:
        long, kept = " ".join(WORDS[1:20]), " ".join(WORDS[1:11])
        pieces = [2 + i for i in range(1, 11)]                       # [PAD], [UNK], then w0, w1, ...
    short = ("w1", "w2") if pair else "w1 w2"
    one_short = ("w1 w2 w3 w4", "w5 w6") if pair else " ".join(WORDS[1:(8 if kind == "bert" else 10)])
    texts = [long, kept, short, one_short]                    # one_short: one position left free
    config = checkpoint.read_checkpoint_config(folder)
    arrays = predict.Encoder(folder, config)(texts)
    assert arrays["input_ids"].shape == (4, LENGTH) and arrays["input_mask"][3].sum() == LENGTH - 1
    assert arrays["input_ids"][0].tolist() == pieces and arrays["input_mask"][0].tolist() == [1] * LENGTH
    if pair:
        assert arrays["segment_ids"][0].tolist() == segments
    records = list(iter_records(records_of(folder, texts, tmp_path, pair=pair)))
    for name, column in arrays.items():
        np.testing.assert_array_equal(column, np.stack([r[name] for r in records]), err_msg=name)
    logits = alone(B, folder, texts)
    np.testing.assert_allclose(logits[0], logits[1], rtol=0, atol=1e-4)
    assert np.abs(logits[0] - logits[2]).max() > 1e-2               # a prediction that depends on the text
    lines = "".join(("\t".join(t) if pair else t) + "\n" for t in texts)
    (tmp_path / "texts.txt").write_text(lines, encoding="utf-8")
    code, out, err = run(capsys, folder, tmp_path / "texts.txt")
    assert code == 0, err
    assert f"; 2 filled all {LENGTH} positions" in err.splitlines()[-1]   # the long text and its kept part
    assert len(read_table(out)) == 4


def test_a_copied_model_folder_still_predicts(B, tmp_path, capsys):
    folder = make_folder(B, tmp_path / "results" / "kd", "bert")
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS), encoding="utf-8")   # no final newline
    _, before, _ = run(capsys, folder, tmp_path / "texts.txt")
    moved = tmp_path / "elsewhere" / "shipped"
    shutil.copytree(folder, moved)
    shutil.rmtree(tmp_path / "results")
    code, after, err = run(capsys, moved, tmp_path / "texts.txt")
    assert code == 0, err
    assert after == before and len(read_table(after)) == len(TEXTS)


def test_pairs_from_stdin_through_the_command_line(B, tmp_path):
    folder = make_folder(B, tmp_path / "model", "bert", labels=("a", "b", "c"), pair=True)
    pairs = [("w1 w2", "w3"), ("w4 w5 w6 w7 w8 w9", "w10 w11 w12 w13 w14"), ("w1", "w1")]
    lines = "".join(f"{a}\t{b}\r\n" for a, b in pairs).encode()                     # CRLF too
    done = subprocess.run([sys.executable, "-m", "kdlib.predict", str(folder), "-", "--precision", "fp32",
                           "--out", str(tmp_path / "labels.tsv")],
                          input=lines, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    table = read_table((tmp_path / "labels.tsv").read_text(encoding="utf-8"))
    model, _ = checkpoint.load_checkpoint(B, folder)
    want, _ = evaluate_records(B, model, records_of(folder, pairs, tmp_path, pair=True))
    np.testing.assert_allclose(table[["logit_a", "logit_b", "logit_c"]].to_numpy(), want, atol=2e-6)
    assert done.stderr.decode().splitlines()[-1].startswith("predicted 3 texts")


def test_a_regression_model_writes_scores(B, tmp_path, capsys):
    folder = make_folder(B, tmp_path / "model", "lstm", labels=())
    (tmp_path / "t.txt").write_text("w1 w2\nw3\n", encoding="utf-8")
    code, out, _ = run(capsys, folder, tmp_path / "t.txt")
    assert code == 0 and out.splitlines()[0] == "score" and len(out.splitlines()) == 3


@pytest.mark.parametrize("data, pair, fragment", [
    (b"w1\n\nw2\n", False, "t.txt:2: an empty line"),
    (b"w1\n   \n", False, "t.txt:2: an empty line"),
    (b"w1\nw2 \xff w3\n", False, "t.txt:2: not UTF-8 text (byte 0xff at column 4)"),
    (b"w1\tw2\n", False, "t.txt:1: the line holds a tab, but this model reads one text per line"),
    (b"w1\tw2\nw3\n", True, "t.txt:2: this model reads sentence pairs"),
    (b"w1\t\n", True, "one of them empty"),
    (b"w1\tw2\tw3\n", True, "holds 3 tab-separated field(s)"),
    (b"", False, "t.txt: no texts"),
])
def test_bad_lines_are_one_error_naming_the_line(data, pair, fragment, B, tmp_path, capsys):
    folder = make_folder(B, tmp_path / "model", "bert", pair=pair)
    (tmp_path / "t.txt").write_bytes(data)
    code, out, err = run(capsys, folder, tmp_path / "t.txt")
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1 and lines[0].startswith("error: ")
    assert fragment.replace("t.txt", str(tmp_path / "t.txt")) in lines[0]


def test_a_byte_order_mark_is_not_part_of_the_first_text(B, tmp_path, capsys):
    folder = make_folder(B, tmp_path / "model", "bert")
    (tmp_path / "a.txt").write_bytes(b"w1 w2\nw3\n")
    (tmp_path / "b.txt").write_bytes(b"\xef\xbb\xbfw1 w2\nw3\n")
    assert run(capsys, folder, tmp_path / "a.txt")[1] == run(capsys, folder, tmp_path / "b.txt")[1]


def test_bad_folders_and_arguments_are_one_error_line(B, tmp_path, capsys):
    (tmp_path / "t.txt").write_text("w1\n", encoding="utf-8")
    folder = make_folder(B, tmp_path / "model", "bert")
    cases = [((tmp_path / "nowhere", tmp_path / "t.txt"), "not a model folder"),
             ((folder, tmp_path / "missing.txt"), "missing.txt: no such input file"),
             ((folder, tmp_path / "t.txt", "--batch-size", 0), "--batch-size must be at least 1")]
    old = make_folder(B, tmp_path / "old", "bert")
    config = json.loads((old / "config.json").read_text())
    for key in ("tokenizer", "max_length", "text_pair"):
        config.pop(key)
    (old / "config.json").write_text(json.dumps(config))
    cases.append(((old, tmp_path / "t.txt"), "no tokeniser settings"))
    novocab = make_folder(B, tmp_path / "novocab", "lstm")
    (novocab / "vocab.txt").unlink()
    cases.append(((novocab, tmp_path / "t.txt"), "vocab.txt: not found"))
    for argv, fragment in cases:
        code, out, err = run(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 1 and out == "" and len(lines) == 1, err
        assert lines[0].startswith("error: ") and fragment in lines[0]


@pytest.mark.parametrize("kind", ["bert", "lstm"])
def test_a_vocab_txt_of_random_bytes_is_one_error_line_naming_it(kind, B, tmp_path, capsys):
    folder = make_folder(B, tmp_path / "model", kind)
    noise = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    (folder / "vocab.txt").write_bytes(b"[PAD]\n" + noise.replace(b"\n", b" "))    # line 2 is not UTF-8
    (tmp_path / "t.txt").write_text("w1\n", encoding="utf-8")
    code, out, err = run(capsys, folder, tmp_path / "t.txt")
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1, err
    assert lines[0].startswith(f"error: {folder / 'vocab.txt'}:2: bytes that are not UTF-8"), lines[0]
