"""The generic training loop: AdamW, linear warm-up and decay, clipping, evaluation, exact resume.

Nothing here knows about algorithms. A caller hands :func:`fit` the modules to train and a
``loss_fn(batch) -> (loss, parts)``; distillation recipes differ only in that function.

Exact resume: every ``save_seconds`` of training (:func:`save_due`) the work folder gets
(atomically) the weights, the optimizer moments, the step, the data position and the best score so
far. The global RNG is re-seeded from ``(seed, step)`` before every step and the data order is a
function of ``(seed, epoch)``, so a run that is killed and restarted continues bit-for-bit like one
that was never interrupted. The work folder is not a Snakemake output, so a failed job does not delete it.

A resume state is only used by the job that wrote it (:mod:`kdlib.distill.resume`); the stages
clear the work folder once their outputs are published.

Data parallel (started by ``torchrun`` or ``oneflow.distributed.launch``, see kdlib.backend): every
process reads the same global batches of ``cfg.batch_size`` and trains on its rows of each
(:func:`kdlib.data.batching.shard_rows`); the loss runs inside a module wrapped by ``B.wrap_ddp``, so the
gradients are averaged over the processes and W processes take the same steps as one process with
the same global batch. Only rank 0 evaluates and writes (log, best weights, resume state); the
others read the resume state at the start. Dropout differs between ranks: its seed is a function
of ``(seed, step, rank)``.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from ..backend import dist_env
from ..config import validate_section
from ..data import batching, ofrecord
from ..data.task import VALIDATION
from ..errors import ConfigError, KdflowError
from ..io import atomic_dir, check_writable, folder_lock, own_folder, remove, remove_orphans, start_over, write_text
from ..models import checkpoint
from . import resume

BEST_DIR = "best"
LOG_CSV = "train_log.csv"
# A recipe's ``parts`` carry this key, true, for a step whose loss has nothing to train (a Theseus
# step that drew every teacher module): fit skips the update and counts it. Any other loss without
# a gradient is a bug, and an error.
NOTHING_TO_TRAIN = "nothing_to_train"


class TrainingDiverged(KdflowError):
    """The loss became NaN or infinite."""


class NoGradient(KdflowError):
    """A step's loss does not depend on any trained parameter."""


@dataclass
class TrainConfig:
    """One training run's settings. Their meanings and defaults live in one place, the schema's
    ``$defs/train`` (kdlib/config.schema.yaml): build one with :meth:`from_dict`."""
    epochs: float                  # passes over the training set (fractions allowed)
    batch_size: int
    lr: float
    warmup: float                  # share of all steps spent warming up linearly
    weight_decay: float            # not applied to biases and LayerNorm weights
    max_grad_norm: float           # 0 disables clipping
    eval_every: int                # steps between evaluations; 0 = `evaluations` spread over the run
    evaluations: int               # evaluations per run when eval_every is 0 (the last step included)
    patience: int                  # evaluations without improvement that stop the run; 0 = never
    save_seconds: float            # seconds between resume states (0: after every step)
    shuffle_buffer: int            # records held by the streaming shuffle
    bucket: int                    # batches per length-sorted pool (0 = no length bucketing)
    seed: int

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """``values`` with the schema's defaults filled in; an unknown or invalid setting is one
        ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**validate_section(values, "train", "training settings"))


# A resume state is written at most once per SAVE_COST_FACTOR times what the last one took to write:
# their cost stays under 1 / (1 + SAVE_COST_FACTOR) of a job (2%) however large the model or slow
# the disk. _clock is what measures both (a test drives it).
SAVE_COST_FACTOR = 50
_clock = time.perf_counter


def save_due(save_seconds: float, since_last: float, last_cost: float) -> bool:
    """Whether a resume state is due ``since_last`` seconds after the last one, which took
    ``last_cost`` seconds to write: after every step when ``save_seconds`` is 0, else once both
    ``save_seconds`` and ``SAVE_COST_FACTOR * last_cost`` have passed."""
    return save_seconds == 0 or since_last >= max(save_seconds, SAVE_COST_FACTOR * last_cost)


def lr_factor(step: int, total: int, warmup_steps: int) -> float:
    """Linear warm-up from 0 to 1 over ``warmup_steps``, then linear decay to 0 at ``total``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total - step) / max(1, total - warmup_steps))


