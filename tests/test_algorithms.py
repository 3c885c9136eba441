"""The distillation recipes (kdlib.distill.recipes) and the distill stage (kdlib.distill.student,
workflow_scripts/distill.py) on tiny models, in this runtime's backend.

* every recipe trains end to end through :func:`kdlib.distill.distill` and leaves a loadable
  student of the expected architecture;
* every recipe's loss is checked against a numpy reference on a fixed batch (models in eval mode,
  so dropout is off), and against the cases where a term must vanish or scale;
* students whose settings cannot work with the teacher are refused by
  :func:`kdlib.distill.spec.check_students` with one line naming the student;
* (torch runtime, when the OneFlow runtime exists) the KD loss agrees across the two backends.

The teacher is a random 4-layer BERT (hidden 32, 4 heads, FFN 64: not 4 x hidden, so students that
follow the teacher's widths must take its FFN width too), so PKD can skip 2 of 4 layers and
Theseus can compress by 2. Its pooler and classifier are scaled up so its logits are of order 1,
as a fine-tuned teacher's are, rather than ~1e-3.
"""
from __future__ import annotations

import csv
import json
import subprocess

import numpy as np
import pytest
import tinydata
from conftest import HAS_TORCH, ONEFLOW_PYTHON, REPO, error_lines
from tinydata import write_word_records
from tinyrecipes import BATCH, N_DEV, N_TRAIN, STUDENTS, TEACHER, TRAIN, make_config, spec_of

from kdlib import config
from kdlib.data import batching
from kdlib.data.convert import read_word_vocab
from kdlib.data.ofrecord import iter_records, record_file
from kdlib.data.tasks import get_task
from kdlib.distill import logit_cache, recipes, train
from kdlib.distill.layers import export_layers
from kdlib.distill.spec import check_students, student_spec
from kdlib.distill.student import distill, phase_configs
from kdlib.errors import ConfigError
from kdlib.models import checkpoint
from kdlib.models.pretrained import load_pretrained_bert
from kdlib.models.weights import load_state_numpy, read_safetensors, state_dict_numpy
from workflow_scripts import distill as distill_script

TASK = get_task("sst2")                       # binary, metric accuracy
BACKEND = "torch" if HAS_TORCH else "oneflow"
# name -> (model_type, layers, hidden) of the trained student
EXPECTED = {"nokd": ("bert", 2, 16), "kd": ("bert", 2, 16), "lstm": ("bilstm", None, 16),
            "pkd": ("bert", 2, 32), "tiny": ("bert", 2, 16), "theseus": ("bert", 2, 32)}


# ---- fixtures: teacher, records, logits -------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory, B):
    root = tmp_path_factory.mktemp("algorithms")
    tinydata.write_pretrained(root / "pretrained", seed=0, **TEACHER)
    B.seed(0)
    model, _ = load_pretrained_bert(B, root / "pretrained", TASK.num_labels, log=lambda m: None)
    with B.no_grad():               # a confident head, as after fine-tuning: logits of order 1
        model.pooler.dense.weight.mul_(50.0)
        model.classifier.weight.mul_(20.0)
    checkpoint.save_checkpoint(model, root / "teacher", {"task": TASK.name, "labels": ["0", "1"],
                                                         "role": "teacher"})
    tinydata.write_records(root / "bert", n_train=N_TRAIN, n_dev=N_DEV, seed=0)
    write_word_records(root / "bert", root / "lstm")
    logit_cache.cache_logits(B, TASK, root / "teacher", root / "bert", root / "logits.npz", batch_size=16)
    return root


@pytest.fixture(scope="module")
def teacher_cfg(data):
    return checkpoint.read_checkpoint_config(data / "teacher")


def first_batch(records, split="train"):
    """A fixed batch of shuffled records (so batch["index"] is not 0..7), at step 0."""
    batch = next(iter(batching.batches(record_file(records, split), BATCH, shuffle_buffer=64, seed=5)))
    assert sorted(batch["index"].tolist()) != list(range(BATCH))
    batch["step"] = 0
    return batch


def context(B, data, spec, name="s", logits=None):
    """The Context distill() would build, with the init folder exported when the spec needs one."""
    lstm = spec["architecture"]["model"] == "bilstm"
    records = data / ("lstm" if lstm else "bert")
    ctx = recipes.Context(B, TASK, records, teacher_dir=data / "teacher",
                             vocab_size=len(read_word_vocab(records / "vocab.txt")) if lstm else None)
    ctx.logits = logits if logits is not None else logit_cache.load_logits(data / "logits.npz", records, TASK)
    if spec["architecture"]["init"] == "teacher":
        layers = recipes.init_layers(spec, TEACHER["num_hidden_layers"])
        folder = data / "init" / name / "_".join(map(str, layers))
        ctx.init_dir = export_layers(data / "teacher", layers, folder)
    return ctx


def phases_of(B, data, spec, name="s", logits=None, student=None):
    recipe = recipes.get_recipe(spec["algorithm"])
    ctx = context(B, data, spec, name, logits)
    B.seed(0)
    student = student if student is not None else recipe.build(ctx, spec)
    phases = recipe.phases(ctx, spec, student, phase_configs(spec, recipe))
    for phase in phases:
        for module in phase.modules.values():
            module.eval()                                    # no dropout: exact references
    return ctx, student, phases


def value(B, t) -> float:
    return float(B.to_numpy(t.detach()))


def np_inputs_logits(B, model, batch, **kw):
    from kdlib.data.batching import model_inputs
    with B.no_grad():
        out = model(**model_inputs(B, batch), **kw)
    return out


# numpy references
def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def hard_ce(logits, labels):
    return float(-log_softmax(logits.astype(np.float64))[np.arange(len(labels)), labels].mean())


def soft_ce(logits_s, logits_t, T):
    p_t = np.exp(log_softmax(logits_t.astype(np.float64) / T))
    return float(-(p_t * log_softmax(logits_s.astype(np.float64) / T)).sum(-1).mean())


def pkd_ref(c_s, c_t):
    n_s = c_s / np.linalg.norm(c_s, axis=-1, keepdims=True)
    n_t = c_t / np.linalg.norm(c_t, axis=-1, keepdims=True)
    return float(((n_s - n_t) ** 2).sum(-1).mean())


# ---- 1. every recipe end to end ---------------------------------------------------------------------

