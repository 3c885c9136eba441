"""One side of the PyTorch/OneFlow parity check in tests/test_train.py (not collected by pytest).

The PyTorch test calls :func:`run` in-process and this file as a script in the OneFlow runtime::

    .venv-oneflow/bin/python tests/parity_worker.py CHECKPOINT_DIR INPUTS_NPZ OUT_NPZ [BACKEND]

Both sides load the same kdflow checkpoint and inputs (``input_ids``, ``attention_mask``,
``token_type_ids``, ``labels``) and record, with dropout off (``model.eval()``):

* ``logits``, ``hidden.<i>`` (the L + 1 hidden states) and ``attention.<i>`` (the L score tensors);
* ``grad1.<name>``: the gradient of the hard-label cross-entropy for every parameter;
* ``step1.<name>``: the weights after one step of :func:`kdlib.distill.train.make_optimizer` (AdamW,
  lr 1e-3, weight decay 0.1); ``grad2.<name>`` and ``step2.<name>``: the same for a second step
  on the same batch (moments and bias correction carried over).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

LR, WEIGHT_DECAY = 1e-3, 0.1   # lr * wd * |w| ~ 3e-5: weight decay shows above the 1e-5 tolerance


def run(B, checkpoint_dir, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from kdlib.distill import ops, train
    from kdlib.models import checkpoint

    model, _ = checkpoint.load_checkpoint(B, checkpoint_dir)
    model.eval()                                               # dropout off on both sides
    feed = {k: B.tensor(inputs[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}
    labels = B.tensor(inputs["labels"])
    out: dict[str, np.ndarray] = {}

    with B.no_grad():
        result = model(**feed, output_all=True)
    out["logits"] = B.to_numpy(result["logits"])
    for i, h in enumerate(result["hidden"]):
        out[f"hidden.{i}"] = B.to_numpy(h)
    for i, s in enumerate(result["attention"]):
        out[f"attention.{i}"] = B.to_numpy(s)

    cfg = train.TrainConfig.from_dict({"lr": LR, "weight_decay": WEIGHT_DECAY})
    optimizer = train.make_optimizer(B, {"model": model}, cfg, fused=False)   # the same algorithm in both
                                                                               # (fused: tests/test_train.py)
    for step in (1, 2):
        optimizer.zero_grad()
        # the explicit attention path in both libraries (PyTorch's fused kernel is compared with it
        # in tests/test_precision.py): the same formula, evaluated by each library
        loss = ops.hard_loss(B.F, model(**feed, output_all=True)["logits"], labels, regression=False)
        loss.backward()
        if step == 1:
            out["loss"] = np.array(float(loss.item()), np.float32)
        for name, p in model.named_parameters():
            out[f"grad{step}.{name}"] = B.to_numpy(p.grad).copy()
        optimizer.step()
        for name, p in model.named_parameters():
            out[f"step{step}.{name}"] = B.to_numpy(p).copy()
    return out


def main(argv: list[str]) -> int:
    from kdlib import backend

    checkpoint_dir, inputs_path, out_path = argv[:3]
    B = backend.load(argv[3] if len(argv) > 3 else "oneflow", "cpu")
    inputs = dict(np.load(inputs_path))
    np.savez(out_path, **run(B, Path(checkpoint_dir), inputs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
