"""Mixed precision and fused attention: how the precision is chosen, what runs in it, and that bf16
training gives fp32's results to within bf16's resolution.

The choice and the fused-attention agreement run in both runtimes; bf16 training runs in the torch
runtime only (OneFlow 0.9 has no CPU bf16 kernels worth using, and refuses bf16 on the CPU).
"""
from __future__ import annotations

import numpy as np
import pytest
import tinydata
import tinyrecipes
from conftest import HAS_TORCH, error_lines
from interrupt import Interrupted, stop_at_call

from kdlib import backend
from kdlib.data import ofrecord
from kdlib.data.tasks import get_task
from kdlib.distill import ops, resume, teacher, train
from kdlib.errors import ConfigError
from kdlib.evaluate.evaluation import evaluate, split_evaluator
from kdlib.models import checkpoint
from kdlib.models.bert import BertConfig, build_bert
from kdlib.models.weights import read_safetensors, state_dict_numpy

TASK = get_task("sst2")
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="bf16 on the CPU runs in the torch runtime")


# ---- the choice ---------------------------------------------------------------------------------

@pytest.mark.parametrize("requested, backend_name, cuda, capability, bf16_cpu, expected", [
    ("auto", "torch", True, (9, 0), False, "bf16"),       # H100/H200
    ("auto", "oneflow", True, (8, 0), False, "bf16"),     # A100
    ("auto", "torch", True, (7, 5), False, "fp16"),       # T4: no native bf16
    ("auto", "torch", False, None, True, "bf16"),         # a CPU with avx512_bf16 or AMX
    ("auto", "torch", False, None, False, "fp32"),
    ("auto", "oneflow", False, None, True, "fp32"),       # OneFlow on the CPU
    ("fp32", "torch", True, (9, 0), True, "fp32"),
    ("bf16", "torch", False, None, False, "bf16"),        # asked for: emulated, slower
    ("fp16", "oneflow", True, (7, 0), False, "fp16"),
])
def test_precision_is_chosen_by_the_device(requested, backend_name, cuda, capability, bf16_cpu,
                                           expected):
    precision, why = backend.choose_precision(requested, backend_name, cuda, capability, bf16_cpu)
    assert precision == expected and why


