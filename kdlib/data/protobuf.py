"""OneFlow's record schema for the ``protobuf`` library, and decoding through it.

The schema (``oneflow/core/record/record.proto``, see :mod:`kdlib.data.ofrecord`) is built at run
time in a private descriptor pool, so it works with protobuf 3.20 and 7.x and never clashes with
OneFlow's own registration. The fast codec (:mod:`kdlib.data.wire`) falls back to this decoder for
any record that is not in the canonical layout, and it is what reports a payload that cannot be
parsed. :func:`feature_values` maps a numpy value to its list kind for both.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np

from ..errors import DataError

# Feature.kind field number -> (message name, Feature field name, numpy dtype of its values).
KIND_FIELDS = {
    1: ("BytesList", "bytes_list", np.dtype(object)),
    2: ("FloatList", "float_list", np.dtype(np.float32)),
    3: ("DoubleList", "double_list", np.dtype(np.float64)),
    4: ("Int32List", "int32_list", np.dtype(np.int32)),
    5: ("Int64List", "int64_list", np.dtype(np.int64)),
}


@functools.lru_cache(maxsize=None)
def record_class():
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
    for number, (message, _, _) in KIND_FIELDS.items():
        field = proto.message_type.add(name=message).field.add(
            name="value", number=1, type=value_types[number], label=F.LABEL_REPEATED)
        if number != 1:
            field.options.packed = True
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (message, field_name, _) in KIND_FIELDS.items():
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


def feature_values(value) -> tuple[int, np.ndarray | list]:
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


def decode_with_protobuf(data: bytes) -> dict[str, np.ndarray]:
    """Reference decoder; raises DataError (no file name) on a payload protobuf cannot parse."""
    from google.protobuf.message import DecodeError

    OFRecord = record_class()
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
        number = next(n for n, (_, name, _) in KIND_FIELDS.items() if name == kind)
        values = getattr(feature, kind).value
        if number == 1:
            out[key] = object_array(list(values))
        else:
            out[key] = np.array(values, dtype=KIND_FIELDS[number][2]).reshape(-1)
    return out


def object_array(items: list) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr

