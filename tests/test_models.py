"""BERT and BiLSTM against hand-written numpy references, padding invariance, and the pretrained MiniLM.

Runs in both runtimes with that runtime's backend (the ``B`` fixture of conftest.py).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tinydata

from kdlib.errors import ConfigError, DataError
from kdlib.models.bert import MASK_VALUE, BertConfig, build_bert, build_layer, extended_mask
from kdlib.models.lstm import LstmConfig, build_bilstm
from kdlib.models.pretrained import load_pretrained_bert, read_pretrained_config, resolve_pretrained
from kdlib.models.weights import load_state_numpy, state_dict_numpy

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=16)


def randomise(model, seed=0, scale=0.3):
    """Give every parameter random values (LayerNorm gains and biases included) so no term hides."""
    rng = np.random.default_rng(seed)
    arrays = {k: (rng.standard_normal(v.shape) * scale).astype(np.float32)
              for k, v in state_dict_numpy(model).items()}
    load_state_numpy(model, arrays)
    return arrays


def tiny_bert(B, seed=0, **overrides):
    model = build_bert(B, BertConfig(**{**TINY, **overrides}))
    randomise(model, seed)
    return model.eval()


def batch(B, lengths, T, vocab=100, seed=1):
    """Right-padded ids (pad 0), mask and alternating segment ids for the given lengths."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), T), np.int64)
    mask = np.zeros((len(lengths), T), np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(1, vocab, n)
        mask[i, :n] = 1
    types = (np.arange(T)[None, :] >= 3).astype(np.int64) * mask
    return ids, mask, types


# ---- numpy references ---------------------------------------------------------------------------

def np_layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def np_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def np_bert_layer(W, p, x, mask, nh, eps):
    """One BERT encoder layer in float64 numpy; W holds the weights, p the key prefix."""
    g = lambda k: W[p + k].astype(np.float64)  # noqa: E731
    lin = lambda h, k: h @ g(k + ".weight").T + g(k + ".bias")  # noqa: E731
    N, T, H = x.shape
    hs = H // nh
    heads = lambda h: h.reshape(N, T, nh, hs).transpose(0, 2, 1, 3)  # noqa: E731  (N, nh, T, hs)
    q, k, v = (heads(lin(x, f"attention.self.{n}")) for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs) + ((1.0 - mask) * MASK_VALUE)[:, None, None, :]
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(N, T, H)
    a = np_layernorm(lin(ctx, "attention.output.dense") + x, g("attention.output.LayerNorm.weight"),
                     g("attention.output.LayerNorm.bias"), eps)
    inter = np_gelu(lin(a, "intermediate.dense"))
    y = np_layernorm(lin(inter, "output.dense") + a, g("output.LayerNorm.weight"),
                     g("output.LayerNorm.bias"), eps)
    return y, scores


def np_lstm_final(W, x, n, suffix):
    """Final state of one LSTM direction over the first ``n`` steps of x (T, E); gates i, f, g, o."""
    g = lambda k: W[f"lstm.{k}{suffix}"].astype(np.float64)  # noqa: E731
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    steps = x[:n] if suffix == "" else x[:n][::-1]
    h = np.zeros(g("weight_hh_l0").shape[1])
    c = np.zeros_like(h)
    for xt in steps:
        z = g("weight_ih_l0") @ xt + g("bias_ih_l0") + g("weight_hh_l0") @ h + g("bias_hh_l0")
        i, f, gg, o = np.split(z, 4)
        c = sig(f) * c + sig(i) * np.tanh(gg)
        h = sig(o) * np.tanh(c)
    return h


# ---- BERT ---------------------------------------------------------------------------------------

def test_config_from_hf_dict_and_back():
    hf = json.loads((resolve_pretrained("builtin:minilm-l6") / "config.json").read_text())
    cfg = BertConfig.from_dict(hf)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size,
            cfg.vocab_size) == (6, 384, 12, 1536, 30522)
    assert cfg.num_labels == 2
    assert BertConfig.from_dict(cfg.to_dict()) == cfg
    assert BertConfig.from_dict({**TINY, "id2label": {"0": "a", "1": "b", "2": "c"}}).num_labels == 3
    with pytest.raises(ConfigError, match="intermediate_size"):
        BertConfig.from_dict({k: v for k, v in TINY.items() if k != "intermediate_size"})
    with pytest.raises(ConfigError, match="multiple"):
        BertConfig(**{**TINY, "num_attention_heads": 5})
    with pytest.raises(ConfigError, match="relative_key"):
        BertConfig.from_dict({**TINY, "position_embedding_type": "relative_key"})


