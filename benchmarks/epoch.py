"""Wall time and peak memory of one training epoch: HQCNN (exact backend) vs its classical twin.

    python benchmarks/epoch.py --data-root ../shared/medmnist [--datasets breastmnist pneumoniamnist]

Each cell runs in a fresh process (``hqcnn-qiskit train --epochs 1`` through the Python API), so
its peak resident memory (``ru_maxrss``) is its own. The epoch time is the training pass plus the
validation pass, as ``metrics.json`` records it. Target: a PneumoniaMNIST epoch under 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = """
import json, sys, time
from hqcnn_qiskit.data import DatasetSpec
from hqcnn_qiskit.train import TrainConfig, train
dataset, model, root, out = sys.argv[1:5]
m = train(TrainConfig(dataset=DatasetSpec(dataset), model=model, epochs=1, seed=0), out,
          data_root=root, progress=False, log=lambda msg: None)
print(json.dumps({"epoch_s": m["history"][0]["seconds"], "params": m["parameters"]}))
"""


def run_cell(dataset: str, model: str, root: str) -> dict:
    """One epoch in a fresh process; its own peak RSS from ``os.wait4``."""
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryFile("w+") as stdout:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", CHILD, dataset, model, root, out],
                                stdout=stdout, stderr=subprocess.DEVNULL, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        if proc.returncode:
            raise SystemExit(f"{dataset}/{model} failed with exit code {proc.returncode}")
        stdout.seek(0)
        result = json.loads(stdout.read().strip().splitlines()[-1])
    result["process_s"] = wall
    result["peak_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("HQCNN_DATA_ROOT"))
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "pneumoniamnist"])
    args = parser.parse_args()
    rows = []
    for dataset in args.datasets:
        for model in ("classical", "hqcnn"):
            cell = run_cell(dataset, model, args.data_root)
            rows.append((dataset, model, cell))
            print(f"{dataset} {model}: {cell['epoch_s']:.1f} s epoch, peak "
                  f"{cell['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
    print("| dataset | model | epoch (s) | process incl. start-up (s) | peak RSS (MB) | hqcnn / classical epoch |")
    print("|---|---|---|---|---|---|")
    for dataset, model, cell in rows:
        base = next(c for d, m, c in rows if d == dataset and m == "classical")
        ratio = cell["epoch_s"] / base["epoch_s"]
        print(f"| {dataset} | {model} | {cell['epoch_s']:.1f} | {cell['process_s']:.1f} | "
              f"{cell['peak_mb']:.0f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
