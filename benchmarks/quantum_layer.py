"""Forward + backward time of the HQCNN quantum layer: stock Qiskit primitives vs ours.

Rows of the table (per-sample milliseconds at batch 32, 128 and 512):

(a) stock: ``EstimatorQNN`` + ``TorchConnector`` on ``qiskit.primitives.StatevectorEstimator``
    with the default gradient (``ParamShiftEstimatorGradient``). Its cost is linear in the number
    of samples (one PUB per observable forward, one per sample and observable backward), so a few
    samples are timed and the per-sample figure is shown for every batch size.
(b) the same on ``qiskit_aer.primitives.EstimatorV2``.
(c) ours: the model's ``QuantumLayer`` on backend ``aer_ideal`` (``BatchedEstimatorQNN`` +
    ``TorchConnector`` on ``BatchedStatevectorEstimator`` and
    ``BatchedParamShiftEstimatorGradient``).
(d) the classical training step alone: ``get_model("classical")`` forward, backward and Adam step
    on random 28x28 images.
(e) PennyLane ``default.qubit`` + ``qml.qnn.TorchLayer`` (backprop) on the same circuit, if
    PennyLane is installed (``pip install pennylane``).

Every time is the best of several runs (the machine may be shared); (c) and (d) are measured
alternately so both see the same load. Then the estimator calls and PUBs per training step.

    python benchmarks/quantum_layer.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import torch
from qiskit_machine_learning.connectors import TorchConnector

from hqcnn_qiskit.backends import ExactBackend
from hqcnn_qiskit.model import QuantumLayer, get_model, readout_observables
from hqcnn_qiskit.primitives import CountingEstimator
from hqcnn_qiskit.profiles import load_profile

BATCHES = (32, 128, 512)


def _inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, 4, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    upstream = torch.randn(batch, 8, generator=g, dtype=torch.float64)
    return x, upstream


def fwd_bwd(layer, x: torch.Tensor, upstream: torch.Tensor) -> tuple[float, float]:
    """Seconds of one forward and one backward pass (a random vector-Jacobian product)."""
    x = x.clone().requires_grad_(True)
    start = time.perf_counter()
    out = layer(x)
    mid = time.perf_counter()
    (out * upstream.to(out.dtype)).sum().backward()
    return mid - start, time.perf_counter() - mid


class _ClassicalStep:
    def __init__(self, batch: int):
        torch.manual_seed(0)
        self.model = get_model("classical")
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.x = torch.rand(batch, 1, 28, 28) * 2 - 1  # images in [-1, 1], as load_split gives
        self.y = torch.randint(0, 2, (batch,))

    def __call__(self) -> float:
        start = time.perf_counter()
        self.opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - start


class _CountingExactBackend(ExactBackend):
    """``aer_ideal`` with its estimator wrapped in a :class:`CountingEstimator`."""

    counter: CountingEstimator | None = None

    def estimator(self):
        self.counter = CountingEstimator(super().estimator())
        return self.counter


def _stock_connector(estimator, layer: QuantumLayer) -> TorchConnector:
    from qiskit_machine_learning.neural_networks import EstimatorQNN

    qnn = EstimatorQNN(
        circuit=layer.circuit, estimator=estimator, observables=readout_observables(),
        input_params=layer.input_params, weight_params=layer.weight_params,
        input_gradients=True, default_precision=0.0,
    )  # default gradient: ParamShiftEstimatorGradient(estimator)
    return TorchConnector(qnn, initial_weights=layer.connector.weight.detach().numpy())


def time_stock(estimator, layer: QuantumLayer, samples: int) -> tuple[float, tuple, tuple]:
    """Per-sample seconds of forward + backward, and (calls, PUBs) forward and backward."""
    counter = CountingEstimator(estimator)
    connector = _stock_connector(counter, layer)
    x, upstream = _inputs(1, seed=1)
    fwd_bwd(connector, x, upstream)  # warm-up (transpilation, caches)
    x, upstream = _inputs(samples, seed=2)
    counter.reset()
    xg = x.clone().requires_grad_(True)
    start = time.perf_counter()
    out = connector(xg)
    forward_counts = (counter.calls, counter.pubs)
    counter.reset()
    (out * upstream.to(out.dtype)).sum().backward()
    seconds = time.perf_counter() - start
    return seconds / samples, forward_counts, (counter.calls, counter.pubs)


def pennylane_layer(layer: QuantumLayer):
    """The same circuit as a PennyLane TorchLayer with the same weights, or None."""
    try:
        import pennylane as qml
    except ImportError:
        return None
    n = 4
    dev = qml.device("default.qubit", wires=n)

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def circuit(inputs, u3, cp, rz):
        for i in range(n):
            qml.RY(inputs[..., i], wires=i)
        for i in range(n):
            qml.U3(u3[3 * i], u3[3 * i + 1], u3[3 * i + 2], wires=i)
        for i in range(n):
            qml.CNOT(wires=[i, (i + 1) % n])
        for i in range(n):
            qml.Toffoli(wires=[i, (i + 1) % n, (i + 2) % n])
        m = 0
        for j in range(n):
            qml.Hadamard(wires=j)
            for k in range(j + 1, n):
                qml.ControlledPhaseShift(cp[m], wires=[k, j])
                m += 1
        for i in range(n):
            qml.RZ(rz[i], wires=i)
        return [qml.expval(qml.PauliX(i)) for i in range(n)] + [
            qml.expval(qml.PauliZ(i)) for i in range(n)
        ]

    torch_layer = qml.qnn.TorchLayer(circuit, {"u3": 12, "cp": 6, "rz": 4})
    ours = dict(zip((p.name for p in layer.weight_params), layer.connector.weight.tolist()))
    with torch.no_grad():
        for name, param in torch_layer.named_parameters():
            values = [ours[f"{name}[{i}]"] for i in range(param.numel())]
            param.data = torch.tensor(values, dtype=torch.float64)
    return torch_layer


def best(times: list[float]) -> float:
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and stock samples")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    stock_samples = 1 if args.quick else 4

    counting = _CountingExactBackend(profile=load_profile("aer_ideal"))
    layer = QuantumLayer(backend=counting, generator=torch.Generator().manual_seed(0))

    # (c), (d), (e) and the counts, per batch size
    ours, fwd, bwd, classical, penny, counts = {}, {}, {}, {}, {}, {}
    pl = pennylane_layer(layer)
    penny_check = None
    for batch in BATCHES:
        x, upstream = _inputs(batch)
        step = _ClassicalStep(batch)
        step()  # warm-up
        fwd_bwd(layer, x, upstream)
        f_times, b_times, c_times = [], [], []
        for _ in range(repeats):
            c_times.append(step())
            f, b = fwd_bwd(layer, x, upstream)
            f_times.append(f)
            b_times.append(b)
        fwd[batch], bwd[batch] = best(f_times), best(b_times)
        ours[batch] = best([f + b for f, b in zip(f_times, b_times)])
        classical[batch] = best(c_times)

        counter = counting.counter
        xg = x.clone().requires_grad_(True)
        counter.reset()
        out = layer(xg)
        forward_counts = (counter.calls, counter.pubs)
        counter.reset()
        (out * upstream.to(out.dtype)).sum().backward()
        counts[batch] = (forward_counts, (counter.calls, counter.pubs))

        if pl is not None:
            if penny_check is None:
                with torch.no_grad():
                    diff = (pl(x[:8]).double() - layer(x[:8]).double()).abs().max().item()
                penny_check = diff
            fwd_bwd(pl, x, upstream)  # warm-up
            penny[batch] = best([sum(fwd_bwd(pl, x, upstream)) for _ in range(repeats)])

    # (a) and (b): a few samples, per-sample cost
    from qiskit.primitives import StatevectorEstimator

    stock_sv, sv_fwd_counts, sv_bwd_counts = time_stock(StatevectorEstimator(), layer,
                                                        stock_samples)
    try:
        from qiskit_aer.primitives import EstimatorV2 as AerEstimator

        stock_aer, aer_fwd_counts, aer_bwd_counts = time_stock(AerEstimator(), layer,
                                                               stock_samples)
    except ImportError:
        stock_aer = None

    # The table
    def ms(seconds: float, batch: int) -> str:
        value = 1e3 * seconds / batch
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"## Quantum layer forward + backward, ms per sample (best of {repeats})\n")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, 1-min load average {load:.1f} at the end; "
          f"{'--quick' if args.quick else 'full run'}.\n")
    header = "| path | " + " | ".join(f"batch {b}" for b in BATCHES) + " |"
    print(header)
    print("|---|" + "---:|" * len(BATCHES))
    note = f" ({stock_samples} sample{'s' if stock_samples > 1 else ''} timed)"
    print("| (a) stock StatevectorEstimator + default gradient" + note + " | "
          + " | ".join(ms(stock_sv, 1) for _ in BATCHES) + " |")
    if stock_aer is None:
        print("| (b) stock Aer EstimatorV2: qiskit-aer not installed | " + " | ".join(
            "-" for _ in BATCHES) + " |")
    else:
        print("| (b) stock Aer EstimatorV2 + default gradient" + note + " | "
              + " | ".join(ms(stock_aer, 1) for _ in BATCHES) + " |")
    print("| (c) ours: QuantumLayer on aer_ideal | "
          + " | ".join(ms(ours[b], b) for b in BATCHES) + " |")
    print("| (d) classical CNN training step | "
          + " | ".join(ms(classical[b], b) for b in BATCHES) + " |")
    if pl is None:
        print("| (e) PennyLane default.qubit + TorchLayer: not installed (pip install pennylane) | "
              + " | ".join("-" for _ in BATCHES) + " |")
    else:
        print("| (e) PennyLane default.qubit + TorchLayer (backprop) | "
              + " | ".join(ms(penny[b], b) for b in BATCHES) + " |")
    print("| (a)/(c) | " + " | ".join(
        f"{stock_sv / (ours[b] / b):.0f}x" for b in BATCHES) + " |")
    print("| ((c)+(d))/(d) | " + " | ".join(
        f"{(ours[b] + classical[b]) / classical[b]:.3f}" for b in BATCHES) + " |")
    if pl is not None:
        print("| (e)/(c) | " + " | ".join(f"{penny[b] / ours[b]:.1f}x" for b in BATCHES) + " |")

    print("\n## Per batch, ms\n")
    print(header)
    print("|---|" + "---:|" * len(BATCHES))
    print("| (c) forward | " + " | ".join(f"{1e3 * fwd[b]:.2f}" for b in BATCHES) + " |")
    print("| (c) backward | " + " | ".join(f"{1e3 * bwd[b]:.2f}" for b in BATCHES) + " |")
    print("| (d) classical step | " + " | ".join(f"{1e3 * classical[b]:.1f}" for b in BATCHES)
          + " |")

    print("\n## Estimator calls / PUBs per training step\n")
    print("| path | forward | backward |")
    print("|---|---|---|")
    for b in BATCHES:
        (fc, fp), (bc, bp) = counts[b]
        print(f"| (c) ours, batch {b} | {fc} call / {fp} PUB | {bc} call / {bp} PUB |")
    print(f"| (a) stock, {stock_samples} sample(s) | {sv_fwd_counts[0]} call / "
          f"{sv_fwd_counts[1]} PUBs | {sv_bwd_counts[0]} call / {sv_bwd_counts[1]} PUBs |")

    print("\n## Targets (batch 128)\n")
    overhead = ours[128] / classical[128]
    speedup = stock_sv / (ours[128] / 128)
    one_pub = all(c == ((1, 1), (1, 1)) for c in counts.values())
    checks = [
        (f"quantum layer adds {100 * overhead:.1f}% to the classical step (target <= 10%)",
         overhead <= 0.10),
        (f"{speedup:.0f}x faster than (a) (target >= 500x)", speedup >= 500),
        ("faster than (e)" + ("" if pl is None else f": {penny[128] / ours[128]:.1f}x"),
         None if pl is None else ours[128] < penny[128]),
        ("one estimator call and one PUB per forward and per backward", one_pub),
    ]
    for text, ok in checks:
        print(f"- {'PASS' if ok else 'n/a' if ok is None else 'FAIL'}: {text}")
    if penny_check is not None:
        print(f"- (e) computes the same outputs as (c): max |difference| {penny_check:.1e}")


if __name__ == "__main__":
    main()
