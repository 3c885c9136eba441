"""Distillation recipes, one small registered class per algorithm.

A recipe says which records the student reads, what it needs from the teacher (cached logits or
the live model), how the student is built and initialised, and its phases: each phase is the
modules to train, a ``loss_fn(batch)`` combining :mod:`kdlib.distill.ops` operators, and its training
settings. :func:`kdlib.distill.train.fit` runs each phase; nothing there knows about algorithms.

Output-dict contract (TextBrewer's): models return ``logits``; with ``output_hidden`` also
``hidden`` (embeddings + every layer), and with ``output_all`` also ``attention`` (pre-softmax
scores per layer, which need the explicit attention path; otherwise attention may be fused).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.batching import model_inputs
from ..data.convert import records_tokenizer
from ..errors import ConfigError
from ..io import file_digest, folder_tokenizer
from ..models.bert import BertConfig, build_bert, extended_mask
from ..models.checkpoint import load_checkpoint, read_checkpoint_config
from ..models.families import tokenizer_size
from ..models.lstm import LstmConfig, build_bilstm
from . import ops, train
from .layers import first_layers, skip_layers

RECIPES: dict[str, "Recipe"] = {}


def register(cls):
    RECIPES[cls.name] = cls()
    return cls


def get_recipe(name: str, student: str = "?") -> "Recipe":
    if name not in RECIPES:
        raise ConfigError(f"student {student}: unknown algorithm {name!r}; known: "
                          f"{', '.join(sorted(RECIPES))}")
    return RECIPES[name]


@dataclass
class Phase:
    name: str
    modules: dict                 # name -> module; "student" is the one kept
    loss_fn: Callable
    cfg: train.TrainConfig        # the last phase is evaluated and selects; earlier ones hand on their last weights
    setup: Callable | None = None  # run before the phase's optimizer is built (freezing)


@dataclass
class Context:
    """What a recipe may use: the backend, the task, the teacher and the student's inputs."""
    B: object
    task: object
    records: Path                            # the student's record folder
    teacher_dir: Path | None = None          # results/{task}/teacher
    logits: dict | None = None               # split -> (N, C) cached teacher logits
    init_dir: Path | None = None             # exported teacher layers
    vocab_size: int | None = None            # word vocabulary (BiLSTM)
    _teacher: object = field(default=None, repr=False)

    def teacher(self):
        """The fine-tuned teacher, frozen, in eval mode (loaded once)."""
        if self._teacher is None:
            model, _ = load_checkpoint(self.B, self.teacher_dir)
            for p in model.parameters():
                p.requires_grad = False
            model.eval()
            self._teacher = model
        return self._teacher

    def cached_logits(self, batch, split: str = "train"):
        return self.B.tensor(self.logits[split][batch["index"]])


# ---- architecture ------------------------------------------------------------------------------

# The teacher config's fields a BERT student's config follows (student_config): those it copies,
# and the widths it takes where its architecture leaves them unset.
COPIED_FROM_TEACHER = ("vocab_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
                       "hidden_dropout_prob", "attention_probs_dropout_prob")
TEACHER_WIDTHS = COPIED_FROM_TEACHER + ("hidden_size", "num_attention_heads", "intermediate_size")


def student_config(spec: dict, teacher: dict, num_labels: int, vocab_size: int | None = None):
    """BertConfig or LstmConfig of a student from its ``architecture`` and the teacher's config."""
    arch = spec["architecture"]
    if arch["model"] == "bilstm":
        return LstmConfig(vocab_size=vocab_size or 2, embedding_dim=arch["embedding"],
                          hidden_size=arch["hidden"] or 300, fc_size=arch["intermediate"] or 400,
                          num_labels=num_labels)
    hidden = arch["hidden"] or teacher["hidden_size"]
    # an unset FFN width follows the teacher's when the hidden width does too, else 4 x hidden
    intermediate = arch["intermediate"] or (teacher.get("intermediate_size") if arch["hidden"] is None
                                            else None) or 4 * hidden
    return BertConfig.from_dict({
        **{k: teacher[k] for k in COPIED_FROM_TEACHER if k in teacher},
        "hidden_size": hidden, "num_hidden_layers": arch["layers"],
        "num_attention_heads": arch["heads"] or teacher["num_attention_heads"],
        "intermediate_size": intermediate, "num_labels": num_labels})


