"""Stage distill: train one student with its algorithm's recipe."""
from __future__ import annotations

import sys

from kdlib import config
from kdlib.data import tasks
from kdlib.distill.spec import student_spec
from kdlib.distill.student import distill
from kdlib.errors import ConfigError
from workflow_scripts._cli import (
    add_compile_arg,
    add_runtime_args,
    add_selection_arg,
    backend_from,
    guarded,
    json_arg,
    print_trained,
    stage_parser,
)


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--student", required=True, help="the student's name in config.yaml")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", help="the student's resolved settings as JSON (what Snakemake passes)")
    source.add_argument("--config", help="read the student from this config.yaml")
    p.add_argument("--records", required=True, help="the student's record folder (bert or lstm)")
    p.add_argument("--teacher", help="fine-tuned teacher folder")
    p.add_argument("--logits", help="teacher logit cache (.npz)")
    p.add_argument("--init", help="exported teacher layers for the student")
    p.add_argument("--match-steps", default=None,
                   help="a baseline's distilled students as JSON: [{student, records, phases: "
                        "[{epochs, batch_size}]}]; it trains at least as many steps as each")
    p.add_argument("--out", required=True)
    p.add_argument("--work", required=True, help="resume state folder")
    add_selection_arg(p)
    add_compile_arg(p)
    add_runtime_args(p)
    return p.parse_args(argv)


def read_spec(args) -> dict:
    if args.config:
        return student_spec(config.load(args.config), args.student)
    spec = json_arg(args.spec, "--spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("algorithm"), str):
        raise ConfigError("--spec must be a JSON object with an \"algorithm\" name")
    for key, definition in (("architecture", "architecture"), ("hyperparameters", "hyperparameters"),
                            ("train", "train"), ("first_phase_train", "train")):
        spec[key] = config.validate_section(spec.get(key, {}), definition, f"--spec.{key}")
    widths = spec.get("teacher_widths")
    if widths is not None and not (
            isinstance(widths, dict) and {"hidden_size", "num_attention_heads", "vocab_size"} <= widths.keys()
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in widths.values())):
        raise ConfigError("--spec.teacher_widths must map the teacher's config fields (hidden_size, "
                          "num_attention_heads, vocab_size, ...) to numbers")
    return spec


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    task = tasks.task_of_records(args.records, args.task)
    spec = read_spec(args)
    match = json_arg(args.match_steps, "--match-steps") if args.match_steps else None
    if match is not None and not (isinstance(match, list) and all(
            isinstance(m, dict) and {"student", "records", "phases"} <= set(m) for m in match)):
        raise ConfigError("--match-steps must be a JSON list of {student, records, phases}")
    B = backend_from(args)
    results = distill(B, task, args.student, spec, records=args.records, out_dir=args.out,
                      work_dir=args.work, teacher_dir=args.teacher, logits=args.logits,
                      init_dir=args.init, eval_batch_size=args.eval_batch_size, match_steps=match,
                      selection=args.selection, compile=args.compile)
    print_trained(B, f"{args.student} ({spec['algorithm']})", task, results[-1],
                  sum(r.seconds for r in results), args.out, args.selection,
                  steps_before=sum(r.steps for r in results[:-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
