"""Labelling new text with a model folder: ``python -m kdlib.predict <folder> [texts.txt] > labels.tsv``.

Any folder the workflow trains (the teacher, a BERT student, the BiLSTM) holds what this needs:
``model.safetensors``, ``config.json`` (labels, ``tokenizer``, ``max_length``, ``text_pair``) and
``vocab.txt``; copied elsewhere, it still predicts. The input (a file, or stdin without one or with
``-``) holds one text per line, or for a pair task one ``text_a<TAB>text_b`` pair. Every line is
checked before anything runs; an empty line, a line that is not UTF-8, or a line with the wrong
number of tab-separated texts is a one-line error naming the line. A text longer than the model's
``max_length`` is truncated exactly as training truncated it (WordPiece pieces, longest text of a
pair first; or words), and the count of texts that fill every position goes to stderr.

The output is a TSV with a header and one row per input line, in input order::

    label   probability   logit_<label 0>   logit_<label 1> ...      # classification
    score                                                             # regression (STS-B)

Texts are encoded in chunks of :data:`CHUNK` lines and, within a chunk, run in batches of similar
length (less padding), with a progress bar on stderr for long input.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .data import batching
from .data.batching import model_inputs
from .data.convert import TOKENIZER_KINDS, bert_arrays, read_word_vocab, subword, word_arrays
from .errors import DataError, KdflowError
from .io import atomic_path
from .models.checkpoint import CONFIG_FILE, load_checkpoint, read_checkpoint_config

CHUNK = 4096          # lines encoded at a time


def read_texts(data: bytes, source: str, pair: bool) -> list:
    """The lines of ``data`` as texts (or ``(text_a, text_b)`` with ``pair``), every line checked;
    ``source`` names the input in the one-line DataError (``texts.txt:12: ...``)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()                                        # the final newline ends the last line
    if not lines:
        raise DataError(f"{source}: no texts (the input is empty)")
    texts = []
    for number, raw in enumerate(lines, 1):
        where = f"{source}:{number}"
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]                                  # a UTF-8 byte-order mark
        try:
            line = raw.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                            f"{exc.start + 1}); convert the file to UTF-8") from None
        parts = line.split("\t")
        if not line.strip():
            raise DataError(f"{where}: an empty line; every line must hold a text"
                            + (" pair (text_a<TAB>text_b)" if pair else ""))
        if pair and (len(parts) != 2 or not all(p.strip() for p in parts)):
            raise DataError(f"{where}: this model reads sentence pairs, one text_a<TAB>text_b per "
                            f"line, but the line holds {len(parts)} tab-separated field(s)"
                            + ("" if len(parts) != 2 else ", one of them empty"))
        if not pair and len(parts) > 1:
            raise DataError(f"{where}: the line holds a tab, but this model reads one text per line")
        texts.append(tuple(parts) if pair else line)
    return texts


class Encoder:
    """A model folder's tokeniser: ``encoder(texts) -> {input_ids, input_mask[, segment_ids]}``,
    (N, max_length) int32, exactly as its training records were made."""

    def __init__(self, folder: Path, config: dict):
        kind, length = config.get("tokenizer"), config.get("max_length")
        if kind not in TOKENIZER_KINDS or not isinstance(length, int) or length < 1:
            raise DataError(f"{folder / CONFIG_FILE}: no tokeniser settings (tokenizer, max_length); "
                            "it was trained before model folders carried them: retrain it")
        vocab = folder / TOKENIZER_KINDS[kind]
        if not vocab.is_file():
            raise DataError(f"{vocab}: not found; a model folder carries its tokenizer")
        self.kind, self.max_length, self.pair = kind, length, bool(config.get("text_pair"))
        if kind != "words":
            self.tokenizer = subword(vocab, length)
        else:
            self.index = {w: i for i, w in enumerate(read_word_vocab(vocab))}

    def __call__(self, texts: list) -> dict[str, np.ndarray]:
        if self.kind != "words":
            return bert_arrays(self.tokenizer, texts)
        rows = [t if self.pair else (t, None) for t in texts]
        return word_arrays(self.index, rows, self.max_length)


