"""The teacher stages end to end on tiny data: finetune_teacher (learning, outputs, exact resume after
SIGKILL, divergence, bad input) and evaluate_model (the eval JSON, the reference comparison).

Runs in both runtimes with that runtime's backend, so the OneFlow runtime covers ``backend:
oneflow``. The data is a tiny bag-of-words rule (tests/tinydata.py) that a 2-layer BERT learns in
72 steps: dev accuracy about 0.9 in either backend, from 0.46 after the first epoch.
"""
from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import numpy as np
import pytest
import tinydata
from conftest import HAS_TORCH, REPO, error_lines

from kdlib.data.ofrecord import iter_records, record_file
from kdlib.data.tasks import get_task
from kdlib.distill import resume, train
from kdlib.evaluate import eval_json
from kdlib.evaluate.evaluation import evaluate
from kdlib.models import checkpoint
from kdlib.models.weights import read_safetensors
from workflow_scripts import evaluate_model, finetune_teacher

TASK = "sst2"                                    # binary, metric: accuracy
BACKEND = "torch" if HAS_TORCH else "oneflow"
N_TRAIN, N_DEV = 192, 48
SPEC = dict(epochs=6, batch_size=16, lr=3e-3, warmup=0.1, save_seconds=0, shuffle_buffer=64, seed=42,
               eval_every=12, patience=0)      # a validation evaluation per epoch, no early stop
TOTAL_STEPS = 6 * N_TRAIN // 16                  # 72 steps, 12 an epoch