def test_parameter_names_are_hf_keys(B):
    keys = set(state_dict_numpy(build_bert(B, BertConfig(**TINY))))
    for k in ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
              "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.bias",
              "encoder.layer.1.attention.self.query.weight", "encoder.layer.1.attention.self.value.bias",
              "encoder.layer.0.attention.output.dense.weight",
              "encoder.layer.0.attention.output.LayerNorm.weight",
              "encoder.layer.1.intermediate.dense.weight", "encoder.layer.1.output.dense.bias",
              "encoder.layer.1.output.LayerNorm.weight", "pooler.dense.weight", "classifier.weight"):
        assert k in keys, k
    assert len(keys) == 5 + 16 * 2 + 2 + 2


def test_init_is_bert_like(B):
    W = state_dict_numpy(build_bert(B, BertConfig(**TINY)))
    assert np.all(W["embeddings.word_embeddings.weight"][0] == 0)          # padding row
    assert abs(W["encoder.layer.0.intermediate.dense.weight"].std() - 0.02) < 0.003
    assert np.all(W["encoder.layer.0.output.LayerNorm.weight"] == 1)
    assert np.all(W["classifier.bias"] == 0)


def test_encoder_layer_matches_numpy_reference(B):
    model = tiny_bert(B)
    W = state_dict_numpy(model)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 6, 32)).astype(np.float32)
    mask = np.array([[1] * 6, [1] * 4 + [0] * 2, [1] * 1 + [0] * 5], np.float32)
    with B.no_grad():
        y, scores = model.encoder.layer[1](B.tensor(x), extended_mask(B.tensor(mask)), need_scores=True)
    y_ref, s_ref = np_bert_layer(W, "encoder.layer.1.", x.astype(np.float64), mask, 4, 1e-12)
    np.testing.assert_allclose(B.to_numpy(scores), s_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(B.to_numpy(y), y_ref, rtol=1e-5, atol=1e-5)


def test_extended_mask(B):
    ext = B.to_numpy(extended_mask(B.tensor(np.array([[1, 1, 0]]))))
    assert ext.shape == (1, 1, 1, 3)
    np.testing.assert_array_equal(ext.ravel(), [0.0, 0.0, MASK_VALUE])


def test_output_all_matches_fast_path_and_manual_loop(B):
    model = tiny_bert(B)
    ids, mask, types = batch(B, [7, 4, 2], 7)
    ids_t, mask_t, types_t = B.tensor(ids), B.tensor(mask), B.tensor(types)
    with B.no_grad():
        fast = model(ids_t, mask_t, types_t)
        full = model(ids_t, mask_t, types_t, output_all=True)
        h = model.embed(ids_t, types_t)
        ext = extended_mask(mask_t)
        for layer in model.encoder.layer:
            h, _ = layer(h, ext)
        manual = model.head(h)
    assert set(fast) == {"logits"}
    assert set(full) == {"logits", "hidden", "attention"}
    np.testing.assert_allclose(B.to_numpy(fast["logits"]), B.to_numpy(full["logits"]), atol=1e-6)
    np.testing.assert_allclose(B.to_numpy(manual), B.to_numpy(full["logits"]), atol=1e-6)
    assert B.to_numpy(full["logits"]).shape == (3, 2)
    assert len(full["hidden"]) == 3 and len(full["attention"]) == 2
    assert all(tuple(t.shape) == (3, 7, 32) for t in full["hidden"])
    assert all(tuple(t.shape) == (3, 4, 7, 7) for t in full["attention"])
    np.testing.assert_allclose(B.to_numpy(full["hidden"][-1]), B.to_numpy(h), atol=1e-6)
    att = B.to_numpy(full["attention"][0])
    assert np.all(att[1, :, :, 4:] < MASK_VALUE / 2) and np.all(np.abs(att[1, :, :, :4]) < 100)


def test_padding_does_not_change_outputs(B):
    model = tiny_bert(B)
    ids, mask, types = batch(B, [5, 3], 5)
    pad = lambda a: np.concatenate([a, np.zeros((2, 4), np.int64)], 1)  # noqa: E731  4 more pads
    with B.no_grad():
        short = model(B.tensor(ids), B.tensor(mask), B.tensor(types), output_all=True)
        long = model(B.tensor(pad(ids)), B.tensor(pad(mask)), B.tensor(pad(types)), output_all=True)
    np.testing.assert_allclose(B.to_numpy(long["logits"]), B.to_numpy(short["logits"]), atol=1e-5)
    for hs, hl in zip(short["hidden"], long["hidden"]):
        np.testing.assert_allclose(B.to_numpy(hl)[0, :5], B.to_numpy(hs)[0, :5], atol=1e-5)
        np.testing.assert_allclose(B.to_numpy(hl)[1, :3], B.to_numpy(hs)[1, :3], atol=1e-5)


def test_regression_head_and_layer_swap(B):
    model = tiny_bert(B, num_labels=1)
    ids, mask, types = batch(B, [6, 6], 6)
    args = (B.tensor(ids), B.tensor(mask), B.tensor(types))
    with B.no_grad():
        before = B.to_numpy(model(*args)["logits"])
        assert before.shape == (2, 1)
        model.encoder.layer[1] = build_layer(B, model.config)   # Theseus-style replacement
        after = B.to_numpy(model(*args)["logits"])
    assert "encoder.layer.1.attention.self.query.weight" in state_dict_numpy(model)
    assert not np.allclose(before, after)


def test_dropout_is_active_in_train_mode_only(B):
    model = tiny_bert(B, hidden_dropout_prob=0.5)
    ids, mask, types = batch(B, [6, 6], 6)
    args = (B.tensor(ids), B.tensor(mask), B.tensor(types))
    with B.no_grad():
        e1, e2 = (B.to_numpy(model(*args)["logits"]) for _ in range(2))
        model.train()
        t1, t2 = (B.to_numpy(model(*args)["logits"]) for _ in range(2))
    np.testing.assert_array_equal(e1, e2)
    assert not np.allclose(t1, t2)


# ---- pretrained ----------------------------------------------------------------------------------

def test_resolve_pretrained(tmp_path):
    folder = resolve_pretrained("builtin:minilm-l6")
    assert (folder / "model.safetensors").is_file() and folder.name == "model"
    with pytest.raises(ConfigError, match="builtin:minilm-l6"):
        resolve_pretrained("builtin:bert-huge")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="model.safetensors, vocab.txt"):
        resolve_pretrained(str(tmp_path))
    assert resolve_pretrained(folder) == folder
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_pretrained(str(tmp_path / "nowhere"))