def _batches(arrays: dict[str, np.ndarray], batch_size: int):
    """``(rows, batch)``: batches of rows of similar length, each trimmed to its longest row."""
    order = np.argsort(arrays["input_mask"].sum(1), kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        yield rows, batching.trim_batch({k: v[rows] for k, v in arrays.items()})


class Predictor:
    """A model folder, loaded: ``predictor(texts) -> logits (N, C)`` (float32, in input order)."""

    def __init__(self, B, folder: str | Path, batch_size: int = 32):
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"{folder}: no such model folder")
        self.config = read_checkpoint_config(folder)
        self.encode = Encoder(folder, self.config)
        self.model, _ = load_checkpoint(B, folder)
        self.B, self.batch_size = B, batch_size
        self.labels = list(self.config.get("labels") or [])
        self.truncated = 0                          # texts that filled every position

    def __call__(self, texts: list, bar=None) -> np.ndarray:
        B, arrays = self.B, self.encode(texts)
        self.truncated += int((arrays["input_mask"][:, -1] == 1).sum())
        logits = np.zeros((len(texts), self.model.config.num_labels), np.float32)   # (N, C)
        with B.no_grad(), B.autocast():
            for rows, batch in _batches(arrays, self.batch_size):
                logits[rows] = B.to_numpy(self.model(**model_inputs(B, batch))["logits"].float())
                if bar is not None:
                    bar.update(len(rows))
        return logits


def table_lines(logits: np.ndarray, labels: list[str]) -> list[str]:
    """TSV rows (no header) of :func:`header`'s columns for ``logits`` (N, C)."""
    if logits.shape[1] == 1:                                   # regression: the score itself
        return [f"{v:.6f}" for v in logits[:, 0]]
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)    # (N, C) softmax
    best = logits.argmax(axis=1)
    return ["\t".join([labels[k], f"{probs[i, k]:.6f}", *(f"{v:.6f}" for v in logits[i])])
            for i, k in enumerate(best.tolist())]


def header(labels: list[str], num_labels: int) -> str:
    if num_labels == 1:
        return "score"
    return "\t".join(["label", "probability", *(f"logit_{name}" for name in labels)])


def predict_file(predictor: Predictor, texts: list, out) -> None:
    """Write the TSV of ``texts`` to the text stream ``out``, :data:`CHUNK` lines at a time."""
    num_labels = predictor.model.config.num_labels
    labels = predictor.labels if len(predictor.labels) == num_labels else [str(i) for i in range(num_labels)]
    out.write(header(labels, num_labels) + "\n")
    with tqdm(total=len(texts), unit="text", desc="predict", disable=len(texts) < 1000,
              file=sys.stderr) as bar:
        for start in range(0, len(texts), CHUNK):
            rows = table_lines(predictor(texts[start:start + CHUNK], bar), labels)
            out.write("\n".join(rows) + "\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m kdlib.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a model folder, e.g. results/tweets/kd")
    p.add_argument("input", nargs="?", default="-", help="texts, one per line (default: stdin)")
    p.add_argument("--out", help="write the TSV here (atomically) instead of stdout")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    p.add_argument("--backend", default="auto",
                   help="auto | oneflow | torch (default auto: as the workflow picks, among the installed)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--precision", default="auto",
                   help="auto | fp32 | bf16 | fp16 (default auto: bf16 where the device has it, "
                        "as the workflow evaluates)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: the library's)")
    return p.parse_args(argv)


def _installed(name: str) -> str:
    """``auto``: the backend ``backend.resolve`` picks, or the other one where only that one is
    installed (.venv-oneflow has no torch); an explicit name as given."""
    from . import backend
    if name != "auto":
        return name
    chosen = backend.resolve("auto")
    if importlib.util.find_spec(chosen) is None:
        return "oneflow" if chosen == "torch" else "torch"
    return chosen


def run(args) -> str:
    """Predict as ``args`` say; returns the summary line."""
    from . import backend
    if args.batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {args.batch_size}")
    folder = Path(args.model)
    if not (folder / CONFIG_FILE).is_file():
        raise DataError(f"{folder}: not a model folder (no {CONFIG_FILE})")
    pair = bool(read_checkpoint_config(folder).get("text_pair"))
    if args.input == "-":
        texts = read_texts(sys.stdin.buffer.read(), "stdin", pair)
    else:
        path = Path(args.input)
        if not path.is_file():
            raise DataError(f"{path}: no such input file")
        texts = read_texts(path.read_bytes(), str(path), pair)
    B = backend.load(_installed(args.backend), args.device, args.precision)
    if args.threads:
        B.set_num_threads(args.threads)
    predictor = Predictor(B, folder, args.batch_size)
    if args.out:
        with atomic_path(args.out) as tmp, open(tmp, "w", encoding="utf-8") as out:
            predict_file(predictor, texts, out)
    else:
        predict_file(predictor, texts, sys.stdout)
    note = (f"; {predictor.truncated} filled all {predictor.encode.max_length} positions (longer "
            "texts are truncated, as in training)") if predictor.truncated else ""
    return (f"predicted {len(texts)} texts with {folder} ({B.name}, {B.precision}){note}"
            + (f"; wrote {args.out}" if args.out else ""))


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except KdflowError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except BrokenPipeError:              # `... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit
        return 0
    print(summary, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
