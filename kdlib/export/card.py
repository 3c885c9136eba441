"""A model folder's ``README.md``: the short model card that travels with the weights.

It says what the model is (task and labels, algorithm, architecture and size, the teacher it
learnt from), what it learnt on (labelled rows, the transfer set), how it was trained and measured
(steps, seconds, backend and precision), how good and how fast it is (dev metrics against the
teacher's, latency at batch 1 and throughput at batch 32 from the speed stage) and how to run it
(``python -m kdlib.predict``, its input format and truncation). Every figure comes from the eval
JSON and the speed JSON of the workflow run that trained it.
"""
from __future__ import annotations

from pathlib import Path

from ..data.convert import TOKENIZER_KINDS
from ..evaluate.eval_json import read_eval
from ..evaluate.speed import read_speed, unreliable_reasons
from ..models.families import width

TOKENS = {"wordpiece": "WordPiece pieces", "json": "tokens", "words": "words"}


def _selection(selection: dict | None) -> str:
    """How the checkpoint was chosen, from the eval JSON's ``selection``."""
    if not selection:
        return "not recorded"
    if selection["mode"] == "last":
        return f"the last weights, step {selection['step']:,}"
    early = ", stopped early" if selection.get("stopped_early") else ""
    score = "" if selection.get("score") is None else f" ({100 * selection['score']:.2f} {selection['metric']})"
    note = "; dev scores are optimistic" if selection["mode"] == "dev" else ""
    return (f"the best on {selection['split']}{score} at step {selection['step']:,} of "
            f"{selection['steps_run']:,} run ({selection['steps_allowed']:,} allowed{early}){note}")


def _architecture(config: dict, parameters: int) -> str:
    if config.get("model_type") == "bilstm":
        shape = (f"BiLSTM, hidden {config['hidden_size']} per direction, embedding "
                 f"{config['embedding_dim']}, FC {config['fc_size']}")
    else:
        family = ("RoBERTa" if config.get("position_offset") else "BERT") if config.get("model_type") == "bert" \
            else f"{config.get('model_type')} (transformers)"
        shape = (f"{family}, {width(config, 'num_hidden_layers')} layers, hidden "
                 f"{width(config, 'hidden_size')}, {width(config, 'num_attention_heads')} heads")
    return f"{shape}; {parameters / 1e6:.1f}M parameters"


def _speed(speed: dict, name: str) -> str:
    models = speed["models"]
    if name not in models:
        return "not measured"
    mine, teacher = models[name], models["teacher"]
    text = (f"{mine['latency_ms_batch1']:.2f} ms per text at batch 1, "
            f"{mine['throughput_batch32']:.0f} texts/s at batch 32")
    if name != "teacher":
        text += (f" ({teacher['latency_ms_batch1'] / mine['latency_ms_batch1']:.2f}x and "
                 f"{mine['throughput_batch32'] / teacher['throughput_batch32']:.2f}x the teacher)")
    compared = {name: mine} if name == "teacher" else {name: mine, "teacher": teacher}
    reasons = unreliable_reasons(compared, speed.get("machine"))
    caution = f"; WARNING: unreliable figures ({'; '.join(reasons)})" if reasons else ""
    return (f"{text}; {speed['backend']} {speed['precision']} on {speed['device']}, "
            f"{speed['threads']} threads, measured side by side with the other models{caution}")


def _metrics(result: dict) -> str:
    return "; ".join(f"{split}: " + ", ".join(f"{k} {100 * v:.2f}" for k, v in scores.items())
                     for split, scores in result["metrics"].items())


def model_card(config: dict, eval_path, teacher_eval_path, speed_path, transfer: str | None) -> str:
    """The card's Markdown for the model folder whose ``config.json`` is ``config``."""
    result, speed = read_eval(eval_path), read_speed(speed_path)
    teacher = read_eval(teacher_eval_path)
    name, task = result["model"], result["task"]
    labels = ", ".join(config.get("labels") or []) or "none (regression: one score)"
    role = config.get("role", "student")
    pretrained = "/".join(Path(config.get("pretrained", "a pretrained BERT")).parts[-2:])
    learnt = (f"fine-tuned outside kdflow, from `{config['source']}`" if config.get("source") else
              f"fine-tuned from `{pretrained}` on the labels"
              if role == "teacher" else
              f"algorithm `{result['algorithm']}`" + (" (no distillation: labels alone, the baseline)"
                                                       if result["algorithm"] == "none" else
                                                       f", from the teacher `results/{task}/teacher`"))
    rows = (f"{result['training_rows'] - result['transfer_rows']:,} labelled training rows"
            if result.get("training_rows") is not None else "not known to kdflow")
    if result.get("transfer_rows"):
        rows += f" and {result['transfer_rows']:,} unlabeled rows of transfer set `{transfer}`"
    score = f"{100 * result['score']:.2f} {result['metric']}"
    if role != "teacher":
        score += (f", {100 * result['retained']:.1f}% of the teacher's "
                  f"{100 * teacher['score']:.2f}")
    pair = config.get("text_pair")
    fields = [
        ("task", f"`{task}`; labels: {labels}"),
        ("model", f"{role} `{name}`: {learnt}"),
        ("architecture", _architecture(config, result["parameters"])),
        ("training data", rows),
        ("training", f"{result['train_steps']:,} steps in {result['train_seconds']:.0f} s, "
                     f"{result['backend']} {result['precision']} on {result['device']}"
         if result.get("train_steps") is not None else "none here (teacher.finetuned)"),
        ("selection", _selection(result.get("selection"))),
        ("dev score", score),
        ("dev metrics", _metrics(result)),
        ("speed", _speed(speed, name)),
        ("input", f"{'a pair of texts' if pair else 'one text'}; "
                  f"{TOKENS.get(config.get('tokenizer'), 'tokens')} of "
                  f"`{TOKENIZER_KINDS.get(config.get('tokenizer'), 'vocab.txt')}`, at most "
                  f"{config.get('max_length')} "
                  f"({'longest text of the pair cut first' if pair else 'longer texts are cut'}, "
                  "as in training)"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in fields)
    line = "text_a<TAB>text_b pair" if pair else "text"
    tokenizer_file = TOKENIZER_KINDS.get(config.get("tokenizer"), "vocab.txt")
    return f"""# {name}: {task}

| | |
| --- | --- |
{table}

## Use

Label new text, one {line} per line (the folder alone is enough; copy it anywhere):

```
.venv/bin/python -m kdlib.predict <this folder> texts.txt > labels.tsv
```

`labels.tsv` holds the label, its probability and the logits of each line. The folder holds
`model.safetensors` (the weights), `config.json` (architecture, labels, tokeniser settings) and
`{tokenizer_file}`; written by kdflow's `model_card` stage from `{Path(eval_path).as_posix()}` and
`{Path(speed_path).as_posix()}`.
"""
