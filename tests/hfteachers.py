"""Tiny fine-tuned classifiers of several encoder families, built in the test: a fixture sentiment
corpus, a tokenizer trained on it by `tokenizers` (byte-level BPE, WordPiece or Unigram), a
random tiny model from transformers' config classes, fine-tuned here for a few hundred steps, and
saved as a HuggingFace folder (config.json with id2label, model.safetensors, tokenizer.json).
Nothing is downloaded. Needs torch and transformers (the workflow runtime)."""
from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np

GOOD = ("good", "great", "lovely", "fine", "happy")
BAD = ("bad", "awful", "poor", "sad", "angry")
FILLER = ("the", "a", "film", "day", "was", "really", "quite", "my", "this", "food", "and", "it",
          "service", "very", "so", "today", "trip", "book", "is", "our")
LABELS = ("negative", "positive")


def sentences(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (text, label) rows: filler words around one word of the label's polarity."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randrange(len(words) + 1), rng.choice(GOOD if label else BAD))
        rows.append((" ".join(words), LABELS[label]))
    return rows


def write_task(folder: Path, n_train: int = 160, n_validation: int = 60, n_dev: int = 60) -> dict:
    """train/validation/dev CSVs (text, label) in ``folder``; returns a custom_tasks definition."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 1), ("validation", n_validation, 2), ("dev", n_dev, 3)):
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows(sentences(n, seed))
    return {"train": str(folder / "train.csv"), "validation": str(folder / "validation.csv"),
            "dev": str(folder / "dev.csv"), "text_a": "text", "label": "label"}


def train_tokenizer(kind: str, texts: list[str]):
    """A `tokenizers` Tokenizer trained on ``texts``: ``bpe`` (byte-level, RoBERTa's <s> </s>),
    ``wordpiece`` (BERT's [CLS] [SEP], lower-cased) or ``unigram`` (DeBERTa-v2's [CLS] [SEP])."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    if kind == "bpe":
        special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=special,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                          ("<s>", tok.token_to_id("<s>")))
        return tok
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=200, special_tokens=special))
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=150, special_tokens=special,
                                                               unk_token="[UNK]"))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok


# family -> (tokenizer kind, transformers config class name, its size arguments)
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
         "max_position_embeddings": 64}
FAMILIES = {
    "roberta": ("bpe", "RobertaConfig", {**SMALL, "max_position_embeddings": 66, "type_vocab_size": 1,
                                         "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}),
    "deberta-v2": ("unigram", "DebertaV2Config", {**SMALL, "relative_attention": True,
                                                   "position_buckets": 16, "pos_att_type": ["p2c", "c2p"],
                                                   "position_biased_input": False, "type_vocab_size": 0}),
    "electra": ("wordpiece", "ElectraConfig", {**SMALL, "embedding_size": 16}),
    "distilbert": ("wordpiece", "DistilBertConfig", {"dim": 32, "n_layers": 2, "n_heads": 4,
                                                     "hidden_dim": 64, "max_position_embeddings": 64}),
    "bert": ("wordpiece", "BertConfig", SMALL),
}


def build_teacher(family: str, folder: Path, task_dir: Path, *, id2label: dict | None = None,
                  steps: int = 300, seed: int = 0) -> Path:
    """A tiny ``family`` classifier fine-tuned on the task in ``task_dir`` (:func:`write_task`)
    and saved in ``folder``; ``steps=0`` leaves it un-fine-tuned. ``id2label`` (default
    {0: negative, 1: positive}) names its output columns."""
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification

    kind, config_class, sizes = FAMILIES[family]
    rows = list(csv.DictReader(open(task_dir / "train.csv", encoding="utf-8")))
    tok = train_tokenizer(kind, [r["text"] for r in rows])
    id2label = id2label or {0: "negative", 1: "positive"}
    column = {name.lower(): i for i, name in id2label.items()}
    config = getattr(transformers, config_class)(vocab_size=tok.get_vocab_size(), num_labels=len(id2label),
                                                 id2label=id2label, label2id={v: k for k, v in id2label.items()},
                                                 **sizes)
    if family == "deberta-v2":
        config.pad_token_id = tok.token_to_id("[PAD]")
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    pad = tok.token_to_id("<pad>" if kind == "bpe" else "[PAD]")
    tok.enable_padding(pad_id=pad, pad_token="<pad>" if kind == "bpe" else "[PAD]")
    encoded = tok.encode_batch([r["text"] for r in rows])
    ids = torch.tensor([e.ids for e in encoded])
    mask = torch.tensor([e.attention_mask for e in encoded])
    labels = torch.tensor([column[r["label"]] for r in rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        batch = torch.tensor(generator.choice(len(rows), 32, replace=False))
        loss = model(input_ids=ids[batch], attention_mask=mask[batch], labels=labels[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    tok.no_padding()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder
