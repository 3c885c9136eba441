"""The one place that chooses the tensor library: OneFlow or PyTorch, behind one surface.

The rest of kdlib is written once against :class:`Backend`: ``B.lib`` is the tensor module
(``oneflow`` or ``torch``), ``B.nn`` its ``nn``, ``B.F`` its ``nn.functional``. Both share the same
API for everything kdlib uses; where OneFlow 0.9 differs, the difference is absorbed here.

``backend: auto`` picks OneFlow where a CUDA GPU is visible and PyTorch otherwise, because OneFlow's
CPU kernels are about 8x slower than PyTorch's (docs/architecture.md, "Two runtimes").

Data-parallel training: a process started by ``torchrun`` or ``oneflow.distributed.launch`` finds
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment; ``B.rank`` and ``B.world_size`` come
from there (0 and 1 without them, and then every distributed method below is a no-op).
``B.dist_init()`` joins the process group, ``B.wrap_ddp(module)`` wraps a module so that its
gradients are averaged over the processes, ``B.sync_grads(params)`` finishes what the wrapper left
to do, ``B.barrier()`` waits for every process and ``B.mean_over_ranks(x)`` averages a number.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime
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
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

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


def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 natively (``avx512_bf16`` or AMX in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cuda_capability() -> tuple[int, int] | None:
    """The first visible GPU's compute capability from ``nvidia-smi``, without a tensor library."""
    smi = shutil.which("nvidia-smi")
    if smi is None or not cuda_visible():
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        major, minor = out.stdout.split()[0].split(".")
        return int(major), int(minor)
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def choose_precision(requested: str, backend: str, cuda: bool,
                     capability: tuple[int, int] | None, bf16_cpu: bool) -> tuple[str, str]:
    """``(precision, why)`` for ``precision: requested`` on ``backend``, on a CUDA GPU of
    ``capability`` or on a CPU with (``bf16_cpu``) or without native bf16.

    ``auto`` is bf16 where the device computes it natively (a CUDA GPU of compute capability 8.0
    or newer, a CPU with avx512_bf16 or AMX under PyTorch), fp16 on an older CUDA GPU, fp32
    otherwise. OneFlow 0.9 has no CPU bf16 kernels worth using, so ``auto`` gives fp32 there and
    an explicit ``bf16`` is an error; fp16 needs a CUDA GPU. Every choice is mixed precision: fp32
    master weights, the library's autocast for the forward and the losses."""
    if requested not in PRECISIONS:
        raise ConfigError(f"precision: {requested!r} is not one of {', '.join(PRECISIONS)}")
    cap = f"{capability[0]}.{capability[1]}" if capability else "unknown"
    if requested == "auto":
        if cuda:
            if capability and capability >= (8, 0):
                return "bf16", f"auto: a CUDA GPU of compute capability {cap} computes bf16 natively"
            return "fp16", f"auto: a CUDA GPU of compute capability {cap} has no native bf16"
        if backend == "oneflow":
            return "fp32", "auto: OneFlow 0.9 has no CPU bf16 kernels worth using"
        if bf16_cpu:
            return "bf16", "auto: this CPU computes bf16 natively (avx512_bf16 or AMX)"
        return "fp32", "auto: this CPU has no native bf16"
    if requested == "fp16" and not cuda:
        raise ConfigError("precision: fp16 mixed precision needs a CUDA GPU; on the CPU use bf16 "
                          "(native on CPUs with avx512_bf16 or AMX) or fp32")
    if requested == "bf16" and not cuda and backend == "oneflow":
        raise ConfigError("precision: bf16 on the CPU is not available with backend: oneflow "
                          "(OneFlow 0.9 has no CPU bf16 kernels worth using); use precision: fp32 "
                          "or auto, or backend: torch")
    note = ""
    if requested == "bf16" and not cuda and not bf16_cpu:
        note = " (this CPU has no native bf16: expect it slower than fp32)"
    elif requested == "bf16" and cuda and not (capability and capability >= (8, 0)):
        note = f" (compute capability {cap} has no native bf16)"
    return requested, f"asked for{note}"


