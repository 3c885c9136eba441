"""Rows per second of the teacher-logit cache: kdlib's BERT teacher beside transformers teachers.

    .venv/bin/python bench/bench_teacher_cache.py RECORDS [--rows 2048] [--rounds 3] [--threads 1]

RECORDS is a BERT record folder (data/ofrecord/tweets/bert64 after `make run`). Every teacher is
the default teacher's size (6 layers, hidden 384, 12 heads, FFN 1536) and runs the cache's own code
path, :func:`kdlib.evaluate.evaluation.predict` (length-sorted pools, each batch trimmed to its
longest row, eval batch 128) over the first ``--rows`` training records, in fp32 and in bf16
(autocast; where the CPU computes it natively), on ``--threads`` threads:

- kdlib's BERT with the built-in MiniLM weights (the default teacher);
- the same weights through transformers (``BertForSequenceClassification``, as
  ``teacher.finetuned`` runs a BERT folder it does not convert, :mod:`kdlib.models.hf_teacher`);
- a RoBERTa and a DeBERTa-v2 of the same size (random weights: speed does not depend on them).

Teachers and precisions take turns round by round, so load on the machine falls on all alike; the
median of the rounds is printed.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from kdlib import backend
from kdlib.data.ofrecord import RecordWriter, iter_records, record_file
from kdlib.evaluate.evaluation import predict
from kdlib.models import hf_teacher
from kdlib.models.pretrained import load_pretrained_bert, resolve_pretrained

SIZE = dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536)


def first_rows(records: Path, rows: int, out: Path) -> Path:
    """The first ``rows`` training records of ``records`` as a record file of their own."""
    with RecordWriter(out) as writer:
        for i, record in enumerate(iter_records(record_file(records, "train"))):
            if i == rows:
                break
            writer.write(record)
    return out


def random_folder(kind: str, folder: Path, vocab_size: int) -> Path:
    """A transformers classifier of the default teacher's size with random weights."""
    import transformers
    if kind == "roberta":
        config = transformers.RobertaConfig(vocab_size=vocab_size, max_position_embeddings=514, type_vocab_size=1,
                                            **SIZE)
    else:
        config = transformers.DebertaV2Config(vocab_size=vocab_size, max_position_embeddings=512,
                                              relative_attention=True, position_buckets=256,
                                              pos_att_type=["p2c", "c2p"], position_biased_input=False,
                                              type_vocab_size=0, **SIZE)
    config.num_labels = 2
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("records", type=Path)
    p.add_argument("--rows", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_cache."))
    path = first_rows(args.records, args.rows, tmp / "train.of_record-0")
    minilm = resolve_pretrained("builtin:minilm-l6")
    teachers = {}
    for precision in ("fp32", "bf16"):
        B = backend.load("torch", "cpu", precision)
        B.set_num_threads(args.threads)
        kdlib_bert, _ = load_pretrained_bert(B, minilm, 2, log=lambda _: None)
        kdlib_bert.eval()
        teachers[f"kdlib BERT, {precision}"] = (B, kdlib_bert)
        teachers[f"transformers BERT, {precision}"] = (B, hf_teacher.load(B, minilm, {"label_order": [0, 1]}))
        for kind in ("roberta", "deberta-v2"):
            folder = tmp / kind
            if not folder.exists():
                random_folder(kind, folder, 30522)
            teachers[f"transformers {kind}, {precision}"] = (B, hf_teacher.load(B, folder, {"label_order": [0, 1]}))
    for B, model in teachers.values():                           # warm-up
        predict(B, model, path, 128)
    rates = {name: [] for name in teachers}
    for _ in range(args.rounds):
        for name, (B, model) in teachers.items():
            start = time.perf_counter()
            predict(B, model, path, 128)
            rates[name].append(args.rows / (time.perf_counter() - start))
    print(f"{args.rows} training rows of {args.records}, eval batch 128, {args.threads} thread(s), "
          f"median of {args.rounds} rounds")
    print("| teacher | precision | rows/s | range |")
    print("| --- | --- | ---: | ---: |")
    for name, values in rates.items():
        teacher, precision = name.rsplit(", ", 1)
        print(f"| {teacher} | {precision} | {statistics.median(values):.0f} | {min(values):.0f}-{max(values):.0f} |")


if __name__ == "__main__":
    main()
