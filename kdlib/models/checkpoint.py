"""Checkpoints: ``model.safetensors`` (written from numpy arrays) + ``config.json``, in one folder.

The weights never pass through a library-specific format, so a checkpoint written under PyTorch
loads under OneFlow and back. ``config.json`` holds ``model_type`` (a key of :data:`MODEL_TYPES`),
the model's config fields and any extra metadata the caller adds (task, labels, vocab ...).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import atomic_dir, read_json

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def _model_types() -> dict:
    """model_type -> (config dataclass, build(B, cfg))."""
    from .bert import BertConfig, build_bert
    from .lstm import LstmConfig, build_bilstm
    return {"bert": (BertConfig, build_bert), "bilstm": (LstmConfig, build_bilstm)}


# ---- numpy state dicts -------------------------------------------------------------------------

def state_dict_numpy(model) -> dict[str, np.ndarray]:
    """Every parameter and buffer of ``model`` as a contiguous numpy copy, keyed by its name."""
    return {k: np.ascontiguousarray(np.array(v.detach().cpu().numpy(), copy=True))
            for k, v in model.state_dict().items()}


def load_state_numpy(model, arrays: dict[str, np.ndarray], strict: bool = True,
                     source: str | Path = "weights") -> tuple[list[str], list[str]]:
    """Copy ``arrays`` into ``model`` by exact key; return ``(missing, unexpected)`` key lists.

    Every shared key's shape must match, else :class:`DataError` naming the key, both shapes and
    ``source``. With ``strict`` any missing or unexpected key is a :class:`DataError` too; without
    it, the model keeps its current values for missing keys.
    """
    state = model.state_dict()
    missing = [k for k in state if k not in arrays]
    unexpected = [k for k in arrays if k not in state]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:8])}" + (" ..." if len(unexpected) > 8 else ""))
        raise DataError(f"{source}: keys do not match the model: {'; '.join(parts)}")
    new_state = {}
    for key, target in state.items():
        if key not in arrays:
            new_state[key] = target
            continue
        value = np.asarray(arrays[key])
        if tuple(value.shape) != tuple(target.shape):
            raise DataError(f"{source}: {key} has shape {tuple(value.shape)}, "
                            f"the model expects {tuple(target.shape)}")
        new_state[key] = target.new_tensor(value)  # same dtype and device as the model's tensor
    model.load_state_dict(new_state, strict=True)
    return missing, unexpected


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as numpy arrays; any failure is one :class:`DataError`."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable safetensors file ({exc})") from None


# ---- folders -----------------------------------------------------------------------------------

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


def load_checkpoint(B, folder: str | Path):
    """Rebuild the model saved in ``folder`` on backend ``B``; returns ``(model, config_dict)``.

    The model is on ``B.device`` in eval mode. Missing files, unreadable or truncated weights, an
    unknown ``model_type``, bad config fields and key or shape mismatches are one-line DataErrors
    naming the file.
    """
    from ..errors import ConfigError

    folder = Path(folder)
    config = read_checkpoint_config(folder)
    kinds = _model_types()
    model_type = config.get("model_type")
    if model_type not in kinds:
        raise DataError(f"{folder / CONFIG_FILE}: model_type {model_type!r} is not one of "
                        f"{', '.join(sorted(kinds))}")
    cfg_cls, build = kinds[model_type]
    try:
        cfg = cfg_cls.from_dict(config)
    except (ConfigError, TypeError) as exc:
        raise DataError(f"{folder / CONFIG_FILE}: {exc}") from None
    arrays = read_safetensors(folder / WEIGHTS_FILE)
    model = build(B, cfg)
    load_state_numpy(model, arrays, strict=True, source=folder / WEIGHTS_FILE)
    model.eval()
    return model, config