def read_log(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def student_setup(data, spec, tmp_path, records_suffix=""):
    """``(recipe, is_lstm, record folder, exported init folder or None)`` of a student's job."""
    lstm = spec["architecture"]["model"] == "bilstm"
    init_dir = None
    if spec["architecture"]["init"] == "teacher":
        init_dir = export_layers(data / "teacher", recipes.init_layers(spec, 4), tmp_path / "init")
    records = data / (("lstm" if lstm else "bert") + records_suffix)
    return recipes.get_recipe(spec["algorithm"]), lstm, records, init_dir


def test_the_students_under_test_are_every_registered_recipe():
    """A new recipe cannot go untested: STUDENTS must name each one in recipes.RECIPES."""
    assert sorted(spec["algorithm"] for spec in STUDENTS.values()) == sorted(recipes.RECIPES)


@pytest.mark.parametrize("name", list(STUDENTS))
def test_every_recipe_trains_end_to_end(name, data, teacher_cfg, B, tmp_path):
    cfg = make_config(STUDENTS)
    check_students(cfg, teacher_cfg)                        # the workflow's check passes
    spec = student_spec(cfg, name)
    recipe, lstm, records, init_dir = student_setup(data, spec, tmp_path)
    out, work = tmp_path / "out", tmp_path / "work"
    results = distill(B, TASK, name, spec, records=records, out_dir=out, work_dir=work,
                      teacher_dir=None if lstm else data / "teacher",
                      logits=data / "logits.npz" if recipe.needs_logits else None, init_dir=init_dir,
                      eval_batch_size=16)

    phases = 2 if recipe.two_phase else 1
    assert len(results) == phases and all(r.steps == N_TRAIN // BATCH for r in results)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.safetensors", "config.json", "vocab.txt", "train_log.csv", "train_summary.json"])
    saved = checkpoint.read_checkpoint_config(out)
    assert saved["algorithm"] == spec["algorithm"] and saved["student"] == name
    assert saved["role"] == "student" and saved["task"] == TASK.name
    # the folder carries its tokeniser: the records' vocabulary and how they were encoded
    assert (out / "vocab.txt").read_bytes() == (records / "vocab.txt").read_bytes()
    assert (saved["tokenizer"], saved["max_length"], saved["text_pair"]) == \
        ("words" if lstm else "wordpiece", tinydata.MAX_LENGTH, False)
    model, _ = checkpoint.load_checkpoint(B, out)
    model_type, layers, hidden = EXPECTED[name]
    assert model.model_type == model_type and model.config.hidden_size == hidden
    if model_type == "bert":
        assert model.config.num_hidden_layers == layers == len(model.encoder.layer)
    else:
        assert model.config.vocab_size == len(read_word_vocab(records / "vocab.txt"))
    from kdlib.evaluate.evaluation import predict
    logits, labels = predict(B, model, record_file(records, "dev"))
    assert logits.shape == (N_DEV, 2) and np.isfinite(logits).all()

    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["algorithm"] == spec["algorithm"] and summary["student"] == name
    assert summary["steps"] == phases * (N_TRAIN // BATCH) and len(summary["phases"]) == phases
    assert [h["step"] for h in summary["history"]] == [2, 4]          # eval_every 2, last phase
    rows = read_log(out / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert not work.exists()                      # published: the resume states are cleared


@pytest.fixture(scope="module")
def learnable(tmp_path_factory, B):
    """A teacher fine-tuned on the tiny majority rule (192 train, 96 dev examples), its logit
    cache and both record folders: enough for every recipe to learn the rule."""
    from kdlib.distill import teacher

    root = tmp_path_factory.mktemp("learnable")
    tinydata.write_pretrained(root / "pretrained", seed=0, **TEACHER)
    tinydata.write_records(root / "bert", n_train=192, n_dev=96, seed=11)
    write_word_records(root / "bert", root / "lstm")
    cfg = train.TrainConfig.from_dict({"epochs": 6, "batch_size": 16, "lr": 3e-3, "save_seconds": 3600,
                                       "seed": 0})
    teacher.finetune(B, TASK, root / "bert", root / "pretrained", root / "teacher", root / "work", cfg, 32)
    logit_cache.cache_logits(B, TASK, root / "teacher", root / "bert", root / "logits.npz", batch_size=32)
    return root


@pytest.mark.parametrize("name", list(STUDENTS))
def test_every_recipe_learns_more_than_the_majority_class(name, learnable, B, tmp_path):
    """A constant predictor scores the majority-class rate; every trained student must beat it
    clearly on dev (the teacher gets about 0.9 on this rule)."""
    from kdlib.evaluate.evaluation import evaluate

    lr = 1e-2 if name == "lstm" else 3e-3              # the small BiLSTM learns slowly at 3e-3
    spec = spec_of(name, train={"epochs": 8, "lr": lr, "batch_size": 16, "eval_every": 0},
                   first_phase_train={"epochs": 8, "lr": lr, "batch_size": 16})
    recipe = recipes.get_recipe(spec["algorithm"])
    lstm = spec["architecture"]["model"] == "bilstm"
    records = learnable / ("lstm" if lstm else "bert")
    init_dir = None
    if spec["architecture"]["init"] == "teacher":
        init_dir = export_layers(learnable / "teacher", recipes.init_layers(spec, 4), tmp_path / "init")
    distill(B, TASK, name, spec, records=records, out_dir=tmp_path / "out", work_dir=tmp_path / "work",
            teacher_dir=None if lstm else learnable / "teacher",
            logits=learnable / "logits.npz" if recipe.needs_logits else None, init_dir=init_dir,
            eval_batch_size=32)
    model, _ = checkpoint.load_checkpoint(B, tmp_path / "out")
    dev = record_file(records, "dev")
    labels = np.array([int(r["label_ids"][0]) for r in iter_records(dev)])
    majority = max(labels.mean(), 1 - labels.mean())
    teacher_model, _ = checkpoint.load_checkpoint(B, learnable / "teacher")
    teacher_score = evaluate(B, teacher_model, TASK, record_file(learnable / "bert", "dev"))["accuracy"]
    score = evaluate(B, model, TASK, dev)["accuracy"]
    print(f"{name}: dev accuracy {score:.3f}, majority {majority:.3f}, teacher {teacher_score:.3f}")
    assert teacher_score > majority + 0.2
    assert score > majority + 0.1, (score, majority)


def run_phase(B, data, spec, index, work, name="s"):
    """Phase ``index`` of ``spec``'s recipe run through fit alone (after the phases before it);
    returns (student, FitResult)."""
    ctx, student, phases = phases_of(B, data, spec, name)
    for k, phase in enumerate(phases[:index + 1]):
        if phase.setup:
            phase.setup()
        result = train.fit(B, phase.modules, phase.loss_fn, train_path=record_file(ctx.records, "train"),
                           cfg=phase.cfg, work_dir=work / phase.name, student="student")
    return student, result


def test_theseus_replacement_trains_the_layers_and_keeps_the_teachers_head(B, data, tmp_path):
    spec = spec_of("theseus")
    student, result = run_phase(B, data, spec, 0, tmp_path)
    teacher = read_safetensors(data / "teacher" / "model.safetensors")
    init = read_safetensors(data / "init" / "s" / "1_2" / "model.safetensors")
    after = state_dict_numpy(student)
    for key in after:
        if key.startswith(("embeddings.", "pooler.", "classifier.")):
            assert np.array_equal(after[key], teacher[key]), key
    assert any(not np.array_equal(after[k], init[k]) for k in after if k.startswith("encoder."))


# ---- 2. each loss uses its parts --------------------------------------------------------------------

def test_none_is_the_hard_loss(B, data):
    spec = spec_of("nokd")
    _, student, (phase,) = phases_of(B, data, spec)
    batch = first_batch(data / "bert")
    logits = B.to_numpy(np_inputs_logits(B, student, batch)["logits"])
    loss, parts = phase.loss_fn(batch)
    assert value(B, loss) == pytest.approx(hard_ce(logits, batch["label_ids"]), abs=1e-5)
    assert set(parts) == {"hard"}


def test_kd_loss_mixes_hard_and_soft_labels(B, data):
    spec = spec_of("kd")                            # alpha 0.7 (the soft term's weight), T = 2
    rng = np.random.default_rng(0)
    logits = {s: rng.normal(size=(n, 2)).astype(np.float32) * 3
              for s, n in (("train", N_TRAIN), ("dev", N_DEV))}
    ctx, student, (phase,) = phases_of(B, data, spec, logits=logits)
    batch = first_batch(data / "bert")
    s = B.to_numpy(np_inputs_logits(B, student, batch)["logits"])
    t = logits["train"][batch["index"]]
    loss, parts = phase.loss_fn(batch)
    hard, soft = hard_ce(s, batch["label_ids"]), 4 * soft_ce(s, t, 2.0)   # T^2 scaling
    assert value(B, parts["hard"]) == pytest.approx(hard, abs=1e-5)
    assert value(B, parts["soft"]) == pytest.approx(soft, abs=1e-5)
    assert value(B, loss) == pytest.approx(0.3 * hard + 0.7 * soft, abs=1e-5)

    # other cached teacher logits change the loss of the same batch, by the soft term only
    ctx.logits = {k: -v for k, v in logits.items()}
    loss2, parts2 = phase.loss_fn(batch)
    assert value(B, parts2["hard"]) == pytest.approx(hard, abs=1e-5)
    assert abs(value(B, loss2) - value(B, loss)) > 1e-3
    assert value(B, loss2) == pytest.approx(0.3 * hard + 0.7 * 4 * soft_ce(s, -t, 2.0), abs=1e-5)


def test_distilled_lstm_loss(B, data):
    batch = first_batch(data / "lstm")
    for alpha in (0.0, 0.5, 1.0):
        spec = spec_of("lstm", hyperparameters={"alpha": alpha})
        ctx, student, (phase,) = phases_of(B, data, spec)
        s = B.to_numpy(np_inputs_logits(B, student, batch)["logits"])
        t = ctx.logits["train"][batch["index"]]
        loss, parts = phase.loss_fn(batch)
        mse = float(((s.astype(np.float64) - t) ** 2).mean())
        assert value(B, parts["distill"]) == pytest.approx(mse, abs=1e-6)
        assert value(B, loss) == pytest.approx((1 - alpha) * hard_ce(s, batch["label_ids"]) + alpha * mse,
                                               abs=1e-5)
    # alpha 1 against the student's own logits: nothing left to learn
    own = {"train": np.zeros((N_TRAIN, 2), np.float32), "dev": np.zeros((N_DEV, 2), np.float32)}
    own["train"][batch["index"]] = s
    spec = spec_of("lstm", hyperparameters={"alpha": 1.0})
    ctx, student, (phase,) = phases_of(B, data, spec, logits=own)
    assert value(B, phase.loss_fn(batch)[0]) == pytest.approx(0.0, abs=1e-10)
    # soft_ce variant: the soft CE at T (with T^2) in place of the MSE
    spec = spec_of("lstm", hyperparameters={"alpha": 0.5, "logit_loss": "soft_ce", "temperature": 3})
    ctx, student, (phase,) = phases_of(B, data, spec)
    s = B.to_numpy(np_inputs_logits(B, student, batch)["logits"])
    t = ctx.logits["train"][batch["index"]]
    expected = 0.5 * hard_ce(s, batch["label_ids"]) + 0.5 * 9 * soft_ce(s, t, 3.0)
    assert value(B, phase.loss_fn(batch)[0]) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("strategy,teacher_layer", [("skip", 2), ("last", 3)])
def test_bert_pkd_loss(B, data, strategy, teacher_layer):
    batch = first_batch(data / "bert")
    losses = {}
    for beta in (0.0, 10.0, 30.0):
        spec = spec_of("pkd", hyperparameters={"beta": beta, "alpha": 0.4, "temperature": 2,
                                               "pkd_strategy": strategy})
        ctx, student, (phase,) = phases_of(B, data, spec, name="pkd")
        out_s = np_inputs_logits(B, student, batch, output_all=True)
        out_t = np_inputs_logits(B, ctx.teacher(), batch, output_all=True)
        s, t = B.to_numpy(out_s["logits"]), B.to_numpy(out_t["logits"])
        # student layer 1 (teacher layer 2, the skip init) is compared with the mapped teacher layer
        pkd = pkd_ref(B.to_numpy(out_s["hidden"][1])[:, 0], B.to_numpy(out_t["hidden"][teacher_layer])[:, 0])
        loss, parts = phase.loss_fn(batch)
        assert value(B, parts["pkd"]) == pytest.approx(pkd, abs=1e-5)
        assert pkd > 1e-4
        expected = 0.6 * hard_ce(s, batch["label_ids"]) + 0.4 * 4 * soft_ce(s, t, 2.0) + beta * pkd
        assert value(B, loss) == pytest.approx(expected, abs=1e-4)
        losses[beta] = value(B, loss)
    # beta scales the patience term alone
    assert losses[30.0] - losses[0.0] == pytest.approx(3 * (losses[10.0] - losses[0.0]), rel=1e-4)


def test_tinybert_intermediate_loss_vanishes_for_the_teacher_itself(B, data):
    spec = spec_of("tiny", architecture={"layers": 4, "hidden": None, "heads": None,
                                         "intermediate": 64})
    twin, _ = checkpoint.load_checkpoint(B, data / "teacher")          # the student IS the teacher
    ctx, student, (inter, pred) = phases_of(B, data, spec, student=twin)
    assert set(inter.modules) == {"student", "proj"}
    proj = inter.modules["proj"]
    load_state_numpy(proj, {"weight": np.eye(32, dtype=np.float32),
                                       "bias": np.zeros(32, np.float32)})
    batch = first_batch(data / "bert")
    loss, parts = inter.loss_fn(batch)
    assert value(B, parts["attention"]) == 0.0 and value(B, parts["hidden"]) == 0.0
    assert value(B, loss) == 0.0
    # a change in one layer shows in both terms
    with B.no_grad():
        twin.encoder.layer[2].attention.self.query.weight.mul_(3.0)
        twin.encoder.layer[2].output.dense.bias.add_(B.tensor(np.linspace(-1, 1, 32, dtype=np.float32)))
    loss, parts = inter.loss_fn(batch)
    assert value(B, parts["attention"]) > 1e-6 and value(B, parts["hidden"]) > 1e-6


def test_tinybert_phases_train_the_projection_and_match_soft_labels(B, data):
    spec = spec_of("tiny", hyperparameters={"temperature": 2})
    ctx, student, (inter, pred) = phases_of(B, data, spec)
    batch = first_batch(data / "bert")
    proj = inter.modules["proj"]
    assert tuple(proj.weight.shape) == (32, 16)                       # student 16 -> teacher 32
    loss, parts = inter.loss_fn(batch)
    assert value(B, parts["attention"]) > 0 and value(B, parts["hidden"]) > 0
    assert value(B, loss) == pytest.approx(value(B, parts["attention"]) + value(B, parts["hidden"]), rel=1e-6)
    loss.backward()
    assert float(np.abs(B.to_numpy(proj.weight.grad)).sum()) > 0         # the projection learns
    assert float(np.abs(B.to_numpy(student.encoder.layer[0].attention.self.query.weight.grad)).sum()) > 0
    # prediction phase: soft CE at T against the cached logits, without T^2
    s = B.to_numpy(np_inputs_logits(B, student, batch)["logits"])
    t = ctx.logits["train"][batch["index"]]
    loss, parts = pred.loss_fn(batch)
    assert set(parts) == {"soft"}
    assert value(B, loss) == pytest.approx(soft_ce(s, t, 2.0), abs=1e-5)


def test_theseus_replacement_loss(B, data):
    batch = first_batch(data / "bert")

    def phase1(replace_rate, scheduler):
        spec = spec_of("theseus", hyperparameters={"replace_rate": replace_rate, "scheduler": scheduler})
        return phases_of(B, data, spec, name="theseus")

    def library_ce(model):
        """The library's own fp32 cross-entropy of ``model``'s logits: the paths are compared, not
        the kernels (OneFlow's fp32 cross-entropy is ~3e-6 off the float64 value at logits ~3;
        the loss values themselves are checked against numpy in the tests above)."""
        logits = np_inputs_logits(B, model, batch)["logits"]
        return value(B, B.F.cross_entropy(logits, B.tensor(batch["label_ids"])))

    ctx, student, (rep, succ) = phase1(1.0, "constant")
    alone = library_ce(student)
    teacher_ce = library_ce(ctx.teacher())
    assert alone == pytest.approx(hard_ce(B.to_numpy(np_inputs_logits(B, student, batch)["logits"]),
                                          batch["label_ids"]), abs=1e-5)
    assert abs(alone - teacher_ce) > 1e-5                  # the two paths differ
    # rate 1: every successor module replaces its predecessor -> the successor alone
    assert value(B, rep.loss_fn(batch)[0]) == pytest.approx(alone, abs=1e-6)
    # rate 0: the teacher's layers throughout; embeddings and head are the teacher's own (init)
    ctx, student, (rep, succ) = phase1(0.0, "constant")
    assert value(B, rep.loss_fn(batch)[0]) == pytest.approx(teacher_ce, abs=1e-6)
    # the successor phase is the successor alone on hard labels
    assert value(B, succ.loss_fn(batch)[0]) == pytest.approx(alone, abs=1e-6)
    # linear: from the base rate 0 at step 0 to 1 at the last step of the phase
    ctx, student, (rep, succ) = phase1(0.0, "linear")
    assert value(B, rep.loss_fn(batch)[0]) == pytest.approx(teacher_ce, abs=1e-6)
    assert value(B, rep.loss_fn({**batch, "step": N_TRAIN // BATCH})[0]) == pytest.approx(alone, abs=1e-6)
    # a mixed rate draws per module and step: both paths occur over a few steps
    ctx, student, (rep, succ) = phase1(0.5, "constant")
    seen = {round(value(B, rep.loss_fn({**batch, "step": k})[0]), 6) for k in range(12)}
    assert len(seen) >= 3

    # setup: phase 1 freezes embeddings, pooler and classifier; phase 2 thaws everything
    rep.setup()
    frozen = {n for n, p in student.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("embeddings.", "pooler.", "classifier.")) for n in frozen)
    assert all(p.requires_grad for n, p in student.named_parameters() if n.startswith("encoder."))
    succ.setup()
    assert all(p.requires_grad for p in student.parameters())


# ---- 4b. every term trains the student; phases hand over; the schedule ------------------------------

# Per recipe: hyperparameter overrides that make every term of its loss non-trivial.
TERM_OVERRIDES = {"theseus": {"hyperparameters": {"replace_rate": 1.0, "scheduler": "constant"}},
                  "lstm": {"hyperparameters": {"alpha": 0.5}}}


@pytest.mark.parametrize("name", list(STUDENTS))
def test_every_term_of_every_loss_sends_the_student_a_gradient(name, B, data):
    """A term computed on detached student outputs (say, kd's soft term on logits.detach())
    would still give a finite loss and train on the other terms; each term alone must reach the
    student's parameters."""
    spec = spec_of(name, **TERM_OVERRIDES.get(name, {}))
    lstm = spec["architecture"]["model"] == "bilstm"
    batch = first_batch(data / ("lstm" if lstm else "bert"))
    _, student, phases = phases_of(B, data, spec, name)
    for phase in phases:
        if phase.setup:
            phase.setup()
        loss, parts = phase.loss_fn(batch)
        terms = {k: v for k, v in parts.items() if k != train.NOTHING_TO_TRAIN}
        assert terms, phase.name
        for term, tensor in terms.items():
            for p in student.parameters():
                p.grad = None
            tensor.backward(retain_graph=True)
            reached = sum(float(np.abs(B.to_numpy(p.grad)).sum()) for p in student.parameters()
                          if p.grad is not None)
            assert reached > 0, f"{name} {phase.name}: the {term} term does not train the student"


def test_tinybert_prediction_phase_continues_from_the_intermediate_phase(B, data, tmp_path):
    """The prediction phase must train the student the intermediate phase left, not a copy taken
    before it: with a vanishing prediction lr, the published student is phase 1's."""
    spec = spec_of("tiny", train={"lr": 1e-12})
    after_phase_1, _ = run_phase(B, data, spec, 0, tmp_path / "phase1", name="tiny")
    after_phase_1 = state_dict_numpy(after_phase_1)
    B.seed(0)
    initial = state_dict_numpy(recipes.get_recipe("tinybert").build(
        context(B, data, spec), spec))
    distill(B, TASK, "tiny", spec, records=data / "bert", out_dir=tmp_path / "out",
            work_dir=tmp_path / "work", teacher_dir=data / "teacher", logits=data / "logits.npz",
            eval_batch_size=16)
    final = read_safetensors(tmp_path / "out" / "model.safetensors")
    moved = max(float(np.abs(after_phase_1[k] - initial[k]).max()) for k in final)
    assert moved > 1e-3                                           # phase 1 trained something
    for key in final:
        np.testing.assert_allclose(final[key], after_phase_1[key], atol=1e-6, rtol=0, err_msg=key)


def test_theseus_successor_phase_continues_from_the_replacement_phase(B, data, tmp_path):
    """The successor phase must fine-tune the layers the replacement phase trained, not the
    teacher's layers the student was initialised with: with a vanishing successor lr, the
    published student is the replacement phase's."""
    spec = spec_of("theseus", train={"lr": 1e-12})
    after_phase_1, _ = run_phase(B, data, spec, 0, tmp_path / "phase1", name="theseus")
    after_phase_1 = state_dict_numpy(after_phase_1)
    init_dir = export_layers(data / "teacher", recipes.init_layers(spec, 4), tmp_path / "init")
    initial = read_safetensors(init_dir / "model.safetensors")
    distill(B, TASK, "theseus", spec, records=data / "bert", out_dir=tmp_path / "out",
            work_dir=tmp_path / "work", teacher_dir=data / "teacher", init_dir=init_dir,
            eval_batch_size=16)
    final = read_safetensors(tmp_path / "out" / "model.safetensors")
    assert final.keys() == initial.keys() == after_phase_1.keys()
    moved = max(float(np.abs(after_phase_1[k] - initial[k]).max()) for k in final)
    assert moved > 1e-3                                           # phase 1 trained something
    for key in final:
        np.testing.assert_allclose(final[key], after_phase_1[key], atol=1e-6, rtol=0, err_msg=key)


@pytest.mark.parametrize("name", ["nokd", "tiny"])
def test_the_published_student_is_the_one_that_scored_best_not_the_last(name, B, data, tmp_path, monkeypatch):
    """The validation score peaks at the 2nd of 4 evaluations (scripted; the weights each one saw
    are recorded): the model folder distill() publishes must hold those weights, not the last
    step's, and its summary must name that step (after TinyBERT's 4-step first phase)."""
    from kdlib.distill import student as student_module
    scores, shown = iter([0.6, 0.9, 0.7, 0.65]), []

    def scripted(B_, model, task, path, batch_size=128):
        def run():
            shown.append(state_dict_numpy(model))
            score = next(scores)
            return score, {"accuracy": score, "classes_predicted": 2}
        return run
    monkeypatch.setattr(student_module, "split_evaluator", scripted)
    spec = spec_of(name, train={"eval_every": 1, "patience": 0})
    distill(B, TASK, name, spec, records=data / "bert", out_dir=tmp_path / "out", work_dir=tmp_path / "work",
            teacher_dir=data / "teacher", logits=data / "logits.npz", eval_batch_size=16)
    assert len(shown) == 4
    published = read_safetensors(tmp_path / "out" / "model.safetensors")
    assert published.keys() == shown[1].keys()
    for key in published:
        np.testing.assert_array_equal(published[key], shown[1][key], err_msg=key)
    assert any(not np.array_equal(published[k], shown[-1][k]) for k in published)   # training moved on
    selection = json.loads((tmp_path / "out" / "train_summary.json").read_text())["selection"]
    first = 4 if name == "tiny" else 0
    assert (selection["phase_step"], selection["step"], selection["score"]) == (2, first + 2, 0.9)


def test_theseus_linear_schedule_rises_at_every_step():
    hp = {"scheduler": "linear", "replace_rate": 0.5}
    rates = [recipes.replacement_rate(hp, step, 10) for step in range(12)]
    assert rates[:11] == pytest.approx([0.5 + 0.05 * k for k in range(11)])
    assert rates[11] == 1.0                                       # capped beyond the last step
    assert recipes.replacement_rate({"scheduler": "constant", "replace_rate": 0.3}, 7, 10) == 0.3


def test_theseus_replacement_uses_the_schedule_between_the_ends(B, data):
    """Base rate 0, linear, 4 steps: p = 0, 1/4, 1/2, 3/4. At step 0 only the teacher's layers
    run; some later step of the phase must draw a successor."""
    spec = spec_of("theseus", hyperparameters={"replace_rate": 0.0, "scheduler": "linear"})
    _, _, (rep, _) = phases_of(B, data, spec, name="theseus")
    batch = first_batch(data / "bert")
    kept = [rep.loss_fn({**batch, "step": k})[1][train.NOTHING_TO_TRAIN] for k in range(4)]
    assert kept[0] and not all(kept[1:]), kept


# ---- 5. settings that cannot work are refused, naming the student ----------------------------------

BAD = {
    "unknown algorithm": ({"algorithm": "fitnets"}, "unknown algorithm 'fitnets'"),
    "pkd skip 3 of 4": ({"algorithm": "bert_pkd", "architecture": {"layers": 3, "init": "teacher"}},
                        "multiple of the student depth"),
    "theseus layers x ratio": ({"algorithm": "theseus", "architecture": {"layers": 3, "init": "teacher"},
                                "hyperparameters": {"compress_ratio": 2}}, "compress_ratio 2"),
    "theseus random init": ({"algorithm": "theseus", "architecture": {"layers": 2}}, "init: teacher"),
    "tinybert heads": ({"algorithm": "tinybert", "architecture": {"layers": 2, "hidden": 16, "heads": 2}},
                       "4 heads, not 2"),
    "tinybert deeper": ({"algorithm": "tinybert", "architecture": {"layers": 6, "hidden": 16}},
                        "6 layers exceed"),
    "kd bilstm": ({"algorithm": "kd", "architecture": {"model": "bilstm"}}, "needs a bert student"),
    "lstm bert": ({"algorithm": "distilled_lstm", "architecture": {"layers": 2}}, "needs a bilstm"),
    "init width": ({"algorithm": "bert_pkd", "architecture": {"layers": 2, "hidden": 16, "init": "teacher"}},
                   "teacher's widths"),
    "init layers out of range": ({"algorithm": "none", "architecture": {
        "layers": 2, "init": "teacher", "init_layers": [2, 5]}}, "between 1 and 4"),
    "init layers count": ({"algorithm": "none", "architecture": {
        "layers": 2, "init": "teacher", "init_layers": [2]}}, "must name 2 layers"),
    "init deeper": ({"algorithm": "bert_pkd", "architecture": {"layers": 6, "init": "teacher"}}, "6-layer"),
    "heads divide": ({"algorithm": "kd", "architecture": {"layers": 2, "hidden": 18}}, "not a multiple"),
    "lstm from teacher": ({"algorithm": "none", "architecture": {"model": "bilstm", "init": "teacher"}},
                          "bilstm cannot be initialised from teacher"),
    "lstm from pretrained": ({"algorithm": "none", "architecture": {"model": "bilstm", "init": "pretrained"}},
                             "bilstm cannot be initialised from pretrained"),
    "pretrained width": ({"algorithm": "none", "architecture": {
        "layers": 2, "hidden": 16, "init": "pretrained"}}, "init: pretrained needs the teacher's widths"),
    "theseus from pretrained": ({"algorithm": "theseus", "architecture": {"layers": 2, "init": "pretrained"}},
                                "set architecture.init: teacher"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_check_students_names_the_student(case, teacher_cfg):
    entry, fragment = BAD[case]
    cfg = make_config({"good": STUDENTS["kd"], "bad_one": entry})
    with pytest.raises(ConfigError) as info:
        check_students(cfg, teacher_cfg)
    message = str(info.value)
    assert "\n" not in message and "bad_one" in message and fragment in message, message


def test_the_default_students_pass_the_check(teacher_cfg):
    """Unset widths follow the teacher, its FFN width included (64 here, not 4 x 32)."""
    cfg = make_config(STUDENTS)
    check_students(cfg, teacher_cfg)
    spec = student_spec(cfg, "pkd")
    student = recipes.student_config(spec, teacher_cfg, 2)
    assert (student.hidden_size, student.intermediate_size, student.num_attention_heads) == (32, 64, 4)
    kd = recipes.student_config(student_spec(cfg, "kd"), teacher_cfg, 2)
    assert (kd.hidden_size, kd.intermediate_size, kd.num_attention_heads) == (16, 32, 4)
    # a narrower student without an FFN width gets 4 x its own width
    spec = student_spec(make_config({"s": {"algorithm": "none", "architecture": {"hidden": 16}}}), "s")
    assert recipes.student_config(spec, teacher_cfg, 2).intermediate_size == 64
    assert recipes.init_layers(student_spec(cfg, "pkd"), 4) == [2, 4]
    assert recipes.init_layers(student_spec(cfg, "theseus"), 4) == [1, 2]


# ---- the distill script ------------------------------------------------------------------------------

def script_argv(data, tmp_path, spec: str, *extra) -> list[str]:
    return ["--task", TASK.name, "--student", "kd", "--spec", spec, "--records", str(data / "bert"),
            "--teacher", str(data / "teacher"), "--out", str(tmp_path / "out"),
            "--work", str(tmp_path / "work"),
            "--selection", "validation", "--eval-batch-size", "16", "--backend", BACKEND,
            "--device", "cpu", "--precision", "fp32", "--threads", "0", *extra]


@pytest.mark.parametrize("spec,fragment", [
    ("{bad json", "--spec is not valid JSON"),
    ('["kd"]', "--spec"),
    ('{"architecture": {}}', "algorithm"),
    ('{"algorithm": "kd", "architecture": {"layers": "x"}}', "--spec.architecture.layers"),
    ('{"algorithm": "kd", "hyperparameters": {"alpha": 2}}', "--spec.hyperparameters.alpha"),
    ('{"algorithm": "nope"}', "unknown algorithm"),
])
def test_distill_script_rejects_bad_specs(spec, fragment, data, tmp_path, capsys):
    assert distill_script.main(script_argv(data, tmp_path, spec)) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_distill_script_needs_the_logits_of_a_kd_student(data, tmp_path, capsys):
    spec = json.dumps(spec_of("kd"))
    assert distill_script.main(script_argv(data, tmp_path, spec)) == 1       # no --logits
    lines = error_lines(capsys)
    assert len(lines) == 1 and "kd" in lines[0] and "logits" in lines[0], lines


def test_distill_script_trains_a_student(data, tmp_path, capsys):
    spec = json.dumps(spec_of("kd"), sort_keys=True)              # what Snakemake passes
    argv = script_argv(data, tmp_path, spec, "--logits", str(data / "logits.npz"))
    assert distill_script.main(argv) == 0
    assert error_lines(capsys) == []
    assert checkpoint.read_checkpoint_config(tmp_path / "out")["algorithm"] == "kd"
    # a mismatched cache is one error line naming the file
    other = tmp_path / "other.npz"
    np.savez(other, train=np.zeros((N_TRAIN + 1, 2), np.float32), dev=np.zeros((N_DEV, 2), np.float32))
    argv = script_argv(data, tmp_path, spec, "--logits", str(other))
    argv[argv.index("--out") + 1] = str(tmp_path / "out2")
    assert distill_script.main(argv) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and str(other) in lines[0] and "line up" in lines[0], lines


# ---- 6. the KD loss agrees across backends ----------------------------------------------------------

_KD_LOSS = """
import json, sys
from pathlib import Path
from kdlib import backend
from kdlib.data import batching, ofrecord
from kdlib.data.tasks import get_task
from kdlib.distill import logit_cache, recipes
from kdlib.models import checkpoint
B = backend.load("{backend}", "cpu")
spec, root = json.loads(sys.argv[1]), Path(sys.argv[2])
task = get_task("sst2")
ctx = recipes.Context(B, task, root / "bert")
ctx.logits = logit_cache.load_logits(root / "logits.npz", root / "bert", task)
student, _ = checkpoint.load_checkpoint(B, root / "student")
(phase,) = recipes.get_recipe("kd").phases(ctx, spec, student, [None])
batch = next(iter(batching.batches(ofrecord.record_file(root / "bert", "train"), 8, shuffle_buffer=64,
                                   seed=5)))
batch["step"] = 0
loss, parts = phase.loss_fn(batch)
print(json.dumps({{"loss": float(loss.item()), "soft": float(parts["soft"].item())}}))
"""


@pytest.mark.skipif(not (HAS_TORCH and ONEFLOW_PYTHON.exists()), reason="needs both runtimes")
def test_kd_loss_agrees_across_backends(B, data, tmp_path):
    spec = spec_of("kd")
    ctx = context(B, data, spec)
    B.seed(0)
    student = recipes.get_recipe("kd").build(ctx, spec)
    checkpoint.save_checkpoint(student, data / "student")
    student.eval()
    (phase,) = recipes.get_recipe("kd").phases(ctx, spec, student, [None])
    loss, parts = phase.loss_fn(first_batch(data / "bert"))
    results = {"torch": {"loss": value(B, loss), "soft": value(B, parts["soft"])}}
    out = subprocess.run([str(ONEFLOW_PYTHON), "-c", _KD_LOSS.format(backend="oneflow"), json.dumps(spec),
                          str(data)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    results["oneflow"] = json.loads(out.stdout.strip().splitlines()[-1])
    assert results["torch"]["soft"] > 0
    for key in ("loss", "soft"):
        assert results["oneflow"][key] == pytest.approx(results["torch"][key], rel=1e-5, abs=1e-5), results


def test_theseus_step_that_keeps_every_teacher_module_trains_on(B, data, teacher_cfg, tmp_path):
    """A replacement step may draw the teacher's layers for every module; nothing trainable took
    part, so the step updates nothing, is counted, and training goes on (it used to crash in
    backward)."""
    spec = spec_of("theseus", hyperparameters={"replace_rate": 0.0, "scheduler": "constant"})
    student, result = run_phase(B, data, spec, 0, tmp_path / "phase")
    init = read_safetensors(data / "init" / "s" / "1_2" / "model.safetensors")
    after = state_dict_numpy(student)
    assert all(np.array_equal(after[k], init[k]) for k in after)   # phase 1 changed nothing
    assert result.skipped_steps == result.steps == N_TRAIN // BATCH

    init_dir = export_layers(data / "teacher", recipes.init_layers(spec, 4), tmp_path / "init")
    results = distill(B, TASK, "theseus", spec, records=data / "bert", out_dir=tmp_path / "out",
                      work_dir=tmp_path / "work", teacher_dir=data / "teacher", init_dir=init_dir,
                      eval_batch_size=16)
    assert [r.steps for r in results] == [N_TRAIN // BATCH] * 2
    assert [r.skipped_steps for r in results] == [N_TRAIN // BATCH, 0]
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert [p["skipped_steps"] for p in summary["phases"]] == [N_TRAIN // BATCH, 0]


# ---- transfer sets: rows without a label (is_real_example 0) -----------------------------------------

def with_transfer_rows(batch, rows=(0, 2, 5)):
    """The batch with ``rows`` marked as transfer rows (placeholder labels, scrambled here)."""
    real = np.ones(len(batch["label_ids"]), np.int32)
    real[list(rows)] = 0
    labels = batch["label_ids"].copy()
    labels[list(rows)] = 1 - labels[list(rows)]
    return {**batch, "is_real_example": real, "label_ids": labels}


def test_kd_hard_loss_skips_transfer_rows_and_soft_loss_uses_them(B, data):
    spec = spec_of("kd")
    rng = np.random.default_rng(1)
    logits = {s: rng.normal(size=(n, 2)).astype(np.float32) * 3
              for s, n in (("train", N_TRAIN), ("dev", N_DEV))}
    ctx, student, (phase,) = phases_of(B, data, spec, logits=logits)
    batch = with_transfer_rows(first_batch(data / "bert"))
    s = B.to_numpy(np_inputs_logits(B, student, batch)["logits"])
    t = logits["train"][batch["index"]]
    real = batch["is_real_example"] == 1
    loss, parts = phase.loss_fn(batch)
    assert value(B, parts["hard"]) == pytest.approx(hard_ce(s[real], batch["label_ids"][real]), abs=1e-5)
    assert value(B, parts["soft"]) == pytest.approx(4 * soft_ce(s, t, 2.0), abs=1e-5)   # every row
    # the transfer rows' placeholder labels do not matter; a labelled row's label does
    flipped = batch["label_ids"].copy()
    flipped[~real] = 1 - flipped[~real]
    same = phase.loss_fn({**batch, "label_ids": flipped})[1]["hard"]
    assert value(B, same) == pytest.approx(value(B, parts["hard"]), abs=1e-7)
    flipped[np.flatnonzero(real)[0]] ^= 1
    changed = phase.loss_fn({**batch, "label_ids": flipped})[1]["hard"]
    assert value(B, changed) != pytest.approx(value(B, parts["hard"]), abs=1e-6)


def test_theseus_learns_the_teachers_soft_labels_on_transfer_rows(B, data):
    ctx, student, (rep, succ) = phases_of(B, data, spec_of("theseus"), name="theseus")
    batch = with_transfer_rows(first_batch(data / "bert"))
    s = B.to_numpy(np_inputs_logits(B, student, batch)["logits"])
    t = B.to_numpy(np_inputs_logits(B, ctx.teacher(), batch)["logits"])
    real = batch["is_real_example"] == 1
    share = real.mean()
    expected = (share * hard_ce(s[real], batch["label_ids"][real])
                + (1 - share) * soft_ce(s[~real], t[~real], 1.0))
    assert value(B, succ.loss_fn(batch)[0]) == pytest.approx(expected, abs=1e-5)
    # labelled rows alone: the hard loss, as without a transfer set
    plain = first_batch(data / "bert")
    assert value(B, succ.loss_fn(plain)[0]) == pytest.approx(hard_ce(s, plain["label_ids"]), abs=1e-5)


@pytest.fixture(scope="module")
def mixed(data, B):
    """The tiny task's record folders with a transfer set of 16 examples mixed in (bert+t,
    lstm+t, as rule ofrecord_transfer writes them) and the teacher's logits on them."""
    import shutil

    from kdlib.data import transfer
    extra = tinydata.make_examples(16, 77)
    extra["is_real_example"][:] = 0
    tinydata.write_split(data / "extra.of_record-0", extra)
    folder = data / "bert+t"
    folder.mkdir()
    transfer.mix(record_file(data / "bert", "train"), data / "extra.of_record-0",
                 record_file(folder, "train"), 0)
    for split in ("validation", "dev"):
        shutil.copy(record_file(data / "bert", split), record_file(folder, split))
    meta = {"task": TASK.name, "counts": {"train": N_TRAIN + 16, "validation": N_DEV, "dev": N_DEV},
            "transfer": {"name": "t", "labelled": N_TRAIN, "transfer": 16},
            "max_length": tinydata.MAX_LENGTH}
    shutil.copy(data / "bert/vocab.txt", folder / "vocab.txt")
    (folder / "meta.json").write_text(json.dumps({**meta, "kind": "bert"}))
    write_word_records(folder, data / "lstm+t")
    (data / "lstm+t/meta.json").write_text(json.dumps({**meta, "kind": "lstm"}))
    logit_cache.cache_logits(B, TASK, data / "teacher", folder, data / "logits+t.npz", batch_size=16)
    return data


@pytest.mark.parametrize("name", [n for n in STUDENTS if n != "nokd"])
def test_every_distilled_recipe_trains_on_a_transfer_set(name, mixed, B, tmp_path):
    students = {name: {**STUDENTS[name], "transfer": "t"}}
    cfg = config.validate({"students_train": TRAIN, "students": students,
                           "transfer": {"t": {"unlabeled": "builtin"}}})
    spec = student_spec(cfg, name)
    recipe, lstm, records, init_dir = student_setup(mixed, spec, tmp_path, "+t")
    results = distill(B, TASK, name, spec, records=records, out_dir=tmp_path / "out", work_dir=tmp_path / "w",
                      teacher_dir=None if lstm else mixed / "teacher",
                      logits=mixed / "logits+t.npz" if recipe.needs(spec)["logits"] else None,
                      init_dir=init_dir, eval_batch_size=16)
    steps = -(-(N_TRAIN + 16) // BATCH)                     # every row, labelled or not
    assert all(r.steps == steps for r in results)
    assert all(np.isfinite(float(r["loss"])) for r in read_log(tmp_path / "out/train_log.csv"))
    # the records must hold the student's transfer set, and a student without one refuses them
    with pytest.raises(ConfigError, match="hold transfer set 't', but the student asks for none"):
        distill(B, TASK, name, {k: v for k, v in spec.items() if k != "transfer"}, records=records,
                out_dir=tmp_path / "o2", work_dir=tmp_path / "w2", teacher_dir=mixed / "teacher",
                logits=mixed / "logits+t.npz", init_dir=init_dir, eval_batch_size=16)


# ---- equal steps: a baseline trains at least as many steps as its students --------------------------

def test_a_baseline_matches_the_most_steps_of_its_students_and_never_trains_fewer(data, mixed):
    from kdlib.distill.student import matched_steps
    cfg = train.TrainConfig.from_dict({**TRAIN, "epochs": 1})             # 32 rows: 4 steps
    two_phases = {"student": "tiny", "records": str(data / "bert"),
                  "phases": [{"epochs": 1, "batch_size": BATCH}, {"epochs": 2, "batch_size": BATCH}]}
    transfer = {"student": "kd", "records": str(mixed / "bert+t"),   # 48 rows, batch 3: 16 steps
                "phases": [{"epochs": 1, "batch_size": 3}]}
    out, steps, like = matched_steps(cfg, N_TRAIN, [two_phases, transfer])
    assert (steps, like) == (16, "kd") and train.total_steps(N_TRAIN, out) == 16
    assert out.epochs == pytest.approx(4.0) and out.batch_size == BATCH and out.lr == cfg.lr
    out, steps, like = matched_steps(cfg, N_TRAIN, [two_phases])
    assert (steps, like) == (12, "tiny") and train.total_steps(N_TRAIN, out) == 12
    more = train.TrainConfig.from_dict({**TRAIN, "epochs": 5})           # 20 steps already
    assert matched_steps(more, N_TRAIN, [two_phases, transfer]) == (more, 20, None)
    assert matched_steps(cfg, N_TRAIN, []) == (cfg, 4, None)


def test_a_baseline_matches_every_phase_of_a_theseus_student(data):
    """Theseus' replacement phase (2 epochs of batch 4 over 32 rows: 16 steps) and successor phase
    (1 epoch of batch 8: 4 steps) are 20 steps; the baseline (4 steps of its own) must match all
    20, not the last phase's 4 (no more than its own) nor the first's 16."""
    from kdlib.distill.student import matched_steps
    spec = spec_of("theseus", first_phase_train={"epochs": 2, "batch_size": 4},
                   train={"epochs": 1, "batch_size": BATCH})
    student = {"student": "theseus", "records": str(data / "bert"),
               "phases": [{"epochs": spec[p]["epochs"], "batch_size": spec[p]["batch_size"]}
                          for p in ("first_phase_train", "train")]}
    cfg = train.TrainConfig.from_dict({**TRAIN, "epochs": 1})             # 32 rows: 4 steps
    out, steps, like = matched_steps(cfg, N_TRAIN, [student])
    assert (steps, like) == (20, "theseus") and train.total_steps(N_TRAIN, out) == 20
    assert out.epochs == pytest.approx(5.0) and out.batch_size == BATCH


def test_distill_script_trains_a_baseline_for_its_students_steps(data, tmp_path, capsys):
    spec = spec_of("nokd")
    match = [{"student": "kd", "records": str(data / "bert"),
              "phases": [{"epochs": 2, "batch_size": BATCH}]}]
    args = ["--task", TASK.name, "--student", "nokd", "--spec", json.dumps(spec), "--records",
            str(data / "bert"), "--teacher", str(data / "teacher"), "--out", str(tmp_path / "out"),
            "--work", str(tmp_path / "w"), "--selection", "validation", "--eval-batch-size", "16", "--backend", BACKEND,
            "--device", "cpu", "--precision", "fp32", "--threads", "0"]
    assert distill_script.main([*args, "--match-steps", json.dumps(match)]) == 0
    summary = json.loads((tmp_path / "out/train_summary.json").read_text())
    assert summary["steps"] == 2 * N_TRAIN // BATCH and summary["matched_steps_of"] == "kd"
    assert "8 steps (2.00 epochs), as many as kd" in capsys.readouterr().err
    assert distill_script.main([*args, "--match-steps", '{"student": "kd"}']) == 1
    assert error_lines(capsys) == ["error: --match-steps must be a JSON list of {student, records, phases}"]


def test_a_pretrained_initialised_student_needs_its_exported_layers_and_not_the_live_teacher():
    for init, wanted in (("random", False), ("teacher", True), ("pretrained", True)):
        spec = student_spec(make_config({"s": {"algorithm": "none", "architecture": {
            "layers": 2, "init": init}}}), "s")
        needs = recipes.get_recipe("none").needs(spec)
        assert needs["init"] is wanted and needs["logits"] is False, (init, needs)
