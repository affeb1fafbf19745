"""How sure a test-split number is: over the test images (bootstrap, exact and score intervals)
and over seeds.

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

One model's intervals from its test images alone (:func:`split_intervals`, what ``evaluate``,
``infer`` and ``jobs fetch`` print) mostly do not come from that bootstrap, because it fails near
a perfect score: a test split with every image right, or every positive scored above every
negative, leaves it nothing to resample (its interval was 1.0 to 1.0), and in
``benchmarks/interval_coverage.py`` (binary task) it covered a true ACC of 0.99 only 33-37% of
the time on 40 images and a true AUC of 0.999 12-78% of the time on 40 to 624 images. Instead,
ACC of a single-label task (a count of right images) gets the exact Clopper-Pearson interval,
and a binary AUC a score-type interval with Hanley and McNeil's variance (neither needs
resamples, so both are given on fewer than ``MIN_IMAGES`` images too); a mean of several AUC
columns (multi-class, multi-label) takes, bound by bound, the wider of the bootstrap's interval
and a score-type one; multi-label ACC keeps the bootstrap (so its perfect score still gets 1.0
to 1.0). Every other perfect score now gets a lower bound below 1, and in the benchmark every
cell (40 to 624 images, true ACC 0.85 to 0.99, true AUC 0.92 to 0.9995) is covered 93.5-100%
of the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import DataError

__all__ = ["Estimate", "metric_columns", "predictions", "weighted_auc", "draw_counts",
           "paired_bootstrap", "estimate", "split_intervals", "split_interval_methods",
           "needs_resamples", "seeds_to_resolve"]

#: medmnist's tasks (``INFO[flag]["task"]``).
TASKS = ("binary-class", "multi-class", "ordinal-regression", "multi-label, binary-class")
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

    Raises:
        DataError: An unknown task, scores that are not images x columns or not finite, or
            labels of another shape than the task's.
    """
    y, s = np.asarray(labels), np.asarray(scores, dtype=float)
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; medmnist's are: {', '.join(TASKS)}")
    if s.ndim != 2 or len(s) != len(y):
        raise DataError(f"scores must be images x columns for {len(y)} labels, got shape "
                        f"{s.shape}")
    if not np.isfinite(s).all():
        raise DataError("the scores are not all finite (nan or inf)")
    multilabel = task.startswith("multi-label")
    if (y.shape[1:] != s.shape[1:]) if multilabel else (y.size != len(y)):
        want = f"images x {s.shape[1]} labels" if multilabel else "one label per image"
        raise DataError(f"labels must be {want}, got shape {y.shape}")
    decided = predictions(task, s)
    if task == "binary-class":
        y = y.reshape(-1)
        return [(y == 1, s[:, -1])], (y == decided).astype(float)
    if multilabel:
        return ([(y[:, i] == 1, s[:, i]) for i in range(s.shape[1])],
                (decided == (y == 1)).mean(axis=1))
    y = y.reshape(-1)
    return [(y == i, s[:, i]) for i in range(s.shape[1])], (decided == y).astype(float)


