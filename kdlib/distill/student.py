"""Running one student's recipe: build it, run its phases through :func:`kdlib.distill.train.fit`, keep
the final phase's best checkpoint in a self-contained model folder (weights, config.json with the
labels and tokeniser settings, the records' tokenizer file)."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from ..data.convert import encoding_of, read_word_vocab, records_tokenizer
from ..data.ofrecord import checked_count, record_file
from ..data.task import Task
from ..errors import ConfigError
from ..evaluate.evaluation import split_evaluator
from ..io import read_json
from ..models import checkpoint
from . import compiling, train
from .logit_cache import load_logits
from .recipes import Context, get_recipe


def phase_configs(spec: dict, recipe) -> list[train.TrainConfig]:
    cfgs = [train.TrainConfig.from_dict(spec["train"])]
    if recipe.two_phase:
        cfgs.insert(0, train.TrainConfig.from_dict(spec["first_phase_train"]))
    return cfgs


def matched_steps(cfg: train.TrainConfig, n_records: int, students: list[dict]):
    """A baseline's training settings raised to as many steps as the most of ``students`` (each
    ``{"student", "records": its record folder, "phases": [{"epochs", "batch_size"}, ...]}``: the
    distilled students compared with it), by more epochs over its own records; never fewer than its
    own. Returns ``(cfg, steps, student)``; ``student`` is None when the baseline needs no more."""
    own = train.total_steps(n_records, cfg)
    best, most = None, own
    for s in students:
        rows = checked_count(record_file(s["records"], "train"))
        steps = sum(train.total_steps(rows, dataclasses.replace(cfg, epochs=p["epochs"],
                                                                batch_size=p["batch_size"]))
                    for p in s["phases"])
        if steps > most:
            best, most = s["student"], steps
    if best is None:
        return cfg, own, None
    per_epoch = train.steps_per_epoch(n_records, cfg.batch_size)
    return dataclasses.replace(cfg, epochs=most / per_epoch), most, best


def records_transfer(records: Path) -> dict:
    """The transfer set a record folder holds (``meta.json``'s ``transfer``: name, labelled,
    transfer), or ``{}``."""
    meta = records / "meta.json"
    return (read_json(meta).get("transfer") or {}) if meta.is_file() else {}


def check_transfer(name: str, spec: dict, records: Path, held: dict) -> None:
    """The records hold the student's transfer set (``held``, :func:`records_transfer`), or none when it
    names none: a student must not train on another set's rows, or on placeholder labels
    unknowingly."""
    held, wanted = held.get("name"), spec.get("transfer")
    if held != wanted:
        has = f"transfer set {held!r}" if held else "no transfer set"
        raise ConfigError(f"student {name}: its records {records} hold {has}, but the student asks "
                          f"for {repr(wanted) if wanted else 'none'}")


def distill(B, task: Task, name: str, spec: dict, *, records: str | Path, out_dir: str | Path,
            work_dir: str | Path, teacher_dir: str | Path | None = None,
            logits: str | Path | None = None, init_dir: str | Path | None = None,
            eval_batch_size: int, match_steps: list[dict] | None = None,
            selection: str = "validation", compile: str = "false") -> list:
    """Train student ``name`` (``spec`` as built by :func:`kdlib.distill.spec.student_spec`). The last
    phase is evaluated on the selection split (validation by default,
    :func:`kdlib.distill.train.selection_split`), keeps its best checkpoint there and may stop
    early; earlier phases (TinyBERT's intermediate, Theseus' replacement) run their whole budget
    and hand their last weights on. A baseline (algorithm none) given ``match_steps`` may train as
    many steps as those students (:func:`matched_steps`): a cap, with the same selection.
    ``compile``: whether the student runs through torch.compile
    (:func:`kdlib.distill.compiling.should_compile`, over the steps of every phase)."""
    recipe = get_recipe(spec["algorithm"], name)
    needs = recipe.needs(spec)
    missing = [what for what, needed, given in (
        ("the teacher logit cache (logits)", needs["logits"], logits),
        ("the fine-tuned teacher (teacher_dir)", needs["teacher"], teacher_dir),
        ("the exported teacher layers (init_dir)", needs["init"], init_dir))
        if needed and not given]
    if missing:
        raise ConfigError(f"student {name}: algorithm {spec['algorithm']} with a "
                          f"{spec['architecture']['model']} student needs {' and '.join(missing)}")
    records, work_dir = Path(records), Path(work_dir)
    transfer = records_transfer(records)
    check_transfer(name, spec, records, transfer)
    n_train = checked_count(record_file(records, "train"))
    encoding = encoding_of(records, task)          # the model folder's tokeniser settings
    vocab = records_tokenizer(records)             # the tokenizer file the model folder carries
    with train.running(B, out_dir, work_dir):    # checked, locked and cleared before training
        vocab_size = None
        if spec["architecture"]["model"] == "bilstm":
            vocab_size = len(read_word_vocab(vocab))
        ctx = Context(B, task, records, teacher_dir=Path(teacher_dir) if teacher_dir else None,
                      init_dir=Path(init_dir) if init_dir else None, vocab_size=vocab_size)
        if recipe.needs_logits:
            ctx.logits = load_logits(logits, records, task)
        cfgs = phase_configs(spec, recipe)
        matched = {}
        if match_steps and spec["algorithm"] == "none":
            cfgs[-1], steps, like = matched_steps(cfgs[-1], n_train, match_steps)
            if like:
                matched = {"matched_steps_of": like}
                print(f"{name}: {steps} steps ({cfgs[-1].epochs:.2f} epochs), as many as {like}",
                      file=sys.stderr)
        B.seed(cfgs[0].seed)
        student = recipe.build(ctx, spec)
        compiled = compiling.apply(compile, B, student, spec["architecture"]["model"],
                                   sum(train.total_steps(n_train, cfg) for cfg in cfgs))
        meta = {"task": task.name, "labels": list(task.labels or []), "role": "student",
                "student": name, "algorithm": spec["algorithm"], **encoding}
        split, keep = train.selection_split(selection, task)
        scored = record_file(records, split)
        evaluate = split_evaluator(B, student, task, scored, eval_batch_size)
        inputs = {f"{split} records": scored}        # what the resume state is keyed to, with spec
        if teacher_dir:
            inputs["teacher weights"] = Path(teacher_dir) / checkpoint.WEIGHTS_FILE
        if logits:
            inputs["teacher logits"] = logits
        if init_dir:
            inputs["initial weights"] = Path(init_dir) / checkpoint.WEIGHTS_FILE
        if vocab_size:
            inputs["word vocabulary"] = vocab
        results = []
        phases = recipe.phases(ctx, spec, student, cfgs)
        for k, phase in enumerate(phases):
            if phase.setup:
                phase.setup()
            print(f"{name}: phase {phase.name}", file=sys.stderr)
            final = k == len(phases) - 1             # only the last phase selects and stops early
            results.append(train.fit(
                B, phase.modules, phase.loss_fn, train_path=record_file(records, "train"), cfg=phase.cfg,
                work_dir=work_dir / phase.name, evaluate=evaluate if final else None,
                keep=keep if final else "last", save_config=meta, student="student",
                desc=f"{name} {phase.name}",
                settings={"task": task.name, "student": name, "spec": spec, "phase": phase.name,
                          "compiled": compiled},
                inputs=inputs))
        if B.rank == 0:                          # data parallel: rank 0 writes the outputs
            total = train.FitResult(results[-1].best_score, results[-1].best_step,
                                    sum(r.steps for r in results), sum(r.seconds for r in results),
                                    results[-1].history, results[-1].processes)
            train.publish(out_dir, work_dir / phase.name, total, cfgs[-1], work_dir=work_dir,
                          extra_files=[vocab], task=task.name, student=name, algorithm=spec["algorithm"],
                          training_rows=n_train, transfer_rows=int(transfer.get("transfer", 0)), **matched,
                          compiled=compiled,
                          selection=train.selection_summary(results, cfgs[-1], selection, split, task.metric),
                          phases=[{"steps": r.steps, "allowed": r.allowed, "seconds": round(r.seconds, 2),
                                   "best_score": r.best_score, "skipped_steps": r.skipped_steps}
                                  for r in results])
        return results
