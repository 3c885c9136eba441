"""Stages evaluate_teacher and evaluate_student: a checkpoint's dev metrics and size as JSON, and its
predictions."""
from __future__ import annotations

import json
import sys

from kdlib.data import tasks
from kdlib.evaluate import eval_json
from kdlib.io import write_text
from workflow_scripts._cli import add_runtime_args, backend_from, guarded, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--name", required=True, help="teacher, or the student's name in config.yaml")
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--records", required=True, help="record folder the model reads")
    p.add_argument("--out", required=True, help="the JSON to write")
    p.add_argument("--predictions", required=True, help="the .npz of dev logits to write")
    p.add_argument("--reference", help="the teacher's eval JSON, for the retained share of its metric")
    add_runtime_args(p)
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    task = tasks.task_of_records(args.records, args.task)
    reference = eval_json.read_eval(args.reference) if args.reference else None
    B = backend_from(args)
    result, predictions = eval_json.build(B, task, args.model, args.records, args.name, reference,
                                          batch_size=args.eval_batch_size)
    eval_json.write_predictions(args.predictions, predictions)
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    extra = f", {100 * result['retained']:.1f}% of the teacher's" if result.get("retained") else ""
    print(f"{args.name} on {task.name}: dev {task.metric} {result['score']:.4f}{extra}, "
          f"{result['parameters']:,} parameters; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
