"""Test-split intervals: medmnist's metrics on resampled images, and the seed/split variance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from medmnist.evaluator import getACC, getAUC
from sklearn.metrics import roc_auc_score

from hqcnn_qiskit.uncertainty import (Estimate, draw_counts, estimate, metric_columns,
                                      paired_bootstrap, seeds_to_resolve, weighted_auc)

TASKS = ["binary-class", "multi-class", "multi-label, binary-class"]


def _data(task: str, n: int = 60, seed: int = 1):
    rng = np.random.default_rng(seed)
    if task.startswith("multi-label"):
        return rng.integers(0, 2, size=(n, 3)), np.round(rng.random((n, 3)), 1)
    classes = 2 if task == "binary-class" else 4
    labels = rng.integers(0, classes, size=(n, 1))
    return labels, np.round(rng.dirichlet(np.ones(classes), size=n), 1)  # rounded: ties


@pytest.mark.parametrize("task", TASKS)
def test_on_the_test_split_the_metrics_are_medmnists(task):
    labels, scores = _data(task)
    boot = paired_bootstrap(task, labels, {"m": {0: scores}}, resamples=10)
    assert boot["m"]["auc"].shape == (1, 11)
    assert boot["m"]["auc"][0, 0] == pytest.approx(getAUC(labels, scores, task), abs=1e-12)
    assert boot["m"]["acc"][0, 0] == pytest.approx(getACC(labels, scores, task), abs=1e-12)


def test_counts_are_repeated_images():
    """A resample given as counts scores as the same images listed out, ties included."""
    labels, scores = _data("binary-class", n=40)
    rng = np.random.default_rng(3)
    counts = draw_counts(rng, 40, 5)
    (positive, column), = metric_columns("binary-class", labels, scores)[0]
    aucs = weighted_auc(positive, column, counts)
    for row, auc in zip(counts, aucs):
        listed = np.repeat(np.arange(40), row.astype(int))
        assert auc == pytest.approx(roc_auc_score(positive[listed], column[listed]), abs=1e-12)
    # a resample without negatives has no AUC
    assert math.isnan(weighted_auc(positive, column, positive[None, :].astype(float))[0])


def test_too_few_images_get_no_interval():
    labels, scores = _data("binary-class", n=20)
    boot = paired_bootstrap("binary-class", labels, {"m": {0: scores}}, resamples=500)
    assert boot["m"]["acc"].shape == (1, 1)  # the split itself, no resamples
    assert not estimate(boot["m"]["acc"]).defined


def test_pairing_and_reproducibility():
    labels, scores = _data("binary-class", n=200)
    rng = np.random.default_rng(2)
    weak = np.clip(scores + rng.normal(scale=0.4, size=scores.shape), 0, 1)
    models = {"a": {0: scores, 1: scores}, "same": {0: scores, 1: scores}, "weak": {0: weak}}
    boot = paired_bootstrap("binary-class", labels, models, resamples=300)
    # the same images for every model and seed: a model against itself differs by exactly 0
    assert np.array_equal(boot["a"]["auc"], boot["same"]["auc"])
    assert boot["weak"]["seeds"] == [0]
    again = paired_bootstrap("binary-class", labels, models, resamples=300)
    assert np.array_equal(again["weak"]["acc"], boot["weak"]["acc"])  # a fixed draw
    other = paired_bootstrap("binary-class", labels, models, resamples=300, seed=1)
    assert not np.array_equal(other["weak"]["acc"], boot["weak"]["acc"])


def test_estimate_counts_the_shared_image_noise_once():
    """Synthetic seeds x resamples with known parts: seed effects a (sd 0.02), image noise
    shared by all seeds b (sd 0.01), and image noise of each seed alone c (sd 0.03). The
    seeds' spread on the split already holds c; the split part must be b alone."""
    rng = np.random.default_rng(0)
    k, resamples = 5, 20000
    a = rng.normal(scale=0.02, size=(k, 1))
    values = 0.8 + a + np.concatenate(
        [np.zeros((k, 1)),
         rng.normal(scale=0.01, size=(1, resamples)) + rng.normal(scale=0.03, size=(k, resamples))],
        axis=1)
    e = estimate(values)
    assert e.se_split == pytest.approx(0.01, rel=0.1)  # not sqrt(0.01² + 0.03²/k) = 0.016
    assert e.se_seeds == pytest.approx(np.std(a, ddof=1) / math.sqrt(k), rel=1e-9)
    assert e.seeds == k and e.usable == resamples and e.low < e.mean < e.high


def _logit(p):
    return math.log(p / (1 - p))