def _no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name


def group_params(group) -> list:
    """The parameters of one optimizer param group: a dict in PyTorch, a ParamGroup in OneFlow."""
    return group["params"] if isinstance(group, dict) else group.parameters


def make_optimizer(B, modules: dict, cfg: TrainConfig, fused: bool = True):
    """AdamW over every parameter of ``modules``, without weight decay on biases and LayerNorm.

    On PyTorch the fused implementation by default (one kernel over all parameters: 4x faster on
    the CPU for a 14M-parameter student, BENCHMARKS.md); OneFlow 0.9 fuses only on CUDA and is
    left to its own. ``fused=False`` is the plain per-parameter form (the cross-library test)."""
    decay, no_decay = [], []
    for prefix, module in modules.items():
        for name, param in module.named_parameters():
            if param.requires_grad:
                (no_decay if _no_decay(name) else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    kind = {"fused": True} if fused and B.name == "torch" else {}
    return B.lib.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(0.9, 0.999),
                             eps=1e-8, **kind)


def seed_step(B, modules: dict, seed: int, step: int, rank: int = 0) -> None:
    """Make the step's randomness a function of ``(seed, step)``: the library's global RNG and the
    private generator that every OneFlow ``nn.Dropout`` owns (all created with one fixed seed, and
    deaf to ``manual_seed``), each layer's from its own ``(seed, step, k)``. Ranks above 0 of a
    data-parallel run add their rank, so that their shards get other dropout masks."""
    extra = [rank] if rank else []               # rank 0 keeps the single-process seeds
    B.lib.manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]) if rank
                      else seed * 1_000_003 + step)
    k = 0
    for module in modules.values():
        for sub in module.modules():
            generator = getattr(sub, "generator", None)
            if hasattr(generator, "manual_seed"):
                k += 1
                generator.manual_seed(int(np.random.SeedSequence([seed, step, k, *extra]).generate_state(1)[0]))


def objective(B, modules: dict, loss_fn: Callable):
    """One module that holds ``modules`` and whose ``forward(batch)`` is ``loss_fn(batch)[0]``.

    DistributedDataParallel averages gradients only for a loss computed inside the wrapped module's
    forward, while recipes call their raw modules (or parts of them, as Theseus does) from
    closures. Wrapping this module instead leaves every recipe as it is. Modules the closure holds
    without listing them (the frozen teacher) stay outside it.
    """
    class Objective(B.nn.Module):
        def __init__(self):
            super().__init__()
            self.trained = B.nn.ModuleDict(modules)
            self.parts: dict = {}              # the last step's parts, read by fit

        def forward(self, batch):
            loss, self.parts = loss_fn(batch)
            return loss
    return Objective()


def steps_per_epoch(n_records: int, batch_size: int) -> int:
    return max(1, math.ceil(n_records / batch_size))


def total_steps(n_records: int, cfg: TrainConfig) -> int:
    """Steps of a training run: ``cfg.epochs`` passes of ``cfg.batch_size`` over ``n_records``."""
    return max(1, int(round(cfg.epochs * steps_per_epoch(n_records, cfg.batch_size))))


@dataclass
class FitResult:
    best_score: float              # the kept checkpoint's score on the selection split
    best_step: int                 # its step (the last one under keep="last")
    steps: int                     # steps trained
    seconds: float
    history: list                  # one {"step", **metrics} per evaluation
    processes: int = 1             # data-parallel processes that trained
    skipped_steps: int = 0         # steps with nothing to train (no update made)
    allowed: int = 0               # the step budget (steps < allowed after an early stop)
    stopped_early: bool = False
    eval_seconds: float = 0.0      # of ``seconds``, the time spent evaluating

    @property
    def collapsed(self) -> bool:
        """The kept checkpoint predicted one class for every example of the selection split."""
        return any(h["step"] == self.best_step and h.get("classes_predicted") == 1 for h in self.history)


