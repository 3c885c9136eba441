"""The workflow's plan: from a validated config.yaml, which files each job reads and which
arguments it gets. ``rules/*.smk`` wire these methods to rules as input and params functions;
they are plain Python, so the tests call them without Snakemake.

A method that a rule calls takes ``w``, the job's wildcards (any object with the attributes the
rule's output pattern names: ``w.task``, ``w.student``, ``w.member``, ``w.transfer``...), and for
params that read the job's inputs, ``input`` too. The other methods take plain names.

Names: a *run* is a student trained with one seed (``kd``, ``kd_seed1``,
:func:`kdlib.config.runs`); *members* are the teachers of ``teacher.ensemble`` (``k`` = 0 is the
task's own teacher folder); a *records* folder is a task's converted dataset, optionally
``+<transfer set>``.
"""
from __future__ import annotations

import functools
import json
import re
import shlex
from pathlib import Path

from . import config as kdconfig
from .data.tasks import BUILTIN_TASKS, GLUE_TASKS, TASKS, get_task, glue_file
from .data.transfer import result_settings as transfer_settings
from .distill import recipes
from .distill.spec import check_students, student_spec, transfer_of
from .errors import ConfigError
from .io import file_digest, folder_tokenizer, read_json
from .models import families, pretrained
from .search import space
from .search.pick import feasible

# Path templates: every rule's pattern and every function here use these.
TEACHER = "results/{task}/teacher"                        # the task's teacher, a model folder
MODEL = "results/{task}/{model}"                          # any model folder: teacher or a run
WEIGHTS = "model.safetensors"                             # a model folder's weights
TEACHER_WEIGHTS = f"{TEACHER}/{WEIGHTS}"
STUDENT_WEIGHTS = f"results/{{task}}/{{student}}/{WEIGHTS}"
MODEL_WEIGHTS = f"{MODEL}/{WEIGHTS}"
INIT = "results/{task}/init/{student}"                    # a student's initial layers
LOGITS = "results/{task}/teacher_logits{suffix}.npz"      # suffix: "" or "+<transfer set>"
RECORDS = "data/ofrecord/{task}"                          # a task's record folders live here
HAND_ROOT = "data/glue"           # a task's files placed by hand (or prepared: the built-in tweets)
DOWNLOAD_ROOT = "data/download"   # ... else downloaded (download_glue)
# Names a student may not take: they are other files of results/<task>/.
RESERVED_NAMES = ("teacher", "init", "report", "accuracy_vs_speedup", "speed", "training_curves", "search")


class Untracked:
    """A param value that a job needs but whose changes must not rerun it: a setting that cannot
    change the job's outputs (how often a resume state is saved, :data:`kdlib.config.RUN_ONLY`;
    where from and how patiently a download fetches). Snakemake's params rerun trigger records
    only params of builtin types, so it does not record this one; in a shell command it formats
    as its value. tests/test_workflow_reliability.py and tests/test_workflow_e2e.py check that a
    change plans nothing."""

    def __init__(self, value):
        self.value = value

    def __str__(self) -> str:
        return str(self.value)


def _folder_files(folder: Path) -> list[str]:
    """A fine-tuned folder's config and weights: a change to either imports it again."""
    return [str(folder / "config.json"), str(folder / WEIGHTS)]


def _any_or_none(names) -> str:
    """A wildcard constraint matching exactly ``names`` (none at all: nothing)."""
    return "|".join(names) or "(?!)"


