"""What makes a killed training job continue exactly where it stopped, and only that job.

Every ``save_seconds`` of training :func:`kdlib.distill.train.fit` writes the work folder's resume state
(atomically): the weights of every trained module, the optimizer moments, the step and the best
score so far (:func:`save_state`). The data order and every step's randomness are functions of the
seed and the step, so nothing else is needed to continue bit-for-bit. Tensors go into safetensors
files and the rest into JSON: nothing is pickled, so a state file planted in a work folder can
never run code (an old ``state.pkl`` is not even opened).

A state records the *identity* of the job that wrote it (:func:`job_identity`): its resolved
settings, the digests of its input files and of kdlib's code. :func:`load_state` uses a state only
when the identity is the same; otherwise it says why (:func:`identity_change`) and clears the
folder, so a rerun with another lr, other data or other code starts over.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..config import result_settings
from ..io import LOCK_FILE, atomic_dir, atomic_path, file_digest, own_folder, remove
from ..models.weights import load_state_numpy, read_safetensors, state_dict_numpy

STATE_DIR = "state"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A digest of kdlib's Python sources: a resume state written by other code is not used."""
    root = Path(__file__).resolve().parents[1]               # kdlib/
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def job_identity(B, cfg, train_path, settings: dict | None = None,
                 inputs: dict | None = None) -> dict:
    """Everything that determines a training run's result: the job's ``settings`` (JSON-able), the
    phase's training config, the backend, device and precision (all without the keys that only
    say how the job runs, :data:`kdlib.config.RUN_ONLY`), the digests of the training records and
    of every other input file (``inputs``: name -> path) and the code's version. As JSON reads it
    back (tuples are lists), so that it equals the identity a saved state holds."""
    files = {"training records": train_path, **(inputs or {})}
    return json.loads(json.dumps({
        "settings": result_settings({**(settings or {}), "train": asdict(cfg), "backend": B.name,
                                     "device": B.device_name, "precision": B.precision}),
        "inputs": {name: file_digest(path) for name, path in files.items()},
        "code": code_version()}))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def identity_change(old: dict | None, new: dict) -> str | None:
    """Why a resume state written by the job ``old`` does not belong to ``new`` (None if it does)."""
    if old is None:
        return "it records no job identity (written by an older kdflow)"
    if old == new:
        return None
    reasons = []
    before, now = _flat(old.get("settings", {})), _flat(new["settings"])
    changed = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    if changed:
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:4])
        reasons.append(f"settings changed ({shown}{' ...' if len(changed) > 4 else ''})")
    files = [k for k in new["inputs"] if old.get("inputs", {}).get(k) != new["inputs"][k]]
    files += [k for k in old.get("inputs", {}) if k not in new["inputs"]]
    if files:
        reasons.append(f"input changed: {', '.join(files)}")
    if old.get("code") != new["code"]:
        reasons.append("kdlib's code changed")
    return "; ".join(reasons) or "its job identity differs"


WEIGHTS = "weights.safetensors"      # every trained module's weights, "<module>.<key>"
MOMENTS = "optimizer.safetensors"    # the optimizer's tensors, named by their place in its state
META = "state.json"                  # the rest: the step, scores, identity; the optimizer's layout
LEGACY = "state.pkl"                 # what kdflow wrote before: a pickle, never read


