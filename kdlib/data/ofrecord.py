"""OFRecord files: OneFlow's record format, written and read without OneFlow.

A file is a plain sequence of records. Each record is an 8-byte little-endian int64 length ``n``
followed by ``n`` bytes of a serialised ``oneflow.OFRecord`` protobuf message::

    file   := record*
    record := int64_le(n) payload[n]

The schema is OneFlow's ``oneflow/core/record/record.proto`` (proto2, package ``oneflow``)::

    message BytesList  { repeated bytes  value = 1; }
    message FloatList  { repeated float  value = 1 [packed = true]; }
    message DoubleList { repeated double value = 1 [packed = true]; }
    message Int32List  { repeated int32  value = 1 [packed = true]; }
    message Int64List  { repeated int64  value = 1 [packed = true]; }
    message Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                                    DoubleList double_list = 3; Int32List int32_list = 4;
                                    Int64List int64_list = 5; } }
    message OFRecord { map<string, Feature> feature = 1; }

The BERT layout (docs/architecture.md, "Data") holds five int32 lists per example: ``input_ids``,
``input_mask`` and ``segment_ids`` of length L, and ``label_ids`` and ``is_real_example`` of length
1 (``label_ids`` is a float list for regression tasks such as STS-B).

Use::

    with RecordWriter(record_file(out_dir, "train")) as w:
        w.write_batch({"input_ids": ids, ...})   # (N, L) int32 arrays: the fast path
    for record in iter_records(path):
        record["input_ids"]                       # (L,) int32

This module holds the files: the framing, :class:`RecordWriter` and the readers. The payloads are
encoded and decoded by :mod:`kdlib.data.wire` (with :mod:`kdlib.data.protobuf` as its fallback);
training batches are cut by :mod:`kdlib.data.batching`.
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError
from ..io import atomic_path
from .wire import decode_record, encode_batch, encode_record

BERT_FEATURES = ("input_ids", "input_mask", "segment_ids", "label_ids", "is_real_example")
PART_SUFFIX = ".of_record-0"
MAX_RECORD_BYTES = (1 << 31) - 1  # protobuf cannot parse a larger message

_LEN = struct.Struct("<q")
_READ_BUFFER = 1 << 20


def record_file(directory: str | os.PathLike, split: str) -> Path:
    """``<directory>/<split>.of_record-0``: the one part file of a split (OneFlow's part naming)."""
    return Path(directory) / f"{split}{PART_SUFFIX}"


# --------------------------------------------------------------------------------------------
# Files.
# --------------------------------------------------------------------------------------------
class RecordWriter:
    """Write an OFRecord file atomically: ``with RecordWriter(path) as w: w.write(features)``.

    Records go to a temporary file beside ``path`` that replaces ``path`` when the ``with``
    block ends cleanly; on an exception it is deleted and ``path`` is untouched. A rerun
    overwrites, never appends. ``w.count`` is the number of records written so far.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.count = 0
        self._file = None
        self._stack = None

    def __enter__(self) -> "RecordWriter":
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            self._file = stack.enter_context(open(tmp, "wb", buffering=_READ_BUFFER))
            self._stack = stack.pop_all()
        self.count = 0
        return self

    def __exit__(self, exc_type, exc, tb):
        stack, self._stack, self._file = self._stack, None, None
        return stack.__exit__(exc_type, exc, tb)

    def write(self, features: dict) -> None:
        """Encode and append one record."""
        self.write_encoded(encode_record(features))

    def write_batch(self, features: dict) -> None:
        """Encode and append N records given as ``{name: array (N, ...)}`` (see encode_batch)."""
        for payload in encode_batch(features):
            self.write_encoded(payload)

    def write_encoded(self, payload: bytes) -> None:
        """Append one already-encoded payload (from :func:`encode_record`, e.g. in a worker)."""
        if self._file is None:
            raise RuntimeError("RecordWriter.write outside its 'with' block")
        self._file.write(_LEN.pack(len(payload)))
        self._file.write(payload)
        self.count += 1


def _open(path: Path):
    try:
        return open(path, "rb", buffering=_READ_BUFFER)
    except FileNotFoundError:
        raise DataError(f"{path}: no such OFRecord file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an OFRecord file") from None


def _record_headers(path: Path, f, size: int) -> Iterator[tuple[int, int]]:
    """Yield ``(index, payload length)`` with ``f`` positioned at each payload; checks framing."""
    pos, index = 0, 0
    while True:
        head = f.read(8)
        if not head:
            return
        if len(head) < 8:
            raise DataError(f"{path}: record {index} is truncated "
                            f"(its length header has {len(head)} of 8 bytes)")
        (length,) = _LEN.unpack(head)
        left = size - pos - 8
        if length < 0 or length > MAX_RECORD_BYTES:
            raise DataError(f"{path}: record {index} has an impossible length header ({length}); "
                            "the file is corrupt or not an OFRecord file")
        if length > left:
            raise DataError(f"{path}: record {index} is truncated "
                            f"(header says {length} bytes, {left} left)")
        yield index, length
        pos += 8 + length
        index += 1


def iter_payloads(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """Yield ``(index, payload bytes)`` for each record, streaming."""
    path = Path(path)
    with _open(path) as f:
        size = os.fstat(f.fileno()).st_size
        for index, length in _record_headers(path, f, size):
            payload = f.read(length)
            if len(payload) < length:  # the file shrank while we read it
                raise DataError(f"{path}: record {index} is truncated "
                                f"(header says {length} bytes, {len(payload)} left)")
            yield index, payload


def decode_at(path, index: int, payload: bytes) -> dict[str, np.ndarray]:
    try:
        return decode_record(payload)
    except DataError as exc:
        raise DataError(f"{path}: record {index} is corrupt: {exc}") from None


def iter_records(path: str | os.PathLike) -> Iterator[dict[str, np.ndarray]]:
    """Stream the records of an OFRecord file as ``{name: 1-D array}`` dicts (constant memory).

    A truncated file or garbage raises DataError naming the file and the record index.
    """
    for index, payload in iter_payloads(path):
        yield decode_at(path, index, payload)


def count_records(path: str | os.PathLike) -> int:
    """Number of records in ``path``; reads only the length headers and seeks over payloads."""
    path = Path(path)
    count = 0
    with _open(path) as f:
        size = os.fstat(f.fileno()).st_size
        for _, length in _record_headers(path, f, size):
            f.seek(length, os.SEEK_CUR)
            count += 1
    return count


def checked_count(path: str | os.PathLike) -> int:
    """:func:`count_records`, checked against the ``meta.json`` of the record folder (the counts
    the converter wrote) when there is one: a file cut exactly at a record boundary reads as a
    valid, shorter file, and only the count can tell."""

    path = Path(path)
    count = count_records(path)
    meta = path.parent / "meta.json"
    split = path.name[:-len(PART_SUFFIX)] if path.name.endswith(PART_SUFFIX) else None
    if split is None or not meta.is_file():
        return count
    try:
        expected = json.loads(meta.read_text(encoding="utf-8")).get("counts", {}).get(split)
    except (OSError, ValueError, AttributeError):
        raise DataError(f"{meta}: not a readable record metadata file; rebuild the records") from None
    if expected is not None and expected != count:
        raise DataError(f"{path}: {count} records, but {meta} says {expected}; the file is cut "
                        "short or comes from another conversion: rebuild the records")
    return count
