"""Coverage of the one-model 95% intervals of ACC and AUC (``uncertainty.split_intervals``).

    python benchmarks/interval_coverage.py           # 400 test sets per cell, 2000 resamples
    python benchmarks/interval_coverage.py --quick   # 100 test sets per cell, 500 resamples
    python benchmarks/interval_coverage.py --method bootstrap   # the former, bootstrap intervals

The full run takes 4-5 minutes on 2 shared cores, ``--quick`` 20-30 seconds.

A binary task by simulation. A fixed population model scores each image through a latent value
x, its score is ``sigmoid(x)`` (so threshold 0.5 is ``x > 0``), and positives are a fixed share
of the population (``--prevalence``, default 0.4). Its true ACC and AUC are exact:

    negatives x ~ N(-mu, 1), positives x ~ N(mu * s, s)
    ACC = Phi(mu)                        (each class is right with probability Phi(mu))
    AUC = Phi(mu * (1 + s) / sqrt(1 + s^2))

Two shapes: ``equal`` (s = 1) and ``unequal`` (s = 2, positives spread wider). mu is chosen so
that the true ACC is 0.85, 0.95 and 0.99 (AUC 0.929, 0.990, 0.9995 for ``equal``; 0.918, 0.986,
0.9991 for ``unequal``). For each cell (shape, test-set size n, true ACC) the script draws test
sets of n images from the population, asks ``split_intervals`` for its intervals (as
``evaluate``, ``infer`` and ``jobs fetch`` do), and counts how often each interval contains the
true value. Coverage is over the test sets whose interval is defined; "undefined" counts the
others (fewer than two classes, or too few usable resamples).

Every cell has its own seed derived from ``--seed`` and the cell, so a rerun prints the same
table, and a cell does not depend on which other cells ran; test set i of a cell uses bootstrap
seed i (the CLI always uses 0), so the resampling noise averages out over the test sets. The Monte Carlo standard error of a
coverage near 95% is about sqrt(0.95 * 0.05 / sets): 1.1 points at 400 sets, 2.2 at 100.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
from scipy.stats import norm

from hqcnn_qiskit.uncertainty import estimate, paired_bootstrap, split_intervals

SHAPES = {"equal": 1.0, "unequal": 2.0}  # sd of the positives' latent value
SIZES = (40, 156, 624)
ACCS = (0.85, 0.95, 0.99)


def population(acc: float, spread: float) -> tuple[float, float, float]:
    """(mu, true ACC, true AUC) of the binormal population whose classes are both right with
    probability ``acc``: negatives ``N(-mu, 1)``, positives ``N(mu * spread, spread)``."""
    mu = float(norm.ppf(acc))  # P(x < 0 | negative) = P(x > 0 | positive) = Phi(mu)
    true_acc = float(norm.cdf(mu))  # the same in both classes, so at any prevalence
    true_auc = float(norm.cdf(mu * (1 + spread) / math.sqrt(1 + spread**2)))
    return mu, true_acc, true_auc


def draw_test_set(rng: np.random.Generator, n: int, mu: float, spread: float,
                  prevalence: float) -> tuple[np.ndarray, np.ndarray]:
    """n images: labels (n,) and class probabilities (n, 2), column 1 the positive class."""
    labels = (rng.random(n) < prevalence).astype(int)
    latent = np.where(labels == 1, rng.normal(mu * spread, spread, n), rng.normal(-mu, 1.0, n))
    p = 1 / (1 + np.exp(-latent))
    return labels, np.column_stack([1 - p, p])


def bootstrap_intervals(task: str, labels, scores, *, resamples: int, seed: int) -> dict:
    """What ``split_intervals`` returned before it used score intervals: :func:`estimate` on the
    bootstrap of the one model (logit scale, plain scale when a value reaches 0 or 1)."""
    boot = paired_bootstrap(task, labels, {"model": {0: scores}}, resamples=resamples,
                            seed=seed)["model"]
    return {metric: estimate(boot[metric]) for metric in ("acc", "auc")}


METHODS = {"split_intervals": split_intervals, "bootstrap": bootstrap_intervals}


def run_cell(shape: str, n: int, acc_index: int, *, sets: int, resamples: int, seed: int,
             prevalence: float, method: str = "split_intervals") -> dict:
    spread = SHAPES[shape]
    mu, true_acc, true_auc = population(ACCS[acc_index], spread)
    key = [seed, list(SHAPES).index(shape), n, acc_index]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    tally = {m: {"hit": 0, "defined": 0, "width": 0.0, "perfect": 0} for m in ("acc", "auc")}
    truth = {"acc": true_acc, "auc": true_auc}
    for rep in range(sets):
        labels, scores = draw_test_set(rng, n, mu, spread, prevalence)
        intervals = METHODS[method]("binary-class", labels, scores, resamples=resamples,
                                    seed=rep)
        for metric, e in intervals.items():
            t = tally[metric]
            t["perfect"] += e.mean == 1.0
            if e.defined:
                t["defined"] += 1
                t["hit"] += e.low <= truth[metric] <= e.high
                t["width"] += e.high - e.low
    row = {"shape": shape, "n": n, "true_acc": true_acc, "true_auc": true_auc}
    for metric, t in tally.items():
        row[f"{metric}_cov"] = t["hit"] / t["defined"] if t["defined"] else math.nan
        row[f"{metric}_width"] = t["width"] / t["defined"] if t["defined"] else math.nan
        row[f"{metric}_undefined"] = sets - t["defined"]
        row[f"{metric}_perfect"] = t["perfect"] / sets
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="100 test sets per cell and 500 resamples (a smoke run)")
    parser.add_argument("--sets", type=int, help="test sets per cell (default 400; 100 quick)")
    parser.add_argument("--resamples", type=int,
                        help="bootstrap resamples per interval (default 2000, as the CLI; "
                             "500 quick)")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--prevalence", type=float, default=0.4, help="share of positives")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=list(METHODS), default="split_intervals",
                        help="the intervals to measure: split_intervals as it is now, or "
                             "bootstrap, the plain bootstrap it used before (the 'before' "
                             "table of benchmarks/README.md)")
    args = parser.parse_args()
    sets = args.sets or (100 if args.quick else 400)
    resamples = args.resamples or (500 if args.quick else 2000)

    started = time.perf_counter()
    rows = []
    for shape in args.shapes:
        for n in SIZES:
            for i in range(len(ACCS)):
                rows.append(run_cell(shape, n, i, sets=sets, resamples=resamples,
                                     seed=args.seed, prevalence=args.prevalence,
                                     method=args.method))
                r = rows[-1]
                print(f"{shape} n={n} acc={r['true_acc']:.2f}: {r['acc_cov']:.3f} / "
                      f"{r['auc_cov']:.3f}", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started

    def cov(value: float) -> str:  # below 90%: clearly under the nominal 95%
        return f"**{value:.1%}**" if value < 0.90 else f"{value:.1%}"

    source = ("`split_intervals`" if args.method == "split_intervals"
              else "the plain bootstrap (`estimate(paired_bootstrap(...))`)")
    print(f"Coverage of 95% intervals from {source} (binary-class, prevalence "
          f"{args.prevalence}); {sets} test sets per cell, {resamples} bootstrap resamples, "
          f"seed {args.seed}. Bold: below 90%.\n")
    print("| shape | n | true ACC | ACC coverage | mean ACC width | ACC = 1 | true AUC | "
          "AUC coverage | mean AUC width | AUC = 1 | undefined (ACC / AUC) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['shape']} | {r['n']} | {r['true_acc']:.3f} | {cov(r['acc_cov'])} | "
              f"{r['acc_width']:.3f} | {r['acc_perfect']:.0%} | {r['true_auc']:.4f} | "
              f"{cov(r['auc_cov'])} | {r['auc_width']:.3f} | {r['auc_perfect']:.0%} | "
              f"{r['acc_undefined']} / {r['auc_undefined']} |")
    print(f"\n\"ACC = 1\", \"AUC = 1\": share of test sets scored perfectly. Monte Carlo standard "
          f"error of a coverage near 95%: {math.sqrt(0.95 * 0.05 / sets):.1%}. "
          f"Run time {elapsed:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
