"""The four distillation operators and the layer mappings they read.

Every operator is a pure function of backend tensors. They use only tensor *methods*
(``softmax``, ``log_softmax``, ``pow``, ``mean``, ``norm``, ``masked_fill``, ``detach``, ...) that
PyTorch and OneFlow 0.9 share, so the same code runs on either backend without a library handle.

Model output contract (``kdlib.models``), for a model with L layers, in kdlib's shape letters (N
examples in a batch, T tokens, H hidden, C labels, nh heads; ``B`` is always the backend module):

* ``logits``: (N, C), or (N, 1) for a regression task;
* ``hidden``: list of L + 1 tensors (N, T, H); ``hidden[0]`` is the embeddings output and
  ``hidden[k]`` the output of layer k (1-based);
* ``attention``: list of L tensors (N, nh, T, T) of *pre-softmax* scores; ``attention[k - 1]``
  belongs to layer k. Masked key positions carry ``MASK_VALUE`` (-10000) added to the score.

Names follow the ``_s`` (student) / ``_t`` (teacher) convention. Teacher tensors are detached
inside every operator, so a teacher that was run with gradients on still receives none.

Under mixed precision (bf16 or fp16 autocast) every operator casts its inputs to fp32 first, so
the softmax, log-softmax and mean reductions run in fp32: a soft cross-entropy at T = 4 keeps the
small probabilities that bf16's 8-bit mantissa would round away.

A layer mapping is a list of ``(student_index, teacher_index)`` pairs into those lists; it is plain
data (config keys), built by :func:`pkd_mapping`, :func:`uniform_mapping` or
:func:`uniform_att_mapping` and checked by :func:`validate_mapping`.
"""
from __future__ import annotations

import numbers
from typing import Callable, Sequence

from ..errors import ConfigError

MASK_VALUE = -10000.0
# Scores at or below this are masked positions (a real score is never this small); TinyBERT's rule.
MASK_THRESHOLD = -1e2
_NORM_EPS = 1e-12

LayerMap = list[tuple[int, int]]


class DistillError(ConfigError, ValueError):
    """A layer mapping or a pair of tensors that a distillation operator cannot combine."""


# ---- logits --------------------------------------------------------------------------------------
def soft_cross_entropy(logits_s, logits_t, temperature: float = 1.0, scale_t2: bool = False,
                       regression: bool = False):
    """Soft-label knowledge-distillation loss (Hinton, Vinyals and Dean 2015, "Distilling the
    Knowledge in a Neural Network").

    Classification, ``logits_s`` and ``logits_t`` of shape (N, C)::

        p_t  = softmax(logits_t / T)                     # (N, C) teacher soft labels
        loss = mean_b [ -sum_c p_t[b, c] * log_softmax(logits_s / T)[b, c] ]   (* T^2 if scale_t2)

    Regression, logits of shape (N, 1) (``regression=True``)::

        loss = mean_b (logits_s[b] - logits_t[b])^2       # temperature and scale_t2 are ignored

    Args:
        logits_s: student logits, (N, C); gradients flow into it.
        logits_t: teacher logits, same shape; detached here.
        temperature: T > 0. T > 1 softens both distributions and exposes the teacher's "dark
            knowledge" about wrong classes.
        scale_t2: multiply by T^2 so the gradient magnitude does not shrink as 1/T^2 when this loss
            is mixed with a hard-label loss (Hinton et al. 2015, section 2).
        regression: use the MSE form for one-output regression tasks (e.g. STS-B).

    Returns a scalar tensor. Leading dimensions other than the last are all averaged, so
    (N, T, C) token logits also work.
    """
    _same_shape("logits", logits_s, logits_t)
    logits_s, logits_t = logits_s.float(), logits_t.detach().float()   # fp32 reductions
    if regression:
        return (logits_s - logits_t).pow(2).mean()
    if not temperature > 0:
        raise DistillError(f"temperature must be > 0, got {temperature!r}")
    p_t = (logits_t / temperature).softmax(dim=-1)                 # (N, C)
    log_p_s = (logits_s / temperature).log_softmax(dim=-1)         # (N, C)
    loss = -(p_t * log_p_s).sum(dim=-1).mean()
    if scale_t2:
        loss = loss * (temperature ** 2)
    return loss


