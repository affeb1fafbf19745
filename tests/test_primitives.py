"""The batched primitives against Qiskit's reference primitives.

Reference values come from ``qiskit.primitives.StatevectorEstimator`` and
``qiskit_machine_learning.gradients.ParamShiftEstimatorGradient``; ours must match them to 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qiskit.circuit import Gate, Parameter, ParameterVector, QuantumCircuit
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit_machine_learning.connectors import TorchConnector
from qiskit_machine_learning.gradients import ParamShiftEstimatorGradient

from hqcnn_qiskit.model import hqcnn_circuit, readout_observables
from hqcnn_qiskit.primitives import (
    BatchedEstimatorQNN,
    BatchedParamShiftEstimatorGradient,
    BatchedStatevectorEstimator,
    CountingEstimator,
    UnsupportedGateError,
    simulate_statevectors,
)

TOL = 1e-10


def _evs(estimator, pubs, **kwargs):
    return [np.asarray(r.data.evs) for r in estimator.run(pubs, **kwargs).result()]


def _assert_same(ours, reference):
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=TOL, rtol=0)


# Circuits ------------------------------------------------------------------------------------
def _hqcnn():
    circuit, inputs, weights, _ = hqcnn_circuit()
    return circuit, inputs, weights


# name -> (qubits, angles, builder(circuit, qubits, angles))
GATES = {
    "ry": (1, 1, lambda c, q, a: c.ry(a[0], q[0])),
    "rz": (1, 1, lambda c, q, a: c.rz(a[0], q[0])),
    "rx": (1, 1, lambda c, q, a: c.rx(a[0], q[0])),
    "u3": (1, 3, lambda c, q, a: c.u(a[0], a[1], a[2], q[0])),
    "u2": (1, 2, lambda c, q, a: c.append(_u2(a[0], a[1]), [q[0]])),
    "p": (1, 1, lambda c, q, a: c.p(a[0], q[0])),
    "h": (1, 0, lambda c, q, a: c.h(q[0])),
    "sx": (1, 0, lambda c, q, a: c.sx(q[0])),
    "s": (1, 0, lambda c, q, a: c.s(q[0])),
    "t": (1, 0, lambda c, q, a: c.t(q[0])),
    "y": (1, 0, lambda c, q, a: c.y(q[0])),
    "cx": (2, 0, lambda c, q, a: c.cx(q[0], q[1])),
    "cz": (2, 0, lambda c, q, a: c.cz(q[0], q[1])),
    "swap": (2, 0, lambda c, q, a: c.swap(q[0], q[1])),
    "cp": (2, 1, lambda c, q, a: c.cp(a[0], q[0], q[1])),
    "crx": (2, 1, lambda c, q, a: c.crx(a[0], q[0], q[1])),
    "cry": (2, 1, lambda c, q, a: c.cry(a[0], q[0], q[1])),
    "crz": (2, 1, lambda c, q, a: c.crz(a[0], q[0], q[1])),
    "rzz": (2, 1, lambda c, q, a: c.rzz(a[0], q[0], q[1])),
    "rxx": (2, 1, lambda c, q, a: c.rxx(a[0], q[0], q[1])),
    "ryy": (2, 1, lambda c, q, a: c.ryy(a[0], q[0], q[1])),
    "rzx": (2, 1, lambda c, q, a: c.rzx(a[0], q[0], q[1])),
    "cu": (2, 4, lambda c, q, a: c.cu(a[0], a[1], a[2], a[3], q[0], q[1])),  # via definition
    "ccx": (3, 0, lambda c, q, a: c.ccx(q[0], q[1], q[2])),
}


def _u2(phi, lam):
    from qiskit.circuit.library import U2Gate

    return U2Gate(phi, lam)


def _random_circuit(seed: int, *, num_qubits: int = 3, depth: int = 14, gates=None):
    """A random circuit over ``gates`` whose angles are parameters, sums, multiples and
    constants, so affine parameter expressions and shared parameters are exercised too."""
    rng = np.random.default_rng(seed)
    names = list(gates or GATES)
    params = ParameterVector(f"p{seed}", 4)
    circuit = QuantumCircuit(num_qubits)
    for k in range(4):  # leave |0..0> so every gate acts on a generic state; use every parameter
        circuit.ry(params[k], k % num_qubits)
    for _ in range(depth):
        name = names[rng.integers(len(names))]
        width, num_angles, build = GATES[name]
        qubits = [int(q) for q in rng.choice(num_qubits, width, replace=False)]
        angles = []
        for _ in range(num_angles):
            a, b = (params[int(i)] for i in rng.choice(4, 2, replace=False))
            angles.append(
                [a, 2 * a, a + b, 0.5 * a - b + 0.3, float(rng.uniform(-3, 3))][rng.integers(5)]
            )
        build(circuit, qubits, angles)
    return circuit


def _random_observable(rng, num_qubits):
    labels = ["".join(rng.choice(list("IXYZ"), num_qubits)) for _ in range(3)]
    return SparsePauliOp(labels, rng.normal(size=3))


# Estimator: values ---------------------------------------------------------------------------
def test_statevectors_match_qiskit_for_every_supported_gate():
    rng = np.random.default_rng(1)
    for name in GATES:
        circuit = _random_circuit(hash(name) % 1000, depth=6, gates=[name, "h", "cx"])
        values = rng.uniform(-np.pi, np.pi, (3, circuit.num_parameters))
        ours = simulate_statevectors(circuit, values)
        for row, state in zip(values, ours):
            expected = Statevector(circuit.assign_parameters(row)).data
            # up to a global phase (expectation values ignore it)
            overlap = np.vdot(expected, state)
            assert abs(abs(overlap) - 1) < TOL, name
            np.testing.assert_allclose(state * overlap.conjugate(), expected, atol=1e-9)


def test_partial_product_prefix_and_gates_after_entanglers():
    """Qubits the leading single-qubit gates leave alone, and parameterised single-qubit gates
    after entangling gates, take the other code paths of the simulator."""
    a, b, c = Parameter("a"), Parameter("b"), Parameter("c")
    circuit = QuantumCircuit(4)
    circuit.ry(a, 1)
    circuit.rx(b, 3)
    circuit.u(a, b, c, 3)
    circuit.cx(1, 2)
    circuit.ry(c, 2)
    circuit.rx(a, 2)
    circuit.crx(b, 2, 0)
    circuit.rzz(c, 0, 3)
    circuit.u(c, a, b, 0)
    values = np.random.default_rng(5).uniform(-np.pi, np.pi, (4, 3))
    pubs = [(circuit, ["ZIXY", "IXZI", "YIIX", "ZZZZ"], values[:, None, :])]
    _assert_same(_evs(BatchedStatevectorEstimator(), pubs), _evs(StatevectorEstimator(), pubs))


@pytest.mark.parametrize("seed", range(6))
def test_random_circuits_match_statevector_estimator(seed):
    rng = np.random.default_rng(seed)
    circuit = _random_circuit(seed)
    observables = [_random_observable(rng, 3) for _ in range(4)]
    values = rng.uniform(-np.pi, np.pi, (5, 1, circuit.num_parameters))
    pubs = [(circuit, observables, values)]
    _assert_same(_evs(BatchedStatevectorEstimator(), pubs), _evs(StatevectorEstimator(), pubs))


def test_wide_circuit_without_fused_matrices_matches():
    """Above 6 qubits static gates are applied one by one instead of as one fused matrix."""
    rng = np.random.default_rng(13)
    circuit = _random_circuit(13, num_qubits=7, depth=30)
    observables = [_random_observable(rng, 7) for _ in range(3)]
    values = rng.uniform(-np.pi, np.pi, (3, 1, circuit.num_parameters))
    pubs = [(circuit, observables, values)]
    _assert_same(_evs(BatchedStatevectorEstimator(), pubs), _evs(StatevectorEstimator(), pubs))


def test_hqcnn_circuit_matches_statevector_estimator():
    circuit, _, _ = _hqcnn()
    values = np.random.default_rng(0).uniform(-np.pi, np.pi, (7, 1, circuit.num_parameters))
    pubs = [(circuit, readout_observables(), values)]
    ours = _evs(BatchedStatevectorEstimator(), pubs)
    assert ours[0].shape == (7, 8)
    _assert_same(ours, _evs(StatevectorEstimator(), pubs))


def _broadcast_pubs():
    rng = np.random.default_rng(3)
    circuit = _random_circuit(11)
    p = circuit.num_parameters
    obs = [_random_observable(rng, 3) for _ in range(4)]
    with_y = SparsePauliOp(["YYI", "XYZ", "IIY", "ZZZ"], [0.5, -1.25, 2.0, 0.75])
    fixed = QuantumCircuit(3)
    fixed.h(0)
    fixed.cx(0, 1)
    fixed.ry(0.3, 2)
    fixed.sx(2)
    return {
        "params (N,) vs observables (N,)": ((circuit, obs, rng.normal(size=(4, p))), (4,)),
        "params (N,1) vs observables (K,)": ((circuit, obs, rng.normal(size=(5, 1, p))), (5, 4)),
        "params (N,1) vs observables (1,K)": (
            (circuit, [obs], rng.normal(size=(5, 1, p))), (5, 4)),
        "params (1,N) vs observables (K,1)": (
            (circuit, [[o] for o in obs], rng.normal(size=(1, 3, p))), (4, 3)),
        "params (N,) vs scalar observable": ((circuit, with_y, rng.normal(size=(6, p))), (6,)),
        "scalar params vs observables (K,)": ((circuit, obs, rng.normal(size=p)), (4,)),
        "no parameters, observables (2,2)": ((fixed, [[with_y, "ZZI"], ["XXX", "IYI"]]), (2, 2)),
        "no parameters, scalar observable": ((fixed, "XXY"), ()),
    }


@pytest.mark.parametrize("case", list(_broadcast_pubs()))
def test_broadcasting_follows_pub_rules(case):
    pub, shape = _broadcast_pubs()[case]
    ours = _evs(BatchedStatevectorEstimator(), [pub])
    assert ours[0].shape == shape
    _assert_same(ours, _evs(StatevectorEstimator(), [pub]))


def test_parameter_values_given_by_name_in_another_order():
    circuit = _random_circuit(21)
    params = list(circuit.parameters)
    values = np.random.default_rng(21).normal(size=(3, 1, len(params)))
    by_name = {tuple(params[::-1]): values[..., ::-1]}  # same values, reversed parameter order
    ours = _evs(BatchedStatevectorEstimator(), [(circuit, ["XYZ", "ZZI"], by_name)])
    reference = _evs(StatevectorEstimator(), [(circuit, ["XYZ", "ZZI"], values)])
    assert ours[0].shape == (3, 2)
    _assert_same(ours, reference)


def test_concurrent_runs_on_one_circuit_do_not_mix():
    """Runs of one circuit share cached work arrays: they must not interleave."""
    from concurrent.futures import ThreadPoolExecutor

    circuit, _, _ = _hqcnn()
    rng = np.random.default_rng(22)
    batches = [rng.uniform(-np.pi, np.pi, (300, 1, circuit.num_parameters)) for _ in range(6)]
    estimator = BatchedStatevectorEstimator()
    expected = [_evs(estimator, [(circuit, readout_observables(), b)])[0] for b in batches]
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(
            lambda b: _evs(estimator, [(circuit, readout_observables(), b)])[0], batches
        ))
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_several_pubs_in_one_run_keep_their_order():
    pubs = list(case[0] for case in _broadcast_pubs().values())
    _assert_same(_evs(BatchedStatevectorEstimator(), pubs), _evs(StatevectorEstimator(), pubs))


# Estimator: precision and options ------------------------------------------------------------
def _noise_pub(rows=4000):
    circuit, _, _ = _hqcnn()
    values = np.tile(np.linspace(-1, 1, circuit.num_parameters), (rows, 1, 1))  # one row, repeated
    return circuit, readout_observables()[:2], values


@pytest.mark.parametrize("how", ["run", "pub", "default"])
def test_precision_adds_gaussian_noise_of_that_std(how):
    circuit, obs, values = _noise_pub()
    exact = _evs(BatchedStatevectorEstimator(), [(circuit, obs, values[:1])])[0][0]
    if how == "run":
        result = BatchedStatevectorEstimator(seed=5).run([(circuit, obs, values)], precision=0.05)
    elif how == "pub":
        result = BatchedStatevectorEstimator(seed=5).run([(circuit, obs, values, 0.05)])
    else:
        result = BatchedStatevectorEstimator(default_precision=0.05, seed=5).run(
            [(circuit, obs, values)]
        )
    data = result.result()[0].data
    noise = np.asarray(data.evs) - exact  # (4000, 2)
    # 8000 draws: the sample std is within 4% of 0.05 and the mean within 0.003 of 0
    # (each bound more than 5 standard errors wide)
    assert abs(noise.std() - 0.05) < 0.002
    assert abs(noise.mean()) < 0.003
    assert np.all(np.asarray(data.stds) == 0.05)
    assert result.result()[0].metadata["target_precision"] == 0.05


def test_precision_noise_is_seeded():
    circuit, obs, values = _noise_pub(10)
    first = _evs(BatchedStatevectorEstimator(seed=9), [(circuit, obs, values)], precision=0.1)
    again = _evs(BatchedStatevectorEstimator(seed=9), [(circuit, obs, values)], precision=0.1)
    other = _evs(BatchedStatevectorEstimator(seed=10), [(circuit, obs, values)], precision=0.1)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.allclose(first[0], other[0])


def test_zero_precision_is_exact_and_reports_zero_std():
    circuit, obs, values = _noise_pub(3)
    result = BatchedStatevectorEstimator(seed=1).run([(circuit, obs, values)]).result()[0]
    evs = np.asarray(result.data.evs)
    np.testing.assert_allclose(evs, np.broadcast_to(evs[0], evs.shape), atol=1e-14, rtol=0)
    assert np.all(np.asarray(result.data.stds) == 0)


def test_negative_precision_raises():
    circuit, obs, values = _noise_pub(2)
    with pytest.raises(ValueError, match="precision"):
        BatchedStatevectorEstimator().run([(circuit, obs, values)], precision=-0.1)
    with pytest.raises(ValueError, match="precision"):
        BatchedStatevectorEstimator(default_precision=-1.0)


def test_shots_are_refused_with_a_type_error():
    circuit, obs, values = _noise_pub(2)
    with pytest.raises(TypeError, match="shots.*precision"):
        BatchedStatevectorEstimator().run([(circuit, obs, values)], shots=100)


def test_unsupported_gate_error_names_the_gate():
    theta = Parameter("theta")
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.append(Gate("mystery_rot", 1, [theta]), [1])
    with pytest.raises(UnsupportedGateError, match="mystery_rot"):
        BatchedStatevectorEstimator().run([(circuit, "ZZ", [0.3])]).result()


def test_measurements_are_refused():
    circuit = QuantumCircuit(1, 1)
    circuit.h(0)
    circuit.measure(0, 0)
    with pytest.raises(UnsupportedGateError, match="measure"):
        BatchedStatevectorEstimator().run([(circuit, "Z")]).result()


def test_non_hermitian_observable_is_refused():
    circuit = QuantumCircuit(1)
    circuit.h(0)
    circuit.s(0)  # <Y> = 1, so 1j * Y has an imaginary expectation value
    with pytest.raises(ValueError, match="Hermitian"):
        BatchedStatevectorEstimator().run([(circuit, SparsePauliOp("Y", 1j))]).result()


# Gradient ------------------------------------------------------------------------------------
def _reference_gradients(circuits, observables, values, parameters=None):
    result = ParamShiftEstimatorGradient(StatevectorEstimator()).run(
        circuits, observables, values, parameters
    ).result()
    return [np.asarray(g) for g in result.gradients]


def _our_gradients(circuits, observables, values, parameters=None, estimator=None):
    counting = CountingEstimator(estimator or BatchedStatevectorEstimator())
    gradient = BatchedParamShiftEstimatorGradient(counting)
    result = gradient.run(circuits, observables, values, parameters).result()
    return [np.asarray(g) for g in result.gradients], counting


def test_gradient_matches_param_shift_on_hqcnn_circuit():
    circuit, _, _ = _hqcnn()
    rng = np.random.default_rng(4)
    obs = readout_observables()[1::2]  # X1, X3, Z1, Z3 (the stock gradient is slow)
    samples = rng.uniform(-np.pi, np.pi, (2, circuit.num_parameters))
    circuits = [circuit] * (2 * len(obs))
    observables = [o for o in obs for _ in range(2)]
    values = np.tile(samples, (len(obs), 1))
    ours, counting = _our_gradients(circuits, observables, values)
    _assert_same(ours, _reference_gradients(circuits, observables, values))
    assert (counting.calls, counting.pubs) == (1, 1)


def test_gradient_of_requested_parameters_only():
    circuit, _, weights = _hqcnn()
    rng = np.random.default_rng(6)
    obs = readout_observables()[::3]
    values = rng.uniform(-np.pi, np.pi, (len(obs), circuit.num_parameters))
    requested = [weights[3:9]] * len(obs)
    ours, _ = _our_gradients([circuit] * len(obs), obs, values, requested)
    assert ours[0].shape == (6,)
    _assert_same(ours, _reference_gradients([circuit] * len(obs), obs, values, requested))


@pytest.mark.parametrize("seed", range(4))
def test_gradient_matches_param_shift_on_random_circuits(seed):
    rng = np.random.default_rng(seed)
    first, second = _random_circuit(100 + seed, depth=10), _random_circuit(200 + seed, depth=10)
    obs = [_random_observable(rng, 3) for _ in range(2)]
    circuits = [first, second, first, second, first]
    observables = [obs[0], obs[0], obs[1], obs[1], obs[0]]
    values = rng.uniform(-np.pi, np.pi, (5, 4))
    ours, counting = _our_gradients(circuits, observables, values)
    _assert_same(ours, _reference_gradients(circuits, observables, values))
    assert (counting.calls, counting.pubs) == (1, 2)  # one run, one PUB per distinct circuit


def test_gradient_works_with_another_estimator_v2():
    circuit = _random_circuit(7, depth=10)
    rng = np.random.default_rng(7)
    obs = [_random_observable(rng, 3) for _ in range(3)]
    values = rng.uniform(-np.pi, np.pi, (3, 4))
    ours, counting = _our_gradients([circuit] * 3, obs, values, estimator=StatevectorEstimator())
    _assert_same(ours, _reference_gradients([circuit] * 3, obs, values))
    assert (counting.calls, counting.pubs) == (1, 1)


# QNN + TorchConnector ------------------------------------------------------------------------
def _connector(estimator=None, seed=0):
    circuit, inputs, weights = _hqcnn()
    counting = CountingEstimator(estimator or BatchedStatevectorEstimator())
    qnn = BatchedEstimatorQNN(
        circuit=circuit,
        estimator=counting,
        observables=readout_observables(),
        input_params=inputs,
        weight_params=weights,
        gradient=BatchedParamShiftEstimatorGradient(counting),
        input_gradients=True,
        default_precision=0.0,
    )
    initial = np.random.default_rng(seed).uniform(-np.pi, np.pi, len(weights))
    return TorchConnector(qnn, initial_weights=initial), qnn, counting


def test_qnn_forward_matches_stock_estimator_qnn():
    from qiskit_machine_learning.neural_networks import EstimatorQNN

    connector, qnn, _ = _connector()
    stock = EstimatorQNN(
        circuit=qnn.circuit, estimator=StatevectorEstimator(), observables=qnn.observables,
        input_params=qnn.input_params, weight_params=qnn.weight_params, default_precision=0.0,
    )
    x = np.random.default_rng(2).uniform(-np.pi, np.pi, (6, 4))
    w = connector.weight.detach().numpy()
    np.testing.assert_allclose(qnn.forward(x, w), stock.forward(x, w), atol=TOL, rtol=0)


@pytest.mark.parametrize("batch", [1, 16])
def test_one_call_and_one_pub_per_forward_and_per_backward(batch):
    connector, _, counting = _connector()
    x = torch.rand(batch, 4, dtype=torch.float64, requires_grad=True)
    out = connector(x)
    assert out.shape == (batch, 8)
    assert (counting.calls, counting.pubs, counting.rows) == (1, 1, batch)
    counting.reset()
    out.sum().backward()
    # one PUB holding every sample's +-shifted rows: 2 shifts x 26 gate angles per sample
    assert (counting.calls, counting.pubs, counting.rows) == (1, 1, batch * 2 * 26)
    assert x.grad is not None and connector.weight.grad is not None


def test_qnn_gradients_match_central_finite_differences():
    connector, qnn, _ = _connector(seed=3)
    rng = np.random.default_rng(8)
    x = rng.uniform(-np.pi, np.pi, (3, 4))
    w = connector.weight.detach().numpy().astype(float)  # float32 in the connector
    upstream = rng.normal(size=(3, 8))  # a random vector-Jacobian product

    xt = torch.tensor(x, requires_grad=True)
    (connector(xt) * torch.tensor(upstream)).sum().backward()
    input_grad, weight_grad = xt.grad.numpy(), connector.weight.grad.numpy()

    def loss(xv, wv):
        return float(np.sum(qnn.forward(xv, wv) * upstream))

    eps = 1e-6
    fd_input = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[idx] = eps
        fd_input[idx] = (loss(x + d, w) - loss(x - d, w)) / (2 * eps)
    fd_weight = np.zeros_like(w)
    for k in range(len(w)):
        d = np.zeros_like(w)
        d[k] = eps
        fd_weight[k] = (loss(x, w + d) - loss(x, w - d)) / (2 * eps)
    assert np.abs(input_grad).max() > 0.1 and np.abs(weight_grad).max() > 0.1
    # TorchConnector hands back float32 gradients; the difference quotient is good to ~1e-9
    np.testing.assert_allclose(input_grad, fd_input, atol=1e-6, rtol=0)
    np.testing.assert_allclose(weight_grad, fd_weight, atol=1e-6, rtol=0)


def test_identity_cache_reuses_rebuilds_and_forgets():
    import gc

    from hqcnn_qiskit.primitives.cache import IdentityCache

    class Thing:
        pass

    cache = IdentityCache()
    builds = []

    def build(tag):
        builds.append(tag)
        return tag

    a = Thing()
    assert cache.get(a, 1, lambda: build("a1")) == "a1"
    assert cache.get(a, 1, lambda: build("again")) == "a1" and builds == ["a1"]
    assert cache.get(a, 2, lambda: build("a2")) == "a2"  # a new version rebuilds
    del a
    gc.collect()
    assert len(cache) == 0  # dropped with its object
    b, c = Thing(), Thing()
    assert cache.get(c, 2, lambda: build("c")) == "c"
    # an entry under b's id that belongs to another object (as after id reuse) is not b's
    cache._entries[id(b)] = (cache._entries[id(c)][0], 2, "stale")
    assert cache.get(b, 2, lambda: build("b")) == "b"
    plain = [1, 2]  # lists cannot be weakly referenced: built every time, never stored
    cache.get(plain, 0, lambda: build("l"))
    cache.get(plain, 0, lambda: build("l"))
    assert builds.count("l") == 2 and len(cache) == 2
