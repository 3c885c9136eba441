"""The user's command end to end: `snakemake --cores 4 results/sst2/tinybert_eval.json` against a
GLUE mirror served on 127.0.0.1, on a tiny config. Checks what runs, what reruns, and resume.

Runs in the workflow runtime (.venv) only: it drives Snakemake.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("snakemake")

from conftest import ONEFLOW_PYTHON, REPO  # noqa: E402
from workflows import make_workdir, offline_url, override, planned, snakemake, sst2_tsv  # noqa: E402

pytestmark = pytest.mark.slow
CHAIN = {"download_glue": 1, "ofrecord_bert": 1, "finetune_teacher": 1, "evaluate_teacher": 1,
         "cache_teacher_logits": 1, "distill": 1, "evaluate_student": 1}
TARGET = "results/sst2/tinybert_eval.json"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, mirror):
    return make_workdir(tmp_path_factory, mirror)


def test_user_command_builds_exactly_the_chain_and_reruns_only_what_changed(workdir):
    # (a) exactly the chain TinyBERT needs, and no other student
    assert planned(workdir, TARGET) == CHAIN
    snakemake(workdir, TARGET)
    result = yaml.safe_load((workdir / TARGET).read_text())
    assert result["model"] == "tinybert" and result["retained"] > 0
    assert (workdir / "results/sst2/tinybert_predictions.npz").is_file()
    labels = [int(line.split("\t")[1]) for line in
              (workdir / "data/download/SST-2/dev.tsv").read_text().splitlines()[1:]]
    majority = max(sum(labels), len(labels) - sum(labels)) / len(labels)
    assert result["score"] > majority + 0.1, (result["score"], majority)   # not a constant predictor
    assert not (workdir / "results/sst2/kd").exists()
    # (b) a second run plans nothing
    assert planned(workdir, TARGET) == {}
    # (c) a TinyBERT hyperparameter reruns only TinyBERT's distill and evaluate jobs
    changed = {"students": {"tinybert": {"hyperparameters": {"temperature": 2}}}}
    assert planned(workdir, TARGET, *override(workdir, "student_change", changed)) == \
        {"distill": 1, "evaluate_student": 1}
    # (d) a teacher hyperparameter reruns the teacher and everything downstream, not the data
    changed = {"teacher": {"train": {"lr": 2.0e-3}}}
    assert planned(workdir, TARGET, *override(workdir, "teacher_change", changed)) == \
        {k: v for k, v in CHAIN.items() if k not in ("download_glue", "ofrecord_bert")}


def test_no_training_stage_reads_dev_records(tmp_path_factory, mirror):
    """Dev is read by the evaluation stages alone: once the teacher is evaluated, every dev record
    file is deleted, and the teacher's logits and both students still train (selecting on
    validation), and the records are not rebuilt."""
    work = make_workdir(tmp_path_factory, mirror)
    snakemake(work, "results/sst2/teacher_eval.json")
    dev_files = list((work / "data/ofrecord").glob("*/*/dev.of_record-0"))
    assert dev_files
    for path in dev_files:
        path.unlink()
    students = ["results/sst2/kd/model.safetensors", "results/sst2/tinybert/model.safetensors"]
    snakemake(work, *students)
    for student in ("kd", "tinybert"):
        summary = json.loads((work / f"results/sst2/{student}/train_summary.json").read_text())
        assert summary["selection"]["split"] == "validation" and summary["selection"]["evaluations"] >= 5
        assert 0 < summary["selection"]["eval_seconds"] < summary["train_seconds"]
    summary = json.loads((work / "results/sst2/teacher/train_summary.json").read_text())
    assert summary["selection"]["split"] == "validation"
    assert not any(path.exists() for path in dev_files)        # no stage rebuilt them
    assert planned(work, *students) == {}


def test_interrupted_training_resumes(workdir):
    target = "results/sst2/kd_eval.json"
    snakemake(workdir, "results/sst2/teacher_eval.json", "results/sst2/teacher_logits.npz")
    state = workdir / "work/sst2/kd/train/state/state.json"
    longer = override(workdir, "longer", {"students_train": {"epochs": 60, "patience": 0}})
    # no early end, and long enough to be still training when the interrupt lands on a loaded machine
    cmd = [str(REPO / ".venv" / "bin" / "snakemake"), "--cores", "4", "-s", str(workdir / "Snakefile"),
           "--directory", str(workdir), target, *longer]
    console = workdir / "interrupted.log"      # Snakemake's own output, shown if the test fails
    started = time.time()

    def written_by_this_run():                 # not a state an earlier test left behind
        try:
            return state.stat().st_mtime >= started
        except FileNotFoundError:
            return False
    def ctrl_c_reaches_it():                   # as from a terminal, whatever the test process inherited
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    with open(console, "w") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=ctrl_c_reaches_it)
        deadline = time.time() + 300
        while not written_by_this_run() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert written_by_this_run() and proc.poll() is None, "training ended before it could be interrupted"
        masks = [line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                 if line.startswith(("SigBlk", "SigIgn"))]  # for the failure message
        os.killpg(proc.pid, signal.SIGINT)          # Ctrl-C: Snakemake stops the job and cleans up
        proc.wait(timeout=120)
    job_log = workdir / "logs/sst2/distill_kd.log"
    assert not (workdir / "results/sst2/kd/model.safetensors").exists(), (
        f"{masks}\n" + console.read_text()[-3000:] + "\n--- distill_kd.log ---\n"
        + (job_log.read_text().replace("\r", "\n")[-3000:] if job_log.exists() else "(none)"))
    snakemake(workdir, target, *longer)
    log = (workdir / "logs/sst2/distill_kd.log").read_text()
    assert re.search(r"resuming at step \d+", log), log[-2000:]
    assert (workdir / target).exists()


@pytest.mark.skipif(not ONEFLOW_PYTHON.exists(), reason="the OneFlow runtime (.venv-oneflow) is not built")
def test_teacher_stages_on_oneflow(tmp_path_factory, mirror):
    """backend: oneflow runs the teacher's stages in .venv-oneflow, from the same Snakefile."""
    work = make_workdir(tmp_path_factory, mirror, backend="oneflow")
    snakemake(work, "results/sst2/teacher_eval.json")
    result = yaml.safe_load((work / "results/sst2/teacher_eval.json").read_text())
    assert result["backend"] == "oneflow" and result["device"] == "cpu"
    assert "on oneflow/cpu" in (work / "logs/sst2/finetune_teacher.log").read_text()


