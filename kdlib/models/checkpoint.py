"""Checkpoints: ``model.safetensors`` (written from numpy arrays) + ``config.json``, in one folder.

The weights never pass through a library-specific format, so a checkpoint written under PyTorch
loads under OneFlow and back. ``config.json`` holds ``model_type`` (a key of :data:`MODEL_TYPES`),
the model's config fields and any extra metadata the caller adds (task, labels, vocab ...).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError, DataError
from ..io import atomic_dir, read_json
from .bert import BertConfig, build_bert
from .lstm import LstmConfig, build_bilstm
from .weights import load_state_numpy, read_safetensors, state_dict_numpy

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"     # a model folder's tokeniser vocabulary (the records' copy)
# model_type -> (config dataclass, build(B, cfg))
MODEL_TYPES = {"bert": (BertConfig, build_bert), "bilstm": (LstmConfig, build_bilstm)}


def model_config_dict(model) -> dict:
    """``{"model_type": ..., **model.config fields}``: enough to rebuild ``model``."""
    return {"model_type": model.model_type, **model.config.to_dict()}


def save_checkpoint(model, folder: str | Path, config: dict | None = None, B=None) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` atomically (whole folder).

    ``config.json`` is the model's own architecture (:func:`model_config_dict`) merged with the
    extra metadata in ``config``; an extra key that contradicts the architecture is a ValueError.
    ``B`` is accepted for symmetry with :func:`load_checkpoint` and not needed.
    """
    from safetensors.numpy import save_file

    full = model_config_dict(model)
    for key, value in (config or {}).items():
        if key in full and full[key] != value:
            raise ValueError(f"config[{key!r}] = {value!r} contradicts the model's {full[key]!r}")
        full[key] = value
    arrays = state_dict_numpy(model)
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        save_file(arrays, str(tmp / WEIGHTS_FILE), metadata={"format": "kdflow"})
        (tmp / CONFIG_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def read_checkpoint_config(folder: str | Path) -> dict:
    path = Path(folder) / CONFIG_FILE
    config = read_json(path)
    if not isinstance(config, dict):
        raise DataError(f"{path}: expected a JSON object")
    return config


def read_weights(folder: str | Path) -> dict:
    """The arrays of a model folder's ``model.safetensors``. A missing or unreadable file is one
    DataError that says how to recover: a stage made the folder, so deleting it makes the workflow
    make it again (it would otherwise fail on every rerun, the folder being up to date)."""
    try:
        return read_safetensors(Path(folder) / WEIGHTS_FILE)
    except DataError as exc:
        raise DataError(f"{exc}; delete {folder}/ and rerun to retrain it") from None


def load_checkpoint(B, folder: str | Path):
    """Rebuild the model saved in ``folder`` on backend ``B``; returns ``(model, config_dict)``.

    The model is on ``B.device`` in eval mode. A teacher folder of an encoder family that kdlib does
    not build (config.json ``kdflow_runtime: transformers``) loads through
    :mod:`kdlib.models.hf_teacher`. Missing files, unreadable or truncated weights (with the way
    to recover, :func:`read_weights`), an unknown ``model_type``, bad config fields and key or
    shape mismatches are one-line DataErrors naming the file.
    """
    folder = Path(folder)
    config = read_checkpoint_config(folder)
    model_type = config.get("model_type")
    if config.get("kdflow_runtime") == "transformers":    # a fine-tuned teacher of another family
        from .hf_teacher import load
        return load(B, folder, config), config
    if model_type not in MODEL_TYPES:
        raise DataError(f"{folder / CONFIG_FILE}: model_type {model_type!r} is not one of "
                        f"{', '.join(sorted(MODEL_TYPES))}")
    cfg_cls, build = MODEL_TYPES[model_type]
    try:
        cfg = cfg_cls.from_dict(config)
    except (ConfigError, TypeError) as exc:
        raise DataError(f"{folder / CONFIG_FILE}: {exc}") from None
    arrays = read_weights(folder)
    model = build(B, cfg)
    load_state_numpy(model, arrays, strict=True, source=folder / WEIGHTS_FILE)
    model.eval()
    return model, config