def hard_loss(F, logits, labels, regression: bool = False, weight=None):
    """The plain supervised loss on gold labels: cross-entropy of (N, C) ``logits`` against (N,)
    class ``labels``, or, for a regression task, the MSE of the (N, 1) score against the (N,)
    targets. ``F`` is the library's ``nn.functional``. In fp32, like every operator here.

    With a (N,) 0/1 ``weight``, the mean runs over the rows of weight 1 only (a transfer set's
    rows, whose labels are placeholders, have weight 0); with none of them the loss is 0 (still
    attached to ``logits``, so a batch of transfer rows alone trains on the other terms)::

        loss = sum_i w_i * l_i / max(1, sum_i w_i)
    """
    logits = logits.float()
    if weight is None:
        if regression:
            return F.mse_loss(logits[:, 0], labels.float())
        return F.cross_entropy(logits, labels)
    if regression:
        rows = F.mse_loss(logits[:, 0], labels.float(), reduction="none")    # (N,)
    else:
        rows = F.cross_entropy(logits, labels, reduction="none")             # (N,)
    weight = weight.float()
    return (rows * weight).sum() / weight.sum().clamp(min=1.0)


# ---- intermediate layers -------------------------------------------------------------------------
def layer_distill(hidden_s: Sequence, hidden_t: Sequence, mapping: Sequence,
                  proj: Callable | None = None):
    """Hidden-state (and embedding) distillation: TinyBERT's L_hidn and L_embd (Jiao et al. 2020,
    "TinyBERT: Distilling BERT for Natural Language Understanding", eqs. 9-10)::

        loss = sum_{(s, t) in mapping} mean( (proj(hidden_s[s]) - hidden_t[t])^2 )

    The mean runs over all N * T * H_t elements, padded positions included (as in TinyBERT).

    Args:
        hidden_s: student hidden states, list of L_s + 1 tensors (N, T, H_s); index 0 = embeddings.
        hidden_t: teacher hidden states, list of L_t + 1 tensors (N, T, H_t); detached here.
        mapping: (student_index, teacher_index) pairs into those lists, e.g.
            ``uniform_mapping(n_s, n_t)``.
        proj: a callable (N, T, H_s) -> (N, T, H_t), typically a learned ``nn.Linear(H_s, H_t)``
            (TinyBERT's W_h), applied to every student state when it is given. It is required when
            H_s != H_t, and may be None when the widths match.

    Returns a scalar tensor. Raises DistillError for a bad mapping or mismatched shapes.
    """
    pairs = validate_mapping(mapping, len(hidden_s), len(hidden_t))
    loss = None
    for s, t in pairs:
        h_s = hidden_s[s]                                          # (N, T, H_s)
        h_t = hidden_t[t].detach().float()                         # (N, T, H_t)
        if proj is not None:
            h_s = proj(h_s)                                        # (N, T, H_t)
        elif h_s.shape[-1] != h_t.shape[-1]:
            raise DistillError(
                f"layer_distill: student hidden width {h_s.shape[-1]} differs from teacher width "
                f"{h_t.shape[-1]} for pair ({s}, {t}); pass proj (e.g. nn.Linear(H_s, H_t))")
        h_s = h_s.float()
        _same_shape(f"hidden pair ({s}, {t})", h_s, h_t)
        term = (h_s - h_t).pow(2).mean()
        loss = term if loss is None else loss + term
    return loss