# --------------------------------------------------------------------------- data placed by hand

RECORDS = "data/ofrecord/sst2/bert16/meta.json"
HAND_HINT = "place train.tsv and dev.tsv in data/glue/SST-2/ by hand and rerun"


def place(work: Path, **splits: str) -> dict[str, Path]:
    folder = work / "data" / "glue" / "SST-2"
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in splits.items():
        (folder / f"{split}.tsv").write_text(text)
    return {split: folder / f"{split}.tsv" for split in splits}


def test_a_failed_download_keeps_a_file_placed_by_hand_and_shows_its_error(tmp_path_factory):
    url = offline_url()
    work = make_workdir(tmp_path_factory, url)
    train = place(work, train=sst2_tsv(40, 3))["train"]
    before = train.read_bytes()
    assert planned(work, RECORDS) == {"download_glue": 1, "ofrecord_bert": 1}
    # as a user runs it: without PYTHONUNBUFFERED, a stage's stdout into its log is buffered
    user_env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    failed = snakemake(work, RECORDS, check=False, env=user_env)
    assert failed.returncode != 0
    console = failed.stdout + failed.stderr
    shown = [line for line in console.splitlines() if line.startswith("error: could not download")]
    assert len(shown) == 1, console[-3000:]
    assert shown[0].startswith(f"error: could not download {url}/SST-2.zip (connection refused")
    assert shown[0].endswith(HAND_HINT)
    assert train.read_bytes() == before


def test_download_settings_are_not_rerun_triggers(tmp_path_factory, mirror):
    work = make_workdir(tmp_path_factory, mirror)   # retries: 0, timeout_s: 10
    snakemake(work, RECORDS)
    assert (work / "data/download/SST-2/train.tsv").is_file()
    assert not (work / "data/glue").exists()
    for changed in ({"retries": 1}, {"glue_url": offline_url()}, {"timeout_s": 5},
                    {"mrpc_url": offline_url()}):
        assert planned(work, RECORDS, *override(work, "settings", {"data": changed})) == {}, changed
    # only the data itself triggers what follows the download: a newer file with the same content
    # does not (Snakemake compares the checksum it recorded), a changed one does
    downloaded = work / "data/download/SST-2/train.tsv"
    time.sleep(0.01)
    downloaded.touch()
    assert planned(work, RECORDS) == {}
    downloaded.write_text(downloaded.read_text() + "w1 w2 w3\t1\n")
    assert planned(work, RECORDS) == {"ofrecord_bert": 1}


def test_files_placed_after_a_failed_download_are_used_as_they_are(tmp_path_factory):
    work = make_workdir(tmp_path_factory, offline_url())
    assert snakemake(work, RECORDS, check=False).returncode != 0
    placed = place(work, train=sst2_tsv(40, 3), dev=sst2_tsv(12, 4))
    before = {split: path.read_bytes() for split, path in placed.items()}
    another = override(work, "another_url", {"data": {"glue_url": offline_url()}})
    assert planned(work, RECORDS, *another) == {"ofrecord_bert": 1}
    snakemake(work, RECORDS, *another)
    meta = json.loads((work / RECORDS).read_text())
    assert meta["counts"] == {"train": 36, "validation": 4, "dev": 12}
    assert {split: path.read_bytes() for split, path in placed.items()} == before
    assert not (work / "data/download/SST-2/train.tsv").exists()
    assert planned(work, RECORDS, *another) == {}
