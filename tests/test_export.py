"""Teacher-layer export (kdlib.distill.layers, workflow_scripts/export_teacher_layers.py) and the teacher
logit cache (kdlib.distill.logit_cache, workflow_scripts/cache_teacher_logits.py), in this runtime's backend.

An exported layer is the teacher's layer, bit for bit: fed the teacher's hidden state below it, it
gives the teacher's output. The cache holds one row per record of every split, in file order, and
refuses (one line naming the file) a cache that does not line up with the records a student reads.

The deployment table (kdlib.export.deploy, from given timings: nothing here is timed) marks the
figures whose rounds disagree or that a busy machine measured, and every speed-up made from them.
"""
from __future__ import annotations

import numpy as np
import pytest
import tinydata
from conftest import HAS_TORCH, error_lines

from kdlib.data import batching
from kdlib.data.batching import model_inputs
from kdlib.data.ofrecord import iter_records, record_file
from kdlib.data.tasks import get_task
from kdlib.distill import logit_cache
from kdlib.distill.layers import (
    export_layers,
    export_pretrained_layers,
    first_layers,
    select_layers,
    skip_layers,
)
from kdlib.errors import ConfigError, DataError
from kdlib.evaluate.evaluation import predict
from kdlib.export import deploy
from kdlib.models import checkpoint
from kdlib.models.bert import extended_mask
from kdlib.models.pretrained import load_pretrained_bert
from kdlib.models.weights import read_safetensors
from workflow_scripts import cache_teacher_logits, export_teacher_layers

TASK = get_task("sst2")
BACKEND = "torch" if HAS_TORCH else "oneflow"
N_TRAIN, N_DEV = 24, 10


@pytest.fixture(scope="module")
def data(tmp_path_factory, B):
    root = tmp_path_factory.mktemp("export")
    tinydata.write_pretrained(root / "pretrained", seed=1, num_hidden_layers=4, intermediate_size=64)
    B.seed(0)
    model, _ = load_pretrained_bert(B, root / "pretrained", TASK.num_labels, log=lambda m: None)
    checkpoint.save_checkpoint(model, root / "teacher", {"task": TASK.name, "role": "teacher"})
    tinydata.write_records(root / "bert", n_train=N_TRAIN, n_dev=N_DEV, seed=3)
    return root


# ---- layer choice ----------------------------------------------------------------------------------

def test_layer_choices():
    assert skip_layers(3, 6) == [2, 4, 6]
    assert skip_layers(3, 12) == [4, 8, 12]
    assert skip_layers(6, 12) == [2, 4, 6, 8, 10, 12]
    assert skip_layers(2, 4) == [2, 4] and skip_layers(4, 4) == [1, 2, 3, 4]
    assert first_layers(3, 6) == [1, 2, 3] and first_layers(2, 4) == [1, 2]
    for fn in (skip_layers, first_layers):
        with pytest.raises(ConfigError, match="7-layer student"):
            fn(7, 6)


@pytest.mark.parametrize("layers", [[0, 2], [2, 5], [-1]])
def test_a_missing_teacher_layer_is_a_config_error(layers, data, tmp_path):
    arrays = read_safetensors(data / "teacher" / "model.safetensors")
    with pytest.raises(ConfigError, match="does not exist"):
        select_layers(arrays, layers, 4)
    with pytest.raises(ConfigError) as info:
        export_layers(data / "teacher", layers, tmp_path / "init")
    assert "\n" not in str(info.value) and "the teacher has 4" in str(info.value)
    assert not (tmp_path / "init").exists()


# ---- export -----------------------------------------------------------------------------------------

