"""Stage export_teacher_layers: a student's initial checkpoint made of chosen teacher layers."""
from __future__ import annotations

import sys

from kdlib.distill.layers import export_layers
from workflow_scripts._cli import guarded, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__, task=False)
    p.add_argument("--teacher", required=True, help="fine-tuned teacher folder")
    p.add_argument("--layers", required=True, help="1-based teacher layers, comma-separated: 2,4,6")
    p.add_argument("--out", required=True, help="the student's init folder")
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        layers = [int(x) for x in args.layers.split(",")]
    except ValueError:
        from kdlib.errors import ConfigError
        raise ConfigError(f"--layers {args.layers!r}: expected comma-separated integers") from None
    export_layers(args.teacher, layers, args.out)
    print(f"exported teacher layers {layers} of {args.teacher} to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