def on_cuda(device: str) -> bool:
    """Whether ``device: auto | cpu | cuda`` means a CUDA GPU here, found without importing a
    tensor library."""
    return device == "cuda" or (device == "auto" and cuda_visible())


def resolve_precision(requested: str, backend: str, device: str) -> str:
    """The concrete precision of ``precision: requested`` for ``backend`` on ``device``, decided
    without importing a tensor library (the Snakefile uses it, like :func:`resolve`)."""
    cuda = on_cuda(device)
    capability = cuda_capability() if cuda else None
    return choose_precision(requested, backend, cuda, capability, cpu_has_bf16())[0]


def dist_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` as torchrun and oneflow.distributed.launch set them in the
    environment; ``(0, 1, 0)`` for a process started alone (importing OneFlow alone sets
    ``WORLD_SIZE=1`` and ``RANK=-1``)."""
    try:
        rank, world, local = (int(os.environ.get(k, d)) for k, d in
                              (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if world == 1:
        return 0, 1, 0
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} does not fit WORLD_SIZE={world}")
    return rank, world, local


def usable_cpus() -> int:
    """The CPUs this process may really use: its CPU affinity (what a Slurm allocation, taskset or
    a container's cpuset leaves it), and no more than ``SLURM_CPUS_PER_TASK`` where Slurm sets it
    (a value that is not a positive integer is ignored). Not ``os.cpu_count()``: that counts the
    whole node."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):       # no affinity on this platform
        n = os.cpu_count() or 1
    try:
        slurm = int(os.environ.get("SLURM_CPUS_PER_TASK", ""))
    except ValueError:
        slurm = 0
    if slurm > 0:
        n = min(n, slurm)
    return max(1, n)


def processes_here() -> int:
    """How many processes of this job share this machine's allocation: the launcher's
    ``LOCAL_WORLD_SIZE`` (torchrun), else ``WORLD_SIZE`` (OneFlow's launcher, one node), else 1."""
    for key in ("LOCAL_WORLD_SIZE", "WORLD_SIZE"):
        try:
            n = int(os.environ.get(key, ""))
        except ValueError:
            continue
        if n > 0:
            return n
    return 1


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

    def __init__(self, name: str, device: str = "auto", precision: str = "fp32"):
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
        self.rank, self.world_size, self.local_rank = dist_env()
        # one GPU per process: the launcher's LOCAL_RANK picks it
        self.device = self.lib.device(f"cuda:{self.local_rank}" if self.device_name == "cuda"
                                      and self.world_size > 1 else self.device_name)
        self._dist_ready = self.world_size == 1
        cuda = self.device_name == "cuda"
        capability = tuple(self.lib.cuda.get_device_capability()) if cuda and hasattr(
            self.lib.cuda, "get_device_capability") else (cuda_capability() if cuda else None)
        self.precision, self.precision_reason = choose_precision(precision, name, cuda, capability,
                                                                 cpu_has_bf16())

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device_name!r}, precision={self.precision!r})"

    # ---- mixed precision ---------------------------------------------------------------------
    def autocast(self):
        """The library's autocast for a forward pass and its losses in the run's precision (a
        no-op in fp32). Weights, optimizer state and checkpoints stay fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = self.lib.bfloat16 if self.precision == "bf16" else self.lib.float16
        return self.lib.autocast(self.device_name, dtype=dtype)

    def grad_scaler(self):
        """A gradient scaler for fp16 (whose small gradients would underflow); None otherwise."""
        if self.precision != "fp16":
            return None
        if self.name == "torch":
            return self.lib.amp.GradScaler("cuda")
        return self.lib.amp.GradScaler()

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

    def no_grad(self):
        return self.lib.no_grad()

    def set_num_threads(self, n: int) -> None:
        if hasattr(self.lib, "set_num_threads"):
            self.lib.set_num_threads(max(1, int(n)))

    # ---- data-parallel training --------------------------------------------------------------
    def dist_init(self) -> None:
        """Join the process group the launcher set up (idempotent; nothing for one process).

        torch: ``init_process_group`` from the environment (``env://``), NCCL on GPUs and gloo on
        the CPU, with one hour of patience (rank 0 evaluates while the others wait). OneFlow joins
        its group when imported with the launcher's environment; this checks it did."""
        if self._dist_ready:
            return
        if self.name == "torch":
            dist = self.lib.distributed
            if not dist.is_initialized():
                if self.device_name == "cuda":
                    self.lib.cuda.set_device(self.local_rank)
                dist.init_process_group("nccl" if self.device_name == "cuda" else "gloo",
                                        timeout=datetime.timedelta(hours=1))
                atexit.register(dist.destroy_process_group)
        elif self.lib.env.get_world_size() != self.world_size:
            raise BackendUnavailable(
                f"oneflow sees {self.lib.env.get_world_size()} processes, the environment says "
                f"WORLD_SIZE={self.world_size}; start training with python -m oneflow.distributed.launch")
        self._dist_ready = True

    def wrap_ddp(self, module):
        """``module`` with its gradients averaged over the processes: ``grad = (1/W) sum_r grad_r``.

        torch: ``DistributedDataParallel`` (buckets all-reduced while backward runs;
        ``find_unused_parameters`` because recipes such as Theseus and TinyBERT leave some
        parameters out of some steps). The loss must come out of the wrapper's ``forward``.
        OneFlow: the module itself, with rank 0's parameters broadcast; :meth:`sync_grads`
        averages the gradients after backward. (OneFlow 0.9's ``DistributedDataParallel`` hooks the
        parameters for good: a second wrap, as a recipe's second phase needs, averages twice, and a
        parameter frozen when wrapped never syncs once thawed.)
        """
        if self.world_size == 1:
            return module
        self.dist_init()
        if self.name == "torch":
            ids = [self.local_rank] if self.device_name == "cuda" else None
            return self.nn.parallel.DistributedDataParallel(
                module, device_ids=ids, find_unused_parameters=True)
        with self.no_grad():
            for p in module.parameters():
                self.lib.comm.broadcast(p, 0)
        return module

    def sync_grads(self, params: list) -> None:
        """Average the gradients of ``params`` over the processes where :meth:`wrap_ddp` did not
        (OneFlow): one all-reduce of a flat buffer ``[grads..., present]``. A parameter without a
        gradient on every process keeps none (as torch's DDP does); one with a gradient elsewhere
        gets zeros here first."""
        if self.world_size == 1 or self.name == "torch":
            return
        lib = self.lib
        flat = [p.grad.reshape(-1) if p.grad is not None else lib.zeros(p.numel(), device=p.device)
                for p in params]
        present = self.tensor(np.array([p.grad is not None for p in params], np.float32))
        buffer = lib.cat(flat + [present])                       # (sum numel + P,)
        lib.comm.all_reduce(buffer)
        counts = self.to_numpy(buffer[-len(params):])
        offset = 0
        with self.no_grad():
            for p, count in zip(params, counts):
                n = p.numel()
                if count > 0:
                    grad = buffer[offset:offset + n].reshape(p.shape) * (1.0 / self.world_size)
                    if p.grad is None:
                        p.grad = grad
                    else:
                        p.grad.copy_(grad)
                offset += n

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world_size == 1:
            return
        self.dist_init()
        if self.name == "torch":
            self.lib.distributed.barrier()
        else:
            self.lib.comm.barrier()

    def mean_over_ranks(self, value: float) -> float:
        """The mean of ``value`` over the processes (``value`` itself for one process)."""
        if self.world_size == 1:
            return float(value)
        self.dist_init()
        t = self.tensor(np.array([value], np.float32))
        if self.name == "torch":
            self.lib.distributed.all_reduce(t)
        else:
            self.lib.comm.all_reduce(t)
        return float(self.to_numpy(t)[0]) / self.world_size


@functools.lru_cache(maxsize=None)
def load(name: str = "auto", device: str = "auto", precision: str = "fp32") -> Backend:
    """The backend for ``name`` (resolving ``auto``) on ``device`` in ``precision``; cached per
    process."""
    return Backend(resolve(name), device, precision)