def eval_interval(total: int, cfg: TrainConfig) -> int:
    """Steps between evaluations: ``cfg.eval_every``, or ``total`` split into ``cfg.evaluations``
    even intervals (rounded up, so no more evaluations than asked; the last step always evaluates)."""
    return cfg.eval_every or max(1, math.ceil(total / cfg.evaluations))


def _learning(entry: dict | None) -> bool:
    """An evaluation at which the model predicts more than one class (regression: always)."""
    return entry is not None and entry.get("classes_predicted") != 1


def since_best(history: list, best_step: int) -> int:
    """The early-stopping counter: evaluations made after the best one, rebuilt from the history
    (so a resumed run counts as one never interrupted). While every evaluation predicts one class
    for every example, nothing counts: a model on that plateau has not begun to learn, so its flat
    scores say nothing of overfitting (and :func:`_evaluate` prefers any evaluation that predicts
    more than one class to those, so the best is never one of them once the model learns)."""
    if not any(_learning(h) for h in history):
        return 0
    return sum(1 for h in history if h["step"] > best_step)


def fit(B, modules: dict, loss_fn: Callable, *, train_path: str | Path, cfg: TrainConfig,
        work_dir: str | Path, evaluate: Callable | None = None, keep: str = "best",
        save_config: dict | None = None, student: str = "model", desc: str = "train",
        settings: dict | None = None, inputs: dict | None = None) -> FitResult:
    """Train ``modules`` (name -> module; ``modules[student]`` is the model that is kept).

    ``loss_fn(batch)`` returns ``(loss, parts)`` for a numpy batch from :func:`batching.batches`
    (plus ``batch["step"]``, the 0-based global step).
    ``evaluate()`` returns ``(score, metrics)`` on the selection split (validation; never dev unless
    the user asks for it, config ``selection``); it runs every :func:`eval_interval` steps and at the
    last step. With ``keep="best"`` the best-scoring weights of ``modules[student]`` are kept in
    ``work_dir/best`` with ``save_config`` as their config.json, and the run stops early once
    ``cfg.patience`` evaluations in a row have not beaten the best (0: never; :func:`since_best`:
    not while the model predicts one class, and a checkpoint that predicts more than one class
    beats any that predicts one); the step budget is a cap, not a quota. With ``keep="last"``, or
    without ``evaluate``, the last weights are kept.
    Interrupted runs resume from ``work_dir/state`` when the state was written by the same job: the
    same ``settings`` (the job's resolved settings, JSON-able), ``cfg``, backend, training records,
    other ``inputs`` (name -> file) and code (:func:`kdlib.distill.resume.job_identity`); otherwise
    the work folder is cleared and training starts over.

    A step whose loss has no gradient is an error (:class:`NoGradient`) unless the recipe's parts
    say :data:`NOTHING_TO_TRAIN`; such steps make no update and are counted.

    Under a data-parallel launcher ``cfg.batch_size`` stays the global batch; only rank 0 evaluates
    and writes, and its FitResult is the one that holds the scores.
    """
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be best or last, not {keep!r}")
    work_dir = Path(work_dir)
    B.dist_init()
    rank0 = B.rank == 0
    if rank0:
        own_folder(work_dir)                     # a link there is replaced, never written through
        remove_orphans(work_dir)                 # what a killed atomic write left behind
    n_records = ofrecord.checked_count(train_path)
    if n_records == 0:
        raise KdflowError(f"{train_path}: no training records")
    per_epoch = steps_per_epoch(n_records, cfg.batch_size)
    total = total_steps(n_records, cfg)
    warmup_steps = max(1, int(cfg.warmup * total)) if cfg.warmup > 0 else 0
    eval_every = eval_interval(total, cfg)
    patience = cfg.patience if keep == "best" and evaluate is not None else 0
    optimizer = make_optimizer(B, modules, cfg)
    params = [p for g in optimizer.param_groups for p in group_params(g)]
    shard = (B.rank, B.world_size) if B.world_size > 1 else None

    identity = resume.job_identity(B, cfg, train_path, {**(settings or {}), "keep": keep}, inputs)
    state = resume.load_state(B, work_dir, modules, optimizer, identity, desc)
    scaler = B.grad_scaler()                     # fp16 only: bf16 and fp32 need none
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    inner = objective(B, modules, loss_fn)
    net = B.wrap_ddp(inner)                      # after loading: rank 0's weights rule
    skipped = state.get("skipped_steps", 0)
    step = state.get("step", 0)
    best, best_step = state.get("best", -math.inf), state.get("best_step", -1)
    seconds = state.get("seconds", 0.0)
    history = state.get("history", [])
    eval_seconds = state.get("eval_seconds", 0.0)
    stopped = state.get("stopped_early", False)  # a run killed after its early stop stays stopped
    log_path = work_dir / LOG_CSV
    if rank0:
        resume.truncate_log(log_path, step)
    if step and rank0:
        print(f"{desc}: resuming at step {step}/{total} from {work_dir / resume.STATE_DIR}", file=sys.stderr)

    for m in modules.values():
        m.train()
    bar = tqdm(total=total, initial=step, desc=desc, unit="step", file=sys.stderr, mininterval=2,
               disable=not rank0)
    started, seen = time.perf_counter(), 0
    last_save, save_cost = _clock(), 0.0
    # the bar ends its line on errors too; ranks above 0 log to nowhere
    with bar, open(log_path if rank0 else os.devnull, "a", newline="") as log_fh:
        log = csv.writer(log_fh)
        if log_fh.tell() == 0:
            log.writerow(["step", "epoch", "lr", "loss", "examples_per_s", "eval_score"])
        while step < total and not stopped:
            epoch, start_batch = divmod(step, per_epoch)
            data = batching.batches(train_path, cfg.batch_size, shuffle_buffer=cfg.shuffle_buffer,
                                    seed=cfg.seed, epoch=epoch, start_batch=start_batch,
                                    bucket=cfg.bucket, shard=shard)
            for batch in data:
                if step >= total or stopped:
                    break
                seed_step(B, modules, cfg.seed, step, B.rank)    # dropout: a function of the step
                factor = lr_factor(step, total, warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * factor
                batch["step"] = step                     # for schedules inside a recipe
                with B.autocast():                       # the run's precision: forward and losses
                    loss = net(batch)
                if batch.get("shard_weight", 1.0) != 1.0:   # a shard of a short last batch
                    loss = loss * batch["shard_weight"]
                value = B.mean_over_ranks(float(loss.item()))   # the global batch's mean
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"{desc}: the loss became {value} at step {step + 1} (epoch {epoch + 1}); "
                        f"lower the learning rate ({cfg.lr}) or check the data")
                optimizer.zero_grad()
                if loss.requires_grad:
                    _update(B, optimizer, scaler, loss, params, cfg.max_grad_norm)
                elif inner.parts.get(NOTHING_TO_TRAIN):  # e.g. Theseus kept every teacher module
                    skipped += 1
                else:
                    raise NoGradient(f"{desc}: the loss at step {step + 1} does not depend on any "
                                     "trained parameter, so nothing would be learnt")
                step += 1
                seen += batch.get("global_rows", len(batch["label_ids"]))
                rate = seen / max(1e-9, time.perf_counter() - started)
                eval_score = ""
                if evaluate is not None and (step % eval_every == 0 or step == total):
                    if rank0:
                        clock = time.perf_counter()
                        best, best_step, eval_score = _evaluate(B, modules, evaluate, step, history,
                                                                best, best_step, keep, work_dir,
                                                                student, save_config, bar, desc)
                        eval_seconds += time.perf_counter() - clock
                    # every rank stops at the same step: rank 0's counter, shared
                    late = B.mean_over_ranks(float(since_best(history, best_step))) if rank0 \
                        else B.mean_over_ranks(0.0)
                    stopped = bool(patience) and round(late * B.world_size) >= patience and step < total
                    if stopped and rank0:
                        bar.write(f"{desc}: stopped early at step {step}/{total}: {patience} "
                                  f"evaluations without a better score than {best:.4f} (step {best_step})")
                log.writerow([step, round(step / per_epoch, 4), f"{cfg.lr * factor:.3e}",
                              f"{value:.6f}", f"{rate:.1f}", eval_score])
                bar.set_postfix(loss=f"{value:.4f}", ex_s=f"{rate:.0f}")
                bar.update(1)
                now = _clock()
                if rank0 and (step == total or stopped or save_due(cfg.save_seconds, now - last_save, save_cost)):
                    log_fh.flush()
                    seconds_now = seconds + time.perf_counter() - started
                    resume.save_state(B, work_dir, modules, optimizer,
                                {"step": step, "best": best, "best_step": best_step,
                                 "seconds": seconds_now, "history": history,
                                 "skipped_steps": skipped, "identity": identity,
                                 "stopped_early": stopped, "eval_seconds": eval_seconds,
                                 **({"scaler": scaler.state_dict()} if scaler is not None else {})})
                    last_save = _clock()
                    save_cost = last_save - now
    bar.close()
    seconds += time.perf_counter() - started
    if skipped and rank0:
        print(f"{desc}: {skipped} of {total} steps had nothing to train and made no update",
              file=sys.stderr)
    if (evaluate is None or keep == "last") and rank0:
        checkpoint.save_checkpoint(modules[student], work_dir / BEST_DIR, save_config or {}, B)
    del net                                      # torch: drops the DDP hooks before another phase
    B.barrier()                                  # rank 0's files are complete for everyone
    return FitResult(best, best_step, step, seconds, history, B.world_size, skipped, total, stopped,
                     eval_seconds)


