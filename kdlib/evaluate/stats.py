"""Whether a gain is real: paired bootstrap intervals of metric differences, and McNemar's exact
test, computed from two models' predictions on the same dev examples.

Paired bootstrap: draw ``resamples`` index sets of the dev examples with replacement (seeded),
evaluate both models' metric on each set and take the 2.5th and 97.5th percentiles of the
differences. The same indices serve both models, so what the two have in common (the hard
examples) cancels, and the interval is that of the *gain*. The resamples are drawn in chunks and
every metric is computed for a whole chunk at once with numpy (``(R, N)`` arrays of predictions).

With several seeds per model (``seeds: N``), each seed's pair (student seed k against baseline seed
k) is bootstrapped over the examples, and the differences of all seeds are pooled before taking
the percentiles: the interval then holds both the example noise (within a seed) and the seed noise
(between the seeds' distributions). docs/architecture.md, "Statistics", says why.
"""
from __future__ import annotations

import math

import numpy as np

from .metrics import macro_f1_rows

RESAMPLES = 10_000
CONFIDENCE = 0.95
_CHUNK = 500                     # resamples evaluated at once: (500, N) arrays


# ---- metrics of many resamples at once: pred, gold are (R, N) ----------------------------------

def _accuracy(pred, gold):
    return (pred == gold).mean(axis=1)


def _confusion(pred, gold, positive=1):
    tp = ((pred == positive) & (gold == positive)).sum(axis=1).astype(float)
    fp = ((pred == positive) & (gold != positive)).sum(axis=1).astype(float)
    fn = ((pred != positive) & (gold == positive)).sum(axis=1).astype(float)
    tn = ((pred != positive) & (gold != positive)).sum(axis=1).astype(float)
    return tp, fp, fn, tn


def _f1(pred, gold):
    tp, fp, fn, _ = _confusion(pred, gold)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)


def _mcc(pred, gold):
    tp, fp, fn, tn = _confusion(pred, gold)
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (tp * tn - fp * fn) / denom, 0.0)


def _pearson(x, y):
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    denom = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (x * y).sum(axis=1) / denom, np.nan)


def _ranks(values):
    """Row-wise ranks with ties given their average rank (as pandas and scipy rank)."""
    import pandas as pd
    return pd.DataFrame(values).rank(axis=1).to_numpy()


def _spearman(x, y):
    return _pearson(_ranks(x), _ranks(y))


BATCH_METRICS = {"accuracy": _accuracy, "f1": _f1, "macro_f1": macro_f1_rows, "mcc": _mcc,
                 "pearson": _pearson, "spearman": _spearman}


def outputs(logits: np.ndarray, regression: bool) -> np.ndarray:
    """What the metrics compare with the gold labels: the class (argmax) or the score."""
    return logits[:, 0] if regression else logits.argmax(-1)


# ---- the bootstrap --------------------------------------------------------------------------------

def bootstrap(metric: str, pred_a: np.ndarray, gold: np.ndarray, pred_b: np.ndarray | None = None,
              resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``resamples`` values of ``metric(a)``, or of ``metric(a) - metric(b)`` given ``pred_b``,
    on resamples of the examples (paired: the same indices for both models).

    ``pred_a``, ``pred_b`` and ``gold`` are (N,) arrays over the same examples (classes or
    scores). The draw is seeded, so the same inputs give the same values."""
    fn = BATCH_METRICS[metric]
    n = len(gold)
    if len(pred_a) != n or (pred_b is not None and len(pred_b) != n) or n == 0:
        raise ValueError(f"paired predictions must cover the same {n} examples")
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        r = min(_CHUNK, resamples - start)
        idx = rng.integers(0, n, size=(r, n))                      # (r, N)
        g = gold[idx]
        values = fn(pred_a[idx], g)
        out[start:start + r] = values if pred_b is None else values - fn(pred_b[idx], g)
    return out


def interval(differences: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile interval of bootstrap ``differences`` (NaNs, e.g. a constant resample's
    correlation, left out)."""
    values = differences[np.isfinite(differences)]
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def verdict(low: float, high: float) -> str:
    """``better`` when the whole interval is above zero, ``worse`` when below, else
    ``no clear difference``."""
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no clear difference"


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """McNemar's exact (binomial) two-sided p-value for paired right/wrong outcomes.

    Only the discordant examples count: ``b`` where a is right and b wrong, ``c`` the other way;
    under "no difference" each is one of ``b + c`` fair coin flips, so
    ``p = min(1, 2 * P(X <= min(b, c)))`` for ``X ~ Binomial(b + c, 1/2)``."""
    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2 ** n)


def _pooled(metric, runs_a, runs_b, gold, regression, resamples, seed):
    """Bootstrap values pooled over the seeds (run k of a against run k of b, or a alone)."""
    per_seed = math.ceil(resamples / len(runs_a))
    return np.concatenate([
        bootstrap(metric, outputs(la, regression), gold,
                  None if runs_b is None else outputs(runs_b[k], regression), per_seed, seed + k)
        for k, la in enumerate(runs_a)])


def compare(metric: str, runs_a: list[np.ndarray], runs_b: list[np.ndarray], gold: np.ndarray,
            regression: bool, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """A student (``runs_a``: its logits, one array per seed) against its baseline (``runs_b``,
    the same seeds in the same order) on ``metric``: the mean gain over seeds (metric points, as
    fractions), its pooled bootstrap interval and verdict, and for classification McNemar's exact
    p-value (the largest over the seeds, the most cautious)."""
    if len(runs_a) != len(runs_b) or not runs_a:
        raise ValueError(f"{len(runs_a)} student runs cannot be paired with {len(runs_b)} baseline runs")
    fn = BATCH_METRICS[metric]
    gains = [float(fn(outputs(la, regression)[None], gold[None])[0]
                   - fn(outputs(lb, regression)[None], gold[None])[0]) for la, lb in zip(runs_a, runs_b)]
    low, high = interval(_pooled(metric, runs_a, runs_b, gold, regression, resamples, seed))
    ps = [] if regression else [mcnemar_exact(outputs(la, False) == gold, outputs(lb, False) == gold)
                                for la, lb in zip(runs_a, runs_b)]
    return {"metric": metric, "gain": float(np.mean(gains)), "low": low, "high": high,
            "verdict": verdict(low, high), "mcnemar_p": max(ps) if ps else None,
            "seeds": len(runs_a)}


def metric_interval(metric: str, runs: list[np.ndarray], gold: np.ndarray, regression: bool,
                    resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """The pooled bootstrap interval of one model's ``metric`` over its runs (for error bars)."""
    return interval(_pooled(metric, runs, None, gold, regression, resamples, seed))
