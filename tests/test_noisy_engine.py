"""The batched density-matrix engine (hqcnn_qiskit.density, DensityRunner) against Aer.

The engine must give the outcome probabilities that ``AerSimulator(method="density_matrix")``
gives with the same noise model (to 1e-8 in double precision), sample like a sampler, and plug
into the sampling estimator unchanged (bases, ZNE folds, readout mitigation, gradients).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from qiskit.circuit import ClassicalRegister, Parameter, QuantumCircuit
from qiskit.quantum_info import Operator, Statevector, SuperOp, random_unitary

from hqcnn_qiskit.backends import get_backend
from hqcnn_qiskit.density import (
    NoiseTables,
    UnsupportedOperationError,
    compile_density_program,
    pauli_transfer_matrix,
    sample_counts,
)
from hqcnn_qiskit.errors import BackendError
from hqcnn_qiskit.model import hqcnn_circuit, readout_observables
from hqcnn_qiskit.noisy import AerRunner, DensityRunner, SamplingEstimator, _Job, noise_model_for
from hqcnn_qiskit.primitives import (
    BatchedParamShiftEstimatorGradient,
    BatchedStatevectorEstimator,
    CountingEstimator,
)
from hqcnn_qiskit.profiles import load_profile
from hqcnn_qiskit.transpile import fake_device, transpile_to_device


@pytest.fixture(scope="module", params=["FakeBrisbane", "FakeFez"])
def device_case(request):
    """The HQCNN ISA circuit on a snapshot, its estimator plan and the noise of its qubits."""
    device = fake_device(request.param)
    circuit, _, _, _ = hqcnn_circuit()
    t = transpile_to_device(circuit, readout_observables(), device.target)
    runner = DensityRunner(device.target, precision="double")
    est = SamplingEstimator(runner, shots=1024, seed=0)
    plan = est._plan(t.circuit)  # noqa: SLF001 - the compacted circuit the runner sees
    rows = np.random.default_rng(1).uniform(-np.pi, np.pi, (3, t.circuit.num_parameters))
    return device, t, est, plan, rows


def _aer_probabilities(circuit: QuantumCircuit, rows: np.ndarray, noise_model) -> np.ndarray:
    """Exact probabilities of ``circuit`` (no measurements) on Aer, one row per parameter row."""
    from qiskit_aer import AerSimulator

    sim = AerSimulator(method="density_matrix", noise_model=noise_model, precision="double")
    bound = []
    for row in rows:
        c = circuit.assign_parameters(dict(zip(circuit.parameters, row)))
        c.save_probabilities()
        bound.append(c)
    result = sim.run(bound).result()
    return np.array([result.data(i)["probabilities"] for i in range(len(bound))])


def _without_measurements(circuit: QuantumCircuit) -> QuantumCircuit:
    out = QuantumCircuit(circuit.num_qubits)
    for inst in circuit.data:
        if inst.operation.name != "measure":
            out.append(inst.operation, [circuit.find_bit(q).index for q in inst.qubits])
    return out


@pytest.mark.parametrize("basis, factor, mask", [("ZZZZ", 1, 0), ("XXXX", 1, 0),
                                                 ("ZZZZ", 3, 0b0101)])
def test_probabilities_equal_aer_density_matrix(device_case, basis, factor, mask):
    device, _, est, plan, rows = device_case
    runner = est.runner
    circuit = est._measured(plan, basis, factor, mask)  # noqa: SLF001
    ours = runner.probabilities(plan.qubits, [_Job(circuit, rows, 1)], readout=False)[0]
    ref = _aer_probabilities(_without_measurements(circuit), rows,
                             noise_model_for(device.target, plan.qubits))
    assert ours.shape == (len(rows), 16)
    assert np.max(np.abs(ours - ref)) < 1e-8


def test_readout_error_matches_aer_sampling(device_case):
    """Readout confusion, bit order and clbit mapping: Aer's own sampling of the measured
    circuit, with many shots, agrees within 5 sigma."""
    from qiskit_aer import AerSimulator

    device, _, est, plan, rows = device_case
    circuit = est._measured(plan, "ZZZZ", 1, 0b0011)  # noqa: SLF001
    ours = est.runner.probabilities(plan.qubits, [_Job(circuit, rows[:1], 1)])[0][0]
    shots = 400_000
    sim = AerSimulator(method="density_matrix",
                       noise_model=noise_model_for(device.target, plan.qubits))
    bound = circuit.assign_parameters(dict(zip(circuit.parameters, rows[0])))
    counts = sim.run(bound, shots=shots, seed_simulator=3).result().get_counts()
    freq = np.zeros(16)
    for key, n in counts.items():
        freq[int(key, 2)] = n / shots
    sigma = np.sqrt(ours * (1 - ours) / shots) + 1e-6
    assert np.all(np.abs(freq - ours) < 5 * sigma)
    without = est.runner.probabilities(plan.qubits, [_Job(circuit, rows[:1], 1)],
                                       readout=False)[0][0]
    assert np.max(np.abs(without - ours)) > 1e-3  # readout error is really applied


def test_noiseless_engine_equals_the_statevector(device_case):
    _, _, est, plan, rows = device_case
    runner = DensityRunner(None, precision="double")
    circuit = est._measured(plan, "ZZZZ", 1, 0)  # noqa: SLF001
    ours = runner.probabilities(plan.qubits, [_Job(circuit, rows, 1)])[0]
    bare = _without_measurements(circuit)
    ref = [Statevector(bare.assign_parameters(dict(zip(bare.parameters, r)))).probabilities()
           for r in rows]
    assert np.max(np.abs(ours - ref)) < 1e-10


def test_single_precision_is_close_to_double(device_case):
    device, _, est, plan, rows = device_case
    circuit = est._measured(plan, "XXXX", 1, 0)  # noqa: SLF001
    single = DensityRunner(device.target, precision="single")
    a = single.probabilities(plan.qubits, [_Job(circuit, rows, 1)])[0]
    b = est.runner.probabilities(plan.qubits, [_Job(circuit, rows, 1)])[0]
    assert np.max(np.abs(a - b)) < 1e-5


def test_bases_share_one_simulation_of_the_circuit(device_case):
    _, _, est, plan, rows = device_case
    z = est.runner.program(plan.qubits, est._measured(plan, "ZZZZ", 1, 0))  # noqa: SLF001
    x = est.runner.program(plan.qubits, est._measured(plan, "XXXX", 1, 1))  # noqa: SLF001
    folded = est.runner.program(plan.qubits, est._measured(plan, "ZZZZ", 3, 0))  # noqa: SLF001
    assert z.head is x.head and folded.head is not z.head


def test_estimator_on_both_engines_agrees_within_shot_error():
    circuit, _, _, _ = hqcnn_circuit()
    values = {}
    for engine in ("batched", "aer"):
        profile = dataclasses.replace(load_profile("aer_noisy"), engine=engine, shots=8192)
        backend = get_backend(profile)
        isa, obs = backend.prepare(circuit, readout_observables())
        rows = np.random.default_rng(2).uniform(-1, 1, (3, 1, isa.num_parameters))
        values[engine] = backend.estimator().run([(isa, obs, rows)]).result()[0].data
    a, b = values["batched"], values["aer"]
    assert a.evs.shape == b.evs.shape == (3, 8)
    bound = 5 * np.sqrt(a.stds**2 + b.stds**2) + 1e-3
    assert np.all(np.abs(a.evs - b.evs) < bound)


def test_zne_and_readout_mitigation_run_on_the_batched_engine():
    backend = get_backend("aer_noisy_mitigated")
    assert isinstance(backend.estimator().runner, DensityRunner)
    circuit, _, _, _ = hqcnn_circuit()
    isa, obs = backend.prepare(circuit, readout_observables())
    rows = np.random.default_rng(0).uniform(-1, 1, (2, 1, isa.num_parameters))
    evs = backend.estimator().run([(isa, obs, rows)]).result()[0].data.evs
    assert evs.shape == (2, 8) and np.all(np.abs(evs) <= 1)


def test_gradient_is_one_estimator_call_and_correct_on_the_batched_engine():
    device = fake_device("FakeBrisbane")
    circuit, _, _, _ = hqcnn_circuit()
    t = transpile_to_device(circuit, readout_observables(), device.target)
    isa = t.circuit
    est = CountingEstimator(SamplingEstimator(DensityRunner(None, seed=5), shots=200_000, seed=5))
    grad = BatchedParamShiftEstimatorGradient(est)
    rows = np.random.default_rng(0).uniform(-np.pi, np.pi, (2, isa.num_parameters))
    obs = t.observables[4]
    result = grad.run([isa, isa], [obs, obs], rows).result()
    assert est.calls == 1 and est.pubs == 1
    by_name = {p.name: i for i, p in enumerate(isa.parameters)}
    order = [by_name[p.name] for p in circuit.parameters]
    ref = BatchedParamShiftEstimatorGradient(BatchedStatevectorEstimator()).run(
        [circuit, circuit], [readout_observables()[4]] * 2, rows[:, order]).result()
    for g, r in zip(result.gradients, ref.gradients):
        assert np.allclose(np.asarray(g)[order], r, atol=0.05)


def test_shipped_noisy_profiles_default_to_the_batched_engine():
    for name in ("aer_noisy", "aer_noisy_mitigated"):
        backend = get_backend(name)
        assert backend.engine == "batched"
        assert isinstance(backend.estimator().runner, DensityRunner)
    reference = get_backend(dataclasses.replace(load_profile("aer_noisy"), engine="aer"))
    assert isinstance(reference.estimator().runner, AerRunner)


@pytest.mark.parametrize("body", [
    'kind = "aer"\ndevice = "FakeBrisbane"\nengine = "gpu"\n',
    'kind = "aer"\ndevice = "FakeBrisbane"\nengine = 1\n',
    'kind = "exact"\nengine = "batched"\n',
])
def test_engine_field_errors_are_one_line_naming_file_and_field(tmp_path, body):
    path = tmp_path / "mine.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(BackendError) as info:
        load_profile(path)
    message = str(info.value)
    assert str(path) in message and "'engine'" in message and "\n" not in message


def test_parameterised_gates_other_than_rz_are_refused():
    theta = Parameter("t")
    qc = QuantumCircuit(1, 1)
    qc.rx(theta, 0)
    qc.measure(0, 0)
    with pytest.raises(UnsupportedOperationError, match="parameterised 'rx'.*engine = \"aer\""):
        compile_density_program(qc, NoiseTables(None))


def test_parameterised_rz_and_p_rotate_like_the_statevector():
    a, b = Parameter("a"), Parameter("b")
    qc = QuantumCircuit(2)
    qc.sx(0)
    qc.sx(1)
    qc.rz(2 * a + 0.3, 0)
    qc.p(b, 1)
    qc.cx(0, 1)
    qc.sx(0)
    qc.rz(-a, 1)
    qc.sx(1)
    measured = qc.copy()
    measured.add_register(ClassicalRegister(2))
    measured.measure([0, 1], [1, 0])  # crossed clbits
    prog = compile_density_program(measured, NoiseTables(None))
    values = np.random.default_rng(0).uniform(-np.pi, np.pi, (5, 2))
    ours = (prog.readout_map @ prog.head.run(values)).T
    for row, p in zip(values, ours):
        ref = Statevector(qc.assign_parameters(dict(zip(qc.parameters, row)))).probabilities()
        assert np.allclose(p, ref.reshape(2, 2).T.ravel(), atol=1e-12)


def test_ptm_of_a_unitary_and_of_its_superoperator_agree():
    u = random_unitary(4, seed=3)
    via_unitary = pauli_transfer_matrix(u)
    via_channel = pauli_transfer_matrix(SuperOp(Operator(u)))
    assert np.allclose(via_unitary, via_channel, atol=1e-12)
    assert np.allclose(via_unitary @ via_unitary.T, np.eye(16), atol=1e-12)  # orthogonal
    assert np.allclose(via_unitary[0], np.eye(16)[0])  # trace preserving


def test_sample_counts_are_seeded_multinomial():
    p = np.array([[0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    a = sample_counts(p, 1000, np.random.default_rng(0))
    b = sample_counts(p, 1000, np.random.default_rng(0))
    assert np.array_equal(a, b) and np.all(a.sum(axis=1) == 1000)
    assert a[0, 2] == a[0, 3] == 0