def _evaluate(B, modules, evaluate, step, history, best, best_step, keep, work_dir, student,
              save_config, bar, desc):
    """One evaluation at ``step`` (rank 0): appended to ``history``; under ``keep="best"`` a better
    score saves the weights, where an evaluation that predicts more than one class beats any that
    predicts one (a model stuck on the majority class is not a model to keep once another is
    found). Returns the new ``(best, best_step, score text for the log)``."""
    for m in modules.values():
        m.eval()
    with B.no_grad():
        score, metrics = evaluate()
    for m in modules.values():
        m.train()
    kept = next((h for h in history if h["step"] == best_step), None)
    history.append({"step": step, **metrics})
    text = f"{score:.6f}"
    if math.isnan(score):                        # e.g. Pearson of constant outputs
        score = -math.inf
    if keep == "last":
        best, best_step = score, step
    elif best_step < 0 or (_learning(history[-1]), score) > (_learning(kept), best):
        best, best_step = score, step
        checkpoint.save_checkpoint(modules[student], work_dir / BEST_DIR, save_config or {}, B)
    bar.write(f"{desc}: step {step} score {score:.4f} (best {best:.4f} at {best_step})")
    return best, best_step, text


def _update(B, optimizer, scaler, loss, params: list, max_grad_norm: float) -> None:
    """One optimizer step from ``loss``: backward, the gradients averaged over the processes,
    clipped and applied. With an fp16 ``scaler`` the loss is scaled before backward and the
    gradients unscaled before clipping; a step whose gradients overflowed is skipped by it."""
    (loss if scaler is None else scaler.scale(loss)).backward()
    B.sync_grads(params)                         # where the DDP wrapper did not
    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        B.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()


