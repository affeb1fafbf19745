"""Device transpilation and the sampling estimator (Aer, FakeBrisbane / FakeFez snapshots)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qiskit.circuit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp

from hqcnn_qiskit.backends import get_backend
from hqcnn_qiskit.errors import BackendError
from hqcnn_qiskit.model import get_model, hqcnn_circuit, readout_observables
from hqcnn_qiskit.noisy import AerRunner, SamplingEstimator, noise_model_for
from hqcnn_qiskit.primitives import (
    BatchedParamShiftEstimatorGradient,
    BatchedStatevectorEstimator,
    CountingEstimator,
)
from hqcnn_qiskit.transpile import (
    active_qubits,
    choose_qubits,
    fake_device,
    isa_violations,
    transpile_to_device,
)


@pytest.fixture(scope="module")
def brisbane():
    return fake_device("FakeBrisbane")


@pytest.fixture(scope="module")
def logical():
    circuit, inputs, weights, _ = hqcnn_circuit()
    return circuit, inputs + weights


@pytest.fixture(scope="module")
def transpiled(brisbane, logical):
    return transpile_to_device(logical[0], readout_observables(), brisbane.target)


@pytest.mark.parametrize("device", ["FakeBrisbane", "FakeFez"])
def test_transpiled_circuit_is_isa_and_follows_the_coupling_map(device, logical):
    target = fake_device(device).target
    t = transpile_to_device(logical[0], readout_observables(), target)
    assert isa_violations(t.circuit, target) == []
    coupling = target.build_coupling_map()
    for inst in t.circuit.data:
        if inst.operation.num_qubits == 2:
            a, b = (t.circuit.find_bit(q).index for q in inst.qubits)
            assert coupling.graph.has_edge(a, b), (inst.operation.name, a, b)
    assert set(active_qubits(t.circuit)) <= set(t.physical_qubits)
    assert t.two_qubit_gates > 0 and t.depth > 0


def test_chosen_qubits_are_a_connected_low_error_path(brisbane):
    target = brisbane.target
    qubits = choose_qubits(target, 4)
    coupling = target.build_coupling_map()
    for a, b in zip(qubits, qubits[1:]):
        assert coupling.graph.has_edge(a, b) or coupling.graph.has_edge(b, a)
    readout = np.array([target["measure"][(q,)].error for q in range(target.num_qubits)])
    assert all(readout[q] < np.median(readout) for q in qubits)


def _exact(logical, observables, rows):
    circuit, params = logical
    est = BatchedStatevectorEstimator()
    vals = {p: rows[:, i] for i, p in enumerate(params)}
    pub = (circuit, observables, np.stack([vals[p] for p in circuit.parameters], -1)[:, None, :])
    return np.asarray(est.run([pub]).result()[0].data.evs)


def test_noiseless_sampling_matches_exact_with_layout_not_0_to_3(brisbane, logical, transpiled):
    assert sorted(transpiled.physical_qubits) != [0, 1, 2, 3]
    # general Paulis too: Y, two- and three-qubit terms, a coefficient and an identity
    extra = [SparsePauliOp(["YIII", "IXZI"], [0.5, -1.0]), SparsePauliOp(["ZZYI", "IIII"])]
    logical_obs = readout_observables() + extra
    mapped = transpiled.observables + [o.apply_layout(transpiled.circuit.layout) for o in extra]
    rows = np.random.default_rng(3).uniform(-np.pi, np.pi, (4, len(logical[1])))
    isa = transpiled.circuit
    shots = 4000
    est = SamplingEstimator(AerRunner(None, seed=11), shots=shots, seed=11)
    vals = {p: rows[:, i] for i, p in enumerate(logical[1])}
    table = np.stack([vals[p] for p in isa.parameters], -1)
    res = est.run([(isa, mapped, table[:, None, :])]).result()[0]
    exact = _exact(logical, logical_obs, rows)
    assert res.data.evs.shape == (4, len(logical_obs))
    bound = 5 * 1.5 / np.sqrt(shots) + 1e-9  # 5 sigma, coefficient sum <= 1.5
    assert np.max(np.abs(res.data.evs - exact)) < bound
    # a wrong layout (observables left on qubits 0..3) must not agree
    with pytest.raises(ValueError, match="does not use"):
        est.run([(isa, readout_observables(127), table[:1])]).result()


def test_broadcasting_shapes(transpiled):
    isa = transpiled.circuit
    est = SamplingEstimator(AerRunner(None, seed=1), shots=64, seed=1)
    values = np.zeros((3, 1, isa.num_parameters))
    obs = [transpiled.observables[0], transpiled.observables[5]]
    res = est.run([(isa, obs, values)]).result()[0]
    assert res.data.evs.shape == (3, 2)
    assert res.data.stds.shape == (3, 2)


def test_noise_model_covers_only_the_active_qubits(brisbane, transpiled):
    qubits = tuple(active_qubits(transpiled.circuit))
    nm = noise_model_for(brisbane.target, qubits)
    assert sorted(nm.noise_qubits) == list(range(len(qubits)))
    assert "ecr" in nm.noise_instructions and "measure" in nm.noise_instructions


def test_batched_gradient_on_the_noiseless_sampler_is_one_call_and_correct(logical, transpiled):
    isa = transpiled.circuit
    est = CountingEstimator(SamplingEstimator(AerRunner(None, seed=5), shots=8000, seed=5))
    grad = BatchedParamShiftEstimatorGradient(est)
    rows = np.random.default_rng(0).uniform(-np.pi, np.pi, (2, isa.num_parameters))
    obs = transpiled.observables[4]  # Z on logical qubit 0
    result = grad.run([isa, isa], [obs, obs], rows).result()
    assert est.calls == 1 and est.pubs == 1
    exact_grad = BatchedParamShiftEstimatorGradient(BatchedStatevectorEstimator())
    # the same gradient on the logical circuit, parameters matched by name
    circuit = logical[0]
    by_name = {p.name: i for i, p in enumerate(isa.parameters)}
    logical_rows = rows[:, [by_name[p.name] for p in circuit.parameters]]
    ref = exact_grad.run([circuit, circuit], [readout_observables()[4]] * 2, logical_rows).result()
    for g, r in zip(result.gradients, ref.gradients):
        order = [by_name[p.name] for p in circuit.parameters]
        assert np.allclose(np.asarray(g)[order], r, atol=0.15)


def test_model_runs_on_aer_noisy_with_progress_stats():
    model = get_model("hqcnn", backend="aer_noisy", generator=torch.Generator().manual_seed(0))
    backend = model.quantum.backend
    out = model(torch.rand(2, 1, 28, 28) * 2 - 1)
    out.sum().backward()
    assert torch.isfinite(model.quantum.connector.weight.grad).all()
    assert model.quantum.connector.weight.grad.abs().sum() > 0
    stats = backend.last_batch_stats
    assert stats["calls"] == 2 and stats["shots"] > 0 and stats["seconds"] > 0
    assert backend.last_batch_stats["calls"] == 0  # reading starts a new tally
    info = backend.describe()
    assert len(info["qubits"]) == 4 and info["two_qubit_gates"] > 0


def test_qpy_round_trip_pins_the_circuit(tmp_path):
    first = get_backend("aer_noisy")
    circuit, inputs, weights, _ = hqcnn_circuit()
    first.build_qnn(circuit=circuit, input_params=inputs, weight_params=weights,
                    observables=readout_observables())
    first.save_qpy(tmp_path / "isa.qpy")
    second = get_backend("aer_noisy")
    second.load_qpy(tmp_path / "isa.qpy")
    circuit2, inputs2, weights2, _ = hqcnn_circuit()
    second.build_qnn(circuit=circuit2, input_params=inputs2, weight_params=weights2,
                     observables=readout_observables())
    assert second.describe()["qubits"] == first.describe()["qubits"]
    assert second.isa_circuit.count_ops() == first.isa_circuit.count_ops()
    assert set(second.isa_circuit.parameters) == set(circuit2.parameters)
    assert [str(o) for o in second.transpiled.observables] == [
        str(o) for o in first.transpiled.observables
    ]


def test_unknown_fake_device_lists_valid_names():
    with pytest.raises(BackendError, match="FakeBrisbane.*FakeFez"):
        fake_device("FakeNowhere")


def test_runtime_local_mode_agrees_with_aer_noisy(transpiled):
    """fake_brisbane runs the runtime's sampler in local testing mode on the full device."""
    local = get_backend("fake_brisbane")
    circuit, _, _, _ = hqcnn_circuit()
    isa, obs = local.prepare(circuit, readout_observables())
    rows = np.random.default_rng(4).uniform(-1, 1, (2, 1, isa.num_parameters))
    got = local.estimator().run([(isa, obs, rows)]).result()[0].data.evs
    aer = get_backend("aer_noisy")
    aer.prepare(circuit, readout_observables())
    ref = aer.estimator().run([(isa, obs, rows)]).result()[0].data.evs
    assert got.shape == (2, 8)
    assert np.max(np.abs(got - ref)) < 0.2


