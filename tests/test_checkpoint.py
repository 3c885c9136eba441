"""Checkpoints: round trips, one-line errors on broken folders, atomic writes, and the cross-backend
check (this runtime saves, the other runtime loads, and back).

The cross-backend test runs this file's ``peer_main`` in the other runtime as a subprocess::

    <other python> tests/test_checkpoint.py <backend> <work folder> <backend that saved first>
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdlib.errors import DataError
from kdlib.models.bert import BertConfig, build_bert
from kdlib.models.checkpoint import load_checkpoint, save_checkpoint
from kdlib.models.lstm import LstmConfig, build_bilstm
from kdlib.models.weights import load_state_numpy, state_dict_numpy

REPO = Path(__file__).resolve().parents[1]
PYTHONS = {"torch": REPO / ".venv" / "bin" / "python", "oneflow": REPO / ".venv-oneflow" / "bin" / "python"}
BERT_TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=16, num_labels=3)
LSTM_TINY = dict(vocab_size=100, embedding_dim=8, hidden_size=6, fc_size=10, num_labels=2)
CROSS_TOL = 1e-4


def fixed_inputs():
    """Right-padded ids, mask and segment ids, identical in every runtime."""
    rng = np.random.RandomState(7)
    lengths = [9, 4, 6, 1]
    ids = np.zeros((4, 9), np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.randint(1, 100, n)
    mask = (ids != 0).astype(np.int64)
    types = (np.arange(9)[None] >= 5).astype(np.int64) * mask
    return ids, mask, types


def build_models(B, seed):
    """A tiny BERT and BiLSTM in eval mode, with seeded N(0, 0.3) weights so logits are O(1)."""
    rng = np.random.RandomState(seed)
    models = {"bert": build_bert(B, BertConfig(**BERT_TINY)).eval(),
              "bilstm": build_bilstm(B, LstmConfig(**LSTM_TINY)).eval()}
    for model in models.values():
        load_state_numpy(model, {k: (rng.standard_normal(v.shape) * 0.3).astype(np.float32)
                                 for k, v in state_dict_numpy(model).items()})
    return models


def logits_of(B, model):
    ids, mask, types = fixed_inputs()
    with B.no_grad():
        return B.to_numpy(model(B.tensor(ids), B.tensor(mask), B.tensor(types))["logits"])


def save_own(B, work: Path, seed: int) -> None:
    """Save this backend's models to work/<backend>_<kind>/ and their logits to work/<backend>_logits.npz."""
    logits = {}
    for kind, model in build_models(B, seed).items():
        save_checkpoint(model, work / f"{B.name}_{kind}", {"saved_by": B.name}, B)
        logits[kind] = logits_of(B, model)
    np.savez(work / f"{B.name}_logits.npz", **logits)


def load_peer(B, work: Path, peer: str) -> dict[str, np.ndarray]:
    """Logits of the peer backend's checkpoints, computed by this backend."""
    out = {}
    for kind in ("bert", "bilstm"):
        model, config = load_checkpoint(B, work / f"{peer}_{kind}")
        assert config["saved_by"] == peer and config["model_type"] == kind
        out[kind] = logits_of(B, model)
    return out


def peer_main(argv):
    """The other runtime's half: load the first runtime's checkpoints, then save its own."""
    from kdlib.backend import load
    name, work, first = argv[0], Path(argv[1]), argv[2]
    B = load(name, "cpu")
    np.savez(work / f"{name}_loaded_{first}.npz", **load_peer(B, work, first))
    save_own(B, work, seed=11)


# ---- in-runtime behaviour ------------------------------------------------------------------------

def test_round_trip_and_config(B, tmp_path):
    for kind, model in build_models(B, 0).items():
        folder = save_checkpoint(model, tmp_path / kind / "ckpt", {"task": "sst2", "labels": ["0", "1"]}, B)
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
        assert sorted(p.name for p in folder.parent.iterdir()) == ["ckpt"]   # no temp folders left
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == kind and config["task"] == "sst2"
        assert config["vocab_size"] == 100
        loaded, config2 = load_checkpoint(B, folder)
        assert config2 == config and loaded.config == model.config
        assert not loaded.training
        np.testing.assert_array_equal(logits_of(B, loaded), logits_of(B, model))
        for k, v in state_dict_numpy(model).items():
            np.testing.assert_array_equal(state_dict_numpy(loaded)[k], v)