class Plan:
    """The plan of one validated ``config`` (schema defaults filled in). ``backend``,
    ``precision``, ``train_python`` and ``data_python`` are the run's runtimes as the Snakefile
    resolved them; ``job_threads`` a training job's threads. Building it checks everything a
    job would otherwise find late (reserved names, every teacher's folder, every student against
    its teacher, students' tokenizers); each problem is one :class:`ConfigError` line."""

    def __init__(self, config: dict, *, backend: str, precision: str, train_python: str,
                 data_python: str, job_threads: int = 1):
        self.config = config
        self.backend, self.precision, self.device = backend, precision, config["device"]
        self.train_python, self.data_python, self.job_threads = train_python, data_python, job_threads
        self.custom = config["custom_tasks"]
        self.transfer = config["transfer"]
        self.students = list(config["students"])
        for name in self.students:
            if name in RESERVED_NAMES or kdconfig.SEED_SUFFIX.match(name) or re.fullmatch(r"teacher_\d+", name) \
                    or name.startswith(space.PREFIX):
                raise ConfigError(f"students.{name}: the name is reserved (or ends like a seed run, "
                                  "_seed<k>, names an ensemble's teacher, teacher_<k>, or starts like a "
                                  f"search's candidate, {space.PREFIX}); choose another")
        self.runs = [run for s in self.students for run in kdconfig.runs(config, s)]
        # the students a run's settings are looked up in: the configured ones and every search
        # candidate with its baseline (kdlib.search.space); only the configured ones are paired
        # with baselines by architecture (kdconfig.compared_with reads self.config)
        self.spec_config = {**config, "students": dict(config["students"])}
        self.ensemble = config["teacher"]["ensemble"]
        self.members = list(range(len(self.ensemble)))
        self.models = ["teacher", *self.students]       # model folders: the teacher, each student's first run
        self.bert_models = ["teacher", *[s for s in self.students if not self.is_lstm(s)]]
        try:
            self.teacher_dir = pretrained.resolve_pretrained(config["teacher"]["pretrained"])
        except ConfigError as exc:
            raise ConfigError(f"teacher.pretrained: {exc}") from None
        self.pretrained_inputs = [str(self.teacher_dir / f) for f in pretrained.PRETRAINED_FILES]
        self.teacher_config = pretrained.read_pretrained_config(self.teacher_dir)
        self.finetuned_tasks = [t for t in (*TASKS, *self.custom) if self.finetuned_folder(t)]
        for task in dict.fromkeys([*config["tasks"], *self.finetuned_tasks]):
            self.check_teacher(task)
        for k in self.members[1:]:                   # every ensemble folder holds a fine-tuned teacher
            self.member_config(k)
        for run in self.students:                    # every student's own tokenizer exists
            self.student_tokenizer_file(run)
        # the search (make search): a mistake in search: is found here but said only when a search
        # is asked for (search_targets), so that it never stops a run that does not search
        self.search_tasks = [t for t in config["tasks"] if space.settings(config, t)]
        self.candidates, self.search_errors = {}, {}
        for task in self.search_tasks:
            try:
                self.candidates[task] = self._search_candidates(task)
            except ConfigError as exc:
                self.candidates[task], self.search_errors[task] = ([], {}), str(exc)
        self.searched = [name for task in self.search_tasks for c in self.candidates[task][0]
                         for name in (c.name, c.baseline)]
        self.search_runs = [run for name in dict.fromkeys(self.searched) for run in kdconfig.runs(config, name)]
        self.exportable_bert = [*self.bert_models, *[n for n in dict.fromkeys(self.searched) if not self.is_lstm(n)]]

    # ---- wildcard constraints ---------------------------------------------------------------------
    @property
    def constraints(self) -> dict[str, str]:
        """The regular expression of each wildcard."""
        one_dev = [TASKS[t].glue_dir for t in GLUE_TASKS if TASKS[t].dev_splits == ("dev",)]
        return {"task": _any_or_none([*TASKS, *self.custom]), "transfer": _any_or_none(self.transfer),
                "builtin": "|".join(BUILTIN_TASKS), "glue_dir": "|".join(one_dev),
                "seq": r"\d+", "member": r"\d+", "digest": r"[0-9a-f]{12}",
                "records": r"(bert|lstm)\d+(-tok_[0-9a-f]{12})?",
                "student": _any_or_none([*self.runs, *self.search_runs]),
                "model": "|".join([*self.models, *dict.fromkeys(self.searched)])}

    @property
    def imported_re(self) -> str:
        """The tasks whose teacher is imported (teacher.finetuned)."""
        return _any_or_none(self.finetuned_tasks)

    @property
    def finetuned_here_re(self) -> str:
        """The tasks whose teacher is fine-tuned here."""
        return _any_or_none([t for t in (*TASKS, *self.custom) if t not in self.finetuned_tasks])

    # ---- runtimes ---------------------------------------------------------------------------------
    def runtime_args(self, backend: str | None = None) -> str:
        """The stage's --backend, --device and --precision (a param: a change reruns the job)."""
        return f"--backend {backend or self.backend} --device {self.device} --precision {self.precision}"

    def teacher_runtime(self, w) -> str:
        """A stage that runs the task's teacher(s): transformers teachers run on torch."""
        return self.runtime_args("torch" if self.hf_teacher(w.task) else None)

    def member_runtime(self, w) -> str:
        return self.runtime_args("torch" if self.member_is_hf(w.task, w.member) else None)

    def teacher_python(self, w) -> str:
        """The runtime of a stage that runs the teacher: the torch runtime for a transformers teacher."""
        return self.data_python if self.hf_teacher(w.task) else self.train_python

    def member_python(self, w) -> str:
        return self.data_python if self.member_is_hf(w.task, w.member) else self.train_python

    # ---- a task's files and records ---------------------------------------------------------------
    def task(self, name: str):
        return get_task(name, self.custom)

    def task_tsvs(self, w) -> list[str]:
        """Every split's file of a task: a custom task's own files (workflow inputs, so editing one
        reruns its records and what follows); else placed by hand or prepared (in
        :data:`HAND_ROOT`); else downloaded (:data:`DOWNLOAD_ROOT`). No rule owns a file placed by
        hand, so Snakemake never removes one."""
        task = self.task(w.task)
        placed = [glue_file(HAND_ROOT, task, split) for split in task.splits]
        if task.custom or task.name not in GLUE_TASKS or all(p.is_file() for p in placed):
            return [str(p) for p in placed]
        return [str(glue_file(DOWNLOAD_ROOT, task, split)) for split in task.splits]

    def validation_args(self, w):
        """How a validation split without a file of its own is carved from train (data.validation):
        a param of the record and transfer-set stages, so a change rebuilds them and all that
        follows; untracked for a task with a validation file, which does not use it."""
        carve = self.config["data"]["validation"]
        args = (f"--validation-fraction {carve['fraction']} --validation-max-rows {carve['max_rows']}"
                f" --validation-seed {carve['seed']}")
        return Untracked(args) if self.task(w.task).validation_file else args

    def custom_definition(self, w) -> str:
        """A custom task's definition as the record stages' --custom JSON (a param: editing it
        reruns them); nothing for a built-in task."""
        if w.task not in self.custom:
            return ""
        return f"--custom {shlex.quote(json.dumps(self.custom[w.task], sort_keys=True))}"

    def glue_task_name(self, w) -> str:
        """The task id of a GLUE folder name (SST-2 -> sst2)."""
        return next(t.name for t in TASKS.values() if t.glue_dir == w.glue_dir)

    def bert_dir(self, task: str) -> str:
        """The task's BERT records, made with the teacher's tokenizer."""
        return f"{RECORDS.format(task=task)}/bert{kdconfig.max_length(self.config, task)}"

    def bert_dir_of(self, w) -> str:
        return self.bert_dir(w.task)

    def bert_records_of(self, w) -> str:
        return f"{self.bert_dir(w.task)}/meta.json"

    def transfer_records_dir(self, w) -> str:
        """The task's BERT records with transfer set ``w.transfer`` mixed in."""
        return f"{self.bert_dir(w.task)}+{w.transfer}"

    def transfer_records_of(self, w) -> str:
        return f"{self.transfer_records_dir(w)}/meta.json"

    # ---- transfer sets ----------------------------------------------------------------------------
    def _tinybert_set(self, w) -> bool:
        return self.transfer[w.transfer].get("augment") == "tinybert"

    def transfer_inputs(self, w) -> dict:
        """A transfer set's sources: the task's files, the user's unlabeled file if it names one,
        and for augment: tinybert the pretrained folder (its masked LM proposes replacements)."""
        inputs = {"tsv": self.task_tsvs(w)}
        unlabeled = self.transfer[w.transfer]["unlabeled"]
        if unlabeled and unlabeled != "builtin":
            inputs["unlabeled"] = str(Path(unlabeled).expanduser())
        if self._tinybert_set(w):
            inputs["pretrained"] = self.pretrained_inputs
        return inputs

    def transfer_python(self, w) -> str:
        """augment: tinybert runs the pretrained masked LM, in the backend's runtime on every core;
        the other sets are one-core data jobs in the workflow runtime."""
        return self.train_python if self._tinybert_set(w) else self.data_python

    def transfer_threads(self, w) -> int:
        return self.job_threads if self._tinybert_set(w) else 1

    def transfer_model_args(self, w) -> str:
        """augment: tinybert's pretrained folder, runtime and batch size (a param: changing one
        rebuilds the tinybert sets alone); nothing for another set."""
        if not self._tinybert_set(w):
            return ""
        return (f"--pretrained {shlex.quote(str(self.teacher_dir))} {self.runtime_args()}"
                f" --batch-size {self.config['eval_batch_size']}")

    def transfer_definition(self, w) -> str:
        """The set's settings as JSON: a param, so changing one rebuilds that set alone (the keys
        of an augmenter it does not use are left out: changing them rebuilds nothing)."""
        return json.dumps(transfer_settings(self.transfer[w.transfer]), sort_keys=True)

    # ---- the teacher of each task -----------------------------------------------------------------
    # Fine-tuned here from teacher.pretrained (finetune_teacher), or the user's already fine-tuned
    # classifier (teacher.finetuned; import_teacher). A BERT becomes a kdlib checkpoint; a teacher
    # of another family runs through transformers, in the torch runtime.
    def finetuned_folder(self, task: str) -> Path | None:
        """The task's fine-tuned teacher folder (teacher.finetuned), or None: fine-tuned here."""
        folder = kdconfig.finetuned_teacher(self.config, task)
        return Path(folder).expanduser() if folder else None

    def finetuned_inputs(self, w) -> list[str]:
        return _folder_files(self.finetuned_folder(w.task))

    def finetuned_folder_of(self, w) -> str:
        return str(self.finetuned_folder(w.task))

    @functools.lru_cache(maxsize=None)
    def teacher_shape(self, task: str) -> tuple[dict, str | None]:
        """``(the BERT config a student follows, family)`` of the task's teacher: the pretrained
        folder's config and None when the teacher is fine-tuned here; else the fine-tuned folder's
        (checked, :func:`kdlib.models.families.check_folder`), with its ``model_type`` as the
        family when kdlib runs it only through transformers."""
        folder = self.finetuned_folder(task)
        if folder is None:
            return self.teacher_config, None
        hf = families.check_folder(folder, f"teacher.finetuned ({task})")
        if families.runs_in_kdlib(hf):
            return pretrained.read_pretrained_config(folder), None
        size = families.tokenizer_size(folder_tokenizer(folder))
        return families.student_shape(hf, size), hf["model_type"]

    def check_teacher(self, task: str) -> None:
        """Every student can learn from the task's teacher (:func:`check_students`); a layer copied
        from teacher.pretrained needs the records' vocabulary."""
        shape, family = self.teacher_shape(task)
        check_students(self.config, shape, task, family)
        folder = self.finetuned_folder(task)
        if folder is not None and any(self.init(s) == "pretrained" for s in self.students) and (
                families.vocabulary(folder_tokenizer(folder))
                != families.vocabulary(self.teacher_dir / "vocab.txt")):
            raise ConfigError(
                f"teacher.finetuned ({task}): a student with init: pretrained copies layers of teacher.pretrained, "
                f"whose vocabulary is not the one of {folder}; set teacher.pretrained to the base model it "
                "was fine-tuned from")

    def teacher_settings(self, w) -> str:
        """What changes the teacher of a task: a param, so a change reruns the teacher."""
        train = kdconfig.teacher_train(self.config, w.task)
        return json.dumps(kdconfig.result_settings(train), sort_keys=True)

    def teacher_spec(self, w) -> Untracked:
        """All the task's teacher training settings as JSON, for the stage (untracked)."""
        return Untracked(json.dumps(kdconfig.teacher_train(self.config, w.task), sort_keys=True))

    def teacher_tokenizer_file(self, task: str) -> Path:
        """The tokenizer file the task's BERT records are made with: the fine-tuned teacher's
        (tokenizer.json, else vocab.txt), or the pretrained folder's vocab.txt."""
        folder = self.finetuned_folder(task)
        return self.teacher_dir / "vocab.txt" if folder is None else folder_tokenizer(folder)

    def teacher_tokenizer(self, w) -> str:
        return str(self.teacher_tokenizer_file(w.task))

    def hf_teacher(self, task: str) -> bool:
        """Whether a stage that runs the task's teacher (every teacher of an ensemble) needs
        transformers."""
        return any(self.member_is_hf(task, k) for k in (self.members or [0]))

    # ---- an ensemble of teachers (teacher.ensemble) -----------------------------------------------
    # Teacher k = 0 is the task's teacher folder (fine-tuned here, or the first folder); teacher
    # k >= 1 is imported into results/{task}/teacher_<k>/. Each is evaluated; teacher_eval.json is
    # then the ensemble's, the mean of their probabilities (kdlib.evaluate.ensemble).
    def member_source(self, k) -> Path:
        return Path(self.ensemble[int(k)]).expanduser()

    def member_source_of(self, w) -> str:
        return str(self.member_source(w.member))

    @functools.lru_cache(maxsize=None)
    def member_config(self, k) -> dict:
        """The checked config.json of ensemble folder ``k`` >= 1."""
        return families.check_folder(self.member_source(k), f"teacher.ensemble[{int(k)}]")

    def member_is_hf(self, task: str, k) -> bool:
        """Whether ensemble teacher ``k`` runs through transformers."""
        if int(k) == 0:
            return self.teacher_shape(task)[1] is not None
        return not families.runs_in_kdlib(self.member_config(int(k)))

    def member_tokenizer_file(self, task: str, k) -> Path:
        if int(k) == 0:
            return self.teacher_tokenizer_file(task)
        return folder_tokenizer(self.member_source(k))

    def member_records_dir(self, task: str, k, transfer: str | None = None) -> str:
        """The record folder teacher ``k`` reads: made with its tokenizer (:meth:`tokenized_dir`)."""
        folder = self.tokenized_dir(task, self.member_tokenizer_file(task, k))
        return f"{folder}+{transfer}" if transfer else folder

    def member_records_of(self, w) -> str:
        return self.member_records_dir(w.task, w.member)

    def member_folder(self, task: str, k) -> str:
        return TEACHER.format(task=task) if int(k) == 0 else f"{TEACHER.format(task=task)}_{int(k)}"

    def member_folder_of(self, w) -> str:
        return self.member_folder(w.task, w.member)

    def member_inputs(self, w) -> dict:
        """Teacher ``k``'s weights in its teacher folder and the meta.json of its records."""
        return {"weights": f"{self.member_folder(w.task, w.member)}/{WEIGHTS}",
                "records": f"{self.member_records_dir(w.task, w.member)}/meta.json"}

    def member_source_inputs(self, w) -> dict:
        """Ensemble folder ``k`` >= 1's config and weights (a change imports it again) and its
        records."""
        return {"finetuned": _folder_files(self.member_source(w.member)),
                "records": f"{self.member_records_dir(w.task, w.member)}/meta.json"}

    def ensemble_cache_inputs(self, w) -> list[str]:
        """The other teachers' weights and records that an ensemble's logit cache reads (of the
        job's transfer set, if it has one)."""
        transfer = getattr(w, "transfer", None)
        return [path for k in self.members[1:]
                for path in (f"{self.member_folder(w.task, k)}/{WEIGHTS}",
                             f"{self.member_records_dir(w.task, k, transfer)}/meta.json")]

    def ensemble_members_arg(self, w) -> str:
        """--members of the logit cache: each other teacher's folder=records."""
        if not self.ensemble:
            return ""
        transfer = getattr(w, "transfer", None)
        return "--members " + " ".join(
            f"{self.member_folder(w.task, k)}={self.member_records_dir(w.task, k, transfer)}"
            for k in self.members[1:])

    # ---- records of another tokenizer -------------------------------------------------------------
    # A student with its own tokenizer (architecture.tokenizer) and an ensemble's teacher with
    # another read records of theirs, data/ofrecord/<task>/bert<L>-tok_<digest>/, named by the
    # file's sha256.
    @staticmethod
    @functools.lru_cache(maxsize=None)
    def digest(path) -> str:
        return file_digest(path)[:12]

    def tokenized_dir(self, task: str, tokenizer) -> str:
        """The BERT record folder of ``tokenizer`` (a file): the task's own when it is the teacher's."""
        if tokenizer is None or self.digest(tokenizer) == self.digest(self.teacher_tokenizer_file(task)):
            return self.bert_dir(task)
        return f"{self.bert_dir(task)}-tok_{self.digest(tokenizer)}"

    @functools.lru_cache(maxsize=None)
    def student_tokenizer_file(self, run: str) -> Path | None:
        """A BERT student's own tokenizer file (architecture.tokenizer), or None: the teacher's."""
        student = kdconfig.run_of(run)[0]
        spec = self.spec_config["students"][student].get("architecture") or {}
        if not spec.get("tokenizer"):
            return None
        try:
            return pretrained.resolve_tokenizer(spec["tokenizer"])
        except ConfigError as exc:
            raise ConfigError(f"students.{student}.architecture.tokenizer: {exc}") from None

    def tokenizer_of(self, w) -> str:
        """The tokenizer file whose digest names a record folder (a student's or an ensemble
        teacher's)."""
        candidates = [self.student_tokenizer_file(s) for s in self.spec_config["students"]] + [
            self.member_tokenizer_file(w.task, k) for k in self.members[1:]]
        for path in candidates:
            if path is not None and self.digest(path) == w.digest:
                return str(path)
        raise ConfigError(f"no student or teacher has the tokenizer of digest {w.digest}")

    # ---- students ---------------------------------------------------------------------------------
    def recipe(self, run: str) -> recipes.Recipe:
        student = kdconfig.run_of(run)[0]
        return recipes.get_recipe(self.spec_config["students"][student]["algorithm"], student)

    def is_lstm(self, run: str) -> bool:
        return self.spec_config["students"][kdconfig.run_of(run)[0]]["architecture"]["model"] == "bilstm"

    def init(self, run: str) -> str:
        return student_spec(self.spec_config, run)["architecture"]["init"]

    def transfer_of(self, run: str, task: str) -> str | None:
        """The transfer set a run trains with on ``task`` (a set's ``tasks`` may leave it out)."""
        return transfer_of(self.spec_config, run, task)

    def records_dir(self, task: str, run: str, transfer: bool = True) -> str:
        """A run's record folder: its architecture's (a BERT's of its tokenizer), or with
        ``transfer`` its set's copy."""
        if self.is_lstm(run):
            folder = f"{RECORDS.format(task=task)}/lstm{self.config['data']['lstm']['max_length']}"
        else:
            folder = self.tokenized_dir(task, self.student_tokenizer_file(run))
        chosen = self.transfer_of(run, task) if transfer else None
        return f"{folder}+{chosen}" if chosen else folder

    def student_records_dir(self, w) -> str:
        """The record folder a student trains on: with a transfer set, the copy with it mixed in."""
        return self.records_dir(w.task, w.student)

    def student_records_of(self, w) -> str:
        return f"{self.student_records_dir(w)}/meta.json"

    def eval_records_dir(self, w) -> str:
        """The record folder a student is evaluated on: its architecture's (bert or lstm)."""
        return self.records_dir(w.task, w.student, transfer=False)

    def eval_records_of(self, w) -> str:
        return f"{self.eval_records_dir(w)}/meta.json"

    def compared(self, run: str) -> list[str]:
        """The distilled students a baseline run must match in steps (config ``equal_steps``)."""
        if not self.config["equal_steps"] or self.recipe(run).name != kdconfig.BASELINE_ALGORITHM:
            return []
        student = kdconfig.run_of(run)[0]
        if student.startswith(space.PREFIX):             # a candidate's baseline: that candidate's steps
            return [student.removesuffix(space.BASELINE_SUFFIX)]
        return kdconfig.compared_with(self.config, student)

    def match_steps(self, w) -> str:
        """A baseline's --match-steps: each compared student's records and its phases' epochs and
        batch sizes (a param: a change to them reruns the baseline; its records are inputs)."""
        students = []
        for student in self.compared(w.student):
            spec = student_spec(self.spec_config, student, w.task)
            phases = [spec[p] for p in ("first_phase_train", "train") if p in spec]
            students.append({"student": student, "records": self.records_dir(w.task, student),
                             "phases": [{"epochs": p["epochs"], "batch_size": p["batch_size"]} for p in phases]})
        return f"--match-steps {shlex.quote(json.dumps(students, sort_keys=True))}" if students else ""

    def distill_spec(self, run: str, task: str) -> dict:
        """What the distill stage gets: the run's :func:`student_spec`, and for a BERT student that
        does not run the teacher, the teacher's widths it follows (``teacher_widths``, with the
        vocabulary of its own tokenizer where it has one). They come from the teacher's config,
        known before the teacher trains, so retraining the teacher (more epochs) does not retrain
        a baseline that learns nothing from it; a change of the widths does (a param)."""
        spec = student_spec(self.spec_config, run, task)
        if spec["architecture"]["model"] == "bert" and not self.recipe(run).needs_teacher:
            shape = self.teacher_shape(task)[0]
            widths = {k: shape[k] for k in recipes.TEACHER_WIDTHS if k in shape}
            own = self.student_tokenizer_file(run)
            if own is not None and self.digest(own) != self.digest(self.teacher_tokenizer_file(task)):
                widths["vocab_size"] = families.tokenizer_size(own)
            spec["teacher_widths"] = widths
        return spec

    def student_settings(self, w) -> str:
        """What changes a student: a param, so changing one reruns only this student."""
        return json.dumps(kdconfig.result_settings(self.distill_spec(w.student, w.task)), sort_keys=True)

    def student_spec_json(self, w) -> Untracked:
        """The student's resolved settings as JSON, for the stage (untracked)."""
        return Untracked(json.dumps(self.distill_spec(w.student, w.task), sort_keys=True))

    def init_inputs(self, w) -> dict:
        """What a student's initial layers come from: the fine-tuned teacher (init: teacher), or
        the pretrained folder and the task's records, for the label count (init: pretrained)."""
        if self.init(w.student) == "pretrained":
            return {"pretrained": self.pretrained_inputs, "records": self.bert_records_of(w)}
        return {"weights": TEACHER_WEIGHTS.format(task=w.task)}

    def init_source(self, w) -> str:
        if self.init(w.student) == "pretrained":
            return (f"--pretrained {shlex.quote(str(self.teacher_dir))} --task {w.task}"
                    f" --records {self.bert_dir(w.task)}")
        return f"--teacher {TEACHER.format(task=w.task)}"

    def student_init_layers(self, w) -> str:
        """The teacher layers copied into the student, as the export stage's --layers."""
        source = self.teacher_config if self.init(w.student) == "pretrained" else self.teacher_shape(w.task)[0]
        layers = recipes.init_layers(student_spec(self.spec_config, w.student), int(source["num_hidden_layers"]))
        return ",".join(str(t) for t in layers)

    def distill_inputs(self, w) -> dict:
        """What a student's distill job reads: its records, and what its recipe needs from the
        teacher (:meth:`kdlib.distill.recipes.Recipe.needs`, the one place that decides it)."""
        task, run = w.task, w.student
        needs = self.recipe(run).needs(self.distill_spec(run, task))
        inputs = {"records": self.student_records_of(w)}
        compared = sorted({f"{self.records_dir(task, s)}/meta.json" for s in self.compared(run)})
        if compared:
            inputs["compared"] = compared          # their row counts set the baseline's steps
        if needs["logits"]:
            transfer = self.transfer_of(run, task)
            inputs["logits"] = LOGITS.format(task=task, suffix=f"+{transfer}" if transfer else "")
        if needs["teacher"]:
            inputs["teacher"] = TEACHER_WEIGHTS.format(task=task)
        if needs["init"]:
            inputs["init"] = f"{INIT.format(task=task, student=kdconfig.run_of(run)[0])}/{WEIGHTS}"
        return inputs

    @staticmethod
    def folder_of_weights(w, input) -> str:
        """The folder that holds the rule's ``weights`` input (a HF or kdflow checkpoint folder)."""
        return str(Path(input.weights).parent)

    @staticmethod
    def tsv_root(w, input) -> str:
        """The --glue-root of a record stage: the folder that holds the task's TSV folder."""
        return str(Path(input.tsv[0]).parent.parent)

    @staticmethod
    def distill_sources(w, input) -> str:
        """The distill script's --teacher/--logits/--init arguments, from the job's inputs."""
        args = []
        if "teacher" in input.keys():
            args += ["--teacher", str(Path(input.teacher).parent)]
        if "logits" in input.keys():
            args += ["--logits", input.logits]
        if "init" in input.keys():
            args += ["--init", str(Path(input.init).parent)]
        return " ".join(args)

    # ---- evaluation, speed and the report ---------------------------------------------------------
    def speed_models(self, w) -> list[str]:
        """The speed stage's models: the teacher (every teacher of an ensemble), then every
        student's first run."""
        teachers = [self.member_folder(w.task, k) for k in self.members] or [TEACHER.format(task=w.task)]
        return teachers + [MODEL.format(task=w.task, model=s) for s in self.students]

    def speed_weights(self, w) -> list[str]:
        return [f"{folder}/{WEIGHTS}" for folder in self.speed_models(w)]

    def speed_records(self, w) -> list[str]:
        """Each model's record folder, in the order of :meth:`speed_models`."""
        teachers = [self.member_records_dir(w.task, k) for k in self.members] or [self.bert_dir(w.task)]
        return teachers + [self.records_dir(w.task, s, transfer=False) for s in self.students]

    def speed_ensemble(self, w) -> str:
        return f"--ensemble {len(self.members)}" if self.members else ""

    def speed_record_files(self, w) -> list[str]:
        """The record folders' meta.json the speed stage reads (each once)."""
        return sorted({f"{records}/meta.json" for records in self.speed_records(w)})

    def report_logs(self, w) -> list[str]:
        """The training logs the report plots: every student's, and the teacher's where it was
        fine-tuned here."""
        models = self.students if self.finetuned_folder(w.task) else ["teacher", *self.students]
        return [f"{MODEL.format(task=w.task, model=m)}/train_log.csv" for m in models]

    def weights(self, task: str) -> list[str]:
        """The weights of every model the task's report reads: each teacher (every teacher of an
        ensemble) and every run. Targets of their own, so that a model a failed rerun removed is
        trained again, though the eval JSONs and the report made from it still exist (Snakemake
        does not rerun a job whose output exists for an intermediate file that is missing)."""
        teachers = [self.member_folder(task, k) for k in self.members] or [TEACHER.format(task=task)]
        return [f"{folder}/{WEIGHTS}" for folder in teachers] + [
            STUDENT_WEIGHTS.format(task=task, student=run) for run in self.runs]

    def default_targets(self, w) -> list[str]:
        """Every task's report, the model card of each of its model folders and every model's
        weights (:meth:`weights`)."""
        return [path for task in self.config["tasks"] for path in (
            f"results/{task}/report.md", *[f"{MODEL.format(task=task, model=m)}/README.md" for m in self.models],
            *self.weights(task))]

    # ---- shipping (rules/export.smk) --------------------------------------------------------------
    def model_records_dir(self, w) -> str:
        """The record folder a model is evaluated on (a student's without its transfer set)."""
        if w.model == "teacher":
            return self.bert_dir(w.task)
        return self.records_dir(w.task, w.model, transfer=False)

    def model_records_of(self, w) -> str:
        return f"{self.model_records_dir(w)}/meta.json"

    def model_eval(self, w) -> str:
        """A model folder's eval JSON (the folder of an ensemble's first teacher: teacher_0's)."""
        name = "teacher_0" if w.model == "teacher" and self.ensemble else w.model
        return f"results/{w.task}/{name}_eval.json"

    def model_transfer(self, w) -> str:
        """The transfer set a model trained with, or '' (the teacher: none)."""
        return "" if w.model == "teacher" else (self.transfer_of(w.model, w.task) or "")

    def deploy_targets(self, w) -> list[str]:
        """``deploy``: every task's deployment table, HuggingFace exports (not of a teacher that
        transformers runs: it is one already) and model cards."""
        return [path for task in self.config["tasks"] for path in (
            f"results/{task}/deployment.md",
            *[f"results/{task}/export/{m}/hf/config.json" for m in self.bert_models
              if m != "teacher" or not self.member_is_hf(task, 0)],
            *[f"{MODEL.format(task=task, model=m)}/README.md" for m in self.models], *self.weights(task))]

    def deploy_records(self, w) -> list[str]:
        """Each model's record folder, in the order of ``models`` (an ensemble's first teacher's:
        the deployment table's teacher)."""
        return [self.bert_dir(w.task)] + [self.records_dir(w.task, s, transfer=False) for s in self.students]

    def deploy_record_files(self, w) -> list[str]:
        return sorted({f"{r}/meta.json" for r in self.deploy_records(w)})

    # ---- the search (rules/search.smk) ------------------------------------------------------------
    # Candidates are students (kdlib.search.space) looked up in spec_config; the feasible ones and
    # the pick are known only once checkpoints ran, so the rules read their JSONs and hand the
    # paths to these methods.
    def _search_candidates(self, task: str) -> tuple[list, dict]:
        """The task's candidates and the grid's students that are none (name -> why); each
        candidate and its baseline join ``spec_config``."""
        if self.config["selection"] == "dev":
            raise ConfigError("search: a search picks its student on validation, and selection: dev would "
                              "select every candidate's checkpoint on dev; set selection: validation")
        settings = space.settings(self.config, task)
        own = "space" in (self.config["search"]["per_task"].get(task) or {})
        space.check_recipes(self.config, settings["space"], f"search.per_task.{task}.space" if own else "search.space")
        teacher, family = self.teacher_shape(task)
        kept, skipped = space.candidates(self.config, task, teacher, family)
        for c in kept:
            self.spec_config["students"][c.name] = c.student
            self.spec_config["students"][c.baseline] = space.baseline_student(self.config, c)
        if not kept:
            raise ConfigError(f"search ({task}): no student of the space can learn from the teacher: "
                              + "; ".join(f"{n}: {why}" for n, why in list(skipped.items())[:3]))
        return kept, skipped

    def search_target(self, w) -> dict:
        return space.settings(self.config, w.task)["target"]

    def search_target_json(self, w) -> str:
        """The target as the feasibility stage's --target (a param: a change measures again)."""
        return json.dumps(self.search_target(w), sort_keys=True)

    def search_candidates_json(self, w) -> str:
        """Each candidate's recipe, algorithm, architecture, transfer set and record folder, and the
        grid's students that are none, as the feasibility stage's --candidates (a param: a change of
        the space measures again; training stays cached by name)."""
        kept, skipped = self.candidates[w.task]
        return json.dumps({"candidates": [{        # a list: the search's seeded order
            "name": c.name, "recipe": c.recipe, "records": self.records_dir(w.task, c.name, transfer=False),
            "spec": {k: v for k, v in student_spec(self.spec_config, c.name, w.task).items()
                     if k in ("algorithm", "architecture", "transfer")}} for c in kept],
            "skipped": skipped}, sort_keys=True)

    def feasibility_inputs(self, w) -> dict:
        """The teacher and every candidate's record folder (the validation split is timed)."""
        records = {self.bert_dir(w.task)} | {self.records_dir(w.task, c.name, transfer=False)
                                             for c in self.candidates[w.task][0]}
        return {"teacher": TEACHER_WEIGHTS.format(task=w.task),
                "records": sorted(f"{r}/meta.json" for r in records)}

    def search_onnx(self, w) -> bool:
        return self.search_target(w)["runtime"] == "onnx_int8"

    def feasibility_python(self, w) -> str:
        """onnx_int8 runs in the workflow runtime (onnxruntime, the teacher in eager PyTorch); kdlib in
        the teacher's runtime, as the speed stage."""
        return self.data_python if self.search_onnx(w) else self.teacher_python(w)

    def feasibility_runtime(self, w) -> str:
        return "--backend torch --device cpu --precision fp32" if self.search_onnx(w) else self.teacher_runtime(w)

    def search_summaries(self, w, feasibility: str) -> list[str]:
        """The training summaries of the candidates the feasibility JSON kept (trained, cached)."""
        return [f"{MODEL.format(task=w.task, model=name)}/train_summary.json"
                for name in feasible(read_json(feasibility))]

    def search_pick(self, pick: str) -> tuple[str, str]:
        """``(the pick, its baseline)`` of a search's pick.json."""
        chosen = read_json(pick)
        return chosen["pick"], chosen["baseline"]

    def search_speed_models(self, w, pick: str) -> list[str]:
        """The search's speed stage times the teacher, the pick and its baseline."""
        return [TEACHER.format(task=w.task)] + [MODEL.format(task=w.task, model=m) for m in self.search_pick(pick)]

    def search_speed_records(self, w, pick: str) -> list[str]:
        return [self.bert_dir(w.task)] + [self.records_dir(w.task, m, transfer=False) for m in self.search_pick(pick)]

    def search_report_inputs(self, w, pick: str) -> dict:
        """What the search's report reads of the pick: every run of it and of its baseline (eval
        JSONs, predictions), and what ships with it (its card, ONNX export, and HuggingFace export
        for a BERT)."""
        task, (chosen, baseline) = w.task, self.search_pick(pick)
        runs = [r for m in (chosen, baseline) for r in kdconfig.runs(self.config, m)]
        exports = [f"results/{task}/export/{chosen}/onnx/check.json"]
        if not self.is_lstm(chosen):
            exports.append(f"results/{task}/export/{chosen}/hf/config.json")
        return {"evals": [f"results/{task}/{r}_eval.json" for r in runs],
                "predictions": [f"results/{task}/{r}_predictions.npz" for r in runs],
                "card": f"{MODEL.format(task=task, model=chosen)}/README.md", "exports": exports}

    def model_speed(self, w) -> str:
        """The speed JSON a model card quotes: a search candidate's is its search's."""
        return f"results/{w.task}/search/speed.json" if w.model.startswith(space.PREFIX) \
            else f"results/{w.task}/speed.json"

    def search_targets(self, w) -> list[str]:
        """``search``: every searched task's search.md (which ships the pick)."""
        for error in self.search_errors.values():
            raise ConfigError(error)
        if not self.search_tasks:
            raise ConfigError("snakemake search needs search.target in config.yaml (e.g. {metric: speedup_batch1, "
                              "bound: 4, runtime: onnx_int8}) and search.space.recipes")
        return [f"results/{task}/search.md" for task in self.search_tasks]