def teacher_argv(data, name, **spec) -> list[str]:
    return ["--task", TASK, "--records", str(data / "records"), "--pretrained", str(data / "pretrained"),
            "--out", str(data / name / "teacher"), "--work", str(data / name / "work"),
            "--spec", json.dumps({**SPEC, **spec}), "--selection", "validation", "--eval-batch-size", "128",
            "--backend", BACKEND, "--device", "cpu", "--precision", "fp32", "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    tinydata.write_pretrained(root / "pretrained", seed=0)
    tinydata.write_records(root / "records", n_train=N_TRAIN, n_dev=N_DEV, seed=0)
    return root


@pytest.fixture(scope="module", autouse=True)
def _restore_threads(B):
    """The stages run with ``--threads 1`` (steady beside other jobs); give PyTorch its count back
    after this module. (OneFlow 0.9 cannot report its count; that runtime keeps one thread.)"""
    before = B.lib.get_num_threads() if hasattr(B.lib, "get_num_threads") else None
    yield
    if before is not None:
        B.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(data):
    """One uninterrupted teacher run, in-process."""
    assert finetune_teacher.main(teacher_argv(data, "whole")) == 0
    return data / "whole"


def read_log(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---- finetune_teacher ----------------------------------------------------------------------------

def test_finetune_teacher_writes_the_checkpoint_and_learns(trained, data, B):
    out = trained / "teacher"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.safetensors", "config.json", "vocab.txt", "train_log.csv", "train_summary.json"])
    config = checkpoint.read_checkpoint_config(out)
    assert config["model_type"] == "bert" and config["task"] == TASK and config["role"] == "teacher"
    assert config["num_labels"] == 2 and config["num_hidden_layers"] == 2 and config["hidden_size"] == 32
    assert (out / "vocab.txt").read_text() == (data / "pretrained" / "vocab.txt").read_text()
    checkpoint.load_checkpoint(B, out)                  # loads on this backend

    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == TOTAL_STEPS and summary["task"] == TASK
    assert summary["config"] == {**asdict(train.TrainConfig.from_dict({})), **SPEC}
    assert [h["step"] for h in summary["history"]] == [12 * (i + 1) for i in range(6)]
    assert summary["best_score"] == max(h["accuracy"] for h in summary["history"])
    rows = read_log(out / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, TOTAL_STEPS + 1))

    # the rule is learnt: dev accuracy far above chance (~0.5), and the loss falls
    assert summary["best_score"] > 0.75, summary["history"]
    assert summary["history"][-1]["accuracy"] > 0.75, summary["history"]
    losses = [float(r["loss"]) for r in rows]
    assert np.mean(losses[-12:]) < 0.7 * np.mean(losses[:12]), losses


def test_evaluate_model_writes_the_eval_json(trained, data, B, tmp_path, capsys):
    out = trained / "teacher"
    summary = json.loads((out / "train_summary.json").read_text())
    argv = ["--task", TASK, "--name", "teacher", "--model", str(out), "--records", str(data / "records"),
            "--eval-batch-size", "128", "--backend", BACKEND, "--device", "cpu", "--precision", "fp32",
            "--threads", "0"]
    assert evaluate_model.main(argv + ["--out", str(tmp_path / "teacher_eval.json"),
                                       "--predictions", str(tmp_path / "teacher.npz")]) == 0
    result = json.loads((tmp_path / "teacher_eval.json").read_text())
    for key in ("task", "metrics", "score", "parameters", "size_bytes", "backend", "device",
                "precision", "train_seconds"):
        assert key in result, key
    assert result["task"] == TASK and result["backend"] == B.name and result["device"] == "cpu"
    assert set(result["metrics"]) == {"dev"} and result["metrics"]["dev"]["accuracy"] == result["score"]
    # the checkpoint kept is the best on validation; dev is scored once, here
    assert result["selection"] == summary["selection"]
    assert result["selection"]["split"] == "validation" and result["selection"]["mode"] == "validation"
    model, _ = checkpoint.load_checkpoint(B, out)
    on_validation = evaluate(B, model, get_task(TASK), record_file(data / "records", "validation"))
    assert on_validation["accuracy"] == pytest.approx(summary["best_score"]) == pytest.approx(
        result["selection"]["score"])
    weights = read_safetensors(out / "model.safetensors")
    assert result["parameters"] == sum(v.size for v in weights.values())
    assert result["size_bytes"] == sum(f.stat().st_size for f in out.iterdir()     # the model, not its log
                                       if f.name not in ("train_log.csv", "train_summary.json"))
    assert result["train_seconds"] == summary["train_seconds"] > 0
    assert "retained" not in result and "latency_ms_batch1" not in result   # speed: measure_speed
    assert "wrote" in capsys.readouterr().err
    # the predictions the metrics came from, in record order
    logits, labels = eval_json.read_predictions(tmp_path / "teacher.npz", "dev")
    assert logits.shape == (N_DEV, 2) and logits.dtype == np.float32
    assert labels.tolist() == [int(r["label_ids"][0]) for r in iter_records(record_file(data / "records", "dev"))]
    assert (logits.argmax(1) == labels).mean() == pytest.approx(result["score"])

    # against a reference: the share of the reference's score retained
    reference = {**result, "score": 0.9}
    (tmp_path / "ref.json").write_text(json.dumps(reference))     # the teacher's, with a round score
    assert evaluate_model.main(argv + ["--out", str(tmp_path / "student_eval.json"), "--predictions",
                                       str(tmp_path / "student.npz"),
                                       "--reference", str(tmp_path / "ref.json")]) == 0
    student = json.loads((tmp_path / "student_eval.json").read_text())
    assert student["score"] == result["score"]
    assert student["retained"] == round(student["score"] / 0.9, 4)


def test_finetune_teacher_resumes_exactly_after_sigkill(trained, data):
    """Kill a run mid-way (SIGKILL), rerun the same command: same weights, log and summary as the
    uninterrupted run."""
    cmd = [sys.executable, "-m", "workflow_scripts.finetune_teacher", *teacher_argv(data, "killed")]
    work, out = data / "killed" / "work", data / "killed" / "teacher"
    state = work / resume.STATE_DIR / resume.META

    def saved_step() -> int:
        try:
            return json.loads(state.read_text())["meta"]["step"]
        except (OSError, ValueError, KeyError):
            return 0                     # not written yet, or being replaced right now

    with open(data / "killed.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while saved_step() < 30 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)          # a no-op if it has already ended
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    log_text = (data / "killed.log").read_text(errors="replace")
    assert proc.returncode == -signal.SIGKILL, log_text[-2000:]
    killed_at = saved_step()
    assert 30 <= killed_at < TOTAL_STEPS and not out.exists(), f"killed at step {killed_at}"

    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming at step {killed_at}/{TOTAL_STEPS}" in rerun.stderr

    # the best checkpoint equals the uninterrupted run's (the resume states are cleared once the
    # outputs are published; the step-by-step losses below pin the whole trajectory)
    ref_out = trained / "teacher"
    assert not work.exists() and not (trained / "work").exists()
    best, ref_best = (read_safetensors(o / "model.safetensors") for o in (out, ref_out))
    for key in ref_best:
        np.testing.assert_allclose(best[key], ref_best[key], rtol=0, atol=1e-6, err_msg=key)
    summary, ref_summary = (json.loads((o / "train_summary.json").read_text()) for o in (out, ref_out))
    for key in ("best_score", "best_step", "steps", "history", "config"):
        assert summary[key] == ref_summary[key], key
    # every step logged exactly once, with the uninterrupted run's learning rates and losses
    rows, ref_rows = read_log(out / "train_log.csv"), read_log(ref_out / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, TOTAL_STEPS + 1))
    for key in ("step", "epoch", "lr", "loss", "eval_score"):
        assert [r[key] for r in rows] == [r[key] for r in ref_rows], key


class Stop(Exception):
    pass


def interrupted_run(data, name, monkeypatch, at_step=20, **spec):
    """The stage, in this process, stopped at ``at_step`` (a resume state is left in work/)."""
    from kdlib.distill import teacher

    real = teacher.supervised_loss_fn

    def stopping(B, model, regression):
        loss_fn = real(B, model, regression)

        def wrapped(batch):
            if batch["step"] == at_step:
                raise Stop
            return loss_fn(batch)
        return wrapped
    with monkeypatch.context() as m:
        m.setattr(teacher, "supervised_loss_fn", stopping)
        with pytest.raises(Stop):
            finetune_teacher.main(teacher_argv(data, name, **spec))
    assert (data / name / "work" / resume.STATE_DIR / resume.META).is_file()


def assert_same_checkpoint(a, b):
    wa, wb = (read_safetensors(d / "model.safetensors") for d in (a, b))
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)


