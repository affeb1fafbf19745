"""Error of the 8 HQCNN expectation values on FakeBrisbane noise: raw vs mitigated.

Random parameter sets of the HQCNN circuit (inputs and weights uniform in [-pi, pi]) are
transpiled once to FakeBrisbane, sampled with the device's Aer noise model (1024 shots per basis,
as the aer_noisy profile) on the batched engine (``--engine aer``: on AerSimulator), and compared
with exact statevector values. Prints a markdown table:
mean absolute error over all sets and observables, and wall time per batch (all sets in one
estimator call).

    python benchmarks/mitigation.py [--sets 50] [--shots 1024] [--engine batched|aer]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hqcnn_qiskit.model import hqcnn_circuit, readout_observables
from hqcnn_qiskit.noisy import AerRunner, DensityRunner, SamplingEstimator
from hqcnn_qiskit.primitives import BatchedStatevectorEstimator
from hqcnn_qiskit.profiles import MitigationSettings
from hqcnn_qiskit.transpile import fake_device, transpile_to_device

SETTINGS = {
    "raw": MitigationSettings(),
    "readout (confusion matrix)": MitigationSettings(readout="matrix"),
    "readout (TREX twirl, 4)": MitigationSettings(readout="twirl", twirl_samples=4),
    "readout + ZNE linear (1,3,5)": MitigationSettings(readout="matrix", zne=True),
    "readout + ZNE exponential (1,3)": MitigationSettings(
        readout="matrix", zne=True, zne_factors=(1, 3), zne_extrapolator="exponential"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=50)
    parser.add_argument("--shots", type=int, default=1024)
    parser.add_argument("--device", default="FakeBrisbane")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=("batched", "aer"), default="batched")
    args = parser.parse_args()

    device = fake_device(args.device)
    circuit, _, _, _ = hqcnn_circuit()
    t = transpile_to_device(circuit, readout_observables(), device.target)
    rows = np.random.default_rng(args.seed).uniform(-np.pi, np.pi,
                                                    (args.sets, circuit.num_parameters))
    exact = np.asarray(BatchedStatevectorEstimator().run(
        [(circuit, readout_observables(), rows[:, None, :])]).result()[0].data.evs)
    by_name = {p.name: i for i, p in enumerate(circuit.parameters)}
    isa_rows = rows[:, [by_name[p.name] for p in t.circuit.parameters]]
    info = t.describe()
    print(f"{args.device}, qubits {info['qubits']}, depth {info['depth']}, "
          f"{info['two_qubit_gates']} two-qubit gates, {args.sets} parameter sets, "
          f"{args.shots} shots per basis, {args.engine} engine\n")
    print("| method | MAE vs exact | error / raw | s per batch |")
    print("|---|---|---|---|")
    raw_error = None
    for name, mitigation in SETTINGS.items():
        runner = (DensityRunner(device.target, seed=args.seed) if args.engine == "batched"
                  else AerRunner(device.target, seed=args.seed))
        est = SamplingEstimator(runner, shots=args.shots,
                                mitigation=mitigation, target=device.target, seed=args.seed)
        # calibrate and compile once, outside the timed batch
        est.run([(t.circuit, t.observables, isa_rows[:1, None, :])]).result()
        start = time.perf_counter()
        evs = est.run([(t.circuit, t.observables, isa_rows[:, None, :])]).result()[0].data.evs
        seconds = time.perf_counter() - start
        error = float(np.mean(np.abs(evs - exact)))
        raw_error = raw_error or error
        print(f"| {name} | {error:.4f} | {error / raw_error:.2f} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