def init_layers(spec: dict, teacher_layers: int) -> list[int]:
    """The 1-based teacher layers a teacher-initialised student starts from."""
    arch = spec["architecture"]
    if arch["init_layers"]:
        return list(arch["init_layers"])
    recipe = get_recipe(spec["algorithm"])
    return recipe.default_layers(arch["layers"], teacher_layers)


# ---- recipes -----------------------------------------------------------------------------------

class Recipe:
    name = "?"
    model = "bert"                  # bert | bilstm | any
    needs_logits = False            # cached teacher logits
    needs_teacher = False           # the live fine-tuned teacher
    hyperparameters: tuple = ()     # the keys of `hyperparameters` it reads
    two_phase = False

    def needs(self, spec: dict) -> dict[str, bool]:
        """What a student's job reads besides its records, the one place that says it (the rules
        and :func:`kdlib.distill.student.distill` both ask): the cached teacher ``logits``; the
        fine-tuned ``teacher`` folder (the live teacher, or the widths a BERT student follows);
        its ``init`` layers exported from the teacher or the pretrained folder. A BERT student whose
        spec carries the ``teacher_widths`` (:meth:`kdlib.plan.Plan.distill_spec`) needs no
        teacher folder for them."""
        arch = spec["architecture"]
        widths = arch["model"] == "bert" and "teacher_widths" not in spec
        return {"logits": self.needs_logits, "teacher": self.needs_teacher or widths,
                "init": arch["init"] != "random"}

    def default_layers(self, n_student: int, n_teacher: int) -> list[int]:
        return skip_layers(n_student, n_teacher)

    def check(self, student: str, spec: dict, teacher: dict) -> None:
        """Raise ConfigError naming ``student`` when its settings cannot work with the teacher."""
        arch = spec["architecture"]
        if self.model != "any" and arch["model"] != self.model:
            raise ConfigError(f"student {student}: algorithm {self.name} needs a {self.model} "
                              f"student, not {arch['model']}")
        if arch["model"] == "bilstm":
            if arch["init"] != "random":
                raise ConfigError(f"student {student}: a bilstm cannot be initialised from "
                                  f"{arch['init']} layers")
            return
        n_t = int(teacher["num_hidden_layers"])
        try:                                   # e.g. a hidden width the heads do not divide
            cfg = student_config(spec, teacher, 2)
        except ConfigError as exc:
            raise ConfigError(f"student {student}: {exc}") from None
        if arch["init"] != "random":
            if cfg.hidden_size != teacher["hidden_size"] or cfg.intermediate_size != teacher["intermediate_size"] \
                    or cfg.num_attention_heads != teacher["num_attention_heads"]:
                raise ConfigError(f"student {student}: init: {arch['init']} needs the teacher's widths "
                                  f"(hidden {teacher['hidden_size']}, heads {teacher['num_attention_heads']}, "
                                  f"intermediate {teacher['intermediate_size']})")
            try:
                layers = init_layers(spec, n_t)
            except ConfigError as exc:
                raise ConfigError(f"student {student}: {exc}") from None
            if len(layers) != arch["layers"] or not all(1 <= t <= n_t for t in layers):
                raise ConfigError(f"student {student}: init_layers {layers} must name {arch['layers']} "
                                  f"layers between 1 and {n_t}")

    def build(self, ctx: Context, spec: dict):
        arch = spec["architecture"]
        if arch["model"] == "bilstm":
            return build_bilstm(ctx.B, student_config(spec, {}, ctx.task.num_labels, ctx.vocab_size))
        if arch["init"] != "random":
            model, _ = load_checkpoint(ctx.B, ctx.init_dir)
            model.train()
            return model
        teacher = spec.get("teacher_widths")
        if teacher is None:                          # read from the fine-tuned teacher's folder
            teacher = read_checkpoint_config(ctx.teacher_dir)
            # a teacher of another family: the BERT widths and vocabulary it stands for (its import)
            teacher = teacher.get("student_shape", teacher)
            own = records_tokenizer(ctx.records)     # architecture.tokenizer: not the teacher's
            if file_digest(own) != file_digest(folder_tokenizer(ctx.teacher_dir) or own):
                teacher = {**teacher, "vocab_size": tokenizer_size(own)}
        return build_bert(ctx.B, student_config(spec, teacher, ctx.task.num_labels))

    def phases(self, ctx: Context, spec: dict, student, cfgs: list) -> list[Phase]:
        raise NotImplementedError

    # helpers shared by recipes
    @staticmethod
    def hard(ctx, logits, batch):
        """The hard-label loss over the batch's labelled rows: a transfer set's rows
        (``is_real_example`` 0, :mod:`kdlib.data.transfer`) have placeholder labels and are left out."""
        labels = ctx.B.tensor(batch["label_ids"])
        real = batch.get("is_real_example")
        if real is None or real.all():
            return ops.hard_loss(ctx.B.F, logits, labels, ctx.task.is_regression)
        return ops.hard_loss(ctx.B.F, logits, labels, ctx.task.is_regression,
                             weight=ctx.B.tensor(real.astype(np.float32)))

    @staticmethod
    def soft(ctx, logits_s, logits_t, hp, scale_t2=True):
        return ops.soft_cross_entropy(logits_s, logits_t, hp["temperature"], scale_t2=scale_t2,
                                      regression=ctx.task.is_regression)