def _mean_pooled(B, model, tokenizer, sentences):
    enc = tokenizer.encode_batch(sentences)
    T = max(len(e.ids) for e in enc)
    ids = np.array([e.ids + [0] * (T - len(e.ids)) for e in enc])
    mask = np.array([[1] * len(e.ids) + [0] * (T - len(e.ids)) for e in enc])
    with B.no_grad():
        last = B.to_numpy(model(B.tensor(ids), B.tensor(mask), output_all=True)["hidden"][-1])
    pooled = (last * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_load_pretrained_minilm_embeds_meaning(B):
    from safetensors.numpy import load_file
    from tokenizers import BertWordPieceTokenizer

    folder = resolve_pretrained("builtin:minilm-l6")
    lines = []
    model, cfg = load_pretrained_bert(B, folder, num_labels=3, log=lines.append)
    model.eval()
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_labels) == (6, 384, 3)
    assert any("initialised classifier" in line for line in lines), lines
    W = state_dict_numpy(model)
    raw = load_file(str(folder / "model.safetensors"))
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.LayerNorm.bias",
                "pooler.dense.weight"):
        np.testing.assert_array_equal(W[key], raw[key])
    assert W["classifier.weight"].shape == (3, 384)

    tok = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=True)
    e = _mean_pooled(B, model, tok, ["A man is playing a guitar.",
                                     "Someone is playing an acoustic guitar.",
                                     "The stock market fell sharply on Monday.",
                                     "Share prices dropped steeply at the start of the week."])
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 3] + 0.3
    assert sim[2, 3] > sim[0, 3] + 0.3 and sim[2, 3] > sim[1, 2] + 0.3


