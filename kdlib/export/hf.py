"""HuggingFace export of a kdlib BERT folder: what ``AutoModelForSequenceClassification`` and
``AutoTokenizer.from_pretrained(out_dir)`` load directly, offline, with kdlib's logits and ids.

Weights keep their HuggingFace names; BertForSequenceClassification nests the encoder under
``bert.``, so every key but the classifier's gains that prefix (the inverse of
:func:`kdlib.models.pretrained.hf_key`)::

    embeddings.word_embeddings.weight          -> bert.embeddings.word_embeddings.weight
    encoder.layer.3.attention.self.query.bias  -> bert.encoder.layer.3.attention.self.query.bias
    pooler.dense.weight                        -> bert.pooler.dense.weight
    classifier.weight                          -> classifier.weight

A model with RoBERTa's positions (a RoBERTa or XLM-R teacher, and students that copied its
embeddings; ``position_offset``) exports as ``RobertaForSequenceClassification``: ``roberta.<key>``,
the pooler and classifier as its ``classifier.dense`` and ``classifier.out_proj``.

Every key and shape is checked against the config first (:func:`bert_shapes`). The tokenizer is
kdlib's own (:func:`kdlib.data.convert.wordpiece`, truncating to the records' ``max_length``),
saved as ``tokenizer.json`` beside ``vocab.txt``; a student of a teacher with a tokenizer.json
(``teacher.finetuned``) carries that one, as ``PreTrainedTokenizerFast``. Only numpy, safetensors and tokenizers are
needed: no torch, no transformers.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import ConfigError, DataError
from ..io import atomic_dir
from ..models.bert import INIT_STD, BertConfig
from ..models.checkpoint import CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE, read_checkpoint_config, read_weights

SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                  "cls_token": "[CLS]", "mask_token": "[MASK]"}
# kdlib metadata kept in the HF config, under one "kdflow" key that no HF code reads
METADATA = ("task", "role", "algorithm", "student", "max_length", "tokenizer", "text_pair")


def hf_name(key: str, roberta: bool = False) -> str:
    """A kdlib BERT key -> its BertForSequenceClassification key (``roberta``: its
    RobertaForSequenceClassification key, the pooler and classifier as RoBERTa's head)."""
    if roberta:
        for ours, theirs in (("pooler.dense.", "classifier.dense."), ("classifier.", "classifier.out_proj.")):
            if key.startswith(ours):
                return theirs + key[len(ours):]
        return "roberta." + key
    return key if key.startswith("classifier.") else "bert." + key


def _dense(name: str, d_out: int, d_in: int) -> dict:
    return {f"{name}.weight": (d_out, d_in), f"{name}.bias": (d_out,)}


def _norm(name: str, H: int) -> dict:
    return {f"{name}.weight": (H,), f"{name}.bias": (H,)}


def bert_shapes(cfg: BertConfig) -> dict[str, tuple[int, ...]]:
    """Every weight of a kdlib BERT for ``cfg`` (kdlib names) -> its shape."""
    H, I = cfg.hidden_size, cfg.intermediate_size
    shapes = {"embeddings.word_embeddings.weight": (cfg.vocab_size, H),            # (V, H)
              "embeddings.position_embeddings.weight": (cfg.max_position_embeddings, H),
              "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, H),
              **_norm("embeddings.LayerNorm", H)}
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            shapes.update(_dense(f"{p}attention.self.{name}", H, H))            # (H, H)
        shapes.update({**_dense(f"{p}attention.output.dense", H, H),
                       **_norm(f"{p}attention.output.LayerNorm", H),
                       **_dense(f"{p}intermediate.dense", I, H),                # (I, H)
                       **_dense(f"{p}output.dense", H, I),                      # (H, I)
                       **_norm(f"{p}output.LayerNorm", H)})
    return {**shapes, **_dense("pooler.dense", H, H), **_dense("classifier", cfg.num_labels, H)}  # (C, H)


def read_bert_folder(model_dir: Path) -> tuple[BertConfig, dict]:
    """``(cfg, config_dict)`` of a kdlib BERT folder; anything else is a DataError naming config.json."""
    path = model_dir / CONFIG_FILE
    config = read_checkpoint_config(model_dir)
    if config.get("model_type") != "bert":
        raise DataError(f"{path}: model_type {config.get('model_type')!r}: only a kdlib BERT "
                        "exports to HuggingFace")
    if not isinstance(config.get("labels"), list):
        raise DataError(f"{path}: not a kdlib model config (no 'labels' list)")
    try:
        cfg = BertConfig.from_dict(config)
    except (ConfigError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: {exc}") from None
    if config.get("tokenizer", "wordpiece") not in ("wordpiece", "json"):
        raise DataError(f"{path}: tokenizer {config['tokenizer']!r}: a BERT export needs 'wordpiece' "
                        "or 'json' (a tokenizer.json)")
    return cfg, config


def record_length(cfg: BertConfig, config: dict, path: Path) -> int:
    """The WordPiece length the records were made with (old folders: max_position_embeddings)."""
    n = config.get("max_length", cfg.max_position_embeddings)
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= cfg.max_position_embeddings:
        raise DataError(f"{path}: max_length {n!r} is not an integer in "
                        f"2..{cfg.max_position_embeddings} (max_position_embeddings)")
    return n


def label_maps(cfg: BertConfig, labels: list, path: Path) -> dict:
    """HF's id2label / label2id / problem_type from kdlib's label names ([] for a regression)."""
    if cfg.num_labels == 1 and not labels:
        return {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}, "problem_type": "regression"}
    names = [str(x) for x in labels]
    if len(names) != cfg.num_labels or len(set(names)) != len(names):
        raise DataError(f"{path}: labels {labels} are not {cfg.num_labels} distinct names")
    return {"id2label": {str(i): n for i, n in enumerate(names)},
            "label2id": {n: i for i, n in enumerate(names)},
            "problem_type": "regression" if cfg.num_labels == 1 else "single_label_classification"}


def hf_config(cfg: BertConfig, config: dict, path: Path) -> dict:
    """The HF ``config.json`` of a BertForSequenceClassification for ``cfg`` (a RoBERTa's, from a
    RoBERTa or XLM-R teacher, where positions start after the padding id)."""
    fields = {k: v for k, v in cfg.to_dict().items()
              if k not in ("num_labels", "position_offset")}                 # id2label counts them
    family = "bert"
    if cfg.position_offset:
        family, fields["pad_token_id"] = "roberta", cfg.position_offset - 1
    return {"architectures": [f"{family.capitalize()}ForSequenceClassification"], "model_type": family, **fields,
            "position_embedding_type": "absolute", "initializer_range": INIT_STD,
            "classifier_dropout": None, "dtype": "float32",
            **label_maps(cfg, config["labels"], path),
            "kdflow": {k: config[k] for k in METADATA if k in config}}


def hf_weights(cfg: BertConfig, model_dir: Path) -> dict:
    """The model folder's weights under HF names, after checking every key and shape against ``cfg``
    (an unreadable file says how to recover, :func:`kdlib.models.checkpoint.read_weights`)."""
    arrays, path = read_weights(model_dir), model_dir / WEIGHTS_FILE
    expected = bert_shapes(cfg)
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    if missing or unexpected:
        raise DataError(f"{path}: keys do not match the config's BERT: missing {missing[:4]}, "
                        f"unexpected {unexpected[:4]}")
    for key, shape in expected.items():
        if tuple(arrays[key].shape) != shape:
            raise DataError(f"{path}: {key} has shape {tuple(arrays[key].shape)}, the config gives {shape}")
    return {hf_name(k, roberta=cfg.position_offset > 0): arrays[k] for k in sorted(arrays)}


def read_tokenizer(vocab: Path, max_length: int, vocab_size: int):
    """kdlib's WordPiece for ``vocab``, its special tokens present and its ids below ``vocab_size``."""
    from ..data.convert import wordpiece
    try:
        tok = wordpiece(vocab, max_length)
    except DataError:
        raise
    except Exception as exc:    # tokenizers reports a bad vocabulary as a bare Exception
        raise DataError(f"{vocab}: not a usable WordPiece vocabulary ({exc})") from None
    missing = [t for t in SPECIAL_TOKENS.values() if tok.token_to_id(t) is None]
    if missing:
        raise DataError(f"{vocab}: lacks the special tokens {', '.join(missing)}")
    if tok.get_vocab_size() > vocab_size:
        raise DataError(f"{vocab}: {tok.get_vocab_size()} tokens, more than the model's "
                        f"vocab_size {vocab_size}")
    return tok


def read_json_tokenizer(path: Path, max_length: int, vocab_size: int):
    """A BERT student's tokenizer.json (its teacher's) and its special tokens for HuggingFace's
    fast tokenizer: the first of each kind's usual spellings that the vocabulary holds."""
    from ..data.convert import subword
    tok = subword(path, max_length)
    if tok.get_vocab_size() > vocab_size:
        raise DataError(f"{path}: {tok.get_vocab_size()} tokens, more than the model's vocab_size {vocab_size}")
    spellings = {"unk_token": ("[UNK]", "<unk>"), "sep_token": ("[SEP]", "</s>"),
                 "pad_token": ("[PAD]", "<pad>"), "cls_token": ("[CLS]", "<s>"), "mask_token": ("[MASK]", "<mask>")}
    special = {kind: next(t for t in names if tok.token_to_id(t) is not None)
               for kind, names in spellings.items() if any(tok.token_to_id(t) is not None for t in names)}
    return tok, special


def tokenizer_config(max_length: int) -> dict:
    return {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": max_length,
            "tokenize_chinese_chars": True, "strip_accents": None, "padding_side": "right",
            "truncation_side": "right", **SPECIAL_TOKENS}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def export_hf(model_dir: str | Path, out_dir: str | Path, *, task: str | None = None) -> Path:
    """Write ``out_dir`` (atomically, whole) as a HuggingFace BERT classifier folder: config.json,
    model.safetensors, vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json.

    ``task``, when given, must be the folder's task. Every input problem is one DataError naming
    its file, raised before anything is written.
    """
    from safetensors.numpy import save_file

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise DataError(f"{out_dir}: the export would replace the model folder; choose another --out")
    cfg, config = read_bert_folder(model_dir)
    config_path = model_dir / CONFIG_FILE
    if task is not None and config.get("task") != task:
        raise DataError(f"{config_path}: a model of task {config.get('task')!r}, not {task!r}")
    max_length = record_length(cfg, config, config_path)
    hf = hf_config(cfg, config, config_path)
    arrays = hf_weights(cfg, model_dir)
    if config.get("tokenizer") == "json":          # the teacher's tokenizer.json, as it is
        tok, special = read_json_tokenizer(model_dir / "tokenizer.json", max_length, cfg.vocab_size)
        settings = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
                    "padding_side": "right", "truncation_side": "right", **special}
    else:
        tok, special = read_tokenizer(model_dir / VOCAB_FILE, max_length, cfg.vocab_size), SPECIAL_TOKENS
        settings = tokenizer_config(max_length)
    with atomic_dir(out_dir) as tmp:
        _write_json(tmp / CONFIG_FILE, hf)
        save_file(arrays, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})  # HF's marker
        if config.get("tokenizer") != "json":
            shutil.copyfile(model_dir / VOCAB_FILE, tmp / VOCAB_FILE)
        tok.save(str(tmp / "tokenizer.json"))
        _write_json(tmp / "tokenizer_config.json", settings)
        _write_json(tmp / "special_tokens_map.json", special)
    return out_dir
