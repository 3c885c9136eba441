"""Stage measure_deployment: every model's ONNX export timed under onnxruntime fp32 and int8, side
by side in one process with the teacher in eager PyTorch fp32 (:func:`kdlib.export.deploy.measure`),
and the task's deployment table (Markdown and CSV) with each export's dev scores (its check.json).
A model is named by its export folder (``results/<task>/export/<model>/onnx``). No library's idle threads
spin-wait for long (:func:`kdlib.evaluate.speed.no_spin_waiting`, before torch is imported); the table marks
unreliable figures, and the summary line says why."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from kdlib.backend import usable_cpus
from kdlib.data import tasks
from kdlib.data.ofrecord import record_file
from kdlib.errors import ConfigError
from kdlib.evaluate import speed
from kdlib.export import deploy
from kdlib.io import read_json, write_text
from workflow_scripts._cli import guarded, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--teacher", required=True, help="the teacher's model folder (timed eager too)")
    p.add_argument("--exports", nargs="+", required=True, help="ONNX folders (the teacher's among them)")
    p.add_argument("--records", nargs="+", required=True, help="each export's record folder, in order")
    p.add_argument("--rounds", type=int, required=True, help="interleaved rounds of measurement")
    p.add_argument("--latency-examples", type=int, required=True, help="dev examples timed at batch 1")
    p.add_argument("--throughput-examples", type=int, required=True,
                   help="dev examples (whole batches of a seeded sample) timed at batch 32; 0 = all")
    p.add_argument("--threads", type=int, required=True, help="CPU threads of every runtime")
    p.add_argument("--json", required=True, help="the timings to write")
    p.add_argument("--md", required=True, help="the deployment table (Markdown)")
    p.add_argument("--csv", required=True, help="the deployment table (CSV)")
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    no_spin = speed.no_spin_waiting()               # first: before torch is imported
    args = parse_args(argv)
    if len(args.exports) != len(args.records):
        raise ConfigError(f"--exports gives {len(args.exports)} folders, --records {len(args.records)}")
    names = [Path(e).parent.name for e in args.exports]
    if "teacher" not in names:
        raise ConfigError("--exports must hold the teacher's export (export/teacher/onnx)")
    task = tasks.task_of_records(args.records[0], args.task)
    split = task.dev_splits[0]
    records = {n: record_file(r, split) for n, r in zip(names, args.records)}
    threads = max(1, min(args.threads, usable_cpus()))     # no more than this process may use
    result = deploy.measure(dict(zip(names, map(Path, args.exports))), records, Path(args.teacher),
                            threads, args.rounds, args.latency_examples, args.throughput_examples)
    result["machine"]["no_spin_waiting"] = no_spin
    checks = {n: read_json(Path(e) / "check.json") for n, e in zip(names, args.exports)}
    frame = deploy.table(result, checks, task.metric)
    write_text(args.json, json.dumps(result, indent=2) + "\n")
    write_text(args.csv, frame.to_csv(index=False, float_format="%.4f"))
    write_text(args.md, deploy.markdown(task.name, frame, result))
    students = frame[(frame.model != "teacher") & (frame.runtime == "onnxruntime int8")]
    best = students.loc[students["x eager teacher b1"].idxmax()] if len(students) else None
    fastest = "" if best is None else \
        f"; fastest int8 at batch 1: {best.model} ({best['x eager teacher b1']:.1f}x the eager teacher)"
    reasons = deploy.unreliable_reasons(result)
    print(f"deployment of {len(names)} models on {task.name} ({args.rounds} rounds, {threads} threads)"
          f"{fastest}; wrote {args.md}"
          + (f"; WARNING: unreliable figures: {'; '.join(reasons)}" if reasons else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
