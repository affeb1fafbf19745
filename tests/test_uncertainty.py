"""Test-split intervals: medmnist's metrics on resampled images, and the seed/split variance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from medmnist.evaluator import getACC, getAUC
from sklearn.metrics import roc_auc_score

from hqcnn_qiskit.uncertainty import (Estimate, draw_counts, estimate, metric_columns,
                                      paired_bootstrap, seeds_to_resolve, split_intervals,
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


def test_estimate_is_never_narrower_than_the_images_error_of_the_seed_mean():
    """Two seeds equal on the split (V = 0) whose resamples move against each other (C < 0,
    floored at 0): the old half-width was 0. It is now z times the bootstrap SD of their mean."""
    rng = np.random.default_rng(11)
    first = rng.normal(scale=0.02, size=500)
    second = -0.6 * first + rng.normal(scale=0.004, size=500)
    values = np.concatenate([[[0.05], [0.05]], 0.05 + np.stack([first, second])], axis=1)
    e = estimate(values, bounded=False)
    assert e.se_split == 0.0 and e.se_seeds == 0.0
    sd_mean = np.std(values[:, 1:].mean(axis=0), ddof=1)
    assert sd_mean > 0.003
    assert e.high - e.mean == pytest.approx(1.959963984540054 * sd_mean)
    assert e.mean - e.low == pytest.approx(1.959963984540054 * sd_mean)


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
    blow up towards 0 (the bootstrap's did: 0.129 to 1.0), and a perfect score's interval must
    contain it, with a lower bound below 1 (the bootstrap's was 1.0 to 1.0)."""
    labels = np.array([0] * 20 + [1] * 20)
    scores = np.where(np.eye(2)[labels] == 1, 0.9, 0.1)
    scores[0] = [0.1, 0.9]
    for e in split_intervals("binary-class", labels, scores).values():
        assert e.mean == 0.975 and 0.85 < e.low < 0.975 < e.high <= 1.0
    scores[0] = [0.9, 0.1]
    for e in split_intervals("binary-class", labels, scores).values():
        assert e.mean == 1.0 and 0.85 < e.low < 0.95 and e.high == 1.0


