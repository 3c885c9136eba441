"""TinyBERT's augmentation of transfer sets (kdlib.data.augment_tinybert, augment: tinybert): the
masked-LM and the embedding-neighbour candidates against references computed here, seeded and
reproducible variants, what build keeps of them, and bad input as one line. Tiny HF-format BERT
folders with and without a masked-LM head are written by the tests; no network, no GPU."""
from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import tinydata
from conftest import CARVE_ARGS, HAS_TORCH, error_lines

from kdlib import config
from kdlib.data import augment_tinybert as tb
from kdlib.data import transfer
from kdlib.data.convert import WordTokenizer, wordpiece
from kdlib.errors import ConfigError, DataError
from kdlib.models.pretrained import load_pretrained_bert
from workflow_scripts import transfer_set

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]", "[unused2]"]
WORDS = ("the a an good bad great awful movie film play act story plot actor music scene fun dull "
         "boring funny sad happy long short slow fast really very not was is and but it this that "
         "of to in with too so more most best worst love hate watch see like made make time year "
         "every one two , . ! ?").split()
PIECES = ["##s", "##ing", "##ed", "##ly", "##er"]
VOCAB = SPECIALS + WORDS + PIECES
K = 5
UNK = VOCAB.index("[UNK]")
ROWS = [("The good movie was really fun!", None),
        ("A slow, boring plot; the acting is dull.", None),       # acting: act ##ing
        ("It played too long and zzz was not funny", None),       # played: play ##ed; zzz: [UNK]
        ("Best film of the year", "every scene is great")]


