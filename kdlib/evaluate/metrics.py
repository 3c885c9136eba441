"""Metrics on numpy arrays: accuracy, F1 (positive class 1), macro-F1 (multi-class), Matthews
correlation, Pearson and Spearman correlation."""
from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(np.mean(pred == gold))


def f1(pred: np.ndarray, gold: np.ndarray) -> float:
    tp = float(np.sum((pred == 1) & (gold == 1)))
    fp = float(np.sum((pred == 1) & (gold != 1)))
    fn = float(np.sum((pred != 1) & (gold == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def macro_f1_rows(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Macro-F1 of each row of (R, N) class arrays: the mean F1 over the classes that occur in the
    row's gold labels or predictions (each class in turn the positive one), as scikit-learn's
    ``f1_score(average="macro")`` computes it."""
    classes = int(max(pred.max(), gold.max())) + 1
    total = np.zeros(pred.shape[0])
    present = np.zeros(pred.shape[0])
    for c in range(classes):
        tp = ((pred == c) & (gold == c)).sum(axis=1)
        fp_fn = ((pred == c) != (gold == c)).sum(axis=1)           # (R,) fp + fn
        occurs = (tp + fp_fn) > 0
        total += np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp_fn, 1), 0.0)
        present += occurs
    return total / np.maximum(present, 1)


def macro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(macro_f1_rows(np.asarray(pred)[None], np.asarray(gold)[None])[0])


def mcc(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation for binary labels; 0 when a row or column of the confusion is empty."""
    tp = float(np.sum((pred == 1) & (gold == 1)))
    tn = float(np.sum((pred != 1) & (gold != 1)))
    fp = float(np.sum((pred == 1) & (gold != 1)))
    fn = float(np.sum((pred != 1) & (gold == 1)))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else float((tp * tn - fp * fn) / denom)


def pearson(pred: np.ndarray, gold: np.ndarray) -> float:
    import pandas as pd  # imported here: the Snakefile imports kdlib, and pandas is slow to load
    return float(pd.Series(pred, dtype="float64").corr(pd.Series(gold, dtype="float64")))


def spearman(pred: np.ndarray, gold: np.ndarray) -> float:
    """Pearson correlation of the ranks (ties get their average rank)."""
    import pandas as pd
    return pearson(pd.Series(pred, dtype="float64").rank().to_numpy(),
                   pd.Series(gold, dtype="float64").rank().to_numpy())


METRICS = {"accuracy": accuracy, "f1": f1, "macro_f1": macro_f1, "mcc": mcc, "pearson": pearson,
           "spearman": spearman}


def compute(names, logits: np.ndarray, gold: np.ndarray, regression: bool) -> dict[str, float]:
    """The named metrics of (N, C) logits (argmax) or (N, 1) regression outputs against ``gold``."""
    pred = logits[:, 0] if regression else logits.argmax(-1)
    return {name: METRICS[name](pred, gold) for name in names}
