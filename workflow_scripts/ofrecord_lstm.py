"""Stage ofrecord_lstm: word-level OFRecords and the word vocabulary (from train only) of a task."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdlib.data import convert, ofrecord, tasks
from kdlib.io import atomic_dir
from workflow_scripts._cli import guarded


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", required=True)
    p.add_argument("--glue-root", default="data/glue")
    p.add_argument("--out-dir", required=True, help="e.g. data/ofrecord/sst2/lstm32")
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--vocab-size", type=int, default=10000)
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    task = tasks.get_task(args.task)
    out = Path(args.out_dir)
    train = tasks.glue_file(args.glue_root, task, "train")
    vocab = convert.build_vocab(tasks.read_split(task, train), args.vocab_size)
    with atomic_dir(out) as tmp:  # all splits appear together, or none
        counts = {}
        for split in task.splits:  # read_split skips the same rows as for the BERT records
            skipped = tasks.Skipped()
            chunks = tasks.read_split(task, tasks.glue_file(args.glue_root, task, split),
                                      skipped=skipped)
            counts[split] = convert.convert_lstm(task, chunks, ofrecord.record_file(tmp, split), vocab,
                                                 args.max_length, desc=f"{task.name} {split}")
            if skipped.count:
                print(f"{task.name} {split}: {skipped}", file=sys.stderr)
            print(f"{task.name} {split}: {counts[split]} word records", file=sys.stderr)
        convert.write_vocab(vocab, tmp / "vocab.txt")
        convert.write_meta(tmp / "meta.json", task=task.name, kind="lstm", max_length=args.max_length,
                           vocab_size=len(vocab), num_labels=task.num_labels, counts=counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
