"""An exact estimator that simulates a whole parameter array in one vectorised pass.

``StatevectorEstimator`` binds and simulates one circuit per parameter row. For a QNN the rows
are the batch (times the parameter-shift offsets), so that loop dominates training time. Here a
circuit is compiled once into a list of gate steps, and every step is applied to a
``(rows, 2**n)`` array of statevectors at the same time.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from qiskit.circuit import ParameterExpression, QuantumCircuit
from qiskit.primitives import BaseEstimatorV2
from qiskit.primitives.containers import DataBin, EstimatorPubLike, PrimitiveResult, PubResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.primitive_job import PrimitiveJob
from qiskit.quantum_info import Operator, Pauli

from .expressions import compile_expressions

__all__ = ["BatchedStatevectorEstimator", "UnsupportedGateError", "simulate_statevectors"]

_SKIP = {"barrier", "delay", "id"}


class UnsupportedGateError(ValueError):
    """A circuit holds an operation the batched simulator cannot apply."""


def _cos_sin(theta):
    return np.cos(theta / 2), np.sin(theta / 2)


def _rx(a):
    c, s = _cos_sin(a[:, 0])
    return np.stack([np.stack([c, -1j * s], -1), np.stack([-1j * s, c], -1)], -2)


def _ry(a):
    c, s = _cos_sin(a[:, 0])
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2).astype(complex)


def _diag(*entries):
    rows = entries[0].shape[0]
    out = np.zeros((rows, len(entries), len(entries)), dtype=complex)
    for i, e in enumerate(entries):
        out[:, i, i] = e
    return out


def _rz(a):
    e = np.exp(-0.5j * a[:, 0])
    return _diag(e, e.conj())


def _phase(a):
    return _diag(np.ones(a.shape[0]), np.exp(1j * a[:, 0]))


def _u3(a):
    theta, phi, lam = a[:, 0], a[:, 1], a[:, 2]
    c, s = _cos_sin(theta)
    return np.stack(
        [
            np.stack([c + 0j, -np.exp(1j * lam) * s], -1),
            np.stack([np.exp(1j * phi) * s, np.exp(1j * (phi + lam)) * c], -1),
        ],
        -2,
    )


def _u2(a):
    return _u3(np.column_stack([np.full(a.shape[0], np.pi / 2), a[:, 0], a[:, 1]]))


def _cphase(a):
    one = np.ones(a.shape[0])
    return _diag(one, one, one, np.exp(1j * a[:, 0]))


def _controlled(single):
    def kernel(a):
        out = np.tile(np.eye(4, dtype=complex), (a.shape[0], 1, 1))
        out[:, 1::2, 1::2] = single(a)  # control is the first qubit (the low bit)
        return out

    return kernel


def _pauli_rotation(label):
    pauli = Pauli(label).to_matrix()

    def kernel(a):
        c, s = _cos_sin(a[:, 0])
        return c[:, None, None] * np.eye(len(pauli)) - 1j * s[:, None, None] * pauli

    return kernel


# Gates whose angles are vectorised directly; anything else parameterised is expanded
# through its definition.
KERNELS = {
    "rx": _rx,
    "ry": _ry,
    "rz": _rz,
    "p": _phase,
    "u1": _phase,
    "u": _u3,
    "u3": _u3,
    "u2": _u2,
    "cp": _cphase,
    "cu1": _cphase,
    "crx": _controlled(_rx),
    "cry": _controlled(_ry),
    "crz": _controlled(_rz),
    "rxx": _pauli_rotation("XX"),
    "ryy": _pauli_rotation("YY"),
    "rzz": _pauli_rotation("ZZ"),
    "rzx": _pauli_rotation("XZ"),
}


# Diagonal gates with one angle a: entry j of the diagonal is exp(i * a * PHASES[name][j]).
_PHASES = {
    "rz": [-0.5, 0.5],
    "p": [0.0, 1.0],
    "u1": [0.0, 1.0],
    "cp": [0.0, 0.0, 0.0, 1.0],
    "cu1": [0.0, 0.0, 0.0, 1.0],
    "crz": [0.0, -0.5, 0.0, 0.5],
    "rzz": [-0.5, 0.5, 0.5, -0.5],
}
_FUSE_MAX_QUBITS = 6  # static runs are fused into one 2^n x 2^n matrix up to this size


@dataclass
class _Step:
    kind: str  # "static", "single", "diagonal" or "general"
    qubits: tuple[int, ...]
    matrix: np.ndarray | None = None  # static matrix
    parts: list = field(default_factory=list)  # (kernel, angle columns, diagonal index) each


def _embed(matrix: np.ndarray, qubits: tuple[int, ...], n: int) -> np.ndarray:
    """A gate's matrix on ``qubits`` as a full 2^n x 2^n matrix."""
    return _apply(np.eye(2**n, dtype=complex), matrix, qubits, n).T