def test_a_changed_setting_after_a_kill_retrains_from_scratch(data, monkeypatch, capsys):
    """teacher.per_task.<task>.lr changed after a killed run: the rerun is a clean run with the
    new lr (same weights), and it says why it did not resume."""
    interrupted_run(data, "relr", monkeypatch, lr=3e-3)
    capsys.readouterr()
    assert finetune_teacher.main(teacher_argv(data, "relr", lr=2e-3)) == 0
    err = capsys.readouterr().err
    assert "resuming" not in err and "train.lr: 0.003 -> 0.002" in err, err
    assert finetune_teacher.main(teacher_argv(data, "relr_clean", lr=2e-3)) == 0
    assert_same_checkpoint(data / "relr" / "teacher", data / "relr_clean" / "teacher")
    assert not (data / "relr" / "work").exists()                 # cleared once published


def test_changed_data_or_pretrained_weights_after_a_kill_retrain_from_scratch(data, tmp_path,
                                                                             monkeypatch, capsys):
    """Rebuilt records (another data seed) and another pretrained model both start over."""
    records = data / "records"
    interrupted_run(data, "redata", monkeypatch)
    argv = teacher_argv(data, "redata")
    moved = tinydata.write_records(tmp_path / "records", n_train=N_TRAIN, n_dev=N_DEV, seed=14)
    argv[argv.index("--records") + 1] = str(moved)
    capsys.readouterr()
    assert finetune_teacher.main(argv) == 0
    err = capsys.readouterr().err
    assert "resuming" not in err and "input changed: training records, validation records" in err, err
    clean = teacher_argv(data, "redata_clean")
    clean[clean.index("--records") + 1] = str(moved)
    assert finetune_teacher.main(clean) == 0
    assert_same_checkpoint(data / "redata" / "teacher", data / "redata_clean" / "teacher")
    assert records.exists()

    interrupted_run(data, "repre", monkeypatch)
    tinydata.write_pretrained(tmp_path / "pretrained", seed=1)
    argv = teacher_argv(data, "repre")
    argv[argv.index("--pretrained") + 1] = str(tmp_path / "pretrained")
    capsys.readouterr()
    assert finetune_teacher.main(argv) == 0
    assert "input changed: pretrained weights" in capsys.readouterr().err


