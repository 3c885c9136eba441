"""Stage ofrecord_bert: WordPiece OFRecords of every split of a task, with the teacher's vocab.

The folder keeps a copy of the vocabulary (``vocab.txt``), as the word records do, so that every
model trained on it can carry its tokeniser (docs/architecture.md, "Model folders").

meta.json names the vocabulary by its sha256 and a path that stays true when the checkout moves:
relative to the working directory when the file lies under it, else its file name alone.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from kdlib.data import convert
from kdlib.io import atomic_dir, file_digest, portable_path
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
    p.add_argument("--out-dir", required=True, help="e.g. data/ofrecord/sst2/bert128")
    p.add_argument("--vocab", required=True, help="the teacher's vocab.txt")
    p.add_argument("--max-length", type=int, required=True, help="WordPiece pieces per example")
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    task = task_to_record(args)
    tokenizer = convert.wordpiece(args.vocab, args.max_length)
    with atomic_dir(Path(args.out_dir)) as tmp:  # all splits appear together, or none
        counts = convert.convert_splits(
            task, args.glue_root, tmp, lambda chunks, path, desc: convert.convert_bert(
                task, chunks, path, tokenizer, desc=desc), "BERT", carve_from(args))
        shutil.copy(args.vocab, tmp / "vocab.txt")
        convert.write_meta(tmp / "meta.json", task=task.name, kind="bert", max_length=args.max_length,
                           vocab=portable_path(args.vocab), vocab_sha256=file_digest(args.vocab),
                           num_labels=task.num_labels, counts=counts,
                           task_definition=task.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
