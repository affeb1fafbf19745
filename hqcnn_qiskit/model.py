"""The HQCNN of arXiv 2509.14277, top to bottom, and its classical twin.

    image ──► Backbone ──► 4 features h ──► AngleMap θ = s·tanh(BN(h)) ──► quantum layer ──► 8 values
          ──► Head ──► class logits

The quantum layer is a 4-qubit circuit built with qiskit-machine-learning's ``qnn_circuit``:

1. feature map: ``RY(θ_i)`` on qubit i;
2. ansatz, ``layers`` times: ``U3`` on every qubit, then a CNOT ring i -> (i+1) mod 4
   ("superpositional entanglement");
3. Fourier-inspired attention block (optional): Toffoli(i, i+1 -> i+2 mod 4) for each i, a
   QFT-like ladder (H on qubit j, then a controlled phase from every later qubit k with a
   trainable angle that starts at π/2^(k-j)), and a trainable RZ on every qubit;
4. readout: ⟨X_i⟩ and ⟨Z_i⟩ on every qubit, through an ``EstimatorQNN`` (with input gradients)
   wrapped in ``TorchConnector``.

The classical twin keeps the backbone, the angle map and the head, and replaces the circuit with
``Linear(4, 8) + tanh``, so every quantum result has a like-for-like baseline.

Angle scale: ``s = π/2`` by default. The two ends of tanh's range then map to RY(±π/2)|0⟩ =
|+⟩ and |−⟩, orthogonal states, and the encoding is injective with margin. With ``s = π`` both
ends fold onto the same state |1⟩ (RY(π)|0⟩ and RY(−π)|0⟩ differ only by a sign), so strongly
opposite features become indistinguishable. That argument is why π/2: on BreastMNIST, seed 0,
validation could not tell the two apart (best validation AUC 0.94 for both); an early comparison
also saw their test AUCs (0.908 vs 0.850), which the results report discloses.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from qiskit.circuit import ParameterVector, QuantumCircuit
from qiskit.quantum_info import SparsePauliOp
from qiskit_machine_learning.circuit.library import qnn_circuit
from qiskit_machine_learning.connectors import TorchConnector
from torch import nn

from . import validate
from .errors import ConfigError, DataError

__all__ = [
    "NUM_QUBITS",
    "ModelConfig",
    "Backbone",
    "AngleMap",
    "hqcnn_circuit",
    "readout_observables",
    "QuantumLayer",
    "ClassicalTwin",
    "Head",
    "HQCNN",
    "get_model",
    "list_models",
    "count_parameters",
]

NUM_QUBITS = 4
IMAGE_SIZES = (28, 64, 128, 224)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model from a checkpoint.

    Every field is checked when the config is made, and stored as a plain Python value (a
    NumPy integer becomes an ``int``), so that a checkpoint holding it loads with
    ``torch.load(weights_only=True)``.

    Args:
        model: ``"hqcnn"`` or ``"classical"`` (see :func:`list_models`).
        in_channels: Image channels (1 or 3 for MedMNIST; at least 1).
        num_outputs: Logits of the head, at least 1: classes for a softmax task (binary tasks
            use 2), or labels for multi-label tasks.
        image_size: 28, 64, 128 or 224.
        angle_scale: ``s`` in ``θ = s·tanh(h)``; finite.
        layers: Repetitions of the U3 + CNOT-ring block; at least 1.
        attention: Whether the Fourier-inspired attention block is in the circuit.
        angle_norm: Batch-normalise the 4 features before ``s·tanh`` (see :class:`AngleMap`).

    Raises:
        ConfigError: A field has the wrong type or is out of range (the message names it).
    """

    model: str = "hqcnn"
    in_channels: int = 1
    num_outputs: int = 2
    image_size: int = 28
    angle_scale: float = math.pi / 2
    layers: int = 1
    attention: bool = True
    angle_norm: bool = True

    def __post_init__(self):
        model = validate.text(self.model, "model")
        if model not in _MODELS:
            raise ConfigError(f"model must be one of {', '.join(list_models())}, got {model!r}")
        image_size = validate.integer(self.image_size, "image_size")
        if image_size not in IMAGE_SIZES:
            sizes = ", ".join(map(str, IMAGE_SIZES))
            raise ConfigError(f"image_size must be one of {sizes}, got {image_size}")
        checked = {
            "model": model,
            "in_channels": validate.integer(self.in_channels, "in_channels", low=1),
            "num_outputs": validate.integer(self.num_outputs, "num_outputs", low=1),
            "image_size": image_size,
            # finite only: the CLI asks for a positive scale, but checkpoints written before
            # these checks may hold any number
            "angle_scale": validate.real(self.angle_scale, "angle_scale"),
            "layers": validate.integer(self.layers, "layers", low=1),
            "attention": validate.boolean(self.attention, "attention"),
            "angle_norm": validate.boolean(self.angle_norm, "angle_norm"),
        }
        for name, value in checked.items():  # frozen: the normalised plain values go in directly
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict:
        """A plain dict (for checkpoints and JSON)."""
        return asdict(self)