@register
class NoKD(Recipe):
    """The student's architecture on hard labels only: the baseline that shows what KD bought."""
    name, model = "none", "any"

    def phases(self, ctx, spec, student, cfgs):
        def loss_fn(batch):
            loss = self.hard(ctx, student(**model_inputs(ctx.B, batch))["logits"], batch)
            return loss, {"hard": loss}
        return [Phase("train", {"student": student}, loss_fn, cfgs[-1])]


@register
class KD(Recipe):
    """Hinton et al. 2015. Loss: (1 - alpha) * CE(hard) + alpha * T^2 * soft CE(teacher, T)."""
    name, needs_logits, hyperparameters = "kd", True, ("alpha", "temperature")

    def phases(self, ctx, spec, student, cfgs):
        hp = spec["hyperparameters"]

        def loss_fn(batch):
            logits = student(**model_inputs(ctx.B, batch))["logits"]
            hard = self.hard(ctx, logits, batch)
            soft = self.soft(ctx, logits, ctx.cached_logits(batch), hp)
            return (1 - hp["alpha"]) * hard + hp["alpha"] * soft, {"hard": hard, "soft": soft}
        return [Phase("train", {"student": student}, loss_fn, cfgs[-1])]


@register
class DistilledLSTM(Recipe):
    """Tang et al. 2019. Loss: (1 - alpha) * CE(hard) + alpha * MSE(logits_s, logits_t)
    (or the soft CE at temperature T with ``logit_loss: soft_ce``)."""
    name, model, needs_logits = "distilled_lstm", "bilstm", True
    hyperparameters = ("alpha", "logit_loss", "temperature")

    def phases(self, ctx, spec, student, cfgs):
        hp = spec["hyperparameters"]

        def loss_fn(batch):
            logits = student(**model_inputs(ctx.B, batch))["logits"]
            teacher = ctx.cached_logits(batch)
            hard = self.hard(ctx, logits, batch)
            if hp["logit_loss"] == "mse":
                distill = ((logits - teacher) ** 2).mean()
            else:
                distill = self.soft(ctx, logits, teacher, hp)
            return (1 - hp["alpha"]) * hard + hp["alpha"] * distill, {"hard": hard, "distill": distill}
        return [Phase("train", {"student": student}, loss_fn, cfgs[-1])]


