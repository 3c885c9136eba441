"""TinyBERT's data augmentation for transfer sets (Jiao et al. 2020, section 3.1 and Algorithm 1).

A training text is split into words by the normaliser and pre-tokeniser of
:class:`kdlib.data.convert.WordTokenizer` (lower case, BERT's basic pre-tokenisation; used directly
for the words' offsets, so a literal ``[MASK]`` is three words here). Each word gets up to K
candidate replacements (transfer ``candidates``, paper 15) from the pretrained folder (config
``teacher.pretrained``):

- **masked-LM path**, for a word that is one WordPiece, when the folder holds BERT's masked-LM head
  (``cls.predictions.transform.dense``, ``.transform.LayerNorm``, ``cls.predictions.bias``, and a
  decoder of its own or tied to the word embeddings): the word's piece becomes ``[MASK]`` in its
  text, the encoder and the head score the vocabulary there, and the K best whole words are the
  candidates. One forward pass per (text, single-piece word), many texts to a batch.
- **embedding-neighbour path**, for a word of several pieces, and for every word when the folder
  has no such head (the packaged ``builtin:minilm-l6`` has none): the K whole words nearest by
  cosine similarity in the folder's input word-embedding matrix, the word's vector being the mean
  of its pieces' vectors. This space stands in for the paper's GloVe vectors. Once per distinct
  word.

A whole word is a vocabulary entry that is not a ``##`` continuation piece and not a ``[...]``
token (``[CLS]``, ``[MASK]``, ``[unused7]``, ...); a word is never its own candidate. A word that
WordPiece reads as ``[UNK]`` gets no candidates, and neither does a single-piece word that is no
whole word. A pair task's two texts are augmented each on its own.

Then each of ``variants`` variants (paper 20) replaces every word that has candidates with
probability ``p_replace`` (paper 0.4) by one drawn uniformly. A replacement is written into the
text where the word stood (the text lower-cased as the words are, white space and punctuation kept;
a space added where the new word would join a neighbour), so a variant equal to a dev text is
caught by :func:`kdlib.data.transfer.build`; a text with no word replaced is the training text
itself, which build drops. Memory: a chunk of ``CHUNK`` examples at a time, plus each distinct
word's WordPieces and neighbours.
"""
from __future__ import annotations

import functools
import itertools
import re
import string
import sys
import unicodedata
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from tokenizers.models import WordPiece
from tqdm import tqdm

from ..errors import DataError
from ..models.pretrained import hf_key, load_pretrained_bert
from ..models.weights import read_safetensors
from .convert import WordTokenizer

CHUNK = 256                    # training examples per round of candidates
NEIGHBOUR_CHUNK = 256          # distinct words per similarity matmul: (256, whole words) float32
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
HEAD = "cls.predictions."
SPECIAL = re.compile(r"^\[[^\]]*\]$")      # [PAD], [CLS], [MASK], [unused12], ...


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def read_vocab(path: Path) -> list[str]:
    """vocab.txt: one token per line, the line number its id."""
    if not path.is_file():
        raise DataError(f"{path}: vocabulary file not found; augment: tinybert needs the pretrained "
                        "folder's vocab.txt")
    return path.read_text(encoding="utf-8").splitlines()


def whole_words(tokens: list[str], size: int) -> np.ndarray:
    """(size,) bool: True for the ids whose token is a whole word (ids past the vocab: False)."""
    whole = np.zeros(size, dtype=bool)
    whole[:len(tokens)] = [bool(t) and not t.startswith("##") and not SPECIAL.match(t) for t in tokens]
    return whole


def _array(arrays: dict, key: str):
    """``key`` (our naming, :func:`kdlib.models.pretrained.hf_key`) of a checkpoint whose keys are
    in that naming, as float32; None when it is missing."""
    return np.asarray(arrays[key], dtype=np.float32) if key in arrays else None


