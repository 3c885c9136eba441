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

The BERT layout (DESIGN.md section 4) holds five int32 lists per example: ``input_ids``,
``input_mask`` and ``segment_ids`` of length L, and ``label_ids`` and ``is_real_example`` of length
1 (``label_ids`` is a float list for regression tasks such as STS-B).

Use::

    with RecordWriter(record_file(out_dir, "train")) as w:
        w.write_batch({"input_ids": ids, ...})   # (N, L) int32 arrays: the fast path
    for batch in batches(path, 32, shuffle_buffer=10_000, seed=s, epoch=e):
        batch["input_ids"]                        # (B, L') int32, L' = longest real length

Two codecs live here and agree byte for byte (tests/test_ofrecord.py proves it):

* a hand-written wire-format encoder and a splitter for the canonical layout that protobuf,
  OneFlow and kdlib all write. Working on many records at once (``encode_batch``, ``batches``)
  they build and decode the varints of a whole batch with a few numpy operations, several times
  faster than protobuf messages handled one at a time from Python;
* the ``protobuf`` library, with the schema built at run time in a private descriptor pool (so it
  works with protobuf 3.20 and 7.x and never clashes with OneFlow's own registration). It is the
  reference in the tests and the fallback for any record the fast splitter does not recognise;
  it is also what reports a payload that cannot be parsed.
"""
from __future__ import annotations

import contextlib
import functools
import os
import struct
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .errors import DataError
from .io import atomic_path

BERT_FEATURES = ("input_ids", "input_mask", "segment_ids", "label_ids", "is_real_example")
SEQUENCE_FEATURES = ("input_ids", "input_mask", "segment_ids")  # (B, L) in a batch, trimmed
SCALAR_FEATURES = ("label_ids", "is_real_example")  # one value per record: (B,) in a batch

PART_SUFFIX = ".of_record-0"
MAX_RECORD_BYTES = (1 << 31) - 1  # protobuf cannot parse a larger message

_LEN = struct.Struct("<q")
_READ_BUFFER = 1 << 20


def record_file(directory: str | os.PathLike, split: str) -> Path:
    """``<directory>/<split>.of_record-0``: the one part file of a split (OneFlow's part naming)."""
    return Path(directory) / f"{split}{PART_SUFFIX}"


# --------------------------------------------------------------------------------------------
# The protobuf schema, built at run time in a private pool.
# --------------------------------------------------------------------------------------------
# Feature.kind field number -> (message name, Feature field name, numpy dtype of its values).
_KIND_FIELDS = {
    1: ("BytesList", "bytes_list", np.dtype(object)),
    2: ("FloatList", "float_list", np.dtype(np.float32)),
    3: ("DoubleList", "double_list", np.dtype(np.float64)),
    4: ("Int32List", "int32_list", np.dtype(np.int32)),
    5: ("Int64List", "int64_list", np.dtype(np.int64)),
}


@functools.lru_cache(maxsize=None)
def _protobuf_record_class():
    """Return the ``oneflow.OFRecord`` message class of OneFlow's record.proto.

    The file is registered under a kdlib-private name in a private ``DescriptorPool``; message
    names (``oneflow.OFRecord`` ...) and field numbers match OneFlow's, so the bytes are the same.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="kdlib/oneflow_record.proto", package="oneflow", syntax="proto2")
    value_types = {1: F.TYPE_BYTES, 2: F.TYPE_FLOAT, 3: F.TYPE_DOUBLE, 4: F.TYPE_INT32,
                   5: F.TYPE_INT64}
    for number, (message, _, _) in _KIND_FIELDS.items():
        field = proto.message_type.add(name=message).field.add(
            name="value", number=1, type=value_types[number], label=F.LABEL_REPEATED)
        if number != 1:
            field.options.packed = True
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (message, field_name, _) in _KIND_FIELDS.items():
        feature.field.add(name=field_name, number=number, type=F.TYPE_MESSAGE,
                          label=F.LABEL_OPTIONAL, type_name=f".oneflow.{message}", oneof_index=0)
    record = proto.message_type.add(name="OFRecord")
    entry = record.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                    type_name=".oneflow.Feature")
    record.field.add(name="feature", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                     type_name=".oneflow.OFRecord.FeatureEntry")

    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.21
        get_class = message_factory.GetMessageClass
    else:  # protobuf 3.20
        get_class = message_factory.MessageFactory(pool).GetPrototype
    return get_class(pool.FindMessageTypeByName("oneflow.OFRecord"))


def _feature_values(value) -> tuple[int, np.ndarray | list]:
    """Map one feature value to ``(kind field number, flat values)``.

    int32 (and narrower ints, bool) -> Int32List; int64, uint32 -> Int64List; float32 (and
    float16) -> FloatList; float64 -> DoubleList; bytes / a sequence of bytes -> BytesList.
    """
    if isinstance(value, (bytes, bytearray)):
        return 1, [bytes(value)]
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (bytes, bytearray)):
        return 1, [bytes(v) for v in value]
    arr = np.asarray(value)
    kind = arr.dtype.kind
    if kind == "b" or (kind in "iu" and arr.dtype.itemsize <= 2) or arr.dtype == np.int32:
        return 4, arr.ravel().astype(np.int32, copy=False)
    if arr.dtype == np.int64 or arr.dtype == np.uint32:
        return 5, arr.ravel().astype(np.int64, copy=False)
    if arr.dtype == np.uint64:
        if arr.size and arr.max() > np.iinfo(np.int64).max:
            raise ValueError("uint64 values above 2**63-1 do not fit an OFRecord Int64List")
        return 5, arr.ravel().astype(np.int64)
    if arr.dtype == np.float32 or arr.dtype == np.float16:
        return 2, arr.ravel().astype(np.float32, copy=False)
    if arr.dtype == np.float64:
        return 3, arr.ravel()
    if kind == "S" or (kind == "O" and all(isinstance(v, (bytes, bytearray)) for v in arr.flat)):
        return 1, [bytes(v) for v in arr.flat]
    raise TypeError(f"cannot store a {arr.dtype} array in an OFRecord feature "
                    "(use int32, int64, float32, float64 or bytes)")


def _encode_with_protobuf(features: dict) -> bytes:
    """Reference encoder: build the message with protobuf, serialise deterministically."""
    OFRecord = _protobuf_record_class()
    message = OFRecord()
    for key, value in features.items():
        number, values = _feature_values(value)
        field = getattr(message.feature[key], _KIND_FIELDS[number][1])
        field.SetInParent()
        field.value.extend(values if number == 1 else values.tolist())
    return message.SerializeToString(deterministic=True)


def _decode_with_protobuf(data: bytes) -> dict[str, np.ndarray]:
    """Reference decoder; raises DataError (no file name) on a payload protobuf cannot parse."""
    from google.protobuf.message import DecodeError

    OFRecord = _protobuf_record_class()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            message = OFRecord.FromString(bytes(data))
        for warning in caught:  # protobuf 3.20 (cpp) only warns when it stops early
            if issubclass(warning.category, RuntimeWarning):
                raise ValueError(str(warning.message))
    except (DecodeError, ValueError, RuntimeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"protobuf cannot parse it as an OFRecord ({reason})") from None
    out = {}
    for key in sorted(message.feature):
        feature = message.feature[key]
        kind = feature.WhichOneof("kind")
        if kind is None:
            raise DataError(f"feature {key!r} holds no value list")
        number = next(n for n, (_, name, _) in _KIND_FIELDS.items() if name == kind)
        values = getattr(feature, kind).value
        if number == 1:
            out[key] = _object_array(list(values))
        else:
            out[key] = np.array(values, dtype=_KIND_FIELDS[number][2]).reshape(-1)
    return out


def _object_array(items: list) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


# --------------------------------------------------------------------------------------------
# The fast wire-format codec.
# --------------------------------------------------------------------------------------------
# Wire format reminders: a field is tag = (number << 3 | wire type) then its data; wire type 2
# (length-delimited) is a varint length and the bytes. Varints hold 7 bits per byte, low first,
# the top bit set on every byte but the last. Negative int32/int64 values take 10 bytes.
_TAG_ENTRY = b"\x0a"  # OFRecord.feature (1, length-delimited); also FeatureEntry.key, *List.value
_TAG_VALUE = b"\x12"  # FeatureEntry.value (2, length-delimited)
_KIND_TAGS = {number: bytes([number << 3 | 2]) for number in _KIND_FIELDS}
_VARINT_CACHE_LIMIT = 1 << 17  # ~12 MB at most; covers any WordPiece vocabulary


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative values are sign-extended to 64 bits
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _VarintTable(dict):
    """int -> its varint bytes, filled on first use (bounded)."""

    def __missing__(self, value: int) -> bytes:
        encoded = _varint(value)
        if len(self) < _VARINT_CACHE_LIMIT:
            self[value] = encoded
        return encoded


_VARINTS = _VarintTable()
_V = _VARINTS.__getitem__


class _EntryPrefixes(dict):
    """Payload size p -> the bytes that precede a numeric feature's packed values in a record.

    For key k and list kind t the map entry is::

        0x0a len(entry) | 0x0a len(k) k | 0x12 len(feature) | tag(t) len(list) | 0x0a p | values

    (the ``0x0a p`` part is absent when p == 0: protobuf omits an empty packed field). All of it
    depends only on (k, t, p), so it is built once per size and reused.
    """

    def __init__(self, key: str, number: int):
        super().__init__()
        raw = key.encode("utf-8")
        self.key_field = _TAG_ENTRY + _V(len(raw)) + raw
        self.kind_tag = _KIND_TAGS[number]

    def __missing__(self, size: int) -> bytes:
        head = _TAG_ENTRY + _V(size) if size else b""  # list message: its one packed field
        head = self.kind_tag + _V(len(head) + size) + head  # Feature: the oneof field
        head = self.key_field + _TAG_VALUE + _V(len(head) + size) + head  # FeatureEntry
        head = _TAG_ENTRY + _V(len(head) + size) + head  # OFRecord.feature
        if len(self) < 4096:
            self[size] = head
        return head


_PREFIXES: dict[tuple[str, int], _EntryPrefixes] = {}


def _prefixes(key: str, number: int) -> _EntryPrefixes:
    table = _PREFIXES.get((key, number))
    if table is None:
        if not isinstance(key, str):
            raise TypeError(f"OFRecord feature names are strings, not {type(key).__name__}")
        table = _EntryPrefixes(key, number)
        if len(_PREFIXES) < 4096:
            _PREFIXES[key, number] = table
    return table


def _pack_varints(values: np.ndarray) -> bytes:
    """Packed varint payload of one int32/int64 array."""
    items = values.tolist()
    try:
        raw = bytes(items)  # every value in 0..255 (raises otherwise) ...
    except ValueError:
        pass
    else:
        if raw.isascii():  # ... and below 128: one byte each, the byte is the value
            return raw
    return b"".join(map(_V, items))


def _pack_rows(number: int, matrix: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Packed payloads of every row of an (N, w) numeric matrix, concatenated.

    Returns ``(bytes, sizes)`` with ``sizes`` int64 (N,) the byte length of each row's payload.
    Varints are built for all rows at once: digit j of value u is ``(u >> 7j) & 0x7f``, with
    the top bit set on every digit but the last of each value; row-major order of the kept
    digits is exactly the concatenation of each row's packed varints.
    """
    n, width = matrix.shape
    if number in (2, 3):
        raw = matrix.astype("<f4" if number == 2 else "<f8", copy=False).tobytes()
        return raw, np.full(n, len(raw) // n if n else 0, dtype=np.int64)
    small = matrix.size and matrix.min() >= 0 and matrix.max() < 1 << 32
    u = matrix.astype(np.uint32) if small else matrix.astype(np.int64).view(np.uint64)
    top = int(u.max()) if u.size else 0  # negatives are sign-extended to 64 bits: 10 digits
    k = max(1, (top.bit_length() + 6) // 7)  # digits of the largest value
    if k == 1:
        return u.astype(np.uint8).tobytes(), np.full(n, width, dtype=np.int64)
    lengths = np.ones(u.shape, dtype=np.uint8)  # (N, w) digits of each value
    for j in range(1, k):
        lengths += u >= u.dtype.type(1 << 7 * j)
    digits = np.empty(u.shape + (k,), dtype=np.uint8)  # (N, w, k)
    keep = np.empty(u.shape + (k,), dtype=bool)  # (N, w, k): digit j exists
    for j in range(k):  # one plane at a time: numpy is slow on a short last axis
        more = lengths > j + 1
        digits[..., j] = ((u >> u.dtype.type(7 * j)) & u.dtype.type(0x7F)).astype(np.uint8)
        digits[..., j] |= more.view(np.uint8) << 7  # continuation bit
        keep[..., j] = lengths > j
    return digits[keep].tobytes(), lengths.sum(axis=1, dtype=np.int64)


def encode_record(features: dict) -> bytes:
    """Serialise ``{name: values}`` into one OFRecord payload (without the length header).

    Value types: int32 arrays -> Int32List, int64 -> Int64List, float32 -> FloatList,
    float64 -> DoubleList, ``bytes`` (or a list/array of bytes) -> BytesList. Arrays are
    flattened. Note that Python ints and lists of ints are int64 to numpy: pass ``np.int32``
    arrays for the BERT layout. Features are written sorted by name, so the bytes equal
    protobuf's deterministic serialisation. For many records, :func:`encode_batch` is faster.
    """
    parts = []
    for key in sorted(features):
        number, values = _feature_values(features[key])
        if number == 1:  # BytesList body: one length-delimited field per item, never packed
            body = b"".join(_TAG_ENTRY + _V(len(v)) + v for v in values)
            raw = key.encode("utf-8")
            feature = _KIND_TAGS[1] + _V(len(body)) + body
            entry = _TAG_ENTRY + _V(len(raw)) + raw + _TAG_VALUE + _V(len(feature)) + feature
            parts.append(_TAG_ENTRY + _V(len(entry)) + entry)
            continue
        if number >= 4:
            packed = _pack_varints(values)
        else:
            packed = values.astype("<f4" if number == 2 else "<f8", copy=False).tobytes()
        parts.append(_prefixes(key, number)[len(packed)])
        parts.append(packed)
    return b"".join(parts)


def encode_batch(features: dict) -> list[bytes]:
    """Encode N records at once: ``{name: array (N, ...)}``, row i of each array is record i.

    Returns the N payloads, byte-identical to ``encode_record({k: v[i] ...})`` for each i, at
    a fraction of the cost: the varints of a whole batch are built with a few numpy operations.
    ``(N,)`` arrays give one value per record (e.g. ``label_ids``).
    """
    keys = sorted(features)
    arrays = {key: np.asarray(features[key]) for key in keys}
    if not keys:
        return []
    n = len(arrays[keys[0]]) if arrays[keys[0]].ndim else -1
    for key in keys:
        if arrays[key].ndim == 0 or len(arrays[key]) != n:
            raise ValueError(f"encode_batch: every feature needs the same first dimension N; "
                             f"{key!r} has shape {arrays[key].shape}, {keys[0]!r} has {n}")
    columns = []
    for key in keys:
        number, flat = _feature_values(arrays[key])
        if number == 1:  # bytes: no batch path
            return [encode_record({k: arrays[k][i] for k in keys}) for i in range(n)]
        raw, sizes = _pack_rows(number, flat.reshape(n, -1) if n else flat.reshape(0, 0))
        bounds = np.concatenate(([0], np.cumsum(sizes))).tolist()  # (N + 1,)
        columns.append((_prefixes(key, number), raw, bounds))
    out = []
    for i in range(n):
        parts = []
        for prefixes, raw, bounds in columns:
            start, end = bounds[i], bounds[i + 1]
            parts.append(prefixes[end - start])
            parts.append(raw[start:end])
        out.append(b"".join(parts))
    return out


class _NotCanonical(Exception):
    """The payload is not in the canonical layout the fast splitter reads; use protobuf."""


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    result, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + 1
        shift += 7
        if shift > 63:
            raise _NotCanonical


def _split_record(data: bytes) -> list[tuple[str, int, bytes]]:
    """Split a canonical payload into ``[(key, kind number, value bytes), ...]`` in file order.

    ``value bytes`` is the packed payload of the list (for BytesList, the list message body).
    Canonical means what protobuf, OneFlow and kdlib write: every map entry is key then value,
    each Feature holds exactly one list, each packed list is one chunk. Anything else (and any
    corruption) raises ``_NotCanonical``.
    """
    out = []
    pos, size = 0, len(data)
    try:
        while pos < size:
            if data[pos] != 0x0A:
                raise _NotCanonical
            length, pos = _read_varint(data, pos + 1)
            end = pos + length
            if end > size or data[pos] != 0x0A:
                raise _NotCanonical
            length, pos = _read_varint(data, pos + 1)
            key = data[pos:pos + length].decode("utf-8")
            pos += length
            if data[pos] != 0x12:
                raise _NotCanonical
            length, pos = _read_varint(data, pos + 1)
            if pos + length != end:
                raise _NotCanonical
            number = data[pos] >> 3
            if data[pos] & 7 != 2 or not 1 <= number <= 5:
                raise _NotCanonical
            length, pos = _read_varint(data, pos + 1)
            if pos + length != end:
                raise _NotCanonical
            if length and number != 1:
                if data[pos] != 0x0A:
                    raise _NotCanonical
                length, pos = _read_varint(data, pos + 1)
                if pos + length != end or not length:
                    raise _NotCanonical
            out.append((key, number, data[pos:end]))
            pos = end
    except (IndexError, UnicodeDecodeError):
        raise _NotCanonical from None
    return out


def _decode_varints(buf: np.ndarray) -> np.ndarray:
    """Decode a run of varints: ``buf`` uint8 (n,) -> int64 (k,) (int64 bits of the uint64).

    With ``ends`` the last byte of each varint and ``lengths`` its byte count, the value is
    built from its last (most significant) digit down: ``v = v << 7 | digit[end - j]``.
    Raises ``_NotCanonical`` if the run is cut or a varint is longer than 10 bytes.
    """
    last = buf < 0x80  # (n,)
    if not last[-1]:
        raise _NotCanonical
    ends = np.flatnonzero(last)  # (k,)
    lengths = np.diff(ends, prepend=-1)  # (k,)
    longest = int(lengths.max())
    if longest > 10:
        raise _NotCanonical
    digits = (buf & 0x7F).astype(np.uint64)  # (n,)
    values = digits[ends]
    for j in range(1, longest):
        values = np.where(lengths > j, (values << np.uint64(7)) | digits[ends - j], values)
    return values.view(np.int64)


def _decode_values(number: int, chunks: list[bytes]) -> list[np.ndarray] | np.ndarray:
    """Decode the value bytes of one feature from several records at once.

    Returns a (R, n) array when every record holds n values, else a list of R arrays.
    Raises ``_NotCanonical`` if any chunk is malformed.
    """
    dtype = _KIND_FIELDS[number][2]
    if number == 1:
        return [_object_array(_split_bytes_list(chunk)) for chunk in chunks]
    joined = b"".join(chunks)
    sizes = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
    if number <= 3:  # fixed-width little-endian floats
        width = dtype.itemsize
        if np.any(sizes % width):
            raise _NotCanonical
        flat = np.frombuffer(joined, dtype=dtype.newbyteorder("<")).astype(dtype)
        counts = sizes // width
    elif joined.isascii():  # every value is one byte
        flat = np.frombuffer(joined, dtype=np.uint8).astype(dtype)
        counts = sizes
    else:
        buf = np.frombuffer(joined, dtype=np.uint8)
        bounds = np.cumsum(sizes)
        last = buf < 0x80
        if np.any(~last[bounds[sizes > 0] - 1]):  # a varint runs into the next record
            raise _NotCanonical
        flat = _decode_varints(buf).astype(dtype)  # int32 keeps the low 32 bits, as protobuf
        ends_before = np.concatenate(([0], np.cumsum(last)))
        counts = ends_before[bounds] - ends_before[bounds - sizes]
    if len(chunks) and np.all(counts == counts[0]):
        return flat.reshape(len(chunks), int(counts[0]))
    return np.split(flat, np.cumsum(counts)[:-1])


def _split_bytes_list(body: bytes) -> list[bytes]:
    items, pos = [], 0
    try:
        while pos < len(body):
            if body[pos] != 0x0A:
                raise _NotCanonical
            length, pos = _read_varint(body, pos + 1)
            if pos + length > len(body):
                raise _NotCanonical
            items.append(body[pos:pos + length])
            pos += length
    except IndexError:
        raise _NotCanonical from None
    return items


def decode_record(data: bytes) -> dict[str, np.ndarray]:
    """Parse one OFRecord payload into ``{name: 1-D array}``.

    dtypes: Int32List -> int32, Int64List -> int64, FloatList -> float32, DoubleList -> float64,
    BytesList -> object array of bytes. Raises DataError if protobuf cannot parse the payload.
    """
    try:
        return {key: _decode_one(number, chunk) for key, number, chunk in _split_record(data)}
    except _NotCanonical:
        return _decode_with_protobuf(data)


def _decode_one(number: int, chunk: bytes) -> np.ndarray:
    """The values of one feature of one record (the one-chunk case of ``_decode_values``)."""
    if number >= 4:
        if chunk.isascii():
            return np.frombuffer(chunk, dtype=np.uint8).astype(_KIND_FIELDS[number][2])
        return _decode_varints(np.frombuffer(chunk, dtype=np.uint8)).astype(_KIND_FIELDS[number][2])
    if number == 1:
        return _object_array(_split_bytes_list(chunk))
    dtype = _KIND_FIELDS[number][2]
    if len(chunk) % dtype.itemsize:
        raise _NotCanonical
    return np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).astype(dtype)


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


def _iter_payloads(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
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


def _decode_at(path, index: int, payload: bytes) -> dict[str, np.ndarray]:
    try:
        return decode_record(payload)
    except DataError as exc:
        raise DataError(f"{path}: record {index} is corrupt: {exc}") from None


def iter_records(path: str | os.PathLike) -> Iterator[dict[str, np.ndarray]]:
    """Stream the records of an OFRecord file as ``{name: 1-D array}`` dicts (constant memory).

    A truncated file or garbage raises DataError naming the file and the record index.
    """
    for index, payload in _iter_payloads(path):
        yield _decode_at(path, index, payload)


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
    import json

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


def _shuffled(items: Iterable, buffer_size: int, rng: np.random.Generator) -> Iterator:
    """Bounded shuffle: keep ``buffer_size`` items; emit a random one as each new one arrives.

    Item k of the output was among the first k + buffer_size + 1 inputs, so memory is
    ``buffer_size`` items whatever the stream's length. The leftovers are emitted permuted.
    """
    buffer: list = []
    picks: list[int] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        if not picks:
            picks = rng.integers(0, buffer_size, size=4096).tolist()[::-1]
        slot = picks.pop()
        yield buffer[slot]
        buffer[slot] = item
    for slot in rng.permutation(len(buffer)).tolist():
        yield buffer[slot]


def trim_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cut the (B, L) sequence features to the batch's longest real sequence (at least 1)."""
    if "input_mask" not in batch or batch["input_mask"].ndim != 2:
        return batch
    real = np.flatnonzero(batch["input_mask"].any(axis=0))  # = mask.sum(1).max() for prefix masks
    length = int(real[-1]) + 1 if real.size else 1
    return {key: np.ascontiguousarray(value[:, :length])
            if key in SEQUENCE_FEATURES and value.ndim == 2 else value
            for key, value in batch.items()}


def _collate(path, batch: list[tuple[int, bytes]], trim: bool) -> dict[str, np.ndarray]:
    """Decode a batch of ``(index, payload)`` into stacked arrays.

    Sequence features become (B, L); ``label_ids`` / ``is_real_example`` (B,); ``index`` (B,).
    Values are decoded once per feature for the whole batch.
    """
    columns: dict[str, list] = {}
    numbers: dict[str, int] = {}
    try:
        for row, (_, payload) in enumerate(batch):
            split = _split_record(payload)
            if len(split) != len(columns) and row:
                raise _NotCanonical
            for key, number, chunk in split:
                column = columns.setdefault(key, [])
                if numbers.setdefault(key, number) != number or len(column) != row:
                    raise _NotCanonical
                column.append(chunk)
        decoded = {key: _decode_values(numbers[key], column) for key, column in columns.items()}
    except _NotCanonical:  # unusual or corrupt record: decode one by one for a precise error
        records = [_decode_at(path, index, payload) for index, payload in batch]
        decoded = {key: [r.get(key) for r in records] for key in records[0]}
        for key, values in decoded.items():
            for (index, _), value in zip(batch, values):
                if value is None or value.dtype != values[0].dtype:
                    raise DataError(f"{path}: record {index} does not have the features "
                                    f"(names and types) of record {batch[0][0]}")
    out = {}
    for key, values in decoded.items():
        if isinstance(values, list):
            lengths = {len(v) for v in values}
            if len(lengths) > 1:
                raise DataError(f"{path}: feature {key!r} has different lengths "
                                f"({min(lengths)} to {max(lengths)}) in records "
                                f"{batch[0][0]}..{batch[-1][0]}, so they cannot form a batch")
            values = np.stack(values)
        if key in SCALAR_FEATURES and values.shape[1] == 1:
            values = values[:, 0]
        out[key] = values
    if trim:
        out = trim_batch(out)
    out["index"] = np.fromiter((index for index, _ in batch), dtype=np.int64, count=len(batch))
    return out


def _grouped(stream: Iterable, batch_size: int, bucket: int, rng) -> Iterator[list]:
    """Cut a stream of ``(index, payload)`` into batches.

    With ``bucket`` > 0, every ``bucket * batch_size`` records form a pool that is sorted by
    payload size (a proxy for the real sequence length: padding encodes as one byte per token)
    before it is cut, so each batch holds sequences of similar length and trimming removes most
    padding. The pool's batches then come out in an order drawn from ``rng`` (sorted order when
    ``rng`` is None). Memory stays bounded by the pool.
    """
    if bucket <= 0:
        batch: list = []
        for item in stream:
            batch.append(item)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
        return
    pool: list = []
    for item in stream:
        pool.append(item)
        if len(pool) == bucket * batch_size:
            yield from _pool_batches(pool, batch_size, rng)
            pool = []
    if pool:
        yield from _pool_batches(pool, batch_size, rng)


def _pool_batches(pool: list, batch_size: int, rng) -> Iterator[list]:
    pool.sort(key=lambda item: len(item[1]))                 # stable: ties keep stream order
    cut = [pool[i:i + batch_size] for i in range(0, len(pool), batch_size)]
    order = range(len(cut)) if rng is None else rng.permutation(len(cut)).tolist()
    for k in order:
        yield cut[k]


def shard_rows(batch: dict[str, np.ndarray], rank: int, world: int) -> dict[str, np.ndarray]:
    """Rows ``rank::world`` of a global batch: process ``rank``'s share in data-parallel training.

    Adds ``global_rows`` (N, the global batch's size) and ``shard_weight``
    ``w_r = n_r * W / N`` for the local size ``n_r``: with per-shard losses that are means over
    the shard, the average that DDP takes, ``(1/W) sum_r w_r * mean_r = (1/N) sum_i loss_i``, is
    the global batch's mean even when N is not a multiple of W. A shard left empty (N < W)
    borrows row 0 with weight 0, so that every process still runs the step.
    Taking every W-th row keeps the shards' lengths alike under length bucketing.
    """
    n = len(batch["index"])
    rows = np.arange(rank, n, world)
    weight = len(rows) * world / n
    if rows.size == 0:
        rows, weight = np.arange(1), 0.0
    out = {key: value[rows] for key, value in batch.items()}
    out["global_rows"], out["shard_weight"] = n, weight
    return out


def batches(path: str | os.PathLike, batch_size: int, *, shuffle_buffer: int = 0, seed: int = 0,
            epoch: int = 0, start_batch: int = 0, drop_last: bool = False,
            trim: bool = True, bucket: int = 0,
            shard: tuple[int, int] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Stream an OFRecord file as numpy batches with bounded memory.

    Each batch maps every feature to a stacked array: (B, L) for lists, (B,) for
    ``label_ids`` and ``is_real_example``, plus ``index`` int64 (B,), each record's 0-based
    position in the file. With ``shuffle_buffer`` > 0, records pass through a shuffle buffer of
    that many records driven by an RNG seeded from ``(seed, epoch)``: the order is reproducible
    and memory does not grow with the file. With ``bucket`` > 0, batches are cut from
    length-sorted pools of ``bucket`` batches (see :func:`_grouped`); the records then do not
    come in file order, but ``index`` says where each one came from. ``start_batch`` skips
    that many batches of the same order (exact resume). With ``trim``, the sequence features are
    cut to the longest real length in the batch (``input_mask.sum(1).max()``).

    With ``shard=(rank, world)``, every process builds the same global batches of ``batch_size``
    (the same order for the same seed, epoch and bucket) and gets its rows of each
    (:func:`shard_rows`), trimmed to the global batch's length, so that ``world`` processes
    together see exactly what one process would.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stream: Iterable = _iter_payloads(path)
    rng = None
    if shuffle_buffer > 0:
        rng = np.random.default_rng([int(seed), int(epoch)])
        stream = _shuffled(stream, int(shuffle_buffer), rng)
    for emitted, batch in enumerate(_grouped(stream, batch_size, int(bucket), rng)):
        if drop_last and len(batch) < batch_size:
            continue
        if emitted >= start_batch:
            out = _collate(path, batch, trim)
            yield out if shard is None else shard_rows(out, *shard)
