"""``compile: auto | true | false``: when training compiles its model, and that a compiled model
trains like the eager one.

The setting's rules run in both runtimes; the compiled training itself in the torch runtime only
(OneFlow keeps its eager path).
"""
from __future__ import annotations

import csv

import pytest
import tinydata
from conftest import HAS_TORCH

from kdlib import backend
from kdlib.data import ofrecord
from kdlib.data.tasks import get_task
from kdlib.distill import compiling, teacher, train
from kdlib.errors import ConfigError
from kdlib.models.bert import BertConfig, build_bert

TASK = get_task("sst2")


@pytest.mark.parametrize("value, expected", [("auto", "auto"), (True, "true"), ("true", "true"),
                                             (False, "false"), ("false", "false")])
def test_the_setting_reads_yaml_booleans_and_words(value, expected):
    assert compiling.parse(value) == expected


@pytest.mark.parametrize("value", ["yes", "", None, 1.5, "AUTO"])
def test_a_bad_setting_is_one_config_error(value):
    with pytest.raises(ConfigError, match="compile: .* is not one of auto, true, false"):
        compiling.parse(value)


def test_auto_compiles_only_a_job_longer_than_its_measured_break_even(monkeypatch):
    monkeypatch.setattr(compiling, "BREAK_EVEN_STEPS", {("cpu", "bert"): 1000, ("cpu", "bilstm"): None})
    decide = compiling.should_compile
    assert not decide("auto", "torch", "cpu", "bert", 1000) and decide("auto", "torch", "cpu", "bert", 1001)
    assert not decide("auto", "torch", "cpu", "bilstm", 10**9)          # measured: never pays back
    assert not decide("auto", "torch", "cuda", "bert", 10**9)           # not measured: eager
    assert decide(True, "torch", "cuda", "bilstm", 1) and decide("true", "torch", "cpu", "bert", 1)
    assert not decide(False, "torch", "cpu", "bert", 10**9)
    assert not decide(True, "oneflow", "cuda", "bert", 10**9)           # OneFlow stays eager
    with pytest.raises(ConfigError):
        decide("sometimes", "torch", "cpu", "bert", 10)


def test_the_measured_table_names_known_devices_and_families():
    for (device, family), steps in compiling.BREAK_EVEN_STEPS.items():
        assert device in ("cpu", "cuda") and family in ("bert", "bilstm")
        assert steps is None or steps > 0


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("compile_records")
    tinydata.write_records(root, n_train=96, n_dev=16, seed=3)
    return root


def losses(B, records, work, compiled: bool) -> list[float]:
    """The step losses of a tiny BERT without dropout (compiled dropout draws other masks), 12
    steps in bf16 on one thread."""
    B.seed(0)
    model = build_bert(B, BertConfig(**{**tinydata.TINY_BERT, "hidden_dropout_prob": 0.0,
                                        "attention_probs_dropout_prob": 0.0}))
    if compiled:
        compiling.compile_model(B, model)
    cfg = train.TrainConfig.from_dict({"epochs": 2, "batch_size": 16, "lr": 3e-3, "save_seconds": 0,
                                       "seed": 7})
    train.fit(B, {"model": model}, teacher.supervised_loss_fn(B, model, regression=False),
              train_path=ofrecord.record_file(records, "train"), cfg=cfg, work_dir=work)
    with open(work / train.LOG_CSV, newline="") as fh:
        return [float(row["loss"]) for row in csv.DictReader(fh)]


@pytest.mark.skipif(not HAS_TORCH, reason="torch.compile runs in the torch runtime")
def test_a_compiled_model_trains_like_the_eager_one_within_bf16_resolution(records, tmp_path):
    B = backend.load("torch", "cpu", "bf16")
    B.set_num_threads(1)
    eager = losses(B, records, tmp_path / "eager", compiled=False)
    fast = losses(B, records, tmp_path / "compiled", compiled=True)
    assert len(eager) == len(fast) == 12
    # bf16 keeps 8 bits of mantissa: fused kernels round differently, by a few parts in 1000 per
    # step, and the difference grows a little over the steps; a wrong graph would be far off
    for step, (a, b) in enumerate(zip(eager, fast), 1):
        assert abs(a - b) <= 0.03 * abs(a) + 1e-3, (step, a, b)
    assert eager[0] == pytest.approx(fast[0], rel=1e-2)
