"""The protobuf reference encoder of OFRecord payloads (not collected by pytest: no ``test_``
prefix). The fast encoder in kdlib.data.wire must give the same bytes."""
from __future__ import annotations

from kdlib.data.protobuf import KIND_FIELDS, feature_values, record_class


def encode_with_protobuf(features: dict) -> bytes:
    """Build the message with protobuf, serialise deterministically."""
    OFRecord = record_class()
    message = OFRecord()
    for key, value in features.items():
        number, values = feature_values(value)
        field = getattr(message.feature[key], KIND_FIELDS[number][1])
        field.SetInParent()
        field.value.extend(values if number == 1 else values.tolist())
    return message.SerializeToString(deterministic=True)
