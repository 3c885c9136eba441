"""Stage finetune_teacher: fine-tune the pretrained teacher on a task's BERT records."""
from __future__ import annotations

import sys

from kdlib import config
from kdlib.data import tasks
from kdlib.distill import teacher, train
from kdlib.models.pretrained import resolve_pretrained
from workflow_scripts._cli import (
    add_compile_arg,
    add_runtime_args,
    add_selection_arg,
    backend_from,
    guarded,
    load_section,
    print_trained,
    stage_parser,
)


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--records", required=True, help="BERT record folder, e.g. data/ofrecord/sst2/bert128")
    p.add_argument("--pretrained", required=True, help="HF BERT folder or builtin:minilm-l6")
    p.add_argument("--out", required=True, help="checkpoint folder, e.g. results/sst2/teacher")
    p.add_argument("--work", required=True, help="resume state folder, e.g. work/sst2/teacher")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", help="the teacher's training settings as JSON (what Snakemake passes)")
    source.add_argument("--config", help="read teacher.train (+ per_task) from this config.yaml")
    add_selection_arg(p)
    add_compile_arg(p)
    add_runtime_args(p)
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    task = tasks.task_of_records(args.records, args.task)
    if args.spec is not None:
        spec = load_section(args.spec, "train", "--spec")
    else:
        spec = config.teacher_train(config.load(args.config), task.name)
    B = backend_from(args)
    result = teacher.finetune(B, task, args.records, resolve_pretrained(args.pretrained), args.out,
                              args.work, train.TrainConfig.from_dict(spec), args.eval_batch_size,
                              args.selection, compile=args.compile)
    print_trained(B, "teacher", task, result, result.seconds, args.out, args.selection)
    return 0


if __name__ == "__main__":
    sys.exit(main())
