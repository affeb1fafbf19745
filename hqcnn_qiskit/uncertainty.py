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
so that thousands of resamples cost one sort per score column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Estimate", "metric_columns", "weighted_auc", "draw_counts", "paired_bootstrap",
           "estimate", "split_intervals"]

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


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


def draw_counts(rng: np.random.Generator, n: int, size: int,
                strata: np.ndarray | None = None) -> np.ndarray:
    """Bootstrap resamples of ``n`` images as counts (``size`` x ``n``).

    Args:
        rng: The random generator.
        n: Images.
        size: Resamples.
        strata: A class per image: each class keeps its count in every resample (so every
            resample has every class, and AUC is always defined). None: plain resampling.
    """
    if strata is None:
        return rng.multinomial(n, np.full(n, 1 / n), size=size).astype(float)
    counts = np.zeros((size, n))
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)),
                                             size=size)
    return counts


def paired_bootstrap(task: str, labels, models: dict[str, dict[int, np.ndarray]], *,
                     resamples: int = 2000, seed: int = 0,
                     chunk: int = 100) -> dict[str, dict[str, np.ndarray]]:
    """Every model's and seed's test AUC and ACC on the same bootstrap resamples.

    Resamples keep each class's count (stratified) for single-label tasks; multi-label tasks
    are resampled plainly. The first column of the result is the test split itself.

    Args:
        task: medmnist's task.
        labels: The test labels.
        models: Per model, ``{seed: scores}`` (images x columns).
        resamples: Resamples, besides the test split itself.
        seed: Seed of the draw (fixed: the same numbers on every run).
        chunk: Resamples drawn at a time (memory: chunk x images).

    Returns:
        Per model ``{"seeds": [...], "auc": array, "acc": array}``, each array seeds x
        (1 + resamples).
    """
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng(seed)
    strata = None if task.startswith("multi-label") else labels.reshape(-1)
    prepared = {name: [metric_columns(task, labels, scores) for scores in by_seed.values()]
                for name, by_seed in models.items()}
    parts = {name: {"auc": [], "acc": []} for name in models}
    sizes = [1] + [min(chunk, resamples - start) for start in range(0, resamples, chunk)]
    for i, size in enumerate(sizes):
        counts = np.ones((1, n)) if i == 0 else draw_counts(rng, n, size, strata)
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
        se_split: Standard error from the test split's images, shared by every seed.
        se_seeds: Standard error from the training runs (seed std / √seeds); nan with one seed.
        df: Degrees of freedom of the t quantile (inf: normal).
        seeds: Seeds in the mean.
        usable: Resamples on which every seed's metric is defined.
    """

    mean: float
    low: float
    high: float
    se_split: float
    se_seeds: float
    df: float
    seeds: int
    usable: int

    @property
    def defined(self) -> bool:
        """Whether the interval exists."""
        return not math.isnan(self.low)


def estimate(values: np.ndarray, *, bounded: bool = True, min_usable: int = 100) -> Estimate:
    """The mean over seeds of a metric and its 95% interval.

    ``SE² = s²/k + C``: ``s²`` the variance of the k seeds' values on the test split (the
    training runs), ``C`` the mean covariance between different seeds' bootstrap values (the
    image noise they share; with one seed, its bootstrap variance). The interval is
    ``mean ± t·SE`` with Student's t at the Welch–Satterthwaite degrees of freedom of ``s²/k``
    (``C`` from thousands of resamples counts as known), so three seeds give a wide one.

    Args:
        values: seeds x (1 + resamples), as from :func:`paired_bootstrap` (or a difference of
            two such arrays, seed by seed).
        bounded: Clip the interval to [0, 1] (a metric; not a difference).
        min_usable: Fewer usable resamples than this: no interval.

    Returns:
        The :class:`Estimate`.
    """
    from scipy.stats import t as student

    values = np.asarray(values, dtype=float)
    k = values.shape[0]
    split_values = values[:, 0]
    boot = values[:, 1:][:, np.all(np.isfinite(values[:, 1:]), axis=0)]
    mean = float(split_values.mean())
    nan = math.nan
    if not math.isfinite(mean) or boot.shape[1] < min_usable:
        return Estimate(mean, nan, nan, nan, nan, nan, k, boot.shape[1])
    if k == 1:
        shared, seed_var = float(boot.var(ddof=1)), nan
    else:
        cov = np.cov(boot)
        shared = max(0.0, float((cov.sum() - np.trace(cov)) / (k * (k - 1))))
        seed_var = float(split_values.var(ddof=1)) / k
    total = shared + (0.0 if math.isnan(seed_var) else seed_var)
    df = total**2 / (seed_var**2 / (k - 1)) if k > 1 and seed_var > 0 else math.inf
    half = (Z95 if math.isinf(df) else float(student.ppf(0.975, df))) * math.sqrt(total)
    low, high = mean - half, mean + half
    if bounded:
        low, high = max(low, 0.0), min(high, 1.0)
    return Estimate(mean, low, high, math.sqrt(shared), math.sqrt(seed_var), df, k,
                    boot.shape[1])


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