# 1. Backbone ---------------------------------------------------------------------------------
def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Backbone(nn.Module):
    """Five 3x3 conv layers (BatchNorm, ReLU), two max-pools, then a dense map to 4 features.

    For 28x28 images the flattened map is 64x7x7, as in the paper. Larger images (64, 128, 224)
    are average-pooled to 7x7 before flattening, so the dense layer keeps its size.
    """

    def __init__(self, *, in_channels: int = 1, features: int = NUM_QUBITS):
        super().__init__()
        self.features = nn.Sequential(
            *_conv(in_channels, 16),
            *_conv(16, 16),
            nn.MaxPool2d(2),
            *_conv(16, 64),
            *_conv(64, 64),
            *_conv(64, 64),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7),
        )
        self.dense = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(256, features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.features(x))


# 2. Angle map --------------------------------------------------------------------------------
class AngleMap(nn.Module):
    """``θ = s·tanh(BN(h))``: bounded rotation angles from unbounded features.

    The paper's map is ``s·tanh(h)``. Trained as written, the four backbone outputs drift to
    |h| ≈ 30 within a few epochs, tanh saturates, every image gets the same angles and both the
    HQCNN and its classical twin collapse to the majority class (measured on BreastMNIST: val
    AUC 0.5 from epoch 12 on). A ``BatchNorm1d(4)`` on ``h`` keeps the angles inside tanh's
    working range; ``normalize=False`` restores the literal map.
    """

    def __init__(self, *, scale: float = math.pi / 2, normalize: bool = True,
                 features: int = NUM_QUBITS):
        super().__init__()
        self.scale = float(scale)
        self.norm = nn.BatchNorm1d(features) if normalize else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(self.norm(h))

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4f}"


# 3. Circuit ----------------------------------------------------------------------------------
def _feature_map(n: int) -> QuantumCircuit:
    x = ParameterVector("x", n)
    fm = QuantumCircuit(n, name="RY encoding")
    for i in range(n):
        fm.ry(x[i], i)
    return fm


