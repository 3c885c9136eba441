"""Fine-tuning the teacher: a pretrained BERT plus a classifier, trained on hard labels."""
from __future__ import annotations

import sys
from pathlib import Path

from ..data import ofrecord
from ..data.batching import model_inputs
from ..data.convert import encoding_of
from ..data.tasks import Task
from ..errors import ConfigError
from ..evaluate.evaluation import split_evaluator
from ..io import check_writable, read_json
from ..models.pretrained import load_pretrained_bert
from . import compiling, train
from .ops import hard_loss


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
    if B.rank == 0:                              # before the training, not after it
        check_writable(out_dir)
        check_writable(work_dir, "work folder")
    B.seed(cfg.seed)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    model, bert_cfg = load_pretrained_bert(B, pretrained, task.num_labels, log=log)
    check_length(records, bert_cfg.max_position_embeddings, pretrained)
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
    if B.rank == 0:                              # data parallel: rank 0 writes the outputs
        train.publish(out_dir, work_dir, result, cfg, work_dir=work_dir,
                      extra_files=[pretrained / "vocab.txt"], task=task.name,
                      training_rows=n_train, transfer_rows=0, compiled=compiled,
                      selection=train.selection_summary([result], cfg, selection, split, task.metric))
    return result
