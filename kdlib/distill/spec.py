"""What the distill stage knows about a student, resolved from config.yaml: its algorithm,
architecture, the hyperparameters its recipe reads, its transfer set and its training settings per
phase (:func:`student_spec`), and whether every student can learn from the task's teacher
(:func:`check_students`). It reads the recipe registry, so it lives beside it, not in
:mod:`kdlib.config` (which the training loop imports)."""
from __future__ import annotations

from ..config import run_of
from ..errors import ConfigError
from .recipes import get_recipe


def _resolve_train(base: dict, override: dict | None) -> dict:
    return {**base, **{k: v for k, v in (override or {}).items() if v is not None}}


def transfer_of(config: dict, name: str, task: str | None) -> str | None:
    """The transfer set student (or run) ``name`` trains with on ``task``: the set it names, unless
    the set's ``tasks`` leaves that task out (None for ``task`` None: the name alone)."""
    chosen = config["students"][run_of(name)[0]].get("transfer")
    if chosen is None or task is None:
        return chosen
    tasks = config.get("transfer", {}).get(chosen, {}).get("tasks")
    return chosen if tasks is None or task in tasks else None


def student_spec(config: dict, name: str, task: str | None = None) -> dict:
    """What the distill stage needs to know about student (or run) ``name`` on ``task``: its
    algorithm, architecture, the hyperparameters its recipe reads, its transfer set (if it has one
    on that task) and its resolved training settings per phase. Only these reach the stage as
    parameters, so an unrelated config change does not rerun it. Run ``<student>_seed<k>`` trains
    with every phase's seed raised by k."""
    students = config["students"]
    base, seed_index = run_of(name)
    if base not in students:
        raise ConfigError(f"unknown student {base!r}; config.yaml defines: {', '.join(students)}")
    raw = students[base]
    recipe = get_recipe(raw["algorithm"], base)
    spec = {"algorithm": raw["algorithm"], "architecture": raw["architecture"],
            "hyperparameters": {k: raw["hyperparameters"][k] for k in recipe.hyperparameters},
            "train": _resolve_train(config["students_train"], raw.get("train"))}
    chosen = transfer_of(config, base, task)
    if chosen:
        spec["transfer"] = chosen
    if recipe.two_phase:
        spec["first_phase_train"] = _resolve_train(config["students_train"], raw.get("first_phase_train"))
    for phase in ("first_phase_train", "train"):
        if phase in spec and seed_index:
            spec[phase] = {**spec[phase], "seed": spec[phase]["seed"] + seed_index}
    return spec


def check_students(config: dict, teacher: dict, task: str | None = None, family: str | None = None) -> None:
    """Raise ConfigError naming the first student whose settings cannot work with ``teacher``
    (the teacher's config.json, or the BERT shape a teacher of another family stands for,
    :func:`kdlib.models.families.student_shape`). ``family``: the ``model_type`` of a fine-tuned
    teacher (``teacher.finetuned``) that kdlib runs only through transformers; a student that needs
    the teacher's layers (live hidden states or attentions, or layers copied into it) cannot use it;
    nor, under ``teacher.ensemble``, one that needs a single teacher's layers."""
    ensemble = config["teacher"].get("ensemble")
    for name in config["students"]:
        spec = student_spec(config, name, task)
        recipe, arch = get_recipe(spec["algorithm"], name), spec["architecture"]
        if ensemble and (recipe.needs_teacher or arch["init"] == "teacher"):
            raise ConfigError(f"student {name} (algorithm {spec['algorithm']}) needs one teacher's layers, "
                              "but teacher.ensemble gives the students only the teachers' averaged outputs: "
                              "use kd or distilled_lstm students with it")
        if arch["tokenizer"] is not None and (arch["model"] != "bert" or recipe.needs_teacher
                                              or arch["init"] != "random"):
            raise ConfigError(f"student {name}: architecture.tokenizer gives a BERT from scratch records of "
                              f"its own tokenizer, which only recipes that read the cached logits can use (kd, "
                              f"none), not {spec['algorithm']} with a {arch['model']} (init: {arch['init']}); "
                              "leave it null for the teacher's")
        if family is not None and (recipe.needs_teacher or arch["init"] != "random"):
            what = ("the teacher's hidden states and attentions in kdlib's BERT" if recipe.needs_teacher
                    else f"layers copied into it (init: {arch['init']}) from a BERT "
                         "of the teacher's vocabulary")
            raise ConfigError(f"student {name} (algorithm {spec['algorithm']}) needs {what}, but the "
                              f"teacher of {task} is a {family} (teacher.finetuned), which kdlib runs only "
                              "through transformers: use kd or distilled_lstm students with it, or a BERT teacher")
        recipe.check(name, spec, teacher)