def mlm_head(arrays: dict, embeddings: np.ndarray, path: Path) -> dict | None:
    """The masked-LM head's float32 arrays (``dense_w`` (H, H), ``dense_b``, ``ln_w``, ``ln_b``
    (H,), ``decoder`` (V, H), ``bias`` (V,)), or None when the checkpoint has no
    ``cls.predictions.transform.dense.weight``. A head with parts missing or of the wrong shape is
    a DataError."""
    V, H = embeddings.shape
    names = {"dense_w": ("transform.dense.weight", (H, H)), "dense_b": ("transform.dense.bias", (H,)),
             "ln_w": ("transform.LayerNorm.weight", (H,)), "ln_b": ("transform.LayerNorm.bias", (H,)),
             "bias": ("bias", (V,)), "decoder": ("decoder.weight", (V, H))}
    if _array(arrays, HEAD + names["dense_w"][0]) is None:
        return None
    head = {k: _array(arrays, HEAD + key) for k, (key, _) in names.items()}
    if head["decoder"] is None:                       # tied to the input word embeddings
        head["decoder"] = embeddings
    missing = [HEAD + names[k][0] for k, v in head.items() if v is None]
    if missing:
        raise DataError(f"{path}: a masked-LM head without {', '.join(missing)}")
    for k, (key, shape) in names.items():
        if head[k].shape != shape:
            raise DataError(f"{path}: {HEAD + key} has shape {head[k].shape}, expected {shape}")
    return head


class Neighbours:
    """The whole words nearest a vector by cosine similarity in the input word-embedding space."""

    def __init__(self, embeddings: np.ndarray, whole: np.ndarray):
        self.ids = np.flatnonzero(whole)                                   # (W,) whole-word ids
        unit = embeddings[self.ids]                                        # (W, H)
        self.unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)

    def top(self, vectors: np.ndarray, k: int) -> np.ndarray:
        """(N, H) vectors -> (N, k) ids of their k nearest whole words, nearest first."""
        k = min(k, len(self.ids))
        q = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        sims = q @ self.unit.T                                             # (N, W) cosines
        best = np.argpartition(-sims, k - 1, axis=1)[:, :k]                # (N, k) unordered
        order = np.argsort(-np.take_along_axis(sims, best, 1), axis=1, kind="stable")
        return self.ids[np.take_along_axis(best, order, 1)]                # (N, k)


class MaskedLM:
    """The pretrained encoder (kdlib BERT on backend ``B``) and its masked-LM head, applied by
    hand at the masked position::

        h      = hidden[-1][b, p]                                  # (N, H) last layer, at [MASK]
        t      = LayerNorm(gelu(h W_d^T + b_d))                    # the head's transform
        logits = t E^T + bias                                      # (N, V) over the vocabulary
    """

    def __init__(self, B, folder: Path, head: dict, whole: np.ndarray, log: Callable[[str], None]):
        self.B = B
        self.model, cfg = load_pretrained_bert(B, folder, num_labels=2, log=log)
        self.model.eval()
        self.eps, self.max_length = cfg.layer_norm_eps, cfg.max_position_embeddings
        self.head = {k: B.tensor(v) for k, v in head.items() if k != "decoder"}
        self.decoder_t = B.tensor(np.ascontiguousarray(head["decoder"].T))   # (H, V)
        self.penalty = B.tensor(np.where(whole, 0.0, -1e9).astype(np.float32))  # (V,) whole words only
        self.n_whole = int(whole.sum())

    def top(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, k: int) -> np.ndarray:
        """(N, T) ids with [MASK] at ``positions`` (N,), their (N, T) attention mask -> (N, k) ids
        of the best whole words at the masked positions, best first."""
        B, F, lib, hd = self.B, self.B.F, self.B.lib, self.head
        with B.no_grad():
            with B.autocast():
                out = self.model(B.tensor(ids), attention_mask=B.tensor(mask), output_hidden=True)
            rows = B.tensor(np.arange(len(ids)))
            h = out["hidden"][-1][rows, B.tensor(positions)].float()                  # (N, H)
            t = F.gelu(F.linear(h, hd["dense_w"], hd["dense_b"]))                     # (N, H)
            t = F.layer_norm(t, (t.shape[-1],), hd["ln_w"], hd["ln_b"], self.eps)
            logits = lib.matmul(t, self.decoder_t) + hd["bias"] + self.penalty        # (N, V)
            return B.to_numpy(lib.topk(logits, min(k, self.n_whole), dim=-1)[1])     # (N, k)


