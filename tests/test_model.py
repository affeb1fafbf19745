"""The HQCNN circuit's structure: gates, wiring, parameters, observables and outputs."""

from __future__ import annotations

import math
import numpy as np
import pytest
from qiskit.quantum_info import SparsePauliOp, Statevector

from hqcnn_qiskit.model import QuantumLayer, hqcnn_circuit, readout_observables


def _gates(circuit, name):
    """(qubit indices, params) of every ``name`` gate, in circuit order."""
    return [
        (tuple(circuit.find_bit(q).index for q in inst.qubits), list(inst.operation.params))
        for inst in circuit.data
        if inst.operation.name == name
    ]


@pytest.fixture(scope="module")
def built():
    return hqcnn_circuit()


def test_gate_counts(built):
    circuit, _, _, _ = built
    assert circuit.num_qubits == 4
    assert dict(circuit.count_ops()) == {
        "ry": 4, "u": 4, "cx": 4, "ccx": 4, "h": 4, "cp": 6, "rz": 4,
    }


def test_feature_map_is_one_ry_per_qubit_on_the_inputs(built):
    circuit, inputs, _, _ = built
    ry = _gates(circuit, "ry")
    assert [q for q, _ in ry] == [(0,), (1,), (2,), (3,)]
    assert [p[0] for _, p in ry] == inputs


def test_u3_on_every_qubit_with_three_weights_each(built):
    circuit, _, weights, _ = built
    u = _gates(circuit, "u")
    assert sorted(q for q, _ in u) == [(0,), (1,), (2,), (3,)]
    angles = [a for _, params in u for a in params]
    assert len(set(angles)) == 12 and set(angles) <= set(weights)


def test_cnot_ring_and_toffolis(built):
    circuit, _, _, _ = built
    assert sorted(q for q, _ in _gates(circuit, "cx")) == [(0, 1), (1, 2), (2, 3), (3, 0)]
    assert sorted(q for q, _ in _gates(circuit, "ccx")) == [
        (0, 1, 2), (1, 2, 3), (2, 3, 0), (3, 0, 1)
    ]


def test_qft_ladder_with_phases_starting_at_pi_over_2_to_the_distance(built):
    circuit, _, weights, init = built
    assert sorted(q for q, _ in _gates(circuit, "h")) == [(0,), (1,), (2,), (3,)]
    cp = _gates(circuit, "cp")
    assert sorted(tuple(sorted(q)) for q, _ in cp) == [
        (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)
    ]
    for (k, j), (param,) in cp:
        assert param in weights
        assert init[param] == pytest.approx(math.pi / 2 ** abs(k - j))
    rz = _gates(circuit, "rz")
    assert sorted(q for q, _ in rz) == [(0,), (1,), (2,), (3,)]
    assert all(init[p] == 0.0 for _, (p,) in rz)


def test_block_order(built):
    """Encoding, then U3 + ring, then Toffolis, then the QFT ladder, then RZ, per qubit."""
    circuit, _, _, _ = built
    for qubit in range(4):
        names = [
            inst.operation.name
            for inst in circuit.data
            if qubit in (circuit.find_bit(q).index for q in inst.qubits)
        ]
        first = {n: names.index(n) for n in set(names)}
        last = {n: len(names) - 1 - names[::-1].index(n) for n in set(names)}
        assert first["ry"] < first["u"] < first["cx"]
        assert last["cx"] < first["ccx"] and last["ccx"] < first["h"]
        assert last["cp"] < first["rz"] and names[-1] == "rz"


def test_layer_initial_weights_use_the_fixed_starts():
    layer = QuantumLayer()
    _, _, _, init = hqcnn_circuit()
    init = {p.name: v for p, v in init.items()}  # a fresh circuit has fresh parameter objects
    values = layer.connector.weight.detach().numpy()
    fixed = 0
    for param, value in zip(layer.weight_params, values):
        if param.name in init:
            assert value == pytest.approx(init[param.name], abs=1e-6)
            fixed += 1
        else:
            assert param.name.startswith("u3") and -math.pi <= value <= math.pi
    assert fixed == 10  # 6 CP + 4 RZ


def test_readout_is_x_then_z_on_every_qubit():
    obs = readout_observables()
    assert len(obs) == 8
    labels = [op.paulis[0].to_label() for op in obs]
    assert labels == ["IIIX", "IIXI", "IXII", "XIII", "IIIZ", "IIZI", "IZII", "ZIII"]
    assert all(len(op) == 1 and op.coeffs[0] == 1 for op in obs)


@pytest.mark.parametrize(
    "layers, attention, num_weights",
    [(1, True, 22), (1, False, 12), (2, True, 34), (2, False, 24)],
)
def test_parameter_counts(layers, attention, num_weights):
    circuit, inputs, weights, _ = hqcnn_circuit(layers=layers, attention=attention)
    assert len(inputs) == 4
    assert len(weights) == num_weights
    assert circuit.num_parameters == 4 + num_weights
    ops = circuit.count_ops()
    assert ops["u"] == 4 * layers and ops["cx"] == 4 * layers
    assert ("ccx" in ops) == ("cp" in ops) == ("rz" in ops) == attention


def test_qnn_outputs_equal_direct_statevector_expectations():
    layer = QuantumLayer()
    qnn = layer.qnn
    rng = np.random.default_rng(0)
    x = rng.uniform(-math.pi, math.pi, (3, 4))
    w = rng.uniform(-math.pi, math.pi, 22)
    out = qnn.forward(x, w)
    assert out.shape == (3, 8)
    for row, values in zip(x, out):
        bound = layer.circuit.assign_parameters(
            dict(zip(layer.input_params, row)) | dict(zip(layer.weight_params, w))
        )
        state = Statevector(bound)
        expected = [
            state.expectation_value(SparsePauliOp.from_sparse_list([(p, [i], 1.0)], 4)).real
            for p in "XZ"
            for i in range(4)
        ]
        np.testing.assert_allclose(values, expected, atol=1e-10, rtol=0)
    assert np.abs(out).max() > 0.1  # not trivially zero
