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


def test_the_interval_is_the_central_95_percent_of_the_bootstrap_values():
    """Bootstrap values 0.00, 0.01, ..., 100.00 (shuffled, with NaNs left out): their 2.5th and
    97.5th percentiles are exactly 2.5 and 97.5; a 90% interval would be (5, 95), a 99% one
    (0.5, 99.5)."""
    values = np.random.default_rng(5).permutation(np.arange(10_001) / 100)
    values = np.concatenate([values, [np.nan, np.nan]])
    assert stats.interval(values) == pytest.approx((2.5, 97.5), abs=1e-9)


def _one_hot(pred):
    out = np.zeros((len(pred), 2))
    out[np.arange(len(pred)), pred] = 1.0
    return out


def test_the_reported_intervals_are_as_wide_as_95_percent_normal_intervals():
    """On 4,000 examples the bootstrap distribution of an accuracy (or of a paired gain) is close
    to normal, with the standard error of the mean of the per-example outcomes: a 95% interval
    spans 2 x 1.96 standard errors (a 90% one 2 x 1.645, a 99% one 2 x 2.576). The intervals
    compare() and metric_interval() report must span 1.78 to 2.25 standard errors each side,
    bounds halfway between 95% and its neighbours (over data seeds 0-7, 95% gives 1.91 to 1.97,
    90% 1.60 to 1.66, 99% 2.54 to 2.58), and sit on the observed value."""
    rng = np.random.default_rng(6)
    n = 4000
    gold = rng.integers(0, 2, n)
    right_a, right_b = rng.random(n) < 0.8, rng.random(n) < 0.75
    pred_a, pred_b = np.where(right_a, gold, 1 - gold), np.where(right_b, gold, 1 - gold)
    d = right_a.astype(float) - right_b.astype(float)                 # per-example gain
    se_gain = math.sqrt(d.var() / n)
    result = stats.compare("accuracy", [_one_hot(pred_a)], [_one_hot(pred_b)], gold, False)
    half = (result["high"] - result["low"]) / 2
    assert 1.78 <= half / se_gain <= 2.25, half / se_gain
    assert abs((result["high"] + result["low"]) / 2 - d.mean()) < 0.3 * se_gain

    p = right_a.mean()
    se_acc = math.sqrt(p * (1 - p) / n)
    low, high = stats.metric_interval("accuracy", [_one_hot(pred_a)], gold, False)
    assert 1.78 <= (high - low) / 2 / se_acc <= 2.25, (high - low) / 2 / se_acc
    assert abs((high + low) / 2 - p) < 0.3 * se_acc


def _outcomes(only_a: int, only_b: int, both: int, neither: int):
    """Right/wrong vectors of two models with the given counts of each kind of example."""
    a = np.array([1] * only_a + [0] * only_b + [1] * both + [0] * neither, bool)
    b = np.array([0] * only_a + [1] * only_b + [1] * both + [0] * neither, bool)
    return a, b


def test_the_pooled_mcnemar_p_is_the_largest_over_the_seeds():
    """Seed 0's pair: 3 examples only the student gets right, 9 only the baseline, so p =
    2 x 299 / 4096 (about 0.146). Seed 1's pair: 20 against 0, p = 2 / 2^20. Pooled over the
    seeds, p must be the most cautious of the two, in either order of the seeds."""
    n = 40
    gold = np.array([0, 1] * (n // 2))

    def logits(right):
        return _one_hot(np.where(right, gold, 1 - gold))

    weak_a, weak_b = _outcomes(3, 9, 20, 8)
    strong_a, strong_b = _outcomes(20, 0, 12, 8)
    cautious, confident = 2 * 299 / 4096, 2 / 2 ** 20
    alone = stats.compare("accuracy", [logits(strong_a)], [logits(strong_b)], gold, False)
    assert alone["mcnemar_p"] == pytest.approx(confident)
    for order in ((0, 1), (1, 0)):
        runs = [(logits(weak_a), logits(weak_b)), (logits(strong_a), logits(strong_b))]
        runs = [runs[k] for k in order]
        pooled = stats.compare("accuracy", [a for a, _ in runs], [b for _, b in runs], gold, False,
                               resamples=200)
        assert pooled["seeds"] == 2 and pooled["mcnemar_p"] == pytest.approx(cautious), order