def _mergeable(a: _Step, b: _Step) -> bool:
    if a.kind == b.kind == "diagonal":
        return True  # diagonal gates commute and multiply elementwise
    return a.kind == b.kind == "single" and a.qubits == b.qubits


class _Program:
    """A circuit compiled for batched simulation.

    Gates move left past gates on other qubits, so that parameterised single-qubit gates on one
    qubit merge into one 2x2 product per row and parameterised diagonal gates (RZ, P, CP, ...)
    merge into one elementwise phase. Runs of gates without free parameters become one matrix
    each (for small circuits). Other parameterised gates are batched matrix products.
    """

    def __init__(self, circuit: QuantumCircuit):
        self.num_qubits = circuit.num_qubits
        self.parameters = list(circuit.parameters)
        self.steps: list[_Step] = []
        self._angles: list = []
        self._add(circuit, list(range(circuit.num_qubits)))
        self.angles = compile_expressions(self._angles, self.parameters)
        if self.num_qubits <= _FUSE_MAX_QUBITS:
            self._fuse()

    def _add(self, circuit: QuantumCircuit, qubit_map: list[int]):
        n = self.num_qubits
        for inst in circuit.data:
            op = inst.operation
            qubits = tuple(qubit_map[circuit.find_bit(q).index] for q in inst.qubits)
            if op.name in _SKIP:
                continue
            if op.name in ("measure", "reset") or inst.clbits:
                raise UnsupportedGateError(
                    f"'{op.name}' is not allowed in an estimator circuit; remove it first"
                )
            params = list(getattr(op, "params", []))
            symbolic = any(isinstance(p, ParameterExpression) and p.parameters for p in params)
            if not symbolic:
                try:
                    matrix = Operator(op).data
                except Exception as exc:  # noqa: BLE001 - report which gate failed
                    raise UnsupportedGateError(
                        f"cannot simulate operation '{op.name}': {exc}"
                    ) from exc
                self._schedule(_Step("static", qubits, matrix))
            elif op.name in KERNELS:
                start = len(self._angles)
                self._angles.extend(params)
                columns = slice(start, len(self._angles))
                if op.name in _PHASES:
                    basis = np.arange(2**n)
                    index = sum(((basis >> q) & 1) << i for i, q in enumerate(qubits))
                    phases = np.asarray(_PHASES[op.name])[index][None, :]  # (1 angle, 2^n)
                    self._schedule(_Step("diagonal", qubits, None, [(None, start, phases)]))
                else:
                    kind = "single" if len(qubits) == 1 else "general"
                    self._schedule(_Step(kind, qubits, None, [(KERNELS[op.name], columns, None)]))
            elif op.definition is not None:
                self._add(op.definition, list(qubits))
            else:
                raise UnsupportedGateError(
                    f"gate '{op.name}' has free parameters and no definition to expand"
                )

    def _schedule(self, step: _Step):
        """Append ``step``, moved left past steps on other qubits and merged where it can be."""
        pos = len(self.steps)
        while pos > 0:
            before = self.steps[pos - 1]
            if _mergeable(before, step):
                before.parts.extend(step.parts)
                before.qubits = tuple(sorted(set(before.qubits) | set(step.qubits)))
                return
            if set(before.qubits) & set(step.qubits):
                break
            pos -= 1
        self.steps.insert(pos, step)

    def _fuse(self):
        n, fused = self.num_qubits, []
        for step in self.steps:
            if step.kind != "static":
                fused.append(step)
                continue
            full = _embed(step.matrix, step.qubits, n)
            if fused and fused[-1].kind == "static":
                fused[-1].matrix = full @ fused[-1].matrix
            else:
                fused.append(_Step("static", tuple(range(n)), full))
        self.steps = fused

    def run(self, values: np.ndarray) -> np.ndarray:
        """Simulate every row of ``values`` (rows x parameters) from |0...0>."""
        rows = values.shape[0]
        n = self.num_qubits
        angles = self.angles(values.reshape(rows, len(self.parameters)))
        state = np.zeros((rows, 2**n), dtype=complex)
        state[:, 0] = 1.0
        for step in self.steps:
            if step.kind == "static":
                if step.matrix.shape[0] == 2**n:
                    state = state @ step.matrix.T
                else:
                    state = _apply(state, step.matrix, step.qubits, n)
            elif step.kind == "diagonal":
                if not isinstance(step.matrix, tuple):  # merge the parts once
                    cols = np.array([col for _, col, _ in step.parts])
                    step.matrix = (cols, np.vstack([ph for _, _, ph in step.parts]))
                cols, phases = step.matrix
                state = state * np.exp(1j * (angles[:, cols] @ phases))
            elif step.kind == "single":
                matrix = None
                for kernel, columns, _ in step.parts:
                    m = kernel(angles[:, columns])
                    matrix = m if matrix is None else m @ matrix
                q = step.qubits[0]
                psi = state.reshape(rows, 2 ** (n - q - 1), 2, 2**q)
                zero, one = psi[:, :, 0, :], psi[:, :, 1, :]
                m = matrix[:, :, :, None, None]
                state = np.stack(
                    [m[:, 0, 0] * zero + m[:, 0, 1] * one, m[:, 1, 0] * zero + m[:, 1, 1] * one],
                    axis=2,
                ).reshape(rows, 2**n)
            else:
                (kernel, columns, _), = step.parts
                state = _apply(state, kernel(angles[:, columns]), step.qubits, n)
        return state