def _ansatz(n: int, layers: int, attention: bool) -> tuple[QuantumCircuit, dict]:
    """The trainable part, and the initial value of each of its parameters."""
    init = {}
    u3 = ParameterVector("u3", 3 * n * layers)
    ansatz = QuantumCircuit(n, name="HQCNN ansatz")
    for layer in range(layers):
        for i in range(n):
            k = 3 * (n * layer + i)
            ansatz.u(u3[k], u3[k + 1], u3[k + 2], i)
        for i in range(n):  # superpositional entanglement: CNOT ring
            ansatz.cx(i, (i + 1) % n)
    if attention:
        for i in range(n):  # Toffoli(i, i+1 -> i+2)
            ansatz.ccx(i, (i + 1) % n, (i + 2) % n)
        cp = ParameterVector("cp", n * (n - 1) // 2)
        rz = ParameterVector("rz", n)
        m = 0
        for j in range(n):  # QFT-like ladder with trainable phases
            ansatz.h(j)
            for k in range(j + 1, n):
                ansatz.cp(cp[m], k, j)
                init[cp[m]] = math.pi / 2 ** (k - j)
                m += 1
        for i in range(n):
            ansatz.rz(rz[i], i)
            init[rz[i]] = 0.0
    return ansatz, init


def hqcnn_circuit(
    *, layers: int = 1, attention: bool = True, num_qubits: int = NUM_QUBITS
) -> tuple[QuantumCircuit, list, list, dict]:
    """The HQCNN circuit through ``qnn_circuit``.

    Returns:
        The circuit, its input parameters, its weight parameters, and the initial value of each
        weight that has a fixed start (controlled phases, RZ); U3 angles are drawn at random.

    Raises:
        ConfigError: ``layers`` is not a whole number of at least 1.
    """
    layers = validate.integer(layers, "layers", low=1)
    ansatz, init = _ansatz(num_qubits, layers, attention)
    circuit, inputs, weights = qnn_circuit(feature_map=_feature_map(num_qubits), ansatz=ansatz)
    return circuit, list(inputs), list(weights), init


def readout_observables(num_qubits: int = NUM_QUBITS) -> list[SparsePauliOp]:
    """``[X_0, ..., X_{n-1}, Z_0, ..., Z_{n-1}]`` as single-qubit Pauli observables."""
    return [
        SparsePauliOp.from_sparse_list([(p, [i], 1.0)], num_qubits=num_qubits)
        for p in "XZ"
        for i in range(num_qubits)
    ]


# 4. Quantum layer ----------------------------------------------------------------------------
# where TorchConnector keeps its QNN (qiskit-machine-learning 0.9), dropped when pickling
_QNN_SLOT = "_neural_network"


class QuantumLayer(nn.Module):
    """The circuit as a torch module: ``qnn_circuit`` -> ``EstimatorQNN`` -> ``TorchConnector``.

    Args:
        layers: Repetitions of the U3 + CNOT-ring block.
        attention: Whether the attention block is in the circuit.
        backend: A backend name, profile path or object from :func:`hqcnn_qiskit.get_backend`;
            it supplies the estimator, the gradient and any transpilation.
        generator: Draws the initial U3 angles.
    """

    def __init__(self, *, layers: int = 1, attention: bool = True, backend="aer_ideal",
                 generator: torch.Generator | None = None):
        super().__init__()
        self.circuit, self.input_params, self.weight_params, init = hqcnn_circuit(
            layers=layers, attention=attention
        )
        self.observables = readout_observables()
        random = torch.rand(len(self.weight_params), generator=generator, dtype=torch.float64)
        weights = [
            init.get(p, float(2 * math.pi * r - math.pi))
            for p, r in zip(self.weight_params, random.tolist())
        ]
        self.backend = None
        self.connector = None
        self.set_backend(backend, weights=np.asarray(weights))

    def set_backend(self, backend, *, weights: np.ndarray | None = None) -> None:
        """Run the circuit on another backend, keeping the trained weights.

        The connector (and so its weight parameter) is rebuilt: make optimizers afterwards. The
        new weight keeps the old one's ``requires_grad`` (frozen weights stay frozen), dtype
        and device.

        Args:
            backend: A backend name, profile path or object (see :func:`~hqcnn_qiskit.get_backend`).
            weights: Start from these weight values instead of the current ones.
        """
        from .backends import get_backend

        old = self.connector.weight if self.connector is not None else None
        backend = get_backend(backend)
        qnn = self._build_qnn(backend)
        if weights is None:
            weights = old.detach().cpu().double().numpy()
        weights = np.asarray(weights, dtype=float)
        connector = TorchConnector(qnn, initial_weights=weights)
        if old is not None:
            # TorchConnector makes a float32 CPU weight that requires grad: keep the old kind
            connector.weight.data = torch.as_tensor(weights, dtype=old.dtype, device=old.device)
            connector.weight.requires_grad_(old.requires_grad)
        self.backend, self.qnn, self.connector = backend, qnn, connector

    def __getstate__(self) -> dict:
        """The layer's state for pickle and ``copy.deepcopy``, without the QNN.

        The QNN's estimator and gradient hold compiled closures and caches that pickle cannot
        write (and that are rebuilt cheaply); :meth:`__setstate__` builds a new QNN from the
        backend. Device backends (``aer_noisy``, ``fake_*``) pickle their profile, ISA circuit
        and random state, so a copy draws the same shots as the original; an IBM Runtime
        backend refuses (its service connection holds the account).
        """
        state = self.__dict__.copy()
        state["qnn"] = None
        modules = dict(state["_modules"])
        if _QNN_SLOT not in vars(modules["connector"]):  # a qiskit-machine-learning change
            raise TypeError(f"cannot pickle the quantum layer: TorchConnector has no "
                            f"{_QNN_SLOT} attribute in this qiskit-machine-learning version")
        connector = copy.copy(modules["connector"])  # shares the weight, not the network
        setattr(connector, _QNN_SLOT, None)
        modules["connector"] = connector
        state["_modules"] = modules
        return state

    def __setstate__(self, state: dict) -> None:
        """Restore what :meth:`__getstate__` returned, with a new QNN on the same backend."""
        super().__setstate__(state)
        self.qnn = self._build_qnn(self.backend)
        setattr(self.connector, _QNN_SLOT, self.qnn)

    def _build_qnn(self, backend):
        """This layer's circuit and observables as a QNN on ``backend``."""
        return backend.build_qnn(
            circuit=self.circuit,
            input_params=self.input_params,
            weight_params=self.weight_params,
            observables=self.observables,
        )

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        """Expectation values ``(N, 8)`` of the circuit for angles ``theta`` ``(N, 4)``, in
        ``theta``'s dtype. The connector itself always returns float32, so a float64 model gets
        the circuit's values at float32 precision (about 1e-7)."""
        return self.connector(theta).to(theta.dtype)


class ClassicalTwin(nn.Module):
    """The ablation: ``Linear(4, 8) + tanh`` where the circuit was (same in/out, same range)."""

    def __init__(self, *, num_inputs: int = NUM_QUBITS, num_outputs: int = 2 * NUM_QUBITS):
        super().__init__()
        self.linear = nn.Linear(num_inputs, num_outputs)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(theta))