def _hf_folder(tmp_path, arrays, cfg):
    from safetensors.numpy import save_file
    tmp_path.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({**cfg.to_dict(), "architectures": ["BertModel"],
                                                      "model_type": "bert", "use_cache": True}))
    return tmp_path


def test_load_pretrained_maps_keys_and_checks_shapes(B, tmp_path):
    src = tiny_bert(B, seed=5)
    W = state_dict_numpy(src)
    # HF BertForPreTraining layout: "bert." prefix, old gamma/beta names, position_ids, no classifier,
    # plus a pre-training head we do not use.
    hf = {}
    for k, v in W.items():
        if k.startswith(("classifier.", "pooler.")):
            continue
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma") if k.startswith("embeddings.") else k
        hf["bert." + k] = v
    hf["bert.embeddings.position_ids"] = np.arange(16, dtype=np.int64)[None]
    hf["cls.predictions.bias"] = np.zeros(100, np.float32)
    folder = _hf_folder(tmp_path / "hf", hf, src.config)
    lines = []
    model, cfg = load_pretrained_bert(B, folder, num_labels=2, log=lines.append)
    got = state_dict_numpy(model)
    for k, v in W.items():
        if not k.startswith(("classifier.", "pooler.")):
            np.testing.assert_array_equal(got[k], v, err_msg=k)
    text = "\n".join(lines)
    assert "initialised classifier, pooler" in text and "pooler.dense.weight" in text
    assert "cls.predictions.bias" in text and "position_ids" not in text

    bad = dict(hf, **{"bert.encoder.layer.1.output.dense.weight": np.zeros((32, 63), np.float32)})
    bad_folder = _hf_folder(tmp_path / "bad", bad, src.config)
    with pytest.raises(DataError) as err:
        load_pretrained_bert(B, bad_folder, num_labels=2, log=lines.append)
    msg = str(err.value)
    assert "encoder.layer.1.output.dense.weight" in msg and "(32, 63)" in msg and "(32, 64)" in msg
    assert str(bad_folder / "model.safetensors") in msg and "\n" not in msg

    holes = {k: v for k, v in hf.items() if "layer.0.intermediate" not in k}
    with pytest.raises(DataError, match="encoder.layer.0.intermediate.dense"):
        load_pretrained_bert(B, _hf_folder(tmp_path / "holes", holes, src.config), 2, log=lines.append)
    (tmp_path / "hf" / "config.json").write_text("{not json")
    with pytest.raises(DataError, match="config.json"):
        load_pretrained_bert(B, folder, 2, log=lines.append)


SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
         "max_position_embeddings", "type_vocab_size")


