"""kdlib.distill.ops: golden values against numpy, gradients, masking, mappings and backend agreement.

Runs in both runtimes: the backend fixture picks PyTorch in .venv and OneFlow in .venv-oneflow.
References are computed independently in float64 numpy; the backends compute in float32.
Teacher lists are built as views of one stacked tensor on purpose (that is how cached teacher
states arrive, and OneFlow 0.9 mishandles sliced detached views).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import kdlib.backend
from kdlib.distill import ops
from kdlib.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
ONEFLOW_PYTHON = ROOT / ".venv-oneflow" / "bin" / "python"
RTOL, ATOL = 1e-5, 1e-6              # float32 forward vs float64 numpy
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-6    # float32 autograd vs float64 central differences


def _crosscheck_module():
    spec = importlib.util.spec_from_file_location("ops_crosscheck", ROOT / "tests" / "ops_crosscheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def B():
    if importlib.util.find_spec("torch") is not None:
        return kdlib.backend.load("torch", "cpu")
    if kdlib.backend.oneflow_installed():
        return kdlib.backend.load("oneflow", "cpu")
    pytest.skip("neither torch nor oneflow is installed in this interpreter")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def leaf(B, array):
    x = B.tensor(array)
    x.requires_grad_(True)
    return x


def value(B, t) -> float:
    return float(B.to_numpy(t))


# ---- numpy references (float64) -----------------------------------------------------------------
def np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def np_soft_ce(s, t, T=1.0, scale=False):
    p_t = np.exp(np_log_softmax(t / T))
    loss = -(p_t * np_log_softmax(s / T)).sum(axis=-1).mean()
    return loss * T * T if scale else loss


def np_layer(hs, ht, mapping, w=None, b=None):
    total = 0.0
    for s, t in mapping:
        h = hs[s] if w is None else hs[s] @ w + b
        total += ((h - ht[t]) ** 2).mean()
    return total


def np_att(as_, at, mapping):
    total = 0.0
    for s, t in mapping:
        a = np.where(as_[s] <= -1e2, 0.0, as_[s])
        b = np.where(at[t] <= -1e2, 0.0, at[t])
        total += ((a - b) ** 2).mean()
    return total


def np_pkd(hs, ht, mapping):
    total = 0.0
    for s, t in mapping:
        a, b = hs[s][:, 0], ht[t][:, 0]
        a = a / np.linalg.norm(a, axis=-1, keepdims=True)
        b = b / np.linalg.norm(b, axis=-1, keepdims=True)
        total += ((a - b) ** 2).sum(axis=-1).mean()
    return total


def numeric_grad(f, x, eps=1e-6):
    """Central differences of scalar f at float64 array x."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        down = f(x)
        x[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


def masked_scores(rng, n_layers, batch=2, heads=2, seq=4, pad=1):
    """Pre-softmax scores (L, B, nh, T, T) with the last `pad` keys of example 1 masked."""
    scores = rng.standard_normal((n_layers, batch, heads, seq, seq))
    add = np.zeros((batch, seq))
    add[1, seq - pad:] = ops.MASK_VALUE
    return scores + add[None, :, None, None, :]


# ---- soft_cross_entropy ---------------------------------------------------------------------------
@pytest.mark.parametrize("T, scale", [(1.0, False), (2.0, False), (4.0, True)])
def test_soft_ce_matches_numpy(B, rng, T, scale):
    s, t = rng.standard_normal((3, 5)), rng.standard_normal((3, 5)) * 2
    got = value(B, ops.soft_cross_entropy(B.tensor(s), B.tensor(t), T, scale_t2=scale))
    np.testing.assert_allclose(got, np_soft_ce(s, t, T, scale), rtol=RTOL, atol=ATOL)


def test_soft_ce_hand_values(B):
    # uniform student: -sum_c p_t,c * log(1/C) = log C for any teacher
    t = B.tensor(np.array([[3.0, -1.0, 0.5, 2.0]]))
    s = B.tensor(np.zeros((1, 4)))
    np.testing.assert_allclose(value(B, ops.soft_cross_entropy(s, t)), np.log(4.0), rtol=RTOL)
    # one-hot-like teacher (T = 1): loss = -log_softmax(s)[argmax]
    t = B.tensor(np.array([[0.0, 50.0]]))
    s = B.tensor(np.array([[0.0, 0.0]]))
    np.testing.assert_allclose(value(B, ops.soft_cross_entropy(s, t)), np.log(2.0), rtol=RTOL)


def test_soft_ce_t2_scaling(B, rng):
    s, t = B.tensor(rng.standard_normal((4, 3))), B.tensor(rng.standard_normal((4, 3)))
    plain = value(B, ops.soft_cross_entropy(s, t, temperature=3.0))
    scaled = value(B, ops.soft_cross_entropy(s, t, temperature=3.0, scale_t2=True))
    np.testing.assert_allclose(scaled, 9.0 * plain, rtol=RTOL)


def test_soft_ce_regression_is_mse_and_ignores_temperature(B, rng):
    s, t = rng.standard_normal((5, 1)), rng.standard_normal((5, 1))
    want = ((s - t) ** 2).mean()
    for T, scale in ((1.0, False), (5.0, True)):
        got = ops.soft_cross_entropy(B.tensor(s), B.tensor(t), T, scale_t2=scale, regression=True)
        np.testing.assert_allclose(value(B, got), want, rtol=RTOL, atol=ATOL)


def test_soft_ce_errors(B):
    with pytest.raises(ops.DistillError, match="shape"):
        ops.soft_cross_entropy(B.tensor(np.zeros((2, 3))), B.tensor(np.zeros((2, 4))))
    with pytest.raises(ops.DistillError, match="temperature"):
        ops.soft_cross_entropy(B.tensor(np.zeros((2, 3))), B.tensor(np.zeros((2, 3))), temperature=0.0)


# ---- layer_distill --------------------------------------------------------------------------------
def test_layer_distill_matches_numpy(B, rng):
    hs, ht = rng.standard_normal((3, 2, 4, 5)), rng.standard_normal((5, 2, 4, 5))
    mapping = [(0, 0), (1, 2), (2, 4)]
    got = ops.layer_distill(list(B.tensor(hs)), list(B.tensor(ht)), mapping)
    np.testing.assert_allclose(value(B, got), np_layer(hs, ht, mapping), rtol=RTOL, atol=ATOL)


def test_layer_distill_projection(B, rng):
    hs, ht = rng.standard_normal((2, 2, 3, 4)), rng.standard_normal((3, 2, 3, 6))
    mapping = [(0, 0), (1, 2)]
    B.seed(0)
    proj = B.nn.Linear(4, 6)
    w, b = B.to_numpy(proj.weight).astype(np.float64).T, B.to_numpy(proj.bias).astype(np.float64)
    loss = ops.layer_distill(list(B.tensor(hs)), list(B.tensor(ht)), mapping, proj=proj)
    np.testing.assert_allclose(value(B, loss), np_layer(hs, ht, mapping, w, b), rtol=RTOL, atol=ATOL)
    loss.backward()
    assert proj.weight.grad is not None and float(B.to_numpy(proj.weight.grad.abs().sum())) > 0


def test_layer_distill_width_mismatch_needs_proj(B):
    hs, ht = B.tensor(np.zeros((2, 1, 3, 4))), B.tensor(np.zeros((2, 1, 3, 6)))
    with pytest.raises(ValueError, match="pass proj"):
        ops.layer_distill(list(hs), list(ht), [(1, 1)])


# ---- att_distill ----------------------------------------------------------------------------------
def test_att_distill_matches_numpy(B, rng):
    as_, at = masked_scores(rng, 2), masked_scores(rng, 4)
    mapping = ops.uniform_att_mapping(2, 4)
    got = ops.att_distill(list(B.tensor(as_)), list(B.tensor(at)), mapping)
    np.testing.assert_allclose(value(B, got), np_att(as_, at, mapping), rtol=RTOL, atol=ATOL)


def test_att_distill_excludes_masked_positions(B, rng):
    as_, at = masked_scores(rng, 1), masked_scores(rng, 1)
    base = value(B, ops.att_distill(list(B.tensor(as_)), list(B.tensor(at)), [(0, 0)]))
    masked = as_ <= -1e2
    assert masked.any()
    moved = as_.copy()
    moved[masked] += rng.uniform(-500.0, 500.0, size=masked.sum())      # still masked
    after = value(B, ops.att_distill(list(B.tensor(moved)), list(B.tensor(at)), [(0, 0)]))
    assert after == pytest.approx(base, rel=1e-6)
    # the same change on unmasked entries does move the loss (the check above can fail)
    moved = as_.copy()
    moved[~masked] += 1.0
    after = value(B, ops.att_distill(list(B.tensor(moved)), list(B.tensor(at)), [(0, 0)]))
    assert abs(after - base) > 1e-3
    # and without masking the -10000 entries would dominate: the loss stays O(1)
    assert base < 10.0


def test_att_distill_head_mismatch(B):
    a2, a4 = B.tensor(np.zeros((1, 2, 2, 3, 3))), B.tensor(np.zeros((1, 2, 4, 3, 3)))
    with pytest.raises(ValueError, match="heads"):
        ops.att_distill(list(a2), list(a4), [(0, 0)])


# ---- pkd_distill ----------------------------------------------------------------------------------
def test_pkd_distill_matches_numpy(B, rng):
    hs, ht = rng.standard_normal((3, 4, 3, 5)), rng.standard_normal((7, 4, 3, 5))
    mapping = ops.pkd_mapping(3, 6, "skip")
    got = ops.pkd_distill(list(B.tensor(hs)), list(B.tensor(ht)), mapping)
    np.testing.assert_allclose(value(B, got), np_pkd(hs, ht, mapping), rtol=RTOL, atol=ATOL)


def test_pkd_distill_hand_values_and_invariances(B, rng):
    # orthogonal unit [CLS] states: ||e1 - e2||^2 = 2 per pair; other positions are ignored
    hs, ht = np.zeros((2, 1, 3, 2)), np.zeros((2, 1, 3, 2))
    hs[:, 0, 0] = [1.0, 0.0]
    ht[:, 0, 0] = [0.0, 3.0]
    hs[:, 0, 1:] = rng.standard_normal((2, 2, 2))
    got = ops.pkd_distill(list(B.tensor(hs)), list(B.tensor(ht)), [(0, 0), (1, 1)])
    np.testing.assert_allclose(value(B, got), 4.0, rtol=RTOL)
    # scale invariance, and cached (N, H) [CLS] states give the same loss as (N, T, H) lists
    hs, ht = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((3, 3, 4, 5))
    base = value(B, ops.pkd_distill(list(B.tensor(hs)), list(B.tensor(ht)), [(1, 2)]))
    scaled = value(B, ops.pkd_distill(list(B.tensor(hs * 7.0)), list(B.tensor(ht)), [(1, 2)]))
    cached = value(B, ops.pkd_distill(list(B.tensor(hs)), list(B.tensor(ht[:, :, 0])), [(1, 2)]))
    np.testing.assert_allclose([scaled, cached], [base, base], rtol=RTOL)


# ---- gradients ------------------------------------------------------------------------------------
def _grad_cases(rng):
    s, t = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    rs, rt = rng.standard_normal((3, 1)), rng.standard_normal((3, 1))
    hs, ht = rng.standard_normal((2, 2, 3, 3)), rng.standard_normal((3, 2, 3, 3))
    as_, at = masked_scores(rng, 1, seq=3), masked_scores(rng, 2, seq=3)
    ps, pt = rng.standard_normal((2, 2, 2, 3)), rng.standard_normal((3, 2, 2, 3))
    return {
        # name: (student array, teacher array, backend loss, numpy loss of the student array)
        "soft_ce": (s, t, lambda a, b: ops.soft_cross_entropy(a, b, 2.0, scale_t2=True),
                    lambda x: np_soft_ce(x, t, 2.0, True)),
        "regression": (rs, rt, lambda a, b: ops.soft_cross_entropy(a, b, regression=True),
                       lambda x: ((x - rt) ** 2).mean()),
        "layer": (hs, ht, lambda a, b: ops.layer_distill(list(a), list(b), [(0, 0), (1, 2)]),
                  lambda x: np_layer(x, ht, [(0, 0), (1, 2)])),
        "att": (as_, at, lambda a, b: ops.att_distill(list(a), list(b), [(0, 1)]),
                lambda x: np_att(x, at, [(0, 1)])),
        "pkd": (ps, pt, lambda a, b: ops.pkd_distill(list(a), list(b), [(1, 2)]),
                lambda x: np_pkd(x, pt, [(1, 2)])),
    }


@pytest.mark.parametrize("name", ["soft_ce", "regression", "layer", "att", "pkd"])
def test_gradients_match_finite_differences_and_spare_the_teacher(B, name):
    student, teacher, loss_fn, np_loss = _grad_cases(np.random.default_rng(7))[name]
    s, t = leaf(B, student), leaf(B, teacher)
    loss_fn(s, t).backward()
    want = numeric_grad(np_loss, student)
    if name == "att":   # a masked score gets exactly no gradient
        assert np.all(want[student <= -1e2] == 0.0)
    np.testing.assert_allclose(B.to_numpy(s.grad), want, rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert np.abs(want).sum() > 0
    assert t.grad is None


# ---- mappings -------------------------------------------------------------------------------------
def test_pkd_mappings():
    assert ops.pkd_mapping(6, 12, "skip") == [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10)]
    assert ops.pkd_mapping(6, 12, "last") == [(1, 7), (2, 8), (3, 9), (4, 10), (5, 11)]
    assert ops.pkd_mapping(3, 6, "skip") == [(1, 2), (2, 4)]
    assert ops.pkd_mapping(3, 6, "last") == [(1, 4), (2, 5)]
    assert ops.pkd_mapping(4, 6, "last") == [(1, 3), (2, 4), (3, 5)]


def test_uniform_mappings():
    assert ops.uniform_mapping(3, 6) == [(0, 0), (1, 2), (2, 4), (3, 6)]
    assert ops.uniform_mapping(4, 12, include_embeddings=False) == [(1, 3), (2, 6), (3, 9), (4, 12)]
    assert ops.uniform_mapping(4, 6) == [(0, 0), (1, 1), (2, 3), (3, 4), (4, 6)]
    assert ops.uniform_mapping(6, 6) == [(k, k) for k in range(7)]
    assert ops.uniform_att_mapping(3, 6) == [(0, 1), (1, 3), (2, 5)]
    assert ops.uniform_att_mapping(4, 12) == [(0, 2), (1, 5), (2, 8), (3, 11)]


@pytest.mark.parametrize("call, message", [
    (lambda: ops.pkd_mapping(4, 6, "skip"), "multiple of the student depth"),
    (lambda: ops.pkd_mapping(8, 6, "last"), "deeper than the teacher"),
    (lambda: ops.pkd_mapping(1, 6, "last"), "at least 2"),
    (lambda: ops.pkd_mapping(3, 6, "middle"), "'skip' or 'last'"),
    (lambda: ops.uniform_mapping(7, 6), "deeper than the teacher"),
    (lambda: ops.uniform_att_mapping(0, 6), "positive integers"),
])
def test_mapping_builder_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_validate_mapping():
    assert ops.validate_mapping([[0, 0], [3, 6]], 4, 7) == [(0, 0), (3, 6)]
    with pytest.raises(ValueError, match=r"pair \[4, 6\]: student index 4 is outside 0..3"):
        ops.validate_mapping([(1, 2), (4, 6)], 4, 7)
    with pytest.raises(ValueError, match=r"pair \[1, 7\]: teacher index 7 is outside 0..6"):
        ops.validate_mapping([(1, 7)], 4, 7)
    with pytest.raises(ValueError, match="not a .student, teacher. pair"):
        ops.validate_mapping([(1, 2, 3)], 4, 7)
    with pytest.raises(ValueError, match="non-empty"):
        ops.validate_mapping([], 4, 7)
    # config code can catch it as a user-facing ConfigError too
    with pytest.raises(ConfigError):
        ops.validate_mapping([(-1, 0)], 4, 7)


def test_operators_check_their_mapping(B):
    h = list(B.tensor(np.zeros((3, 1, 2, 4))))
    with pytest.raises(ValueError, match="teacher index 3"):
        ops.layer_distill(h, h, [(0, 3)])
    with pytest.raises(ValueError, match="student index 5"):
        ops.pkd_distill(h, h, [(5, 0)])


# ---- PyTorch and OneFlow agree ----------------------------------------------------------------------
@pytest.mark.oneflow
def test_torch_and_oneflow_agree(tmp_path):
    pytest.importorskip("torch")
    if not ONEFLOW_PYTHON.exists():
        pytest.skip(f"{ONEFLOW_PYTHON} is missing (run 'make setup' to build the OneFlow runtime)")
    cases = _crosscheck_module()
    arrays = cases.make_inputs(seed=0)
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **arrays)
    torch_out = cases.compute(kdlib.backend.load("torch", "cpu"), arrays)
    proc = subprocess.run([str(ONEFLOW_PYTHON), str(ROOT / "tests" / "ops_crosscheck.py"), "oneflow",
                           str(inputs)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    oneflow_out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(oneflow_out) == sorted(torch_out)
    for name in torch_out:
        np.testing.assert_allclose(oneflow_out[name]["loss"], torch_out[name]["loss"],
                                   rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(np.array(oneflow_out[name]["grad"]), np.array(torch_out[name]["grad"]),
                                   rtol=1e-5, atol=1e-5, err_msg=name)
