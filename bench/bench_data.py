"""Benchmark the data stages: ofrecord_bert throughput, the reader's memory, ``snakemake -n`` time.

    .venv/bin/python bench/bench_data.py [--examples 67000] [--max-length 128] [--no-reader]

* ofrecord_bert: ``--examples`` sentences (default 67,000, SST-2's train size) made from the
  built-in tweets corpus (each pass over the corpus after the first shuffles every tweet's words,
  so no text repeats), written as an SST-2 ``train.tsv`` plus an 872-row ``dev.tsv`` (SST-2's dev
  size) in a temporary GLUE folder, then ``workflow_scripts.ofrecord_bert.main`` timed end to end
  (both splits, all imports done before). The rate is (train + dev examples) / wall time of main.
  The phases are timed again on their own: reading the TSV, tokenising (``encode_batch``), and the
  rest (padding, record encoding, writing) as what remains.
* the streaming reader's peak RSS: ``bench/bench_reader.py`` in a child process (its own table).
* ``snakemake -n`` on the full DAG (every task, every student in config.yaml) on a temporary copy
  of the workflow: median wall time of 3 runs.

Prints a Markdown snippet; edits nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tokenizers

from kdlib.data import builtin, convert, tasks
from kdlib.models.pretrained import resolve_pretrained
from workflow_scripts import ofrecord_bert

REPO = Path(__file__).resolve().parents[1]
ALL_TASKS = "[" + ", ".join(tasks.TASKS) + "]"
SST2_DEV = 872


def sentences(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` (text, label) pairs from the tweets corpus; passes after the first shuffle words."""
    corpus = builtin.load_corpus(builtin.corpus_path())
    pairs = list(zip(corpus["sentence"], corpus["label"]))
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text, label = pairs[i % len(pairs)]
        if i >= len(pairs):
            words = text.split()
            rng.shuffle(words)
            text = " ".join(words)
        out.append((text, int(label)))
    return out


def write_sst2(root: Path, rows: list[tuple[str, int]]) -> None:
    folder = root / "SST-2"
    folder.mkdir(parents=True)
    for split, part in [("train", rows[:-SST2_DEV]), ("dev", rows[-SST2_DEV:])]:
        with open(folder / f"{split}.tsv", "w", encoding="utf-8") as fh:
            fh.write("sentence\tlabel\n")
            fh.writelines(f"{t}\t{y}\n" for t, y in part)


