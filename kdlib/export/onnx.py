"""ONNX export of a kdlib model folder, fp32 and int8, checked against kdlib with onnxruntime.

The exported graph takes right-padded batches, every input int64 of shape (batch, sequence) with
both axes dynamic, and returns the logits::

    input_ids       (batch, sequence)   token ids (WordPiece ids for BERT, word ids for the BiLSTM)
    attention_mask  (batch, sequence)   1 for a real token, 0 for padding
    token_type_ids  (batch, sequence)   segment ids; BERT only
    logits          (batch, num_labels) float32

BERT exports as it is (eval mode, its fused attention included). The BiLSTM packs its batch, which
does not export; :func:`_bilstm_graph` computes the same logits without packing. The ONNX folder
holds ``model.onnx``, ``model.int8.onnx`` (dynamic quantisation: int8 weights, activations
quantised per batch) and copies of the model folder's ``config.json`` and ``vocab.txt``, so it
serves on its own. torch, onnx and onnxruntime load inside the functions: the module imports in
any runtime, and a runtime without them gets one :class:`~kdlib.errors.BackendUnavailable` line.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from ..data.convert import TOKENIZER_KINDS
from ..errors import BackendUnavailable, DataError
from ..io import atomic_dir
from ..models.checkpoint import CONFIG_FILE, VOCAB_FILE, read_checkpoint_config

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
OPSET = 17
_AXES = {0: "batch", 1: "sequence"}
COPIED = (CONFIG_FILE,)    # with model.safetensors and its tokenizer file, what a model folder must hold


def _copied(folder: Path) -> tuple:
    """config.json and the folder's tokenizer file (vocab.txt, or a BERT's tokenizer.json)."""
    return (*COPIED, tokenizer_name(read_checkpoint_config(folder)) if (folder / CONFIG_FILE).is_file()
            else VOCAB_FILE)


def tokenizer_name(config: dict) -> str:
    return TOKENIZER_KINDS.get(config.get("tokenizer"), VOCAB_FILE)


def _need(*names: str) -> None:
    import importlib.util
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise BackendUnavailable(f"ONNX export needs {', '.join(names)}; this runtime lacks "
                                 f"{', '.join(missing)} (use the .venv runtime)")


def _torch_model(model_dir: str | Path):
    """``(model, config)`` of a kdlib model folder, on torch/CPU/fp32 in eval mode, after checking
    that the folder holds everything the ONNX folder will copy."""
    from ..backend import load
    from ..models.checkpoint import WEIGHTS_FILE, load_checkpoint

    folder = Path(model_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: model folder not found")
    for name in (WEIGHTS_FILE, *_copied(folder)):
        if not (folder / name).is_file():
            raise DataError(f"{folder}: lacks {name}, which the ONNX export needs")
    return load_checkpoint(load("torch", "cpu", "fp32"), folder)   # its model_type checked there


def _bert_graph(model):
    """The BERT's logits as a module of three tensor inputs."""
    import torch

    class BertGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids, attention_mask, token_type_ids)["logits"]

    return BertGraph()