# 5. Head -------------------------------------------------------------------------------------
class Head(nn.Module):
    """``Linear(8, 128), ReLU, Dropout(0.2), Linear(128, outputs)``."""

    def __init__(self, *, num_inputs: int = 2 * NUM_QUBITS, num_outputs: int = 2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(num_inputs, 128), nn.ReLU(inplace=True), nn.Dropout(0.2),
            nn.Linear(128, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# The whole model -----------------------------------------------------------------------------
class HQCNN(nn.Module):
    """Backbone -> angle map -> quantum layer (or its classical twin) -> head.

    Input: a floating-point tensor ``(N, C, H, W)`` with ``C = config.in_channels`` and
    ``H = W = config.image_size``, in the model's dtype (float32 unless converted with
    ``.double()``; the circuit's values then still come at float32 precision, see
    :meth:`QuantumLayer.forward`), scaled to [-1, 1] as :func:`~hqcnn_qiskit.data.load_split`
    returns images.
    Output: logits ``(N, config.num_outputs)``; an empty batch (``N = 0``) gives an empty
    ``(0, num_outputs)`` output, as torch layers do.

    Args:
        config: The architecture.
        backend: Where the quantum layer runs (ignored by the classical twin).
        generator: Seeds the initial U3 angles.

    Raises:
        ConfigError: ``config`` is not a :class:`ModelConfig`.
    """

    def __init__(self, *, config: ModelConfig, backend="aer_ideal",
                 generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ConfigError(f"config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.backbone = Backbone(in_channels=config.in_channels)
        self.angles = AngleMap(scale=config.angle_scale, normalize=config.angle_norm)
        if config.model == "hqcnn":
            self.quantum = QuantumLayer(
                layers=config.layers, attention=config.attention, backend=backend,
                generator=generator,
            )
        else:
            self.quantum = ClassicalTwin()
        self.head = Head(num_outputs=config.num_outputs)

    @property
    def is_quantum(self) -> bool:
        """Whether the middle layer is a circuit."""
        return isinstance(self.quantum, QuantumLayer)

    def check_images(self, x) -> None:
        """Check that ``x`` is a batch this model takes (see the class docstring): shape, dtype,
        and one pass over the values for their range (a max, far below a convolution's cost).

        Raises:
            DataError: Not a tensor, not 4-D, not floating point or not the model's dtype, the
                wrong channels or size, or values outside [-1, 1] (e.g. unscaled 0-255 pixels).
        """
        config = self.config
        if not isinstance(x, torch.Tensor):
            raise DataError(f"images must be a torch.Tensor (N, C, H, W), got {type(x).__name__}")
        if x.ndim != 4:
            raise DataError(f"images must be a 4-D tensor (N, C, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise DataError(f"images must be floating point, got {x.dtype}: the model takes "
                            "images scaled to [-1, 1] as load_split returns them (from uint8 "
                            "pixels: x.float() / 127.5 - 1)")
        dtype = self.head.net[0].weight.dtype
        if x.dtype != dtype:
            raise DataError(f"images are {x.dtype} but the model is {dtype}: convert the images "
                            f"with .to({dtype}) or the model with .to({x.dtype})")
        if x.shape[1] != config.in_channels:
            raise DataError(f"images have {x.shape[1]} channels, the model takes "
                            f"{config.in_channels} (shape {tuple(x.shape)})")
        if x.shape[2] != config.image_size or x.shape[3] != config.image_size:
            raise DataError(f"images are {x.shape[2]}x{x.shape[3]} px, the model takes "
                            f"{config.image_size}x{config.image_size}")
        if x.numel():
            peak = float(x.detach().abs().amax())
            if not peak <= 1.0 + 1e-4:  # NaN fails too
                raise DataError(f"image values reach {peak:g}; the model takes images scaled to "
                                "[-1, 1] as load_split returns them (from 0-255 pixels: "
                                "x / 127.5 - 1)")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The classical front: images to rotation angles (what ``infer`` computes locally).

        Args:
            x: Images ``(N, C, H, W)`` (see the class docstring).

        Returns:
            Angles ``(N, 4)``.

        Raises:
            DataError: ``x`` is not a batch this model takes.
        """
        self.check_images(x)
        if len(x) == 0:
            return x.new_zeros((0, NUM_QUBITS))
        return self.angles(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_outputs)`` of images ``(N, C, H, W)`` (see the class docstring).

        Raises:
            DataError: ``x`` is not a batch this model takes.
        """
        theta = self.features(x)
        if len(theta) == 0:  # nothing to run on the circuit; keep the head in the graph
            return self.head(theta.new_zeros((0, 2 * NUM_QUBITS)))
        return self.head(self.quantum(theta))


_MODELS = {
    "hqcnn": "4-qubit HQCNN circuit (qnn_circuit -> EstimatorQNN -> TorchConnector)",
    "classical": "classical twin: the circuit replaced by Linear(4, 8) + tanh",
}


def list_models() -> list[str]:
    """Names accepted by :func:`get_model`."""
    return list(_MODELS)


def get_model(name: str = "hqcnn", *, backend="aer_ideal", generator=None, **config) -> HQCNN:
    """Build a model by name, e.g. ``get_model("classical", in_channels=3, num_outputs=9)``."""
    return HQCNN(config=ModelConfig(model=name, **config), backend=backend, generator=generator)


def count_parameters(model: HQCNN) -> dict[str, int]:
    """Trainable parameters (``requires_grad``), split into the circuit's and the classical
    layers'.

    Both kinds follow the same rule: a frozen parameter counts in neither, so freezing the
    circuit gives ``quantum == 0`` and leaves ``classical`` unchanged. The classical twin's
    ``Linear(4, 8)`` counts as classical. BatchNorm running statistics are buffers, not
    parameters. The default HQCNN on 28 px, 1 channel, 2 classes has 22 quantum and 891,582
    classical parameters.

    Returns:
        ``{"quantum", "classical", "total"}``.
    """
    def trainable(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    quantum = trainable(model.quantum) if model.is_quantum else 0
    total = trainable(model)
    return {"quantum": quantum, "classical": total - quantum, "total": total}
