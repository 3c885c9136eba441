"""HuggingFace export (kdlib.export.hf, workflow_scripts/export_hf.py).

The model folders are tiny random BERTs written from numpy alone, so the export and its errors are
tested in either runtime. Where transformers is installed (.venv), the exported folder loads with
``AutoModelForSequenceClassification`` and ``AutoTokenizer`` offline, and gives kdlib's ids and,
within 1e-5, kdlib's logits.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import error_lines
from safetensors import safe_open
from safetensors.numpy import save_file

from kdlib.data.convert import wordpiece
from kdlib.errors import DataError
from kdlib.export.hf import bert_shapes, export_hf, hf_name
from kdlib.models import checkpoint
from kdlib.models.bert import BertConfig
from kdlib.models.pretrained import hf_key
from kdlib.models.weights import read_safetensors
from workflow_scripts import export_hf as export_hf_stage

os.environ.setdefault("HF_HUB_OFFLINE", "1")       # local folders only, never the Hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "##s", "good", "bad", "movie", "film", "is",
         "was", "very", "not", "really", "great", "boring", "and", "but", "it", "i", "liked", "hated",
         "un", "##believ", "##able", "cafe", ".", ",", "!"]
VOCAB = SPECIALS + WORDS
MAX_LENGTH = 16
TINY = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=32)
TEXTS = ["The cat sat.", "a really great film, and i liked it!", "Unbelievable CAFÉ", "xyzzy",
         "the dog was very bad and the movie was boring but the cat sat on the mat and it was great"]
PAIRS = [("the cat sat on the mat", "the dog was very bad and boring but the film was great and i liked it"),
         ("good movie", "bad film"), ("it was not boring", "i hated it")]
LABELS = {2: ["negative", "positive"], 3: ["0", "1", "2"], 1: []}


def write_folder(folder, num_labels=2, seed=0, drop=(), **meta):
    """A kdlib BERT model folder with random weights (numpy alone), as the training stages write it."""
    cfg = BertConfig(**TINY, num_labels=num_labels)
    rng = np.random.default_rng(seed)
    arrays = {k: ((1.0 if k.endswith("LayerNorm.weight") else 0.0) + 0.2 * rng.standard_normal(shape))
              .astype(np.float32) for k, shape in bert_shapes(cfg).items()}
    config = {"model_type": "bert", **cfg.to_dict(), "task": "tweets", "labels": LABELS[num_labels],
              "role": "student", "algorithm": "kd", "max_length": MAX_LENGTH, "tokenizer": "wordpiece",
              "text_pair": False, **meta}
    folder.mkdir(parents=True)
    save_file(arrays, str(folder / checkpoint.WEIGHTS_FILE), metadata={"format": "kdflow"})
    (folder / checkpoint.CONFIG_FILE).write_text(
        json.dumps({k: v for k, v in config.items() if k not in drop}), encoding="utf-8")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return folder


def edit_config(folder, **changes):
    path = folder / checkpoint.CONFIG_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}), encoding="utf-8")


def kdlib_batch(vocab, texts, length=None):
    """kdlib's encodings of ``texts``, zero-padded to the longest (or to ``length``) like the records."""
    encodings = wordpiece(vocab, MAX_LENGTH).encode_batch(texts)
    T = length or max(len(e.ids) for e in encodings)
    keys = ("input_ids", "token_type_ids", "attention_mask")
    batch = {k: np.zeros((len(texts), T), np.int64) for k in keys}
    for i, e in enumerate(encodings):
        n = len(e.ids)
        batch["input_ids"][i, :n], batch["token_type_ids"][i, :n] = e.ids, e.type_ids
        batch["attention_mask"][i, :n] = 1
    return batch


@pytest.fixture
def hf():
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


# ---- the export, in either runtime -----------------------------------------------------------------

def test_shapes_are_the_models(B):
    cfg = BertConfig(**TINY, num_labels=3)
    from kdlib.models.bert import build_bert
    state = build_bert(B, cfg).state_dict()
    assert bert_shapes(cfg) == {k: tuple(v.shape) for k, v in state.items()}


