"""Client-side mitigation: folding, extrapolation, readout inversion, and error reduction on
FakeBrisbane noise; IBM Runtime option mapping."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import Operator

from hqcnn_qiskit.errors import BackendError
from hqcnn_qiskit.mitigation import (
    ReadoutCalibration,
    extrapolate,
    fold_two_qubit_gates,
    runtime_options,
    twirl_masks,
)
from hqcnn_qiskit.model import hqcnn_circuit, readout_observables
from hqcnn_qiskit.noisy import AerRunner, SamplingEstimator
from hqcnn_qiskit.primitives import BatchedStatevectorEstimator
from hqcnn_qiskit.profiles import MitigationSettings, load_profile
from hqcnn_qiskit.transpile import fake_device, isa_violations, transpile_to_device


def test_folding_triples_ecr_keeps_isa_and_unitary():
    target = fake_device("FakeBrisbane").target
    qc = QuantumCircuit(2)
    qc.sx(0)
    qc.ecr(1, 0)
    qc.rz(0.3, 1)
    qc.ecr(1, 0)
    folded = fold_two_qubit_gates(qc, 3, target=target)
    assert folded.count_ops()["ecr"] == 6
    assert fold_two_qubit_gates(qc, 5, target=target).count_ops()["ecr"] == 10
    assert isa_violations(folded, target) == []
    assert Operator(folded).equiv(Operator(qc))
    with pytest.raises(ValueError):
        fold_two_qubit_gates(qc, 2)
    bad = QuantumCircuit(2)
    bad.ecr(0, 1)  # not a supported direction on qubits (0, 1) of FakeBrisbane
    if not target.instruction_supported("ecr", (0, 1)):
        with pytest.raises(BackendError, match="inverse"):
            fold_two_qubit_gates(bad, 3, target=target)


def test_extrapolators_recover_zero_noise_values():
    f = np.array([1.0, 3.0, 5.0])
    linear = 0.8 - 0.1 * f
    assert extrapolate(f, linear[:, None])[0] == pytest.approx(0.8)
    expo = -0.9 * np.exp(-0.2 * f)
    assert extrapolate(f, expo[:, None], "exponential")[0] == pytest.approx(-0.9)


def test_readout_calibration_inverts_a_known_confusion():
    rng = np.random.default_rng(0)
    p01, p10 = np.array([0.02, 0.05]), np.array([0.04, 0.08])
    true = rng.dirichlet(np.ones(4), size=3)
    conf = np.ones((1, 1))
    for a, b in zip(p01, p10):
        conf = np.kron(np.array([[1 - a, b], [a, 1 - b]]), conf)
    noisy = true @ conf.T
    cal = ReadoutCalibration.from_probabilities(conf[:, 0], conf[:, 3])
    assert np.allclose(cal.p01, p01) and np.allclose(cal.p10, p10)
    assert np.allclose(cal.apply(noisy), true)


def test_twirl_masks_flip_every_qubit_half_the_time():
    masks = twirl_masks(4, 8, np.random.default_rng(1))
    bits = (masks[:, None] >> np.arange(4)) & 1
    assert np.all(bits.sum(axis=0) == 4)


@pytest.fixture(scope="module")
def noisy_problem():
    device = fake_device("FakeBrisbane")
    circuit, inputs, weights, _ = hqcnn_circuit()
    t = transpile_to_device(circuit, readout_observables(), device.target)
    rows = np.random.default_rng(2024).uniform(-np.pi, np.pi, (6, circuit.num_parameters))
    exact = np.asarray(BatchedStatevectorEstimator().run(
        [(circuit, readout_observables(), rows[:, None, :])]).result()[0].data.evs)
    by_name = {p.name: i for i, p in enumerate(circuit.parameters)}
    isa_rows = rows[:, [by_name[p.name] for p in t.circuit.parameters]]
    return device.target, t, isa_rows, exact


def _error(noisy_problem, mitigation):
    target, t, rows, exact = noisy_problem
    est = SamplingEstimator(AerRunner(target, seed=9), shots=8192, mitigation=mitigation,
                            target=target, seed=9)
    evs = est.run([(t.circuit, t.observables, rows[:, None, :])]).result()[0].data.evs
    return float(np.mean(np.abs(evs - exact)))


def test_mitigation_lowers_the_error_on_a_fixed_seed(noisy_problem):
    raw = _error(noisy_problem, MitigationSettings())
    readout = _error(noisy_problem, MitigationSettings(readout="matrix", calibration_shots=8192))
    full = _error(noisy_problem, MitigationSettings(
        readout="matrix", zne=True, zne_factors=(1, 3), zne_extrapolator="exponential",
        calibration_shots=8192))
    twirl = _error(noisy_problem, MitigationSettings(readout="twirl", twirl_samples=2,
                                                     calibration_shots=8192))
    assert raw > 0.02  # the device noise is visible at all
    assert readout < raw and twirl < raw
    assert full < 0.5 * raw


def test_runtime_options_follow_the_profile():
    profile = load_profile("ibm_brisbane")
    opts = runtime_options(profile)
    assert opts["resilience"]["measure_mitigation"] is True
    assert opts["twirling"] == {"enable_gates": True, "enable_measure": True,
                                "num_randomizations": 8}
    assert opts["dynamical_decoupling"] == {"enable": True}
    assert opts["default_shots"] == 1024
    zne = dataclasses.replace(profile, mitigation=MitigationSettings(zne=True, zne_factors=(1, 3)))
    opts = runtime_options(zne)
    assert opts["resilience"]["zne_mitigation"] is True
    assert opts["resilience"]["zne"]["noise_factors"] == [1.0, 3.0]
    assert opts["resilience"]["measure_mitigation"] is False