class Candidates:
    """Candidate replacements of words from a pretrained folder (see the module docstring).

    ``make_backend()`` gives the backend that runs the masked LM; it is called only when the folder
    has a masked-LM head (the embedding path is numpy alone). Without it every word takes the
    embedding path. ``batch_size`` masked copies go through the encoder at a time."""

    def __init__(self, folder: str | Path, k: int, make_backend: Callable | None = None,
                 batch_size: int = 128, log: Callable[[str], None] = _stderr):
        folder = Path(folder)
        self.k, self.batch_size = k, batch_size
        self.tokens = read_vocab(folder / "vocab.txt")
        weights = folder / "model.safetensors"
        arrays = {hf_key(k): v for k, v in read_safetensors(weights).items()}   # with or without bert.
        embeddings = _array(arrays, WORD_EMBEDDINGS)
        if embeddings is None or embeddings.ndim != 2:
            raise DataError(f"{weights}: no 2-D {WORD_EMBEDDINGS}; augment: tinybert needs the "
                            "input word embeddings")
        if len(self.tokens) > len(embeddings):
            raise DataError(f"{folder / 'vocab.txt'}: {len(self.tokens)} tokens, but {weights} "
                            f"embeds {len(embeddings)}")
        ids = {t: i for i, t in reversed(list(enumerate(self.tokens)))}    # the first id of a token
        for special in ("[UNK]", "[CLS]", "[SEP]", "[MASK]"):
            if special not in ids:
                raise DataError(f"{folder / 'vocab.txt'}: no {special} token; not a BERT vocabulary")
        self.unk, self.cls, self.sep, self.mask = (ids[s] for s in ("[UNK]", "[CLS]", "[SEP]", "[MASK]"))
        self.wordpiece = WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100)
        self.embeddings = embeddings                                       # (V, H)
        self.whole = whole_words(self.tokens, len(embeddings))             # (V,)
        if not self.whole.any():
            raise DataError(f"{folder / 'vocab.txt'}: no whole-word token to draw candidates from")
        self.neighbours = Neighbours(embeddings, self.whole)
        head = mlm_head(arrays, embeddings, weights)
        del arrays
        self.mlm = (MaskedLM(make_backend(), folder, head, self.whole, log)
                    if head is not None and make_backend is not None else None)
        self._pieces: dict[str, list[int]] = {}
        self._near: dict[str, tuple[str, ...]] = {}
        path = "masked LM (single-piece words) + embedding neighbours" if self.mlm else "embedding neighbours"
        log(f"tinybert candidates: {path} of {folder}, {k} per word")

    def pieces(self, word: str) -> list[int]:
        if word not in self._pieces:
            self._pieces[word] = [t.id for t in self.wordpiece.tokenize(word)]
        return self._pieces[word]

    def _keep(self, ids, word: str) -> tuple[str, ...]:
        """The first k ids' tokens, without the word itself."""
        return tuple(itertools.islice((self.tokens[i] for i in ids if self.tokens[i] != word), self.k))

    def _add_neighbours(self, words: list[str]) -> None:
        for start in range(0, len(words), NEIGHBOUR_CHUNK):
            chunk = words[start:start + NEIGHBOUR_CHUNK]
            vectors = np.stack([self.embeddings[self.pieces(w)].mean(0) for w in chunk])   # (n, H)
            for word, ids in zip(chunk, self.neighbours.top(vectors, self.k + 1).tolist()):
                self._near[word] = self._keep(ids, word)

    def __call__(self, texts: list[list[str]]) -> list[list[tuple[str, ...]]]:
        """Each word's candidates (a tuple of words, maybe empty) for texts given as word lists."""
        out: list[list[tuple[str, ...]]] = [[()] * len(words) for words in texts]
        sequences, jobs, near = [], [], []      # MLM inputs; (text, word, position); embedding path
        limit = self.mlm.max_length - 2 if self.mlm else 0                  # pieces beside CLS, SEP
        for t, words in enumerate(texts):
            pieces = [self.pieces(w) for w in words]
            starts = np.cumsum([0] + [len(p) for p in pieces])[:-1].tolist()
            if self.mlm:
                sequences.append([self.cls, *itertools.chain(*pieces)][:limit + 1] + [self.sep])
            for w, (word, ids, start) in enumerate(zip(words, pieces, starts)):
                if ids == [self.unk] or (len(ids) == 1 and not self.whole[ids[0]]):
                    continue                                                # no candidates
                if len(ids) == 1 and start < limit:
                    jobs.append((t, w, start + 1))                         # + 1: after [CLS]
                else:
                    near.append((t, w))
        self._add_neighbours(sorted({texts[t][w] for t, w in near} - self._near.keys()))
        for t, w in near:
            out[t][w] = self._near[texts[t][w]]
        for (t, w, _), ids in zip(jobs, self._masked_top(sequences, jobs)):
            out[t][w] = self._keep(ids, texts[t][w])
        return out

    def _masked_top(self, sequences: list[list[int]], jobs: list[tuple]) -> list[list[int]]:
        """The MLM's k + 1 best whole-word ids for each job (text t, word, position p): text t
        with [MASK] at p. Copies of similar length share a batch (less padding)."""
        order = sorted(range(len(jobs)), key=lambda j: len(sequences[jobs[j][0]]))
        found: list[list[int]] = [[] for _ in jobs]
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            T = max(len(sequences[jobs[j][0]]) for j in batch)
            ids = np.zeros((len(batch), T), dtype=np.int64)                 # (n, T), padded
            mask = np.zeros((len(batch), T), dtype=np.int64)                # (n, T), 1 = real
            for row, j in enumerate(batch):
                seq = sequences[jobs[j][0]]
                ids[row, :len(seq)], mask[row, :len(seq)] = seq, 1
            positions = np.array([jobs[j][2] for j in batch])               # (n,)
            ids[np.arange(len(batch)), positions] = self.mask
            for j, best in zip(batch, self.mlm.top(ids, mask, positions, self.k + 1).tolist()):
                found[j] = best
        return found


