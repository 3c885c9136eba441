"""Tiny, seeded fixtures for training tests (not collected by pytest: no ``test_`` prefix).

* :func:`write_pretrained` builds a HuggingFace-layout BERT folder (``config.json``,
  ``model.safetensors`` with ``bert.``-prefixed keys and one pre-training head key, ``vocab.txt``)
  from numpy alone, so any runtime can make it without a tensor library.
* :func:`write_records` writes BERT OFRecord ``train``, ``validation`` and ``dev`` files with a learnable
  bag-of-words rule: ``label = 1`` exactly when most words are "positive" (ids in
  :data:`POSITIVE`). The data is a pure function of the seed.
* :func:`write_word_records` turns BERT records into the BiLSTM's word records of the same examples.
* :func:`write_tickets` and :func:`write_pairs` write a task of the user's own files: a CSV of
  support tickets in five :data:`CLASSES`, JSON Lines of question pairs (:func:`ticket_text`'s
  words of the tiny vocabulary, each class from its own band).
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP, MASK = range(5)
# Unused slots put every word at id 128 or above: a varint of two bytes, as most real WordPiece ids
# are, so a record's encoded size grows with its length and length bucketing (which sorts by size)
# really reorders the tiny records.
FILLER = [f"[unused{i}]" for i in range(128 - len(SPECIALS))]
FIRST_WORD = len(SPECIALS) + len(FILLER)                    # 128
VOCAB = SPECIALS + FILLER + [f"w{i}" for i in range(95)]    # 223 tokens
POSITIVE = list(range(FIRST_WORD, FIRST_WORD + 47))         # 47 "positive" words
NEGATIVE = list(range(FIRST_WORD + 47, len(VOCAB)))         # 48 "negative" words
MAX_LENGTH = 16

TINY_BERT = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=MAX_LENGTH)


def hf_config(**overrides) -> dict:
    """A HuggingFace ``BertModel`` config.json for the tiny BERT."""
    cfg = {**TINY_BERT, **overrides}
    return {"architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
            "initializer_range": 0.02, "layer_norm_eps": 1e-12, "type_vocab_size": 2,
            "pad_token_id": 0, "position_embedding_type": "absolute", **cfg}


def bert_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """HF BertModel parameter names (without the ``bert.`` prefix) and shapes."""
    H, I = cfg["hidden_size"], cfg["intermediate_size"]
    shapes = {"embeddings.word_embeddings.weight": (cfg["vocab_size"], H),
              "embeddings.position_embeddings.weight": (cfg["max_position_embeddings"], H),
              "embeddings.token_type_embeddings.weight": (cfg.get("type_vocab_size", 2), H),
              "embeddings.LayerNorm.weight": (H,), "embeddings.LayerNorm.bias": (H,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (H, H), (H,)
        shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = (I, H), (I,)
        shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = (H, I), (H,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + ln + ".weight"], shapes[p + ln + ".bias"] = (H,), (H,)
    shapes["pooler.dense.weight"], shapes["pooler.dense.bias"] = (H, H), (H,)
    return shapes


def random_bert_arrays(cfg: dict, seed: int = 0, std: float = 0.02) -> dict[str, np.ndarray]:
    """float32 weights: N(0, std) matrices, zero biases, unit LayerNorm (BERT's initialisation)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, shape in bert_shapes(cfg).items():
        if len(shape) == 1:
            value = np.ones(shape) if "LayerNorm.weight" in key else np.zeros(shape)
        else:
            value = rng.standard_normal(shape) * std
        arrays[key] = np.ascontiguousarray(value, dtype=np.float32)
    arrays["embeddings.word_embeddings.weight"][PAD] = 0.0
    return arrays


def write_pretrained(folder: str | Path, seed: int = 0, **overrides) -> Path:
    """A HF-layout pretrained BERT folder: config.json, model.safetensors (``bert.`` keys, plus a
    ``cls.predictions.bias`` that loading must ignore) and vocab.txt."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = hf_config(**overrides)
    arrays = {f"bert.{k}": v for k, v in random_bert_arrays(cfg, seed).items()}
    arrays["cls.predictions.bias"] = np.zeros(cfg["vocab_size"], np.float32)
    save_file(arrays, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return folder


def make_examples(n: int, seed: int, max_length: int = MAX_LENGTH) -> dict[str, np.ndarray]:
    """``n`` BERT examples ``[CLS] w1 .. wk [SEP] [PAD]...`` with an odd number k of words.

    Words are "positive" (ids in :data:`POSITIVE`) or "negative"; the label is 1 exactly when most
    words are positive, a bag-of-words rule like sentiment. Each sentence draws its words from
    one side with probability 0.75, so the labels are about balanced and mixed sentences abound.
    Returns int32 arrays ``input_ids``, ``input_mask``, ``segment_ids`` (n, max_length) and
    ``label_ids``, ``is_real_example`` (n,).
    """
    rng = np.random.default_rng(seed)
    positive, negative = np.array(POSITIVE), np.array(NEGATIVE)
    ids = np.zeros((n, max_length), np.int32)
    mask = np.zeros((n, max_length), np.int32)
    labels = np.zeros(n, np.int32)
    for i in range(n):
        k = int(rng.choice(np.arange(1, max_length - 1, 2)))          # odd, fits with CLS and SEP
        lean = rng.random() < 0.5
        from_pos = rng.random(k) < (0.75 if lean else 0.25)
        seq = np.where(from_pos, rng.choice(positive, k), rng.choice(negative, k))
        labels[i] = int(from_pos.sum() * 2 > k)
        row = [CLS, *seq.tolist(), SEP]
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return {"input_ids": ids, "input_mask": mask, "segment_ids": np.zeros_like(ids),
            "label_ids": labels, "is_real_example": np.ones(n, np.int32)}


def write_split(path: str | Path, examples: dict[str, np.ndarray]) -> Path:
    from kdlib.data.ofrecord import RecordWriter

    with RecordWriter(path) as w:
        for i in range(len(examples["label_ids"])):
            w.write({k: v[i:i + 1] if v.ndim == 1 else v[i] for k, v in examples.items()})
    return Path(path)


def write_records(folder: str | Path, n_train: int = 96, n_dev: int = 48, seed: int = 0,
                  dev_split: str = "dev") -> Path:
    """``folder/train.of_record-0``, ``folder/validation.of_record-0`` and
    ``folder/<dev_split>.of_record-0`` (``n_dev`` rows each, other draws) of the majority rule,
    with the ``vocab.txt`` and ``meta.json`` (kind, max_length; no counts) of a record folder."""
    from kdlib.data.ofrecord import record_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_split(record_file(folder, "train"), make_examples(n_train, seed))
    write_split(record_file(folder, "validation"), make_examples(n_dev, seed + 2000))
    write_split(record_file(folder, dev_split), make_examples(n_dev, seed + 1000))
    write_record_meta(folder, "bert", VOCAB)
    return folder


def write_record_meta(folder: str | Path, kind: str, vocab: list[str]) -> None:
    """A record folder's ``vocab.txt`` and a ``meta.json`` of its kind and length (no counts)."""
    folder = Path(folder)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "meta.json").write_text(json.dumps({"kind": kind, "max_length": MAX_LENGTH}), encoding="utf-8")