@pytest.mark.parametrize("labels", [
    ["XXII", "ZZII", "IXYI", "ZIIZ"],
    # qiskit's group_commuting colours these into 3 groups; the engine measures 4 bases
    ["IZYY", "YZZX", "IZYX", "ZIYI", "IIYI", "XZIY"],
])
def test_job_estimate_counts_the_bases_the_engine_measures(brisbane, transpiled, labels):
    from hqcnn_qiskit.jobs import estimate_usage
    from hqcnn_qiskit.measurement import measurement_bases
    from hqcnn_qiskit.profiles import MitigationSettings

    isa = transpiled.circuit
    mapped = [SparsePauliOp(label).apply_layout(isa.layout) for label in labels]
    est = SamplingEstimator(AerRunner(None, seed=2), shots=16, seed=2)
    measured = est.run([(isa, mapped, np.zeros((1, 1, isa.num_parameters)))]).result()[0]
    engine = measured.metadata["bases"]  # one letter per active qubit, in device-qubit order
    ours = ["".join(b.get(q, "Z") for q in active_qubits(isa)) for b in measurement_bases(mapped)]
    assert ours == engine
    usage = estimate_usage(isa, brisbane.target, rows=3, observables=mapped, shots=16,
                           mitigation=MitigationSettings())
    assert usage["bases"] == len(engine) and usage["executions"] == 3 * len(engine) * 16


