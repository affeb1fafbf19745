"""Test-split intervals: medmnist's metrics on resampled images, and the seed/split variance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from medmnist.evaluator import getACC, getAUC
from sklearn.metrics import roc_auc_score

from hqcnn_qiskit.uncertainty import (draw_counts, estimate, metric_columns, paired_bootstrap,
                                      weighted_auc)

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


def test_stratified_resamples_keep_every_class_count():
    strata = np.array([0] * 5 + [1] * 30 + [2] * 2)
    counts = draw_counts(np.random.default_rng(0), len(strata), 200, strata)
    for value in (0, 1, 2):
        assert np.all(counts[:, strata == value].sum(axis=1) == np.sum(strata == value))
    assert counts[:, strata == 1].std() > 0  # resampled, not copied


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


def test_estimate_interval_uses_student_t_for_few_seeds():
    values = np.array([[0.80, 0.80, 0.80], [0.82, 0.82, 0.82], [0.84, 0.84, 0.84]])  # no split noise
    e = estimate(values, min_usable=2)
    assert e.se_split == 0 and e.df == pytest.approx(2)
    assert e.high - e.mean == pytest.approx(4.302652729911275 * 0.02 / math.sqrt(3))  # t(0.975, 2)
    # clipped to [0, 1] for a metric, not for a difference
    assert estimate(values + 0.15, min_usable=2).high == 1.0
    assert estimate(values + 0.15, bounded=False, min_usable=2).high > 1.0


def test_estimate_one_seed_and_undefined_cases():
    rng = np.random.default_rng(4)
    one = np.concatenate([[[0.7]], 0.7 + rng.normal(scale=0.02, size=(1, 500))], axis=1)
    e = estimate(one)
    assert math.isnan(e.se_seeds) and math.isinf(e.df)
    assert e.se_split == pytest.approx(0.02, rel=0.1)
    assert e.high - e.mean == pytest.approx(1.959963984540054 * e.se_split)
    mostly_nan = one.copy()
    mostly_nan[0, 50:] = np.nan  # 49 usable resamples: too few
    assert not estimate(mostly_nan).defined and estimate(mostly_nan).usable == 49
    assert not estimate(np.full((2, 300), np.nan)).defined
