"""Loading and validating config.yaml against kdlib/config.schema.yaml.

The Snakefile validates with ``snakemake.utils.validate``; stage scripts that run alone validate
again here. Errors name the key path: ``config error at data.max_length.tweets: 'x' is not of type
'integer'``.
"""
from __future__ import annotations

import copy
import re
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

from .errors import ConfigError

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


@lru_cache(maxsize=1)
def schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _with_defaults(validator_class):
    """A validator that fills each missing property with its schema default, then validates."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sub_schema):
        if isinstance(instance, dict):
            for key, prop in properties.items():
                if "default" in prop and key not in instance:
                    instance[key] = copy.deepcopy(prop["default"])
        yield from validate_properties(validator, properties, instance, sub_schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def validate(config: dict) -> dict:
    """Return a copy of ``config`` with defaults filled in; raise ConfigError on the first problem."""
    config = copy.deepcopy(config if config is not None else {})
    if not isinstance(config, dict):
        raise ConfigError("config error: the configuration must be a mapping of keys to values")
    errors = sorted(_Validator(schema()).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        raise ConfigError(f"config error at {key_path(err)}: {err.message}")
    _check_tasks(config)
    _check_transfer(config)
    return config


def _check_transfer(config: dict) -> None:
    """Every transfer set has a source; every student's transfer set exists, and no baseline
    (algorithm none, hard labels only) names one."""
    sets = config.get("transfer", {})
    from .data.tasks import TASKS
    known_tasks = set(TASKS) | set(config.get("custom_tasks") or {})
    for name, spec in sets.items():
        if not spec.get("unlabeled") and not spec.get("augment"):
            raise ConfigError(f"config error at transfer.{name}: give unlabeled, augment or both")
        unknown = [t for t in spec.get("tasks") or () if t not in known_tasks]
        if unknown:
            raise ConfigError(f"config error at transfer.{name}.tasks: {', '.join(unknown)} is no task "
                              "(a GLUE id, tweets, tweets3 or a name under custom_tasks)")
    for name, student in config.get("students", {}).items():
        chosen = student.get("transfer")
        if chosen is None:
            continue
        if chosen not in sets:
            known = ", ".join(sets) or "none are defined"
            raise ConfigError(f"config error at students.{name}.transfer: no transfer set {chosen!r} "
                              f"under transfer ({known})")
        if student.get("algorithm", BASELINE_ALGORITHM) == BASELINE_ALGORITHM:
            raise ConfigError(f"config error at students.{name}.transfer: algorithm none learns from "
                              "the labels alone, and a transfer set has none; only a distilled "
                              "student can use one")


def _check_tasks(config: dict) -> None:
    """Every task named is built in or defined under custom_tasks; no custom task reuses a
    built-in name; every custom task's definition holds together."""
    from .data.tasks import TASKS, get_task

    custom = config.get("custom_tasks", {})
    for name in custom:
        if name in TASKS:
            raise ConfigError(f"config error at custom_tasks.{name}: {name!r} is a built-in task; "
                              "choose another name")
        get_task(name, custom)                    # its definition holds together
    for i, name in enumerate(config.get("tasks", [])):
        if name not in TASKS and name not in custom:
            raise ConfigError(f"config error at tasks.{i}: {name!r} is neither a built-in task "
                              f"({', '.join(TASKS)}) nor defined under custom_tasks")
    finetuned = config.get("teacher", {}).get("finetuned")
    ensemble = config.get("teacher", {}).get("ensemble") or []
    if ensemble and (len(ensemble) < 2 or finetuned is not None or "builtin" in ensemble[1:]):
        raise ConfigError("config error at teacher.ensemble: give two or more teachers, fine-tuned folders "
                          "(the first may be builtin, the teacher fine-tuned here), and leave teacher.finetuned "
                          "null")
    for name in finetuned if isinstance(finetuned, dict) else ():
        if name not in TASKS and name not in custom:
            raise ConfigError(f"config error at teacher.finetuned.{name}: no such task")
    for name in config.get("teacher", {}).get("per_task", {}):
        if name not in TASKS and name not in custom:
            raise ConfigError(f"config error at teacher.per_task.{name}: no such task")