def publish(out_dir: str | Path, phase_dir: Path, result: FitResult, cfg: TrainConfig, *,
            work_dir: Path, extra_files=(), **summary) -> None:
    """Publish a finished training job into ``out_dir``, all at once: the best checkpoint and the
    training log of ``phase_dir`` (the work folder of its last phase), ``extra_files`` (copied by
    name) and ``train_summary.json`` (``result``, ``cfg`` and ``summary``). Then clear the job's
    ``work_dir``: its resume states have served."""
    with atomic_dir(out_dir) as tmp:
        for name in (checkpoint.WEIGHTS_FILE, checkpoint.CONFIG_FILE):
            shutil.copy2(phase_dir / BEST_DIR / name, tmp / name)
        shutil.copy2(phase_dir / LOG_CSV, tmp / LOG_CSV)
        for path in extra_files:                 # copied now: newer than the job's inputs
            shutil.copyfile(path, tmp / Path(path).name)
        write_summary(tmp / "train_summary.json", result, cfg, **summary)
    remove(work_dir)


@contextlib.contextmanager
def running(B, out_dir: str | Path, work_dir: str | Path):
    """What a training stage holds while it runs, on rank 0 (the rank that writes): it checks
    first that ``out_dir`` and ``work_dir`` can be written (not after hours of training), then
    holds the work folder (:func:`kdlib.io.folder_lock`: a second job on it, say one started while
    an orphaned one still trains, is refused at once and touches nothing), and removes the
    ``out_dir`` it will replace (:func:`kdlib.io.start_over`), so a failed job leaves none of the
    old model behind."""
    if B.rank != 0:
        yield
        return
    check_writable(out_dir)
    check_writable(work_dir, "work folder")
    with folder_lock(work_dir):
        start_over(out_dir)
        yield


