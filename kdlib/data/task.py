"""A task's definition: its files' columns, labels, metrics and splits (:class:`Task`). The
registry of built-in tasks is :mod:`kdlib.data.tasks`; a task defined in config.yaml is built by
:mod:`kdlib.data.custom`."""
from __future__ import annotations

from dataclasses import dataclass, fields

VALIDATION = "validation"   # the split that selects checkpoints and stops training early

@dataclass(frozen=True)
class Task:
    name: str                      # lower-case id used in paths: sst2, mnli, tweets ...
    glue_dir: str                  # folder under data/glue/ (GLUE's own spelling)
    archive: str | None            # zip under data.glue_url; None: not a GLUE download
    text_a: str | int              # column name, or index for header-less files (CoLA)
    text_b: str | int | None
    label: str | int
    labels: tuple[str, ...] | None  # None: regression
    metrics: tuple[str, ...]       # the first one ranks models
    dev_splits: tuple[str, ...] = ("dev",)
    header: bool = True
    skip_malformed: bool = False   # skip rows without the header's field count (QQP's train.tsv)
    note: str = ""
    # a task defined in config.yaml (kdlib.data.custom): its files, their format, its length
    files: tuple[tuple[str, str], ...] = ()          # (split, path) pairs
    fmt: str = "tsv"                                 # tsv | csv | jsonl
    max_length: int | None = None
    custom: bool = False
    predict_splits: tuple[str, ...] = ()             # splits predicted, not scored (a test file)
    validation_file: bool = False  # the validation split has a file of its own; else carved from train

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits that have a file of their own: train, validation (where it is not carved from
        train), the dev splits and any prediction-only split."""
        own = ("validation",) if self.validation_file else ()
        return ("train",) + own + self.dev_splits + self.predict_splits

    @property
    def record_splits(self) -> tuple[str, ...]:
        """The splits that become records: train, validation (its own file's rows, or those carved
        from the training file, :mod:`kdlib.data.validation`), the dev splits, any test split."""
        return ("train", VALIDATION) + self.dev_splits + self.predict_splits

    def to_dict(self) -> dict:
        """The definition, as the records' meta.json holds it (labels resolved)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        names = {f.name for f in fields(cls)}
        tuples = ("labels", "metrics", "dev_splits", "predict_splits")
        values = {k: (tuple(v) if k in tuples and v is not None else v) for k, v in d.items() if k in names}
        values["files"] = tuple(tuple(pair) for pair in d.get("files", ()))
        return cls(**values)

    @property
    def metric(self) -> str:
        return self.metrics[0]
