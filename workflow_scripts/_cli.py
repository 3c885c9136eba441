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
