"""Benchmark kdlib.data.ofrecord: codec speed and streaming a MNLI-sized file with bounded memory.

    .venv/bin/python bench/bench_reader.py [--records 400000] [--length 128]

Writes a BERT-layout OFRecord file (five int32 features, max length 128) into a temporary
folder, then streams it through ``batches(..., batch_size=32, shuffle_buffer=10000)`` in a fresh
child process, so that the peak RSS it reports belongs to the reader alone. Prints a Markdown
snippet for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import ofrecord_reference  # noqa: E402  (the protobuf reference encoder lives with the tests)

from kdlib.data import ofrecord, protobuf
from kdlib.data.batching import batches
from kdlib.data.ofrecord import RecordWriter
from kdlib.data.wire import decode_record, encode_batch, encode_record


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def synthetic_bert(n: int, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n BERT examples; real lengths ~ N(40, 20) clipped to [8, length] (GLUE pairs are short)."""
    real = np.clip(rng.normal(40, 20, n).astype(np.int64), 8, length)  # (n,)
    positions = np.arange(length)[None, :]  # (1, L)
    mask = (positions < real[:, None]).astype(np.int32)  # (n, L)
    ids = rng.integers(1000, 30522, (n, length)).astype(np.int32) * mask
    segments = ((positions >= real[:, None] // 2) & (mask == 1)).astype(np.int32)
    return {"input_ids": ids, "input_mask": mask, "segment_ids": segments,
            "label_ids": rng.integers(0, 3, n).astype(np.int32),
            "is_real_example": np.ones(n, np.int32)}


def per_record_us(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items) * 1e6


def peak_hwm_mb() -> float:
    """Peak RSS of this process image from /proc (VmHWM), to cross-check ru_maxrss."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stream(path: str, batch_size: int, shuffle_buffer: int) -> dict:
    """Child process: stream the file once and report RSS and speed."""
    # Warm the code paths (imports, protobuf classes) before measuring the baseline RSS.
    next(batches(path, batch_size))
    before = rss_mb()
    start = time.perf_counter()
    records = 0
    for batch in batches(path, batch_size, shuffle_buffer=shuffle_buffer, seed=0, epoch=0):
        records += len(batch["index"])
    seconds = time.perf_counter() - start
    return {"records": records, "seconds": seconds, "rss_before_mb": before,
            "peak_rss_mb": peak_rss_mb(), "peak_hwm_mb": peak_hwm_mb()}


def write(path: str, n_records: int, length: int) -> dict:
    """Child process: time the codecs, then write the benchmark file."""
    rng = np.random.default_rng(0)
    sample = synthetic_bert(20_000, length, rng)
    rows = [{k: v[i].reshape(-1) for k, v in sample.items()} for i in range(20_000)]
    out = {"encode_us": per_record_us(encode_record, rows),
           "encode_pb_us": per_record_us(ofrecord_reference.encode_with_protobuf, rows[:5000])}
    start = time.perf_counter()
    payloads = encode_batch(sample)
    out["encode_batch_us"] = (time.perf_counter() - start) / len(payloads) * 1e6
    out["decode_us"] = per_record_us(decode_record, payloads)
    out["decode_pb_us"] = per_record_us(protobuf.decode_with_protobuf, payloads[:5000])
    del rows, payloads

    chunk, written, seconds = 8192, 0, 0.0
    with RecordWriter(path) as writer:
        while written < n_records:
            features = synthetic_bert(min(chunk, n_records - written), length, rng)
            start = time.perf_counter()
            writer.write_batch(features)
            seconds += time.perf_counter() - start
            written += len(features["input_ids"])
    out["write_rate"] = n_records / seconds
    out["size_mb"] = Path(path).stat().st_size / 1e6
    start = time.perf_counter()
    assert ofrecord.count_records(path) == n_records
    out["count_s"] = time.perf_counter() - start
    return out


def child(*args: str) -> dict:
    """Run this script in a fresh process (so each phase's peak RSS is its own)."""
    done = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True,
                          text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shuffle-buffer", type=int, default=10_000)
    parser.add_argument("--stream", help=argparse.SUPPRESS)  # child mode: path to stream
    parser.add_argument("--write", help=argparse.SUPPRESS)  # child mode: path to write
    args = parser.parse_args()
    if args.stream:
        print(json.dumps(stream(args.stream, args.batch_size, args.shuffle_buffer)))
        return
    if args.write:
        print(json.dumps(write(args.write, args.records, args.length)))
        return

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(ofrecord.record_file(tmp, "train"))
        codec = child("--write", path, "--records", str(args.records),
                      "--length", str(args.length))
        result = child("--stream", path, "--batch-size", str(args.batch_size),
                       "--shuffle-buffer", str(args.shuffle_buffer))

    import google.protobuf
    from google.protobuf.internal import api_implementation

    rate = result["records"] / result["seconds"]
    lines = [
        "### OFRecord codec and streaming reader",
        "",
        f"`{' '.join([os.path.relpath(sys.executable), *sys.argv])}` (Python "
        f"{platform.python_version()}, numpy {np.__version__}, protobuf "
        f"{google.protobuf.__version__} ({api_implementation.Type()}), "
        f"{platform.processor() or platform.machine()})",
        "",
        f"File: {args.records:,} BERT records, max length {args.length}, real lengths "
        f"~N(40, 20) clipped to [8, {args.length}], {codec['size_mb']:.0f} MB. Each phase runs "
        "in its own process. "
        f"Load average at the start: {load:.1f} on {os.cpu_count()} CPUs.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| `encode_record` (one record at a time) | {codec['encode_us']:.1f} µs/record |",
        f"| `encode_batch` (8,192-record chunks) | {codec['encode_batch_us']:.1f} µs/record |",
        f"| `RecordWriter.write_batch`, file included | "
        f"{codec['write_rate']:,.0f} records/s |",
        f"| protobuf message build + serialise (reference) | "
        f"{codec['encode_pb_us']:.1f} µs/record |",
        f"| `decode_record` | {codec['decode_us']:.1f} µs/record |",
        f"| protobuf parse + to numpy (reference) | {codec['decode_pb_us']:.1f} µs/record |",
        f"| `count_records` | {codec['count_s']:.2f} s |",
        f"| `batches(batch_size={args.batch_size}, shuffle_buffer={args.shuffle_buffer:,})` | "
        f"{rate:,.0f} records/s ({1e6 / rate:.1f} µs/record) |",
        f"| reader RSS before streaming | {result['rss_before_mb']:.0f} MB |",
        f"| reader peak RSS (ru_maxrss) | {result['peak_rss_mb']:.0f} MB "
        f"(+{result['peak_rss_mb'] - result['rss_before_mb']:.0f} MB while streaming; "
        f"VmHWM {result['peak_hwm_mb']:.0f} MB) |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