def test_estimate_interval_uses_student_t_for_few_seeds():
    values = np.array([[0.80, 0.80, 0.80], [0.82, 0.82, 0.82], [0.84, 0.84, 0.84]])  # no split noise
    t2 = 4.302652729911275  # Student's t, 97.5%, 2 degrees of freedom
    diff = estimate(values - 0.8, bounded=False)
    assert diff.se_split == 0 and diff.high - diff.mean == pytest.approx(t2 * 0.02 / math.sqrt(3))
    # a metric: the same on the logit scale, mapped back into (0, 1)
    e = estimate(values)
    spread = np.std([_logit(v) for v in (0.80, 0.82, 0.84)], ddof=1) / math.sqrt(3)
    assert _logit(e.high) - _logit(e.mean) == pytest.approx(t2 * spread)
    assert _logit(e.mean) - _logit(e.low) == pytest.approx(t2 * spread)
    near_one = estimate(values + 0.15)
    assert near_one.high < 1.0 and near_one.high - near_one.mean < near_one.mean - near_one.low
    assert estimate(values + 0.15, bounded=False).high > 1.0


def test_estimate_covers_the_truth_at_three_seeds():
    """Idealised runs (seed effects, image noise shared by the seeds, image noise of each seed,
    and a bootstrap with the right spread): the interval of a mean over 3 seeds covers the true
    mean in 95% of 400 trials (asked: at least 93%). A normal quantile instead of Student's t at
    2 degrees of freedom covers 87% here, where the seed effects dominate."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(400):
        seeds = rng.normal(scale=0.02, size=(3, 1))
        shared, own = rng.normal(scale=0.005), rng.normal(scale=0.005, size=(3, 1))
        split = seeds + shared + own
        boot = (split + rng.normal(scale=0.005, size=(1, 400))
                + rng.normal(scale=0.005, size=(3, 400)))
        e = estimate(np.concatenate([split, boot], axis=1), bounded=False)
        hits += e.low <= 0.0 <= e.high
    assert hits / 400 >= 0.93


def test_estimate_one_seed_and_undefined_cases():
    rng = np.random.default_rng(4)
    one = np.concatenate([[[0.7]], 0.7 + rng.normal(scale=0.02, size=(1, 500))], axis=1)
    e = estimate(one)
    assert math.isnan(e.se_seeds) and e.seeds == 1
    assert e.se_split == pytest.approx(0.02, rel=0.1)
    boot_sd = np.std([_logit(v) for v in one[0, 1:]], ddof=1)
    assert _logit(e.high) - _logit(0.7) == pytest.approx(1.959963984540054 * boot_sd)
    mostly_nan = one.copy()
    mostly_nan[0, 50:] = np.nan  # 49 of 500 resamples usable: too few
    assert not estimate(mostly_nan).defined and estimate(mostly_nan).usable == 49
    assert not estimate(np.full((2, 300), np.nan)).defined


@pytest.mark.parametrize("effect", [0.3, 0.5, 1.0])
def test_seeds_to_resolve_matches_the_power_of_a_t_test(effect):
    """Without shared image noise the interval is a one-sample t interval, whose exact power
    comes from the noncentral t: at the planned seed count it is about 80%."""
    from scipy.stats import nct, t as student

    def power(k):
        critical, shift = student.ppf(0.975, k - 1), effect * math.sqrt(k)
        return 1 - nct.cdf(critical, k - 1, shift) + nct.cdf(-critical, k - 1, shift)

    per_seed_sd, seeds = 1.0, 3
    diff = Estimate(effect, effect - 1, effect + 1, 0.0, per_seed_sd / math.sqrt(seeds), seeds,
                    2000)
    k = seeds_to_resolve(diff)
    assert 0.78 <= power(k) <= 0.85 and power(k - 1) < 0.8


def test_seeds_to_resolve_knows_when_only_a_larger_test_split_helps():
    def diff(mean, se_split, seeds=3):
        return Estimate(mean, mean - 0.1, mean + 0.1, se_split, 0.01, seeds, 2000)

    assert math.isinf(seeds_to_resolve(diff(0.02, 0.008)))  # (1.96 + 0.84) * 0.008 > 0.02
    assert seeds_to_resolve(diff(0.05, 0.008)) < seeds_to_resolve(diff(0.03, 0.008))
    assert math.isinf(seeds_to_resolve(diff(0.0, 0.0)))
    assert math.isnan(seeds_to_resolve(diff(0.02, 0.0, seeds=1)))


def test_intervals_of_a_near_perfect_score_stay_near_it():
    """39 of 40 right: some resamples score exactly 1, which has no logit. The interval must not
    blow up towards 0 (it did: 0.129 to 1.0), and a perfect score's interval must contain it."""
    from hqcnn_qiskit.uncertainty import split_intervals

    labels = np.array([0] * 20 + [1] * 20)
    scores = np.where(np.eye(2)[labels] == 1, 0.9, 0.1)
    scores[0] = [0.1, 0.9]
    for e in split_intervals("binary-class", labels, scores).values():
        assert e.mean == 0.975 and 0.9 < e.low < 0.975 and e.high == 1.0
    scores[0] = [0.9, 0.1]
    for e in split_intervals("binary-class", labels, scores).values():
        assert e.low == e.high == 1.0