def att_distill(att_s: Sequence, att_t: Sequence, mapping: Sequence):
    """Attention distillation: TinyBERT's L_attn (Jiao et al. 2020, eq. 8)::

        A~     = A with every entry <= -1e2 set to 0    # masked keys, in each tensor separately
        loss   = sum_{(s, t) in mapping} mean( (A~_s[s] - A~_t[t])^2 )

    It compares the *pre-softmax* attention scores (N, nh, T, T), as TinyBERT does; the mean runs
    over all N * nh * T * T entries. (The original OneFlow platform compared post-dropout attention
    probabilities, which mixes dropout noise into the target; that was a mistake not repeated here.)

    Args:
        att_s: student attention scores, list of L_s tensors (N, nh, T, T); ``att_s[k - 1]`` is layer k.
        att_t: teacher attention scores, list of L_t tensors of the same per-tensor shape; detached.
        mapping: (student_index, teacher_index) pairs into those lists (0-based), e.g.
            ``uniform_att_mapping(n_s, n_t)``.

    The student and the teacher must have the same number of heads (nh) and sequence length.
    Returns a scalar tensor. Raises DistillError for a bad mapping or mismatched shapes.
    """
    pairs = validate_mapping(mapping, len(att_s), len(att_t))
    loss = None
    for s, t in pairs:
        a_s = att_s[s].float()                                     # (N, nh, T, T)
        a_t = att_t[t].detach().float()                            # (N, nh, T, T)
        if a_s.dim() != 4 or a_t.dim() != 4:
            raise DistillError(f"att_distill: pair ({s}, {t}) needs (N, nh, T, T) scores, got "
                               f"{tuple(a_s.shape)} and {tuple(a_t.shape)}")
        if a_s.shape[1] != a_t.shape[1]:
            raise DistillError(
                f"att_distill: student layer index {s} has {a_s.shape[1]} heads but teacher layer "
                f"index {t} has {a_t.shape[1]}; attention distillation needs equal head counts")
        _same_shape(f"attention pair ({s}, {t})", a_s, a_t)
        a_s = a_s.masked_fill(a_s <= MASK_THRESHOLD, 0.0)
        a_t = a_t.masked_fill(a_t <= MASK_THRESHOLD, 0.0)
        term = (a_s - a_t).pow(2).mean()
        loss = term if loss is None else loss + term
    return loss


def pkd_distill(hidden_s: Sequence, hidden_t: Sequence, mapping: Sequence):
    """BERT-PKD patient loss (Sun et al. 2019, "Patient Knowledge Distillation for BERT Model
    Compression", eq. 3)::

        c = h[:, 0]                                   # (N, H) the [CLS] state of a layer
        n(c) = c / max(||c||_2, 1e-12)                # per example
        loss = sum_{(s, t) in mapping} mean_b || n(c_s[s])[b] - n(c_t[t])[b] ||_2^2

    Each term lies in [0, 4]; it is 0 when the two [CLS] states point the same way.

    Args:
        hidden_s: student hidden lists as in the model contract, tensors (N, T, H); the [CLS]
            state ``[:, 0]`` is taken here. Tensors that are already (N, H) [CLS] states (a cached
            teacher export) are used as they are.
        hidden_t: teacher hidden states, same conventions; detached here.
        mapping: (student_index, teacher_index) pairs, e.g. ``pkd_mapping(n_s, n_t, "skip")``.

    Student and teacher widths must match (PKD students are thinner in depth only).
    Returns a scalar tensor. Raises DistillError for a bad mapping or mismatched shapes.
    """
    pairs = validate_mapping(mapping, len(hidden_s), len(hidden_t))
    loss = None
    for s, t in pairs:
        c_s = _cls_state(hidden_s[s], f"student index {s}").float()   # (N, H)
        # slice before detach: OneFlow 0.9 loses a view's storage offset when a detached view is
        # sliced again (t[k].detach()[:, 0] reads t[0]); arithmetic on detached views is fine.
        c_t = _cls_state(hidden_t[t], f"teacher index {t}").detach().float()  # (N, H)
        _same_shape(f"[CLS] pair ({s}, {t})", c_s, c_t)
        n_s = c_s / c_s.norm(dim=-1, keepdim=True).clamp(min=_NORM_EPS)
        n_t = c_t / c_t.norm(dim=-1, keepdim=True).clamp(min=_NORM_EPS)
        term = (n_s - n_t).pow(2).sum(dim=-1).mean()
        loss = term if loss is None else loss + term
    return loss


# ---- mappings (plain Python, used by config validation) -----------------------------------------
def pkd_mapping(n_student: int, n_teacher: int, strategy: str = "skip") -> LayerMap:
    """BERT-PKD layer mapping over the student's intermediate layers k = 1 .. n_student - 1.

    The indices are 1-based layer numbers, i.e. indices into the hidden lists (``hidden[k]`` is
    layer k's output). The student's last layer is left out: the logit loss covers it.

    * ``skip``: teacher layer k * (n_teacher / n_student), every few layers
      (6 of 12: teacher 2, 4, 6, 8, 10; 3 of 6: teacher 2, 4);
    * ``last``: the teacher's last n_student - 1 layers below its top
      (6 of 12: teacher 7 .. 11; 3 of 6: teacher 4, 5).
    """
    _check_depths(n_student, n_teacher, "pkd_mapping")
    if n_student < 2:
        raise DistillError(f"pkd_mapping: a student with {n_student} layer has no intermediate "
                           "layer to distil; PKD needs at least 2 student layers")
    if strategy == "skip":
        if n_teacher % n_student:
            raise DistillError(
                f"pkd_mapping: strategy 'skip' needs the teacher depth ({n_teacher}) to be a "
                f"multiple of the student depth ({n_student}); use 'last' or another student depth")
        step = n_teacher // n_student
        return [(k, k * step) for k in range(1, n_student)]
    if strategy == "last":
        return [(k, n_teacher - n_student + k) for k in range(1, n_student)]
    raise DistillError(f"pkd_mapping: strategy must be 'skip' or 'last', got {strategy!r}")


