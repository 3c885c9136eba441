"""Stage search_feasibility: every search candidate measured untrained beside the teacher, and
whether it meets the target (:mod:`kdlib.search.feasibility`).

Each candidate's shape is built by its recipe, untrained, and timed side by side with the teacher
in one process on the validation split, in the target's runtime (kdlib, or onnxruntime int8 beside
the eager PyTorch teacher); its size is its weights file in that runtime. No library's idle threads
spin-wait for long (:func:`kdlib.evaluate.speed.no_spin_waiting`, before the tensor library loads).
"""
from __future__ import annotations

import json
import sys

from kdlib.data import tasks
from kdlib.errors import ConfigError
from kdlib.evaluate import speed
from kdlib.io import write_text
from kdlib.search import feasibility
from kdlib.search.space import comparison
from workflow_scripts._cli import add_runtime_args, backend_from, guarded, json_arg, load_section, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--teacher", required=True, help="the teacher's model folder")
    p.add_argument("--teacher-records", required=True, help="the teacher's record folder")
    p.add_argument("--target", required=True, help="the target as JSON (config.yaml search.target)")
    p.add_argument("--candidates", required=True,
                   help='JSON {"candidates": [{"name", "recipe", "records", "spec"}, ...], "skipped": {name: why}}')
    p.add_argument("--rounds", type=int, required=True, help="interleaved rounds of measurement")
    p.add_argument("--latency-examples", type=int, required=True, help="validation examples timed at batch 1")
    p.add_argument("--throughput-examples", type=int, required=True,
                   help="validation examples (whole batches of a seeded sample) timed at batch 32; 0 = all")
    p.add_argument("--out", required=True, help="the feasibility JSON to write")
    add_runtime_args(p)
    return p.parse_args(argv)


def read_candidates(text: str) -> tuple[dict, dict]:
    """``({name: {"recipe", "records", "spec"}} in the search's order, {name: why it is none})``."""
    given = json_arg(text, "--candidates")
    listed = given.get("candidates") if isinstance(given, dict) else None
    if not isinstance(listed, list) or not listed or not all(
            isinstance(c, dict) and {"name", "recipe", "records", "spec"} <= set(c) for c in listed):
        raise ConfigError('--candidates must be {"candidates": [{"name", "recipe", "records", "spec"}, ...], '
                          '"skipped": {...}} with one candidate or more, in the search\'s order')
    return {c["name"]: {k: c[k] for k in ("recipe", "records", "spec")} for c in listed}, given.get("skipped") or {}


@guarded
def main(argv=None) -> int:
    no_spin = speed.no_spin_waiting()               # first: before torch or OneFlow is imported
    args = parse_args(argv)
    target = load_section(args.target, "search_target", "--target")
    if not target:
        raise ConfigError("--target: give the search's target, e.g. "
                          '{"metric": "size_mb", "bound": 20, "runtime": "kdlib"}')
    candidates, skipped = read_candidates(args.candidates)
    task = tasks.task_of_records(args.teacher_records, args.task)
    if target["runtime"] == "onnx_int8" and args.backend != "torch":
        raise ConfigError("the onnx_int8 runtime builds its models on torch: pass --backend torch")
    B = backend_from(args)
    measured = feasibility.measure(B, task, candidates, args.teacher, args.teacher_records, target["runtime"],
                                   args.threads, args.rounds, args.latency_examples, args.throughput_examples)
    result = feasibility.judge(measured, candidates, target, skipped)
    result["machine"]["no_spin_waiting"] = no_spin
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    kept = [n for n, c in result["candidates"].items() if c["feasible"]]
    reasons = speed.unreliable_reasons({"teacher": result["teacher"]}, result["machine"])
    print(f"search feasibility on {task.name}: {len(kept)} of {len(candidates)} candidates meet "
          f"{target['metric']} {comparison(target)} {target['bound']:g} "
          f"in {target['runtime']} ({len(measured['shapes'])} shapes timed untrained); wrote {args.out}"
          + (f"; WARNING: unreliable figures: {'; '.join(reasons)}" if reasons else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
