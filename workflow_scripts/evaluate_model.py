"""Stages evaluate_teacher and evaluate_student: metrics, size and speed of a checkpoint as JSON."""
from __future__ import annotations

import argparse
import json
import sys

from kdlib.data import tasks
from kdlib.errors import DataError
from kdlib.evaluate import evaluation
from kdlib.io import read_json, write_text
from workflow_scripts._cli import add_runtime_args, backend_from, guarded


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", required=True)
    p.add_argument("--name", required=True, help="teacher, or the student's name in config.yaml")
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--records", required=True, help="record folder the model reads")
    p.add_argument("--out", required=True, help="the JSON to write")
    p.add_argument("--reference", help="the teacher's eval JSON, for speed-up and retained metric")
    p.add_argument("--batch-size", type=int, default=128)
    add_runtime_args(p)
    return p.parse_args(argv)


REFERENCE_KEYS = ("score", "latency_ms_batch1", "throughput_batch32")


def read_reference(path: str) -> dict:
    """The reference eval JSON; a missing, unreadable or incomplete file is one DataError."""
    reference = read_json(path)
    missing = [k for k in REFERENCE_KEYS if not isinstance(reference, dict) or k not in reference]
    if missing:
        raise DataError(f"{path}: not an eval JSON (lacks {', '.join(missing)})")
    return reference


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    task = tasks.get_task(args.task)
    reference = read_reference(args.reference) if args.reference else None
    B = backend_from(args)
    result = evaluation.report(B, task, args.model, args.records, args.name, reference,
                             args.batch_size)
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    extra = f", speed-up {result['speedup']}x" if "speedup" in result else ""
    print(f"{args.name} on {task.name}: dev {task.metric} {result['score']:.4f}, "
          f"{result['parameters']:,} parameters, {result['latency_ms_batch1']} ms at batch 1{extra}; "
          f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
