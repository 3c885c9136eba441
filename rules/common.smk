# Config validation, the runtime of each stage, wildcard constraints and named input functions.
import functools
import json
import re
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import kdlib.distill.compiling
import kdlib.distill.recipes
import kdlib.distill.spec
import kdlib.backend
import kdlib.config
import kdlib.errors
import kdlib.io
import kdlib.data.convert
import kdlib.models.families
import kdlib.models.pretrained
import kdlib.data.tasks
import kdlib.data.transfer

# kdlib first, for an error that names the key path; then Snakemake's own check, which also fills
# the schema's defaults into `config`.
config.update(kdlib.config.retype(config))   # nested --config values arrive as strings
try:
    kdlib.config.validate(config)
except kdlib.errors.ConfigError as exc:
    raise WorkflowError(str(exc))
validate(config, kdlib.config.SCHEMA_PATH)

TASKS = kdlib.data.tasks.TASKS
CUSTOM = config["custom_tasks"]      # tasks of the user's own files, by name (kdlib.data.custom)
GLUE_DIRS_ONE_DEV = [TASKS[t].glue_dir for t in kdlib.data.tasks.GLUE_TASKS
                     if TASKS[t].dev_splits == ("dev",)]


TRANSFER = config["transfer"]      # transfer sets by name (kdlib.data.transfer)


wildcard_constraints:
    task="|".join([*TASKS, *CUSTOM]),
    transfer="|".join(TRANSFER) or "(?!)",
    builtin="|".join(kdlib.data.tasks.BUILTIN_TASKS),
    glue_dir="|".join(GLUE_DIRS_ONE_DEV),
    seq=r"\d+",
    member=r"\d+",
    digest=r"[0-9a-f]{12}",
    records=r"(bert|lstm)\d+(-tok_[0-9a-f]{12})?",


# ---- runtimes ------------------------------------------------------------------------------------
def _backend():
    runtimes = config["runtimes"]
    oneflow_ready = Path(runtimes["oneflow"]).exists()
    backend = kdlib.backend.resolve(config["backend"], oneflow_available=oneflow_ready)
    if backend == "oneflow" and not oneflow_ready:
        raise WorkflowError(
            f"backend: oneflow needs the OneFlow runtime at {runtimes['oneflow']}; run 'make setup' "
            "(it needs CPython 3.10) or choose backend: torch")
    return backend


BACKEND = _backend()
# The run's mixed precision, decided here like the backend (bf16 where the device computes it
# natively): a param of every training and evaluation rule, so a change reruns them.
try:
    PRECISION = kdlib.backend.resolve_precision(config["precision"], BACKEND, config["device"])
except kdlib.errors.KdflowError as exc:
    raise WorkflowError(str(exc))
# COMPUTE_THREADS: every core Snakemake was given, for the jobs that must run alone (the speed and
# deployment timings) and for every GPU job (its cores feed the GPU). A stage uses at most the
# CPUs its process may use (kdlib.backend.usable_cpus). A remote executor without --cores, and
# --report, give no core count: then 1 here. A Slurm job's CPUs come from its profile's
# cpus_per_task; inside the job, Snakemake runs with --cores all, which sets the stage's --threads.
COMPUTE_THREADS = workflow.resource_settings.cores or 1
# JOB_THREADS: the threads of a training or evaluation job. On this machine's CPU, one: such jobs
# run side by side, one per core, which makes more steps per second than one job on every core
# (two 1-thread jobs made 20% more than one 2-thread job; BENCHMARKS.md, "Re-sizing the embedded
# default"), and a job computes with one thread however many cores Snakemake has and whatever runs
# beside it, so neither changes a result (bf16 sums differ with the thread count). On a GPU, and
# in a cluster job (which has its own CPUs), every core.
SHARED_CPU = not kdlib.backend.on_cuda(config["device"]) and workflow.local_exec and not workflow.remote_exec
JOB_THREADS = 1 if SHARED_CPU else COMPUTE_THREADS
# Whether training compiles its model (auto | true | false, kdlib.distill.compiling): a param of the
# training rules, so a change reruns them.
COMPILE = kdlib.distill.compiling.parse(config["compile"])
# Training and evaluation run in the runtime that holds the backend; data stages and reports in the
# workflow runtime.
TRAIN_PYTHON = config["runtimes"][BACKEND]
DATA_PYTHON = config["runtimes"]["torch"]