@register
class BertPKD(Recipe):
    """Sun et al. 2019. Loss: (1 - alpha) * CE(hard) + alpha * T^2 * soft + beta * PKD, the PKD term
    over the intermediate layers mapped by ``pkd_strategy`` (skip or last)."""
    name, needs_teacher = "bert_pkd", True
    hyperparameters = ("alpha", "beta", "temperature", "pkd_strategy")

    def check(self, student, spec, teacher):
        super().check(student, spec, teacher)
        try:
            ops.pkd_mapping(spec["architecture"]["layers"], int(teacher["num_hidden_layers"]),
                            spec["hyperparameters"]["pkd_strategy"])
        except ValueError as exc:
            raise ConfigError(f"student {student}: {exc}") from None

    def phases(self, ctx, spec, student, cfgs):
        hp = spec["hyperparameters"]
        teacher = ctx.teacher()
        mapping = ops.pkd_mapping(student.config.num_hidden_layers, teacher.config.num_hidden_layers,
                                  hp["pkd_strategy"])

        def loss_fn(batch):
            inputs = model_inputs(ctx.B, batch)
            out_s = student(**inputs, output_hidden=True)       # no attention scores: fused
            with ctx.B.no_grad():
                out_t = teacher(**inputs, output_hidden=True)
            hard = self.hard(ctx, out_s["logits"], batch)
            soft = self.soft(ctx, out_s["logits"], out_t["logits"], hp)
            pkd = ops.pkd_distill(out_s["hidden"], out_t["hidden"], mapping)
            loss = (1 - hp["alpha"]) * hard + hp["alpha"] * soft + hp["beta"] * pkd
            return loss, {"hard": hard, "soft": soft, "pkd": pkd}
        return [Phase("train", {"student": student}, loss_fn, cfgs[-1])]


@register
class TinyBERT(Recipe):
    """Jiao et al. 2020, task-specific distillation. Phase 1 (intermediate): attention-score MSE +
    hidden-state MSE (embeddings included, through a learned projection when widths differ) over the
    uniform layer mapping. Phase 2 (prediction): soft CE at temperature T against the teacher."""
    name, needs_teacher, needs_logits, two_phase = "tinybert", True, True, True
    hyperparameters = ("temperature",)

    def check(self, student, spec, teacher):
        super().check(student, spec, teacher)
        cfg = student_config(spec, teacher, 2)
        if cfg.num_attention_heads != teacher["num_attention_heads"]:
            raise ConfigError(f"student {student}: tinybert compares attention per head, so it needs "
                              f"the teacher's {teacher['num_attention_heads']} heads, not "
                              f"{cfg.num_attention_heads}")
        if cfg.num_hidden_layers > teacher["num_hidden_layers"]:
            raise ConfigError(f"student {student}: {cfg.num_hidden_layers} layers exceed the "
                              f"teacher's {teacher['num_hidden_layers']}")

    def phases(self, ctx, spec, student, cfgs):
        hp, B = spec["hyperparameters"], ctx.B
        teacher = ctx.teacher()
        n_s, n_t = student.config.num_hidden_layers, teacher.config.num_hidden_layers
        hidden_map = ops.uniform_mapping(n_s, n_t)
        att_map = ops.uniform_att_mapping(n_s, n_t)
        proj = B.nn.Linear(student.config.hidden_size, teacher.config.hidden_size).to(B.device)

        def intermediate(batch):
            inputs = model_inputs(B, batch)
            out_s = student(**inputs, output_all=True)
            with B.no_grad():
                out_t = teacher(**inputs, output_all=True)
            att = ops.att_distill(out_s["attention"], out_t["attention"], att_map)
            hid = ops.layer_distill(out_s["hidden"], out_t["hidden"], hidden_map, proj)
            return att + hid, {"attention": att, "hidden": hid}

        def prediction(batch):
            logits = student(**model_inputs(B, batch))["logits"]
            soft = self.soft(ctx, logits, ctx.cached_logits(batch), hp, scale_t2=False)
            return soft, {"soft": soft}
        return [Phase("intermediate", {"student": student, "proj": proj}, intermediate, cfgs[0]),
                Phase("prediction", {"student": student}, prediction, cfgs[1])]