@pytest.mark.parametrize("key", SIZES)
@pytest.mark.parametrize("bad", ["text", 0, 3.5, True], ids=["a string", "zero", "a fraction", "true"])
def test_a_pretrained_size_that_is_not_a_positive_integer_is_one_line_naming_the_key(key, bad, B, tmp_path):
    folder = tinydata.write_pretrained(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config[key] = str(config[key]) if bad == "text" else bad          # e.g. "hidden_size": "32"
    (folder / "config.json").write_text(json.dumps(config))
    shown = json.dumps(config[key])
    for read in (read_pretrained_config, lambda f: load_pretrained_bert(B, f, 2, log=print)):
        with pytest.raises(DataError) as err:
            read(folder)
        assert str(err.value) == f"{folder / 'config.json'}: {key} must be a positive integer, got {shown}"


# ---- BiLSTM --------------------------------------------------------------------------------------

LSTM_TINY = dict(vocab_size=50, embedding_dim=8, hidden_size=6, fc_size=10, num_labels=3)


def tiny_lstm(B, seed=0):
    model = build_bilstm(B, LstmConfig(**LSTM_TINY))
    W = randomise(model, seed, scale=0.5)
    return model.eval(), W


def test_bilstm_matches_numpy_reference(B):
    model, W = tiny_lstm(B)
    lengths = [7, 3, 5, 1, 7]
    ids, mask, _ = batch(B, lengths, 7, vocab=50)
    with B.no_grad():
        feats = B.to_numpy(model.encode(B.tensor(ids), B.tensor(mask)))
        logits = B.to_numpy(model(B.tensor(ids), B.tensor(mask))["logits"])
    emb = W["embedding.weight"].astype(np.float64)
    ref = np.stack([np.concatenate([np_lstm_final(W, emb[ids[b]], n, ""),
                                    np_lstm_final(W, emb[ids[b]], n, "_reverse")])
                    for b, n in enumerate(lengths)])
    np.testing.assert_allclose(feats, ref, atol=1e-5)
    z = np.maximum(ref @ W["fc.weight"].T + W["fc.bias"], 0.0)
    np.testing.assert_allclose(logits, z @ W["classifier.weight"].T + W["classifier.bias"], atol=1e-5)
    assert list(state_dict_numpy(model)) == [
        "embedding.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0",
        "lstm.weight_ih_l0_reverse", "lstm.weight_hh_l0_reverse", "lstm.bias_ih_l0_reverse",
        "lstm.bias_hh_l0_reverse", "fc.weight", "fc.bias", "classifier.weight", "classifier.bias"]


def test_bilstm_ignores_appended_padding(B):
    model, _ = tiny_lstm(B, seed=2)
    ids, mask, _ = batch(B, [4, 2, 6], 6, vocab=50)
    pad = lambda a: np.concatenate([a, np.zeros((3, 5), np.int64)], 1)  # noqa: E731
    with B.no_grad():
        short = B.to_numpy(model(B.tensor(ids), B.tensor(mask))["logits"])
        long = B.to_numpy(model(B.tensor(pad(ids)), B.tensor(pad(mask)), None, output_all=True)["logits"])
        # padding holding real-looking ids must be ignored too
        junk = pad(ids)
        junk[:, 6:] = 7
        junky = B.to_numpy(model(B.tensor(junk), B.tensor(pad(mask)))["logits"])
    assert short.shape == (3, 3)
    np.testing.assert_allclose(long, short, atol=1e-6)
    np.testing.assert_allclose(junky, short, atol=1e-6)


def test_bilstm_trains(B):
    """Gradients reach every parameter through the packed LSTM (sort and unsort included)."""
    model, _ = tiny_lstm(B, seed=4)
    model.train()
    ids, mask, _ = batch(B, [5, 2, 7], 7, vocab=50)
    loss = model(B.tensor(ids), B.tensor(mask))["logits"].sum()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and np.abs(B.to_numpy(p.grad)).sum() > 0, name


def test_pretrained_folder_may_start_with_a_tilde(tmp_path, monkeypatch):
    from kdlib.models.pretrained import resolve_pretrained
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / "models" / "bert"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        (folder / name).write_text("{}")
    assert resolve_pretrained("~/models/bert") == folder