def launcher(wildcards):
    """What runs a training stage's `-m workflow_scripts.<stage>`: the backend's interpreter for
    one process; with `processes: N` > 1, N data-parallel processes through the backend's
    launcher: torchrun (torch.distributed.run, which finds a free port itself) or OneFlow's launch
    (on a random port, so that jobs sharing a node do not collide). Both take `-m <module>`."""
    n = config["processes"]
    if n == 1:
        return TRAIN_PYTHON
    if BACKEND == "torch":
        return f"{TRAIN_PYTHON} -m torch.distributed.run --standalone --nproc_per_node {n}"
    return (f"{TRAIN_PYTHON} -m oneflow.distributed.launch --nproc_per_node {n}"
            " --master_port $((20000 + RANDOM % 20000))")


try:
    TEACHER_DIR = kdlib.models.pretrained.resolve_pretrained(config["teacher"]["pretrained"])
except kdlib.errors.KdflowError as exc:
    raise WorkflowError(f"teacher.pretrained: {exc}")
PRETRAINED_INPUTS = [str(TEACHER_DIR / f) for f in kdlib.models.pretrained.PRETRAINED_FILES]


# ---- named input functions -----------------------------------------------------------------------
# A task's TSVs: the ones in data/glue/<GLUE dir>/ when every split is there (placed by hand, or
# the built-in tweets, which prepare_builtin writes there), else the download rules' in
# data/download/<GLUE dir>/. No rule owns a file placed by hand, so Snakemake never removes one.
HAND_ROOT = "data/glue"
DOWNLOAD_ROOT = "data/download"


def _task(name):
    return kdlib.data.tasks.get_task(name, CUSTOM)


def task_tsvs(wildcards):
    """Every split's file of a task: a custom task's own files (workflow inputs, so editing one
    reruns its records and what follows); else placed by hand or prepared; else downloaded."""
    task = _task(wildcards.task)
    placed = [kdlib.data.tasks.glue_file(HAND_ROOT, task, split) for split in task.splits]
    if task.custom:
        return [str(p) for p in placed]
    if task.name not in kdlib.data.tasks.GLUE_TASKS or all(p.is_file() for p in placed):
        return [str(p) for p in placed]
    return [str(kdlib.data.tasks.glue_file(DOWNLOAD_ROOT, task, split)) for split in task.splits]


def validation_args(wildcards):
    """How a validation split without a file of its own is carved from train (data.validation): a
    param of the record and transfer-set stages, so a change rebuilds them and all that follows;
    untracked for a task with a validation file (the built-in tweets), which does not use it."""
    carve = config["data"]["validation"]
    args = (f"--validation-fraction {carve['fraction']} --validation-max-rows {carve['max_rows']}"
            f" --validation-seed {carve['seed']}")
    return Untracked(args) if _task(wildcards.task).validation_file else args


def tsv_root(wildcards, input):
    """The --glue-root of a record stage: the folder that holds the task's TSV folder."""
    return str(Path(input.tsv[0]).parent.parent)


def custom_definition(wildcards):
    """A custom task's definition as the record stages' --custom JSON (a param: editing it reruns
    them); nothing for a built-in task."""
    if wildcards.task not in CUSTOM:
        return ""
    return f"--custom {shlex.quote(json.dumps(CUSTOM[wildcards.task], sort_keys=True))}"


def _tinybert_set(wildcards):
    return TRANSFER[wildcards.transfer].get("augment") == "tinybert"


def transfer_inputs(wildcards):
    """A transfer set's sources: the task's files (its dev and training texts are kept out, and
    augmentation varies the training texts), the user's unlabeled file, if it names one, and for
    augment: tinybert the pretrained folder's files (its masked LM and word embeddings propose the
    replacements)."""
    inputs = {"tsv": task_tsvs(wildcards)}
    unlabeled = TRANSFER[wildcards.transfer]["unlabeled"]
    if unlabeled and unlabeled != "builtin":
        inputs["unlabeled"] = str(Path(unlabeled).expanduser())
    if _tinybert_set(wildcards):
        inputs["pretrained"] = PRETRAINED_INPUTS
    return inputs


