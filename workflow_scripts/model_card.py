"""Stage model_card: a model folder's README.md (:func:`kdlib.export.card.model_card`), from its
config.json, its eval JSON, the teacher's and the speed stage's JSON."""
from __future__ import annotations

import sys
from pathlib import Path

from kdlib.export.card import model_card
from kdlib.io import write_text
from kdlib.models.checkpoint import read_checkpoint_config
from workflow_scripts._cli import guarded, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--model", required=True, help="the model folder, e.g. results/tweets/kd")
    p.add_argument("--eval", required=True, help="its eval JSON")
    p.add_argument("--teacher-eval", required=True, help="the teacher's eval JSON")
    p.add_argument("--speed", required=True, help="the speed stage's JSON")
    p.add_argument("--transfer", default="", help="the transfer set it trained on, if any")
    p.add_argument("--out", required=True, help="the card to write (the folder's README.md)")
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    config = read_checkpoint_config(Path(args.model))
    write_text(args.out, model_card(config, args.eval, args.teacher_eval, args.speed, args.transfer or None))
    print(f"model card of {args.model} ({args.task}): wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