def _right_of(n: int, correct: int):
    """A binary test split of n images, ``correct`` of them right, the classes separated
    perfectly by score when all are right."""
    labels = np.array([0] * (n // 2) + [1] * (n - n // 2))
    p = np.where(labels == 1, 0.9, 0.1)
    p[:n - correct] = 1 - p[:n - correct]  # the first images wrong
    return labels, np.column_stack([1 - p, p])


def test_acc_interval_of_a_perfect_and_a_near_perfect_score_is_exact():
    """ACC of a single-label task is a count of right images: its interval is Clopper and
    Pearson's, whose bounds for 40 of 40 have a closed form (0.025^(1/40), 1), and which for 39
    of 40 lies close to Wilson's score interval (0.871 to 0.996)."""
    from scipy.stats import beta

    perfect = split_intervals("binary-class", *_right_of(40, 40))["acc"]
    assert perfect.mean == 1.0 and perfect.high == 1.0
    assert perfect.low == pytest.approx(0.025 ** (1 / 40), abs=1e-12)  # 0.9119
    near = split_intervals("binary-class", *_right_of(40, 39))["acc"]
    assert near.mean == 0.975
    assert near.low == pytest.approx(beta.ppf(0.025, 39, 2), abs=1e-12)
    assert near.high == pytest.approx(beta.ppf(0.975, 40, 1), abs=1e-12)
    assert near.low == pytest.approx(0.8712, abs=0.005) and 0.995 < near.high < 1.0
    # the same for a multi-class task: a right image is a right argmax
    labels = np.repeat(np.arange(4), 10)
    scores = np.full((40, 4), 0.1) + 0.6 * np.eye(4)[labels]
    multi = split_intervals("multi-class", labels[:, None], scores)["acc"]
    assert multi.low == pytest.approx(0.025 ** (1 / 40), abs=1e-12) and multi.high == 1.0


def test_acc_interval_covers_at_least_95_percent_at_every_true_acc():
    """For a single-label task the count of right images is binomial, so the exact coverage of
    the ACC interval at a true ACC p is the binomial probability of the counts whose interval
    holds p. It must be at least 95% for every p (the bootstrap's was 34% at p = 0.99, n = 40:
    40 of 40 gave the interval 1.0 to 1.0)."""
    from scipy.stats import binom

    n = 40
    bounds = [split_intervals("binary-class", *_right_of(n, x), resamples=100)["acc"]
              for x in range(n + 1)]
    counts = np.arange(n + 1)
    for p in np.linspace(0.5, 0.999, 200):
        covering = [e.low <= p <= e.high for e in bounds]
        assert binom.pmf(counts, n, p)[covering].sum() >= 0.95


def _hanley_mcneil(a: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil's (1982) variance of an AUC, both class sizes set to their mean."""
    size = (positives + negatives) / 2
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return (a * (1 - a) + (size - 1) * (q1 - a * a) + (size - 1) * (q2 - a * a)) / (
        positives * negatives)


def test_binary_auc_interval_is_the_score_interval():
    """A binary AUC's bounds are the true values A where |AUC − A| = z·√V(A), V Hanley and
    McNeil's variance at A; a perfect separation gets a lower bound below 1."""
    z = 1.959963984540054
    labels, scores = _right_of(40, 40)
    perfect = split_intervals("binary-class", labels, scores)["auc"]
    assert perfect.mean == 1.0 and perfect.high == 1.0 and 0.85 < perfect.low < 0.95
    assert (1 - perfect.low) ** 2 == pytest.approx(z * z * _hanley_mcneil(perfect.low, 20, 20),
                                                   rel=1e-6)
    rng = np.random.default_rng(5)
    labels = (rng.random(156) < 0.4).astype(int)
    p = 1 / (1 + np.exp(-rng.normal(np.where(labels == 1, 1.0, -1.0), 1.0)))
    e = split_intervals("binary-class", labels, np.column_stack([1 - p, p]))["auc"]
    m = int(labels.sum())
    assert e.low < e.mean < e.high
    for bound in (e.low, e.high):
        assert (e.mean - bound) ** 2 == pytest.approx(
            z * z * _hanley_mcneil(bound, m, 156 - m), rel=1e-6)


def test_auc_score_interval_matches_newcombes_published_example():
    """Newcombe's score interval for an AUC (Mann-Whitney) of 11/12 from 6 and 7 observations:
    the 95% interval the R package SingleCaseES reports for its NAP example."""
    from hqcnn_qiskit import uncertainty

    low, high = uncertainty._auc_score_interval(11 / 12, [(6, 7)])
    assert (low, high) == pytest.approx((0.5973193600384168, 0.9859976893703788), abs=1e-9)
    assert uncertainty._auc_score_interval(11 / 12, [(7, 6)]) == pytest.approx((low, high))
    # an AUC of 0 mirrors one of 1
    top, bottom = (uncertainty._auc_score_interval(a, [(6, 7)]) for a in (1.0, 0.0))
    assert top[1] == 1.0 and bottom[0] == 0.0 and top[0] == pytest.approx(1 - bottom[1])


def test_a_middle_of_range_case_stays_close_to_the_bootstrap():
    """Away from 0 and 1 the new intervals are within 0.01 of the bootstrap's (what
    split_intervals gave before), and the fields besides low and high are the bootstrap's."""
    rng = np.random.default_rng(5)
    labels = (rng.random(156) < 0.4).astype(int)
    p = 1 / (1 + np.exp(-rng.normal(np.where(labels == 1, 1.0, -1.0), 1.0)))
    scores = np.column_stack([1 - p, p])
    new = split_intervals("binary-class", labels, scores)
    boot = paired_bootstrap("binary-class", labels, {"m": {0: scores}})["m"]
    for metric in ("acc", "auc"):
        old = estimate(boot[metric])
        assert 0.8 < old.mean < 0.95 and new[metric].mean == old.mean
        assert new[metric].low == pytest.approx(old.low, abs=0.01)
        assert new[metric].high == pytest.approx(old.high, abs=0.01)
        assert (new[metric].se_split, new[metric].usable) == (old.se_split, old.usable)


def test_multi_label_acc_and_multi_column_auc_keep_the_bootstrap_where_it_is_wider():
    """Multi-label ACC (a share of right labels per image) is the bootstrap's interval; a mean
    of AUC columns takes the wider of the bootstrap's and the score interval's bounds, so a
    middle-of-range multi-class AUC keeps the bootstrap's interval and a perfect one gets a
    lower bound below 1."""
    labels, scores = _data("multi-label, binary-class", n=200)
    boot = paired_bootstrap("multi-label, binary-class", labels, {"m": {0: scores}})["m"]
    new = split_intervals("multi-label, binary-class", labels, scores)
    old_acc = estimate(boot["acc"])
    assert (new["acc"].mean, new["acc"].low, new["acc"].high) == (old_acc.mean, old_acc.low,
                                                                  old_acc.high)
    old_auc = estimate(boot["auc"])
    assert new["auc"].low <= old_auc.low and new["auc"].high >= old_auc.high

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 200)
    logits = rng.normal(size=(200, 4)) + 1.5 * np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    boot = paired_bootstrap("multi-class", y[:, None], {"m": {0: probs}})["m"]
    e, old_auc = split_intervals("multi-class", y[:, None], probs)["auc"], estimate(boot["auc"])
    assert 0.85 < e.mean < 0.95
    assert (e.low, e.high) == (old_auc.low, old_auc.high)  # the bootstrap's, unchanged

    labels = np.repeat(np.arange(4), 10)
    perfect = np.full((40, 4), 0.1) + 0.6 * np.eye(4)[labels]
    e = split_intervals("multi-class", labels[:, None], perfect)["auc"]
    assert e.mean == 1.0 and e.high == 1.0 and 0.9 < e.low < 1.0


def test_few_images_get_the_intervals_that_need_no_resamples():
    """Exact ACC and binary score AUC need no bootstrap, so 20 images get them (they used to
    get none); multi-class AUC and multi-label ACC still need the bootstrap's 30 images."""
    labels, scores = _right_of(20, 20)  # fewer than MIN_IMAGES images, all right
    few = split_intervals("binary-class", labels, scores)
    assert few["acc"].low == pytest.approx(0.025 ** (1 / 20)) and few["acc"].high == 1.0
    assert few["auc"].defined and few["auc"].low < 1.0 == few["auc"].high
    labels, scores = _right_of(40, 40)
    no_resamples = split_intervals("binary-class", labels, scores, resamples=0)
    assert no_resamples["acc"].defined and no_resamples["auc"].defined
    one_class = split_intervals("binary-class", np.ones(40, dtype=int), scores)
    assert one_class["acc"].defined and math.isnan(one_class["auc"].mean)
    assert not one_class["auc"].defined
    rng = np.random.default_rng(0)
    three = rng.dirichlet(np.ones(3), size=20)
    multi = split_intervals("multi-class", np.arange(20) % 3, three)
    assert multi["acc"].defined and not multi["auc"].defined  # the bootstrap part is missing


def test_near_perfect_binary_intervals_cover_the_truth():
    """A small version of benchmarks/interval_coverage.py: true ACC 0.95 and AUC 0.99, test
    sets of 40 images. The bootstrap covered 86% (ACC) and 68% (AUC) of the time; the
    intervals must now cover at least 90% of 200 test sets."""
    from scipy.stats import norm

    mu = norm.ppf(0.95)  # each class right with probability 0.95; AUC = Phi(mu * sqrt(2))
    true = {"acc": 0.95, "auc": norm.cdf(mu * math.sqrt(2))}
    rng = np.random.default_rng(11)
    hits = {"acc": 0, "auc": 0}
    for rep in range(200):
        labels = (rng.random(40) < 0.4).astype(int)
        p = 1 / (1 + np.exp(-rng.normal(np.where(labels == 1, mu, -mu), 1.0)))
        for metric, e in split_intervals("binary-class", labels, np.column_stack([1 - p, p]),
                                         resamples=200, seed=rep).items():
            hits[metric] += e.low <= true[metric] <= e.high
    assert hits["acc"] >= 180 and hits["auc"] >= 180


@pytest.mark.parametrize("task, scores, label_columns, message", [
    ("binary", np.full((40, 2), 0.5), 1, "unknown task 'binary'"),  # passed as multi-class
    ("binary-class", np.full(40, 0.5), 1, r"images x columns for 40 labels, got shape \(40,\)"),
    ("binary-class", np.full((39, 2), 0.5), 1, r"got shape \(39, 2\)"),
    ("binary-class", np.full((40, 2), np.nan), 1, "not all finite"),  # used to get an interval
    ("multi-label, binary-class", np.full((40, 3), 0.5), 1,
     r"labels must be images x 3 labels, got shape \(40,\)"),  # used to be an IndexError
    ("binary-class", np.full((40, 2), 0.5), 2, r"one label per image, got shape \(40, 2\)"),
])
def test_bad_scores_labels_or_task_are_a_data_error(task, scores, label_columns, message):
    from hqcnn_qiskit.errors import DataError

    labels = np.arange(40) % 2
    labels = labels if label_columns == 1 else np.column_stack([labels] * label_columns)
    with pytest.raises(DataError, match=message):
        split_intervals(task, labels, scores, resamples=100)