def write_folder(folder, head: str | None, seed: int = 0):
    """A tiny HF BERT folder. ``head``: None (no masked-LM head), ``"explicit"`` (a decoder of its
    own, ``bert.``-prefixed body) or ``"tied"`` (decoder tied to the word embeddings, the old
    LayerNorm gamma/beta names, keys without ``bert.``)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = tinydata.hf_config(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=64, max_position_embeddings=32)
    body = tinydata.random_bert_arrays(cfg, seed, std=0.3)
    rng = np.random.default_rng(seed + 1)
    H, V = cfg["hidden_size"], len(VOCAB)
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    arrays = {("bert." if head != "tied" else "") + k: v for k, v in body.items()}
    if head is not None:
        ln = ("gamma", "beta") if head == "tied" else ("weight", "bias")
        arrays.update({"cls.predictions.transform.dense.weight": f(H, H) * 0.3,
                       "cls.predictions.transform.dense.bias": f(H) * 0.1,
                       f"cls.predictions.transform.LayerNorm.{ln[0]}": 1 + f(H) * 0.1,
                       f"cls.predictions.transform.LayerNorm.{ln[1]}": f(H) * 0.1,
                       "cls.predictions.bias": f(V) * 0.5})
        if head == "explicit":
            arrays["cls.predictions.decoder.weight"] = f(V, H)
    save_file(arrays, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    return {head: write_folder(root / str(head), head) for head in (None, "explicit", "tied")}


# ---- references, computed here -------------------------------------------------------------------

def is_whole(token: str) -> bool:
    return not token.startswith("##") and not (token.startswith("[") and token.endswith("]"))


WHOLE = np.array([is_whole(t) for t in VOCAB])


@functools.lru_cache(maxsize=None)
def tokenizer(folder):
    return wordpiece(folder / "vocab.txt", 64)


@functools.lru_cache(maxsize=None)
def weights(folder) -> dict[str, np.ndarray]:
    """float64 arrays by HF key, LayerNorm gamma/beta as weight/bias."""
    from safetensors.numpy import load_file
    return {k.replace("gamma", "weight").replace("beta", "bias"): v.astype(np.float64)
            for k, v in load_file(str(folder / "model.safetensors")).items()}


def pieces_of(folder, word: str) -> list[int]:
    return tokenizer(folder).encode(word, add_special_tokens=False).ids


def top_k(scores: np.ndarray, word: str) -> set[str]:
    """The K best whole words by ``scores`` (V,), the word itself left out."""
    ranked = [VOCAB[i] for i in np.argsort(-scores, kind="stable") if WHOLE[i] and VOCAB[i] != word]
    return set(ranked[:K])


def neighbour_reference(folder, word: str) -> set[str]:
    E = next(v for k, v in weights(folder).items() if k.endswith("embeddings.word_embeddings.weight"))
    v = E[pieces_of(folder, word)].mean(0)
    cos = E @ v / (np.linalg.norm(E, axis=1) * np.linalg.norm(v) + 1e-30)          # (V,)
    return top_k(cos, word)


@functools.lru_cache(maxsize=None)
def reference_model(B, folder):
    model, cfg = load_pretrained_bert(B, folder, 2, log=lambda line: None)
    return model.eval(), cfg


def mlm_reference(B, folder, words: list[str], i: int) -> set[str]:
    """The head applied in float64 numpy to the encoder's last state at word ``i``, masked, of
    this text alone (no batch, no padding)."""
    arrays = weights(folder)
    model, cfg = reference_model(B, folder)
    ids = [VOCAB.index("[CLS]")] + [p for w in words for p in pieces_of(folder, w)] + [VOCAB.index("[SEP]")]
    pos = 1 + sum(len(pieces_of(folder, w)) for w in words[:i])
    ids[pos] = VOCAB.index("[MASK]")
    with B.no_grad():
        h = B.to_numpy(model(B.tensor(np.array([ids])), output_hidden=True)["hidden"][-1])[0, pos]
    p = "cls.predictions."
    t = arrays[p + "transform.dense.weight"] @ h + arrays[p + "transform.dense.bias"]
    t = 0.5 * t * (1 + np.vectorize(math.erf)(t / math.sqrt(2)))                     # exact gelu
    t = (t - t.mean()) / np.sqrt(t.var() + cfg.layer_norm_eps)
    t = t * arrays[p + "transform.LayerNorm.weight"] + arrays[p + "transform.LayerNorm.bias"]
    decoder = arrays.get(p + "decoder.weight")
    if decoder is None:
        decoder = next(v for k, v in arrays.items() if k.endswith("word_embeddings.weight"))
    return top_k(decoder @ t + arrays[p + "bias"], word=words[i])


def replacements(row_text: str, variant: str) -> list[tuple[int, str]]:
    """(position, new word) of each word a variant replaced (words line up one for one)."""
    words = WordTokenizer()
    old, new = words(row_text), words(variant)
    assert len(old) == len(new), (row_text, variant)
    return [(i, b) for i, (a, b) in enumerate(zip(old, new)) if a != b]


def variants_of(candidates, rows=ROWS, n=20, seed=0, p=0.4):
    return list(tb.tinybert_variants(rows, n, np.random.default_rng(seed), p, candidates))


# ---- candidates ----------------------------------------------------------------------------------

@pytest.mark.parametrize("head", ["explicit", "tied"])
def test_single_piece_words_take_the_masked_lms_top_k(B, folders, head):
    folder = folders[head]
    cands = tb.Candidates(folder, K, lambda: B, batch_size=3, log=lambda line: None)  # 3: many batches
    assert cands.mlm is not None
    texts = [WordTokenizer()(t) for row in ROWS for t in row if t is not None]
    found = cands(texts)
    checked = 0
    for words, per_word in zip(texts, found):
        for i, (word, got) in enumerate(zip(words, per_word)):
            ids = pieces_of(folder, word)
            if ids == [UNK]:
                assert got == ()
            elif len(ids) == 1:
                assert set(got) == mlm_reference(B, folder, words, i), (word, words)
                checked += 1
            else:                                   # several pieces: the embedding neighbours
                assert set(got) == neighbour_reference(folder, word), word
            assert word not in got and len(got) == len(set(got)) == (0 if ids == [UNK] else K)
    assert checked > 20
    # every replacement in the variants is one of its word's candidates
    assert replaced_share(ROWS, variants_of(cands), found) > 0.25


def replaced_share(rows, variants, found, n=20) -> float:
    """Check that every replaced word of ``variants`` (``n`` per row) is among its candidates in
    ``found`` (per text of the rows, per word); return the share of replaceable words replaced."""
    assert len(variants) == n * len(rows)
    found = iter(found)
    replaced = replaceable = 0
    for r, row in enumerate(rows):
        for j, text in enumerate(row):
            if text is None:
                assert all(v[j] is None for v in variants[n * r:n * r + n])
                continue
            per_word = next(found)
            for variant in variants[n * r:n * r + n]:
                for i, new in replacements(text, variant[j]):
                    assert new in per_word[i], (text, variant[j])
                    replaced += 1
                replaceable += sum(1 for c in per_word if c)
    return replaced / replaceable


def test_without_a_head_every_word_takes_its_embedding_neighbours(folders):
    folder = folders[None]
    cands = tb.Candidates(folder, K, make_backend=None, log=lambda line: None)
    assert cands.mlm is None
    words = WordTokenizer()(ROWS[2][0]) + ["movies", "slowly"]
    for word, got in zip(words, cands([words])[0]):
        if pieces_of(folder, word) == [UNK]:
            assert got == ()
        else:
            assert set(got) == neighbour_reference(folder, word) and word not in got
    texts = [WordTokenizer()(t) for row in ROWS for t in row if t is not None]
    found = [[tuple(neighbour_reference(folder, w)) if pieces_of(folder, w) != [UNK] else () for w in words]
             for words in texts]
    assert 0.3 < replaced_share(ROWS, variants_of(cands), found) < 0.5        # p_replace 0.4


def test_a_folder_with_a_head_but_no_backend_uses_the_embedding_path(folders):
    cands = tb.Candidates(folders["explicit"], K, log=lambda line: None)
    assert cands.mlm is None
    assert set(cands([["good"]])[0][0]) == neighbour_reference(folders["explicit"], "good")


def test_replacements_keep_words_apart_and_the_text_in_place(folders):
    assert tb._put("n", "great", "") == " great"            # the ! of "fun!"
    assert tb._put("", "good", ",") == "good"
    assert tb._put(" ", ",", "x") == ","
    assert tb._put("a", "b", "c") == " b "
    cands = tb.Candidates(folders[None], K, log=lambda line: None)
    row = ("Fun!Fun", None)
    for (variant, _) in variants_of(cands, rows=[row], n=50, p=1.0):
        assert len(WordTokenizer()(variant)) == 3


# ---- variants and the set ------------------------------------------------------------------------

def test_variants_are_seeded(B, folders):
    cands = tb.Candidates(folders["explicit"], K, lambda: B, log=lambda line: None)
    assert variants_of(cands, seed=1) == variants_of(cands, seed=1)
    assert variants_of(cands, seed=1) != variants_of(cands, seed=2)


def test_the_set_file_is_byte_identical_for_one_seed(B, folders, tmp_path):
    def build(seed, name):
        cands = tb.Candidates(folders["tied"], K, lambda: B, log=lambda line: None)
        spec = transfer.TransferSpec.from_dict("t", {"augment": "tinybert", "seed": seed})
        transfer.build(spec, ROWS[:3], [], tmp_path / name, False, tinybert=cands)
        return (tmp_path / name).read_bytes()
    assert build(3, "a.tsv") == build(3, "b.tsv")
    assert build(3, "a.tsv") != build(4, "c.tsv")


def test_p_replace_zero_gives_the_training_texts_which_build_drops(folders, tmp_path):
    cands = tb.Candidates(folders[None], K, log=lambda line: None)
    assert variants_of(cands, n=3, p=0.0) == [row for row in ROWS for _ in range(3)]
    spec = transfer.TransferSpec.from_dict("t", {"augment": "tinybert", "p_replace": 0.0, "variants": 3,
                                                 "unlabeled": "x"})
    counts = transfer.build(spec, ROWS[:3], [], tmp_path / "t.tsv", False, [("new text", None)],
                            tinybert=cands)
    assert counts["augmented"] == 9 and counts["dropped_train"] == 9 and counts["kept"] == 1


def test_build_never_emits_a_dev_text(folders, tmp_path):
    cands = tb.Candidates(folders[None], K, log=lambda line: None)
    spec = transfer.TransferSpec.from_dict("t", {"augment": "tinybert", "variants": 30, "candidates": 2})
    train = [("good movie", None), ("bad film!", None)]
    transfer.build(spec, train, [], tmp_path / "all.tsv", False, tinybert=cands)
    every = (tmp_path / "all.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert len(every) > 4
    dev = [(t.upper(), None) for t in every[::2]] + [(every[1] + "  ", None)]
    counts = transfer.build(spec, train, dev, tmp_path / "t.tsv", False, tinybert=cands)
    kept = {transfer.normalise(t) for t in (tmp_path / "t.tsv").read_text(encoding="utf-8").splitlines()[1:]}
    assert not kept & {transfer.normalise(t) for t, _ in dev}
    assert counts["dropped_dev"] >= len(dev) and kept


def test_pairs_augment_both_texts(folders):
    cands = tb.Candidates(folders[None], K, log=lambda line: None)
    variants = variants_of(cands, rows=[ROWS[3]], n=30)
    assert {a != ROWS[3][0] for a, _ in variants} == {True, False}
    assert {b != ROWS[3][1] for _, b in variants} == {True, False}


# ---- bad input -----------------------------------------------------------------------------------

def test_bad_folders_are_one_line_errors(folders, tmp_path):
    (tmp_path / "novocab").mkdir()
    with pytest.raises(DataError, match="vocab.txt: vocabulary file not found"):
        tb.Candidates(tmp_path / "novocab", K)
    from safetensors.numpy import load_file, save_file
    arrays = load_file(str(folders["explicit"] / "model.safetensors"))
    for name, drop, message in (("noemb", "bert.embeddings.word_embeddings.weight", "no 2-D embeddings"),
                                ("halfhead", "cls.predictions.bias", "head without cls.predictions.bias")):
        folder = write_folder(tmp_path / name, None)
        save_file({k: v for k, v in arrays.items() if k != drop}, str(folder / "model.safetensors"))
        with pytest.raises(DataError, match=message):
            tb.Candidates(folder, K)
    folder = write_folder(tmp_path / "nomask", None)
    (folder / "vocab.txt").write_text("\n".join(t for t in VOCAB if t != "[MASK]"), encoding="utf-8")
    with pytest.raises(DataError, match=r"no \[MASK\] token"):
        tb.Candidates(folder, K)
    spec = transfer.TransferSpec.from_dict("t", {"augment": "tinybert"})
    with pytest.raises(ConfigError, match="augment: tinybert needs the pretrained folder"):
        transfer.build(spec, ROWS, [], tmp_path / "t.tsv", False)
    with pytest.raises(DataError, match="unknown augment 'glove'; known: tang, tinybert"):
        transfer.build(transfer.TransferSpec("t", augment="glove"), ROWS, [], tmp_path / "t.tsv", False)


def test_the_config_takes_tinybert_and_its_keys():
    cfg = config.validate({"transfer": {"aug": {"augment": "tinybert"}}})
    assert cfg["transfer"]["aug"]["p_replace"] == 0.4 and cfg["transfer"]["aug"]["candidates"] == 15
    assert transfer.TransferSpec.from_dict("aug", cfg["transfer"]["aug"]).candidates == 15
    for bad in ({"augment": "glove"}, {"augment": "tinybert", "p_replace": 1.5},
                {"augment": "tinybert", "candidates": 0}):
        with pytest.raises(ConfigError, match="transfer.aug"):
            config.validate({"transfer": {"aug": bad}})


# ---- the stage -----------------------------------------------------------------------------------

@pytest.fixture()
def own_task(tmp_path):
    own = tmp_path / "own"
    own.mkdir()
    (own / "train.tsv").write_text("text\tlabel\nthe good movie was fun\tpos\na dull, slow plot\tneg\n",
                                   encoding="utf-8")
    (own / "dev.tsv").write_text("text\tlabel\nthe great film\tpos\n", encoding="utf-8")
    definition = {"train": str(own / "train.tsv"), "dev": str(own / "dev.tsv"), "text_a": "text",
                  "label": "label"}
    return ["--task", "own", "--custom", json.dumps(definition), "--glue-root", "data/glue", *CARVE_ARGS,
            "--name", "aug", "--out", str(tmp_path / "aug.tsv")]


def test_the_stage_builds_a_tinybert_set_on_this_backend(own_task, folders, tmp_path, capsys):
    backend = "torch" if HAS_TORCH else "oneflow"
    definition = json.dumps({"augment": "tinybert", "variants": 5, "candidates": 3})
    args = own_task + ["--definition", definition, "--pretrained", str(folders["explicit"]),
                       "--backend", backend, "--device", "cpu", "--precision", "fp32", "--threads", "1",
                       "--batch-size", "4"]
    assert transfer_set.main(args) == 0
    err = capsys.readouterr().err
    assert "masked LM (single-piece words)" in err and f"{backend} on cpu" in err
    kept = (tmp_path / "aug.tsv").read_text(encoding="utf-8").splitlines()
    assert kept[0] == "text_a" and 1 < len(kept) <= 11
    assert "transfer set aug: " in err.splitlines()[-1]


def test_the_stage_refuses_a_tinybert_set_without_a_usable_folder(own_task, tmp_path, capsys):
    definition = ["--definition", json.dumps({"augment": "tinybert"})]
    assert transfer_set.main(own_task + definition) == 1
    assert "augment: tinybert needs the pretrained folder" in error_lines(capsys)[0]
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare/config.json").write_text("{}")
    (tmp_path / "bare/model.safetensors").write_bytes(b"")
    assert transfer_set.main(own_task + definition + ["--pretrained", str(tmp_path / "bare")]) == 1
    assert "lacks vocab.txt" in error_lines(capsys)[0]
