"""Running a copy of the workflow in a test (not collected by pytest: no ``test_`` prefix).

* :func:`copy_workflow` puts the workflow's files in a working directory; :func:`write_config`
  writes the tiny pretrained BERT there and a ``config.yaml`` of :func:`tiny_config`, the one base
  tiny config, with a test's overrides deep-merged into it; :func:`make_workdir` does both for the
  end-to-end tests' SST-2 workflow (:data:`SST2`) against a GLUE mirror.
* :func:`snakemake` runs Snakemake there, :func:`override` gives the arguments of a config file on
  top of ``config.yaml``, :func:`planned` the job counts of a dry run.
* :func:`sst2_tsv` and :func:`sst2_zip` make the GLUE mirror's SST-2 (the ``mirror`` fixture of
  conftest.py serves it); :func:`offline_url` is a GLUE address that refuses connections.
"""
from __future__ import annotations

import copy
import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import tinydata
import yaml
from conftest import ONEFLOW_PYTHON, REPO, TORCH_PYTHON
from localhttp import dead_port

RUNTIMES = {"torch": str(TORCH_PYTHON), "oneflow": str(ONEFLOW_PYTHON)}
BERT_STUDENT = {"model": "bert", "layers": 1, "hidden": 16, "heads": 4, "intermediate": 32}
LSTM_STUDENT = {"model": "bilstm", "hidden": 16, "intermediate": 16, "embedding": 16}


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


DROP = _Drop()
"""An override's value that removes the key from the base config."""


# ---- the GLUE mirror -------------------------------------------------------------------------------

def sst2_tsv(n: int, seed: int) -> str:
    """An SST-2 TSV whose sentences use the tiny vocabulary's words (w0 .. w94)."""
    rows = ["sentence\tlabel"]
    ex = tinydata.make_examples(n, seed)
    for ids, mask, label in zip(ex["input_ids"], ex["input_mask"], ex["label_ids"]):
        words = [tinydata.VOCAB[i] for i in ids[mask == 1][1:-1]]
        rows.append(f"{' '.join(words)}\t{label}")
    return "\n".join(rows) + "\n"


def sst2_zip() -> bytes:
    """A GLUE-layout SST-2.zip whose sentences use the tiny vocabulary's words (w0 .. w94)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("SST-2/train.tsv", sst2_tsv(160, 1))
        z.writestr("SST-2/dev.tsv", sst2_tsv(48, 2))
        z.writestr("SST-2/test.tsv", "index\tsentence\n0\tw1 w2\n")
    return buf.getvalue()


def offline_url() -> str:
    """A GLUE address on 127.0.0.1 where connections are refused."""
    return f"http://127.0.0.1:{dead_port()}/glue"


# ---- the config ------------------------------------------------------------------------------------

def merged(base: dict, overrides: dict) -> dict:
    """``overrides`` deep-merged into ``base`` (a dict into a dict key by key, any other value
    replacing; :data:`DROP` removing the key); neither is changed."""
    out = dict(base)
    for key, value in overrides.items():
        if value is DROP:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def tiny_config(work: Path, students: dict, **overrides) -> dict:
    """The base tiny config, ``students`` and the top-level keys ``overrides`` deep-merged into it.

    The base: the torch backend on the CPU with this checkout's runtimes; sst2 from
    :func:`offline_url` (no retries), records of length 16; the teacher fine-tuned from the tiny
    BERT of ``work/tiny_bert`` (:func:`write_config` writes it) and the students trained for 3
    epochs at batch 8 and lr 3e-3; one round of speed measurement on 5 examples. It names no
    student: each test gives its own.
    """
    base = {
        "backend": "torch", "device": "cpu", "runtimes": RUNTIMES,
        "tasks": ["sst2"],
        "data": {"glue_url": offline_url(), "retries": 0, "max_length": {"default": 16}},
        "teacher": {"pretrained": str(work / "tiny_bert"),
                    "train": {"epochs": 3, "batch_size": 8, "lr": 3.0e-3}},
        "students_train": {"epochs": 3, "batch_size": 8, "lr": 3.0e-3},
        "students": students,
        "speed": {"rounds": 1, "latency_examples": 5},
    }
    return copy.deepcopy(merged(base, overrides))


def write_config(work: Path, students: dict, **overrides) -> Path:
    """The tiny pretrained BERT (2 layers) in ``work/tiny_bert`` and ``work/config.yaml`` of
    :func:`tiny_config`; returns the config's path."""
    tinydata.write_pretrained(work / "tiny_bert", num_hidden_layers=2)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(work, students, **overrides)))
    return path


SST2 = {
    "students": {"tinybert": {"algorithm": "tinybert", "architecture": BERT_STUDENT},
                 "kd": {"algorithm": "kd", "architecture": BERT_STUDENT}},
    "data": {"timeout_s": 10},
    "teacher": {"train": {"epochs": 5, "save_seconds": 0}},
    "students_train": {"epochs": 4, "save_seconds": 0},
    "speed": DROP,
}
"""The end-to-end tests' overrides of the base: students tinybert and kd, 5 teacher epochs and 4
student epochs with a resume state at every step, a 10 s download timeout, no speed settings."""


# ---- the workflow ----------------------------------------------------------------------------------

def copy_workflow(work: Path, *extra: str) -> Path:
    """The workflow's own files (Snakefile, rules/, report/, and the ``extra`` items of the
    repository, such as profiles) into the working directory ``work``."""
    for item in ("Snakefile", "rules", "report", *extra):
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, work / item)
        elif src.is_file():
            shutil.copy(src, work / item)
    return work


def make_workdir(tmp_path_factory, mirror: str, **overrides) -> Path:
    """A copy of the workflow on sst2 from the GLUE address ``mirror``, in a new folder: the base
    tiny config with :data:`SST2`'s and then ``overrides``' values (``backend="oneflow"``...)."""
    work = copy_workflow(tmp_path_factory.mktemp("workflow"))
    write_config(work, **merged(merged(SST2, {"data": {"glue_url": mirror}}), overrides))
    return work


def snakemake(work: Path, *args, check=True, env=None) -> subprocess.CompletedProcess:
    """``.venv/bin/snakemake --cores 4 ARGS`` on the workflow in ``work``; ``check``: fail the test
    with Snakemake's output when it fails."""
    cmd = [str(REPO / ".venv" / "bin" / "snakemake"), "--cores", "4", "-s", str(work / "Snakefile"),
           "--directory", str(work), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=work, timeout=600, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def override(work: Path, name: str, values: dict) -> list[str]:
    """Arguments that add a config file on top of config.yaml (Snakemake merges them key by key;
    nested values given with --config on the command line would arrive as strings)."""
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["--configfile", str(work / "config.yaml"), str(path)]


def job_counts(text: str) -> dict[str, int]:
    """The jobs of a Snakemake run's output, from its 'Job stats' table."""
    table = text.split("Job stats:")[1].split("\n\n")[0]
    return {name: int(count) for name, count in (line.split() for line in table.splitlines()[3:])
            if name != "total"}


def planned(work: Path, *args) -> dict[str, int]:
    """Job counts of a dry run, from Snakemake's 'Job stats' table."""
    out = snakemake(work, "-n", *args)
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return {}
    return job_counts(text)