def uniform_mapping(n_student: int, n_teacher: int, include_embeddings: bool = True) -> LayerMap:
    """TinyBERT's uniform hidden-state mapping m -> g(m) = m * n_teacher / n_student.

    Pairs index the hidden lists (0 = embeddings, k = layer k), for m = 0 .. n_student
    (m = 1 .. n_student when ``include_embeddings`` is False). The last student layer always
    maps to the last teacher layer. When n_teacher is not a multiple of n_student, g(m) is
    rounded down (4 of 6: 0->0, 1->1, 2->3, 3->4, 4->6).
    """
    _check_depths(n_student, n_teacher, "uniform_mapping")
    first = 0 if include_embeddings else 1
    return [(m, (m * n_teacher) // n_student) for m in range(first, n_student + 1)]


def uniform_att_mapping(n_student: int, n_teacher: int) -> LayerMap:
    """TinyBERT's uniform mapping for attention lists (0-based, ``att[k - 1]`` is layer k):
    student layer m = 1 .. n_student pairs ``att_s[m - 1]`` with ``att_t[g(m) - 1]``, where
    g(m) = m * n_teacher / n_student (rounded down; see :func:`uniform_mapping`)."""
    return [(s - 1, t - 1) for s, t in uniform_mapping(n_student, n_teacher, include_embeddings=False)]


def validate_mapping(mapping, n_student_entries: int, n_teacher_entries: int) -> LayerMap:
    """Check a layer mapping against list lengths and return it as a list of int tuples.

    ``mapping`` must be a non-empty sequence of (student_index, teacher_index) pairs of
    non-negative ints with student_index < n_student_entries and teacher_index <
    n_teacher_entries (e.g. L + 1 for hidden lists, L for attention lists). A pair read from YAML
    as a two-item list is accepted. Raises DistillError naming the first bad pair.
    """
    if isinstance(mapping, (str, bytes)) or not isinstance(mapping, Sequence) or len(mapping) == 0:
        raise DistillError(f"layer mapping must be a non-empty list of [student, teacher] pairs, "
                           f"got {mapping!r}")
    pairs = []
    for pair in mapping:
        if (isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2
                or not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in pair)):
            raise DistillError(f"layer mapping entry {pair!r} is not a [student, teacher] pair of "
                               "integers")
        s, t = int(pair[0]), int(pair[1])
        if not 0 <= s < n_student_entries:
            raise DistillError(f"layer mapping pair {[s, t]}: student index {s} is outside "
                               f"0..{n_student_entries - 1}")
        if not 0 <= t < n_teacher_entries:
            raise DistillError(f"layer mapping pair {[s, t]}: teacher index {t} is outside "
                               f"0..{n_teacher_entries - 1}")
        pairs.append((s, t))
    return pairs


# ---- helpers -------------------------------------------------------------------------------------
def _same_shape(what: str, a, b) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise DistillError(f"{what}: student shape {tuple(a.shape)} differs from teacher shape "
                           f"{tuple(b.shape)}")


def _check_depths(n_student: int, n_teacher: int, where: str) -> None:
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1
               for n in (n_student, n_teacher)):
        raise DistillError(f"{where}: layer counts must be positive integers, got student "
                           f"{n_student!r}, teacher {n_teacher!r}")
    if n_student > n_teacher:
        raise DistillError(f"{where}: the student ({n_student} layers) is deeper than the teacher "
                           f"({n_teacher} layers)")


def _cls_state(h, who: str):
    """(N, T, H) -> (N, H) [CLS] state; a (N, H) tensor is already one."""
    if h.dim() == 3:
        return h[:, 0]
    if h.dim() == 2:
        return h
    raise DistillError(f"pkd_distill: {who} must be (N, T, H) or (N, H), got {tuple(h.shape)}")