def _apply(state: np.ndarray, matrix: np.ndarray, qubits: tuple[int, ...], n: int) -> np.ndarray:
    """Apply a k-qubit matrix (static, or one per row) to a (rows, 2^n) array of states."""
    rows, k = state.shape[0], len(qubits)
    psi = state.reshape((rows,) + (2,) * n)
    source = [n - q for q in reversed(qubits)]
    target = list(range(n + 1 - k, n + 1))
    psi = np.moveaxis(psi, source, target)
    shape = psi.shape
    psi = psi.reshape(rows, -1, 2**k)
    if matrix.ndim == 2:
        psi = psi @ matrix.T
    else:
        psi = psi @ np.swapaxes(matrix, 1, 2)
    psi = np.moveaxis(psi.reshape(shape), target, source)
    return psi.reshape(rows, 2**n)


_PROGRAMS: dict[int, tuple[weakref.ref, int, _Program]] = {}


def _program(circuit: QuantumCircuit) -> _Program:
    """The compiled program of ``circuit``, cached while the circuit object lives."""
    key = id(circuit)
    size = len(circuit.data)
    hit = _PROGRAMS.get(key)
    if hit is not None and hit[0]() is circuit and hit[1] == size:
        return hit[2]
    program = _Program(circuit)
    _PROGRAMS[key] = (weakref.ref(circuit, lambda _, k=key: _PROGRAMS.pop(k, None)), size, program)
    return program


def simulate_statevectors(circuit: QuantumCircuit, values: np.ndarray) -> np.ndarray:
    """Statevectors of ``circuit`` for each row of ``values``.

    Args:
        circuit: A circuit without measurements.
        values: ``(rows, circuit.num_parameters)`` values in ``circuit.parameters`` order.

    Returns:
        A complex array ``(rows, 2**num_qubits)`` in Qiskit's little-endian order.
    """
    values = np.asarray(values, dtype=float).reshape(-1, circuit.num_parameters)
    return _program(circuit).run(values)


