"""A search's candidates, from config.yaml's ``search:``.

A candidate is a student like any other: a configured student's recipe (its algorithm,
hyperparameters, training settings and transfer set; ``search.space.recipes``) with its
architecture replaced by one shape of the space, named after both
(``search_kd_l2_h256_i1024_a4``, ``search_distilled_lstm_h100_e300``). Its name fixes its settings,
so a candidate trained once is cached: widening the space trains only the new names. Its
baseline, ``<candidate>_nokd`` (:func:`baseline_name`), is the same architecture on hard labels,
with the training settings of the first configured baseline of its family and the candidate's
steps (``equal_steps``); only the pick's is ever trained.

The space is the grid of every recipe at every shape of its model family (and every transfer set
of ``space.transfer`` when it lists some), in a seeded order; ``space.candidates: N`` keeps the
first N that can learn from the task's teacher (:func:`candidates`), so raising N adds candidates
and keeps those already trained. A shape the recipe cannot take (heads that do not divide the
hidden width, a tinybert without the teacher's heads) is no candidate: it is listed with why.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import numpy as np

from ..config import BASELINE_ALGORITHM
from ..distill.spec import check_students
from ..errors import ConfigError

PREFIX = "search_"
BASELINE_SUFFIX = "_nokd"
# The metrics whose bound is a minimum; the others' (latency_ms_batch1, size_mb) is a maximum.
AT_LEAST = ("throughput_batch32", "speedup_batch1", "speedup_batch32")
FAMILY_KEYS = {"bert": ("layers", "hidden", "intermediate", "heads"), "bilstm": ("hidden", "embedding")}
SHAPE_LETTERS = {"layers": "l", "hidden": "h", "intermediate": "i", "heads": "a", "embedding": "e"}


@dataclass(frozen=True)
class Candidate:
    name: str
    recipe: str              # the configured student whose recipe it takes
    student: dict            # its entry, as an entry of config.yaml's students (defaults filled in)

    @property
    def baseline(self) -> str:
        return baseline_name(self.name)


def baseline_name(candidate: str) -> str:
    return candidate + BASELINE_SUFFIX


def settings(config: dict, task: str) -> dict | None:
    """``{"target", "space"}`` of ``task``: search's, with ``search.per_task.<task>``'s target or
    space in place of it; None when the task has no target (no search)."""
    search = config["search"]
    own = search["per_task"].get(task) or {}
    target = own.get("target", search["target"])
    return None if target is None else {"target": target, "space": own.get("space", search["space"])}


def comparison(target: dict) -> str:
    """``>=`` for a target whose bound is a minimum, ``<=`` for a maximum, as the pages write it."""
    return ">=" if target["metric"] in AT_LEAST else "<="


def meets(target: dict, value: float) -> bool:
    """Whether a measured ``value`` of the target's metric meets its bound."""
    return value >= target["bound"] if target["metric"] in AT_LEAST else value <= target["bound"]


def check_recipes(config: dict, space: dict, where: str = "search.space") -> None:
    """Every recipe names a distilled student from random weights; every transfer set exists."""
    if not space["recipes"]:
        raise ConfigError(f"config error at {where}.recipes: name the students whose recipes the search "
                          f"tries, e.g. [kd, distilled_lstm]")
    for name in space["recipes"]:
        student = config["students"].get(name)
        if student is None:
            raise ConfigError(f"config error at {where}.recipes: no student {name!r} under students")
        if student["algorithm"] == BASELINE_ALGORITHM:
            raise ConfigError(f"config error at {where}.recipes: {name} is a baseline (algorithm none); "
                              "name distilled students (its baseline comes with the pick)")
        if student["architecture"]["init"] != "random":
            raise ConfigError(f"config error at {where}.recipes: {name} starts from copied layers "
                              f"(init: {student['architecture']['init']}), whose widths are the teacher's; "
                              "the search varies widths, so name students that start from random weights")
    for chosen in space["transfer"] or ():
        if chosen is not None and chosen not in config["transfer"]:
            raise ConfigError(f"config error at {where}.transfer: no transfer set {chosen!r} under transfer")


def _name(recipe: str, family: str, shape: dict, transfer, vary_transfer: bool) -> str:
    name = f"{PREFIX}{recipe}_" + "_".join(f"{SHAPE_LETTERS[k]}{shape[k]}" for k in FAMILY_KEYS[family])
    return name + (f"_x{transfer or 'none'}" if vary_transfer else "")


def grid(config: dict, space: dict) -> list[Candidate]:
    """Every recipe at every shape of its family (and transfer set), in config order."""
    out = []
    for recipe in space["recipes"]:
        raw = config["students"][recipe]
        family = raw["architecture"]["model"]
        keys = FAMILY_KEYS[family]
        transfers = space["transfer"] if space["transfer"] is not None else [raw.get("transfer")]
        for values in itertools.product(*(space[family][k] for k in keys)):
            shape = dict(zip(keys, values))
            for transfer in transfers:
                student = copy.deepcopy(raw)
                student["architecture"] = {**raw["architecture"], **shape}
                student["transfer"] = transfer
                out.append(Candidate(_name(recipe, family, shape, transfer, space["transfer"] is not None),
                                     recipe, student))
    return out


def candidates(config: dict, task: str, teacher: dict, family: str | None = None
               ) -> tuple[list[Candidate], dict[str, str]]:
    """``(the task's candidates in their seeded order, {name: why it is none})``: the grid's
    students that can learn from the task's ``teacher`` (its config, and ``family`` as
    :func:`kdlib.distill.spec.check_students` takes them), the first ``space.candidates`` of them
    (0: all)."""
    space = settings(config, task)["space"]
    everything = grid(config, space)
    order = np.random.default_rng(space["seed"]).permutation(len(everything)).tolist()
    kept, skipped = [], {}
    for i in order:
        candidate = everything[i]
        try:
            check_students({**config, "students": {candidate.name: candidate.student}}, teacher, task, family)
        except ConfigError as exc:
            skipped[candidate.name] = str(exc).replace(f"student {candidate.name}: ", "")
            continue
        kept.append(candidate)
    return (kept[:space["candidates"]] if space["candidates"] else kept), skipped


def baseline_student(config: dict, candidate: Candidate) -> dict:
    """The candidate's baseline: its architecture on hard labels, with the training settings of the
    first configured baseline of its family that starts from random weights (none: the shared
    students_train)."""
    family = candidate.student["architecture"]["model"]
    peer = next((s for s in config["students"].values() if s["algorithm"] == BASELINE_ALGORITHM
                 and s["architecture"]["model"] == family and s["architecture"]["init"] == "random"), None)
    student = copy.deepcopy(peer) if peer is not None else {
        "algorithm": BASELINE_ALGORITHM, "hyperparameters": copy.deepcopy(candidate.student["hyperparameters"]),
        "train": {}, "first_phase_train": {}}
    student["architecture"] = copy.deepcopy(candidate.student["architecture"])
    student["transfer"] = None
    return student