def test_exported_layers_are_the_teachers_own(data, tmp_path, B):
    out = export_layers(data / "teacher", [2, 4], tmp_path / "init")
    teacher_w = read_safetensors(data / "teacher" / "model.safetensors")
    student_w = read_safetensors(out / "model.safetensors")

    # keys keep HF names: teacher encoder.layer.1.* -> student encoder.layer.0.*, 3.* -> 1.*
    layer_keys = lambda w, i: {k[len(f"encoder.layer.{i}."):]: v for k, v in w.items()  # noqa: E731
                               if k.startswith(f"encoder.layer.{i}.")}
    assert len(layer_keys(student_w, 0)) == 16
    for s, t in ((0, 1), (1, 3)):
        mine, theirs = layer_keys(student_w, s), layer_keys(teacher_w, t)
        assert mine.keys() == theirs.keys()
        assert all(np.array_equal(mine[k], theirs[k]) for k in mine)
    assert not any(k.startswith("encoder.layer.2.") for k in student_w)
    others = {k for k in teacher_w if not k.startswith("encoder.")}
    assert others == {k for k in student_w if not k.startswith("encoder.")}
    assert all(np.array_equal(student_w[k], teacher_w[k]) for k in others)     # embeddings, head
    assert len(student_w) == len(others) + 2 * 16

    config = checkpoint.read_checkpoint_config(out)
    teacher_cfg = checkpoint.read_checkpoint_config(data / "teacher")
    assert config["num_hidden_layers"] == 2 and config["teacher_layers"] == [2, 4]
    assert config["init"] == "teacher"
    assert {k: v for k, v in config.items() if k not in ("num_hidden_layers", "teacher_layers", "init")} == \
        {k: v for k, v in teacher_cfg.items() if k != "num_hidden_layers"}

    # fed the teacher's state below it, each student layer gives the teacher layer's output
    teacher, _ = checkpoint.load_checkpoint(B, data / "teacher")
    student, _ = checkpoint.load_checkpoint(B, out)
    batch = next(iter(batching.batches(record_file(data / "bert", "dev"), 8)))
    inputs = model_inputs(B, batch)
    ext = extended_mask(inputs["attention_mask"])
    with B.no_grad():
        hidden = teacher(**inputs, output_all=True)["hidden"]          # embeddings, layers 1..4
        emb = student.embed(inputs["input_ids"], inputs["token_type_ids"])
        for s, t in ((0, 2), (1, 4)):
            got, _ = student.encoder.layer[s](hidden[t - 1], ext)
            assert float(np.abs(B.to_numpy(got) - B.to_numpy(hidden[t])).max()) <= 1e-6
    assert np.array_equal(B.to_numpy(emb), B.to_numpy(hidden[0]))