def test_export_writes_a_hf_folder(tmp_path):
    model = write_folder(tmp_path / "kd", 2)
    out = export_hf(model, tmp_path / "export" / "hf", task="tweets")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
        "tokenizer_config.json", "vocab.txt"]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and config["model_type"] == "bert"
    assert {k: config[k] for k in TINY} == TINY and config["hidden_act"] == "gelu"
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    assert config["problem_type"] == "single_label_classification"
    assert config["position_embedding_type"] == "absolute" and config["initializer_range"] == 0.02
    assert config["kdflow"] == {"task": "tweets", "role": "student", "algorithm": "kd",
                                "max_length": MAX_LENGTH, "tokenizer": "wordpiece", "text_pair": False}
    ours, theirs = read_safetensors(model / "model.safetensors"), read_safetensors(out / "model.safetensors")
    assert sorted(theirs) == sorted(hf_name(k) for k in ours)
    assert all(np.array_equal(theirs[hf_name(k)], v) for k, v in ours.items())
    assert all(hf_key(hf_name(k)) == k for k in ours)                  # the inverse of the import's map
    assert [k for k in theirs if not k.startswith("bert.")] == ["classifier.bias", "classifier.weight"]
    with safe_open(str(out / "model.safetensors"), "np") as fh:
        assert fh.metadata() == {"format": "pt"}
    assert (out / "vocab.txt").read_bytes() == (model / "vocab.txt").read_bytes()
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_config["model_max_length"] == MAX_LENGTH and tok_config["do_lower_case"] is True
    assert tok_config["tokenizer_class"] == "BertTokenizer"
    assert json.loads((out / "special_tokens_map.json").read_text())["cls_token"] == "[CLS]"
    export_hf(model, out)                                               # a rerun replaces it whole
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_tokenizer_json_is_kdlibs(tmp_path):
    from tokenizers import Tokenizer
    out = export_hf(write_folder(tmp_path / "kd"), tmp_path / "hf")
    saved, ours = Tokenizer.from_file(str(out / "tokenizer.json")), wordpiece(out / "vocab.txt", MAX_LENGTH)
    for item in TEXTS + PAIRS:
        args = item if isinstance(item, tuple) else (item,)
        a, b = saved.encode(*args), ours.encode(*args)
        assert (a.ids, a.type_ids, a.attention_mask) == (b.ids, b.type_ids, b.attention_mask)
    assert len(ours.encode(TEXTS[-1]).ids) == MAX_LENGTH                # the long text is truncated


def test_regression_and_old_folders(tmp_path):
    out = export_hf(write_folder(tmp_path / "reg", 1, drop=("max_length", "tokenizer", "text_pair")),
                    tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "LABEL_0"}
    assert "max_length" not in config["kdflow"]
    # an old folder without max_length: the tokenizer takes the model's positions
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 32


@pytest.mark.parametrize("case, message", [
    ("bilstm", "config.json: model_type 'bilstm'"),
    ("no vocab", "vocab.txt: vocabulary file not found"),
    ("no weights", "model.safetensors: file not found"),
    ("no config", "config.json: file not found"),
    ("bad config", "config.json: not a readable JSON file"),
    ("hf config", "config.json: not a kdlib model config"),
    ("bad weights", "model.safetensors: not a readable safetensors file"),
    ("wrong shape", "model.safetensors: classifier.weight has shape (2, 32), the config gives (3, 32)"),
    ("missing key", "model.safetensors: keys do not match"),
    ("labels", "config.json: labels ['a'] are not 2 distinct names"),
    ("max_length", "config.json: max_length 64 is not an integer in 2..32"),
    ("tokenizer", "config.json: tokenizer 'words'"),
    ("specials", "vocab.txt: lacks the special tokens [MASK]"),
    ("big vocab", "vocab.txt: 40 tokens, more than the model's vocab_size 37"),
    ("task", "config.json: a model of task 'tweets', not 'sst2'"),
    ("same folder", "the export would replace the model folder"),
])
def test_bad_folders_are_one_line_errors(tmp_path, case, message):
    model = write_folder(tmp_path / "kd")
    out, task = tmp_path / "hf", None
    if case == "bilstm":
        edit_config(model, model_type="bilstm")
    elif case == "no vocab":
        (model / "vocab.txt").unlink()
    elif case == "no weights":
        (model / "model.safetensors").unlink()
    elif case == "no config":
        (model / "config.json").unlink()
    elif case == "bad config":
        (model / "config.json").write_text("{not json")
    elif case == "hf config":
        config = json.loads((model / "config.json").read_text())
        del config["labels"]
        (model / "config.json").write_text(json.dumps({**config, "architectures": ["BertModel"]}))
    elif case == "bad weights":
        (model / "model.safetensors").write_bytes(b"\x00" * 20)
    elif case == "wrong shape":
        edit_config(model, num_labels=3, labels=["a", "b", "c"])
    elif case == "missing key":
        arrays = read_safetensors(model / "model.safetensors")
        del arrays["pooler.dense.bias"]
        save_file(arrays, str(model / "model.safetensors"))
    elif case == "labels":
        edit_config(model, labels=["a"])
    elif case == "max_length":
        edit_config(model, max_length=64)
    elif case == "tokenizer":
        edit_config(model, tokenizer="words")
    elif case == "specials":
        (model / "vocab.txt").write_text("\n".join(VOCAB[:4] + WORDS) + "\n")
    elif case == "big vocab":
        (model / "vocab.txt").write_text("\n".join(VOCAB + ["x", "y", "z"]) + "\n")
    elif case == "task":
        task = "sst2"
    elif case == "same folder":
        out = model
    with pytest.raises(DataError) as info:
        export_hf(model, out, task=task)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert case == "same folder" or not out.exists()                   # nothing written


