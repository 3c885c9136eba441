"""Shared plumbing for stage scripts: user mistakes end as one ``error:`` line, not a traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable

from kdlib.errors import KdflowError


def guarded(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a stage's ``main(argv=None)``: a KdflowError prints ``error: <message>`` to stderr
    and returns 1; otherwise it returns ``main``'s own result (``None`` counts as 0)."""
    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv) or 0
        except KdflowError as exc:
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
    return wrapper


def add_runtime_args(parser) -> None:
    """--backend, --device and --threads: where a training or evaluation stage runs."""
    parser.add_argument("--backend", default="auto", help="auto | oneflow | torch")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = library default)")


def backend_from(args):
    """The Backend the runtime arguments ask for, with its thread count applied: ``--threads``, but
    no more than this process's share of the CPUs it may use (a Slurm job's allocation, not the
    node's cores, split between the data-parallel processes of the job)."""
    from kdlib import backend
    B = backend.load(args.backend, args.device)
    if args.threads:
        share = max(1, backend.usable_cpus() // backend.processes_here())
        B.set_num_threads(min(args.threads, share))
    return B


def load_hparams(text: str, definition: str) -> dict:
    """Parse a JSON object given on the command line and validate it against the schema."""
    import json

    from kdlib import config
    from kdlib.errors import ConfigError
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--hparams is not valid JSON ({exc})") from None
    return config.validate_section(values, definition, "--hparams")
