# Config validation, the runtime of each stage, wildcard constraints and named input functions.
import json
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import kdlib.backend
import kdlib.config
import kdlib.errors
import kdlib.models
import kdlib.tasks

# kdlib first, for an error that names the key path; then Snakemake's own check, which also fills
# the schema's defaults into `config`.
try:
    kdlib.config.validate(config)
except kdlib.errors.ConfigError as exc:
    raise WorkflowError(str(exc))
validate(config, kdlib.config.SCHEMA_PATH)

TASKS = kdlib.tasks.TASKS
GLUE_DIRS_ONE_DEV = [t.glue_dir for t in TASKS.values() if t.name != "tweets" and t.dev_splits == ("dev",)]


wildcard_constraints:
    task="|".join(TASKS),
    glue_dir="|".join(GLUE_DIRS_ONE_DEV),
    seq=r"\d+",


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
# Training and evaluation run in the runtime that holds the backend; data stages and reports in the
# workflow runtime.
TRAIN_PYTHON = config["runtimes"][BACKEND]
DATA_PYTHON = config["runtimes"]["torch"]

try:
    TEACHER_DIR = kdlib.models.resolve_pretrained(config["teacher"]["pretrained"])
except kdlib.errors.KdflowError as exc:
    raise WorkflowError(f"teacher.pretrained: {exc}")


# ---- named input functions -----------------------------------------------------------------------
def task_tsvs(wildcards):
    """Every split's TSV of a task, as downloaded or prepared."""
    task = kdlib.tasks.get_task(wildcards.task)
    return [str(kdlib.tasks.glue_file("data/glue", task, split)) for split in task.splits]


def bert_length(task):
    return kdlib.config.max_length(config, task)


def bert_records(task):
    return f"data/ofrecord/{task}/bert{bert_length(task)}/meta.json"


def lstm_records(task):
    return f"data/ofrecord/{task}/lstm{config['data']['lstm']['max_length']}/meta.json"


def default_targets(wildcards):
    return [f"results/{task}/teacher_eval.json" for task in config["tasks"]]


def glue_task_name(wildcards):
    """The task id of a GLUE folder name (SST-2 -> sst2)."""
    return next(t.name for t in TASKS.values() if t.glue_dir == wildcards.glue_dir)


def bert_dir_of(wildcards):
    return f"data/ofrecord/{wildcards.task}/bert{bert_length(wildcards.task)}"


def bert_records_of(wildcards):
    return bert_records(wildcards.task)


def teacher_hparams(wildcards):
    """The task's teacher training settings as JSON: a param, so changing one reruns the teacher."""
    return json.dumps(kdlib.config.teacher_train(config, wildcards.task), sort_keys=True)
