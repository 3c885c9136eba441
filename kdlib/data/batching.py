"""Training and evaluation batches from OFRecord files, with bounded memory.

A streaming shuffle (:func:`shuffled`), length bucketing (batches cut from length-sorted pools),
trimming to the longest real sequence (:func:`trim_batch`), rank sharding for data-parallel
training (:func:`shard_rows`), and the backend tensors a model takes (:func:`model_inputs`)::

    for batch in batches(path, 32, shuffle_buffer=10_000, seed=s, epoch=e, bucket=50):
        batch["input_ids"]                        # (B, L') int32, L' = longest real length
        model(**model_inputs(B, batch))
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator

import numpy as np

from ..errors import DataError
from .ofrecord import decode_at, iter_payloads
from .wire import NotCanonical, decode_values, split_record

SEQUENCE_FEATURES = ("input_ids", "input_mask", "segment_ids")  # (N, L) in a batch, trimmed
SCALAR_FEATURES = ("label_ids", "is_real_example")  # one value per record: (N,) in a batch


def shuffled(items: Iterable, buffer_size: int, rng: np.random.Generator) -> Iterator:
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
    """Cut the (N, L) sequence features to the batch's longest real sequence (at least 1)."""
    if "input_mask" not in batch or batch["input_mask"].ndim != 2:
        return batch
    real = np.flatnonzero(batch["input_mask"].any(axis=0))  # = mask.sum(1).max() for prefix masks
    length = int(real[-1]) + 1 if real.size else 1
    return {key: np.ascontiguousarray(value[:, :length])
            if key in SEQUENCE_FEATURES and value.ndim == 2 else value
            for key, value in batch.items()}


def _collate(path, batch: list[tuple[int, bytes]], trim: bool) -> dict[str, np.ndarray]:
    """Decode a batch of ``(index, payload)`` into stacked arrays.

    Sequence features become (N, L); ``label_ids`` / ``is_real_example`` (N,); ``index`` (N,).
    Values are decoded once per feature for the whole batch.
    """
    columns: dict[str, list] = {}
    numbers: dict[str, int] = {}
    try:
        for row, (_, payload) in enumerate(batch):
            split = split_record(payload)
            if len(split) != len(columns) and row:
                raise NotCanonical
            for key, number, chunk in split:
                column = columns.setdefault(key, [])
                if numbers.setdefault(key, number) != number or len(column) != row:
                    raise NotCanonical
                column.append(chunk)
        decoded = {key: decode_values(numbers[key], column) for key, column in columns.items()}
    except NotCanonical:  # unusual or corrupt record: decode one by one for a precise error
        records = [decode_at(path, index, payload) for index, payload in batch]
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

    Each batch maps every feature to a stacked array: (N, L) for lists, (N,) for
    ``label_ids`` and ``is_real_example``, plus ``index`` int64 (N,), each record's 0-based
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
    stream: Iterable = iter_payloads(path)
    rng = None
    if shuffle_buffer > 0:
        rng = np.random.default_rng([int(seed), int(epoch)])
        stream = shuffled(stream, int(shuffle_buffer), rng)
    for emitted, batch in enumerate(_grouped(stream, batch_size, int(bucket), rng)):
        if drop_last and len(batch) < batch_size:
            continue
        if emitted >= start_batch:
            out = _collate(path, batch, trim)
            yield out if shard is None else shard_rows(out, *shard)

def model_inputs(B, batch: dict) -> dict:
    """Backend tensors for ``model(**inputs)`` from a numpy batch (BERT or word records)."""
    inputs = {"input_ids": B.tensor(batch["input_ids"]),
              "attention_mask": B.tensor(batch["input_mask"])}
    if "segment_ids" in batch:
        inputs["token_type_ids"] = B.tensor(batch["segment_ids"])
    return inputs