def _pack(obj, tensors: dict, to_numpy, name: str = "") -> object:
    """``obj`` (an optimizer's state dict: nested dicts, lists, tuples, numbers, tensors) as JSON,
    its tensors moved into ``tensors`` (name -> numpy array, for safetensors): a tensor becomes
    ``{"tensor": name}``, a tuple ``{"tuple": [...]}`` and a dict ``{"dict": [[key, value], ...]}``,
    so that integer keys stay integers. :func:`_unpack` turns it back."""
    if hasattr(obj, "detach") or isinstance(obj, np.ndarray):
        tensors[name] = np.ascontiguousarray(to_numpy(obj) if hasattr(obj, "detach") else obj)
        return {"tensor": name}
    if isinstance(obj, dict):
        return {"dict": [[k, _pack(v, tensors, to_numpy, f"{name}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_pack(v, tensors, to_numpy, f"{name}/{i}") for i, v in enumerate(obj)]
        return {"tuple": items} if isinstance(obj, tuple) else items
    return obj                                   # a number, a string, a bool or None


def _unpack(obj, tensors: dict, to_tensor) -> object:
    if isinstance(obj, list):
        return [_unpack(v, tensors, to_tensor) for v in obj]
    if not isinstance(obj, dict):
        return obj
    (kind, value), = obj.items()
    if kind == "tensor":
        return to_tensor(tensors[value])
    if kind == "tuple":
        return tuple(_unpack(v, tensors, to_tensor) for v in value)
    return {k: _unpack(v, tensors, to_tensor) for k, v in value}


def save_state(B, work_dir: Path, modules: dict, optimizer, meta: dict) -> None:
    """Write the resume state into ``work_dir/state`` at once (:func:`kdlib.io.atomic_dir`): the
    modules' weights and the optimizer's tensors as safetensors, ``meta`` (JSON-able) and the
    optimizer's layout as JSON. Nothing is pickled."""
    from safetensors.numpy import save_file

    with atomic_dir(work_dir / STATE_DIR) as tmp:
        save_file({f"{name}.{k}": v for name, m in modules.items() for k, v in state_dict_numpy(m).items()},
                  str(tmp / WEIGHTS))
        moments: dict = {}
        layout = _pack(optimizer.state_dict(), moments, B.to_numpy)
        save_file(moments, str(tmp / MOMENTS))
        (tmp / META).write_text(json.dumps({"meta": meta, "optimizer": layout}), encoding="utf-8")


def load_state(B, work_dir: Path, modules: dict, optimizer, identity: dict, desc: str) -> dict:
    """Load the resume state of ``work_dir`` into ``modules`` and ``optimizer`` and return its meta,
    if the job ``identity`` wrote it; else (or with none, or a damaged one) clear the folder, saying
    why, and return ``{}``. An old pickled state (``state.pkl``) is never read."""
    folder = next((f for f in (work_dir / STATE_DIR, work_dir / f".{STATE_DIR}.old")  # .old: killed
                   if (f / META).is_file()), None)                               # mid-swap
    if folder is None:
        legacy = [f / LEGACY for f in (work_dir / STATE_DIR, work_dir / f".{STATE_DIR}.old")]
        if any(path.exists() for path in legacy):
            print(f"{desc}: ignoring the resume state in {work_dir / STATE_DIR}: an older kdflow pickled "
                  "it, and kdflow never unpickles; starting over", file=sys.stderr)
            clear(B, work_dir)
        return {}
    try:
        saved = json.loads((folder / META).read_text(encoding="utf-8"))
        weights, moments = read_safetensors(folder / WEIGHTS), read_safetensors(folder / MOMENTS)
        meta, written_by = saved["meta"], saved["meta"].get("identity")
    except Exception as exc:   # a damaged state is not worth a crash: start over, loudly
        print(f"warning: ignoring unreadable resume state in {folder} ({exc}); starting over",
              file=sys.stderr)
        clear(B, work_dir)
        return {}
    why = identity_change(written_by, identity)
    if why is not None:
        print(f"{desc}: the resume state in {folder} belongs to another job ({why}); "
              "starting over", file=sys.stderr)
        clear(B, work_dir)
        return {}
    for name, m in modules.items():
        prefix = f"{name}."
        load_state_numpy(m, {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)},
                         source=folder / WEIGHTS)
    optimizer.load_state_dict(_unpack(saved["optimizer"], moments, B.tensor))
    return meta


def clear(B, work_dir: Path) -> None:
    """Empty a work folder (resume state, best weights, log) before starting over; rank 0 only.
    Its lock file stays (:func:`kdlib.io.folder_lock`: the job still holds it); a link is
    unlinked, never followed (:func:`kdlib.io.remove`)."""
    if B.rank != 0:
        return
    if own_folder(work_dir):                     # it was a link: nothing of ours to empty
        return
    for item in work_dir.iterdir():
        if item.name != LOCK_FILE:
            remove(item)


def truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after the state being resumed (they will be written again)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    keep = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        csv.writer(fh).writerows(keep)
