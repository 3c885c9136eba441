# Config validation, the runtime of each stage, the plan (kdlib.plan: which files each job reads
# and which arguments it gets; the rules call its methods) and the wildcards' constraints.
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import kdlib.backend
import kdlib.config
import kdlib.distill.compiling
import kdlib.errors
import kdlib.plan
from kdlib.plan import MODEL_WEIGHTS, STUDENT_WEIGHTS, TEACHER_WEIGHTS, Untracked

# kdlib first, for an error that names the key path; then Snakemake's own check, which also fills
# the schema's defaults into `config`.
config.update(kdlib.config.retype(config))   # nested --config values arrive as strings
try:
    kdlib.config.validate(config)
except kdlib.errors.ConfigError as exc:
    raise WorkflowError(str(exc))
validate(config, kdlib.config.SCHEMA_PATH)

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
TRAIN_PYTHON = shlex.quote(config["runtimes"][BACKEND])   # quoted: a path reaches the shell
DATA_PYTHON = shlex.quote(config["runtimes"]["torch"])


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


# The end of every rule's command: the stage's output goes to its log, and its last line (the
# one-line summary, or on failure the stage's `error: ...` line) is shown on the console.
LOG_TAIL = " > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}; tail -n 1 {log}"


def logged(command):
    """A rule's shell command with LOG_TAIL at its end."""
    return command + LOG_TAIL


try:
    PLAN = kdlib.plan.Plan(config, backend=BACKEND, precision=PRECISION, train_python=TRAIN_PYTHON,
                           data_python=DATA_PYTHON, job_threads=JOB_THREADS)
except kdlib.errors.KdflowError as exc:
    raise WorkflowError(str(exc))
TEACHER_DIR = PLAN.teacher_dir
# The search's inputs that its checkpoints decide (rules/search.smk).
SEARCH = kdlib.plan.SearchInputs(PLAN, checkpoints)
# The --backend, --device and --precision of a training or evaluation stage: a param, so a change
# reruns it (a stage that runs a transformers teacher: PLAN.teacher_runtime).
RUNTIME = PLAN.runtime_args()
STUDENTS, RUNS, MODELS = PLAN.students, PLAN.runs, PLAN.models
ENSEMBLE, MEMBERS = PLAN.ensemble, PLAN.members


wildcard_constraints:
    **PLAN.constraints,


# The teacher-logit cache of a record folder (cache_teacher_logits, cache_transfer_logits); with
# teacher.ensemble, --members names the other teachers and their records.
CACHE_LOGITS_SHELL = logged(
    "{params.python} -m workflow_scripts.cache_teacher_logits --task {wildcards.task}"
    " --teacher results/{wildcards.task}/teacher --records {params.records} {params.members} --out {output}"
    " --eval-batch-size {params.eval_batch_size} {params.runtime} --threads {threads}")


# The speed stage's and the deployment table's commands: the task's (measure_speed,
# measure_deployment) and the search's pick beside the teacher (search_speed, search_deployment).
SPEED_SHELL = logged(
    "{params.python} -m workflow_scripts.measure_speed --task {wildcards.task}"
    " --models {params.models} --records {params.records} {params.ensemble} --rounds {params.rounds}"
    " --latency-examples {params.latency_examples}"
    " --throughput-examples {params.throughput_examples} --out {output}"
    " --eval-batch-size {params.eval_batch_size} {params.runtime}"
    " --threads {threads}")
DEPLOYMENT_SHELL = logged(
    "{params.python} -m workflow_scripts.measure_deployment --task {wildcards.task}"
    " --teacher results/{wildcards.task}/teacher --exports {params.exports}"
    " --records {params.records} --rounds {params.rounds}"
    " --latency-examples {params.latency_examples}"
    " --throughput-examples {params.throughput_examples} --threads {threads}"
    " --json {output.json} --md {output.md} --csv {output.csv}")


def predict_input(wildcards):
    """config `predict.input`, the file rule predict labels; asking for predictions without it is
    an error that says what to set."""
    path = config["predict"]["input"]
    if not path:
        raise WorkflowError("results/<task>/predict/<model>.tsv needs predict.input in config.yaml "
                            "(a text file, one text per line), e.g. --config predict='{input: texts.txt}'")
    return str(Path(path).expanduser())
