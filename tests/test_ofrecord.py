"""kdlib.data.ofrecord: the codec against protobuf, file framing and errors, batches, and OneFlow."""
from __future__ import annotations

import itertools
import os
import struct

import numpy as np
import ofrecord_reference
import pytest

from kdlib import backend
from kdlib.data import batching, protobuf, wire
from kdlib.data.batching import batches
from kdlib.data.ofrecord import BERT_FEATURES, RecordWriter, count_records, iter_records, record_file
from kdlib.data.wire import decode_record, encode_batch, encode_record
from kdlib.errors import DataError

# Values at every varint width boundary, and the extremes of each type.
INT32_EDGES = [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**28 - 1, 2**28, 2**31 - 1,
               -1, -128, -(2**31)]
INT64_EDGES = INT32_EDGES + [2**35, 2**49, 2**56 - 1, 2**56, 2**63 - 1, -(2**63), -(2**40)]


def assert_same_features(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        if value.dtype == object:
            assert got[key].tolist() == value.tolist(), key
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)


def bert_records(n: int, length: int, seed: int = 0, float_labels: bool = False) -> list[dict]:
    """n BERT-layout examples with real lengths between 3 and ``length``."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        real = int(rng.integers(3, length + 1))
        ids = np.zeros(length, np.int32)
        ids[:real] = rng.integers(100, 30522, real)
        mask = (np.arange(length) < real).astype(np.int32)
        segments = ((np.arange(length) >= real // 2) & (mask == 1)).astype(np.int32)
        label = (np.array([rng.random() * 5], np.float32) if float_labels
                 else np.array([rng.integers(0, 3)], np.int32))
        records.append(dict(input_ids=ids, input_mask=mask, segment_ids=segments,
                            label_ids=label, is_real_example=np.ones(1, np.int32)))
    return records


def write_file(path, records) -> None:
    with RecordWriter(path) as writer:
        for record in records:
            writer.write(record)


# -- codec ---------------------------------------------------------------------------------
def test_round_trip_every_type_and_byte_identical_to_protobuf():
    features = {
        "int32": np.array(INT32_EDGES, np.int32),
        "int64": np.array(INT64_EDGES, np.int64),
        "float32": np.array([0.0, -0.0, 1.5, -3.25e-20, np.inf, -np.inf, 3.4e38], np.float32),
        "float64": np.array([0.1, -1e300, 5e-324, np.pi], np.float64),
        "bytes": np.array([b"hello", b"", b"\x00\xff" * 200], dtype=object),
        "empty_int32": np.zeros(0, np.int32),
        "empty_int64": np.zeros(0, np.int64),
        "empty_float32": np.zeros(0, np.float32),
        "empty_float64": np.zeros(0, np.float64),
        "matrix": np.arange(12, dtype=np.int32).reshape(3, 4),  # flattened
        "ünïcode key": np.array([7], np.int32),
    }
    payload = encode_record(features)
    assert payload == ofrecord_reference.encode_with_protobuf(features)
    want = {k: (v.ravel() if v.dtype != object else v) for k, v in features.items()}
    assert_same_features(decode_record(payload), want)
    assert_same_features(protobuf.decode_with_protobuf(payload), want)


def test_value_conversions():
    got = decode_record(encode_record({
        "bool": np.array([True, False]), "int16": np.array([-3], np.int16),
        "uint32": np.array([2**32 - 1], np.uint32), "float16": np.array([0.5], np.float16),
        "python_int": 5, "python_float": 0.25, "one_bytes": b"abc", "bytes_list": [b"a", b"b"]}))
    assert got["bool"].dtype == np.int32 and got["bool"].tolist() == [1, 0]
    assert got["int16"].dtype == np.int32 and got["int16"].tolist() == [-3]
    assert got["uint32"].dtype == np.int64 and got["uint32"].tolist() == [2**32 - 1]
    assert got["float16"].dtype == np.float32 and got["float16"].tolist() == [0.5]
    assert got["python_int"].dtype == np.int64 and got["python_float"].dtype == np.float64
    assert got["one_bytes"].tolist() == [b"abc"] and got["bytes_list"].tolist() == [b"a", b"b"]
    with pytest.raises(TypeError, match="complex"):
        encode_record({"x": np.array([1j])})


def test_fast_codec_matches_protobuf_on_random_records():
    rng = np.random.default_rng(1)
    makers = {
        np.int32: lambda n: rng.choice(INT32_EDGES + list(rng.integers(-2**31, 2**31, 8)), n),
        np.int64: lambda n: rng.choice(INT64_EDGES, n),
        np.float32: lambda n: rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30),
        np.float64: lambda n: rng.standard_normal(n),
    }
    dtypes = list(makers)
    for _ in range(150):
        features = {}
        for k in range(int(rng.integers(1, 6))):
            dtype = dtypes[rng.integers(len(dtypes))]
            features[f"f{k}"] = makers[dtype](int(rng.integers(0, 40))).astype(dtype)
        payload = encode_record(features)
        assert payload == ofrecord_reference.encode_with_protobuf(features)
        assert_same_features(decode_record(payload), features)
        assert_same_features(protobuf.decode_with_protobuf(payload), features)


def test_encode_batch_equals_encode_record():
    rng = np.random.default_rng(2)
    records = bert_records(40, 24, seed=3)
    stacked = {k: np.stack([r[k] for r in records]) for k in BERT_FEATURES}
    stacked["label_ids"] = stacked["label_ids"][:, 0]  # (N,): one value per record
    stacked["signed"] = rng.choice(INT64_EDGES, (40, 5)).astype(np.int64)
    stacked["small_signed"] = rng.integers(-3, 3, (40, 4)).astype(np.int32)
    stacked["float"] = rng.standard_normal((40, 2)).astype(np.float32)
    stacked["empty"] = np.zeros((40, 0), np.int32)
    got = encode_batch(stacked)
    want = [encode_record({k: v[i] for k, v in stacked.items()}) for i in range(40)]
    assert got == want
    assert encode_batch({k: v[:0] for k, v in stacked.items()}) == []
    with pytest.raises(ValueError, match="first dimension"):
        encode_batch({"a": np.zeros((3, 2), np.int32), "b": np.zeros((4, 2), np.int32)})


def test_non_canonical_payloads_go_through_protobuf():
    # An Int32List written unpacked (legal proto2: tag 0x08 per value) and a map entry with the
    # value before the key: the fast splitter declines both; protobuf reads them.
    unpacked_list = b"\x08\x01\x08\xac\x02"  # values 1 and 300
    feature = b"\x22" + bytes([len(unpacked_list)]) + unpacked_list
    entry = b"\x12" + bytes([len(feature)]) + feature + b"\x0a\x01x"
    payload = b"\x0a" + bytes([len(entry)]) + entry
    with pytest.raises(wire.NotCanonical):
        wire.split_record(payload)
    assert_same_features(decode_record(payload), {"x": np.array([1, 300], np.int32)})


def test_bad_payloads_raise_data_error():
    for garbage in (b"\xff" * 8, b"\x0a\x05abc", b"hello world"):
        with pytest.raises(DataError, match="cannot parse"):
            decode_record(garbage)
    with pytest.raises(DataError, match="holds no value list"):
        decode_record(b"\x0a\x05\x0a\x01x\x12\x00")  # a Feature with no list set


# -- files ---------------------------------------------------------------------------------
def test_writer_framing_counts_and_iter(tmp_path):
    records = bert_records(30, 16)
    path = record_file(tmp_path / "sst2", "train")
    assert path == tmp_path / "sst2" / "train.of_record-0"
    with RecordWriter(path) as writer:
        for record in records[:10]:
            writer.write(record)
        writer.write_encoded(encode_record(records[10]))
        writer.write_batch({k: np.stack([r[k] for r in records[11:]]) for k in BERT_FEATURES})
        assert writer.count == 30
    raw = path.read_bytes()
    (first,) = struct.unpack("<q", raw[:8])
    assert raw[8:8 + first] == encode_record(records[0])
    assert count_records(path) == 30
    for got, want in zip(iter_records(path), records, strict=True):
        assert_same_features(got, want)
    assert os.listdir(path.parent) == [path.name]


def test_writer_is_atomic_and_reruns_overwrite(tmp_path):
    path = tmp_path / "train.of_record-0"
    with pytest.raises(RuntimeError, match="boom"):
        with RecordWriter(path) as writer:
            writer.write({"x": np.ones(3, np.int32)})
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []  # no file, no temporary
    write_file(path, bert_records(5, 8))
    before = path.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with RecordWriter(path) as writer:
            writer.write({"x": np.ones(3, np.int32)})
            raise KeyboardInterrupt
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]
    write_file(path, bert_records(3, 8, seed=9))  # a rerun replaces, never appends
    assert count_records(path) == 3
    assert_same_features(next(iter_records(path)), bert_records(3, 8, seed=9)[0])
    with pytest.raises(RuntimeError, match="outside"):
        writer.write({"x": np.ones(1, np.int32)})


def _corrupt_file(tmp_path, keep: int, tail: bytes = b""):
    """A 20-record file cut ``keep`` bytes into record 17, followed by ``tail``."""
    records = bert_records(20, 16)
    path = tmp_path / "x" / "train.of_record-0"
    write_file(path, records)
    start = sum(8 + len(encode_record(r)) for r in records[:17])
    path.write_bytes(path.read_bytes()[:start + keep] + tail)
    return path


@pytest.mark.parametrize("keep, reason", [
    (3, r"record 17 is truncated \(its length header has 3 of 8 bytes\)"),
    (8 + 40, r"record 17 is truncated \(header says \d+ bytes, 40 left\)"),
])
def test_truncated_file_names_file_and_record(tmp_path, keep, reason):
    path = _corrupt_file(tmp_path, keep)
    for read in (lambda: list(iter_records(path)), lambda: count_records(path),
                 lambda: list(batches(path, 4))):
        with pytest.raises(DataError, match=reason) as info:
            read()
        message = str(info.value)
        assert message.startswith(f"{path}: record 17 ") and "\n" not in message


def test_garbage_names_file_and_record(tmp_path):
    for header, reason in ((-5, "impossible length header"), (2**40, "impossible length header"),
                           (2**20, r"truncated \(header says 1048576 bytes, 3 left\)")):
        path = _corrupt_file(tmp_path, 0, struct.pack("<q", header) + b"abc")
        with pytest.raises(DataError, match=f"{path}: record 17 .*{reason}"):
            count_records(path)
    path = _corrupt_file(tmp_path, 0, struct.pack("<q", 8) + b"\xff" * 8)  # protobuf rejects
    assert count_records(path) == 18  # framing is fine; only decoding sees the garbage
    for read in (lambda: list(iter_records(path)), lambda: list(batches(path, 5))):
        with pytest.raises(DataError, match=f"^{path}: record 17 is corrupt: .*cannot parse"):
            read()
    text = tmp_path / "notes.txt"
    text.write_text("this is not an OFRecord file\n")
    with pytest.raises(DataError, match=f"^{text}: record 0 "):
        list(iter_records(text))
    with pytest.raises(DataError, match="no such OFRecord file"):
        count_records(tmp_path / "missing")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.of_record-0"
    with RecordWriter(path):
        pass
    assert path.read_bytes() == b""
    assert list(iter_records(path)) == [] and count_records(path) == 0
    assert list(batches(path, 4, shuffle_buffer=8)) == []


# -- batches -------------------------------------------------------------------------------
def test_batches_shapes_trimming_and_index(tmp_path):
    records = bert_records(50, 16, seed=4)
    path = tmp_path / "train.of_record-0"
    write_file(path, records)
    got = list(batches(path, 8))
    assert [len(b["index"]) for b in got] == [8] * 6 + [2]
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in got]), np.arange(50))
    for batch in got:
        rows = [records[i] for i in batch["index"]]
        longest = max(int(r["input_mask"].sum()) for r in rows)
        assert batch["index"].dtype == np.int64
        for key in ("input_ids", "input_mask", "segment_ids"):
            assert batch[key].shape == (len(rows), longest) and batch[key].dtype == np.int32
            assert batch[key].flags.c_contiguous and batch[key].flags.writeable
            np.testing.assert_array_equal(batch[key], np.stack([r[key][:longest] for r in rows]))
        assert batch["input_mask"].sum(1).max() == longest
        for key in ("label_ids", "is_real_example"):
            assert batch[key].shape == (len(rows),)
            np.testing.assert_array_equal(batch[key], [r[key][0] for r in rows])
    assert {b["input_ids"].shape[1] for b in got} != {16}  # trimming did cut something
    untrimmed = list(batches(path, 8, trim=False, drop_last=True))
    assert len(untrimmed) == 6 and all(b["input_ids"].shape == (8, 16) for b in untrimmed)


def test_batches_float_labels(tmp_path):
    records = bert_records(10, 8, float_labels=True)
    path = tmp_path / "train.of_record-0"
    write_file(path, records)
    (batch,) = batches(path, 10)
    assert batch["label_ids"].dtype == np.float32
    np.testing.assert_array_equal(batch["label_ids"], [r["label_ids"][0] for r in records])


def test_batches_reject_ragged_records(tmp_path):
    path = tmp_path / "train.of_record-0"
    write_file(path, [{"input_ids": np.ones(4, np.int32)}, {"input_ids": np.ones(5, np.int32)}])
    with pytest.raises(DataError, match=f"{path}: feature 'input_ids' has different lengths"):
        list(batches(path, 2))
    path2 = tmp_path / "mixed.of_record-0"
    write_file(path2, [{"a": np.ones(2, np.int32)}, {"b": np.ones(2, np.int32)}])
    with pytest.raises(DataError, match=f"{path2}: record 1 does not have the features"):
        list(batches(path2, 2))


def _order(path, **kwargs) -> list[int]:
    return np.concatenate([b["index"] for b in batches(path, 7, **kwargs)]).tolist()


def test_shuffle_is_reproducible_per_seed_and_epoch(tmp_path):
    path = tmp_path / "train.of_record-0"
    write_file(path, bert_records(200, 8))
    first = _order(path, shuffle_buffer=50, seed=3, epoch=0)
    assert sorted(first) == list(range(200))
    in_file_order = sum(b == a + 1 for a, b in zip(first, first[1:]))
    assert in_file_order < 20  # ~200/50 expected from a real shuffle; file order gives 199
    assert _order(path, shuffle_buffer=50, seed=3, epoch=0) == first
    assert _order(path, shuffle_buffer=50, seed=3, epoch=1) != first
    assert _order(path, shuffle_buffer=50, seed=4, epoch=0) != first
    assert _order(path) == list(range(200))
    for batch in batches(path, 7, shuffle_buffer=50, seed=3):  # rows still match their index
        for row, index in enumerate(batch["index"]):
            assert batch["label_ids"][row] == bert_records(200, 8)[index]["label_ids"][0]
        break


def test_shuffle_buffer_is_bounded(tmp_path):
    path = tmp_path / "train.of_record-0"
    write_file(path, bert_records(300, 4))
    buffer = 20
    order = _order(path, shuffle_buffer=buffer, seed=0)
    # output k can only be one of the first k + buffer + 1 records read
    assert all(index <= k + buffer for k, index in enumerate(order[:300 - buffer]))
    assert max(abs(index - k) for k, index in enumerate(order)) > buffer // 2  # it does shuffle
    whole = _order(path, shuffle_buffer=1000)  # a buffer larger than the file: a permutation
    assert sorted(whole) == list(range(300)) and whole[:20] != list(range(20))
    # the shuffle is a stream: it yields from an endless input while holding `buffer` items
    rng = np.random.default_rng(0)
    head = list(itertools.islice(batching.shuffled(itertools.count(), buffer, rng), 1000))
    assert len(set(head)) == 1000 and all(v <= k + buffer for k, v in enumerate(head))


@pytest.mark.parametrize("shuffle_buffer", [0, 30])
def test_start_batch_resumes_the_same_sequence(tmp_path, shuffle_buffer):
    path = tmp_path / "train.of_record-0"
    write_file(path, bert_records(100, 12))
    kwargs = dict(shuffle_buffer=shuffle_buffer, seed=5, epoch=2)
    full = list(batches(path, 8, **kwargs))
    assert len(full) == 13
    for start in (0, 1, 6, 12, 13, 20):
        tail = list(batches(path, 8, start_batch=start, **kwargs))
        assert len(tail) == len(full[start:])
        for got, want in zip(tail, full[start:]):
            assert sorted(got) == sorted(want)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])


# -- OneFlow interoperability (OneFlow runtime only) -------------------------------------------
@pytest.fixture(scope="module")
def flow():
    if not backend.oneflow_installed():
        pytest.skip("OneFlow is not installed here; this runs in the .venv-oneflow runtime")
    return backend.load("oneflow", device="cpu").lib


def test_oneflow_native_reader_reads_kdlib_files(flow, tmp_path):
    rng = np.random.default_rng(6)
    n, length = 12, 16
    features = {
        "input_ids": rng.integers(0, 30522, (n, length)).astype(np.int32),
        "input_mask": rng.integers(0, 2, (n, length)).astype(np.int32),
        "segment_ids": rng.integers(0, 2, (n, length)).astype(np.int32),
        "label_ids": rng.random(n).astype(np.float32),  # an STS-B-style float label
        "is_real_example": np.ones(n, np.int32),
        "signed64": rng.choice(INT64_EDGES, (n, 3)).astype(np.int64),
        "double": rng.standard_normal((n, 2)),
    }
    with RecordWriter(record_file(tmp_path, "train")) as writer:
        writer.write_batch({k: v[:6] for k, v in features.items()})
        for i in range(6, n):
            writer.write({k: v[i] for k, v in features.items()})
    reader = flow.nn.OFRecordReader(
        str(tmp_path), batch_size=4, data_part_num=1, part_name_prefix="train.of_record-",
        part_name_suffix_length=-1, random_shuffle=False, shuffle_after_epoch=False)
    shapes = {"input_ids": (length,), "input_mask": (length,), "segment_ids": (length,),
              "label_ids": (1,), "is_real_example": (1,), "signed64": (3,), "double": (2,)}
    dtypes = {np.dtype(np.int32): flow.int32, np.dtype(np.int64): flow.int64,
              np.dtype(np.float32): flow.float32, np.dtype(np.float64): flow.float64}
    decoders = {k: flow.nn.OFRecordRawDecoder(k, shape=shapes[k], dtype=dtypes[v.dtype])
                for k, v in features.items()}
    for step in range(n // 4):
        records = reader()
        for key, decoder in decoders.items():
            got = decoder(records).numpy()
            want = features[key][4 * step:4 * step + 4].reshape(got.shape)
            assert got.dtype == want.dtype, key
            np.testing.assert_array_equal(got, want, err_msg=key)


def test_kdlib_reads_files_written_with_oneflow_protobuf(flow, tmp_path):
    from oneflow.core.record import record_pb2

    rng = np.random.default_rng(7)
    path = tmp_path / "train.of_record-0"
    want = []
    with open(path, "wb") as f:
        for _ in range(9):
            record = {"input_ids": rng.integers(-5, 30522, 10).astype(np.int32),
                      "big": rng.choice(INT64_EDGES, 4).astype(np.int64),
                      "label_ids": rng.random(1).astype(np.float32),
                      "double": rng.standard_normal(3), "raw": np.array([b"jpeg", b""], object)}
            message = record_pb2.OFRecord()
            message.feature["input_ids"].int32_list.value.extend(record["input_ids"].tolist())
            message.feature["big"].int64_list.value.extend(record["big"].tolist())
            message.feature["label_ids"].float_list.value.extend(record["label_ids"].tolist())
            message.feature["double"].double_list.value.extend(record["double"].tolist())
            message.feature["raw"].bytes_list.value.extend(record["raw"].tolist())
            payload = message.SerializeToString()
            f.write(struct.pack("<q", len(payload)) + payload)
            want.append(record)
            assert decode_record(payload).keys() == record.keys()
    assert count_records(path) == 9
    for got, record in zip(iter_records(path), want, strict=True):
        assert_same_features(got, record)
    batch = next(batches(path, 9, trim=False))
    np.testing.assert_array_equal(batch["input_ids"], np.stack([r["input_ids"] for r in want]))
    np.testing.assert_array_equal(batch["label_ids"], [r["label_ids"][0] for r in want])


def test_length_bucketing_covers_every_record_and_cuts_padding(tmp_path):
    path = tmp_path / "train.of_record-0"
    write_file(path, bert_records(400, 64, seed=3))
    plain = list(batches(path, 16, shuffle_buffer=100, seed=1, epoch=0))
    bucketed = list(batches(path, 16, shuffle_buffer=100, seed=1, epoch=0, bucket=10))
    seen = np.concatenate([b["index"] for b in bucketed])
    assert sorted(seen.tolist()) == list(range(400))                 # each record once per epoch
    tokens = lambda bs: sum(b["input_ids"].size for b in bs)        # noqa: E731  (after trimming)
    assert tokens(bucketed) < 0.8 * tokens(plain)
    again = list(batches(path, 16, shuffle_buffer=100, seed=1, epoch=0, bucket=10))
    assert all((a["index"] == b["index"]).all() for a, b in zip(bucketed, again))
    tail = list(batches(path, 16, shuffle_buffer=100, seed=1, epoch=0, bucket=10, start_batch=7))
    assert [b["index"].tolist() for b in tail] == [b["index"].tolist() for b in bucketed[7:]]
    other = list(batches(path, 16, shuffle_buffer=100, seed=1, epoch=1, bucket=10))
    assert [b["index"].tolist() for b in other] != [b["index"].tolist() for b in bucketed]


def test_bucketing_without_shuffle_is_sorted_within_pools(tmp_path):
    path = tmp_path / "dev.of_record-0"
    write_file(path, bert_records(100, 64, seed=4))
    got = list(batches(path, 10, bucket=5))
    assert sorted(np.concatenate([b["index"] for b in got]).tolist()) == list(range(100))
    lengths = [int(b["input_mask"].sum(1).max()) for b in got[:5]]
    assert lengths == sorted(lengths)