# augment: tinybert may run the pretrained masked LM: such a set is built like the teacher-logit
# cache, in the backend's runtime on every core; the others stay one-core data jobs in the workflow
# runtime (the same interpreter when the backend is torch). It declares no `gpu` resource: every
# transfer set shares the rule, and a GPU request would send a tang set to a GPU too (and fail on
# a cluster without GPUs, profiles/slurm-cpu); it uses a GPU where its job sees one (device auto).
def transfer_python(wildcards):
    return TRAIN_PYTHON if _tinybert_set(wildcards) else DATA_PYTHON


def transfer_threads(wildcards):
    return JOB_THREADS if _tinybert_set(wildcards) else 1


def transfer_model_args(wildcards):
    """augment: tinybert's pretrained folder, backend, device, precision and batch size (a param:
    changing one rebuilds the tinybert sets alone); nothing for another set."""
    if not _tinybert_set(wildcards):
        return ""
    return (f"--pretrained {shlex.quote(str(TEACHER_DIR))} --backend {BACKEND} --device {config['device']}"
            f" --precision {PRECISION} --batch-size {config['eval_batch_size']}")


def transfer_definition(wildcards):
    """The transfer set's settings as JSON: a param, so changing one rebuilds that set alone (the
    keys of an augmenter it does not use are left out: changing them rebuilds nothing)."""
    return json.dumps(kdlib.data.transfer.result_settings(TRANSFER[wildcards.transfer]), sort_keys=True)


def bert_length(task):
    return kdlib.config.max_length(config, task)


def bert_records(task):
    return f"data/ofrecord/{task}/bert{bert_length(task)}/meta.json"


def default_targets(wildcards):
    """Every task's report and the model card of each of its model folders (MODELS, below)."""
    return [path for task in config["tasks"]
            for path in (f"results/{task}/report.md", *[f"results/{task}/{m}/README.md" for m in MODELS])]


def glue_task_name(wildcards):
    """The task id of a GLUE folder name (SST-2 -> sst2)."""
    return next(t.name for t in TASKS.values() if t.glue_dir == wildcards.glue_dir)


def bert_dir(task):
    return f"data/ofrecord/{task}/bert{bert_length(task)}"


def bert_dir_of(wildcards):
    return bert_dir(wildcards.task)


def bert_records_of(wildcards):
    return bert_records(wildcards.task)


class Untracked:
    """A param value that a job needs but whose changes must not rerun it: a setting that cannot
    change the job's outputs (how often a resume state is saved, kdlib.config.RUN_ONLY; where from
    and how patiently a download fetches). Snakemake's params rerun trigger records only params of
    builtin types, so it does not record this one; in a shell command it formats as its value.
    tests/test_workflow_reliability.py and tests/test_workflow_e2e.py check that a change plans
    nothing."""

    def __init__(self, value):
        self.value = value

    def __str__(self) -> str:
        return str(self.value)


def teacher_settings(wildcards):
    """What changes the teacher of a task: a param, so a change reruns the teacher."""
    return json.dumps(kdlib.config.result_settings(kdlib.config.teacher_train(config, wildcards.task)),
                      sort_keys=True)


def teacher_spec(wildcards):
    """All the task's teacher training settings as JSON, for the stage (untracked)."""
    return Untracked(json.dumps(kdlib.config.teacher_train(config, wildcards.task), sort_keys=True))


# ---- students ------------------------------------------------------------------------------------
RESERVED_NAMES = ("teacher", "init", "report", "accuracy_vs_speedup", "speed", "training_curves")
for _name in config["students"]:
    if _name in RESERVED_NAMES or kdlib.config.SEED_SUFFIX.match(_name) or re.fullmatch(r"teacher_\d+", _name):
        raise WorkflowError(f"students.{_name}: the name is reserved (or ends like a seed run, "
                            "_seed<k>, or names an ensemble's teacher, teacher_<k>); choose another")