def load(path: str | Path = "config.yaml", overrides: dict | None = None) -> dict:
    """Read a YAML config, apply ``overrides`` (nested dict merged key by key) and validate."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"config error: {path} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config error: {path} is not valid YAML ({exc})".replace("\n", " ")) from None
    return validate(merge(config, overrides or {}))


def merge(base: dict, update: dict) -> dict:
    """Deep-merge ``update`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def max_length(config: dict, task: str) -> int:
    """The WordPiece length of a task's BERT records: a custom task's own ``max_length``, else
    ``data.max_length.<task>``, else ``data.max_length.default``."""
    lengths = config["data"]["max_length"]
    value = (config.get("custom_tasks", {}).get(task) or {}).get("max_length") or lengths.get(task)
    return int(lengths["default"] if value is None else value)


def finetuned_teacher(config: dict, task: str) -> str | None:
    """The folder of the task's already fine-tuned teacher (``teacher.finetuned``, or the first of
    ``teacher.ensemble``), or None when it is fine-tuned here from ``teacher.pretrained``."""
    ensemble = config["teacher"].get("ensemble") or []
    if ensemble:                                  # its first teacher is the task's teacher folder
        return None if ensemble[0] == "builtin" else ensemble[0]
    finetuned = config["teacher"].get("finetuned")
    return finetuned.get(task) if isinstance(finetuned, dict) else finetuned


def teacher_train(config: dict, task: str) -> dict:
    """``teacher.train`` with the task's non-null overrides from ``teacher.per_task`` applied."""
    teacher = config["teacher"]
    override = teacher.get("per_task", {}).get(task) or {}
    return {**teacher["train"], **{k: v for k, v in override.items() if v is not None}}


def validate_section(values: dict, definition: str, where: str) -> dict:
    """Validate ``values`` against ``$defs/<definition>`` of the schema (defaults filled in).

    Stage scripts use it on the parameters Snakemake passes them; ``where`` names the origin in
    errors (e.g. ``--spec``).
    """
    sub = {"$defs": schema()["$defs"], **schema()["$defs"][definition]}
    values = copy.deepcopy(values)
    errors = sorted(_Validator(sub).iter_errors(values), key=lambda e: list(e.absolute_path))
    if errors:
        path = key_path(errors[0])
        raise ConfigError(f"config error at {where}{'' if path == '(top level)' else '.' + path}: "
                          f"{errors[0].message}")
    return values


# ---- runs: a student trained once per seed (``seeds: N``) ----------------------------------------

SEED_SUFFIX = re.compile(r"^(?P<student>.+)_seed(?P<k>[1-9][0-9]*)$")


def runs(config: dict, student: str) -> list[str]:
    """The runs of ``student`` under ``seeds: N``: the student itself (seed index 0, so that adding
    seeds reruns nothing that exists) and ``<student>_seed<k>`` for k = 1 .. N-1."""
    return [student] + [f"{student}_seed{k}" for k in range(1, config.get("seeds", 1))]


def run_of(name: str) -> tuple[str, int]:
    """``(student, seed index)`` of a run name."""
    match = SEED_SUFFIX.match(name)
    return (match["student"], int(match["k"])) if match else (name, 0)


# ---- the baseline of each distilled student ----------------------------------------------------

BASELINE_ALGORITHM = "none"
# The architecture keys that make two students the same model. BiLSTM students have no layers or
# heads; BERT students have no separate embedding size. ``init_layers`` is left out on purpose: PKD
# and Theseus copy different teacher layers into the same 3-layer BERT, and share one baseline.
# ``init`` counts only as random or copied layers: a student that starts from the fine-tuned
# teacher's layers is measured against the baseline that starts from the same layers of the
# pretrained folder (init: pretrained), which has learnt nothing from the teacher.
ARCHITECTURE_KEYS = {
    "bert": ("model", "layers", "hidden", "heads", "intermediate", "init", "tokenizer"),
    "bilstm": ("model", "hidden", "intermediate", "embedding", "init"),
}


def _student(name: str, raw: dict) -> dict:
    """One student's config with the schema's defaults filled in."""
    return validate_section(raw or {}, "student", f"students.{name}")


def architecture_key(architecture: dict) -> tuple:
    """The architecture fields that must match for a no-KD student to be another's baseline."""
    keys = ARCHITECTURE_KEYS.get(architecture["model"], tuple(sorted(architecture)))
    key = {k: architecture.get(k) for k in keys}
    if key.get("init") in ("teacher", "pretrained"):
        key["init"] = "copied layers"
    return tuple(key.items())


def baselines(students_config: dict) -> dict[str, str]:
    """``{distilled student: its baseline}`` for the ``students`` section of the config.

    The baseline of a student whose algorithm is not ``none`` is the first ``algorithm: none``
    student (in config order) whose :func:`architecture_key` is the same. Students without one,
    and the baselines themselves, are not keys.
    """
    students = {name: _student(name, raw) for name, raw in students_config.items()}
    plain = [(name, architecture_key(s["architecture"])) for name, s in students.items()
             if s["algorithm"] == BASELINE_ALGORITHM]
    pairs = {}
    for name, s in students.items():
        if s["algorithm"] == BASELINE_ALGORITHM:
            continue
        key = architecture_key(s["architecture"])
        match = next((base for base, base_key in plain if base_key == key), None)
        if match is not None:
            pairs[name] = match
    return pairs


def compared_with(config: dict, baseline: str) -> list[str]:
    """The distilled students whose baseline (:func:`baselines`) is student ``baseline``."""
    return [s for s, b in baselines(config["students"]).items() if b == baseline]


# Training settings that cannot change a result, only how a job runs: they reach the stages, but
# neither rerun a job when they change (kdlib.plan tracks the rest as params) nor keep a
# resume state from being used (kdlib.distill.train.job_identity).
RUN_ONLY = ("save_seconds",)


def result_settings(values):
    """``values`` (nested dicts and lists) without the :data:`RUN_ONLY` keys, at any depth."""
    if isinstance(values, dict):
        return {k: result_settings(v) for k, v in values.items() if k not in RUN_ONLY}
    if isinstance(values, list):
        return [result_settings(v) for v in values]
    return values


def retype(value):
    """Numbers, booleans and nulls that arrive as strings become typed values again.

    ``snakemake --config data='{retries: 0}'`` parses nested values with YAML's base loader, so
    the ``0`` arrives as the string ``'0'``. No kdflow setting is a string that looks like a
    number, so reading such strings as YAML scalars is safe.
    """
    if isinstance(value, dict):
        return {k: retype(v) for k, v in value.items()}
    if isinstance(value, list):
        return [retype(v) for v in value]
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(parsed, (bool, int, float)) or (parsed is None and value.strip()):
            return parsed
        try:
            return float(value)     # YAML 1.1 reads 3e-5 (no dot) as a string
        except ValueError:
            return value
    return value
