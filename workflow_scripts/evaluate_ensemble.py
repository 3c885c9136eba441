"""Stage evaluate_ensemble: the eval JSON and dev predictions of several teachers as one (config
teacher.ensemble), from each member's evaluation: the mean of their probabilities
(:func:`kdlib.evaluate.ensemble.build`)."""
from __future__ import annotations

import json
import sys

from kdlib.data import tasks
from kdlib.errors import ConfigError
from kdlib.evaluate import ensemble, eval_json
from kdlib.io import write_text
from workflow_scripts._cli import guarded, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--records", required=True, help="the task's BERT record folder (its meta.json defines it)")
    p.add_argument("--members", nargs="+", required=True, metavar="EVAL_JSON",
                   help="each member's eval JSON (named by its model field)")
    p.add_argument("--member-predictions", nargs="+", required=True, metavar="NPZ",
                   help="each member's predictions, in the order of --members")
    p.add_argument("--out", required=True, help="the ensemble's eval JSON")
    p.add_argument("--predictions", required=True, help="the ensemble's predictions (.npz)")
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    if len(args.members) != len(args.member_predictions) or len(args.members) < 2:
        raise ConfigError("--members and --member-predictions must name the same two or more teachers")
    task = tasks.task_of_records(args.records, args.task)
    members = {}
    for path, predictions in zip(args.members, args.member_predictions):
        result = eval_json.read_eval(path)
        members[result.get("model") or path] = (result, predictions)
    result, predictions = ensemble.build(task, members)
    eval_json.write_predictions(args.predictions, predictions)
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    scores = ", ".join(f"{m['model']} {m['score']:.4f}" for m in result["members"])
    print(f"ensemble of {len(members)} teachers on {task.name}: dev {task.metric} {result['score']:.4f} "
          f"({scores}); wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