try:
    TEACHER_CONFIG = kdlib.models.pretrained.read_pretrained_config(TEACHER_DIR)
except kdlib.errors.KdflowError as exc:
    raise WorkflowError(str(exc))


# ---- the teacher of each task --------------------------------------------------------------------
# Fine-tuned here from teacher.pretrained (finetune_teacher), or the user's already fine-tuned
# classifier (teacher.finetuned; import_teacher and kdlib.models.families). A BERT becomes a
# kdlib checkpoint; a teacher of another family runs through transformers, in the torch runtime.
def finetuned_folder(task):
    """The task's fine-tuned teacher folder (teacher.finetuned), or None: fine-tuned here."""
    folder = kdlib.config.finetuned_teacher(config, task)
    return Path(folder).expanduser() if folder else None


@functools.lru_cache(maxsize=None)
def teacher_shape(task):
    """``(the BERT config a student follows, family)`` of the task's teacher: the pretrained
    folder's config and None when the teacher is fine-tuned here; else the fine-tuned folder's
    (checked: kdlib.models.families.check_folder), with its ``model_type`` as the family when
    kdlib runs it only through transformers."""
    folder = finetuned_folder(task)
    if folder is None:
        return TEACHER_CONFIG, None
    hf = kdlib.models.families.check_folder(folder, f"teacher.finetuned ({task})")
    if kdlib.models.families.runs_in_kdlib(hf):
        return kdlib.models.pretrained.read_pretrained_config(folder), None
    size = kdlib.models.families.tokenizer_size(kdlib.models.families.folder_tokenizer(folder))
    return kdlib.models.families.student_shape(hf, size), hf["model_type"]


def check_teacher(task):
    """Every student can learn from the task's teacher (kdlib.distill.spec.check_students); a layer
    copied from teacher.pretrained needs the records' vocabulary."""
    shape, family = teacher_shape(task)
    kdlib.distill.spec.check_students(config, shape, task, family)
    folder = finetuned_folder(task)
    uses_pretrained = any(kdlib.distill.spec.student_spec(config, s, task)["architecture"]["init"] == "pretrained"
                          for s in config["students"])
    if folder is not None and uses_pretrained and (
            kdlib.models.families.vocabulary(kdlib.models.families.folder_tokenizer(folder))
            != kdlib.models.families.vocabulary(TEACHER_DIR / "vocab.txt")):
        raise kdlib.errors.ConfigError(
            f"teacher.finetuned ({task}): a student with init: pretrained copies layers of teacher.pretrained, "
            f"whose vocabulary is not the one of {folder}; set teacher.pretrained to the base model it was "
            "fine-tuned from")


FINETUNED_TASKS = [t for t in (*TASKS, *CUSTOM) if finetuned_folder(t)]
try:
    for _checked in dict.fromkeys([*config["tasks"], *FINETUNED_TASKS]):
        check_teacher(_checked)
except kdlib.errors.KdflowError as exc:
    raise WorkflowError(str(exc))


# ---- an ensemble of teachers (teacher.ensemble) --------------------------------------------------
# Teacher k = 0 is the task's teacher folder above (fine-tuned here, or the first folder); teacher
# k >= 1 is imported into results/{task}/teacher_<k>/. Each is evaluated (teacher_<k>_eval.json);
# teacher_eval.json is then the ensemble's, the mean of their probabilities (kdlib.evaluate.ensemble).
ENSEMBLE = config["teacher"]["ensemble"]
MEMBERS = list(range(len(ENSEMBLE)))


def member_source(k):
    return Path(ENSEMBLE[int(k)]).expanduser()


@functools.lru_cache(maxsize=None)
def member_config(k):
    """The checked config.json of ensemble folder ``k`` >= 1."""
    return kdlib.models.families.check_folder(member_source(k), f"teacher.ensemble[{int(k)}]")


def member_is_hf(task, k):
    """Whether ensemble teacher ``k`` runs through transformers."""
    k = int(k)
    if k == 0:
        return teacher_shape(task)[1] is not None
    return not kdlib.models.families.runs_in_kdlib(member_config(k))


