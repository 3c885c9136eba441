"""Stage export_hf: a kdlib BERT folder (teacher or student) as a HuggingFace folder that
``AutoModelForSequenceClassification`` and ``AutoTokenizer.from_pretrained`` load as it is."""
from __future__ import annotations

import sys

from kdlib.export.hf import export_hf
from kdlib.io import read_json
from workflow_scripts._cli import guarded, stage_parser


def parse_args(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--model", required=True, help="the kdlib BERT model folder")
    p.add_argument("--out", required=True, help="the HuggingFace folder to write")
    return p.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse_args(argv)
    out = export_hf(args.model, args.out, task=args.task)
    config = read_json(out / "config.json")
    print(f"exported {args.model} ({args.task}, BERT {config['num_hidden_layers']} layers, hidden "
          f"{config['hidden_size']}, {len(config['id2label'])} outputs) to HuggingFace folder {out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
