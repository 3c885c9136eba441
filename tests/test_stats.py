"""kdlib.evaluate.stats: the paired bootstrap covers the true difference at about its nominal rate,
McNemar's exact test matches a hand computation, and the vectorised metrics equal
kdlib.evaluate.metrics on every resample."""
from __future__ import annotations

import math

import numpy as np
import pytest

from kdlib.evaluate import metrics, stats


def test_batch_metrics_equal_the_plain_metrics():
    rng = np.random.default_rng(0)
    pred, gold = rng.integers(0, 2, (6, 50)), rng.integers(0, 2, (6, 50))
    scores_a, scores_b = rng.normal(size=(6, 50)), rng.normal(size=(6, 50)).round(1)    # ties
    for name in ("accuracy", "f1", "mcc"):
        batch = stats.BATCH_METRICS[name](pred, gold)
        plain = [metrics.METRICS[name](p, g) for p, g in zip(pred, gold)]
        np.testing.assert_allclose(batch, plain, rtol=1e-12, err_msg=name)
    classes, labels = rng.integers(0, 4, (6, 50)), rng.integers(0, 4, (6, 50))
    classes[0] = np.where(classes[0] == 3, 0, classes[0])             # a class only in the gold row
    batch = stats.BATCH_METRICS["macro_f1"](classes, labels)
    np.testing.assert_allclose(batch, [metrics.macro_f1(p, g) for p, g in zip(classes, labels)], rtol=1e-12)
    for name in ("pearson", "spearman"):
        batch = stats.BATCH_METRICS[name](scores_a, scores_b)
        plain = [metrics.METRICS[name](a, b) for a, b in zip(scores_a, scores_b)]
        np.testing.assert_allclose(batch, plain, rtol=1e-10, err_msg=name)


def test_the_bootstrap_interval_covers_the_true_difference_at_about_95_percent():
    """Two classifiers with true accuracies 0.80 and 0.78 on a population; 200 dev sets of 400
    examples drawn from it: the 95% interval of the gain must hold the true +0.02 in about 95% of
    them (an interval that is too narrow, or centred wrongly, fails)."""
    rng = np.random.default_rng(1)
    covered, trials, n = 0, 200, 400
    for t in range(trials):
        gold = rng.integers(0, 2, n)
        difficulty = rng.random(n)                   # shared: the two models' errors correlate
        own = np.where(rng.random(n) < 0.3, rng.random(n), difficulty)   # B disagrees on 30%
        right_a, right_b = difficulty < 0.80, own < 0.78                 # true accuracies
        pred_a, pred_b = np.where(right_a, gold, 1 - gold), np.where(right_b, gold, 1 - gold)
        diffs = stats.bootstrap("accuracy", pred_a, gold, pred_b, resamples=1000, seed=t)
        low, high = stats.interval(diffs)
        covered += low <= 0.02 <= high
    assert 0.90 <= covered / trials <= 0.99, covered / trials


def test_the_bootstrap_is_seeded_and_paired():
    rng = np.random.default_rng(2)
    gold = rng.integers(0, 2, 300)
    pred = np.where(rng.random(300) < 0.8, gold, 1 - gold)
    a = stats.bootstrap("accuracy", pred, gold, pred, resamples=2000, seed=3)
    assert not a.any()                               # a model against itself: every resample 0
    b1 = stats.bootstrap("f1", pred, gold, resamples=2000, seed=3)
    b2 = stats.bootstrap("f1", pred, gold, resamples=2000, seed=3)
    np.testing.assert_array_equal(b1, b2)
    assert len(b1) == 2000 and b1.std() > 0


def test_mcnemar_exact_matches_a_hand_computed_case():
    # b = 3 examples only A gets right, c = 9 only B gets right, 20 both right, 8 both wrong.
    a = np.array([1] * 3 + [0] * 9 + [1] * 20 + [0] * 8, bool)
    b = np.array([0] * 3 + [1] * 9 + [1] * 20 + [0] * 8, bool)
    # P(X <= 3) for X ~ Binomial(12, 1/2) = (1 + 12 + 66 + 220) / 4096 = 299 / 4096; two-sided x2
    assert stats.mcnemar_exact(a, b) == pytest.approx(2 * 299 / 4096)
    assert stats.mcnemar_exact(a, a) == 1.0
    assert stats.mcnemar_exact(b, a) == stats.mcnemar_exact(a, b)
    big = stats.mcnemar_exact(np.ones(300, bool), np.zeros(300, bool))
    assert big == pytest.approx(2 * 0.5 ** 300) and big > 0


def test_verdicts_and_pooled_seeds():
    assert stats.verdict(0.1, 2.0) == "better" and stats.verdict(-2, -0.1) == "worse"
    assert stats.verdict(-0.5, 0.5) == "no clear difference"
    rng = np.random.default_rng(4)
    gold = rng.integers(0, 2, 500)

    def logits(acc, seed):
        r = np.random.default_rng(seed).random(500) < acc
        out = np.zeros((500, 2))
        out[np.arange(500), np.where(r, gold, 1 - gold)] = 1
        return out
    one = stats.compare("accuracy", [logits(0.9, 1)], [logits(0.7, 2)], gold, False)
    assert one["verdict"] == "better" and one["low"] > 0 and one["mcnemar_p"] < 1e-6
    # two seeds whose gains disagree widen the pooled interval beyond either seed's
    mixed = stats.compare("accuracy", [logits(0.9, 1), logits(0.72, 3)], [logits(0.7, 2), logits(0.7, 4)],
                          gold, False)
    assert mixed["high"] - mixed["low"] > one["high"] - one["low"]
    assert mixed["gain"] == pytest.approx(np.mean([
        stats.BATCH_METRICS["accuracy"](stats.outputs(a, False)[None], gold[None])[0]
        - stats.BATCH_METRICS["accuracy"](stats.outputs(b, False)[None], gold[None])[0]
        for a, b in ((logits(0.9, 1), logits(0.7, 2)), (logits(0.72, 3), logits(0.7, 4)))]))
    regression = stats.compare("pearson", [gold[:, None] + rng.normal(size=(500, 1))],
                               [rng.normal(size=(500, 1))], gold.astype(float), True, resamples=2000)
    assert regression["verdict"] == "better" and regression["mcnemar_p"] is None
    assert math.isfinite(regression["low"])