@register
class Theseus(Recipe):
    """Xu et al. 2020, BERT-of-Theseus. Phase 1 (replacement): each successor layer stands in for
    ``compress_ratio`` frozen teacher layers with probability p, drawn per module per step (p is
    ``replace_rate``, or rises linearly from it to 1 over the phase); the successor's embeddings and
    head stay frozen. Phase 2 fine-tunes the successor alone on hard labels. Eval uses the successor
    alone. With a transfer set, both phases learn the teacher's soft labels (T = 1) on its rows, which
    have no gold label: the loss is the hard loss over the labelled rows and the soft loss over the
    transfer rows, weighted by their shares of the batch."""
    name, needs_teacher, two_phase = "theseus", True, True
    hyperparameters = ("compress_ratio", "replace_rate", "scheduler")

    def default_layers(self, n_student, n_teacher):
        return first_layers(n_student, n_teacher)

    def check(self, student, spec, teacher):
        super().check(student, spec, teacher)
        arch, hp = spec["architecture"], spec["hyperparameters"]
        if arch["init"] != "teacher":
            raise ConfigError(f"student {student}: theseus initialises its successor from teacher "
                              "layers; set architecture.init: teacher")
        if arch["layers"] * hp["compress_ratio"] != teacher["num_hidden_layers"]:
            raise ConfigError(f"student {student}: {arch['layers']} successor layers x compress_ratio "
                              f"{hp['compress_ratio']} must equal the teacher's "
                              f"{teacher['num_hidden_layers']} layers")

    def phases(self, ctx, spec, student, cfgs):
        hp, B = spec["hyperparameters"], ctx.B
        teacher = ctx.teacher()
        ratio = hp["compress_ratio"]
        total = train.total_steps(_count(ctx), cfgs[0])
        head = [student.embeddings, student.pooler, student.classifier]

        def freeze_head():                           # embeddings and head stay the teacher's
            for module in head:
                for p in module.parameters():
                    p.requires_grad = False

        def replacement(batch):
            inputs = model_inputs(B, batch)
            ext = extended_mask(inputs["attention_mask"])
            h = student.embed(inputs["input_ids"], inputs.get("token_type_ids"))
            p = replacement_rate(hp, int(batch["step"]), total)
            draws = np.random.default_rng([cfgs[0].seed, int(batch["step"])]).random(len(student.encoder.layer))
            successors = draws < p                       # (n_student,) True: the successor module runs
            for i, layer in enumerate(student.encoder.layer):
                if successors[i]:
                    h, _ = layer(h, ext)
                else:
                    for j in range(i * ratio, (i + 1) * ratio):
                        h, _ = teacher.encoder.layer[j](h, ext)
            loss = self.labels_or_teacher(ctx, student.head(h), batch, inputs)
            return loss, {"hard": loss, train.NOTHING_TO_TRAIN: not successors.any()}

        def successor(batch):
            inputs = model_inputs(B, batch)
            loss = self.labels_or_teacher(ctx, student(**inputs)["logits"], batch, inputs)
            return loss, {"hard": loss}
        return [Phase("replacement", {"student": student}, replacement, cfgs[0], setup=freeze_head),
                Phase("successor", {"student": student}, successor, cfgs[1],
                      setup=lambda: thaw(student))]

    def labels_or_teacher(self, ctx, logits, batch, inputs):
        """The hard loss on the labelled rows; on a transfer set's rows, the soft CE against the
        live teacher's logits; each mean weighted by its rows' share of the batch."""
        real = batch.get("is_real_example")
        if real is None or real.all():
            return self.hard(ctx, logits, batch)
        rows = ctx.B.tensor(np.flatnonzero(real == 0))                  # (R,) transfer rows
        with ctx.B.no_grad():
            teacher = ctx.teacher()(**inputs)["logits"]
        soft = ops.soft_cross_entropy(logits.index_select(0, rows), teacher.index_select(0, rows), 1.0,
                                      scale_t2=False, regression=ctx.task.is_regression)
        share = float(real.mean())
        return share * self.hard(ctx, logits, batch) + (1 - share) * soft


def replacement_rate(hp: dict, step: int, total: int) -> float:
    """Theseus' probability that a successor module replaces its predecessor at 0-based ``step`` of
    ``total``: ``replace_rate`` throughout (constant), or rising linearly from it to 1 at ``total``
    (linear): p(step) = min(1, b + (1 - b) * step / total)."""
    if hp["scheduler"] == "constant":
        return hp["replace_rate"]
    return min(1.0, hp["replace_rate"] + (1 - hp["replace_rate"]) * step / total)


def _count(ctx: Context) -> int:
    from ..data.ofrecord import count_records, record_file
    return count_records(record_file(ctx.records, "train"))


def thaw(module) -> None:
    for p in module.parameters():
        p.requires_grad = True
