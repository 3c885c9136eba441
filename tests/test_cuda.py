"""What only a CUDA GPU can show (skipped elsewhere; bench/gpu_check.sh runs it on a lent GPU):
the device and precision chosen there, fused attention in bf16 and fp32, and a training step in
bf16 and fp16 (with its gradient scaler)."""
from __future__ import annotations

import numpy as np
import pytest
import tinydata
from conftest import HAS_TORCH

torch = pytest.importorskip("torch") if HAS_TORCH else None
pytestmark = pytest.mark.skipif(not (HAS_TORCH and torch.cuda.is_available()), reason="needs a CUDA GPU")


def test_auto_picks_cuda_and_the_native_precision():
    from kdlib import backend
    B = backend.Backend("torch", "auto", "auto")
    major, _ = torch.cuda.get_device_capability()
    assert B.device_name == "cuda"
    assert B.precision == ("bf16" if major >= 8 else "fp16")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_training_step_on_the_gpu(precision, tmp_path):
    from kdlib import backend
    from kdlib.data import ofrecord
    from kdlib.distill import teacher, train
    from kdlib.models.bert import BertConfig, build_bert

    B = backend.Backend("torch", "cuda", precision)
    records = tinydata.write_records(tmp_path / "records", n_train=64, n_dev=32, seed=1)
    B.seed(0)
    model = build_bert(B, BertConfig(**tinydata.TINY_BERT))
    cfg = train.TrainConfig.from_dict({"epochs": 1, "batch_size": 16, "lr": 1e-3})
    result = train.fit(B, {"model": model}, teacher.supervised_loss_fn(B, model, False),
                       train_path=ofrecord.record_file(records, "train"), cfg=cfg, work_dir=tmp_path / "w")
    assert result.steps == 4 and all(p.dtype == torch.float32 for p in model.parameters())


def test_fused_attention_on_the_gpu_agrees_with_the_explicit_path():
    from kdlib import backend
    from kdlib.models.bert import BertConfig, build_bert

    B = backend.Backend("torch", "cuda", "fp32")
    B.seed(0)
    model = build_bert(B, BertConfig(**tinydata.TINY_BERT)).eval()
    ex = tinydata.make_examples(8, seed=2)
    inputs = {"input_ids": B.tensor(ex["input_ids"]), "attention_mask": B.tensor(ex["input_mask"])}
    with B.no_grad():
        a = B.to_numpy(model(**inputs, output_hidden=True)["logits"])
        b = B.to_numpy(model(**inputs, output_all=True)["logits"])
    np.testing.assert_allclose(a, b, atol=1e-4)