def test_hqcnn_readout_is_two_bases_all_x_and_all_z(transpiled):
    from hqcnn_qiskit.measurement import measurement_bases

    assert measurement_bases(readout_observables()) == [{q: "X" for q in range(4)},
                                                        {q: "Z" for q in range(4)}]
    device = measurement_bases(transpiled.observables)
    assert [set(b.values()) for b in device] == [{"X"}, {"Z"}]
    assert sorted(device[0]) == sorted(device[1]) == sorted(transpiled.physical_qubits)
    from hqcnn_qiskit.jobs import _measurement_bases

    assert _measurement_bases("XZ") == 1  # one label is one observable, not two letters


def test_runtime_sampler_draws_fresh_shots_on_every_call():
    """Local testing mode: each call (each evaluation batch) gets new shots from the profile's
    seed, so images in different batches do not share their shot noise, and a rerun with the
    same seed gives the same numbers."""
    from qiskit import transpile
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    from hqcnn_qiskit.noisy import SamplerRunner, _Job, runtime_sampler

    device = FakeManilaV2()
    circuit = QuantumCircuit(1, 1)
    circuit.h(0)
    circuit.measure(0, 0)
    job = _Job(circuit=transpile(circuit, device, seed_transpiler=0), rows=np.zeros((1, 0)),
               shots=200)

    def runner():
        return SamplerRunner(runtime_sampler(device, shots=200), seed=3)

    first = runner()
    a, b = first.run((0,), [job])[0], first.run((0,), [job])[0]
    assert not np.array_equal(a, b)  # a new draw on the second call
    assert np.array_equal(runner().run((0,), [job])[0], a)  # reproducible from the seed


def test_local_mode_runs_on_the_client_side_sampler_once_samplerv2_is_gone(monkeypatch):
    """The runtime's client-side sampler, which replaces the deprecated SamplerV2, refuses a
    call whose PUBs differ in shots; readout calibration (4096 shots on fake_brisbane) and data
    circuits (1024) do, so the runner sends one call per shot count and keeps the jobs' order."""
    import qiskit_ibm_runtime
    from qiskit import transpile
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    from hqcnn_qiskit.noisy import SamplerRunner, _Job, runtime_sampler

    device = FakeManilaV2()
    assert type(runtime_sampler(device, shots=100)).__name__ == "SamplerV2"  # while it exists
    monkeypatch.delattr(qiskit_ibm_runtime, "SamplerV2")
    sampler = runtime_sampler(device, shots=100)
    assert type(sampler).__module__.startswith("qiskit_ibm_runtime.executor_sampler")
    zero, one = QuantumCircuit(1, 1), QuantumCircuit(1, 1)
    one.x(0)
    for circuit in (zero, one):
        circuit.measure(0, 0)
    jobs = [_Job(circuit=transpile(c, device, seed_transpiler=0), rows=np.zeros((1, 0)),
                 shots=shots) for c, shots in ((zero, 64), (one, 256), (zero, 256))]
    calls = []
    run = sampler.run
    sampler.run = lambda pubs, **kw: calls.append([p[2] for p in pubs]) or run(pubs, **kw)
    freqs = SamplerRunner(sampler, seed=1).run((0,), jobs)
    assert sorted(calls) == [[64], [256, 256]]
    # order kept: |1> measured mostly 1, |0> mostly 0, frequencies in steps of 1/shots
    assert freqs[0][0, 0] > 0.8 and freqs[1][0, 1] > 0.8 and freqs[2][0, 0] > 0.8
    assert np.allclose(freqs[0] * 64, np.round(freqs[0] * 64))
    assert np.allclose(freqs[1] * 256, np.round(freqs[1] * 256))


@pytest.mark.parametrize("backend", ["aer_noisy_mitigated", "fake_brisbane"])
def test_a_noisy_model_copies_and_pickles_with_its_random_state(backend):
    """``copy.deepcopy(model)`` (e.g. to keep the best model in one's own loop) used to fail on
    a thread lock; a copy must also continue the same shot streams and calibrations."""
    import copy
    import pickle

    net = get_model(backend=backend, generator=torch.Generator().manual_seed(0)).eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        net(x)  # the streams move and the readout calibration is drawn
    clones = [copy.deepcopy(net), pickle.loads(pickle.dumps(net))]
    with torch.no_grad():
        first = net(x)
        assert all(torch.equal(clone(x), first) for clone in clones)
        assert not torch.equal(net(x), first)  # the shots are fresh on every call
    isa = net.quantum.backend.isa_circuit
    assert all(clone.quantum.backend.isa_circuit == isa for clone in clones)