class SearchInputs:
    """The inputs and params of the search's rules that depend on its two checkpoints (Snakemake's
    ``checkpoints``): the feasible candidates (search_feasibility) and the pick (search_select).
    Asking for one before its checkpoint ran makes Snakemake run the checkpoint first."""

    def __init__(self, plan: Plan, checkpoints):
        self.plan, self.checkpoints = plan, checkpoints

    def feasibility(self, w) -> str:
        return self.checkpoints.search_feasibility.get(task=w.task).output[0]

    def pick(self, w) -> str:
        return self.checkpoints.search_select.get(task=w.task).output[0]

    def feasible_summaries(self, w) -> list[str]:
        return self.plan.search_summaries(w, self.feasibility(w))

    def speed_models(self, w) -> list[str]:
        return self.plan.search_speed_models(w, self.pick(w))

    def speed_weights(self, w) -> list[str]:
        return [f"{folder}/{WEIGHTS}" for folder in self.speed_models(w)]

    def speed_records(self, w) -> list[str]:
        return self.plan.search_speed_records(w, self.pick(w))

    def speed_record_files(self, w) -> list[str]:
        return sorted({f"{records}/meta.json" for records in self.speed_records(w)})

    def exports(self, w) -> list[str]:
        """The ONNX folders of the search's deployment table: the teacher's and the pick's."""
        chosen = self.plan.search_pick(self.pick(w))[0]
        return [f"results/{w.task}/export/{m}/onnx" for m in ("teacher", chosen)]

    def export_checks(self, w) -> list[str]:
        return [f"{folder}/check.json" for folder in self.exports(w)]

    def export_records(self, w) -> list[str]:
        return self.speed_records(w)[:2]

    def evals(self, w) -> list[str]:
        return self.plan.search_report_inputs(w, self.pick(w))["evals"]

    def predictions(self, w) -> list[str]:
        return self.plan.search_report_inputs(w, self.pick(w))["predictions"]

    def shipped(self, w) -> list[str]:
        """What ships with the pick: its model card, ONNX export and (a BERT) HuggingFace export."""
        inputs = self.plan.search_report_inputs(w, self.pick(w))
        return [inputs["card"], *inputs["exports"]]

    def pick_weights(self, w) -> str:
        """The pick's weights file in the target's runtime: its size is what size_mb bounds."""
        chosen = self.plan.search_pick(self.pick(w))[0]
        if self.plan.search_onnx(w):
            return f"results/{w.task}/export/{chosen}/onnx/model.int8.onnx"
        return f"{MODEL.format(task=w.task, model=chosen)}/{WEIGHTS}"
