"""Turning task TSVs into OFRecord files: subword records for BERT (the teacher's tokenizer), word
records for the BiLSTM.

Both converters stream the TSV in chunks and write one record per row in file order, so record ``i``
of the BERT file and of the LSTM file is the same example (the teacher-logit cache relies on it).
"""
from __future__ import annotations

import collections
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from tokenizers import BertWordPieceTokenizer, Tokenizer, normalizers, pre_tokenizers
from tqdm import tqdm

from ..errors import DataError
from ..io import folder_tokenizer, write_text
from .custom import not_utf8
from .ofrecord import RecordWriter, record_file
from .task import VALIDATION, Task
from .tasks import Skipped, glue_file
from .validation import Carve, describe, split_chunks, task_mask

PAD, UNK = "<pad>", "<unk>"
MASK_WORD = "[MASK]"   # the masking token of augmented texts (kdlib.data.transfer.MASK)


# A subword tokenizer's file: a ``tokenizers`` tokenizer.json (WordPiece, BPE or Unigram, with its
# normaliser and special tokens), or a BERT vocab.txt read as kdlib's uncased WordPiece.
TOKENIZER_JSON, VOCAB_TXT = "tokenizer.json", "vocab.txt"
# config.json's ``tokenizer`` of a model folder -> the file in the folder that it reads
TOKENIZER_KINDS = {"wordpiece": VOCAB_TXT, "json": TOKENIZER_JSON, "words": VOCAB_TXT}


def subword(path: str | Path, max_length: int):
    """The tokenizer of ``path`` (:data:`TOKENIZER_JSON` or a vocab.txt), truncating pairs
    longest-first to ``max_length`` tokens and never padding (see :func:`wordpiece`)."""
    path = Path(path)
    if path.name != TOKENIZER_JSON:
        return wordpiece(path, max_length)
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:        # tokenizers raises its own Exception for a bad file
        raise DataError(f"{path}: not a tokenizer.json that the tokenizers library reads ({exc})") from None
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


def wordpiece(vocab: str | Path, max_length: int) -> BertWordPieceTokenizer:
    """The teacher's uncased WordPiece, truncating pairs longest-first to ``max_length`` pieces.

    It does not pad: :func:`convert_bert` pads a whole batch at once with numpy, which is cheaper
    than the tokenizer padding every encoding to ``max_length`` and Python reading them back.
    """
    vocab = Path(vocab)
    if not vocab.is_file():
        raise DataError(f"{vocab}: vocabulary file not found")
    read_utf8(vocab)
    try:
        tok = BertWordPieceTokenizer(str(vocab), lowercase=True)
    except Exception as exc:        # tokenizers raises its own Exception for a bad file
        raise DataError(f"{vocab}: not a WordPiece vocab.txt that the tokenizers library reads ({exc})") from None
    tok.enable_truncation(max_length=max_length)
    return tok


