"""Stage import_teacher: the user's fine-tuned classifier (config teacher.finetuned) as the task's
teacher folder, its labels matched to the task's and its validation score checked against the
majority label's (:func:`kdlib.distill.teacher.import_finetuned`). No fine-tuning runs."""
from __future__ import annotations

import sys

from kdlib.data import tasks
from kdlib.distill import teacher
from workflow_scripts._cli import add_runtime_args, backend_from, guarded, json_arg, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--finetuned", required=True, help="the fine-tuned HuggingFace classifier's folder")
    p.add_argument("--records", required=True, help="the task's records, made with its tokenizer")
    p.add_argument("--label-map", required=True, help="teacher.label_map as JSON ({} = none)")
    p.add_argument("--out", required=True, help="the teacher folder to write")
    add_runtime_args(p)
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    task = tasks.task_of_records(args.records, args.task)
    B = backend_from(args)
    summary = teacher.import_finetuned(B, task, args.finetuned, args.records, args.out,
                                       batch_size=args.eval_batch_size,
                                       label_map=json_arg(args.label_map, "--label-map"))
    scores = ", ".join(f"{k} {v}" for k, v in summary.items())
    print(f"teacher of {task.name} from {args.finetuned}: validation {scores}; wrote {args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
