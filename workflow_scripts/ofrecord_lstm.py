"""Stage ofrecord_lstm: word-level OFRecords and the word vocabulary (from the training rows only,
validation carved out) of a task."""
from __future__ import annotations

import sys
from pathlib import Path

from kdlib.data import convert, validation
from kdlib.io import atomic_dir
from workflow_scripts._cli import (
    add_custom_arg,
    add_validation_args,
    carve_from,
    guarded,
    stage_parser,
    task_to_record,
)


def parse_args(argv=None):
    p = stage_parser(__doc__)
    add_custom_arg(p)
    add_validation_args(p)
    p.add_argument("--glue-root", required=True, help="folder of the task's TSV folder, e.g. data/glue")
    p.add_argument("--out-dir", required=True, help="e.g. data/ofrecord/sst2/lstm32")
    p.add_argument("--max-length", type=int, required=True, help="words per example")
    p.add_argument("--vocab-size", type=int, required=True, help="most frequent training words kept")
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    task = task_to_record(args)
    carve = carve_from(args)
    vocab = convert.build_vocab(validation.split_chunks(task, args.glue_root, "train", carve),
                                args.vocab_size)         # the training rows' words alone
    with atomic_dir(Path(args.out_dir)) as tmp:  # all splits appear together, or none
        counts = convert.convert_splits(
            task, args.glue_root, tmp, lambda chunks, path, desc: convert.convert_lstm(
                task, chunks, path, vocab, args.max_length, desc=desc), "word", carve)
        convert.write_vocab(vocab, tmp / "vocab.txt")
        convert.write_meta(tmp / "meta.json", task=task.name, kind="lstm", max_length=args.max_length,
                           vocab_size=len(vocab), num_labels=task.num_labels, counts=counts,
                           task_definition=task.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
