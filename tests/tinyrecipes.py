"""One tiny student of every distillation recipe and the settings they train with (not collected
by pytest: no ``test_`` prefix): the teacher's shape, the size of the tiny records, the students'
training settings, and each student's spec through the config defaults. tests/test_algorithms.py
trains them; tests/test_precision.py trains them again in bf16.
"""
from __future__ import annotations

from kdlib import config
from kdlib.distill.spec import student_spec

N_TRAIN, N_DEV, BATCH = 32, 16, 8             # 4 steps an epoch
TEACHER = dict(num_hidden_layers=4, hidden_size=32, num_attention_heads=4, intermediate_size=64)
TRAIN = dict(epochs=1, batch_size=BATCH, lr=1e-3, warmup=0.1, eval_every=2, save_seconds=0,
             shuffle_buffer=16, seed=0)
STUDENTS = {
    "nokd": {"algorithm": "none", "architecture": {"layers": 2, "hidden": 16}},
    "kd": {"algorithm": "kd", "architecture": {"layers": 2, "hidden": 16, "heads": 4, "intermediate": 32},
           "hyperparameters": {"alpha": 0.7, "temperature": 2}},
    "lstm": {"algorithm": "distilled_lstm",
             "architecture": {"model": "bilstm", "hidden": 16, "intermediate": 16, "embedding": 16}},
    "pkd": {"algorithm": "bert_pkd", "architecture": {"layers": 2, "init": "teacher"},
            "hyperparameters": {"beta": 10}},
    "tiny": {"algorithm": "tinybert", "architecture": {"layers": 2, "hidden": 16},
             "first_phase_train": {"lr": 5e-3}},
    "theseus": {"algorithm": "theseus", "architecture": {"layers": 2, "init": "teacher"},
                "hyperparameters": {"compress_ratio": 2}},
}


def make_config(students: dict, **train) -> dict:
    return config.validate({"students_train": {**TRAIN, **train}, "students": students})


def spec_of(name: str, students: dict | None = None, **overrides) -> dict:
    """``name``'s spec through the config defaults; ``overrides`` merge into its config entry."""
    students = students or STUDENTS
    return student_spec(make_config({name: config.merge(students[name], overrides)}), name)
