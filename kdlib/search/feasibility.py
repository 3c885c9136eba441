"""Feasibility before training: every candidate's speed and size, measured on an untrained model of
its shape beside the teacher, and whether it meets the search's target.

A model's speed and size do not depend on its weights, so a candidate that cannot meet the target
is dropped before it costs any training. Candidates of one shape (kd and tinybert at 4 x 312, or
one recipe with two transfer sets) are one model here: each shape is built once, untrained, by its
recipe (:meth:`kdlib.distill.recipes.Recipe.build`, what the distill stage builds) and timed as the
stages time (side by side with the teacher in one process, input by input, medians of rounds) in
the target's runtime:

- ``kdlib``: the run's backend, device and precision, beside the teacher in the same, by the speed
  stage's :func:`kdlib.evaluate.speed.side_by_side`; the size is the ``model.safetensors`` the model
  folder ships;
- ``onnx_int8``: onnxruntime with int8 weights (:func:`kdlib.export.onnx.write_model`), beside the
  teacher in eager PyTorch fp32, by the deployment table's :func:`kdlib.export.deploy.measure`;
  the size is ``model.int8.onnx``.

The inputs are the validation split's (dev is read only by the evaluation stages). Speed-ups are
the teacher's latency over the candidate's at batch 1 and the candidate's throughput over the
teacher's at batch 32; sizes are in MB (10^6 bytes).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..data.convert import read_word_vocab, records_tokenizer
from ..data.ofrecord import record_file
from ..distill.recipes import Context, get_recipe
from ..evaluate import speed
from ..export import deploy
from ..export.onnx import write_model
from ..models.checkpoint import WEIGHTS_FILE, load_checkpoint, save_checkpoint
from .space import meets

SPLIT = "validation"
REFERENCE = {"kdlib": "the teacher in kdlib (the run's backend and precision)",
             "onnx_int8": "the teacher in eager PyTorch fp32"}


def shape_key(spec: dict) -> str:
    """What makes two candidates one model: their architecture (a BERT's vocabulary is its
    records', the same for every candidate of one tokenizer)."""
    return json.dumps(spec["architecture"], sort_keys=True)


def untrained(B, task, spec: dict, records: str | Path, teacher_dir: str | Path):
    """The candidate's model as the distill stage builds it, untrained (seeded), in eval mode."""
    records = Path(records)
    vocab = len(read_word_vocab(records_tokenizer(records))) if spec["architecture"]["model"] == "bilstm" else None
    B.seed(0)
    model = get_recipe(spec["algorithm"]).build(
        Context(B, task, records, teacher_dir=Path(teacher_dir), vocab_size=vocab), spec)
    model.eval()
    return model


def measure(B, task, candidates: dict[str, dict], teacher_dir: str | Path, teacher_records: str | Path,
            runtime: str, threads: int, rounds: int, latency_examples: int, throughput_examples: int) -> dict:
    """Speed and size of each candidate's shape beside the teacher. ``candidates``: name ->
    ``{"spec": its distill spec, "records": its record folder}``; ``B``: the backend the models run
    on (torch/CPU/fp32 for ``onnx_int8``). The timing is the stages': kdlib models through
    :func:`kdlib.evaluate.speed.side_by_side` (the speed stage's), int8 ONNX files beside the eager
    teacher through :func:`kdlib.export.deploy.measure` (the deployment table's). Returns
    ``{"teacher": timing, "shapes": {key: timing with size_mb}, "of": {candidate: key}, ...}`` plus
    what :func:`~kdlib.evaluate.speed.time_side_by_side` reports."""
    keys = {name: shape_key(c["spec"]) for name, c in candidates.items()}
    firsts = {key: name for name, key in reversed(keys.items())}          # one candidate per shape
    names = {key: f"shape{k}" for k, key in enumerate(sorted(firsts))}
    files = {names[key]: record_file(candidates[name]["records"], SPLIT) for key, name in firsts.items()}
    teacher_file = record_file(teacher_records, SPLIT)
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="kdflow-search-") as tmp:
        built = {}
        for key, name in firsts.items():
            model = untrained(B, task, candidates[name]["spec"], candidates[name]["records"], teacher_dir)
            folder = Path(tmp) / names[key]
            if runtime == "onnx_int8":
                folder.mkdir()
                sizes[key] = write_model(model, folder)["int8_bytes"]
                built[names[key]] = folder
            else:
                save_checkpoint(model, folder)
                sizes[key] = (folder / WEIGHTS_FILE).stat().st_size
                built[names[key]] = (model, files[names[key]])
        if runtime == "onnx_int8":
            result = deploy.measure(built, {**files, "teacher": teacher_file}, Path(teacher_dir), threads, rounds,
                                    latency_examples, throughput_examples, runtimes=("onnx_int8",))
            timings = {n: t[deploy.EAGER] if n == "teacher" else t["onnx_int8"]
                       for n, t in result.pop("models").items()}
        else:
            teacher, _ = load_checkpoint(B, teacher_dir)
            result = speed.side_by_side(B, {"teacher": (teacher, teacher_file), **built}, rounds, latency_examples,
                                        throughput_examples)
            timings = result.pop("models")
    shapes = {key: {**timings[names[key]], "size_mb": sizes[key] / 1e6} for key in firsts}
    return {"teacher": timings["teacher"], "shapes": shapes, "of": keys, **result}


def figures(timing: dict, teacher: dict) -> dict:
    """A shape's figures as the target names them, from its timing and the teacher's."""
    return {"latency_ms_batch1": timing["latency_ms_batch1"], "throughput_batch32": timing["throughput_batch32"],
            "speedup_batch1": teacher["latency_ms_batch1"] / timing["latency_ms_batch1"],
            "speedup_batch32": timing["throughput_batch32"] / teacher["throughput_batch32"],
            "size_mb": timing["size_mb"]}


def unreliable(timing: dict, teacher: dict, machine: dict | None) -> list[str]:
    """The figures of a candidate that are unreliable: its own, or the teacher's its speed-ups
    divide by (:func:`kdlib.evaluate.speed.unreliable_figures`)."""
    return sorted(set(speed.unreliable_figures(timing, machine)) | set(speed.unreliable_figures(teacher, machine)))


def judge(measured: dict, candidates: dict[str, dict], target: dict, skipped: dict[str, str]) -> dict:
    """The feasibility JSON: every candidate's figures, its value of the target's metric and whether
    it meets the target (``feasible``), the figures that are unreliable
    (:func:`kdlib.evaluate.speed.unreliable_figures`), and the grid's students that are no
    candidate (``skipped``: name -> why)."""
    teacher, machine = measured["teacher"], measured.get("machine")
    out = {}
    for name, c in candidates.items():
        timing = measured["shapes"][measured["of"][name]]
        values = figures(timing, teacher)
        spec = c["spec"]
        out[name] = {"recipe": c["recipe"], "algorithm": spec["algorithm"], "architecture": spec["architecture"],
                     "transfer": spec.get("transfer"), **{k: round(v, 4) for k, v in values.items()},
                     "value": round(values[target["metric"]], 4),
                     "feasible": meets(target, values[target["metric"]]),
                     "unreliable": unreliable(timing, teacher, machine)}
    return {"target": target, "reference": REFERENCE[target["runtime"]], "teacher": teacher,
            "candidates": out, "skipped": skipped,
            "validation_examples": measured["dev_examples"],      # time_side_by_side's name for the file's rows
            **{k: measured[k] for k in ("rounds", "latency_examples", "throughput_examples", "machine")}}