def _folder_files(folder):
    """A fine-tuned folder's config and weights: a change to either imports it again."""
    return [str(folder / "config.json"), str(folder / "model.safetensors")]


def member_tokenizer_file(task, k):
    return teacher_tokenizer_file(task) if int(k) == 0 else kdlib.models.families.folder_tokenizer(member_source(k))


def member_records_dir(task, k, transfer=None):
    """The record folder teacher ``k`` reads: made with its tokenizer (tokenized_dir)."""
    folder = tokenized_dir(task, member_tokenizer_file(task, k))
    return f"{folder}+{transfer}" if transfer else folder


def member_folder(task, k):
    return f"results/{task}/teacher" if int(k) == 0 else f"results/{task}/teacher_{int(k)}"


def _hf_teacher(task):
    """Whether a stage that runs the task's teacher (every teacher of an ensemble) needs transformers."""
    return any(member_is_hf(task, k) for k in (MEMBERS or [0]))


def member_python(wildcards):
    return DATA_PYTHON if member_is_hf(wildcards.task, wildcards.member) else TRAIN_PYTHON


def member_backend(wildcards):
    return "torch" if member_is_hf(wildcards.task, wildcards.member) else BACKEND


def member_inputs(wildcards):
    """Teacher ``k``'s weights in its teacher folder and the meta.json of its records."""
    return {"weights": f"{member_folder(wildcards.task, wildcards.member)}/model.safetensors",
            "records": f"{member_records_dir(wildcards.task, wildcards.member)}/meta.json"}


def member_source_inputs(wildcards):
    """Ensemble folder ``k`` >= 1's config and weights (a change imports it again) and its records."""
    return {"finetuned": _folder_files(member_source(wildcards.member)),
            "records": f"{member_records_dir(wildcards.task, wildcards.member)}/meta.json"}


def ensemble_cache_inputs(wildcards, transfer=None):
    """The other teachers' weights and records that an ensemble's logit cache reads."""
    return [path for k in MEMBERS[1:]
            for path in (f"{member_folder(wildcards.task, k)}/model.safetensors",
                         f"{member_records_dir(wildcards.task, k, transfer)}/meta.json")]


def ensemble_members_arg(wildcards, transfer=None):
    """--members of the logit cache: each other teacher's folder=records."""
    if not ENSEMBLE:
        return ""
    pairs = [f"{member_folder(wildcards.task, k)}={member_records_dir(wildcards.task, k, transfer)}"
             for k in MEMBERS[1:]]
    return "--members " + " ".join(pairs)


def teacher_tokenizer_file(task):
    """The tokenizer file the task's BERT records are made with: the fine-tuned teacher's
    (tokenizer.json, else vocab.txt), or the pretrained folder's vocab.txt."""
    folder = finetuned_folder(task)
    if folder is None:
        return TEACHER_DIR / "vocab.txt"
    return kdlib.models.families.folder_tokenizer(folder)


def teacher_tokenizer(wildcards):
    return str(teacher_tokenizer_file(wildcards.task))


# ---- records of another tokenizer ----------------------------------------------------------------
# The task's BERT records are made with the teacher's tokenizer (bert<L>/). A student with its own
# (architecture.tokenizer) and an ensemble's teacher with another read records of theirs,
# data/ofrecord/<task>/bert<L>-tok_<digest>/ (ofrecord_tokenized), named by the file's sha256.
@functools.lru_cache(maxsize=None)
def _digest(path):
    return kdlib.io.file_digest(path)[:12]


def tokenized_dir(task, tokenizer):
    """The BERT record folder of ``tokenizer`` (a file): the task's own when it is the teacher's."""
    if tokenizer is None or _digest(tokenizer) == _digest(teacher_tokenizer_file(task)):
        return bert_dir(task)
    return f"{bert_dir(task)}-tok_{_digest(tokenizer)}"


