"""How sure a test-split number is: bootstrap over the test images, and seeds.

A mean over training seeds of a test metric has two errors. The training runs differ (that
part shrinks with more seeds), and the test split is one sample of images (that part every seed
shares, so more seeds do not shrink it). :func:`paired_bootstrap` scores every model and seed on
the same resamples of the test images, and :func:`estimate` splits the two parts apart: the
seeds' spread on the real test split, plus the covariance between different seeds' resampled
values (what the images do to all of them at once). Counting each image's noise once matters:
adding the plain bootstrap variance of the mean to the seed variance counts the part of the
image noise that differs between seeds twice.

Metrics are medmnist's own ACC and AUC (``medmnist.evaluator``), computed here on image counts
so that thousands of resamples cost one sort per score column. Intervals are built on the logit
scale (ACC and AUC live in [0, 1] and are skewed near 1; a metric that reaches 0 or 1 on some
resample has no logit and stays on the plain scale, clipped into [0, 1]) with Student's t at
seeds − 1 degrees of freedom for the seed part. In simulations of seeds and test samples like BreastMNIST's and
PneumoniaMNIST's they covered the true mean 95-98% of the time at 3 seeds (a normal quantile on
the plain scale: 89-94%); ``tests/test_uncertainty.py`` checks one such case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Estimate", "metric_columns", "weighted_auc", "draw_counts", "paired_bootstrap",
           "estimate", "split_intervals", "seeds_to_resolve"]

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval
MIN_IMAGES = 30  # fewer images: no resamples, no interval (the bootstrap needs a sample)
MIN_USABLE_SHARE = 0.5  # fewer resamples with every class present: no AUC interval
_EPS = 1e-4  # logit of a metric of exactly 0 or 1


def metric_columns(task: str, labels, scores) -> tuple[list[tuple[np.ndarray, np.ndarray]],
                                                       np.ndarray]:
    """How medmnist scores a task, image by image.

    Args:
        task: medmnist's task (``binary-class``, ``multi-class``, ``ordinal-regression``,
            ``multi-label, binary-class``).
        labels: The labels (images, or images x labels).
        scores: The model's probabilities (images x columns).

    Returns:
        The (is positive, score) columns whose AUCs medmnist averages, and each image's share of
        correct answers, whose mean is medmnist's ACC (threshold 0.5, argmax for multi-class).
    """
    y, s = np.asarray(labels), np.asarray(scores, dtype=float)
    if task == "binary-class":
        y = y.reshape(-1)
        return [(y == 1, s[:, -1])], (y == (s[:, -1] > 0.5)).astype(float)
    if task.startswith("multi-label"):
        return ([(y[:, i] == 1, s[:, i]) for i in range(s.shape[1])],
                ((s > 0.5) == (y == 1)).mean(axis=1))
    y = y.reshape(-1)
    return [(y == i, s[:, i]) for i in range(s.shape[1])], (s.argmax(axis=1) == y).astype(float)


def weighted_auc(positive: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ROC AUC of one score column on each resample, a resample given as image counts.

    Args:
        positive: Whether each image is a positive (bool, images).
        scores: Each image's score (images).
        counts: How often each image is drawn (resamples x images); all ones is the test split.

    Returns:
        One AUC per resample, ties counted half (as sklearn); nan where a resample has no
        positive or no negative.
    """
    order = np.argsort(scores, kind="stable")
    ordered, pos = scores[order], positive[order].astype(bool)
    weights = counts[:, order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # groups of equal scores
    wpos = np.add.reduceat(weights * pos, starts, axis=1)
    wneg = np.add.reduceat(weights * ~pos, starts, axis=1)
    below = np.cumsum(wneg, axis=1) - wneg  # negatives scored strictly lower
    with np.errstate(invalid="ignore", divide="ignore"):
        return (wpos * (below + 0.5 * wneg)).sum(axis=1) / (wpos.sum(axis=1) * wneg.sum(axis=1))


def draw_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``size`` bootstrap resamples of ``n`` images, as how often each image is drawn."""
    return rng.multinomial(n, np.full(n, 1 / n), size=size).astype(float)


def paired_bootstrap(task: str, labels, models: dict[str, dict[int, np.ndarray]], *,
                     resamples: int = 2000, seed: int = 0,
                     chunk: int = 100) -> dict[str, dict[str, np.ndarray]]:
    """Every model's and seed's test AUC and ACC on the same bootstrap resamples.

    Resamples draw images with replacement, so the class mix varies as it would in another test
    sample. The first column of the result is the test split itself. With fewer than
    :data:`MIN_IMAGES` images there are no resamples (and so no interval).

    Args:
        task: medmnist's task.
        labels: The test labels.
        models: Per model, ``{seed: scores}`` (images x columns).
        resamples: Resamples, besides the test split itself.
        seed: Seed of the draw (fixed: the same numbers on every run).
        chunk: Resamples drawn at a time (memory: chunk x images).

    Returns:
        Per model ``{"seeds": [...], "auc": array, "acc": array}``, each array seeds x
        (1 + resamples); AUC is nan on a resample that lacks a class.
    """
    labels = np.asarray(labels)
    n = len(labels)
    resamples = resamples if n >= MIN_IMAGES else 0
    rng = np.random.default_rng(seed)
    prepared = {name: [metric_columns(task, labels, scores) for scores in by_seed.values()]
                for name, by_seed in models.items()}
    parts = {name: {"auc": [], "acc": []} for name in models}
    sizes = [1] + [min(chunk, resamples - start) for start in range(0, resamples, chunk)]
    for i, size in enumerate(sizes):
        counts = np.ones((1, n)) if i == 0 else draw_counts(rng, n, size)
        for name, seeds in prepared.items():
            parts[name]["auc"].append(np.array([
                np.mean([weighted_auc(pos, score, counts) for pos, score in columns], axis=0)
                for columns, _ in seeds]))
            parts[name]["acc"].append(np.array([counts @ correct / counts.sum(axis=1)
                                                for _, correct in seeds]))
    return {name: {"seeds": list(models[name]),
                   **{m: np.concatenate(v, axis=1) for m, v in parts[name].items()}}
            for name in models}


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds on the test split, and its 95% interval.

    Attributes:
        mean: The mean over seeds.
        low, high: The 95% interval (nan when it cannot be estimated).
        se_split: Standard error from the image noise every seed shares (raw scale).
        se_seeds: Standard error from the seeds' spread on the split, seed std / √seeds (raw
            scale); it holds the training runs' differences and each seed's own image noise.
            nan with one seed.
        seeds: Seeds in the mean.
        usable: Resamples on which every seed's metric is defined.
    """

    mean: float
    low: float
    high: float
    se_split: float
    se_seeds: float
    seeds: int
    usable: int

    @property
    def defined(self) -> bool:
        """Whether the interval exists."""
        return not math.isnan(self.low)


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _variances(split_values: np.ndarray, boot: np.ndarray) -> tuple[float, float]:
    """(shared image variance, seed variance of the mean); see :func:`estimate`."""
    k = len(split_values)
    if k == 1:
        return float(boot.var(ddof=1)), math.nan
    cov = np.cov(boot)
    shared = max(0.0, float((cov.sum() - np.trace(cov)) / (k * (k - 1))))
    return shared, float(split_values.var(ddof=1)) / k


def _half_width(shared: float, seed_var: float, seeds: int) -> float:
    """``√(z²·C + t²·V)``: the 95% half-width from the shared image variance ``C`` and the
    variance ``V`` of the seed mean, with Student's t at ``seeds`` − 1 degrees of freedom (no
    seed part with one seed)."""
    from scipy.stats import t as student

    seed_part = float(student.ppf(0.975, seeds - 1)) ** 2 * seed_var if seeds > 1 else 0.0
    return math.sqrt(Z95**2 * shared + seed_part)


def estimate(values: np.ndarray, *, bounded: bool = True) -> Estimate:
    """The mean over seeds of a metric and its 95% interval.

    Two variances: ``C``, the mean covariance between different seeds' bootstrap values (the
    image noise every seed shares; with one seed, its bootstrap variance; floored at 0), and
    ``s²/k``, the variance of the k seeds' values on the test split over k (the training runs,
    with each seed's own image noise). The half-width is
    ``√(z²·C + t²·s²/k)``, z the normal quantile and t Student's at k − 1 degrees of freedom,
    so that three seeds give a wide interval. A metric (``bounded``) is handled on the logit
    scale, where it is less skewed, and mapped back into [0, 1]; if it reaches 0 or 1 (a
    perfect score, on the split or on a resample), on the plain scale, clipped into [0, 1].

    Args:
        values: seeds x (1 + resamples), as from :func:`paired_bootstrap` (or a difference of
            two such arrays, seed by seed).
        bounded: A metric in [0, 1] (logit scale), not a difference.

    Returns:
        The :class:`Estimate`; undefined (nan interval) without resamples, or when fewer than
        :data:`MIN_USABLE_SHARE` of them have the metric defined.
    """
    values = np.asarray(values, dtype=float)
    k, resamples = values.shape[0], values.shape[1] - 1
    boot = values[:, 1:][:, np.all(np.isfinite(values[:, 1:]), axis=0)]
    mean = float(values[:, 0].mean())
    usable = boot.shape[1]
    if not math.isfinite(mean) or usable < max(2, MIN_USABLE_SHARE * resamples):
        return Estimate(mean, math.nan, math.nan, math.nan, math.nan, k, usable)
    shared, seed_var = _variances(values[:, 0], boot)  # raw scale, for the reader
    # a value at 0 or 1 has no logit: clipping it would blow the variance up, so such a
    # metric stays on the plain scale (clipped into [0, 1] at the end)
    logit = bounded and bool(np.all((values[:, 0] > 0) & (values[:, 0] < 1))
                             and np.all((boot > 0) & (boot < 1)))
    scale = _logit if logit else np.asarray
    shared_s, seed_var_s = _variances(scale(values[:, 0]), scale(boot))
    half = _half_width(shared_s, seed_var_s, k)
    center = float(scale(mean))
    low, high = center - half, center + half
    if logit:
        low, high = (float(1 / (1 + math.exp(-x))) for x in (low, high))
    elif bounded:
        low, high = max(low, 0.0), min(high, 1.0)
    return Estimate(mean, low, high, math.sqrt(shared), math.sqrt(seed_var), k, usable)


def split_intervals(task: str, labels, scores, *, resamples: int = 2000,
                    seed: int = 0) -> dict[str, Estimate]:
    """95% intervals of one model's ACC and AUC from its test images alone.

    One trained model says nothing about how much another seed would differ, so these intervals
    are narrower than those of :func:`estimate` over several seeds: they answer "how much could
    this model's number move on another sample of images", not "how good is the method".

    Returns:
        ``{"acc": Estimate, "auc": Estimate}``.
    """
    boot = paired_bootstrap(task, labels, {"model": {0: np.asarray(scores)}},
                            resamples=resamples, seed=seed)["model"]
    return {metric: estimate(boot[metric]) for metric in ("acc", "auc")}


def seeds_to_resolve(diff: Estimate, *, power: float = 0.8) -> float:
    """Seeds needed to tell a difference of ``diff.mean`` from 0, for planning the next run.

    Takes the spreads of ``diff`` (a difference of two rows, :func:`estimate` with
    ``bounded=False``) as the truth: the per-seed variance ``s² = k·se_seeds²`` and the shared
    image variance ``C = se_split²``, which more seeds cannot shrink. With k seeds the interval's
    half-width is ``√(z²·C + t²·s²/k)`` (as in :func:`estimate`); it excludes 0 with
    probability about ``power`` when half-width + z_power·√(C + s²/k) ≤ |mean|.

    Args:
        diff: The estimated difference (at least two seeds).
        power: Probability of excluding 0 if the true difference is ``diff.mean``.

    Returns:
        The smallest seed count k ≥ 2 that reaches ``power``; ``math.inf`` when none does,
        because the test split's shared noise alone is too large (a larger test split, not more
        seeds, is then needed) or the difference is 0; nan with fewer than two seeds or an
        undefined interval.
    """
    from scipy.stats import norm

    if diff.seeds < 2 or not diff.defined:
        return math.nan
    effect, shared = abs(diff.mean), diff.se_split**2
    per_seed = diff.se_seeds**2 * diff.seeds
    z_power = float(norm.ppf(power))
    if effect == 0 or (Z95 + z_power) * math.sqrt(shared) >= effect:
        return math.inf

    def enough(k: int) -> bool:  # falls as k grows, so a bisection finds the first k
        half = _half_width(shared, per_seed / k, k)
        return half + z_power * math.sqrt(shared + per_seed / k) <= effect

    low, high = 1, 2
    while not enough(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high
