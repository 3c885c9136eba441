"""Stage report: the task's metrics table (Markdown, CSV, HTML) and its accuracy/speed-up plot."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdlib.errors import ConfigError, DataError
from kdlib.evaluate import report
from workflow_scripts._cli import guarded

OUTPUTS = {"md": "report.md", "csv": "report.csv", "html": "report.html",
           "png": "accuracy_vs_speedup.png"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", required=True)
    p.add_argument("--teacher", required=True, metavar="EVAL_JSON", help="the teacher's eval JSON")
    p.add_argument("--students", nargs="*", default=[], metavar="[NAME=]EVAL_JSON",
                   help="each student's eval JSON; its name is NAME, or else the JSON's model field")
    p.add_argument("--baselines", default="{}", metavar="JSON",
                   help='{"student": "its no-KD baseline", ...} (kdlib.evaluate.report.baselines)')
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


def student_entries(items: list[str]) -> list[tuple[str | None, str]]:
    """``NAME=EVAL_JSON`` or bare ``EVAL_JSON`` arguments as ``(name or None, path)``."""
    entries = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or "/" in name:
            entries.append((None, item))
        elif not name or not path:
            raise ConfigError(f"--students: {item!r} is not NAME=EVAL_JSON or EVAL_JSON")
        else:
            entries.append((name, path))
    return entries


def read_students(items: list[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """``({name: eval JSON}, {name: path})`` in argument order. A bare path's name is the ``model``
    field of its JSON (the student's name in config.yaml)."""
    evals, paths = {}, {}
    for name, path in student_entries(items):
        result = report.read_eval(path)
        if name is None:
            name = result.get("model")
            if not isinstance(name, str) or not name:
                raise DataError(f"{path}: lacks the model name; pass it as NAME={path}")
        if name == "teacher" or name in evals:
            raise ConfigError(f"--students: {name!r} ({path}) is given twice or is reserved")
        evals[name], paths[name] = result, path
    return evals, paths


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    outputs = output_paths(args)
    teacher = report.read_eval(args.teacher)
    students, paths = read_students(args.students)
    pairs = report.parse_pairs(args.baselines, list(students))
    report.check_consistent(args.task, {"teacher": teacher, **students},
                            {"teacher": args.teacher, **paths})
    frame = report.write_report(args.task, teacher, students, pairs, outputs["md"], outputs["csv"],
                                outputs["html"], outputs["png"])
    print(f"report of {args.task}: {len(frame)} models ({len(pairs)} with a baseline); wrote "
          f"{', '.join(str(p) for p in outputs.values())}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
