"""The results protocol: HQCNN vs its classical twin vs published MedMNIST numbers, with noise.

    python benchmarks/results.py --data-root ../shared/medmnist            # full protocol
    python benchmarks/results.py --data-root DIR --datasets pathmnist ...  # any MedMNIST set

Official splits, several seeds, model selection on validation AUC only (inside ``train``),
mean ± std of test ACC/AUC. Every cell is a run folder under ``--out``; a finished cell
(``metrics.json``) is never redone and an interrupted one resumes from its ``last.pt``, so the
script can be stopped and restarted at any time. It writes ``docs/RESULTS.md`` and its PNG
plots from the run folders; nothing in that file is typed by hand. Asking for more epochs than a
finished cell has continues that cell from its ``last.pt``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Published MedMNIST v2 baselines (Yang et al., Scientific Data 2023, Table 3), quoted.
PUBLISHED = {
    "breastmnist": {"ResNet-18 (28)": (0.901, 0.863), "ResNet-50 (28)": (0.857, 0.812)},
    "pneumoniamnist": {"ResNet-18 (28)": (0.944, 0.854), "ResNet-50 (28)": (0.948, 0.854)},
}
# The HQCNN paper's own claims (arXiv 2509.14277 abstract), quoted: (AUC, ACC); None = not stated.
PAPER = {
    "breastmnist": (None, 0.8718),
    "organamnist": (None, 0.9995),
}
ROWS = {
    "hqcnn": {"model": "hqcnn", "label": "HQCNN (exact)"},
    "classical": {"model": "classical", "label": "Classical twin (Linear 4→8 + tanh)"},
    "hqcnn_noattn": {"model": "hqcnn", "attention": False, "label": "HQCNN without attention"},
}
DEFAULT_EPOCHS = {"breastmnist": 100, "pneumoniamnist": 25}


def _cell(out: Path, dataset: str, row: str, seed: int) -> Path:
    return out / dataset / row / f"seed{seed}"


def _train_cell(job: dict) -> str:
    """Train one cell (in a worker process); returns the run folder."""
    import torch

    torch.set_num_threads(job["threads"])
    from hqcnn_qiskit.data import DatasetSpec
    from hqcnn_qiskit.train import TrainConfig, train

    folder = Path(job["folder"])
    if _finished(job):
        return str(folder)
    config = TrainConfig(dataset=DatasetSpec(job["dataset"]), seed=job["seed"], **job["config"])
    resume = (folder / "last.pt").is_file()
    train(config, folder, data_root=job["data_root"], resume=resume, progress=False,
          log=lambda msg: print(f"[{job['dataset']}/{job['row']}/seed{job['seed']}] {msg}",
                                flush=True))
    return str(folder)


def _finished(job: dict) -> bool:
    """A cell is done when its metrics exist for at least the requested epochs; a cell asked to
    train longer resumes from its ``last.pt`` (exactly, as if it had never stopped)."""
    metrics = _load(Path(job["folder"]))
    return bool(metrics) and metrics["config"]["epochs"] >= job["config"]["epochs"]


def _noise_eval(out: Path, dataset: str, backend: str, data_root, limit: int | None) -> dict:
    """The exact-trained HQCNN (seed 0) evaluated on another backend; cached as JSON until the
    checkpoint changes."""
    from hqcnn_qiskit.checkpoint import write_json
    from hqcnn_qiskit.evaluate import evaluate_checkpoint

    cache = out / dataset / f"noise_{backend}.json"
    checkpoint = _cell(out, dataset, "hqcnn", 0) / "best.pt"
    if cache.is_file() and cache.stat().st_mtime >= checkpoint.stat().st_mtime:
        cached = json.loads(cache.read_text())
        if cached.get("limit") == limit:
            return cached
    started = time.perf_counter()
    result = evaluate_checkpoint(checkpoint, split="test", backend=backend, data_root=data_root,
                                 limit=limit, progress=False)
    result["seconds"] = time.perf_counter() - started
    result["limit"] = limit
    write_json(cache, result)
    return result


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(values: list[float]) -> str:
    mean, std = _mean_std(values)
    return f"{mean:.3f} ± {std:.3f}" if values else "—"


def _load(folder: Path) -> dict | None:
    path = folder / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _plots(out: Path, docs: Path, datasets: list[str], seeds: list[int]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = []
    for dataset in datasets:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for ax, metric in zip(axes, ("auc", "acc")):
            labels, means, stds = [], [], []
            for row, spec in ROWS.items():
                vals = [m["test"][metric] for s in seeds if (m := _load(_cell(out, dataset, row, s)))]
                if vals:
                    mean, std = _mean_std(vals)
                    labels.append(spec["label"].split(" (")[0])
                    means.append(mean)
                    stds.append(std)
            for name, (auc, acc) in PUBLISHED.get(dataset, {}).items():
                labels.append(f"{name}\n(published)")
                means.append(auc if metric == "auc" else acc)
                stds.append(0.0)
            colors = ["#4c72b0", "#dd8452", "#55a868"][: len(labels)] + ["#999999"] * len(labels)
            ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color=colors[: len(labels)])
            ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
            ax.set_ylim(0.5, 1.0)
            ax.set_title(f"{dataset}: test {metric.upper()} (mean ± std over seeds)")
        fig.tight_layout()
        name = f"results_{dataset}.png"
        fig.savefig(docs / name, dpi=110)
        plt.close(fig)
        images.append(name)

        fig, ax = plt.subplots(figsize=(6, 3.6))
        for row, spec in ROWS.items():
            for s in seeds:
                m = _load(_cell(out, dataset, row, s))
                if m:
                    ax.plot([h["epoch"] for h in m["history"]], [h["val_auc"] for h in m["history"]],
                            color={"hqcnn": "#4c72b0", "classical": "#dd8452"}.get(row, "#55a868"),
                            alpha=0.6, label=spec["label"].split(" (")[0] if s == seeds[0] else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation AUC")
        ax.set_title(f"{dataset}: validation AUC per epoch (each line a seed)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"curves_{dataset}.png"
        fig.savefig(docs / name, dpi=110)
        plt.close(fig)
        images.append(name)
    return images


def write_report(out: Path, docs: Path, datasets: list[str], seeds: list[int], noise: dict,
                 command: str) -> Path:
    """docs/RESULTS.md from the run folders."""
    docs.mkdir(parents=True, exist_ok=True)
    images = _plots(out, docs, datasets, seeds)
    lines = [
        "# Results",
        "",
        f"Generated by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"({platform.machine()}, {os.cpu_count()} cores, CPU only). Do not edit by hand: rerun "
        "the script.",
        "",
        "Protocol: official MedMNIST splits at 28 px; seeds "
        f"{', '.join(map(str, seeds))}; Adam (lr 1e-3, batch 128); the epoch with the best "
        "validation AUC is selected and only that checkpoint is scored on the test split "
        "(medmnist's own ACC/AUC). Rows marked *quoted* are copied from their papers, not rerun.",
        "",
    ]
    for dataset in datasets:
        lines += [f"## {dataset}", "",
                  "| row | test AUC | test ACC | seeds | quantum params | classical params | train time / seed |",
                  "|---|---|---|---|---|---|---|"]
        summary = {}
        for row, spec in ROWS.items():
            runs = [m for s in seeds if (m := _load(_cell(out, dataset, row, s)))]
            aucs = [m["test"]["auc"] for m in runs]
            accs = [m["test"]["acc"] for m in runs]
            summary[row] = (aucs, accs)
            if not runs:
                lines.append(f"| {spec['label']} | not run | | 0 | | | |")
                continue
            p = runs[0]["parameters"]
            wall = statistics.fmean(m["wall_time_s"] for m in runs)
            epochs = runs[0]["config"]["epochs"]
            lines.append(f"| {spec['label']} | {_fmt(aucs)} | {_fmt(accs)} | {len(runs)} | "
                         f"{p['quantum']} | {p['classical']} | {wall:.0f} s ({epochs} epochs) |")
        for name, (auc, acc) in PUBLISHED.get(dataset, {}).items():
            lines.append(f"| {name}, MedMNIST v2 (*quoted*) | {auc:.3f} | {acc:.3f} | — | — | — | — |")
        if dataset in PAPER:
            auc, acc = PAPER[dataset]
            lines.append(f"| HQCNN paper claim (*quoted*, arXiv 2509.14277) | "
                         f"{'not stated' if auc is None else f'{auc:.4f}'} | "
                         f"{'not stated' if acc is None else f'{acc:.4f}'} | — | — | — | — |")
        q, c = summary.get("hqcnn", ([], [])), summary.get("classical", ([], []))
        if q[0] and c[0]:
            dq, dc = _mean_std(q[0]), _mean_std(c[0])
            diff = dq[0] - dc[0]
            spread = max(dq[1], dc[1])
            if diff > spread:
                verdict = "the HQCNN beats its classical twin by more than one standard deviation"
            elif -diff > spread:
                verdict = ("the HQCNN does **not** beat its classical twin: the twin is better by "
                           "more than one standard deviation")
            else:
                verdict = ("the HQCNN does **not** beat its classical twin: the difference is "
                           "within one standard deviation, an honest null result")
            lines += ["", f"Verdict on test AUC: {verdict} (mean HQCNN {dq[0]:.3f}, twin "
                          f"{dc[0]:.3f}, difference {diff:+.3f}, larger std {spread:.3f})."]
        if noise.get(dataset):
            lines += ["", "### Noise study", "",
                      "| exact-trained HQCNN (seed 0), evaluated | test AUC | test ACC | images | time |",
                      "|---|---|---|---|---|"]
            for backend, result in noise[dataset].items():
                if backend == "trained_on_aer_noisy":
                    continue
                lines.append(f"| on `{backend}` | {result['auc']:.3f} | {result['acc']:.3f} | "
                             f"{result['n']} | {result['seconds']:.0f} s |")
            exact, mitigated = noise[dataset].get("aer_ideal"), noise[dataset].get("aer_noisy_mitigated")
            if exact and mitigated:
                gap = 100 * (mitigated["acc"] - exact["acc"])
                lines += ["", f"Mitigated noisy accuracy minus exact accuracy on the same images: "
                              f"{gap:+.1f} points ({'within' if abs(gap) <= 2 else 'outside'} the "
                              "2-point target)."]
            trained = noise[dataset].get("trained_on_aer_noisy")
            if trained:
                lines += ["", "| HQCNN trained on `aer_noisy` | test AUC | test ACC | training set | time |",
                          "|---|---|---|---|---|",
                          f"| seed 0, {trained['config']['epochs']} epochs | {trained['test']['auc']:.3f} | "
                          f"{trained['test']['acc']:.3f} | {trained['config']['limit_train'] or 'all'} images | "
                          f"{trained['wall_time_s']:.0f} s |"]
        lines += ["", *[f"![{name}]({name})" for name in images if dataset in name], ""]
    path = docs / "RESULTS.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("HQCNN_DATA_ROOT"))
    parser.add_argument("--out", default=str(REPO / "runs" / "results"))
    parser.add_argument("--docs", default=str(REPO / "docs"))
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "pneumoniamnist"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--epochs", nargs="+", default=[], metavar="DATASET=N",
                        help="epochs per dataset (defaults: breastmnist=100, pneumoniamnist=25, else 20)")
    parser.add_argument("--jobs", type=int, default=2, help="cells trained in parallel")
    parser.add_argument("--noise-limit", type=int, default=None,
                        help="test images for the noisy evaluations (default: the whole split)")
    parser.add_argument("--noisy-train-limit", type=int, default=None,
                        help="training images for the HQCNN trained on aer_noisy (default: all)")
    parser.add_argument("--noisy-train-epochs", type=int, default=None,
                        help="epochs of that run (default: the same as the exact HQCNN)")
    parser.add_argument("--skip-noise", action="store_true")
    args = parser.parse_args(argv)

    out, docs = Path(args.out), Path(args.docs)
    epochs = dict(DEFAULT_EPOCHS)
    for item in args.epochs:
        name, _, value = item.partition("=")
        epochs[name] = int(value)
    threads = max(1, (os.cpu_count() or 1) // max(args.jobs, 1))
    jobs = []
    for dataset in args.datasets:
        for row in args.rows:
            config = {k: v for k, v in ROWS[row].items() if k != "label"}
            config["epochs"] = epochs.get(dataset, 20)
            for seed in args.seeds:
                jobs.append({"dataset": dataset, "row": row, "seed": seed, "config": config,
                             "folder": str(_cell(out, dataset, row, seed)),
                             "data_root": args.data_root, "threads": threads})
    todo = [j for j in jobs if not _finished(j)]
    print(f"{len(jobs)} cells, {len(jobs) - len(todo)} done, {len(todo)} to run", flush=True)
    with ProcessPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        for folder in pool.map(_train_cell, todo):
            print(f"done {folder}", flush=True)

    noise: dict = {}
    if not args.skip_noise and "hqcnn" in args.rows and 0 in args.seeds:
        for dataset in args.datasets:
            noise[dataset] = {}
            for backend in ("aer_ideal", "aer_noisy", "aer_noisy_mitigated"):
                print(f"noise study: {dataset} on {backend}", flush=True)
                noise[dataset][backend] = _noise_eval(out, dataset, backend, args.data_root,
                                                      args.noise_limit)
            job = {"dataset": dataset, "row": "hqcnn_aer_noisy", "seed": 0,
                   "folder": str(_cell(out, dataset, "hqcnn_aer_noisy", 0)),
                   "data_root": args.data_root, "threads": os.cpu_count() or 1,
                   "config": {"model": "hqcnn", "backend": "aer_noisy",
                              "epochs": args.noisy_train_epochs or epochs.get(dataset, 20),
                              "limit_train": args.noisy_train_limit,
                              "limit_eval": None}}
            print(f"noise study: {dataset} HQCNN trained on aer_noisy", flush=True)
            _train_cell(job)
            noise[dataset]["trained_on_aer_noisy"] = _load(Path(job["folder"]))
    command = "python benchmarks/results.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = write_report(out, docs, args.datasets, args.seeds, noise, command.strip())
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