@functools.lru_cache(maxsize=None)
def student_tokenizer_file(run):
    """A BERT student's own tokenizer file (architecture.tokenizer), or None: the teacher's."""
    spec = config["students"][_base(run)].get("architecture") or {}
    if not spec.get("tokenizer"):
        return None
    try:
        return kdlib.models.pretrained.resolve_tokenizer(spec["tokenizer"])
    except kdlib.errors.KdflowError as exc:
        raise WorkflowError(f"students.{_base(run)}.architecture.tokenizer: {exc}")


def tokenizer_of(wildcards):
    """The tokenizer file whose digest names a record folder (a student's or an ensemble teacher's)."""
    candidates = [student_tokenizer_file(s) for s in STUDENTS] + [
        member_tokenizer_file(wildcards.task, k) for k in MEMBERS[1:]]
    for path in candidates:
        if path is not None and _digest(path) == wildcards.digest:
            return str(path)
    raise WorkflowError(f"no student or teacher has the tokenizer of digest {wildcards.digest}")


def teacher_python(wildcards):
    """The runtime of a stage that runs the teacher: the torch runtime for a transformers teacher."""
    return DATA_PYTHON if _hf_teacher(wildcards.task) else TRAIN_PYTHON


def teacher_backend(wildcards):
    return "torch" if _hf_teacher(wildcards.task) else BACKEND


def finetuned_inputs(wildcards):
    return _folder_files(finetuned_folder(wildcards.task))


def report_logs(wildcards):
    """The training logs the report plots: every student's, and the teacher's where it was
    fine-tuned here."""
    models = STUDENTS if finetuned_folder(wildcards.task) else ["teacher", *STUDENTS]
    return [f"results/{wildcards.task}/{m}/train_log.csv" for m in models]


def _tasks_re(names):
    return "|".join(names) or "(?!)"


IMPORTED_RE = _tasks_re(FINETUNED_TASKS)
FINETUNED_HERE_RE = _tasks_re([t for t in (*TASKS, *CUSTOM) if t not in FINETUNED_TASKS])

try:                                         # every ensemble folder holds a fine-tuned teacher
    for _checked in MEMBERS[1:]:
        member_config(_checked)
except kdlib.errors.KdflowError as exc:
    raise WorkflowError(str(exc))
STUDENTS = list(config["students"])
# Every student's runs under `seeds: N` (kdlib.config.runs): the `student` wildcard is a run.
RUNS = [run for student in STUDENTS for run in kdlib.config.runs(config, student)]


wildcard_constraints:
    student="|".join(RUNS) or "(?!)",


def _base(run):
    """The student of a run (kd_seed2 -> kd)."""
    return kdlib.config.run_of(run)[0]


def _recipe(run):
    return kdlib.distill.recipes.get_recipe(config["students"][_base(run)]["algorithm"], _base(run))


def _is_lstm(run):
    return config["students"][_base(run)]["architecture"]["model"] == "bilstm"


for _checked in STUDENTS:                    # every student's own tokenizer exists: an error names it
    student_tokenizer_file(_checked)


def _transfer(run, task):
    """The transfer set a run trains with on ``task`` (a set's ``tasks`` may leave the task out)."""
    return kdlib.distill.spec.transfer_of(config, run, task)


def eval_records_dir(wildcards):
    """The record folder a student is evaluated on: its architecture's (bert or lstm)."""
    return _records_dir(wildcards.task, wildcards.student, transfer=False)


def eval_records_of(wildcards):
    return f"{eval_records_dir(wildcards)}/meta.json"


def _records_dir(task, run, transfer=True):
    """A run's record folder: its architecture's (a BERT's of its tokenizer), or with ``transfer``
    its set's copy."""
    if _is_lstm(run):
        folder = f"data/ofrecord/{task}/lstm{config['data']['lstm']['max_length']}"
    else:
        folder = tokenized_dir(task, student_tokenizer_file(run))
    chosen = _transfer(run, task) if transfer else None
    return f"{folder}+{chosen}" if chosen else folder


def student_records_dir(wildcards):
    """The record folder a student trains on: with a transfer set, the copy with it mixed in."""
    return _records_dir(wildcards.task, wildcards.student)


