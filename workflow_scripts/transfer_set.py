"""Stage transfer_set: data/transfer/<task>/<name>.tsv, text for the teacher to label
(:mod:`kdlib.data.transfer`): unlabeled in-domain text and augmented variants of the training
texts, without any dev, validation or training text and without duplicates. ``augment: tinybert`` reads the
pretrained folder (``--pretrained``) and runs its masked LM, if it has one, on ``--backend``."""
from __future__ import annotations

import sys

from kdlib.data import augment_tinybert, transfer, validation
from kdlib.data.task import VALIDATION
from kdlib.models.pretrained import resolve_pretrained
from workflow_scripts._cli import (
    add_custom_arg,
    add_validation_args,
    backend_from,
    carve_from,
    guarded,
    load_section,
    stage_parser,
    task_to_record,
)


def parse_args(argv=None):
    p = stage_parser(__doc__)
    add_custom_arg(p)
    add_validation_args(p)
    p.add_argument("--glue-root", required=True, help="folder of the task's TSV folder, e.g. data/glue")
    p.add_argument("--name", required=True, help="the transfer set's name in config.yaml")
    p.add_argument("--definition", required=True, help="its entry under transfer: as JSON")
    p.add_argument("--out", required=True, help="e.g. data/transfer/tweets/unlabeled.tsv")
    tiny = p.add_argument_group("augment: tinybert")
    tiny.add_argument("--pretrained", default=None, help="the pretrained BERT folder (teacher.pretrained)")
    tiny.add_argument("--backend", default="auto", help="auto | oneflow | torch, for its masked LM")
    tiny.add_argument("--device", default="auto", help="auto | cpu | cuda")
    tiny.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16 (mixed precision)")
    tiny.add_argument("--threads", type=int, default=0, help="CPU threads (0 = library default)")
    tiny.add_argument("--batch-size", type=int, default=128, help="masked copies per forward pass")
    return p.parse_args(argv)


def tinybert_candidates(spec, args):
    """The candidate words of ``augment: tinybert`` (None for another set); the backend is
    loaded only for a folder with a masked-LM head."""
    if spec.augment != "tinybert" or not args.pretrained:
        return None                               # build refuses a tinybert set without them
    folder = resolve_pretrained(args.pretrained)      # a folder, or builtin:<name> by hand
    return augment_tinybert.Candidates(folder, spec.candidates, lambda: backend_from(args),
                                       batch_size=args.batch_size)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    task = task_to_record(args)
    spec = transfer.TransferSpec.from_dict(args.name, load_section(args.definition, "transfer_set",
                                                                   "--definition"))

    carve = carve_from(args)
    mask = None if task.validation_file else validation.task_mask(task, args.glue_root, carve)

    def rows(split):       # the carve computed once, for train and validation
        return transfer.rows_of(validation.split_chunks(task, args.glue_root, split, carve, mask))
    train = list(rows("train"))
    held_out = (row for split in task.record_splits if split not in ("train", VALIDATION)
                for row in rows(split))
    pairs = task.text_b is not None
    unlabeled = ()
    if spec.unlabeled == "builtin":
        unlabeled = transfer.builtin_unlabeled(task.name)
    elif spec.unlabeled:
        unlabeled = transfer.read_unlabeled(spec.unlabeled, pairs)
    counts = transfer.build(spec, train, held_out, args.out, pairs, unlabeled,
                            tinybert=tinybert_candidates(spec, args), validation_rows=rows(VALIDATION))
    print(f"{transfer.describe(args.name, counts)}; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