HOLD_LOCK = """
import sys, time
from kdlib.io import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_work_folder_in_use_is_refused_in_one_line_until_its_job_ends(data, capsys):
    """A stage left running (Snakemake killed, then --unlock, then a rerun) holds its work folder: a
    second run on it is one error line naming the folder and the holder's pid, and touches neither
    the work folder nor the old output. Once the holder dies (SIGKILL: no cleanup) the rerun trains."""
    work, out = data / "busy" / "work", data / "busy" / "teacher"
    work.mkdir(parents=True)
    out.mkdir()
    (work / "notes.txt").write_text("the first job's")
    (out / "model.safetensors").write_text("the old output")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(work)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        before = {p: p.read_bytes() for p in (data / "busy").rglob("*") if p.is_file()}
        assert finetune_teacher.main(teacher_argv(data, "busy", epochs=1)) == 1
        errors = error_lines(capsys)
        assert errors == [f"error: {work} is in use by another running job (pid {holder.pid}); wait for it "
                          "or stop it (docs/configuring.md, Troubleshooting)"], errors
        assert {p: p.read_bytes() for p in (data / "busy").rglob("*") if p.is_file()} == before
    finally:
        holder.kill()
        holder.wait()
    assert finetune_teacher.main(teacher_argv(data, "busy", epochs=1)) == 0
    assert checkpoint.read_checkpoint_config(out)["role"] == "teacher" and not work.exists()


def test_a_work_folder_that_is_a_link_keeps_what_it_points_to(data, tmp_path, capsys):
    """The stage's work folder is a link to a folder outside holding a file and an old resume state:
    the stage trains in a folder of its own and deletes neither."""
    outside = tmp_path / "outside"
    (outside / resume.STATE_DIR).mkdir(parents=True)
    (outside / "keep.txt").write_text("not kdflow's")
    (outside / resume.STATE_DIR / resume.META).write_text('{"meta": {"step": 3}}')
    (data / "linked").mkdir()
    (data / "linked" / "work").symlink_to(outside, target_is_directory=True)
    assert finetune_teacher.main(teacher_argv(data, "linked", epochs=1)) == 0
    assert (outside / "keep.txt").read_text() == "not kdflow's"
    assert (outside / resume.STATE_DIR / resume.META).read_text() == '{"meta": {"step": 3}}'
    assert not (data / "linked" / "work").exists() and (data / "linked" / "teacher" / "model.safetensors").exists()


def test_unwritable_outputs_fail_before_training(data, tmp_path, capsys):
    """A work folder that is a file, or an output folder that cannot be written, is one error
    line, and no training has run."""
    argv = teacher_argv(data, "blocked")
    (data / "blocked").mkdir()
    (data / "blocked" / "work").write_text("not a folder")
    assert finetune_teacher.main(argv) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "blocked/work" in errors[0] and "is a file" in errors[0], errors
    assert "Traceback" not in err and "teacher sst2:" not in err      # no progress bar: not trained

    argv = teacher_argv(data, "blocked2")
    argv[argv.index("--out") + 1] = str(data / "blocked" / "work" / "teacher")   # under a file
    assert finetune_teacher.main(argv) == 1
    errors = error_lines(capsys)
    assert len(errors) == 1 and "cannot write the output folder" in errors[0], errors


def test_records_longer_than_the_teachers_positions_are_one_error_line(data, tmp_path, capsys):
    """A max_length above the teacher's position embeddings (16 here) is named before training."""
    records = tmp_path / "long"
    shutil.copytree(data / "records", records)
    (records / "meta.json").write_text(json.dumps({"task": TASK, "kind": "bert", "max_length": 24}))
    argv = teacher_argv(data, "long")
    argv[argv.index("--records") + 1] = str(records)
    assert finetune_teacher.main(argv) == 1
    errors = error_lines(capsys)
    assert len(errors) == 1 and "records of 24 WordPiece pieces, but the teacher has 16 positions" \
        in errors[0] and "lower data.max_length" in errors[0], errors


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v chattr"], capture_output=True).returncode,
                    reason="chattr is not installed")
