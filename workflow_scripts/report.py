"""Stage report: the task's metrics table (Markdown, CSV, HTML) and its accuracy/speed-up plot."""
from __future__ import annotations

import sys
from pathlib import Path

from kdlib.errors import ConfigError, DataError
from kdlib.evaluate import eval_json, report
from workflow_scripts._cli import guarded, json_arg, stage_parser

OUTPUTS = {"md": "report.md", "csv": "report.csv", "html": "report.html",
           "png": "accuracy_vs_speedup.png"}


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--teacher", required=True, metavar="EVAL_JSON", help="the teacher's eval JSON")
    p.add_argument("--students", nargs="*", default=[], metavar="EVAL_JSON",
                   help="each student's eval JSON (named by its model field)")
    p.add_argument("--baselines", required=True, metavar="JSON",
                   help='{"student": "its no-KD baseline", ...} (kdlib.config.baselines)')
    p.add_argument("--out-dir", help="folder for the four outputs under their usual names")
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
    """``({name: eval JSON}, {name: path})`` in argument order; a student's name is the ``model``
    field of its eval JSON (the student's name in config.yaml)."""
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


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    outputs = output_paths(args)
    teacher = eval_json.read_eval(args.teacher)
    students, paths = read_students(args.students)
    pairs = read_pairs(args.baselines, list(students))
    report.check_consistent(args.task, {"teacher": teacher, **students},
                            {"teacher": args.teacher, **paths})
    frame = report.write_report(args.task, teacher, students, pairs, outputs["md"], outputs["csv"],
                                outputs["html"], outputs["png"])
    print(f"report of {args.task}: {len(frame)} models ({len(pairs)} with a baseline); wrote "
          f"{', '.join(str(p) for p in outputs.values())}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