def test_saved_files_get_the_usual_permissions(B, tmp_path):
    """safetensors writes its files 0600; on a shared cluster checkout the team must read them."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        save_checkpoint(build_bert(B, BertConfig(**BERT_TINY)), tmp_path / "ckpt")
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json"):
        assert stat.S_IMODE((tmp_path / "ckpt" / name).stat().st_mode) == 0o644, name
    assert stat.S_IMODE((tmp_path / "ckpt").stat().st_mode) == 0o755


def test_save_rejects_contradicting_metadata(B, tmp_path):
    model = build_models(B, 0)["bilstm"]
    with pytest.raises(ValueError, match="hidden_size"):
        save_checkpoint(model, tmp_path / "x", {"hidden_size": 7})
    assert not (tmp_path / "x").exists()


def test_overwrite_is_atomic(B, tmp_path, monkeypatch):
    models = build_models(B, 0)
    folder = save_checkpoint(models["bilstm"], tmp_path / "ckpt")
    before = (folder / "model.safetensors").read_bytes()

    import safetensors.numpy

    def broken_save(arrays, path, metadata=None):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(models["bert"], folder)
    assert (folder / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert load_checkpoint(B, folder)[1]["model_type"] == "bilstm"


@pytest.fixture
def saved_bert(B, tmp_path):
    return save_checkpoint(build_models(B, 0)["bert"], tmp_path / "bert")


def _one_line_error(B, folder, *needles):
    with pytest.raises(DataError) as err:
        load_checkpoint(B, folder)
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert str(needle) in msg, (needle, msg)


def test_truncated_weights(B, saved_bert):
    path = saved_bert / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _one_line_error(B, saved_bert, path)


def test_garbage_weights(B, saved_bert):
    path = saved_bert / "model.safetensors"
    path.write_bytes(b"\x00" * 3)
    _one_line_error(B, saved_bert, path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_unreadable_weights_in_results_say_to_delete_the_folder_and_rerun(B, tmp_path, damage):
    """A damaged model.safetensors fails every rerun (the folder is up to date for Snakemake): the
    one line names the file and says how to recover."""
    folder = save_checkpoint(build_models(B, 0)["bilstm"], tmp_path / "results" / "sst2" / "kd")
    path = folder / "model.safetensors"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"not safetensors at all")
    else:
        path.unlink()
    reason = "file not found" if damage == "missing" else "not a readable safetensors file"
    _one_line_error(B, folder, f"{path}: {reason}", f"; delete {folder}/ and rerun to retrain it")


def test_the_stages_that_read_a_model_folder_s_weights_give_the_same_way_out(saved_bert):
    """Exporting a teacher's layers and the HuggingFace export read the weights without loading
    the model: a damaged file says how to recover there too."""
    from kdlib.distill.layers import export_layers
    from kdlib.export.hf import hf_weights
    from kdlib.models.bert import BertConfig
    from kdlib.models.checkpoint import read_checkpoint_config
    cfg = BertConfig.from_dict(read_checkpoint_config(saved_bert))
    (saved_bert / "model.safetensors").write_bytes(b"not safetensors at all")
    for read in (lambda: export_layers(saved_bert, [1], saved_bert.parent / "init"),
                 lambda: hf_weights(cfg, saved_bert)):
        with pytest.raises(DataError, match=f"; delete {saved_bert}/ and rerun to retrain it$"):
            read()


def test_missing_files(B, saved_bert):
    (saved_bert / "model.safetensors").unlink()
    _one_line_error(B, saved_bert, saved_bert / "model.safetensors", "not found")
    (saved_bert / "config.json").unlink()
    _one_line_error(B, saved_bert, saved_bert / "config.json", "not found")


def test_bad_config(B, saved_bert):
    path = saved_bert / "config.json"
    good = json.loads(path.read_text())
    path.write_text("{")
    _one_line_error(B, saved_bert, path)
    path.write_text(json.dumps({**good, "model_type": "gpt"}))
    _one_line_error(B, saved_bert, path, "'gpt'", "bert, bilstm")
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "hidden_size"}))
    _one_line_error(B, saved_bert, path, "hidden_size")


def test_shape_and_key_mismatch(B, saved_bert):
    path = saved_bert / "config.json"
    good = json.loads(path.read_text())
    path.write_text(json.dumps({**good, "intermediate_size": 48}))
    _one_line_error(B, saved_bert, saved_bert / "model.safetensors", "intermediate.dense.weight",
                    "(64, 32)", "(48, 32)")
    path.write_text(json.dumps({**good, "num_hidden_layers": 1}))
    _one_line_error(B, saved_bert, saved_bert / "model.safetensors", "unexpected", "encoder.layer.1.")


def test_load_state_numpy_lists_missing_and_unexpected(B):
    model = build_models(B, 0)["bilstm"]
    arrays = state_dict_numpy(model)
    arrays.pop("fc.bias")
    arrays["extra.weight"] = np.zeros(3, np.float32)
    arrays["classifier.bias"] = np.full(2, 5.0, np.float32)
    missing, unexpected = load_state_numpy(model, arrays, strict=False)
    assert missing == ["fc.bias"] and unexpected == ["extra.weight"]
    np.testing.assert_array_equal(state_dict_numpy(model)["classifier.bias"], [5.0, 5.0])
    with pytest.raises(DataError, match="missing fc.bias; unexpected extra.weight"):
        load_state_numpy(model, arrays, strict=True, source="x.safetensors")


# ---- across runtimes -----------------------------------------------------------------------------

def test_checkpoints_cross_backends(B, tmp_path):
    peer = "oneflow" if B.name == "torch" else "torch"
    python = PYTHONS[peer]
    if not python.exists():
        pytest.skip(f"{python} is missing: the {peer} runtime is not set up")
    save_own(B, tmp_path, seed=3)
    proc = subprocess.run([str(python), __file__, peer, str(tmp_path), B.name], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    mine = np.load(tmp_path / f"{B.name}_logits.npz")
    seen_by_peer = np.load(tmp_path / f"{peer}_loaded_{B.name}.npz")
    theirs = np.load(tmp_path / f"{peer}_logits.npz")
    seen_here = load_peer(B, tmp_path, peer)
    for kind in ("bert", "bilstm"):
        assert mine[kind].shape == (4, BERT_TINY["num_labels"] if kind == "bert" else 2)
        np.testing.assert_allclose(seen_by_peer[kind], mine[kind], atol=CROSS_TOL, rtol=0)
        np.testing.assert_allclose(seen_here[kind], theirs[kind], atol=CROSS_TOL, rtol=0)
        assert not np.allclose(mine[kind], theirs[kind])   # the two runtimes really built different models


if __name__ == "__main__":
    peer_main(sys.argv[1:])
