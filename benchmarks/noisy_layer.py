"""Training-step time of the HQCNN: exact (aer_ideal) vs aer_noisy on both engines vs the stock
Aer path.

* exact / aer_noisy: one full training step (CNN + quantum layer forward, backward, Adam step)
  of ``get_model("hqcnn", backend=...)`` on random 28x28 input, per sample. The exact and the
  batched noisy engine are timed on a second step (the first compiles the circuit; its time is
  reported too); the Aer engine (``engine = "aer"``, the reference) only on ``--aer-batch``
  samples, since it costs ~150 noisy circuits per sample.
* stock: the ISA circuit on the whole FakeBrisbane device, qiskit-aer's ``EstimatorV2`` built
  from ``AerSimulator.from_backend`` and qiskit-machine-learning's stock ``EstimatorQNN`` +
  ``ParamShiftEstimatorGradient``, for ONE image (it is slow); forward only unless
  ``--stock-backward``.

    python benchmarks/noisy_layer.py [--batch 128] [--shots 1024] [--aer-batch 4]
                                     [--stock-backward] [--no-stock]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from hqcnn_qiskit.backends import get_backend
from hqcnn_qiskit.model import get_model, hqcnn_circuit, readout_observables
from hqcnn_qiskit.profiles import load_profile


def training_step(backend, batch: int, steps: int = 2) -> tuple[list[float], dict]:
    """Seconds of ``steps`` training steps on one model, and the last step's backend stats."""
    torch.manual_seed(0)
    model = get_model("hqcnn", backend=backend, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, 28, 28) * 2 - 1  # images in [-1, 1], as load_split gives
    y = torch.randint(0, 2, (batch,))
    times, stats = [], {}
    for _ in range(steps):
        start = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
        stats = getattr(model.quantum.backend, "last_batch_stats", {})
    return times, stats


def _work(stats: dict) -> str:
    return (f"{stats.get('circuits', 0)} circuits, {stats.get('shots', 0):,} shots, "
            f"estimator {stats.get('seconds', 0.0):.2f} s")


def stock_one_image(backward: bool) -> tuple[float, float | None]:
    from qiskit_aer import AerSimulator
    from qiskit_aer.primitives import EstimatorV2
    from qiskit_machine_learning.gradients import ParamShiftEstimatorGradient
    from qiskit_machine_learning.neural_networks import EstimatorQNN

    device = get_backend("aer_noisy")
    circuit, inputs, weights, _ = hqcnn_circuit()
    isa, obs = device.prepare(circuit, readout_observables())
    estimator = EstimatorV2.from_backend(AerSimulator.from_backend(device.device))
    qnn = EstimatorQNN(circuit=isa, estimator=estimator, observables=obs, input_params=inputs,
                       weight_params=weights, input_gradients=True,
                       gradient=ParamShiftEstimatorGradient(estimator))
    x = np.random.default_rng(0).uniform(-1, 1, (1, len(inputs)))
    w = np.random.default_rng(1).uniform(-1, 1, len(weights))
    start = time.perf_counter()
    qnn.forward(x, w)
    forward = time.perf_counter() - start
    if not backward:
        return forward, None
    start = time.perf_counter()
    qnn.backward(x, w)
    return forward, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--shots", type=int, default=1024)
    parser.add_argument("--aer-batch", type=int, default=4,
                        help="samples timed on the (slow) Aer engine")
    parser.add_argument("--stock-backward", action="store_true")
    parser.add_argument("--no-stock", action="store_true", help="skip the stock Aer path")
    args = parser.parse_args()
    torch.set_num_threads(2)

    rows = []
    (first, exact_s), _ = training_step("aer_ideal", args.batch)
    rows.append(("exact (aer_ideal)", args.batch, exact_s, f"first step {first:.2f} s"))
    for name in ("aer_noisy", "aer_noisy_mitigated"):
        profile = load_profile(name)
        shots = args.shots if name == "aer_noisy" else profile.shots  # mitigated: its own
        batched = dataclasses.replace(profile, engine="batched", shots=shots)
        (first, seconds), stats = training_step(batched, args.batch)
        rows.append((f"{name}, batched engine, {shots} shots", args.batch, seconds,
                     f"{_work(stats)}; first step {first:.2f} s"))
    aer = dataclasses.replace(load_profile("aer_noisy"), engine="aer", shots=args.shots)
    (seconds,), stats = training_step(aer, args.aer_batch, steps=1)
    rows.append((f"aer_noisy, aer engine, {args.shots} shots", args.aer_batch, seconds,
                 _work(stats)))
    if not args.no_stock:
        fwd, bwd = stock_one_image(args.stock_backward)
        stock = fwd + (bwd or 0.0)
        what = "forward + backward" if bwd is not None else "forward only"
        rows.append((f"stock Aer EstimatorV2, 127 qubits ({what})", 1, stock, "-"))

    exact_per = 1000 * exact_s / args.batch
    print("| path | batch | s per step | ms per sample | vs exact | work |")
    print("|---|---|---|---|---|---|")
    for name, batch, seconds, work in rows:
        per = 1000 * seconds / batch
        print(f"| {name} | {batch} | {seconds:.2f} | {per:.1f} | {per / exact_per:.1f}x | "
              f"{work} |")


if __name__ == "__main__":
    main()