def _compared(run):
    """The distilled students a baseline run must match in steps (config `equal_steps`)."""
    if not config["equal_steps"] or _recipe(run).name != kdlib.config.BASELINE_ALGORITHM:
        return []
    return kdlib.config.compared_with(config, _base(run))


def match_steps(wildcards):
    """A baseline's --match-steps: each compared student's records and its phases' epochs and
    batch sizes (a param: a change to them reruns the baseline; its records are inputs)."""
    students = []
    for student in _compared(wildcards.student):
        spec = kdlib.distill.spec.student_spec(config, student, wildcards.task)
        phases = [spec[p] for p in ("first_phase_train", "train") if p in spec]
        students.append({"student": student, "records": _records_dir(wildcards.task, student),
                         "phases": [{"epochs": p["epochs"], "batch_size": p["batch_size"]} for p in phases]})
    if not students:
        return ""
    return f"--match-steps {shlex.quote(json.dumps(students, sort_keys=True))}"


def student_records_of(wildcards):
    return f"{student_records_dir(wildcards)}/meta.json"


def student_settings(wildcards):
    """What changes a student: a param, so changing one reruns only this student."""
    spec = kdlib.distill.spec.student_spec(config, wildcards.student, wildcards.task)
    return json.dumps(kdlib.config.result_settings(spec), sort_keys=True)


def student_spec_json(wildcards):
    """The student's resolved settings as JSON, for the stage (untracked)."""
    return Untracked(json.dumps(kdlib.distill.spec.student_spec(config, wildcards.student, wildcards.task),
                                sort_keys=True))


def _init(wildcards):
    return kdlib.distill.spec.student_spec(config, wildcards.student)["architecture"]["init"]


def init_inputs(wildcards):
    """What a student's initial layers come from: the fine-tuned teacher (init: teacher), or the
    pretrained folder and the task's records, for the label count (init: pretrained)."""
    if _init(wildcards) == "pretrained":
        return {"pretrained": PRETRAINED_INPUTS,
                "records": bert_records(wildcards.task)}
    return {"weights": f"results/{wildcards.task}/teacher/model.safetensors"}


def init_source(wildcards):
    if _init(wildcards) == "pretrained":
        records = str(Path(bert_records(wildcards.task)).parent)
        return (f"--pretrained {shlex.quote(str(TEACHER_DIR))} --task {wildcards.task}"
                f" --records {records}")
    return f"--teacher results/{wildcards.task}/teacher"


def student_init_layers(wildcards):
    spec = kdlib.distill.spec.student_spec(config, wildcards.student)
    source = TEACHER_CONFIG if _init(wildcards) == "pretrained" else teacher_shape(wildcards.task)[0]
    layers = kdlib.distill.recipes.init_layers(spec, int(source["num_hidden_layers"]))
    return ",".join(str(t) for t in layers)


def distill_inputs(wildcards):
    """What a student's distill job reads: its records, and what its recipe needs from the teacher
    (kdlib.distill.recipes.Recipe.needs, the one place that decides it)."""
    task, student = wildcards.task, wildcards.student
    needs = _recipe(student).needs(kdlib.distill.spec.student_spec(config, student, task))
    inputs = {"records": student_records_of(wildcards)}
    compared = sorted({f"{_records_dir(task, s)}/meta.json" for s in _compared(student)})
    if compared:
        inputs["compared"] = compared          # their row counts set the baseline's steps
    if needs["logits"]:
        transfer = _transfer(student, task)
        inputs["logits"] = (f"results/{task}/teacher_logits+{transfer}.npz" if transfer
                            else f"results/{task}/teacher_logits.npz")
    if needs["teacher"]:
        inputs["teacher"] = f"results/{task}/teacher/model.safetensors"
    if needs["init"]:
        inputs["init"] = f"results/{task}/init/{_base(student)}/model.safetensors"
    return inputs


def distill_sources(wildcards, input):
    """The distill script's --teacher/--logits/--init arguments, from the job's inputs."""
    args = []
    if "teacher" in input.keys():
        args += ["--teacher", str(Path(input.teacher).parent)]
    if "logits" in input.keys():
        args += ["--logits", input.logits]
    if "init" in input.keys():
        args += ["--init", str(Path(input.init).parent)]
    return " ".join(args)