def read_utf8(path: str | Path) -> str:
    """A vocabulary file's text; bytes that are not UTF-8 are one DataError naming the file and line
    (:func:`kdlib.data.custom.not_utf8`, as for a task's files)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{not_utf8(Path(path))}; a vocabulary holds one UTF-8 token per line") from None


def _labels(task: Task, chunk) -> np.ndarray:
    dtype = np.float32 if task.is_regression else np.int32
    return chunk["label"].to_numpy(dtype=dtype)


def _texts(chunk):
    a = chunk["text_a"].tolist()
    if chunk["text_b"].isna().all():
        return a
    return list(zip(a, chunk["text_b"].tolist()))


def _pad(rows: list[list[int]], real: np.ndarray) -> np.ndarray:
    """Lists of ``real.sum(1)`` ints -> an (N, L) int32 matrix, zero-padded on the right."""
    out = np.zeros(real.shape, dtype=np.int32)                              # (N, L)
    out[real] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32,
                            count=int(real.sum()))                          # row-major fill
    return out


def bert_arrays(tokenizer, texts: list) -> dict[str, np.ndarray]:
    """``texts`` (strings, or ``(text_a, text_b)`` pairs) -> ``input_ids``, ``input_mask`` and
    ``segment_ids``, each (N, L) int32 with L the tokenizer's ``max_length``: each text becomes its
    ``n <= L`` pieces (longer ones truncated, a pair longest-first), ``input_mask = [1] * n + [0] *
    (L - n)``. Records and ``kdlib.predict`` both encode with it."""
    if tokenizer.padding is not None or tokenizer.truncation is None:
        raise ValueError("bert_arrays needs a tokenizer that truncates and does not pad (see subword)")
    max_length = int(tokenizer.truncation["max_length"])
    encodings = tokenizer.encode_batch(texts)
    ids = [e.ids for e in encodings]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))   # (N,)
    real = np.arange(max_length)[None, :] < lengths[:, None]                # (N, L)
    pairs = bool(texts) and isinstance(texts[0], tuple)
    return {"input_ids": _pad(ids, real), "input_mask": real.astype(np.int32),
            "segment_ids": (_pad([e.type_ids for e in encodings], real) if pairs
                            else np.zeros(real.shape, dtype=np.int32))}


def convert_bert(task: Task, chunks, out_path: str | Path, tokenizer,
                 desc: str = "", labelled: bool = True) -> int:
    """Write BERT records (input_ids, input_mask, segment_ids, label_ids, is_real_example).
    ``labelled=False`` marks rows whose label is a placeholder (a transfer set's: is_real_example 0).

    ``tokenizer`` comes from :func:`subword`; the features are :func:`bert_arrays`'.
    """
    with RecordWriter(out_path) as writer, tqdm(desc=desc or str(out_path), unit="ex") as bar:
        for chunk in chunks:
            arrays = bert_arrays(tokenizer, _texts(chunk))
            n = len(arrays["input_ids"])
            writer.write_batch({**arrays, "label_ids": _labels(task, chunk),          # (N,)
                                "is_real_example": np.full(n, int(labelled), dtype=np.int32)})
            bar.update(n)
    return writer.count


class WordTokenizer:
    """Lower-cased words split at whitespace and punctuation (BERT's basic pre-tokenisation).
    ``[MASK]``, which augmented transfer texts hold, stays one word (not in any word vocabulary,
    so it reads as ``<unk>``, as in Tang et al. 2019)."""

    def __init__(self):
        self.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None)
        self.pre = pre_tokenizers.BertPreTokenizer()

    def _words(self, text: str) -> list[str]:
        words: list[str] = []
        for i, part in enumerate(text.split(MASK_WORD)):
            if i:
                words.append(MASK_WORD)
            words += [w for w, _ in self.pre.pre_tokenize_str(self.normalizer.normalize_str(part))]
        return words

    def __call__(self, text: str, text_b: str | None = None) -> list[str]:
        return self._words(text) + (self._words(text_b) if text_b is not None else [])


def text_rows(chunk):
    """``(text_a, text_b or None)`` of each row of a :func:`kdlib.data.tasks.read_split` chunk."""
    b = chunk["text_b"].tolist() if not chunk["text_b"].isna().all() else [None] * len(chunk)
    return zip(chunk["text_a"].tolist(), b)


def build_vocab(chunks, size: int) -> list[str]:
    """``<pad>``, ``<unk>``, then the ``size`` most frequent words; ties go to the smaller word."""
    words = WordTokenizer()
    counts: collections.Counter = collections.Counter()
    for chunk in chunks:
        for a, b in text_rows(chunk):
            counts.update(words(a, b))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
    return [PAD, UNK] + [w for w, _ in ranked]


def write_vocab(vocab: list[str], path: str | Path) -> None:
    write_text(path, "\n".join(vocab) + "\n")


def read_word_vocab(path: str | Path) -> list[str]:
    """A BiLSTM's word vocabulary (vocab.txt of its records): one word per line, PAD and UNK first."""
    vocab = read_utf8(path).splitlines()
    if vocab[:2] != [PAD, UNK]:
        raise DataError(f"{path}: a word vocabulary must start with {PAD} and {UNK}")
    return vocab


def word_arrays(index: dict[str, int], rows: list, max_length: int) -> dict[str, np.ndarray]:
    """``rows`` of ``(text_a, text_b or None)`` -> ``input_ids`` and ``input_mask``, (N, L) int32,
    by the word vocabulary ``index`` (word -> id): a pair's two word lists are joined, an example
    keeps its first ``max_length`` words, and one with no words becomes a single ``<unk>``."""
    unk, words = index[UNK], WordTokenizer()
    ids = np.zeros((len(rows), max_length), dtype=np.int32)            # (N, L), <pad> = 0
    mask = np.zeros((len(rows), max_length), dtype=np.int32)
    for i, (a, b) in enumerate(rows):
        row = [index.get(w, unk) for w in words(a, b)[:max_length]] or [unk]
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return {"input_ids": ids, "input_mask": mask}


def convert_lstm(task: Task, chunks, out_path: str | Path, vocab: list[str], max_length: int,
                 desc: str = "", labelled: bool = True) -> int:
    """Write word-level records (input_ids, input_mask, label_ids, is_real_example); ``labelled`` as
    in :func:`convert_bert`; the features are :func:`word_arrays`'.
    """
    index = {w: i for i, w in enumerate(vocab)}
    with RecordWriter(out_path) as writer, tqdm(desc=desc or str(out_path), unit="ex") as bar:
        for chunk in chunks:
            arrays = word_arrays(index, list(text_rows(chunk)), max_length)
            writer.write_batch({**arrays, "label_ids": _labels(task, chunk),
                                "is_real_example": np.full(len(chunk), int(labelled), dtype=np.int32)})
            bar.update(len(chunk))
    return writer.count


def convert_splits(task: Task, glue_root: str | Path, out_dir: str | Path, convert_split,
                   what: str, carve: Carve) -> dict[str, int]:
    """Every record split of ``task`` (its TSVs under ``glue_root``, or a custom task's own files;
    a validation split without a file is carved from train by ``carve``,
    :mod:`kdlib.data.validation`) into ``out_dir/<split>.of_record-0``, by
    ``convert_split(chunks, path, desc) -> records written``; logs each split's count and the
    malformed rows it skipped (QQP; both kinds of records skip the same rows, so record i is the
    same example in each), and warns of a dev or validation label that the training rows never
    have. Returns the counts."""
    counts, seen = {}, {}
    mask = None if task.validation_file else task_mask(task, glue_root, carve)
    print(f"{task.name} {describe(task, carve)}", file=sys.stderr)
    for split in task.record_splits:
        skipped, labels = Skipped(), set()
        chunks = split_chunks(task, glue_root, split, carve, mask, skipped)
        counts[split] = convert_split(_noting_labels(chunks, labels), record_file(out_dir, split),
                                      f"{task.name} {split}")
        seen[split] = labels
        if skipped.count and split != VALIDATION:    # carved: train's skipped rows, said once
            print(f"{task.name} {split}: {skipped}", file=sys.stderr)
        print(f"{task.name} {split}: {counts[split]} {what} records", file=sys.stderr)
    if not task.is_regression:
        for split in (VALIDATION, *task.dev_splits):
            unseen = sorted(seen[split] - seen["train"])
            if unseen:
                names = ", ".join(task.labels[i] for i in unseen)
                where = glue_file(glue_root, task, split if task.validation_file or split != VALIDATION
                                  else "train")
                print(f"warning: {where} ({split}): label(s) {names} never occur in the training "
                      f"rows; the students cannot learn them", file=sys.stderr)
    return counts


def _noting_labels(chunks, labels: set):
    for chunk in chunks:
        labels.update(chunk["label"].tolist())
        yield chunk


def encoding_of(records: str | Path, task: Task) -> dict:
    """How a model trained on the record folder ``records`` reads new text, for its config.json:
    ``tokenizer`` (``wordpiece`` or ``json``: BERT records of a vocab.txt or a tokenizer.json;
    ``words``: the BiLSTM's; :data:`TOKENIZER_KINDS` names the file), ``max_length`` (longer texts
    are truncated as the records were) and ``text_pair`` (the task's examples are pairs)."""
    meta_path = Path(records) / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    if meta.get("kind") not in ("bert", "lstm") or not isinstance(meta.get("max_length"), int):
        raise DataError(f"{meta_path}: not the meta.json of a record folder (kind, max_length)")
    kind = "words" if meta["kind"] == "lstm" else (
        "json" if (Path(records) / TOKENIZER_JSON).is_file() else "wordpiece")
    return {"tokenizer": kind, "max_length": meta["max_length"], "text_pair": task.text_b is not None}


def records_tokenizer(records: str | Path) -> Path:
    """The tokenizer file a record folder keeps (its copy of what encoded it), which every model
    trained on it carries: tokenizer.json or vocab.txt."""
    found = folder_tokenizer(records)
    if found is None:
        raise DataError(f"{records}: no tokenizer.json or vocab.txt, which the model folder carries; "
                        "rebuild the records")
    return found


def write_meta(path: str | Path, **meta) -> None:
    write_text(path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
