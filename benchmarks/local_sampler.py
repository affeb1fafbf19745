"""Local testing mode (fake_brisbane): qiskit-ibm-runtime's legacy SamplerV2 against its
client-side executor Sampler, each under the package's sampling estimator.

    python benchmarks/local_sampler.py [--rows 8] [--repeats 3]

Prints the median seconds of one estimator call on R parameter rows of the HQCNN readout
(X and Z bases, the profile's twirled readout calibration included), the two samplers taking
turns so that the shared machine's load hits both alike, and the largest difference of the
expectation values (two independent shot streams: shot noise, not a bias).
Why it matters: ``noisy.runtime_sampler`` keeps the legacy sampler while the runtime has it.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from qiskit_ibm_runtime.executor_sampler import Sampler

    from hqcnn_qiskit.backends import get_backend
    from hqcnn_qiskit.model import hqcnn_circuit, readout_observables
    from hqcnn_qiskit.noisy import SamplerRunner, SamplingEstimator
    from hqcnn_qiskit.profiles import shots_per_circuit

    samplers = {"executor_sampler.Sampler (client-side)": Sampler}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from qiskit_ibm_runtime import SamplerV2
        samplers = {"SamplerV2 (legacy)": SamplerV2, **samplers}
    except ImportError:
        print("qiskit-ibm-runtime has no SamplerV2 any more: only the client-side sampler runs")

    backend = get_backend("fake_brisbane")
    circuit, *_ = hqcnn_circuit()
    isa, observables = backend.prepare(circuit, readout_observables())
    profile, shots = backend.profile, shots_per_circuit(backend.profile)
    rows = np.random.default_rng(0).uniform(-1, 1, (args.rows, 1, isa.num_parameters))
    seconds = {name: [] for name in samplers}
    values = {}
    for _ in range(args.repeats):
        for name, cls in samplers.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                sampler = cls(mode=backend.device, options={"default_shots": shots})
            estimator = SamplingEstimator(SamplerRunner(sampler, seed=profile.seed), shots=shots,
                                          mitigation=profile.mitigation, target=backend.target,
                                          seed=profile.seed)
            started = time.perf_counter()
            values[name] = estimator.run([(isa, observables, rows)]).result()[0].data.evs
            seconds[name].append(time.perf_counter() - started)
    first = statistics.median(next(iter(seconds.values())))
    print(f"fake_brisbane, {args.rows} rows, {shots} shots per basis, readout "
          f"{profile.mitigation.readout} ({profile.mitigation.calibration_shots} calibration "
          "shots)\n")
    print(f"| sampler | median s ({args.repeats} calls) | ratio to the first row |")
    print("|---|---|---|")
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"| {name} | {median:.2f} | {median / first:.2f}x |")
    if len(values) == 2:
        a, b = values.values()
        print(f"\nlargest |difference| of the {a.size} expectation values: "
              f"{np.abs(a - b).max():.3f} (independent shots)")


if __name__ == "__main__":
    main()
