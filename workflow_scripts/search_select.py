"""Stage search_select: the search's pick, the feasible candidate with the best validation score
(:func:`kdlib.search.pick.choose`), from the feasibility JSON and each trained candidate's
training summary. Dev plays no part."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from kdlib.errors import ConfigError
from kdlib.io import read_json, write_text
from kdlib.search import pick
from workflow_scripts._cli import guarded, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--feasibility", required=True, help="the search's feasibility JSON")
    p.add_argument("--summaries", nargs="*", default=[], metavar="JSON",
                   help="train_summary.json of every feasible candidate (named by its folder)")
    p.add_argument("--out", required=True, help="the pick JSON to write")
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    feasibility = read_json(args.feasibility)
    summaries = {Path(s).parent.name: s for s in args.summaries}
    wanted = pick.feasible(feasibility)
    if sorted(summaries) != sorted(wanted):
        raise ConfigError(f"--summaries must be those of the feasible candidates ({', '.join(wanted) or 'none'})")
    chosen = pick.choose(feasibility, pick.read_scores(summaries))
    write_text(args.out, json.dumps(chosen, indent=2) + "\n")
    best = chosen["scores"][chosen["pick"]]
    print(f"search pick on {args.task}: {chosen['pick']} (validation {chosen['metric']} {100 * best['score']:.2f}, "
          f"the best of {len(wanted)} trained candidates); wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
