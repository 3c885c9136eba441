"""Stage transfer_set: data/transfer/<task>/<name>.tsv, text for the teacher to label
(:mod:`kdlib.data.transfer`): unlabeled in-domain text and augmented variants of the training
texts, without any dev or training text and without duplicates."""
from __future__ import annotations

import sys

from kdlib.data import tasks, transfer
from workflow_scripts._cli import add_custom_arg, guarded, load_hparams, stage_parser, task_to_record


def parse_args(argv=None):
    p = stage_parser(__doc__)
    add_custom_arg(p)
    p.add_argument("--glue-root", required=True, help="folder of the task's TSV folder, e.g. data/glue")
    p.add_argument("--name", required=True, help="the transfer set's name in config.yaml")
    p.add_argument("--definition", required=True, help="its entry under transfer: as JSON")
    p.add_argument("--out", required=True, help="e.g. data/transfer/tweets/unlabeled.tsv")
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    task = task_to_record(args)
    spec = transfer.TransferSpec.from_dict(args.name, load_hparams(args.definition, "transfer_set",
                                                                   "--definition"))

    def rows(split):
        return transfer.rows_of(tasks.read_split(task, tasks.glue_file(args.glue_root, task, split),
                                                 split=split))
    train = list(rows("train"))
    held_out = (row for split in task.splits if split != "train" for row in rows(split))
    pairs = task.text_b is not None
    unlabeled = ()
    if spec.unlabeled == "builtin":
        unlabeled = transfer.builtin_unlabeled(task.name)
    elif spec.unlabeled:
        unlabeled = transfer.read_unlabeled(spec.unlabeled, pairs)
    counts = transfer.build(spec, train, held_out, args.out, pairs, unlabeled)
    print(f"{transfer.describe(args.name, counts)}; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
