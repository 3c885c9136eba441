"""Data-parallel training: two processes (torchrun with gloo, or OneFlow's launcher) take the same
steps as one process with the same global batch, only rank 0 writes, and a run resumes across
process counts. (The profiles that start such runs are tested in tests/test_profiles.py.)

The tiny BERT has dropout 0: under data parallelism each rank draws its own dropout masks, so runs
with dropout match only in distribution. The learning rate is small (1e-3) because AdamW turns
gradients that are zero in exact arithmetic (attention key biases) into steps of up to ``lr`` in a
direction set by rounding, which differs between one process and two.

Each runtime tests its own backend.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tinydata
from conftest import HAS_ONEFLOW, HAS_TORCH, REPO

from kdlib.data import batching

SPEC = {"epochs": 2, "batch_size": 8, "lr": 1e-3, "save_seconds": 0, "shuffle_buffer": 16,
           "seed": 7, "bucket": 2, "patience": 0}      # every step runs
N_TRAIN = 43          # 5 batches of 8, then one of 3: shards of 2 rows and 1 row
STEPS = 12
OUTPUTS = {"model.safetensors", "config.json", "vocab.txt", "train_log.csv", "train_summary.json"}
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    tinydata.write_pretrained(root / "pretrained", hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0)
    tinydata.write_records(root / "records", n_train=N_TRAIN, n_dev=16, seed=3)
    return root


def finetune_args(data, name: str, backend: str) -> list[str]:
    return ["-m", "workflow_scripts.finetune_teacher", "--task", "sst2",
            "--records", str(data / "records"), "--pretrained", str(data / "pretrained"),
            "--out", str(data / name / "out"), "--work", str(data / name / "work"),
            "--spec", json.dumps(SPEC),
            "--selection", "validation", "--eval-batch-size", "128", "--backend", backend,
            "--device", "cpu", "--precision", "fp32", "--threads", "1"]


def launch(prefix: list[str], args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run([*prefix, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{' '.join(prefix)} failed:\n{proc.stderr[-4000:]}"
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weights(run_dir) -> dict[str, dict[str, np.ndarray]]:
    """The kept (best-dev) model. (The resume state, with the last weights, is cleared once the
    outputs are published; the step-by-step losses below pin the whole trajectory.)"""
    from safetensors.numpy import load_file
    return {"best": load_file(str(run_dir / "out" / "model.safetensors"))}


def assert_same_weights(a: dict, b: dict) -> None:
    for kind in ("best",):
        assert a[kind].keys() == b[kind].keys()
        diff = {k: float(np.abs(a[kind][k] - b[kind][k]).max()) for k in a[kind]}
        worst = max(diff, key=diff.get)
        assert diff[worst] <= TOLERANCE, f"{kind} weights differ: {worst} by {diff[worst]:.2e}"


def log_rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def check_equivalent_and_written_once(data, one: str, two: str, stderr: str) -> None:
    single, double = data / one, data / two
    assert_same_weights(weights(single), weights(double))
    # not equal by standing still: training moved the weights
    trained = weights(single)["best"]["encoder.layer.0.attention.self.query.weight"]
    start = tinydata.random_bert_arrays(tinydata.hf_config())["encoder.layer.0.attention.self.query.weight"]
    assert np.abs(trained - start).max() > 100 * TOLERANCE
    # the same losses step by step (global-batch means) and the same schedule
    rows_1, rows_2 = log_rows(single / "out" / "train_log.csv"), log_rows(double / "out" / "train_log.csv")
    assert [r["step"] for r in rows_2] == [str(s) for s in range(1, STEPS + 1)]   # once each
    assert [r["lr"] for r in rows_1] == [r["lr"] for r in rows_2]
    np.testing.assert_allclose([float(r["loss"]) for r in rows_2], [float(r["loss"]) for r in rows_1],
                               atol=TOLERANCE)
    # rank 0 alone wrote: the same files as one process, the summary says so, one summary line
    assert {p.name for p in (double / "out").iterdir()} == OUTPUTS
    assert not (double / "work").exists() and not (single / "work").exists()   # cleared once published
    summary_1 = json.loads((single / "out" / "train_summary.json").read_text())
    summary_2 = json.loads((double / "out" / "train_summary.json").read_text())
    assert (summary_1["processes"], summary_1["writer_rank"]) == (1, 0)
    assert (summary_2["processes"], summary_2["writer_rank"]) == (2, 0)
    assert summary_2["steps"] == summary_1["steps"] == STEPS
    assert stderr.count("saved to") == 1 and "x 2 processes" in stderr
    assert not [p for p in data.rglob("*") if "rank" in p.name.lower()]


# ---- the reader's shards (both runtimes) -------------------------------------------------------

def test_shards_split_each_global_batch_with_weights_that_make_its_mean(tmp_path):
    path = tinydata.write_split(tmp_path / "train.of_record-0", tinydata.make_examples(19, seed=1))
    opts = dict(shuffle_buffer=8, seed=3, epoch=1, bucket=2)
    whole = list(batching.batches(path, 8, **opts))
    for world in (2, 3):
        shards = [list(batching.batches(path, 8, shard=(r, world), **opts)) for r in range(world)]
        assert all(len(s) == len(whole) for s in shards)
        for k, batch in enumerate(whole):
            parts = [s[k] for s in shards]
            n = len(batch["index"])
            weighted = [p for p in parts if p["shard_weight"] > 0]
            assert sorted(np.concatenate([p["index"] for p in weighted]).tolist()) == sorted(batch["index"].tolist())
            assert all(p["global_rows"] == n for p in parts)
            # every shard keeps the global batch's trimmed length
            assert all(p["input_ids"].shape[1] == batch["input_ids"].shape[1] for p in parts)
            # sum_r w_r * mean_r / W == the global mean, for any per-row values
            values = batch["index"].astype(float) ** 2
            by_index = dict(zip(batch["index"].tolist(), values))
            mean = sum(p["shard_weight"] * np.mean([by_index[i] for i in p["index"]]) for p in parts) / world
            assert mean == pytest.approx(values.mean())
    # the last batch of 19 = 2 x 8 + 3 leaves rank 3 of 4 nothing: it borrows a row at weight 0
    last = [list(batching.batches(path, 8, shard=(r, 4)))[-1] for r in range(4)]
    assert [len(p["index"]) for p in last] == [1, 1, 1, 1]
    assert [p["shard_weight"] for p in last] == [4 / 3, 4 / 3, 4 / 3, 0.0]


# ---- torch: torchrun, gloo -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch_runs(data):
    if not HAS_TORCH:
        pytest.skip("the torch backend runs in the PyTorch runtime (.venv)")
    launch([sys.executable], finetune_args(data, "torch1", "torch"))
    two = launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
                 finetune_args(data, "torch2", "torch"))
    return two.stderr


def test_two_torch_processes_match_one_and_only_rank_0_writes(data, torch_runs):
    check_equivalent_and_written_once(data, "torch1", "torch2", torch_runs)


def test_an_interrupted_run_resumes_exactly_with_another_process_count(data, torch_runs, monkeypatch):
    """One process stops at step 7 (its last resume state is from step 7: one after every step); two
    processes finish it."""
    from kdlib.distill import teacher
    from workflow_scripts import finetune_teacher

    class Stop(Exception):
        pass
    real = teacher.supervised_loss_fn

    def stopping(B, model, regression):
        loss_fn = real(B, model, regression)

        def wrapped(batch):
            if batch["step"] == 7:
                raise Stop
            return loss_fn(batch)
        return wrapped
    monkeypatch.setattr(teacher, "supervised_loss_fn", stopping)
    args = finetune_args(data, "resumed", "torch")[2:]
    with pytest.raises(Stop):
        finetune_teacher.main([*args[:-1], "0"])            # in this process, threads untouched
    assert not (data / "resumed" / "out").exists()
    resumed = launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
                     finetune_args(data, "resumed", "torch"))
    assert f"resuming at step 7/{STEPS}" in resumed.stderr
    assert_same_weights(weights(data / "torch1"), weights(data / "resumed"))
    assert [r["step"] for r in log_rows(data / "resumed" / "out" / "train_log.csv")] == \
        [str(s) for s in range(1, STEPS + 1)]


# ---- OneFlow: oneflow.distributed.launch ----------------------------------------------------------

def test_two_oneflow_processes_match_one_and_only_rank_0_writes(data):
    if not HAS_ONEFLOW:
        pytest.skip("the oneflow backend runs in the OneFlow runtime (.venv-oneflow)")
    launch([sys.executable], finetune_args(data, "oneflow1", "oneflow"))
    two = launch([sys.executable, "-m", "oneflow.distributed.launch", "--nproc_per_node", "2",
                  "--master_port", str(free_port())], finetune_args(data, "oneflow2", "oneflow"))
    check_equivalent_and_written_once(data, "oneflow1", "oneflow2", two.stderr)