def test_stage_summary_and_errors(tmp_path, capsys):
    model = write_folder(tmp_path / "kd", 3)
    out = tmp_path / "export" / "kd" / "hf"
    assert export_hf_stage.main(["--task", "tweets", "--model", str(model), "--out", str(out)]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (f"exported {model} (tweets, BERT 2 layers, hidden 32, 3 outputs) to HuggingFace "
                    f"folder {out}")
    (model / "vocab.txt").unlink()
    assert export_hf_stage.main(["--task", "tweets", "--model", str(model), "--out", str(out)]) == 1
    assert error_lines(capsys) == [f"error: {model / 'vocab.txt'}: vocabulary file not found"]
    assert (out / "vocab.txt").is_file()                                # the old export stays whole


# ---- loading with transformers (.venv) -------------------------------------------------------------

@pytest.mark.parametrize("num_labels, pair", [(2, False), (3, False), (2, True), (1, False)])
def test_hf_logits_equal_kdlibs(tmp_path, hf, B, num_labels, pair):
    import torch
    model = write_folder(tmp_path / "kd", num_labels, seed=num_labels, text_pair=pair)
    out = export_hf(model, tmp_path / "hf")
    theirs, info = hf.AutoModelForSequenceClassification.from_pretrained(
        str(out), output_loading_info=True, local_files_only=True)
    assert not any(info.values()), info                                 # no missing or unused key
    assert type(theirs).__name__ == "BertForSequenceClassification" and not theirs.training
    assert theirs.config.problem_type == ("regression" if num_labels == 1 else "single_label_classification")
    ours, _ = checkpoint.load_checkpoint(B, model)
    texts = PAIRS if pair else TEXTS
    tok = hf.AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    args = [list(side) for side in zip(*texts)] if pair else [texts]    # texts, or firsts and seconds
    enc = tok(*args, padding=True, truncation=True, return_tensors="pt")
    batch = kdlib_batch(model / "vocab.txt", texts)
    assert {k: enc[k].numpy().tolist() for k in batch} == {k: v.tolist() for k, v in batch.items()}
    assert len(set(batch["attention_mask"].sum(1).tolist())) > 1       # several lengths, padded
    if pair:
        assert batch["token_type_ids"].any()
    with torch.no_grad():
        a = theirs(**enc).logits.numpy()
        b = ours(**{k: torch.as_tensor(v) for k, v in batch.items()})["logits"].numpy()
    assert a.shape == b.shape == (len(texts), num_labels)
    print(f"max |logit difference| = {np.abs(a - b).max():.2e}")
    assert np.abs(a - b).max() < 1e-5
    assert np.abs(b).max() > 0.1                                        # real logits, not zeros


def test_hf_tokenizer_gives_kdlibs_ids(tmp_path, hf):
    out = export_hf(write_folder(tmp_path / "kd"), tmp_path / "hf")
    tok = hf.AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert tok.model_max_length == MAX_LENGTH and tok.do_lower_case
    ours = wordpiece(out / "vocab.txt", MAX_LENGTH)
    for item in TEXTS + PAIRS:
        args = item if isinstance(item, tuple) else (item,)
        e, h = ours.encode(*args), tok(*args, truncation=True, max_length=MAX_LENGTH)
        assert h["input_ids"] == e.ids and h["token_type_ids"] == e.type_ids
        assert h["attention_mask"] == e.attention_mask
    assert len(tok(TEXTS[-1], truncation=True)["input_ids"]) == MAX_LENGTH
    # padded to model_max_length: the BERT records' layout
    padded = tok(TEXTS, padding="max_length", truncation=True, return_tensors="np")
    batch = kdlib_batch(out / "vocab.txt", TEXTS, length=MAX_LENGTH)
    assert all(np.array_equal(padded[k], v) for k, v in batch.items())


def test_hf_labels_round_trip(tmp_path, hf):
    out = export_hf(write_folder(tmp_path / "kd", 2), tmp_path / "hf")
    config = hf.AutoConfig.from_pretrained(str(out), local_files_only=True)
    assert config.id2label == {0: "negative", 1: "positive"} and config.num_labels == 2
    assert config.label2id == {"negative": 0, "positive": 1}
    config.save_pretrained(str(tmp_path / "again"))
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["id2label"] == {"0": "negative", "1": "positive"}
    assert again["kdflow"]["task"] == "tweets"