def predictions(task: str, scores) -> np.ndarray:
    """The decisions medmnist's ACC scores: for a binary task whether the last column passes
    0.5, for a multi-label task each column's, else the argmax class.

    Args:
        task: medmnist's task.
        scores: The model's probabilities (images x columns).

    Returns:
        One decision per image (images x labels for a multi-label task).
    """
    s = np.asarray(scores, dtype=float)
    if task == "binary-class":
        return (s[:, -1] > 0.5).astype(int)
    if task.startswith("multi-label"):
        return s > 0.5
    return s.argmax(axis=1)


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
    with each seed's own image noise). The half-width is ``√(z²·C + t²·s²/k)``, z the normal
    quantile and t Student's at k − 1 degrees of freedom, so that three seeds give a wide
    interval; it is never less than z times the bootstrap standard deviation of the seeds' mean
    (the images' error of these very seeds). A metric (``bounded``) is handled on the logit
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
    # never narrower than the images' own error of these seeds' mean: with few seeds, their
    # values on the split can agree by chance (V = 0) while their resamples' covariance is
    # negative (C floored at 0), and the half-width would be 0
    half = max(_half_width(shared_s, seed_var_s, k),
               Z95 * float(np.std(scale(boot).mean(axis=0), ddof=1)))
    center = float(scale(mean))
    low, high = center - half, center + half
    if logit:
        low, high = (float(1 / (1 + math.exp(-x))) for x in (low, high))
    elif bounded:
        low, high = max(low, 0.0), min(high, 1.0)
    return Estimate(mean, low, high, math.sqrt(shared), math.sqrt(seed_var), k, usable)


def _exact_binomial_interval(correct: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson 95% interval of a proportion, ``correct`` of ``n``: the true values that
    a two-sided binomial test at 5% (2.5% a side) does not reject, from Beta quantiles. It covers
    at least 95% at every true proportion and n; 40 of 40 gives 0.912 to 1."""
    from scipy.stats import beta

    low = 0.0 if correct <= 0 else float(beta.ppf(0.025, correct, n - correct + 1))
    high = 1.0 if correct >= n else float(beta.ppf(0.975, correct + 1, n - correct))
    return low, high


def _auc_score_interval(auc: float, classes: list[tuple[int, int]]) -> tuple[float, float]:
    """Score-type 95% interval of a mean of ROC AUCs, one per (positives, negatives) column.

    For one column this is Newcombe's score interval for the Mann-Whitney statistic
    (Newcombe, Stat. Med. 2006, 25:559-573): the true values A at which
    ``|auc − A| ≤ z·√V(A)``, the variance taken at A itself (as in Wilson's interval of a
    proportion), so a perfect ``auc`` of 1 still gets a lower bound below 1. ``V`` is Hanley and
    McNeil's (1982) variance of an AUC under their exponential model,
    ``A(1 − A)/(m·n) · [1 + (N − 1)·((1 − A)/(2 − A) + A/(1 + A))]`` for m positives and n
    negatives, with both class sizes replaced by their mean N = (m + n)/2, so that neither
    class is treated as the "abnormal" one. For 6 and 7 images and an AUC of 11/12 it gives
    0.5973 to 0.9860, the interval the R package SingleCaseES reports for that example.

    A mean of K columns (multi-class, multi-label) takes every column's AUC at A and adds their
    variances / K², as if the columns were independent; :func:`split_intervals` widens that to
    the bootstrap's interval wherever the bootstrap's is wider.

    Near 1, V ≈ (1 − A)(N + 1)/(2mn), so a perfect AUC gets the lower bound A with
    ``1 − A ≈ z²(N + 1)/(2mn)``: 0.895 for 16 positives and 24 negatives.
    """
    from scipy.optimize import brentq

    def spread(a: float) -> float:  # V(a) / (a(1 − a)), finite on [0, 1]
        return sum((1 + ((m + n) / 2 - 1) * ((1 - a) / (2 - a) + a / (1 + a))) / (m * n)
                   for m, n in classes) / len(classes) ** 2

    z2 = Z95**2

    def outside(a: float) -> float:  # > 0 where the score test rejects a
        return (auc - a) ** 2 - z2 * a * (1 - a) * spread(a)

    # at auc = 1 (or 0) the bound itself is a root; divided by (1 − a) (or a), the other one
    low = (brentq(lambda a: (1 - a) - z2 * a * spread(a), 0.0, 1.0) if auc >= 1
           else brentq(outside, 0.0, auc) if auc > 0 else 0.0)
    high = (brentq(lambda a: a - z2 * (1 - a) * spread(a), 0.0, 1.0) if auc <= 0
            else brentq(outside, auc, 1.0) if auc < 1 else 1.0)
    return float(low), float(high)


def split_intervals(task: str, labels, scores, *, resamples: int = 2000,
                    seed: int = 0) -> dict[str, Estimate]:
    """95% intervals of one model's ACC and AUC from its test images alone.

    One trained model says nothing about how much another seed would differ, so these intervals
    are narrower than those of :func:`estimate` over several seeds: they answer "how much could
    this model's number move on another sample of images", not "how good is the method".

    The bootstrap interval of :func:`estimate` (what this function returned before) cannot see
    the uncertainty of a perfect score, which has no wrong image or discordant pair to
    resample: its interval was 1 to 1, and near-perfect scores on few images were covered far
    less than 95% of the time (``benchmarks/interval_coverage.py``). So it is replaced where a
    count-based interval exists, and widened where none does:

    - ACC of single-label tasks (binary, multi-class, ordinal; each image right or wrong): the
      exact Clopper-Pearson interval of the count of right images out of n (at least 95%
      coverage for any true ACC; 40 of 40 gives 0.912 to 1).
    - ACC of multi-label tasks (each image's share of right labels, not a count): the bootstrap,
      as before, so a perfect multi-label ACC still gets 1.0 to 1.0.
    - AUC of binary tasks: a score-type interval with Hanley and McNeil's variance, symmetric in
      the classes (Newcombe 2006; see :func:`_auc_score_interval`); a perfect separation of 16
      positives from 24 negatives gives 0.895 to 1.
    - AUC of multi-class and multi-label tasks (a mean of one-vs-rest AUCs): the wider, bound by
      bound, of the bootstrap interval (which sees how the columns move together) and the
      score-type interval of the mean with the columns taken as independent (which does not
      collapse to zero width near 1).

    ``mean`` is the metric on the test split, and ``se_split`` and ``usable`` still come from
    the bootstrap. Single-label ACC (at least 2 images) and binary AUC (both classes present)
    need no resamples, so they get intervals on few images too; the bootstrap-based ones are
    undefined where the bootstrap's is (fewer than :data:`MIN_IMAGES` images, no resamples,
    an AUC undefined on too many resamples).

    Returns:
        ``{"acc": Estimate, "auc": Estimate}``.
    """
    from dataclasses import replace

    scores = np.asarray(scores)
    boot = paired_bootstrap(task, labels, {"model": {0: scores}},
                            resamples=resamples, seed=seed)["model"]
    acc, auc = estimate(boot["acc"]), estimate(boot["auc"])
    columns, correct = metric_columns(task, labels, scores)
    # the exact and score intervals need no resamples: they exist for few images too
    if len(correct) >= 2 and not needs_resamples(task, "acc"):
        low, high = _exact_binomial_interval(int(round(correct.sum())), len(correct))
        acc = replace(acc, low=low, high=high)
    widen = needs_resamples(task, "auc")
    if (not widen and math.isfinite(auc.mean)) or auc.defined:  # both classes in each column
        low, high = _auc_score_interval(auc.mean, [(int(pos.sum()), int((~pos).sum()))
                                                   for pos, _ in columns])
        if widen:
            low, high = min(low, auc.low), max(high, auc.high)
        auc = replace(auc, low=low, high=high)
    return {"acc": acc, "auc": auc}


def needs_resamples(task: str, metric: str) -> bool:
    """Whether :func:`split_intervals` builds ``metric``'s interval (``"acc"``, ``"auc"``) for
    ``task`` from the bootstrap: multi-label ACC and every AUC but the binary one."""
    return task.startswith("multi-label") if metric == "acc" else task != "binary-class"


def split_interval_methods(task: str, resamples: int, metrics=("acc", "auc")) -> str:
    """How :func:`split_intervals` builds the intervals of ``metrics`` for ``task``, in a few
    words (the CLI prints it under the intervals)."""
    bootstrap = f"bootstrap of {resamples} resamples"
    how = {"acc": bootstrap if needs_resamples(task, "acc") else "exact binomial",
           "auc": (f"score interval or {bootstrap}, the wider" if needs_resamples(task, "auc")
                   else "score interval")}
    return "; ".join(f"{m.upper()}: {how[m]}" for m in metrics)


def seeds_to_resolve(diff: Estimate, *, power: float = 0.8) -> float:
    """Seeds needed to tell a difference of ``diff.mean`` from 0, for planning the next run.

    Takes the spreads of ``diff`` (a difference of two rows, :func:`estimate` with
    ``bounded=False``) as the truth: the per-seed variance ``s² = k·se_seeds²`` and the shared
    image variance ``C = se_split²``, which more seeds cannot shrink. With k seeds the interval's
    half-width is ``√(z²·C + t²·s²/k)`` (as in :func:`estimate`, without its floor: that is the
    images' error of the present seeds' mean, which more seeds shrink); it excludes 0 with
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