def _layout(words: WordTokenizer, text: str) -> tuple[str, list[tuple[str, int, int]]]:
    """The text as WordTokenizer normalises it, and each word with its span in that text."""
    norm = words.normalizer.normalize_str(text)
    return norm, [(w, start, end) for w, (start, end) in words.pre.pre_tokenize_str(norm)]


@functools.lru_cache(maxsize=4096)
def _splits(c: str) -> bool:
    """Whether BERT's pre-tokeniser splits words at character ``c`` (white space, punctuation)."""
    return c.isspace() or c in string.punctuation or unicodedata.category(c).startswith("P")


def _put(before: str, word: str, after: str) -> str:
    """``word`` between the characters ``before`` and ``after`` ('' at an end of the text), with a
    space on a side where it would join its neighbour into one word (``great`` for the ``!`` of
    ``fun!`` gives ``fun great``)."""
    left = " " if before and not (_splits(before) or _splits(word[0])) else ""
    right = " " if after and not (_splits(word[-1]) or _splits(after)) else ""
    return left + word + right


def _text_variants(text: str, norm: str, spans: list, cands: list[tuple[str, ...]], n: int,
                   rng: np.random.Generator, p_replace: float) -> list[str]:
    """``n`` variants of one text: each word with candidates replaced with ``p_replace``."""
    sizes = np.array([len(c) for c in cands], dtype=np.int64)              # (n_words,)
    hits = (rng.random((n, len(spans))) < p_replace) & (sizes > 0)         # (n, n_words) replaced
    picks = (rng.random((n, len(spans))) * sizes).astype(np.int64)         # (n, n_words) which one
    out = []
    for hit, pick in zip(hits, picks):
        if not hit.any():
            out.append(text)
            continue
        variant, cursor = "", 0
        for w in np.flatnonzero(hit).tolist():
            _, start, end = spans[w]
            variant += norm[cursor:start]
            variant += _put(variant[-1:], cands[w][pick[w]], norm[end:end + 1])
            cursor = end
        out.append(variant + norm[cursor:])
    return out


def tinybert_variants(rows: Iterable[tuple], n: int, rng: np.random.Generator, p_replace: float,
                      candidates: Candidates, chunk: int = CHUNK) -> Iterator[tuple]:
    """``n`` variants of each row (text_a, text_b or None), the rows in order, taken ``chunk`` at
    a time (candidates for a whole chunk, then its variants)."""
    words = WordTokenizer()
    total = len(rows) if hasattr(rows, "__len__") else None
    rows = iter(rows)
    with tqdm(total=total, desc="tinybert augmentation", unit="ex", mininterval=5) as bar:
        while batch := list(itertools.islice(rows, chunk)):
            layouts = [[_layout(words, t) if t is not None else None for t in row] for row in batch]
            texts = [[w for w, _, _ in lay[1]] for row in layouts for lay in row if lay is not None]
            found = iter(candidates(texts))
            for row, row_layouts in zip(batch, layouts):
                per_text = [[None] * n if lay is None else
                            _text_variants(text, *lay, next(found), n, rng, p_replace)
                            for text, lay in zip(row, row_layouts)]
                yield from zip(*per_text)
            bar.update(len(batch))
