"""Stage cache_teacher_logits: the fine-tuned teacher's logits for every training record (the
students learn from them; validation and dev are left alone); for an ensemble (--members), the log
of the teachers' mean probabilities."""
from __future__ import annotations

import sys

from kdlib.data import tasks
from kdlib.distill import logit_cache
from kdlib.errors import ConfigError
from workflow_scripts._cli import add_runtime_args, backend_from, guarded, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--teacher", required=True, help="fine-tuned teacher folder")
    p.add_argument("--records", required=True, help="the teacher's BERT record folder")
    p.add_argument("--out", required=True, help="the .npz to write")
    p.add_argument("--members", nargs="*", default=[], metavar="FOLDER=RECORDS",
                   help="the other teachers of an ensemble, each with its record folder")
    add_runtime_args(p)
    return p.parse_args(argv)


def member_arg(text: str) -> tuple[str, str]:
    folder, sep, records = text.partition("=")
    if not sep or not folder or not records:
        raise ConfigError(f"--members: {text!r} is not FOLDER=RECORDS")
    return folder, records


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    task = tasks.task_of_records(args.records, args.task)
    B = backend_from(args)
    members = [member_arg(m) for m in args.members]
    rows = logit_cache.cache_logits(B, task, args.teacher, args.records, args.out,
                                    batch_size=args.eval_batch_size, members=members)
    print(f"teacher logits for {task.name}: {rows}; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
