"""The teacher of a task: a pretrained BERT plus a classifier fine-tuned here on hard labels
(:func:`finetune`), or a classifier the user fine-tuned already, of any encoder family
(:func:`import_finetuned`, config ``teacher.finetuned``)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from ..data import ofrecord
from ..data.batching import model_inputs
from ..data.convert import encoding_of, records_tokenizer
from ..data.task import VALIDATION, Task
from ..errors import ConfigError
from ..evaluate.evaluation import predict, split_evaluator
from ..io import atomic_dir, check_writable, read_json, start_over
from ..models import families
from ..models.checkpoint import load_checkpoint, save_checkpoint
from ..models.pretrained import load_pretrained_bert
from . import compiling, train
from .ops import hard_loss

# A transformers teacher's files that the teacher folder copies besides its weights: the tokenizer's.
# Nothing pickled (pytorch_model.bin, training_args.bin) is ever copied or read.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "added_tokens.json", "spm.model", "sentencepiece.bpe.model")


def check_length(records: Path, positions: int, pretrained: Path) -> None:
    """Records longer than the teacher's position embeddings cannot be read by it: one ConfigError
    that names both numbers and the setting to lower."""
    meta_path = records / "meta.json"
    length = read_json(meta_path).get("max_length") if meta_path.exists() else None
    if isinstance(length, int) and length > positions:
        raise ConfigError(f"{records}: records of {length} WordPiece pieces, but the teacher has "
                          f"{positions} positions (max_position_embeddings in {pretrained / 'config.json'}); "
                          f"lower data.max_length (or the custom task's max_length) to {positions} or less")


def supervised_loss_fn(B, model, regression: bool):
    """``loss_fn(batch)`` for :func:`kdlib.distill.train.fit`: the model on hard labels alone."""
    def loss_fn(batch):
        logits = model(**model_inputs(B, batch))["logits"]
        loss = hard_loss(B.F, logits, B.tensor(batch["label_ids"]), regression)
        return loss, {"hard": loss}
    return loss_fn


def finetune(B, task: Task, records: str | Path, pretrained: str | Path, out_dir: str | Path,
             work_dir: str | Path, cfg: train.TrainConfig, eval_batch_size: int,
             selection: str = "validation", compile: str = "false") -> train.FitResult:
    """Fine-tune ``pretrained`` on ``records/train.of_record-0``, keep the checkpoint that
    ``selection`` picks (:func:`kdlib.distill.train.selection_split`: the best on validation by
    default) in ``out_dir`` (with its vocab, training log and summary), then clear ``work_dir``.
    ``compile``: :func:`kdlib.distill.compiling.should_compile`."""
    records, pretrained, work_dir = Path(records), Path(pretrained), Path(work_dir)
    with train.running(B, out_dir, work_dir):    # checked, locked and cleared before training
        B.seed(cfg.seed)
        log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
        model, bert_cfg = load_pretrained_bert(B, pretrained, task.num_labels, log=log)
        check_length(records, bert_cfg.max_position_embeddings - bert_cfg.position_offset, pretrained)
        split, keep = train.selection_split(selection, task)
        scored = ofrecord.record_file(records, split)
        n_train = ofrecord.checked_count(ofrecord.record_file(records, "train"))
        compiled = compiling.apply(compile, B, model, "bert", train.total_steps(n_train, cfg))
        meta = {"task": task.name, "labels": list(task.labels or []), "role": "teacher",
                "pretrained": str(pretrained), **encoding_of(records, task)}
        result = train.fit(B, {"model": model}, supervised_loss_fn(B, model, task.is_regression),
                           train_path=ofrecord.record_file(records, "train"), cfg=cfg, work_dir=work_dir,
                           evaluate=split_evaluator(B, model, task, scored, eval_batch_size), keep=keep,
                           save_config=meta, desc=f"teacher {task.name}",
                           settings={"task": task.name, "compiled": compiled},
                           inputs={f"{split} records": scored,
                                   "pretrained weights": pretrained / "model.safetensors",
                                   "pretrained config": pretrained / "config.json"})
        if B.rank == 0:                          # data parallel: rank 0 writes the outputs
            train.publish(out_dir, work_dir, result, cfg, work_dir=work_dir,
                          extra_files=[pretrained / "vocab.txt"], task=task.name,
                          training_rows=n_train, transfer_rows=0, compiled=compiled,
                          selection=train.selection_summary([result], cfg, selection, split, task.metric))
        return result


def import_finetuned(B, task: Task, folder: str | Path, records: str | Path, out_dir: str | Path,
                     *, batch_size: int, label_map: dict | None = None) -> dict:
    """Make the user's fine-tuned classifier in ``folder`` the task's teacher folder ``out_dir``.

    A BERT (kdlib's family) becomes a kdlib checkpoint, its classifier rows in the task's label
    order, so every recipe and both backends can use it; any other family is copied as it is (its
    weights, config.json and tokenizer files) with ``kdflow_runtime: transformers`` and the
    ``label_order`` that puts its outputs in the task's order (:mod:`kdlib.models.hf_teacher`).
    Labels must match the task's by name (``label_map`` renames; :func:`families.label_order`).
    Before the folder is published the teacher is scored on the validation records, and one that
    does no better than always answering the majority label (a regression teacher: than always
    answering the mean) stops the stage: it looks un-fine-tuned. Returns the validation summary."""
    folder, records = Path(folder).expanduser(), Path(records)
    where = f"teacher.finetuned of {task.name}"
    config = families.check_folder(folder, where)
    order = families.label_order(config, task.labels or [], task.is_regression, label_map, where)
    positions = (families.width(config, "max_position_embeddings") or 512) \
        - families.kdlib_fields(config).get("position_offset", 0)
    check_length(records, positions, folder)
    meta = {"task": task.name, "labels": list(task.labels or []), "role": "teacher",
            "source": str(folder), **encoding_of(records, task)}
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    check_writable(out_dir)
    start_over(out_dir)
    with atomic_dir(out_dir) as tmp:
        if families.runs_in_kdlib(config):
            model, _ = load_pretrained_bert(B, folder, task.num_labels, log=log, classifier_rows=order)
            save_checkpoint(model, tmp / "kdlib", meta)
            for path in (tmp / "kdlib").iterdir():
                path.rename(tmp / path.name)
            (tmp / "kdlib").rmdir()
            shutil.copy(records_tokenizer(records), tmp / records_tokenizer(records).name)
        else:
            for name in ("model.safetensors", *TOKENIZER_FILES):
                if (folder / name).is_file():
                    shutil.copy(folder / name, tmp / name)
            shape = families.student_shape(config, families.tokenizer_size(records_tokenizer(records)))
            full = {**config, **meta, "kdflow_runtime": "transformers", "label_order": order,
                    "student_shape": shape}
            (tmp / "config.json").write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
        summary = check_fine_tuned(B, task, tmp, records, batch_size, folder)
    log(f"teacher of {task.name}: {config['model_type']} from {folder}, validation {summary}")
    return summary


def check_fine_tuned(B, task: Task, teacher_dir: Path, records: Path, batch_size: int,
                     source: Path) -> dict:
    """The teacher's validation score beside the majority label's (classification) or the mean's
    (regression: mean squared error against the labels' variance); a ConfigError when it is no
    better."""
    model, _ = load_checkpoint(B, teacher_dir)
    logits, labels = predict(B, model, ofrecord.record_file(records, VALIDATION), batch_size)
    if task.is_regression:
        mse, variance = float(np.mean((logits[:, 0] - labels) ** 2)), float(np.var(labels))
        if mse >= variance:
            raise ConfigError(f"teacher.finetuned of {task.name}: {source} predicts the validation scores "
                              f"with mean squared error {mse:.4f}, no better than always answering "
                              f"their mean ({variance:.4f}); it looks un-fine-tuned (or tuned for "
                              "another task)")
        return {"mse": round(mse, 6), "mean_baseline_mse": round(variance, 6)}
    labels = labels.astype(np.int64)
    accuracy = float(np.mean(logits.argmax(-1) == labels))
    counts = np.bincount(labels, minlength=task.num_labels)
    majority = float(counts.max() / max(1, len(labels)))
    if accuracy <= majority:
        name = task.labels[int(counts.argmax())]
        raise ConfigError(f"teacher.finetuned of {task.name}: {source} scores {100 * accuracy:.1f}% "
                          f"accuracy on the validation split, no better than always answering the "
                          f"majority label {name} ({100 * majority:.1f}%); it looks un-fine-tuned "
                          "(or tuned for another task)")
    return {"accuracy": round(accuracy, 4), "majority_accuracy": round(majority, 4)}
