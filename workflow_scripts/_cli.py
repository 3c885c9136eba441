"""Shared plumbing for stage scripts: user mistakes end as one ``error:`` line, not a traceback;
the arguments every stage of a kind takes; JSON arguments; the training stages' summary line."""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable

from kdlib.distill import compiling
from kdlib.errors import KdflowError


def guarded(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a stage's ``main(argv=None)``: a KdflowError prints ``error: <message>`` to stderr
    and returns 1; otherwise it returns ``main``'s own result (``None`` counts as 0)."""
    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv) or 0
        except KdflowError as exc:
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
    return wrapper


def stage_parser(doc: str, task: bool = True) -> argparse.ArgumentParser:
    """The parser of a stage whose module docstring is ``doc``, with ``--task`` (required).

    Every flag that the workflow always passes is required: the defaults live in config.yaml and
    its schema alone."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    if task:
        p.add_argument("--task", required=True, help="task id, e.g. sst2, tweets")
    return p


def add_runtime_args(parser) -> None:
    """Where and how a training or evaluation stage runs: --backend, --device, --precision,
    --threads, and --eval-batch-size (config.yaml ``eval_batch_size``, the batch size of every
    evaluation)."""
    parser.add_argument("--backend", required=True, help="auto | oneflow | torch")
    parser.add_argument("--device", required=True, help="auto | cpu | cuda")
    parser.add_argument("--precision", required=True, help="auto | fp32 | bf16 | fp16 (mixed precision)")
    parser.add_argument("--threads", type=int, required=True, help="CPU threads (0 = library default)")
    parser.add_argument("--eval-batch-size", type=int, required=True,
                        help="batch size of dev-set evaluation")


def backend_from(args):
    """The Backend the runtime arguments ask for, with its thread count applied: ``--threads``, but
    no more than this process's share of the CPUs it may use (a Slurm job's allocation, not the
    node's cores, split between the data-parallel processes of the job)."""
    from kdlib import backend
    B = backend.load(args.backend, args.device, args.precision)
    if B.rank == 0:
        print(f"{B.name} on {B.device_name}, precision {B.precision} ({B.precision_reason})",
              file=sys.stderr)
    if args.threads:
        share = max(1, backend.usable_cpus() // backend.processes_here())
        B.set_num_threads(min(args.threads, share))
    return B


def json_arg(text: str, flag: str):
    """The value of a JSON command-line argument; invalid JSON is one ConfigError naming ``flag``."""
    import json

    from kdlib.errors import ConfigError
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{flag} is not valid JSON ({exc})") from None


def add_custom_arg(parser) -> None:
    """``--custom``: the definition of a task under config.yaml's custom_tasks (the record stages)."""
    parser.add_argument("--custom", default=None,
                        help="the task's custom_tasks definition as JSON (a task of your own files)")


def add_validation_args(parser) -> None:
    """How a validation split without a file is carved from train (config.yaml ``data.validation``):
    the record and transfer-set stages."""
    parser.add_argument("--validation-fraction", type=float, required=True,
                        help="share of the training rows held out as validation")
    parser.add_argument("--validation-max-rows", type=int, required=True, help="cap on them; 0 = none")
    parser.add_argument("--validation-seed", type=int, required=True, help="seed of the draw")


def carve_from(args):
    """The :class:`kdlib.data.validation.Carve` of :func:`add_validation_args`' flags."""
    from kdlib.data.validation import Carve
    from kdlib.errors import ConfigError
    if not 0 < args.validation_fraction < 1 or args.validation_max_rows < 0:
        raise ConfigError("--validation-fraction must lie between 0 and 1 and --validation-max-rows "
                          "be 0 or more")
    return Carve(args.validation_fraction, args.validation_max_rows, args.validation_seed)


def task_to_record(args):
    """The task a record stage converts: the registry's, or the one ``--custom`` defines, with its
    labels read from the training file where the definition gives none."""
    from kdlib.data import custom, tasks
    if args.custom is None:
        return tasks.get_task(args.task)
    spec = load_section(args.custom, "custom_task", "--custom")
    return custom.with_labels(tasks.get_task(args.task, {args.task: spec}),
                              log=lambda line: print(line, file=sys.stderr))


def load_section(text: str, definition: str, flag: str) -> dict:
    """A JSON object given on the command line, validated against the schema's ``definition``."""
    from kdlib import config
    return config.validate_section(json_arg(text, flag), definition, flag)


def add_selection_arg(parser) -> None:
    """``--selection``: the split that picks the published checkpoint (config.yaml ``selection``)."""
    parser.add_argument("--selection", required=True, choices=("validation", "dev", "last"),
                        help="validation (best on validation, early stopping) | dev | last")


def add_compile_arg(parser) -> None:
    """``--compile``: whether the trained model runs through torch.compile (config.yaml ``compile``)."""
    parser.add_argument("--compile", default="false", choices=compiling.CHOICES,
                        help="auto (where measured to pay back) | true | false (kdlib.distill.compiling)")


def print_trained(B, what: str, task, result, seconds: float, out: str, selection: str,
                  steps_before: int = 0) -> None:
    """A training stage's one-line summary (the log's last line, which the workflow echoes), from
    the rank that evaluated: ``<what> on <task>: <split> <metric> <score> at step <k>/<n> (of
    <allowed> allowed; stopped early), <seconds> s on <backend>/<device>; saved to <out>``, steps
    counted over every phase (``steps_before``: the earlier phases'), and a warning where the kept
    checkpoint predicts one class for every example of the split."""
    if B.rank != 0:
        return
    from kdlib.distill.train import selection_split
    split, keep = selection_split(selection, task)
    processes = f" x {B.world_size} processes" if B.world_size > 1 else ""
    allowed = steps_before + result.allowed
    early = "; stopped early" if result.stopped_early else ""
    kept = "last" if keep == "last" else "best"
    collapsed = (f"; WARNING: it predicts one class for every {split} example (collapsed)"
                 if result.collapsed else "")
    print(f"{what} on {task.name}: {kept} {split} {task.metric} {result.best_score:.4f} at step "
          f"{steps_before + result.best_step}/{steps_before + result.steps} (of {allowed} allowed{early}), "
          f"{seconds:.0f} s on {B.name}/{B.device_name}{processes}; saved to {out}{collapsed}",
          file=sys.stderr)
