"""The teacher-logit cache: the teacher's logits for every training record (labelled rows and a
transfer set's), computed once per task and read by every student that needs only logits. Only
the training split: no student learns from the teacher's view of validation or dev, and no
training stage reads dev records.

Row ``i`` is record ``i`` of the training files. BERT records and word records are
written from the same TSV rows in the same order, so a BiLSTM student can use the logits the
teacher produced from its own WordPiece records; :func:`load_logits` checks the counts line up.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..data.ofrecord import checked_count, record_file
from ..data.task import Task
from ..errors import DataError
from ..evaluate.ensemble import mean_probabilities
from ..evaluate.evaluation import predict
from ..io import atomic_path
from ..models.checkpoint import load_checkpoint

SPLITS = ("train",)      # the splits a student learns from the teacher's logits of


def cache_logits(B, task: Task, teacher_dir: str | Path, records: str | Path, out: str | Path,
                 *, batch_size: int, members: list[tuple[str | Path, str | Path]] = ()) -> dict[str, int]:
    """Write ``out`` (.npz): one (N, C) float32 array per split of :data:`SPLITS`. Returns rows per
    split. ``members``: the other teachers of an ensemble (config ``teacher.ensemble``), each
    ``(folder, its record folder)`` (made with its own tokenizer, row i the same example); the
    cache then holds the log of the teachers' mean probabilities (:mod:`kdlib.evaluate.ensemble`)."""
    teachers = [(teacher_dir, records), *members]
    arrays = {}
    for split in SPLITS:
        logits = []
        for folder, folder_records in teachers:
            model, _ = load_checkpoint(B, folder)
            logits.append(predict(B, model, record_file(folder_records, split), batch_size)[0])
            del model
        if len({len(z) for z in logits}) > 1:
            raise DataError(f"the ensemble's record folders hold {[len(z) for z in logits]} {split} rows; "
                            "rebuild them")
        arrays[split] = (mean_probabilities(logits, task.is_regression) if members
                         else logits[0].astype(np.float32))
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return {split: len(a) for split, a in arrays.items()}


def load_logits(path: str | Path, records: str | Path, task: Task) -> dict[str, np.ndarray]:
    """The cached logits of every split of :data:`SPLITS`, checked against the record files a student
    reads (one row per record) and the task (one column per label)."""
    path = Path(path)
    try:
        data = np.load(path)
        if isinstance(data, np.ndarray):
            raise ValueError("a bare .npy array, not an .npz archive")
        with data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:   # truncated: BadZipFile
        raise DataError(f"{path}: not a readable logit cache ({exc})") from None
    for split in SPLITS:
        if split not in arrays:
            raise DataError(f"{path}: no logits for split {split}")
        shape = arrays[split].shape
        if len(shape) != 2 or shape[1] != task.num_labels:
            raise DataError(f"{path}: the {split} logits have shape {shape}, but {task.name} needs "
                            f"{task.num_labels} column(s); rebuild the cache")
        n = checked_count(record_file(records, split))
        if len(arrays[split]) != n:
            raise DataError(f"{path}: {len(arrays[split])} {split} logits do not line up with the "
                            f"{n} records in {records}; rebuild the cache")
    return arrays
