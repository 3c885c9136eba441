"""Stage report: the task's metrics table with gain intervals and verdicts (Markdown, CSV, HTML),
its accuracy/speed-up plot and its training curves."""
from __future__ import annotations

import sys
from pathlib import Path

from kdlib.data import tasks
from kdlib.errors import ConfigError, DataError
from kdlib.evaluate import eval_json, report, speed, table
from workflow_scripts._cli import guarded, json_arg, stage_parser

OUTPUTS = {"md": "report.md", "csv": "report.csv", "html": "report.html",
           "png": "accuracy_vs_speedup.png", "curves": "training_curves.png"}


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--records", required=True,
                   help="the task's BERT record folder (its meta.json defines a custom task)")
    p.add_argument("--teacher", required=True, metavar="EVAL_JSON", help="the teacher's eval JSON")
    p.add_argument("--students", nargs="*", default=[], metavar="EVAL_JSON",
                   help="each student run's eval JSON (named by its model field)")
    p.add_argument("--predictions", nargs="+", required=True, metavar="NPZ",
                   help="the predictions of the teacher, then of each student run, in order")
    p.add_argument("--members", nargs="*", default=[], metavar="EVAL_JSON",
                   help="an ensemble teacher's members' eval JSONs (teacher.ensemble)")
    p.add_argument("--member-predictions", nargs="*", default=[], metavar="NPZ",
                   help="their predictions, in the order of --members")
    p.add_argument("--logs", nargs="+", required=True, metavar="CSV",
                   help="train_log.csv of the teacher and of each student (named by its folder)")
    p.add_argument("--speed", required=True, metavar="JSON", help="the speed stage's JSON")
    p.add_argument("--baselines", required=True, metavar="JSON",
                   help='{"student": "its no-KD baseline", ...} (kdlib.config.baselines)')
    p.add_argument("--out-dir", help="folder for the five outputs under their usual names")
    for key, name in OUTPUTS.items():
        p.add_argument(f"--{key}", help=f"output path (default: OUT_DIR/{name})")
    return p.parse_args(argv)


def output_paths(args) -> dict[str, Path]:
    paths = {}
    for key, name in OUTPUTS.items():
        given = getattr(args, key)
        if given is None and args.out_dir is None:
            raise ConfigError(f"--{key}: give it, or --out-dir for every output")
        paths[key] = Path(given) if given else Path(args.out_dir) / name
    return paths


def read_students(paths: list[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """``({run: eval JSON}, {run: path})`` in argument order; a run's name is the ``model`` field
    of its eval JSON (the student's name in config.yaml, ``_seed<k>`` for its later runs)."""
    evals, where = {}, {}
    for path in paths:
        result = eval_json.read_eval(path)
        name = result.get("model")
        if not isinstance(name, str) or not name:
            raise DataError(f"{path}: lacks the model name (its 'model' field)")
        if name == "teacher" or name in evals:
            raise ConfigError(f"--students: {name!r} ({path}) is given twice or is reserved")
        evals[name], where[name] = result, path
    return evals, where


def read_pairs(text: str, names: list[str]) -> dict[str, str]:
    """``--baselines``: a ``{student: baseline}`` JSON object whose names are all students given."""
    pairs = json_arg(text, "--baselines")
    if not isinstance(pairs, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in pairs.items()):
        raise ConfigError("--baselines must be a JSON object mapping student names to baseline names")
    unknown = sorted({n for pair in pairs.items() for n in pair} - set(names))
    if unknown:
        raise ConfigError(f"--baselines names students without an eval JSON: {', '.join(unknown)}")
    return pairs


def read_logs(paths: list[str]) -> dict:
    """``{model: its train_log.csv as a table}``, each named by its folder (teacher, kd ...); the
    score column (``eval_score``, ``dev_score`` in older logs) is read as text, empty cells kept."""
    import pandas as pd
    logs = {}
    for path in paths:
        try:
            logs[Path(path).parent.name] = pd.read_csv(path, dtype={"eval_score": str, "dev_score": str},
                                                       keep_default_na=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable training log ({exc})") from None
    return logs


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    task = tasks.task_of_records(args.records, args.task)
    outputs = output_paths(args)
    teacher = eval_json.read_eval(args.teacher)
    runs, paths = read_students(args.students)
    if len(args.predictions) != 1 + len(runs):
        raise ConfigError(f"--predictions gives {len(args.predictions)} files for the teacher and "
                          f"{len(runs)} student runs")
    split = task.dev_splits[0]
    predictions = {name: eval_json.read_predictions(path, split)
                   for name, path in zip(["teacher", *runs], args.predictions)}
    if len(args.members) != len(args.member_predictions):
        raise ConfigError("--members and --member-predictions must name the same teachers")
    members = {}
    for path, npz in zip(args.members, args.member_predictions):
        result = eval_json.read_eval(path)
        members[result["model"]] = result
        predictions[result["model"]] = eval_json.read_predictions(npz, split)
    report.check_consistent(task.name, {"teacher": teacher, **runs}, {"teacher": args.teacher, **paths})
    students = list(table.group_runs(runs))
    pairs = read_pairs(args.baselines, students)
    frame = report.write_report(task.name, teacher, runs, pairs, predictions, speed.read_speed(args.speed),
                                read_logs(args.logs), task.is_regression, outputs, members)
    verdicts = frame[table.VERDICT].dropna().tolist() if table.VERDICT in frame else []
    collapsed = report.collapsed_runs({"teacher": teacher, **runs})
    collapsed = f"; {len(collapsed)} collapsed to one class: {', '.join(collapsed)}" if collapsed else ""
    print(f"report of {task.name}: {len(frame)} models ({len(verdicts)} against a baseline: "
          f"{verdicts.count('better')} better, {verdicts.count('worse')} worse){collapsed}; wrote "
          f"{', '.join(str(p) for p in outputs.values())}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
