"""The one place that chooses the tensor library: OneFlow or PyTorch, behind one surface.

The rest of kdlib is written once against :class:`Backend`: ``B.lib`` is the tensor module
(``oneflow`` or ``torch``), ``B.nn`` its ``nn``, ``B.F`` its ``nn.functional``. Both share the same
API for everything kdlib uses; where OneFlow 0.9 differs, the difference is absorbed here.

``backend: auto`` picks OneFlow where a CUDA GPU is visible and PyTorch otherwise, because OneFlow's
CPU kernels are about 8x slower than PyTorch's (DESIGN.md section 1).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import importlib.util
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from .errors import BackendUnavailable, ConfigError

BACKENDS = ("auto", "oneflow", "torch")
DEVICES = ("auto", "cpu", "cuda")

# OneFlow 0.9.0 is a CUDA 11.7 build: its import needs cuDNN 8 and cuBLAS 11, which the PyPI wheels
# nvidia-cudnn-cu11 and nvidia-cublas-cu11 install under site-packages/nvidia/.
_NVIDIA_LIBS = ("cublas/lib/libcublasLt.so.11", "cublas/lib/libcublas.so.11", "cudnn/lib/libcudnn*.so.8")


def cuda_visible() -> bool:
    """True when the machine shows an NVIDIA GPU, found without importing any tensor library."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def oneflow_installed() -> bool:
    return importlib.util.find_spec("oneflow") is not None


def resolve(name: str = "auto", oneflow_available: bool | None = None) -> str:
    """Turn ``auto | oneflow | torch`` into a concrete backend name, without importing it.

    ``oneflow_available`` says whether the OneFlow runtime exists; by default, whether this
    interpreter can import it.
    """
    if name not in BACKENDS:
        raise ConfigError(f"backend: {name!r} is not one of {', '.join(BACKENDS)}")
    if name != "auto":
        return name
    if oneflow_available is None:
        oneflow_available = oneflow_installed()
    return "oneflow" if oneflow_available and cuda_visible() else "torch"


def _preload_nvidia_libraries() -> None:
    """dlopen cuDNN/cuBLAS from the nvidia wheels with RTLD_GLOBAL so ``import oneflow`` finds them."""
    for site in sys.path:
        base = Path(site) / "nvidia"
        if not base.is_dir():
            continue
        for pattern in _NVIDIA_LIBS:
            for lib in sorted(glob.glob(str(base / pattern))):
                ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
        return


def _import(name: str):
    if name == "torch":
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailable(
                f"backend 'torch' is not installed in {sys.executable} ({exc}); "
                "run the stage with .venv/bin/python, or 'make setup'") from None
        return torch
    if not oneflow_installed():
        raise BackendUnavailable(
            f"backend 'oneflow' is not installed in {sys.executable}; run 'make setup' to build "
            ".venv-oneflow (needs CPython 3.10) and run the stage with .venv-oneflow/bin/python, "
            "or choose backend: torch")
    _preload_nvidia_libraries()
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        import oneflow
    return oneflow


class Backend:
    """A tensor library, a device and the handful of helpers kdlib needs around them."""

    def __init__(self, name: str, device: str = "auto"):
        if device not in DEVICES:
            raise ConfigError(f"device: {device!r} is not one of {', '.join(DEVICES)}")
        self.name = name
        self.lib = _import(name)
        self.nn = self.lib.nn
        self.F = self.lib.nn.functional
        has_cuda = bool(self.lib.cuda.is_available())
        if device == "cuda" and not has_cuda:
            raise BackendUnavailable(f"device: cuda was asked for, but {name} sees no CUDA GPU")
        self.device_name = "cuda" if device == "cuda" or (device == "auto" and has_cuda) else "cpu"
        self.device = self.lib.device(self.device_name)
        self.float32 = self.lib.float32
        self.int64 = self.lib.int64

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device_name!r})"

    # ---- tensors <-> numpy -------------------------------------------------------------------
    def tensor(self, array, dtype=None):
        """A tensor on this backend's device from a numpy array (ints become int64)."""
        array = np.asarray(array)
        if dtype is None:
            if array.dtype.kind in "iub":
                array = array.astype(np.int64)
            elif array.dtype.kind == "f":
                array = array.astype(np.float32)
        return self.lib.tensor(array, dtype=dtype, device=self.device)

    @staticmethod
    def to_numpy(t) -> np.ndarray:
        return t.detach().cpu().numpy()

    # ---- determinism -------------------------------------------------------------------------
    def seed(self, seed: int) -> None:
        """Seed Python, numpy and the tensor library."""
        random.seed(seed)
        np.random.seed(seed % 2**32)
        self.lib.manual_seed(seed)

    def generator(self, seed: int):
        """A private random generator on the CPU (dropout and sampling that resume exactly)."""
        g = self.lib.Generator()
        g.manual_seed(seed)
        return g

    def get_rng_state(self) -> dict:
        return {"python": random.getstate(), "numpy": np.random.get_state(),
                "lib": self.to_numpy(self.lib.get_rng_state())}

    def set_rng_state(self, state: dict) -> None:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        self.lib.set_rng_state(self.lib.tensor(state["lib"]))

    def no_grad(self):
        return self.lib.no_grad()

    def set_num_threads(self, n: int) -> None:
        if hasattr(self.lib, "set_num_threads"):
            self.lib.set_num_threads(max(1, int(n)))


@functools.lru_cache(maxsize=None)
def load(name: str = "auto", device: str = "auto") -> Backend:
    """The backend for ``name`` (resolving ``auto``) on ``device``; cached per process."""
    return Backend(resolve(name), device)