@pytest.mark.parametrize("requested, backend_name, fragment", [
    ("fp16", "torch", "needs a CUDA GPU"),
    ("bf16", "oneflow", "not available with backend: oneflow"),
    ("int8", "torch", "is not one of"),
])
def test_impossible_precisions_are_one_clear_error(requested, backend_name, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        backend.choose_precision(requested, backend_name, False, None, True)
    assert "\n" not in str(info.value)


def test_auto_on_this_machine_says_why(B):
    precision, why = backend.choose_precision("auto", B.name, False, None, backend.cpu_has_bf16())
    assert why.startswith("auto: ") and precision in ("fp32", "bf16")
    assert backend.resolve_precision("auto", B.name, "cpu") == precision


# ---- fp32 losses, fused attention -----------------------------------------------------------------

def test_losses_reduce_in_fp32_under_bf16_inputs(B):
    """A soft cross-entropy at T = 4 of bf16 logits is computed in fp32 (its small probabilities
    would round away in bf16): the same value as on the fp32 copies of the same logits."""
    rng = np.random.default_rng(0)
    s32 = B.tensor(rng.normal(size=(16, 3)).astype(np.float32) * 3)
    t32 = B.tensor(rng.normal(size=(16, 3)).astype(np.float32) * 3)
    s16, t16 = s32.to(B.lib.bfloat16), t32.to(B.lib.bfloat16)
    loss = ops.soft_cross_entropy(s16, t16, temperature=4.0, scale_t2=True)
    assert loss.dtype == B.lib.float32
    ref = ops.soft_cross_entropy(s16.float(), t16.float(), temperature=4.0, scale_t2=True)
    assert float(loss.item()) == float(ref.item())
    hard = ops.hard_loss(B.F, s16, B.tensor(np.arange(16) % 3))
    assert hard.dtype == B.lib.float32


def test_fused_and_explicit_attention_agree(B):
    """Without the scores (output_hidden) attention may run fused; with them (output_all) it is
    explicit. In fp32 the two agree within 1e-5, padding included."""
    B.seed(0)
    model = build_bert(B, BertConfig(**tinydata.TINY_BERT))
    model.eval()
    ex = tinydata.make_examples(12, seed=4)
    inputs = {"input_ids": B.tensor(ex["input_ids"]), "attention_mask": B.tensor(ex["input_mask"]),
              "token_type_ids": B.tensor(ex["segment_ids"])}
    with B.no_grad():
        fused = model(**inputs, output_hidden=True)
        explicit = model(**inputs, output_all=True)
    assert "attention" not in fused and len(explicit["attention"]) == len(model.encoder.layer)
    for a, b in zip([fused["logits"], *fused["hidden"]], [explicit["logits"], *explicit["hidden"]]):
        np.testing.assert_allclose(B.to_numpy(a), B.to_numpy(b), atol=1e-5, rtol=0)


# ---- bf16 training ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return tinydata.write_records(tmp_path_factory.mktemp("records"), n_train=256, n_dev=400, seed=5)


def bf16():
    return backend.Backend("torch", "cpu", "bf16")


def fp32():
    return backend.Backend("torch", "cpu", "fp32")


def fine_tune(B, records, work, cfg=None, loss_wrapper=None):
    """A tiny BERT trained on the majority rule in B's precision; returns (result, model)."""
    B.seed(0)
    model = build_bert(B, BertConfig(**tinydata.TINY_BERT))
    loss_fn = teacher.supervised_loss_fn(B, model, regression=False)
    if loss_wrapper is not None:
        loss_fn = loss_wrapper(loss_fn)
    cfg = cfg or train.TrainConfig.from_dict({"epochs": 4, "batch_size": 16, "lr": 3e-3,
                                              "save_seconds": 0, "seed": 7})
    result = train.fit(B, {"model": model}, loss_fn, train_path=ofrecord.record_file(records, "train"),
                       cfg=cfg, work_dir=work,
                       evaluate=split_evaluator(B, model, TASK, ofrecord.record_file(records, "dev")))
    return result, model


@needs_torch
def test_a_bf16_training_step_loses_what_fp32_loses(records):
    """The loss of one step, same weights and batch, in bf16 and fp32: within 1e-2."""
    from kdlib.data.batching import batches
    batch = next(iter(batches(ofrecord.record_file(records, "train"), 32)))
    losses = {}
    for B in (fp32(), bf16()):
        B.seed(0)
        model = build_bert(B, BertConfig(**tinydata.TINY_BERT))
        model.eval()
        with B.autocast():
            loss, _ = teacher.supervised_loss_fn(B, model, False)(batch)
        assert loss.dtype == B.lib.float32
        losses[B.precision] = float(loss.item())
    assert losses["bf16"] == pytest.approx(losses["fp32"], abs=1e-2)
    assert losses["bf16"] != losses["fp32"]            # bf16 really ran


@needs_torch
def test_a_bf16_fine_tune_scores_like_fp32_and_keeps_fp32_weights(records, tmp_path):
    result32, _ = fine_tune(fp32(), records, tmp_path / "fp32")
    result16, model16 = fine_tune(bf16(), records, tmp_path / "bf16")
    assert result32.best_score > 0.9                   # the rule is learnt
    assert abs(result16.best_score - result32.best_score) <= 0.005, (result16.best_score,
                                                                     result32.best_score)
    # the weights (masters), the checkpoint and the resume state stay fp32
    assert all(p.dtype == bf16().lib.float32 for p in model16.parameters())
    saved = read_safetensors(tmp_path / "bf16" / train.BEST_DIR / checkpoint.WEIGHTS_FILE)
    assert {a.dtype for a in saved.values()} == {np.dtype(np.float32)}
    for name in (resume.WEIGHTS, resume.MOMENTS):
        state = read_safetensors(tmp_path / "bf16" / resume.STATE_DIR / name)
        assert {a.dtype for a in state.values()} == {np.dtype(np.float32)}, name


@needs_torch
def test_bf16_training_resumes_bit_for_bit(records, tmp_path):
    _, whole = fine_tune(bf16(), records, tmp_path / "whole")
    with pytest.raises(Interrupted):
        fine_tune(bf16(), records, tmp_path / "cut", loss_wrapper=stop_at_call(11))
    _, resumed = fine_tune(bf16(), records, tmp_path / "cut")
    a, b = state_dict_numpy(whole), state_dict_numpy(resumed)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@needs_torch
def test_the_fp16_update_unscales_before_clipping(tmp_path):
    """fp16 trains through a gradient scaler; the update it makes is the unscaled one (checked
    with torch's CPU scaler, as no GPU is here): the same weights as a step without a scaler."""
    import torch

    B = fp32()
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)):
        torch.manual_seed(0)
        layer = torch.nn.Linear(8, 4)
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
        loss = layer(torch.ones(2, 8)).pow(2).sum()
        optimizer.zero_grad()
        train._update(B, optimizer, scaler, loss, list(layer.parameters()), max_grad_norm=0.5)
        results.append(layer.weight.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-7)


