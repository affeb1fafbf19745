"""The HQCNN circuit's structure (gates, wiring, parameters, observables and outputs), and the
model's Python API: config checks, input checks, dtypes, frozen weights and pickling."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
import torch
from qiskit.quantum_info import SparsePauliOp, Statevector

from hqcnn_qiskit.errors import ConfigError, DataError
from hqcnn_qiskit.model import (
    ModelConfig,
    QuantumLayer,
    count_parameters,
    get_model,
    hqcnn_circuit,
    readout_observables,
)


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


# Python API ----------------------------------------------------------------------------------
def _images(n: int = 3, channels: int = 1, size: int = 28, seed: int = 1) -> torch.Tensor:
    """Images in [-1, 1], as load_split returns them."""
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def net():
    """The default HQCNN (aer_ideal), in eval mode."""
    return get_model(generator=torch.Generator().manual_seed(0)).eval()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"model": "foo"}, "model must be one of hqcnn, classical, got 'foo'"),
        ({"model": 3}, "model must be a string, got 3"),
        ({"in_channels": 0}, "in_channels must be at least 1, got 0"),
        ({"num_outputs": 0}, "num_outputs must be at least 1, got 0"),
        ({"num_outputs": 2.0}, "num_outputs must be a whole number, got 2.0"),
        ({"layers": "2"}, "layers must be a whole number, got '2'"),
        ({"layers": 0}, "layers must be at least 1, got 0"),
        ({"angle_scale": "pi"}, "angle_scale must be a number, got 'pi'"),
        ({"angle_scale": float("nan")}, "angle_scale must be finite, got nan"),
        ({"image_size": "28"}, "image_size must be a whole number, got '28'"),
        ({"image_size": 27}, "image_size must be one of 28, 64, 128, 224, got 27"),
        ({"attention": "no"}, "attention must be True or False, got 'no'"),
        ({"angle_norm": 2}, "angle_norm must be True or False, got 2"),
    ],
)
def test_model_config_rejects_bad_fields_naming_the_field(fields, message):
    with pytest.raises(ConfigError) as info:
        ModelConfig(**fields)
    assert str(info.value) == message


def test_model_config_stores_plain_values_and_get_model_checks_too():
    config = ModelConfig(in_channels=np.int64(3), num_outputs=np.int32(9), layers=np.int64(2),
                         angle_scale=np.float32(1.5), image_size=np.int64(64))
    values = config.to_dict()
    assert values == {"model": "hqcnn", "in_channels": 3, "num_outputs": 9, "image_size": 64,
                      "angle_scale": 1.5, "layers": 2, "attention": True, "angle_norm": True}
    assert [type(values[k]) for k in ("in_channels", "num_outputs", "image_size", "layers",
                                      "angle_scale")] == [int, int, int, int, float]
    with pytest.raises(ConfigError, match="in_channels must be at least 1, got 0"):
        get_model("classical", in_channels=0)
    with pytest.raises(ConfigError, match="layers must be at least 1, got 0"):
        hqcnn_circuit(layers=0)  # no CLI flag in a Python API message
    from hqcnn_qiskit.model import HQCNN

    with pytest.raises(ConfigError, match="config must be a ModelConfig, got dict"):
        HQCNN(config={"model": "classical"})


def test_float64_model_runs_and_matches_float32(net):
    x = _images()
    with torch.no_grad():
        single = net(x)
    double = copy.deepcopy(net).double()
    out = double(x.double())
    assert out.dtype == torch.float64 and out.shape == (3, 2)
    torch.testing.assert_close(out, single.double(), rtol=0, atol=1e-5)
    out.sum().backward()  # the connector's float32 gradients flow back into float64 layers
    assert double.quantum.connector.weight.grad.dtype == torch.float64
    assert double.backbone.dense[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "images, message",
    [
        (_images()[:, 0], "images must be a 4-D tensor (N, C, H, W), got shape (3, 28, 28)"),
        (((_images() + 1) * 127.5).to(torch.uint8),
         "images must be floating point, got torch.uint8: the model takes images scaled to "
         "[-1, 1] as load_split returns them (from uint8 pixels: x.float() / 127.5 - 1)"),
        (_images().double(), "images are torch.float64 but the model is torch.float32"),
        (_images(channels=3), "images have 3 channels, the model takes 1 (shape (3, 3, 28, 28))"),
        (_images(size=27), "images are 27x27 px, the model takes 28x28"),
        (_images(size=64), "images are 64x64 px, the model takes 28x28"),
        (_images()[..., :20], "images are 28x20 px, the model takes 28x28"),
        (np.zeros((3, 1, 28, 28), dtype=np.float32), "images must be a torch.Tensor"),
        (torch.full((3, 1, 28, 28), 255.0), "image values reach 255; the model takes images scaled to "
                                  "[-1, 1]"),
        (torch.full((3, 1, 28, 28), float("nan")), "image values reach nan"),
    ],
)
def test_forward_rejects_images_the_model_does_not_take(net, images, message):
    for call in (net, net.features):
        with pytest.raises(DataError) as info:
            call(images)
        assert str(info.value).startswith(message)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("model", ["hqcnn", "classical"])
def test_an_empty_batch_gives_an_empty_output(model):
    net = get_model(model, num_outputs=5)
    for mode in (True, False):  # BatchNorm in training mode cannot take 0 images: never reached
        net.train(mode)
        out = net(torch.zeros(0, 1, 28, 28))
        assert out.shape == (0, 5) and out.dtype == torch.float32
        assert net.features(torch.zeros(0, 1, 28, 28)).shape == (0, 4)
    out.sum().backward()  # still part of the graph, like an empty batch through torch layers


def test_set_backend_keeps_frozen_weights_frozen():
    net = get_model(generator=torch.Generator().manual_seed(0))
    before = net.quantum.connector.weight.detach().clone()
    net.quantum.connector.weight.requires_grad_(False)
    net.quantum.set_backend("aer_ideal")
    weight = net.quantum.connector.weight
    assert weight.requires_grad is False
    assert weight.dtype == torch.float32 and torch.equal(weight, before)
    net.quantum.connector.weight.requires_grad_(True)
    net.double()
    net.quantum.set_backend("aer_ideal")
    assert net.quantum.connector.weight.requires_grad is True
    assert net.quantum.connector.weight.dtype == torch.float64  # dtype kept too


def test_count_parameters_counts_trainable_parameters_of_both_kinds_alike():
    net = get_model(generator=torch.Generator().manual_seed(0))
    assert count_parameters(net) == {"quantum": 22, "classical": 891582, "total": 891604}
    net.quantum.connector.weight.requires_grad_(False)
    assert count_parameters(net) == {"quantum": 0, "classical": 891582, "total": 891582}
    for p in net.backbone.parameters():
        p.requires_grad_(False)
    net.quantum.connector.weight.requires_grad_(True)
    counts = count_parameters(net)
    assert counts["quantum"] == 22 and counts["total"] == counts["quantum"] + counts["classical"]
    assert counts["classical"] == 891582 - sum(p.numel() for p in net.backbone.parameters())
    twin = get_model("classical")
    assert count_parameters(twin) == {"quantum": 0, "classical": 891582 + 40,
                                      "total": 891582 + 40}


def test_a_model_pickles_after_a_backward_pass():
    net = get_model(generator=torch.Generator().manual_seed(0)).eval()
    x = _images()
    net(x).sum().backward()  # compiles and caches the gradient programs
    clone = pickle.loads(pickle.dumps(net))
    with torch.no_grad():
        assert torch.equal(clone(x), net(x))
    assert clone.quantum.connector.neural_network is clone.quantum.qnn
    assert clone.quantum.connector.weight is dict(clone.named_parameters())["quantum.connector.weight"]
    clone(x).sum().backward()  # the rebuilt QNN trains
    assert clone.quantum.connector.weight.grad.abs().sum() > 0
    assert net.quantum.connector.neural_network is net.quantum.qnn  # the original is untouched
    with torch.no_grad():
        assert torch.equal(copy.deepcopy(net)(x), net(x))