def _bilstm_graph(model):
    """kdlib's BiLSTM without packing: the same logits for right-padded rows (an all-padding row
    reads its first token, as the packed forward's ``lengths.clamp(min=1)`` makes it).

    Two unidirectional LSTMs hold the forward and the reverse weights. The forward state is the
    forward LSTM's output at each row's last real token; the backward state is the reverse LSTM's
    output after it has read the row's real tokens back to front (each row reversed within its own
    length), again at position length - 1. The padding beyond a row's length never reaches either.
    """
    import torch
    nn = torch.nn

    cfg = model.config
    E, Hl = cfg.embedding_dim, cfg.hidden_size

    def direction(suffix: str):
        lstm = nn.LSTM(E, Hl, num_layers=1, batch_first=True)
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(lstm, name).data.copy_(getattr(model.lstm, name + suffix).data)
        return lstm

    class BiLstmGraph(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding, self.fc, self.classifier = model.embedding, model.fc, model.classifier
            self.forward_lstm, self.backward_lstm = direction(""), direction("_reverse")

        def forward(self, input_ids, attention_mask):
            lengths = attention_mask.long().sum(dim=1).clamp(min=1)                # (N,)
            last = (lengths - 1).unsqueeze(1)                                      # (N, 1)
            t = torch.cumsum(torch.ones_like(input_ids), dim=1) - 1                # (N, T) positions
            flip = torch.where(t <= last, last - t, t)                             # (N, T)
            x = self.embedding(input_ids)                                          # (N, T, E)
            x_rev = x.gather(1, flip.unsqueeze(2).expand(-1, -1, E))               # (N, T, E)
            at_last = last.unsqueeze(2).expand(-1, 1, Hl)                          # (N, 1, Hl)
            h_f = self.forward_lstm(x)[0].gather(1, at_last).squeeze(1)            # (N, Hl)
            h_b = self.backward_lstm(x_rev)[0].gather(1, at_last).squeeze(1)       # (N, Hl)
            z = torch.relu(self.fc(torch.cat([h_f, h_b], dim=1)))                  # (N, F)
            return self.classifier(z)                                              # (N, C)

    return BiLstmGraph()


def _export_fp32(model, path: Path) -> None:
    import warnings

    import torch
    bert = model.model_type in ("bert", "transformers")    # transformers: a teacher of another family
    graph = (_bert_graph if bert else _bilstm_graph)(model).eval()   # eval: export restores the flag
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if bert else [])
    T = min(8, getattr(model.config, "max_position_embeddings", 8))
    ids = torch.arange(2 * T).reshape(2, T) % model.config.vocab_size         # (2, T) example
    mask = torch.ones_like(ids)
    mask[1, T // 2:] = 0
    example = (ids, mask, torch.zeros_like(ids))[:len(names)]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")             # the TorchScript exporter's deprecation notes
        torch.onnx.export(graph, example, str(path), dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=["logits"],
                          dynamic_axes={**{n: _AXES for n in names}, "logits": {0: "batch"}})


def _quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic quantisation: int8 weights per output channel for the linear layers, the LSTM and
    the embedding tables; activations quantised per batch. On the tweets models, per channel kept
    the dev predictions far closer to fp32 than per tensor (the 6-layer teacher: 20 of 2,279
    changed, against 57), and quantising the embeddings changed no accuracy and cut the file 3x."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)        # its advice to pre-process, which changed nothing here
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gather", "LSTM"])
    finally:
        logging.disable(before)


def write_onnx(model_dir: str | Path, folder: str | Path) -> dict:
    """Write the ONNX files and the copies into the existing ``folder`` (not atomically: see
    :func:`export_onnx`); returns ``{"model_type", "export_s", "quantize_s", "fp32_bytes",
    "int8_bytes"}``."""
    _need("torch", "onnx", "onnxruntime")
    model, config = _torch_model(model_dir)
    written = write_model(model, folder)
    for name in _copied(Path(model_dir)):
        shutil.copyfile(Path(model_dir) / name, Path(folder) / name)
    return {"model_type": config["model_type"], **written}


def write_model(model, folder: str | Path) -> dict:
    """Write ``model.onnx`` and ``model.int8.onnx`` of a kdlib model on torch/CPU/fp32 (trained or
    not: the search times untrained ones) into the existing ``folder``; returns ``{"export_s",
    "quantize_s", "fp32_bytes", "int8_bytes"}``."""
    _need("torch", "onnx", "onnxruntime")
    folder = Path(folder)
    start = time.perf_counter()
    _export_fp32(model, folder / FP32_FILE)
    exported = time.perf_counter()
    _quantize_int8(folder / FP32_FILE, folder / INT8_FILE)
    quantized = time.perf_counter()
    return {"export_s": exported - start, "quantize_s": quantized - exported,
            "fp32_bytes": (folder / FP32_FILE).stat().st_size, "int8_bytes": (folder / INT8_FILE).stat().st_size}


def export_onnx(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Export the kdlib model folder ``model_dir`` to the ONNX folder ``out_dir``, written whole or
    not at all: ``model.onnx``, ``model.int8.onnx``, ``config.json``, and its ``vocab.txt`` (or
    ``tokenizer.json``)."""
    with atomic_dir(out_dir) as tmp:
        write_onnx(model_dir, tmp)
    return Path(out_dir)


def session(path: str | Path, threads: int | None = None):
    """An onnxruntime InferenceSession of ``path`` on the CPU, with ``threads`` intra-op threads
    (None or 0: onnxruntime's default), one inter-op thread and no spin-waiting."""
    _need("onnxruntime")
    import onnxruntime as ort
    if not Path(path).is_file():
        raise DataError(f"{path}: ONNX model not found")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or 0)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3                  # errors only
    # No spin-waiting for work after a run: the deployment stage times sessions side by side with
    # other runtimes in one process, and spinning threads of one would slow the next runner down.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_feed(sess, batch: dict) -> dict[str, np.ndarray]:
    """The feed of ``sess`` for a numpy record batch (:func:`kdlib.data.batching.batches`): its
    ``input_ids``, ``input_mask`` and ``segment_ids`` (zeros where the records have none) as int64
    ``input_ids``, ``attention_mask`` and ``token_type_ids``, those the graph takes."""
    columns = {"input_ids": batch["input_ids"], "attention_mask": batch["input_mask"],
               "token_type_ids": batch.get("segment_ids")}
    if columns["token_type_ids"] is None:
        columns["token_type_ids"] = np.zeros_like(batch["input_ids"])
    return {i.name: np.ascontiguousarray(columns[i.name], dtype=np.int64) for i in sess.get_inputs()}


def _check_fits(config: dict, batch: dict, path) -> None:
    """Records that do not fit the model (another vocabulary, longer than BERT's positions) are
    one line, not an onnxruntime error deep inside a Gather."""
    vocab, ids = config["vocab_size"], batch["input_ids"]
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise DataError(f"{path}: token id {int(ids.max())} is outside the model's vocabulary of "
                        f"{vocab}: records built for another model?")
    positions = config.get("max_position_embeddings")
    if positions is not None and ids.shape[1] > positions:
        raise DataError(f"{path}: sequences of {ids.shape[1]} tokens exceed the model's "
                        f"{positions} positions")


def check_onnx(onnx_dir: str | Path, model_dir: str | Path, records: str | Path, task,
               batch_size: int = 32, threads: int | None = None, tolerance: float = 1e-4) -> dict:
    """Run kdlib (torch, fp32, eager) and onnxruntime fp32 and int8 over the record file
    ``records`` (batches in file order, trimmed to their longest example) and compare.

    Returns ``{"max_abs_diff_fp32", "max_abs_diff_int8", "metrics": {"kdlib_fp32", "onnx_fp32",
    "onnx_int8"}, "examples"}``, the metrics those of ``task``. An fp32 graph further than
    ``tolerance`` from kdlib is a DataError.
    """
    _need("torch", "onnxruntime")
    import torch

    from ..data import batching, ofrecord
    from ..evaluate import metrics
    model, config = _torch_model(model_dir)
    ofrecord.checked_count(records)             # a file cut short is an error, not a smaller set
    runs = {"onnx_fp32": session(Path(onnx_dir) / FP32_FILE, threads),
            "onnx_int8": session(Path(onnx_dir) / INT8_FILE, threads)}
    logits: dict[str, list] = {"kdlib_fp32": [], **{name: [] for name in runs}}
    labels = []
    with torch.no_grad():
        for batch in batching.batches(records, batch_size):
            _check_fits(config, batch, records)
            inputs = onnx_feed(runs["onnx_fp32"], batch)
            eager = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})["logits"]
            logits["kdlib_fp32"].append(eager.numpy())
            for name, sess in runs.items():
                logits[name].append(sess.run(["logits"], onnx_feed(sess, batch))[0])
            labels.append(batch["label_ids"])
    if not labels:
        raise DataError(f"{records}: holds no records")
    gold = np.concatenate(labels)
    out = {name: np.concatenate(chunks).astype(np.float64) for name, chunks in logits.items()}
    diff_fp32 = float(np.abs(out["onnx_fp32"] - out["kdlib_fp32"]).max())
    diff_int8 = float(np.abs(out["onnx_int8"] - out["kdlib_fp32"]).max())
    if not diff_fp32 <= tolerance:
        raise DataError(f"{onnx_dir}: the fp32 ONNX logits differ from kdlib's by {diff_fp32:.3g}, "
                        f"more than the tolerance {tolerance:.3g}")
    return {"max_abs_diff_fp32": diff_fp32, "max_abs_diff_int8": diff_int8,
            "metrics": {name: metrics.compute(task.metrics, value, gold, task.is_regression)
                        for name, value in out.items()},
            "examples": int(gold.size)}
