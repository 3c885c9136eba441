"""Stage export_teacher_layers: a student's initial checkpoint made of chosen teacher layers, from
the fine-tuned teacher (``--teacher``, ``init: teacher``) or from the pretrained folder it was
fine-tuned from (``--pretrained``, ``init: pretrained``; the task's records give the label count)."""
from __future__ import annotations

import importlib.util
import sys

from kdlib.distill.layers import export_layers, export_pretrained_layers
from workflow_scripts._cli import guarded, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__, task=False)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--teacher", help="fine-tuned teacher folder")
    source.add_argument("--pretrained", help="pretrained HF BERT folder (teacher.pretrained)")
    p.add_argument("--task", help="with --pretrained: the task id, e.g. sst2, tweets")
    p.add_argument("--records", help="with --pretrained: the task's BERT record folder (its labels)")
    p.add_argument("--layers", required=True, help="1-based teacher layers, comma-separated: 2,4,6")
    p.add_argument("--out", required=True, help="the student's init folder")
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    from kdlib.errors import ConfigError
    args = parse_args(argv)
    try:
        layers = [int(x) for x in args.layers.split(",")]
    except ValueError:
        raise ConfigError(f"--layers {args.layers!r}: expected comma-separated integers") from None
    if args.teacher:
        export_layers(args.teacher, layers, args.out)
    else:
        from kdlib import backend
        from kdlib.data import tasks
        from kdlib.models.pretrained import resolve_pretrained
        if not (args.records and args.task):
            raise ConfigError("--pretrained needs --task and --records (the task's labels)")
        task = tasks.task_of_records(args.records, args.task)
        here = "torch" if importlib.util.find_spec("torch") else "oneflow"   # a data stage: torch
        B = backend.load(here, "cpu", "fp32")
        export_pretrained_layers(B, resolve_pretrained(args.pretrained), layers, task.num_labels,
                                 args.out)
    print(f"exported {'teacher' if args.teacher else 'pretrained'} layers {layers} of "
          f"{args.teacher or args.pretrained} to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