def test_an_immutable_results_folder_fails_before_training(data, tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    if subprocess.run(["chattr", "+i", str(results)], capture_output=True).returncode:
        pytest.skip("this file system or user cannot set the immutable flag")
    try:
        argv = teacher_argv(data, "immutable")
        argv[argv.index("--out") + 1] = str(results / "teacher")
        assert finetune_teacher.main(argv) == 1
        errors = error_lines(capsys)
        assert len(errors) == 1 and "cannot write the output folder" in errors[0], errors
        assert not (data / "immutable" / "work" / resume.STATE_DIR).exists()
    finally:
        subprocess.run(["chattr", "-i", str(results)])


def test_diverging_run_is_one_error_line(data, tmp_path, capsys):
    argv = teacher_argv(data, "diverge", lr=1e6, epochs=1)
    assert finetune_teacher.main(argv) == 1
    errors = error_lines(capsys)
    assert len(errors) == 1 and "the loss became" in errors[0], errors
    assert " at step " in errors[0] and "lower the learning rate" in errors[0]


# ---- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, needle", [
    ({"epochs": 1, "learning_rate": 0.1}, "learning_rate"),
    ({"batch_size": "8"}, "batch_size"),
    ({"warmup": 2}, "warmup"),
])
def test_a_bad_spec_is_one_error_line(data, capsys, spec, needle):
    argv = teacher_argv(data, "bad")
    argv[argv.index("--spec") + 1] = json.dumps(spec)
    assert finetune_teacher.main(argv) == 1
    errors = error_lines(capsys)
    assert len(errors) == 1 and needle in errors[0] and "--spec" in errors[0], errors
    assert not (data / "bad").exists()


def test_missing_record_folder_is_one_error_line(data, tmp_path, capsys):
    argv = teacher_argv(data, "norecords")
    argv[argv.index("--records") + 1] = str(tmp_path / "nowhere")
    assert finetune_teacher.main(argv) == 1
    errors = error_lines(capsys)
    assert len(errors) == 1 and str(tmp_path / "nowhere") in errors[0], errors


def test_missing_pretrained_folder_is_one_error_line(data, tmp_path, capsys):
    argv = teacher_argv(data, "nopretrained")
    argv[argv.index("--pretrained") + 1] = str(tmp_path / "nowhere")
    assert finetune_teacher.main(argv) == 1
    errors = error_lines(capsys)
    assert len(errors) == 1 and str(tmp_path / "nowhere") in errors[0], errors


def _eval_argv(model_dir, data, out):
    return ["--task", TASK, "--name", "teacher", "--model", str(model_dir), "--records",
            str(data / "records"), "--out", str(out), "--predictions", str(out) + ".npz",
            "--eval-batch-size", "128", "--backend", BACKEND,
            "--device", "cpu", "--precision", "fp32", "--threads", "0"]


def test_corrupt_checkpoint_weights_are_one_error_line(trained, data, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in (trained / "teacher").iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])     # truncated
    assert evaluate_model.main(_eval_argv(broken, data, tmp_path / "eval.json")) == 1
    errors = error_lines(capsys)
    assert len(errors) == 1 and str(weights) in errors[0], errors
    assert errors[0].endswith(f"delete {broken}/ and rerun to retrain it"), errors   # how to recover
    assert not (tmp_path / "eval.json").exists()


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]", '{"score": 0.9}'])
def test_bad_reference_json_is_one_error_line(trained, data, tmp_path, capsys, content):
    reference = tmp_path / "teacher_eval.json"
    if content is not None:
        reference.write_text(content)
    argv = _eval_argv(trained / "teacher", data, tmp_path / "eval.json") + ["--reference", str(reference)]
    assert evaluate_model.main(argv) == 1
    errors = error_lines(capsys)
    assert len(errors) == 1 and str(reference) in errors[0], errors
