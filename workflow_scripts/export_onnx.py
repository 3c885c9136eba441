"""Stage export_onnx: a model folder as ONNX, fp32 and int8, checked against kdlib on the dev split.

Writes ``--out`` whole or not at all: ``model.onnx``, ``model.int8.onnx``, ``config.json``,
``vocab.txt`` (:func:`kdlib.export.onnx.export_onnx`) and ``check.json``: kdlib's and onnxruntime's
logits compared over the task's first dev split, with each one's metrics
(:func:`kdlib.export.onnx.check_onnx`). An fp32 graph that strays from kdlib is an error.
"""
from __future__ import annotations

import json
import sys

from workflow_scripts._cli import guarded, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--model", required=True, help="kdlib model folder")
    p.add_argument("--records", required=True, help="the model's record folder (its dev split checks)")
    p.add_argument("--out", required=True, help="the ONNX folder to write")
    p.add_argument("--threads", type=int, required=True, help="CPU threads (0 = library default)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of the check")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest fp32 logit difference allowed")
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    from kdlib import backend
    from kdlib.data import tasks
    from kdlib.data.ofrecord import record_file
    from kdlib.export import onnx
    from kdlib.io import atomic_dir

    args = parse_args(argv)
    task = tasks.task_of_records(args.records, args.task)
    dev = record_file(args.records, task.dev_splits[0])
    B = backend.load("torch", "cpu", "fp32")        # one line where this runtime has no torch
    threads = min(args.threads, backend.usable_cpus()) if args.threads else 0
    if threads:
        B.set_num_threads(threads)                  # kdlib's side of the check
    with atomic_dir(args.out) as tmp:
        export = onnx.write_onnx(args.model, tmp)
        check = onnx.check_onnx(tmp, args.model, dev, task, batch_size=args.batch_size,
                                threads=threads, tolerance=args.tolerance)
        check.update(task=task.name, split=task.dev_splits[0], threads=threads, export=export)
        (tmp / "check.json").write_text(json.dumps(check, indent=2) + "\n", encoding="utf-8")
    scores = {name: m[task.metric] for name, m in check["metrics"].items()}
    print(f"exported {args.model} to ONNX in {export['export_s']:.1f} s (int8 in "
          f"{export['quantize_s']:.1f} s): max |logit diff| vs kdlib fp32 {check['max_abs_diff_fp32']:.3g}, "
          f"int8 {check['max_abs_diff_int8']:.3g}; {task.dev_splits[0]} {task.metric} fp32 "
          f"{scores['onnx_fp32']:.4f}, int8 {scores['onnx_int8']:.4f} over {check['examples']} examples; "
          f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