# The teacher-logit cache of a record folder (cache_teacher_logits, cache_transfer_logits); with
# teacher.ensemble, --members names the other teachers and their records.
CACHE_LOGITS_SHELL = (
    "{params.python} -m workflow_scripts.cache_teacher_logits --task {wildcards.task}"
    " --teacher results/{wildcards.task}/teacher --records {params.records} {params.members} --out {output}"
    " --eval-batch-size {params.eval_batch_size} --backend {params.backend} --device {params.device}"
    " --precision {params.precision}"
    " --threads {threads} > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}; tail -n 1 {log}")


def folder_of_weights(wildcards, input):
    """The folder that holds the rule's `weights` input (a HF or kdflow checkpoint folder)."""
    return str(Path(input.weights).parent)


def speed_models(wildcards):
    """The speed stage's models: the teacher (every teacher of an ensemble), then every student's
    first run."""
    teachers = [member_folder(wildcards.task, k) for k in MEMBERS] or [f"results/{wildcards.task}/teacher"]
    return teachers + [f"results/{wildcards.task}/{s}" for s in STUDENTS]


def speed_records(wildcards):
    """Each model's record folder, in the order of speed_models."""
    teachers = [member_records_dir(wildcards.task, k) for k in MEMBERS] or [bert_dir_of(wildcards)]
    return teachers + [_records_dir(wildcards.task, s, transfer=False) for s in STUDENTS]


def speed_ensemble(wildcards):
    return f"--ensemble {len(MEMBERS)}" if MEMBERS else ""


def speed_record_files(wildcards):
    """The record folders' meta.json the speed stage reads (each once)."""
    return sorted({f"{records}/meta.json" for records in speed_records(wildcards)})


# ---- shipping (rules/export.smk) ----------------------------------------------------------------
MODELS = ["teacher", *STUDENTS]          # model folders: the teacher and every student's first run
BERT_MODELS = ["teacher", *[s for s in STUDENTS if not _is_lstm(s)]]


wildcard_constraints:
    model="|".join(MODELS),


def model_records_dir(wildcards):
    """The record folder a model is evaluated on (a student's without its transfer set)."""
    if wildcards.model == "teacher":
        return bert_dir_of(wildcards)
    return _records_dir(wildcards.task, wildcards.model, transfer=False)


def model_eval(wildcards):
    """A model folder's eval JSON (the folder of an ensemble's first teacher: teacher_0's)."""
    name = "teacher_0" if wildcards.model == "teacher" and ENSEMBLE else wildcards.model
    return f"results/{wildcards.task}/{name}_eval.json"


def model_transfer(wildcards):
    """The transfer set a model trained with, or '' (the teacher: none)."""
    if wildcards.model == "teacher":
        return ""
    return _transfer(wildcards.model, wildcards.task) or ""


def predict_input(wildcards):
    """config `predict.input`, the file rule predict labels; asking for predictions without it is
    an error that says what to set."""
    path = config["predict"]["input"]
    if not path:
        raise WorkflowError("results/<task>/predict/<model>.tsv needs predict.input in config.yaml "
                            "(a text file, one text per line), e.g. --config predict='{input: texts.txt}'")
    return str(Path(path).expanduser())


def deploy_targets(wildcards):
    """`deploy`: every task's deployment table, HuggingFace exports (not of a teacher that
    transformers runs: it is one already) and model cards."""
    return [path for task in config["tasks"] for path in (
        f"results/{task}/deployment.md",
        *[f"results/{task}/export/{m}/hf/config.json" for m in BERT_MODELS
          if m != "teacher" or not member_is_hf(task, 0)],
        *[f"results/{task}/{m}/README.md" for m in MODELS])]


def deploy_records(wildcards):
    """Each model's record folder, in the order of MODELS (an ensemble's first teacher's: the
    deployment table's teacher)."""
    return [bert_dir_of(wildcards)] + [_records_dir(wildcards.task, s, transfer=False) for s in STUDENTS]
