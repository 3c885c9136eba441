"""Stage ofrecord_transfer: a task's record folder with a transfer set mixed into its training
records, e.g. data/ofrecord/tweets/bert64+unlabeled/ from bert64/ and data/transfer/tweets/unlabeled.tsv.

The transfer texts are converted like the folder's own records (with the folder's copy of its
tokenizer file and its length, or words with its vocab.txt), marked ``is_real_example = 0``
(their label is a placeholder that no loss reads) and interleaved with the labelled training
records in a seeded order (:func:`kdlib.data.transfer.mix`). The other splits, the tokenizer file
and meta.json are copied, meta.json with the new counts and the transfer set's name, so a student
reads the folder like any other.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from kdlib.data import convert, tasks, transfer
from kdlib.data.ofrecord import PART_SUFFIX, record_file
from kdlib.errors import DataError
from kdlib.io import atomic_dir, read_json
from workflow_scripts._cli import guarded, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--records", required=True,
                   help="the task's record folder, e.g. data/ofrecord/tweets/bert64")
    p.add_argument("--transfer", required=True, help="the transfer set's TSV")
    p.add_argument("--name", required=True, help="the transfer set's name")
    p.add_argument("--seed", type=int, required=True, help="seed of the interleaving")
    p.add_argument("--out-dir", required=True, help="e.g. data/ofrecord/tweets/bert64+unlabeled")
    return p.parse_args(argv)


def convert_transfer(task, meta: dict, records: Path, tsv: str, out: Path) -> int:
    pairs = task.text_b is not None
    label = 0.0 if task.is_regression else 0
    chunks = transfer.read_transfer(tsv, pairs, label)
    desc = f"{task.name} transfer"
    if meta.get("kind") == "lstm":
        vocab = convert.read_word_vocab(records / "vocab.txt")
        return convert.convert_lstm(task, chunks, out, vocab, int(meta["max_length"]), desc, labelled=False)
    if meta.get("kind") == "bert":
        tokenizer = convert.subword(convert.records_tokenizer(records), int(meta["max_length"]))
        return convert.convert_bert(task, chunks, out, tokenizer, desc, labelled=False)
    raise DataError(f"{records}/meta.json: records of kind {meta.get('kind')!r}, not bert or lstm")


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    records = Path(args.records)
    task = tasks.task_of_records(records, args.task)
    meta = read_json(records / "meta.json")
    with atomic_dir(Path(args.out_dir)) as tmp:
        converted = tmp / ".transfer.of_record"
        n = convert_transfer(task, meta, records, args.transfer, converted)
        counts = transfer.mix(record_file(records, "train"), converted, record_file(tmp, "train"),
                              args.seed)
        converted.unlink()
        for path in records.iterdir():
            if path.name in convert.TOKENIZER_KINDS.values() or (path.name.endswith(PART_SUFFIX)
                                            and path.name != record_file(records, "train").name):
                shutil.copy(path, tmp / path.name)
        meta["counts"] = {**meta["counts"], "train": counts["labelled"] + n}
        meta["transfer"] = {"name": args.name, "labelled": counts["labelled"], "transfer": n}
        convert.write_meta(tmp / "meta.json", **meta)
    print(f"{task.name} + transfer set {args.name}: {counts['labelled']} labelled and {n} transfer "
          f"training records, mixed; wrote {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