SELECTIONS = ("validation", "dev", "last")   # config.yaml `selection`


def selection_split(selection: str, task) -> tuple[str, str]:
    """``(split evaluated during training, keep)`` of a ``selection`` mode: validation and last
    evaluate on the validation split (last keeps the last weights, for the curves' sake); dev on
    the first dev split, as GLUE papers often do."""
    if selection not in SELECTIONS:
        raise ConfigError(f"selection must be one of {', '.join(SELECTIONS)}, not {selection!r}")
    split = task.dev_splits[0] if selection == "dev" else VALIDATION
    return split, "last" if selection == "last" else "best"


def selection_summary(results: list[FitResult], cfg: TrainConfig, mode: str, split: str,
                      metric: str) -> dict:
    """What a model's ``train_summary.json`` (and so its eval JSON) says of its selection: the
    mode and split, the kept checkpoint's score and step (``step`` counts every phase,
    ``phase_step`` is the last phase's, as in its train_log.csv), the budget, the steps run, an
    early stop, whether the kept checkpoint predicts one class for every example, and the seconds
    the last phase spent evaluating (of its training seconds)."""
    last, before = results[-1], sum(r.steps for r in results[:-1])
    return {"mode": mode, "split": split, "metric": metric,
            "score": None if not math.isfinite(last.best_score) else last.best_score,
            "step": before + last.best_step, "phase_step": last.best_step,
            "steps_allowed": sum(r.allowed for r in results), "steps_run": before + last.steps,
            "stopped_early": last.stopped_early, "patience": cfg.patience if mode != "last" else 0,
            "evaluations": len(last.history), "collapsed": last.collapsed,
            "eval_seconds": round(last.eval_seconds, 2)}


def write_summary(path: str | Path, result: FitResult, cfg: TrainConfig, **extra) -> None:
    write_text(path, json.dumps({"best_score": result.best_score, "best_step": result.best_step,
                                 "steps": result.steps, "train_seconds": round(result.seconds, 2),
                                 "processes": result.processes, "writer_rank": dist_env()[0],
                                 "skipped_steps": result.skipped_steps,
                                 "config": asdict(cfg), "history": result.history, **extra},
                                indent=2) + "\n")
