"""``compile: auto | true | false``: whether a training job runs its models through ``torch.compile``.

Compiling fuses a model's small operations (dropout masks, GELU, LayerNorm, the bf16 casts) into
fewer kernels: each step is faster, but the first steps pay the compilation, and the switch to
evaluation for validation pays it again. Whether that pays back depends on the model's size, the
device and the job's length, so ``auto`` decides from figures measured by
``bench/bench_compile.py`` (BENCHMARKS.md, "Compiled training"): it compiles a job when its steps
exceed the measured break-even of its model family on its device, and never where nothing was
measured. OneFlow keeps its eager path: it has no ``torch.compile``.
"""
from __future__ import annotations

import sys

from ..errors import ConfigError

CHOICES = ("auto", "true", "false")

# Steps after which compiling pays back, per (device, model family), from bench/bench_compile.py
# (BENCHMARKS.md, "Compiled training": one thread per job, bf16, batch 32, real tweet batches).
# None: it never pays back there. On the CPU every BERT size of the default ran slower compiled
# (0.89x to 0.92x), and the BiLSTM gained 5% after 20 s of compilation. No GPU was measured, so
# auto stays eager on CUDA.
BREAK_EVEN_STEPS: dict[tuple[str, str], int | None] = {
    ("cpu", "bert"): None,
    ("cpu", "bilstm"): 2941,
}


def parse(value) -> str:
    """``compile`` as one of :data:`CHOICES` (YAML gives true/false as booleans)."""
    text = {True: "true", False: "false"}.get(value, value)
    if text not in CHOICES:
        raise ConfigError(f"compile: {value!r} is not one of {', '.join(CHOICES)}")
    return text


def should_compile(setting, backend: str, device: str, family: str, steps: int) -> bool:
    """Whether a job of ``steps`` steps training a ``family`` model (``bert`` | ``bilstm``) on
    ``backend``/``device`` compiles, under ``compile: setting``."""
    setting = parse(setting)
    if backend != "torch" or setting == "false":
        return False
    if setting == "true":
        return True
    even = BREAK_EVEN_STEPS.get((device, family))
    return even is not None and steps > even


def apply(setting, B, model, family: str, steps: int) -> bool:
    """Compile ``model`` when :func:`should_compile` says so for a job of ``steps`` steps on
    ``B``; returns whether it did (a setting that changes the numbers: the job records it)."""
    compiled = should_compile(setting, B.name, B.device_name, family, steps)
    if compiled:
        compile_model(B, model)
    return compiled


def compile_model(B, model) -> None:
    """Run ``model``'s forward through ``torch.compile`` (dynamic shapes: batches are trimmed to
    their longest example, so lengths vary); its parameters, state dict and checkpoints stay the
    module's own. A no-op on OneFlow."""
    if B.name != "torch":
        return
    model.forward = B.lib.compile(model.forward, dynamic=True)
    print(f"compile: {type(model).__name__} compiled with torch.compile (dynamic shapes)", file=sys.stderr)
