"""Stage ofrecord_bert: subword OFRecords of every split of a task, by the teacher's tokenizer.

The folder keeps a copy of the tokenizer file (``vocab.txt`` or ``tokenizer.json``), as the word
records keep their vocabulary, so that every model trained on it can carry its tokeniser
(docs/architecture.md, "Model folders").

meta.json names the tokenizer file by its sha256 and a path that stays true when the checkout
moves: relative to the working directory when the file lies under it, else its file name alone.
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
    p.add_argument("--tokenizer", required=True,
                   help="the teacher's tokenizer: a tokenizer.json, or a BERT vocab.txt (uncased WordPiece)")
    p.add_argument("--max-length", type=int, required=True, help="tokens per example")
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    task = task_to_record(args)
    tokenizer = convert.subword(args.tokenizer, args.max_length)
    kept = convert.TOKENIZER_JSON if args.tokenizer.endswith(".json") else convert.VOCAB_TXT
    with atomic_dir(Path(args.out_dir)) as tmp:  # all splits appear together, or none
        counts = convert.convert_splits(
            task, args.glue_root, tmp, lambda chunks, path, desc: convert.convert_bert(
                task, chunks, path, tokenizer, desc=desc), "BERT", carve_from(args))
        shutil.copy(args.tokenizer, tmp / kept)
        convert.write_meta(tmp / "meta.json", task=task.name, kind="bert", max_length=args.max_length,
                           vocab=portable_path(args.tokenizer), vocab_sha256=file_digest(args.tokenizer),
                           num_labels=task.num_labels, counts=counts,
                           task_definition=task.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