def _pauli_expectations(state: np.ndarray, terms: Iterable[tuple[str, complex]]) -> np.ndarray:
    """<psi|sum_k c_k P_k|psi> for every row of ``state`` (Pauli labels, little-endian)."""
    index = np.arange(state.shape[1])
    total = np.zeros(state.shape[0], dtype=complex)
    for label, coeff in terms:
        if set(label) - set("IXYZ"):
            raise ValueError(f"observable term '{label}' is not a Pauli string")
        xmask = sum(1 << q for q, char in enumerate(reversed(label)) if char in "XY")
        zmask = sum(1 << q for q, char in enumerate(reversed(label)) if char in "ZY")
        # P = (-i)^{#Y} Z^z X^x, so <psi|P|psi> = (-i)^{#Y} sum_c conj(psi_c) (-1)^{|c&z|} psi_{c^x}
        sign = 1.0 - 2.0 * (np.bitwise_count(index & zmask) & 1)
        value = np.einsum("ri,i,ri->r", state.conj(), sign, state[:, index ^ xmask])
        total += coeff * (-1j) ** label.count("Y") * value
    return total


class BatchedStatevectorEstimator(BaseEstimatorV2):
    """Exact ``BaseEstimatorV2`` that evaluates each PUB's parameter array in one pass.

    It follows the PUB broadcasting rules of the V2 primitives: the observables array and the
    bindings array of a PUB broadcast against each other, and each distinct parameter row is
    simulated once whatever the number of observables.

    Args:
        default_precision: Standard deviation of Gaussian noise added to every expectation value
            when a PUB or ``run`` call gives no precision (0 means exact values, the default).
        seed: Seed of that noise.
    """

    def __init__(self, *, default_precision: float = 0.0, seed: int | np.random.Generator | None = None):
        if default_precision < 0:
            raise ValueError("default_precision must be non-negative")
        self._default_precision = default_precision
        self._seed = seed

    @property
    def default_precision(self) -> float:
        """Precision used when none is given."""
        return self._default_precision

    def run(
        self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None
    ) -> PrimitiveJob[PrimitiveResult[PubResult]]:
        if precision is None:
            precision = self._default_precision
        coerced = [EstimatorPub.coerce(pub, precision) for pub in pubs]
        for pub in coerced:
            if pub.precision < 0:
                raise ValueError(f"precision must be non-negative, got {pub.precision}")
        job = PrimitiveJob(self._run, coerced)
        job._submit()  # pylint: disable=protected-access
        return job

    def _run(self, pubs: list[EstimatorPub]) -> PrimitiveResult[PubResult]:
        rng = np.random.default_rng(self._seed)
        return PrimitiveResult([self._run_pub(pub, rng) for pub in pubs], metadata={"version": 2})

    def _run_pub(self, pub: EstimatorPub, rng: np.random.Generator) -> PubResult:
        circuit = pub.circuit
        bindings = pub.parameter_values
        observables = pub.observables
        shape = np.broadcast_shapes(bindings.shape, observables.shape)
        if circuit.num_parameters:
            values = bindings.as_array(circuit.parameters).reshape(-1, circuit.num_parameters)
        else:
            values = np.zeros((int(np.prod(bindings.shape, dtype=int)), 0))
        states = _program(circuit).run(values)
        obs_list = observables.ravel().tolist()
        table = np.empty((states.shape[0], len(obs_list)))
        for k, obs in enumerate(obs_list):
            evs = _pauli_expectations(states, obs.items())
            if np.max(np.abs(evs.imag), initial=0.0) > 1e-9:
                raise ValueError("observable is not Hermitian: its expectation value is complex")
            table[:, k] = evs.real
        param_idx = np.broadcast_to(np.arange(states.shape[0]).reshape(bindings.shape), shape)
        obs_idx = np.broadcast_to(np.arange(len(obs_list)).reshape(observables.shape), shape)
        evs = table[param_idx, obs_idx]
        precision = pub.precision
        if precision:
            evs = rng.normal(evs, precision)
        stds = np.full(shape, float(precision))
        data = DataBin(evs=evs, stds=stds, shape=shape)
        return PubResult(
            data, metadata={"target_precision": precision, "circuit_metadata": circuit.metadata}
        )
