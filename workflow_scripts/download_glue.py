"""Stage ``download_glue``: fetch one GLUE task's raw TSVs into ``<out root>/<GLUE dir>/``.

    python -m workflow_scripts.download_glue --task sst2 [--out-root data/glue] [--url URL]

The workflow downloads into data/download/ and names data/glue/ as the --hand-root, the folder
where a user may place the files by hand instead. All the work is in
:func:`kdlib.data.download.fetch_glue`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdlib.data.download import DEFAULT_BASE_URL, DEFAULT_MRPC_URL, fetch_glue
from workflow_scripts._cli import guarded


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="download_glue", description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, help="task id, e.g. sst2, mnli, mrpc")
    p.add_argument("--out-root", type=Path, default=Path("data/glue"),
                   help="folder that holds the GLUE task folders (default: data/glue)")
    p.add_argument("--hand-root", type=Path, default=None,
                   help="where errors tell the user to place the files by hand "
                        "(default: the out root)")
    p.add_argument("--url", default=DEFAULT_BASE_URL,
                   help="base URL of the GLUE zips (http(s)://, file:// or a local folder)")
    p.add_argument("--mrpc-url", default=DEFAULT_MRPC_URL,
                   help="base URL of the MSR paraphrase corpus files (MRPC only)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--retries", type=int, default=3,
                   help="retries of a failed try, with backoff (default 3)")
    return p.parse_args(argv)


@guarded
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fetch_glue(args.task, args.out_root, args.url, mrpc_url=args.mrpc_url, hand_root=args.hand_root,
               timeout=args.timeout, retries=args.retries,
               log=lambda line: print(line, flush=True))  # in order with the error line in the log
    return 0


if __name__ == "__main__":
    sys.exit(main())
