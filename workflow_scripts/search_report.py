"""Stage search_report: results/<task>/search.{md,csv,json} and search.png
(:mod:`kdlib.search.report`): every candidate's figures before training and validation score,
the pick beside its equal-budget baseline on dev (gain, interval, verdict) and the pick's figures
re-measured after training."""
from __future__ import annotations

import sys
from pathlib import Path

from kdlib.data import tasks
from kdlib.errors import ConfigError
from kdlib.evaluate import eval_json, report, speed, table
from kdlib.io import read_json
from kdlib.search import report as search_report
from workflow_scripts._cli import guarded, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--records", required=True, help="the task's BERT record folder (its meta.json names the task)")
    p.add_argument("--feasibility", required=True, help="the feasibility JSON")
    p.add_argument("--pick", required=True, help="the pick JSON")
    p.add_argument("--teacher-eval", required=True, help="the teacher's eval JSON")
    p.add_argument("--teacher-predictions", required=True, help="the teacher's predictions")
    p.add_argument("--evals", nargs="+", required=True, help="every run of the pick and of its baseline: eval JSONs")
    p.add_argument("--predictions", nargs="+", required=True, help="their predictions, in the order of --evals")
    p.add_argument("--speed", required=True, help="the search's speed JSON (teacher, pick, baseline; kdlib)")
    p.add_argument("--deployment", required=True, help="the search's deployment JSON (onnxruntime)")
    p.add_argument("--weights", required=True,
                   help="the pick's weights file in the target's runtime (model.safetensors or model.int8.onnx)")
    p.add_argument("--out-stem", required=True, help="outputs: <stem>.md, .csv, .json, .png")
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    task = tasks.task_of_records(args.records, args.task)
    feasibility, chosen = read_json(args.feasibility), read_json(args.pick)
    if len(args.evals) != len(args.predictions):
        raise ConfigError(f"--evals gives {len(args.evals)} files, --predictions {len(args.predictions)}")
    teacher = eval_json.read_eval(args.teacher_eval)
    runs = {}
    split = task.dev_splits[0]
    predictions = {"teacher": eval_json.read_predictions(args.teacher_predictions, split)}
    for path, npz in zip(args.evals, args.predictions):
        result = eval_json.read_eval(path)
        runs[result["model"]] = result
        predictions[result["model"]] = eval_json.read_predictions(npz, split)
    measured = speed.read_speed(args.speed)
    pair = report.table(teacher, runs, {chosen["pick"]: chosen["baseline"]}, predictions, measured,
                        task.is_regression)
    after = search_report.remeasured(feasibility["target"], chosen["pick"], measured, read_json(args.deployment),
                                     Path(args.weights).stat().st_size)
    search_report.write(task.name, args.out_stem, feasibility, chosen, pair, after)
    row = pair[pair[table.NAME] == chosen["pick"]].iloc[0]
    print(f"search of {task.name}: pick {chosen['pick']}, dev {task.metric} {row[report.primary_column(teacher)]:.2f}, "
          f"{row.get(table.VERDICT, '')} than its baseline {chosen['baseline']}; after training "
          f"{feasibility['target']['metric']} {after['value']:.3g} ({'meets' if after['meets'] else 'MISSES'} "
          f"the target); wrote {args.out_stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
