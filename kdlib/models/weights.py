"""Model weights as numpy arrays: the state dict of any module, shape-checked loading by exact
key, and safetensors files read whole. Nothing here knows a model class, so models and checkpoints
both build on it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError


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