@contextlib.contextmanager
def clock(into: dict, name: str):
    """Wall and CPU seconds (all threads of this process) of the block."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    into[name] = (time.perf_counter() - wall, time.process_time() - cpu)


def bench_convert(n_train: int, max_length: int) -> dict:
    rows = sentences(n_train + SST2_DEV)
    vocab = resolve_pretrained("builtin:minilm-l6") / "vocab.txt"
    times: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "glue", Path(tmp) / "bert"
        write_sst2(root, rows)
        argv = ["--task", "sst2", "--glue-root", str(root), "--out-dir", str(out),
                "--tokenizer", str(vocab), "--max-length", str(max_length)]
        with contextlib.redirect_stderr(io.StringIO()), clock(times, "main"):
            rc = ofrecord_bert.main(argv)
        assert rc == 0, "ofrecord_bert failed"
        counts = json.loads((out / "meta.json").read_text())["counts"]
        size_mb = sum(p.stat().st_size for p in out.iterdir()) / 1e6
        # the phases on their own (train split only)
        task, train = tasks.get_task("sst2"), root / "SST-2" / "train.tsv"
        with clock(times, "read"):
            chunks = list(tasks.read_split(task, train))
        tokenizer = convert.wordpiece(vocab, max_length)
        with clock(times, "tokenize"):
            for chunk in chunks:
                tokenizer.encode_batch(convert._texts(chunk))
    words = sum(len(t.split()) for t, _ in rows) / len(rows)
    return {"counts": counts, "times": times, "size_mb": size_mb, "words": words,
            "total": sum(counts.values())}


def bench_reader(records: int) -> list[str]:
    """bench_reader.py's table rows about the reader's memory."""
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_reader.py"),
                           "--records", str(records)], check=True, capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if "RSS" in line or "batches(" in line]


def bench_dry_run(runs: int = 3) -> tuple[list[float], int]:
    """Wall seconds of ``snakemake -n`` on the full DAG, and its job count."""
    python = REPO / ".venv" / "bin" / "python"
    runtimes = {"torch": str(python), "oneflow": str(REPO / ".venv-oneflow" / "bin" / "python")}
    seconds, jobs = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        wf = Path(tmp)
        shutil.copy(REPO / "Snakefile", wf)
        shutil.copy(REPO / "config.yaml", wf)
        shutil.copytree(REPO / "rules", wf / "rules")
        cmd = [str(REPO / ".venv" / "bin" / "snakemake"), "-n", "-s", str(wf / "Snakefile"),
               "--directory", str(wf), "--cores", "2", "--config",
               "runtimes=" + json.dumps(runtimes), f"tasks={ALL_TASKS}"]
        for _ in range(runs):
            start = time.perf_counter()
            done = subprocess.run(cmd, cwd=wf, capture_output=True, text=True)
            seconds.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(f"snakemake -n failed:\n{done.stderr[-2000:]}")
        for line in (done.stdout + done.stderr).splitlines():
            if line.startswith("total"):
                jobs = int(line.split()[-1])
    return seconds, jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=67_000, help="train examples")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--reader-records", type=int, default=400_000)
    parser.add_argument("--no-reader", action="store_true", help="skip bench_reader.py")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    conv = bench_convert(args.examples, args.max_length)
    dry, jobs = bench_dry_run()
    reader = [] if args.no_reader else bench_reader(args.reader_records)
    load_end = os.getloadavg()[0]

    t = conv["times"]
    wall, cpu = t["main"]
    rate = conv["total"] / wall
    other = (wall - t["read"][0] - t["tokenize"][0], cpu - t["read"][1] - t["tokenize"][1])

    def row(name, wc):
        return (f"| {name} | {wc[0]:.2f} s | {wc[1]:.2f} s | {wc[0] / wall:.0%} |")

    lines = [
        "### Data stages",
        "",
        f"`{' '.join([os.path.relpath(sys.executable), *sys.argv])}` (Python "
        f"{platform.python_version()}, tokenizers {tokenizers.__version__}, "
        f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', 'unset')}, "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at the start and {load_end:.1f} at the "
        "end)",
        "",
        f"**ofrecord_bert**: {conv['counts']['train']:,} train + {conv['counts']['dev']:,} dev "
        f"tweets-corpus sentences (~{conv['words']:.0f} words each) as an SST-2 TSV, max length "
        f"{args.max_length}, MiniLM vocab; `ofrecord_bert.main` end to end: "
        f"**{rate:,.0f} examples/s** (train + dev examples / wall time; "
        f"{conv['total'] / cpu:,.0f} examples per CPU-second), {conv['size_mb']:.0f} MB written. "
        "Target: >= 20,000 examples/s.",
        "",
        "| phase (train split) | wall | CPU | share of main's wall |",
        "| --- | --- | --- | --- |",
        row("read the TSV (`read_split`)", t["read"]),
        row("WordPiece (`encode_batch`)", t["tokenize"]),
        row("the rest: padding, record encoding, writing, dev split", other),
        row("`ofrecord_bert.main`", t["main"]),
        "",
        f"**snakemake -n**, full DAG (all {len(tasks.TASKS)} tasks, every student in "
        f"config.yaml, {jobs} jobs): median "
        f"**{statistics.median(dry):.2f} s** of {len(dry)} runs "
        f"({', '.join(f'{s:.2f}' for s in dry)} s). Target: < 3 s.",
    ]
    if reader:
        lines += ["", f"**Streaming reader** (`bench/bench_reader.py --records "
                  f"{args.reader_records}`):", "", "| measure | value |", "| --- | --- |", *reader]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
