"""Stage ``download_glue``: fetch one GLUE task's raw TSVs into ``<out root>/<GLUE dir>/``.

    python -m workflow_scripts.download_glue --task sst2 --out-root data/download \\
        --url https://dl.fbaipublicfiles.com/glue/data --mrpc-url ... --timeout 60 --retries 3

The workflow downloads into data/download/ and names data/glue/ as the --hand-root, the folder
where a user may place the files by hand instead. All the work is in
:func:`kdlib.data.download.fetch_glue`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from kdlib.data.download import fetch_glue
from workflow_scripts._cli import guarded, stage_parser


def parse_args(argv: list[str] | None = None):
    p = stage_parser(__doc__)
    p.add_argument("--out-root", type=Path, required=True,
                   help="folder that holds the GLUE task folders, e.g. data/download")
    p.add_argument("--hand-root", type=Path, default=None,
                   help="where errors tell the user to place the files by hand (default: the out root)")
    p.add_argument("--url", required=True,
                   help="base URL of the GLUE zips (http(s)://, file:// or a local folder)")
    p.add_argument("--mrpc-url", required=True,
                   help="base URL of the MSR paraphrase corpus files (MRPC only)")
    p.add_argument("--timeout", type=float, required=True, help="seconds per request")
    p.add_argument("--retries", type=int, required=True, help="retries of a failed try, with backoff")
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
