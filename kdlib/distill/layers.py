"""Student initialisation from chosen teacher layers (BERT-PKD, BERT-of-Theseus, no-KD baselines).

Two sources (a student's ``architecture.init``):

- ``teacher``: layers of the fine-tuned teacher, whose embeddings, pooler and classifier come along
  (:func:`export_layers`; BERT-of-Theseus' successor starts so);
- ``pretrained``: the same layers of the pretrained folder the teacher was fine-tuned from, before
  any fine-tuning (:func:`export_pretrained_layers`), as BERT-PKD's students and its fine-tuned
  baselines start (Sun et al. 2019): a baseline so initialised has learnt nothing from the
  teacher. A pooler the folder lacks and the classifier are drawn with a fixed seed.

Keys keep HuggingFace's names: teacher layer ``t`` (1-based) becomes student layer ``i`` by renaming
``encoder.layer.{t-1}.*`` to ``encoder.layer.{i}.*``; embeddings, pooler and classifier are copied
as they are.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from safetensors.numpy import save_file

from ..errors import ConfigError
from ..io import atomic_dir
from ..models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, model_config_dict, read_checkpoint_config, read_weights
from ..models.weights import state_dict_numpy

HEAD_SEED = 0       # the draw of a pretrained export's classifier (and pooler, if the folder has none)

_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")


def skip_layers(n_student: int, n_teacher: int) -> list[int]:
    """Every (n_teacher / n_student)-th layer, ending at the top: 2,4,6 of 6; 4,8,12 of 12."""
    if n_student > n_teacher:
        raise ConfigError(f"a {n_student}-layer student cannot take layers from a {n_teacher}-layer teacher")
    return [round(k * n_teacher / n_student) for k in range(1, n_student + 1)]


def first_layers(n_student: int, n_teacher: int) -> list[int]:
    """The bottom ``n_student`` layers (BERT-of-Theseus initialises its successor this way)."""
    if n_student > n_teacher:
        raise ConfigError(f"a {n_student}-layer student cannot take layers from a {n_teacher}-layer teacher")
    return list(range(1, n_student + 1))


def select_layers(arrays: dict, layers: list[int], n_teacher: int) -> dict:
    """The teacher's arrays with only ``layers`` (1-based) kept, renumbered from 0."""
    for t in layers:
        if not 1 <= t <= n_teacher:
            raise ConfigError(f"teacher layer {t} does not exist (the teacher has {n_teacher})")
    out = {}
    for key, value in arrays.items():
        match = _LAYER.match(key)
        if match is None:
            out[key] = value
    for i, t in enumerate(layers):
        prefix = f"encoder.layer.{t - 1}."
        for key, value in arrays.items():
            if key.startswith(prefix):
                out[f"encoder.layer.{i}.{key[len(prefix):]}"] = value
    return out


def export_layers(teacher_dir: str | Path, layers: list[int], out_dir: str | Path,
                  extra: dict | None = None) -> Path:
    """Write a BERT checkpoint made of the teacher's ``layers`` into ``out_dir``."""
    teacher_dir = Path(teacher_dir)
    config = read_checkpoint_config(teacher_dir)
    arrays = read_weights(teacher_dir)
    return _write(arrays, {**config, **(extra or {}), "init": "teacher"}, layers, out_dir)


def export_pretrained_layers(B, pretrained_dir: str | Path, layers: list[int], num_labels: int,
                             out_dir: str | Path) -> Path:
    """Write a BERT checkpoint made of ``layers`` of the pretrained HF folder ``pretrained_dir``
    (not fine-tuned), with a ``num_labels`` classifier drawn with :data:`HEAD_SEED`."""
    from ..models.pretrained import load_pretrained_bert
    B.seed(HEAD_SEED)
    model, _ = load_pretrained_bert(B, pretrained_dir, num_labels, log=lambda line: None)
    config = {**model_config_dict(model), "init": "pretrained"}
    return _write(state_dict_numpy(model), config, layers, out_dir)


def _write(arrays: dict, config: dict, layers: list[int], out_dir: str | Path) -> Path:
    student = select_layers(arrays, list(layers), int(config["num_hidden_layers"]))
    config = {**config, "num_hidden_layers": len(layers), "teacher_layers": list(layers)}
    with atomic_dir(out_dir) as tmp:
        save_file(student, str(tmp / WEIGHTS_FILE), metadata={"format": "kdflow"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return Path(out_dir)
