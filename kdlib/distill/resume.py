"""What makes a killed training job continue exactly where it stopped, and only that job.

Every ``save_seconds`` of training :func:`kdlib.distill.train.fit` writes the work folder's resume state
(atomically): the weights of every trained module, the optimizer moments, the step and the best
score so far (:func:`save_state`). The data order and every step's randomness are functions of the
seed and the step, so nothing else is needed to continue bit-for-bit.

A state records the *identity* of the job that wrote it (:func:`job_identity`): its resolved
settings, the digests of its input files and of kdlib's code. :func:`load_state` uses a state only
when the identity is the same; otherwise it says why (:func:`identity_change`) and clears the
folder, so a rerun with another lr, other data or other code starts over.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import pickle
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..config import result_settings
from ..io import atomic_dir, atomic_path, file_digest
from ..models.weights import load_state_numpy, state_dict_numpy

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
    of every other input file (``inputs``: name -> path) and the code's version."""
    files = {"training records": train_path, **(inputs or {})}
    return {"settings": result_settings({**(settings or {}), "train": asdict(cfg), "backend": B.name,
                                         "device": B.device_name, "precision": B.precision}),
            "inputs": {name: file_digest(path) for name, path in files.items()},
            "code": code_version()}


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


def tree(obj, fn):
    """Apply ``fn`` to every leaf of nested dicts/lists/tuples."""
    if isinstance(obj, dict):
        return {k: tree(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(tree(v, fn) for v in obj)
    return fn(obj)


def save_state(B, work_dir: Path, modules: dict, optimizer, meta: dict) -> None:
    with atomic_dir(work_dir / STATE_DIR) as tmp:
        weights = {f"{name}.{k}": v for name, m in modules.items()
                   for k, v in state_dict_numpy(m).items()}
        np.savez(tmp / "weights.npz", **weights)
        opt = tree(optimizer.state_dict(), lambda x: B.to_numpy(x) if hasattr(x, "detach") else x)
        with open(tmp / "state.pkl", "wb") as fh:
            pickle.dump({"meta": meta, "optimizer": opt}, fh)


def load_state(B, work_dir: Path, modules: dict, optimizer, identity: dict, desc: str) -> dict:
    folder = work_dir / STATE_DIR
    if not (folder / "state.pkl").is_file():
        folder = work_dir / f".{STATE_DIR}.old"   # killed while atomic_dir swapped the folders
        if not (folder / "state.pkl").is_file():
            return {}
    try:
        with open(folder / "state.pkl", "rb") as fh:
            saved = pickle.load(fh)
        weights = dict(np.load(folder / "weights.npz"))
    except Exception as exc:   # a damaged state is not worth a crash: start over, loudly
        print(f"warning: ignoring unreadable resume state in {folder} ({exc}); starting over",
              file=sys.stderr)
        clear(B, work_dir)
        return {}
    why = identity_change(saved["meta"].get("identity"), identity)
    if why is not None:
        print(f"{desc}: the resume state in {folder} belongs to another job ({why}); "
              "starting over", file=sys.stderr)
        clear(B, work_dir)
        return {}
    for name, m in modules.items():
        prefix = f"{name}."
        load_state_numpy(m, {k[len(prefix):]: v for k, v in weights.items()
                                        if k.startswith(prefix)})
    optimizer.load_state_dict(tree(saved["optimizer"],
                                    lambda x: B.tensor(x) if isinstance(x, np.ndarray) else x))
    return saved["meta"]


def clear(B, work_dir: Path) -> None:
    """Empty a work folder (resume state, best weights, log) before starting over; rank 0 only."""
    if B.rank != 0:
        return
    for item in work_dir.iterdir():
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink()


def truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after the state being resumed (they will be written again)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    keep = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        csv.writer(fh).writerows(keep)
