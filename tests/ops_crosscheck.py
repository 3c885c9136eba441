"""Shared cases for the cross-backend check of kdlib.distill.ops (used by tests/test_ops.py).

``make_inputs(seed)`` builds numpy inputs; ``compute(B, arrays)`` runs every operator on backend
``B`` and returns each loss and its gradient w.r.t. the student inputs as plain lists. The PyTorch
test runs ``compute`` in-process and this file as a script in the OneFlow runtime::

    python tests/ops_crosscheck.py oneflow inputs.npz     # prints one JSON line on stdout
"""
from __future__ import annotations

import json
import sys

import numpy as np

N_S, N_T = 2, 4                  # student / teacher layers
BATCH, SEQ, HEADS = 2, 5, 2
H_S, H_T = 4, 6                  # student / teacher widths (projection case)


def make_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    # key mask: the second example has two padded positions
    keep = np.ones((BATCH, SEQ), np.float32)
    keep[1, -2:] = 0.0
    mask_add = ((1.0 - keep) * -10000.0)[:, None, None, :]            # (N, 1, 1, T)
    return {
        "logits_s": f(BATCH, 3), "logits_t": f(BATCH, 3),
        "reg_s": f(BATCH, 1), "reg_t": f(BATCH, 1),
        "hid_s": f(N_S + 1, BATCH, SEQ, H_T), "hid_t": f(N_T + 1, BATCH, SEQ, H_T),
        "thin_s": f(N_S + 1, BATCH, SEQ, H_S),
        "proj_w": f(H_S, H_T) * 0.5, "proj_b": f(H_T) * 0.1,
        "att_s": f(N_S, BATCH, HEADS, SEQ, SEQ) + mask_add[None],
        "att_t": f(N_T, BATCH, HEADS, SEQ, SEQ) + mask_add[None],
    }


def compute(B, arrays: dict) -> dict[str, dict]:
    """Every operator on backend ``B``: {case: {"loss": float, "grad": nested list}}."""
    from kdlib.distill import ops

    def leaf(name):
        x = B.tensor(arrays[name])
        x.requires_grad_(True)
        return x

    def run(fn, student):
        loss = fn()
        loss.backward()
        return {"loss": float(B.to_numpy(loss)), "grad": B.to_numpy(student.grad).tolist()}

    out = {}
    for T, scale in ((1.0, False), (2.0, True)):
        s, t = leaf("logits_s"), B.tensor(arrays["logits_t"])
        out[f"soft_ce_T{T:g}"] = run(lambda: ops.soft_cross_entropy(s, t, T, scale_t2=scale), s)
    s, t = leaf("reg_s"), B.tensor(arrays["reg_t"])
    out["soft_ce_regression"] = run(lambda: ops.soft_cross_entropy(s, t, regression=True), s)

    hid_mapping = ops.uniform_mapping(N_S, N_T)
    s, t = leaf("hid_s"), B.tensor(arrays["hid_t"])
    out["layer"] = run(lambda: ops.layer_distill(list(s), list(t), hid_mapping), s)
    s, w, b = leaf("thin_s"), B.tensor(arrays["proj_w"]), B.tensor(arrays["proj_b"])
    out["layer_proj"] = run(
        lambda: ops.layer_distill(list(s), list(t), hid_mapping, proj=lambda h: h.matmul(w) + b), s)

    s, t = leaf("att_s"), B.tensor(arrays["att_t"])
    out["att"] = run(lambda: ops.att_distill(list(s), list(t), ops.uniform_att_mapping(N_S, N_T)), s)

    s, t = leaf("hid_s"), B.tensor(arrays["hid_t"])
    out["pkd"] = run(lambda: ops.pkd_distill(list(s), list(t), [(1, 2), (2, 3)]), s)
    return out


def main(argv: list[str]) -> None:
    from kdlib import backend
    name, path = argv
    B = backend.load(name, "cpu")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    print(json.dumps(compute(B, arrays)))


if __name__ == "__main__":
    main(sys.argv[1:])