def test_pretrained_layers_are_the_folders_before_fine_tuning(data, tmp_path, B):
    raw = read_safetensors(data / "pretrained" / "model.safetensors")
    pretrained = {k[len("bert."):]: v for k, v in raw.items() if k.startswith("bert.")}
    teacher = read_safetensors(data / "teacher" / "model.safetensors")
    out = export_pretrained_layers(B, data / "pretrained", [2, 4], 3, tmp_path / "init")
    student = read_safetensors(out / "model.safetensors")
    for s, t in ((0, 1), (1, 3)):
        for key in [k for k in pretrained if k.startswith(f"encoder.layer.{t}.")]:
            assert np.array_equal(student[key.replace(f"layer.{t}.", f"layer.{s}.")], pretrained[key])
    assert np.array_equal(student["embeddings.word_embeddings.weight"],
                          pretrained["embeddings.word_embeddings.weight"])
    assert student["classifier.weight"].shape == (3, pretrained["embeddings.word_embeddings.weight"].shape[1])
    assert not np.array_equal(student["classifier.weight"][:2], teacher["classifier.weight"])
    config = checkpoint.read_checkpoint_config(out)
    assert config["init"] == "pretrained" and config["teacher_layers"] == [2, 4]
    assert config["num_hidden_layers"] == 2 and config["num_labels"] == 3
    again = export_pretrained_layers(B, data / "pretrained", [2, 4], 3, tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    model, _ = checkpoint.load_checkpoint(B, out)                     # a checkpoint like any other
    assert len(model.encoder.layer) == 2


def test_export_script_from_the_pretrained_folder(data, tmp_path, capsys):
    out = tmp_path / "init"
    argv = ["--pretrained", str(data / "pretrained"), "--layers", "1,3", "--out", str(out)]
    assert export_teacher_layers.main(argv + ["--task", "sst2", "--records", str(data / "bert")]) == 0
    assert checkpoint.read_checkpoint_config(out)["num_labels"] == TASK.num_labels
    assert export_teacher_layers.main(argv[:-1] + [str(tmp_path / "bad")]) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and "--pretrained needs --task and --records" in lines[0], lines
    assert not (tmp_path / "bad").exists()


def test_a_rerun_replaces_the_export(data, tmp_path):
    out = tmp_path / "init"
    export_layers(data / "teacher", [1, 2, 3], out)
    export_layers(data / "teacher", [4], out, extra={"note": "x"})
    config = checkpoint.read_checkpoint_config(out)
    assert config["teacher_layers"] == [4] and config["note"] == "x"
    assert not any(k.startswith("encoder.layer.1.")
                   for k in read_safetensors(out / "model.safetensors"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["init"]


def test_export_script(data, tmp_path, capsys):
    out = tmp_path / "init"
    assert export_teacher_layers.main(["--teacher", str(data / "teacher"), "--layers", "1,3",
                                       "--out", str(out)]) == 0
    assert error_lines(capsys) == []
    assert checkpoint.read_checkpoint_config(out)["teacher_layers"] == [1, 3]

    for argv, fragment in (
            (["--teacher", str(data / "teacher"), "--layers", "2,x"], "--layers '2,x'"),
            (["--teacher", str(data / "teacher"), "--layers", "2,9"], "teacher layer 9"),
            (["--teacher", str(tmp_path / "nowhere"), "--layers", "2"], str(tmp_path / "nowhere"))):
        assert export_teacher_layers.main(argv + ["--out", str(tmp_path / "bad")]) == 1
        lines = error_lines(capsys)
        assert len(lines) == 1 and fragment in lines[0], lines
        assert not (tmp_path / "bad").exists()


# ---- the logit cache ---------------------------------------------------------------------------------

def one_by_one(B, model, path) -> np.ndarray:
    """The model's logits for each record of ``path`` alone, in file order: the reference that
    does not go through the batched, length-bucketed reader."""
    rows = []
    with B.no_grad():
        for rec in iter_records(path):
            n = int(rec["input_mask"].sum())
            inputs = {"input_ids": B.tensor(rec["input_ids"][None, :n]),
                      "attention_mask": B.tensor(rec["input_mask"][None, :n]),
                      "token_type_ids": B.tensor(rec["segment_ids"][None, :n])}
            rows.append(B.to_numpy(model(**inputs)["logits"])[0])
    return np.stack(rows)


def test_cache_holds_the_teachers_logits_in_record_order(data, tmp_path, B):
    out = tmp_path / "logits.npz"
    rows = logit_cache.cache_logits(B, TASK, data / "teacher", data / "bert", out, batch_size=7)
    assert rows == {"train": N_TRAIN}                       # the students learn from train alone
    arrays = logit_cache.load_logits(out, data / "bert", TASK)
    assert sorted(arrays) == ["train"]
    teacher, _ = checkpoint.load_checkpoint(B, data / "teacher")
    for split, n in rows.items():
        assert arrays[split].shape == (n, 2) and arrays[split].dtype == np.float32
        expected = one_by_one(B, teacher, record_file(data / "bert", split))
        np.testing.assert_allclose(arrays[split], expected, atol=1e-5)
    assert not np.allclose(arrays["train"], arrays["train"][0])         # one row per record


def test_predict_returns_every_row_in_file_order(data, B):
    """Evaluation batches come from length-sorted pools; the rows must come back in file order.
    (The tiny records differ in encoded size, so the pools really reorder them.)"""
    path = record_file(data / "bert", "train")
    order = np.concatenate([b["index"] for b in batching.batches(path, 5, bucket=20)])
    assert sorted(order.tolist()) == list(range(N_TRAIN)) and order.tolist() != list(range(N_TRAIN))
    teacher, _ = checkpoint.load_checkpoint(B, data / "teacher")
    logits, labels = predict(B, teacher, path, batch_size=5)
    np.testing.assert_allclose(logits, one_by_one(B, teacher, path), atol=1e-5)
    assert labels.tolist() == [int(r["label_ids"][0]) for r in iter_records(path)]


def test_cache_of_the_wrong_width_is_refused(data, tmp_path):
    wide = tmp_path / "wide.npz"
    np.savez(wide, train=np.zeros((N_TRAIN, 3), np.float32), dev=np.zeros((N_DEV, 3), np.float32))
    with pytest.raises(DataError) as info:
        logit_cache.load_logits(wide, data / "bert", TASK)
    message = str(info.value)
    assert "\n" not in message and str(wide) in message and "2 column(s)" in message, message


def test_cache_that_does_not_line_up_is_refused(data, tmp_path, B):
    out = tmp_path / "logits.npz"
    logit_cache.cache_logits(B, TASK, data / "teacher", data / "bert", out, batch_size=16)
    other = tinydata.write_records(tmp_path / "other", n_train=N_TRAIN + 1, n_dev=N_DEV, seed=4)
    with pytest.raises(DataError) as info:
        logit_cache.load_logits(out, other, TASK)
    message = str(info.value)
    assert "\n" not in message and str(out) in message and f"{N_TRAIN} train logits" in message
    assert str(other) in message

    np.savez(tmp_path / "dev_only.npz", dev=np.zeros((N_DEV, 2), np.float32))
    with pytest.raises(DataError, match="no logits for split train"):
        logit_cache.load_logits(tmp_path / "dev_only.npz", data / "bert", TASK)

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a numpy archive\n" * 10)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(out.read_bytes()[:100])
    bare = tmp_path / "bare.npz"
    with open(bare, "wb") as fh:
        np.save(fh, np.zeros((N_TRAIN, 2), np.float32))
    for path in (garbage, truncated, bare, tmp_path / "missing.npz"):
        with pytest.raises(DataError) as info:
            logit_cache.load_logits(path, data / "bert", TASK)
        message = str(info.value)
        assert "\n" not in message and message.startswith(str(path)), message


def test_cache_script(data, tmp_path, capsys):
    out = tmp_path / "teacher_logits.npz"
    argv = ["--task", TASK.name, "--teacher", str(data / "teacher"), "--records", str(data / "bert"),
            "--out", str(out), "--eval-batch-size", "16", "--backend", BACKEND, "--device", "cpu",
            "--precision", "fp32", "--threads", "0"]
    assert cache_teacher_logits.main(argv) == 0
    assert error_lines(capsys) == []
    with np.load(out) as arrays:
        assert {k: arrays[k].shape for k in arrays.files} == {"train": (N_TRAIN, 2)}

    argv[argv.index("--teacher") + 1] = str(tmp_path / "nowhere")
    argv[argv.index("--out") + 1] = str(tmp_path / "bad.npz")
    assert cache_teacher_logits.main(argv) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and "nowhere" in lines[0], lines
    assert not (tmp_path / "bad.npz").exists()


# ---- the deployment table's warnings ---------------------------------------------------------------

COLUMNS = ["model", "runtime", "dev accuracy", "vs fp32", "latency b1 (ms)", "throughput b32 (ex/s)",
           "x teacher b1", "x teacher b32", "x eager teacher b1"]


def runner(latency, throughput=(500.0, 500.0, 500.0)) -> dict:
    return {"latency_ms_batch1": float(np.median(latency)), "throughput_batch32": float(np.median(throughput)),
            "latency_rounds": list(latency), "throughput_rounds": list(throughput)}


def deployment(eager=(10.0, 10.0, 10.0), machine=None) -> tuple[dict, dict]:
    """A deployment JSON of the teacher and kd, and their check.json metrics."""
    result = {"models": {"teacher": {"torch_fp32": runner(eager, (100.0, 100.0, 100.0)),
                                     "onnx_fp32": runner([6.0] * 3), "onnx_int8": runner([3.5] * 3)},
                         "kd": {"onnx_fp32": runner([3.0] * 3), "onnx_int8": runner([2.0] * 3)}},
              "rounds": 3, "latency_examples": 100, "throughput_examples": 256, "dev_examples": 400,
              "threads": 2, "device": "cpu", "versions": {"onnxruntime": "1.0", "torch": "2.0"}}
    if machine is not None:
        result["machine"] = machine
    metrics = {k: {"accuracy": 0.9} for k in ("kdlib_fp32", "onnx_fp32", "onnx_int8")}
    return result, {"teacher": {"metrics": metrics}, "kd": {"metrics": metrics}}


def test_a_sound_deployment_table_keeps_its_columns_and_warns_of_nothing():
    result, checks = deployment()
    frame = deploy.table(result, checks, "accuracy")
    assert list(frame.columns) == COLUMNS + ["warning"]
    assert list(frame["warning"]) == [""] * 5
    assert frame["x eager teacher b1"].tolist() == pytest.approx([1.0, 10 / 6, 10 / 3.5, 10 / 3, 5.0])
    page = deploy.markdown("sst2", frame, result)
    assert "Warning" not in page and "medians of 3 rounds" in page


def test_an_eager_teacher_whose_rounds_disagree_marks_every_speed_up_over_it():
    result, checks = deployment(eager=(10.0, 591.0, 10.8))          # the loaded run of issue 24
    frame = deploy.table(result, checks, "accuracy").set_index(["model", "runtime"])
    assert frame.loc[("teacher", "PyTorch eager fp32"), "warning"] == \
        "unreliable: latency b1, x teacher b1, x eager teacher b1"
    assert frame.loc[("kd", "onnxruntime int8"), "warning"] == "unreliable: x eager teacher b1"
    assert frame.loc[("teacher", "onnxruntime fp32"), "warning"] == "unreliable: x eager teacher b1"
    page = deploy.markdown("sst2", frame.reset_index(), result)
    assert page.startswith("# sst2: deployment\n\n**Warning: the figures named in `warning` are "
                           "unreliable, and so is every speed-up computed from them: the rounds of "
                           "teacher PyTorch eager fp32 latency")
    assert "| kd | onnxruntime int8 |" in page and "unreliable: x eager teacher b1 |" in page
    assert deploy.unreliable_reasons(result) and "teacher PyTorch eager fp32 latency" in \
        deploy.unreliable_reasons(result)[0]


def test_a_busy_machine_marks_every_deployment_figure():
    machine = {"usable_cpus": 2, "load_average_start": [2.0, 1.0, 0.5], "load_average_end": [2.4, 1.2, 0.6],
               "others_cpu_share": 0.55, "busy": True, "no_spin_waiting": True}
    result, checks = deployment(machine=machine)
    frame = deploy.table(result, checks, "accuracy")
    assert list(frame["warning"]) == ["unreliable: every figure"] * 5
    page = deploy.markdown("sst2", frame, result)
    assert "other processes used 55% of the 2 usable CPUs' time while the rounds ran" in page
    assert "the 1-minute load average was 2.00 at the start and 2.40 at the end" in page
    assert "Idle threads of every library spun briefly, then slept (bounded spin-waiting)." in page
