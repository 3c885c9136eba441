"""A fine-tuned teacher of any encoder family that transformers loads and kdlib's BERT does not
(DeBERTa-v2/v3, ELECTRA, DistilBERT, ModernBERT ...; a BERT, RoBERTa or XLM-R becomes a kdlib
checkpoint instead), run by ``AutoModelForSequenceClassification`` in the torch runtime behind
kdlib's model contract: ``model(input_ids, attention_mask, token_type_ids) ->
{"logits": (N, C)}``, its columns in the task's label order. Evaluation, the logit cache and the
speed stage use it like a kdlib checkpoint (:func:`kdlib.models.checkpoint.load_checkpoint`)."""
from __future__ import annotations

import inspect
from pathlib import Path

from ..errors import DataError

RUNTIME = "transformers"     # config.json ``kdflow_runtime`` of such a teacher folder


class _Config:
    """What kdlib reads of a model's config: its outputs, and (the ONNX export) its inputs' range."""

    def __init__(self, num_labels: int, inner):
        self.num_labels = num_labels
        self.vocab_size = inner.vocab_size
        self.max_position_embeddings = getattr(inner, "max_position_embeddings", 512)


def load(B, folder: str | Path, config: dict):
    """The teacher in ``folder`` on ``B.device``, in eval mode, its outputs reordered by the
    folder's ``label_order`` (config.json, written by :func:`kdlib.distill.teacher.import_finetuned`)."""
    if B.name != "torch":
        raise DataError(f"{folder}: a {config.get('model_type')} teacher runs through transformers, in the "
                        "torch runtime; this stage runs on OneFlow")
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()                # no advice about training a loaded classifier
    logging.disable_progress_bar()               # nor a bar for loading a few tensors
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), use_safetensors=True)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{folder}: transformers cannot load it as a sequence classifier ({exc})") from None
    order = list(config.get("label_order") or range(model.config.num_labels))

    class Teacher(torch.nn.Module):
        model_type = RUNTIME

        def __init__(self):
            super().__init__()
            self.inner = model
            self.config = _Config(len(order), model.config)
            # segment ids only where the family has them (RoBERTa, XLM-R: one type; DeBERTa-v3: none)
            self.takes_types = ("token_type_ids" in inspect.signature(model.forward).parameters
                                and getattr(model.config, "type_vocab_size", 2) > 1)
            self.register_buffer("order", torch.tensor(order, dtype=torch.long), persistent=False)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids.long(), "attention_mask": attention_mask.long()}
            if self.takes_types and token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids.long()
            logits = self.inner(**kwargs).logits                       # (N, C_teacher)
            return {"logits": logits.index_select(-1, self.order)}     # (N, C) in the task's order

    teacher = Teacher().to(B.device)
    teacher.eval()
    return teacher
