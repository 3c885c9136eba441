"""Stage measure_speed: the teacher and every student timed side by side, in one process.

Latency at batch 1 over a fixed sample of distinct dev examples and throughput at batch 32 over a
fixed sample of the dev split's batches, taking turns input by input, in the run's backend, device and precision
(:func:`kdlib.evaluate.speed.side_by_side`). A model is named by its folder. No library's idle threads
spin-wait for long (:func:`kdlib.evaluate.speed.no_spin_waiting`, before the tensor library is imported); the
JSON says when figures are unreliable, and so does the summary line.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from kdlib import backend
from kdlib.data import tasks
from kdlib.data.ofrecord import record_file
from kdlib.errors import ConfigError
from kdlib.evaluate import speed
from kdlib.io import write_text
from kdlib.models.checkpoint import load_checkpoint
from workflow_scripts._cli import add_runtime_args, backend_from, guarded, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--models", nargs="+", required=True, help="model folders (the first: the teacher)")
    p.add_argument("--records", nargs="+", required=True, help="each model's record folder, in order")
    p.add_argument("--rounds", type=int, required=True, help="interleaved rounds of measurement")
    p.add_argument("--latency-examples", type=int, required=True, help="dev examples timed at batch 1")
    p.add_argument("--throughput-examples", type=int, required=True,
                   help="dev examples (whole batches of a seeded sample) timed at batch 32; 0 = all")
    p.add_argument("--ensemble", type=int, default=0,
                   help="the first N models are an ensemble's teachers, named teacher_0 ...; 'teacher' "
                        "is then all of them run in turn")
    p.add_argument("--out", required=True, help="the JSON to write")
    add_runtime_args(p)
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    no_spin = speed.no_spin_waiting()               # first: before torch or OneFlow is imported
    args = parse_args(argv)
    task = tasks.task_of_records(args.records[0], args.task)
    if len(args.models) != len(args.records):
        raise ConfigError(f"--models gives {len(args.models)} folders, --records {len(args.records)}")
    B = backend_from(args)
    split = task.dev_splits[0]
    if args.ensemble == 1 or args.ensemble > len(args.models):
        raise ConfigError(f"--ensemble {args.ensemble}: an ensemble is two or more of the --models")
    names = [f"teacher_{k}" if k < args.ensemble else Path(m).name for k, m in enumerate(args.models)]
    models = {name: (load_checkpoint(B, m)[0], record_file(r, split))
              for name, m, r in zip(names, args.models, args.records)}
    result = speed.side_by_side(B, models, rounds=args.rounds, latency_examples=args.latency_examples,
                                throughput_examples=args.throughput_examples, batch_size=32)
    if args.ensemble:
        speed.run_in_turn(result, names[:args.ensemble])
    result["threads"] = result["threads"] or args.threads or backend.usable_cpus()  # OneFlow: no count
    result["machine"]["no_spin_waiting"] = no_spin
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    reasons = speed.unreliable_reasons(result["models"], result["machine"])
    teacher = "teacher"
    fastest = max(result["models"], key=lambda n: result["models"][n]["throughput_batch32"])
    print(f"speed of {len(models)} models on {task.name} ({result['rounds']} rounds, "
          f"{result['threads']} threads, {B.precision}): {teacher} "
          f"{result['models'][teacher]['latency_ms_batch1']:.2f} ms at batch 1; fastest at batch 32: "
          f"{fastest}; wrote {args.out}"
          + (f"; WARNING: unreliable figures: {'; '.join(reasons)}" if reasons else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