def test_a_stage_refuses_an_impossible_precision_in_one_line(capsys, tmp_path):
    from workflow_scripts import evaluate_model
    argv = ["--task", "sst2", "--name", "teacher", "--model", str(tmp_path), "--records", str(tmp_path),
            "--out", str(tmp_path / "e.json"), "--predictions", str(tmp_path / "p.npz"),
            "--eval-batch-size", "8", "--backend",
            "torch" if HAS_TORCH else "oneflow", "--device", "cpu", "--precision",
            "fp16" if HAS_TORCH else "bf16", "--threads", "0"]
    assert evaluate_model.main(argv) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and "precision:" in lines[0], lines


@needs_torch
def test_the_eval_json_records_its_precision(records, tmp_path):
    from kdlib.evaluate import eval_json
    B = bf16()
    B.seed(0)
    model = build_bert(B, BertConfig(**tinydata.TINY_BERT))
    checkpoint.save_checkpoint(model, tmp_path / "m", {"task": TASK.name})
    result, predictions = eval_json.build(B, TASK, tmp_path / "m", records, "m", batch_size=64)
    assert predictions["dev_logits"].dtype == np.float32           # fp32 outputs of a bf16 run
    assert result["precision"] == "bf16"
    assert result["score"] == pytest.approx(
        evaluate(fp32(), checkpoint.load_checkpoint(fp32(), tmp_path / "m")[0], TASK,
                 ofrecord.record_file(records, "dev"))["accuracy"], abs=0.01)


@needs_torch
@pytest.mark.parametrize("name", ["nokd", "kd", "lstm", "pkd", "tiny", "theseus"])
def test_every_recipe_trains_in_bf16(name, tmp_path, tmp_path_factory):
    """Every algorithm, the BiLSTM included, runs its phases under bf16 autocast and publishes an
    fp32 student (the recipes' data of tests/tinyrecipes.py)."""
    from kdlib.distill import layers, logit_cache, recipes
    from kdlib.distill.student import distill
    from kdlib.models.pretrained import load_pretrained_bert

    B = bf16()
    root = tmp_path_factory.getbasetemp() / "bf16_recipes"
    if not (root / "logits.npz").exists():
        root.mkdir(exist_ok=True)
        tinydata.write_pretrained(root / "pretrained", seed=0, **tinyrecipes.TEACHER)
        model, _ = load_pretrained_bert(B, root / "pretrained", TASK.num_labels, log=lambda m: None)
        checkpoint.save_checkpoint(model, root / "teacher", {"task": TASK.name, "role": "teacher"})
        tinydata.write_records(root / "bert", n_train=tinyrecipes.N_TRAIN, n_dev=tinyrecipes.N_DEV, seed=0)
        tinydata.write_word_records(root / "bert", root / "lstm")
        logit_cache.cache_logits(B, TASK, root / "teacher", root / "bert", root / "logits.npz",
                                 batch_size=16)
    spec = tinyrecipes.spec_of(name)
    recipe = recipes.get_recipe(spec["algorithm"])
    lstm = spec["architecture"]["model"] == "bilstm"
    init_dir = None
    if spec["architecture"]["init"] == "teacher":
        init_dir = layers.export_layers(root / "teacher", recipes.init_layers(spec, 4), tmp_path / "init")
    results = distill(B, TASK, name, spec, records=root / ("lstm" if lstm else "bert"),
                      out_dir=tmp_path / "out", work_dir=tmp_path / "work",
                      teacher_dir=None if lstm else root / "teacher",
                      logits=root / "logits.npz" if recipe.needs_logits else None, init_dir=init_dir,
                      eval_batch_size=16)
    assert np.isfinite(results[-1].best_score)           # the last phase is evaluated
    saved = read_safetensors(tmp_path / "out" / checkpoint.WEIGHTS_FILE)
    assert {a.dtype for a in saved.values()} == {np.dtype(np.float32)}
