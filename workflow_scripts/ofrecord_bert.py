"""Stage ofrecord_bert: WordPiece OFRecords of every split of a task, with the teacher's vocab.

meta.json names the vocabulary by its sha256 and a path that stays true when the checkout moves:
relative to the working directory when the file lies under it, else its file name alone.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

from kdlib.data import convert, ofrecord, tasks
from kdlib.io import atomic_dir
from workflow_scripts._cli import guarded


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True)
    p.add_argument("--glue-root", default="data/glue")
    p.add_argument("--out-dir", required=True, help="e.g. data/ofrecord/sst2/bert128")
    p.add_argument("--vocab", required=True, help="the teacher's vocab.txt")
    p.add_argument("--max-length", type=int, default=128)
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    task = tasks.get_task(args.task)
    tokenizer = convert.wordpiece(args.vocab, args.max_length)
    out = Path(args.out_dir)
    with atomic_dir(out) as tmp:  # all splits appear together, or none
        counts = {}
        for split in task.splits:
            skipped = tasks.Skipped()
            chunks = tasks.read_split(task, tasks.glue_file(args.glue_root, task, split),
                                      skipped=skipped)
            counts[split] = convert.convert_bert(task, chunks, ofrecord.record_file(tmp, split),
                                                 tokenizer, desc=f"{task.name} {split}")
            if skipped.count:
                print(f"{task.name} {split}: {skipped}", file=sys.stderr)
            print(f"{task.name} {split}: {counts[split]} BERT records", file=sys.stderr)
        convert.write_meta(tmp / "meta.json", task=task.name, kind="bert", max_length=args.max_length,
                           vocab=portable_path(args.vocab), vocab_sha256=sha256(args.vocab),
                           num_labels=task.num_labels, counts=counts)
    return 0


def portable_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies under it, else its file name."""
    full, here = Path(os.path.abspath(path)), Path(os.path.abspath(os.curdir))
    return full.relative_to(here).as_posix() if here in full.parents else full.name


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


if __name__ == "__main__":
    sys.exit(main())