def write_word_records(bert_dir, out_dir) -> None:
    """Word records of the same examples in the same order (word ``w{i}`` -> id ``i + 2``)."""
    from kdlib.data.ofrecord import RecordWriter, iter_records, record_file

    out_dir.mkdir(parents=True, exist_ok=True)
    write_record_meta(out_dir, "lstm", ["<pad>", "<unk>"] + VOCAB[FIRST_WORD:])
    shift = FIRST_WORD - 2
    for split in ("train", "validation", "dev"):
        with RecordWriter(record_file(out_dir, split)) as w:
            for rec in iter_records(record_file(bert_dir, split)):
                words = [int(i) - shift for i in rec["input_ids"] if i >= FIRST_WORD]
                ids = np.zeros(MAX_LENGTH, np.int32)
                mask = np.zeros(MAX_LENGTH, np.int32)
                ids[:len(words)], mask[:len(words)] = words, 1
                w.write({"input_ids": ids, "input_mask": mask, "label_ids": rec["label_ids"],
                         "is_real_example": rec["is_real_example"]})


# ---- a task of the user's own files ---------------------------------------------------------------

CLASSES = ["billing", "bug", "feature", "login", "refund"]      # five classes, not sorted by index


def ticket_text(label: int, rng: random.Random) -> str:
    """Words of the tiny vocabulary: mostly from the class's own band of 15, some noise."""
    own = [f"w{15 * label + rng.randrange(15)}" for _ in range(rng.randint(3, 6))]
    noise = [f"w{75 + rng.randrange(20)}" for _ in range(rng.randint(0, 2))]
    return " ".join(own + noise)


def write_tickets(path: Path, n: int, seed: int, with_label: bool = True) -> list[str]:
    """A CSV of support tickets in five classes (texts with commas and quotes, as CSV allows)."""
    rng = random.Random(seed)
    labels = [CLASSES[i % 5] for i in range(n)]
    rng.shuffle(labels)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "body", "category"] if with_label else ["id", "body"])
        for i, label in enumerate(labels):
            text = ticket_text(CLASSES.index(label), rng) + (', "urgent"' if i % 7 == 0 else "")
            writer.writerow([i, text, label] if with_label else [i, text])
    return labels


def write_pairs(path: Path, n: int, seed: int) -> None:
    """JSON Lines of question pairs: a duplicate shares its band of words."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            a = rng.randrange(5)
            b = a if i % 2 == 0 else (a + 1 + rng.randrange(4)) % 5
            fh.write(json.dumps({"q1": ticket_text(a, rng), "q2": ticket_text(b, rng),
                                 "duplicate": int(a == b)}) + "\n")
