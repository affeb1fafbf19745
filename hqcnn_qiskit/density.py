"""A batched noisy simulator: density matrices of every parameter row at once, in the Pauli
transfer matrix (PTM) picture, with the noise of a qiskit-aer ``NoiseModel``.

Why: Aer evolves one density matrix per parameter row and pays an interpretive overhead per
operation (~12 ms per 600-gate 4-qubit circuit). A parameter-shift backward pass needs thousands
of rows of the same circuit, which differ only in a few ``rz`` angles.

How: a state of ``n`` qubits is the real vector ``v[P] = tr(P rho)`` over the ``4^n`` Pauli
strings ``P`` (index ``sum_q p_q 4^q`` with ``p = 0, 1, 2, 3`` for ``I, X, Y, Z``; qubit 0 is the
lowest digit, as in Qiskit). A channel ``E`` acts as the real matrix
``R[P, Q] = tr(P E(Q)) / 2^n``. A circuit is compiled once:

* each gate without free parameters becomes its PTM, followed by the PTM of its noise (Aer
  applies a gate's ``QuantumError`` right after the gate; instructions without an error, such as
  the virtual ``rz``, are noiseless), and runs of such gates are fused into one matrix on the
  qubits they touch (up to ``4^n x 4^n``);
* a parameterised ``rz``/``p``/``u1`` on qubit ``q`` is a rotation of the ``(X_q, Y_q)``
  components by its angle (``I`` and ``Z`` are left alone), applied elementwise to all rows;
* operations on disjoint qubits commute (noise included, since every error acts on its gate's
  qubits), so gates move left past them to merge with like steps, which keeps the number of
  matrix products per row low;
* the tail after the last parameterised gate (basis change, twirl flips), the Z-basis outcome
  probabilities ``p(b) = 2^-n sum_S v[Z_S] (-1)^{|b & S|}``, the per-qubit readout confusion
  matrices and the clbit mapping are one linear map per measured circuit, applied to the shared
  pre-measurement state of all circuits that have the same head (the X and Z bases of a PUB).

Outcome probabilities are exact; :func:`sample_counts` draws shots from them like a sampler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from qiskit.circuit import ParameterExpression, QuantumCircuit
from qiskit.quantum_info import Operator, SuperOp

from .primitives.expressions import compile_expressions
from .transpile import IGNORED_OPS

__all__ = [
    "UnsupportedOperationError",
    "pauli_transfer_matrix",
    "NoiseTables",
    "DensityProgram",
    "compile_density_program",
    "sample_counts",
    "parity_signs",
]

# barriers and delays: no effect and no noise in Aer's device noise models
_ROTATIONS = {"rz", "p", "u1"}  # diagonal one-qubit gates: PTM = rotation of (X, Y) by angle
_CHUNK = 2048  # rows per pass: keeps a (4^n, chunk) state block in cache


class UnsupportedOperationError(ValueError):
    """A circuit holds an operation the batched density simulator cannot apply."""


_PAULI_1Q = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]])


def _pauli_basis(k: int) -> np.ndarray:
    """The ``4^k`` Pauli matrices on ``k`` qubits, index ``sum_j p_j 4^j`` (qubit 0 lowest)."""
    basis = np.ones((1, 1, 1), dtype=complex)
    for _ in range(k):  # each new qubit is more significant: kron(new, old)
        basis = np.einsum("aij,bkl->bakilj", basis, _PAULI_1Q).reshape(
            4 * basis.shape[0], 2 * basis.shape[1], 2 * basis.shape[2])
    return basis


def pauli_transfer_matrix(channel) -> np.ndarray:
    """The real PTM ``R[P, Q] = tr(P E(Q)) / 2^k`` of a unitary (``Operator`` or matrix) or a
    channel (anything ``SuperOp`` accepts, e.g. ``QuantumError.to_quantumchannel()``), in this
    module's Pauli order."""
    if isinstance(channel, np.ndarray) or isinstance(channel, Operator):
        u = np.asarray(channel.data if isinstance(channel, Operator) else channel)
        k = int(round(np.log2(u.shape[0])))
        basis = _pauli_basis(k)
        images = u @ basis @ u.conj().T  # E(Q) for every Q
    else:
        sup = SuperOp(channel).data
        k = int(round(np.log2(sup.shape[0]) / 2))
        basis = _pauli_basis(k)
        d = 2**k
        vecs = basis.transpose(0, 2, 1).reshape(len(basis), d * d)  # column-stacking vec
        images = (vecs @ sup.T).reshape(len(basis), d, d).transpose(0, 2, 1)
    # tr(P M) = sum_ij P[j, i] M[i, j] = sum(conj(P) * M) for Hermitian P
    ptm = np.einsum("aij,bij->ab", basis.conj(), images) / 2**k
    if np.max(np.abs(ptm.imag)) > 1e-9:
        raise UnsupportedOperationError("channel is not Hermiticity-preserving")
    return np.ascontiguousarray(ptm.real)


def _apply_local(state: np.ndarray, matrix: np.ndarray, qubits: Sequence[int], n: int) -> np.ndarray:
    """Apply a ``4^k x 4^k`` PTM on ``qubits`` (local index little-endian over ``qubits``) to a
    Pauli-major ``(4^n, cols)`` array."""
    k = len(qubits)
    if k == n and list(qubits) == list(range(n)):
        return matrix @ state
    cols = state.shape[1]
    psi = state.reshape((4,) * n + (cols,))
    source = [n - 1 - q for q in reversed(qubits)]
    psi = np.moveaxis(psi, source, list(range(k)))
    shape = psi.shape
    out = (matrix @ psi.reshape(4**k, -1)).reshape(shape)
    return np.moveaxis(out, list(range(k)), source).reshape(4**n, cols)


def _embed(matrix: np.ndarray, qubits: Sequence[int], support: Sequence[int]) -> np.ndarray:
    """A PTM on ``qubits`` as a PTM on the larger ``support`` (identity on the other qubits)."""
    support = list(support)
    m, k = len(support), len(qubits)
    if list(qubits) == support:
        return matrix
    order = [support.index(q) for q in qubits]
    order += [i for i in range(m) if i not in order]  # digit j of kron(I, matrix) -> position
    full = np.kron(np.eye(4 ** (m - k)), matrix).reshape((4,) * (2 * m))
    # axis m-1-j (and 2m-1-j) holds digit j; move it to the axis of support position order[j]
    perm = [0] * (2 * m)
    for j, p in enumerate(order):
        perm[m - 1 - p] = m - 1 - j
        perm[2 * m - 1 - p] = 2 * m - 1 - j
    return np.ascontiguousarray(full.transpose(perm).reshape(4**m, 4**m))


# Noise ----------------------------------------------------------------------------------------
#: Aer drops the terms of a ``QuantumError`` whose probability is at most this, without
#: renormalising (``QuantumError::set_circuits`` in qiskit-aer's C++ core).
AER_ERROR_THRESHOLD = 1e-10


def _error_ptm(error) -> np.ndarray:
    """The PTM of an Aer ``QuantumError`` as Aer applies it: ``sum_j p_j E_j`` over the terms
    with ``p_j > AER_ERROR_THRESHOLD``."""
    from qiskit_aer.noise import QuantumError

    total = 0.0
    for circuit, prob in zip(error.circuits, error.probabilities):
        if prob > AER_ERROR_THRESHOLD:
            term = QuantumError([(circuit, 1.0)]).to_quantumchannel()
            total = total + prob * pauli_transfer_matrix(term)
    return np.asarray(total, dtype=float)


class NoiseTables:
    """The PTMs and readout confusion matrices of an Aer ``NoiseModel`` (``None``: noiseless),
    looked up as Aer does: the local error of ``(name, qubits)``, else the default error of
    ``name``; the local readout error of a qubit, else the default one."""

    def __init__(self, noise_model=None):
        self.noise_model = noise_model
        self._errors: dict[tuple, np.ndarray | None] = {}
        self.gates: dict[tuple, np.ndarray] = {}  # gate + noise PTMs by (name, qubits, params)
        if noise_model is not None and getattr(noise_model, "_nonlocal_quantum_errors", None):
            raise UnsupportedOperationError("non-local quantum errors are not supported")

    def error(self, name: str, qubits: tuple[int, ...]) -> np.ndarray | None:
        """The PTM of the error Aer applies after ``name`` on ``qubits`` (``None``: none)."""
        key = (name, qubits)
        if key not in self._errors:
            nm, ptm = self.noise_model, None
            if nm is not None:
                err = nm._local_quantum_errors.get(name, {}).get(qubits)  # noqa: SLF001
                if err is None:
                    err = nm._default_quantum_errors.get(name)  # noqa: SLF001
                if err is not None:
                    if err.num_qubits != len(qubits):
                        raise UnsupportedOperationError(
                            f"the {err.num_qubits}-qubit error on '{name}' does not match the gate")
                    ptm = _error_ptm(err)
            self._errors[key] = ptm
        return self._errors[key]

    def readout(self, qubit: int) -> np.ndarray:
        """``A[true, recorded]`` of ``qubit`` (identity when the model has no readout error)."""
        nm = self.noise_model
        if nm is not None:
            err = nm._local_readout_errors.get((qubit,))  # noqa: SLF001
            if err is None:
                err = nm._default_readout_error  # noqa: SLF001
            if err is not None:
                return np.asarray(err.probabilities, dtype=float)
        return np.eye(2)


def parity_signs(a, b) -> np.ndarray:
    """``(-1)^{|a & b|}`` elementwise (broadcast): the Z-parity sign of outcome bits ``a`` on the
    qubit subset ``b`` (both as bit masks)."""
    return 1.0 - 2.0 * (np.bitwise_count(np.bitwise_and(a, b)) & 1)


# Programs -------------------------------------------------------------------------------------
@dataclass
class _Step:
    kind: str  # "static" or "rotation"
    qubits: tuple[int, ...]  # sorted support
    matrix: np.ndarray | None = None  # static: PTM on ``qubits``
    rotations: list[tuple[int, int]] = field(default_factory=list)  # (qubit, angle column)


@dataclass
class _Head:
    """The part of a circuit up to its last parameterised gate, compiled."""

    num_qubits: int
    initial: np.ndarray  # the state before the first rotation (4^n,)
    steps: list[_Step]
    angles: object  # compiled angle expressions: (rows, num_params) -> (rows, num_angles)
    _cast: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _cast_for(self, dtype) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """The initial state and the static step matrices in ``dtype`` (cached per dtype)."""
        key = np.dtype(dtype)
        cached = self._cast.get(key)
        if cached is None:
            cached = (self.initial.astype(dtype),
                      [s.matrix.astype(dtype) if s.kind == "static" else None
                       for s in self.steps])
            self._cast[key] = cached
        return cached

    def run(self, values: np.ndarray, dtype=np.float64) -> np.ndarray:
        """The Pauli-major states ``(4^n, rows)`` for the rows of ``values``."""
        rows = values.shape[0]
        n = self.num_qubits
        if not self.steps:
            return np.broadcast_to(self.initial[:, None], (4**n, rows)).astype(dtype)
        angles = np.asarray(self.angles(values), dtype=float).T  # (num_angles, rows)
        cos, sin = np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)
        initial, mats = self._cast_for(dtype)
        out = np.empty((4**n, rows), dtype=dtype)
        for lo in range(0, rows, _CHUNK):
            hi = min(rows, lo + _CHUNK)
            state = np.repeat(initial[:, None], hi - lo, axis=1)
            for step, mat in zip(self.steps, mats):
                if step.kind == "static":
                    state = np.ascontiguousarray(_apply_local(state, mat, step.qubits, n))
                    continue
                for q, col in step.rotations:
                    view = state.reshape(4 ** (n - q - 1), 4, 4**q, hi - lo)
                    c, s = cos[col, lo:hi], sin[col, lo:hi]
                    x, y = view[:, 1].copy(), view[:, 2]
                    view[:, 1] = c * x - s * y
                    view[:, 2] *= c
                    view[:, 2] += s * x
            out[:, lo:hi] = state
        return out


@dataclass
class DensityProgram:
    """A measured circuit compiled for batched noisy simulation.

    Attributes:
        head: The compiled circuit up to its last parameterised gate (shared between circuits
            that only differ after it, e.g. measurement bases).
        readout_map: ``(2^clbits, 4^n)``: pre-measurement Pauli vector -> outcome probabilities
            with readout error (tail gates, Z-basis probabilities, confusion, clbit mapping).
        ideal_map: The same without readout error.
    """

    head: _Head
    readout_map: np.ndarray
    ideal_map: np.ndarray


def _fingerprint(circuit: QuantumCircuit, instructions) -> tuple:
    parts = [tuple(p.name for p in circuit.parameters)]
    for inst in instructions:
        op = inst.operation
        parts.append((op.name, tuple(circuit.find_bit(q).index for q in inst.qubits),
                      tuple(repr(p) if not isinstance(p, ParameterExpression) else str(p)
                            for p in getattr(op, "params", []))))
    return tuple(parts)


def _is_free(op) -> bool:
    return any(isinstance(p, ParameterExpression) and p.parameters
               for p in getattr(op, "params", []))


def _static_ptm(op, qubits: tuple[int, ...], noise: NoiseTables) -> np.ndarray:
    """PTM of a gate without free parameters followed by its noise (cached in ``noise``)."""
    key = (op.name, qubits, tuple(float(p) for p in getattr(op, "params", [])))
    ptm = noise.gates.get(key)
    if ptm is None:
        try:
            ptm = pauli_transfer_matrix(Operator(op))
        except Exception as exc:  # noqa: BLE001 - report which operation failed
            raise UnsupportedOperationError(
                f"cannot simulate operation '{op.name}': {exc}") from None
        err = noise.error(op.name, qubits)
        ptm = ptm if err is None else err @ ptm
        noise.gates[key] = ptm
    return ptm


def _schedule(steps: list[_Step], step: _Step):
    """Append ``step``, moved left past steps on disjoint qubits, merged with a like step."""
    pos = len(steps)
    while pos > 0:
        before = steps[pos - 1]
        if before.kind == step.kind == "rotation":
            before.rotations.extend(step.rotations)
            before.qubits = tuple(sorted(set(before.qubits) | set(step.qubits)))
            return
        if before.kind == step.kind == "static":
            support = tuple(sorted(set(before.qubits) | set(step.qubits)))
            matrix = _embed(before.matrix, before.qubits, support)
            pos = [support.index(q) for q in step.qubits]
            before.matrix = _apply_local(matrix, step.matrix, pos, len(support))
            before.qubits = support
            return
        if set(before.qubits) & set(step.qubits):
            break
        pos -= 1
    steps.insert(pos, step)


def _compile_head(circuit: QuantumCircuit, instructions, noise: NoiseTables) -> _Head:
    n = circuit.num_qubits
    steps: list[_Step] = []
    exprs: list = []
    for inst in instructions:
        op = inst.operation
        if op.name in IGNORED_OPS:
            continue
        qubits = tuple(circuit.find_bit(q).index for q in inst.qubits)
        if not _is_free(op):
            ptm = _static_ptm(op, qubits, noise)
            order = sorted(range(len(qubits)), key=lambda i: qubits[i])
            support = tuple(qubits[i] for i in order)
            if support != qubits:
                ptm = _embed(ptm, qubits, support)
            _schedule(steps, _Step("static", support, ptm))
            continue
        if op.name not in _ROTATIONS:
            raise UnsupportedOperationError(
                f"parameterised '{op.name}' is not supported by the batched noisy engine (only "
                f"{', '.join(sorted(_ROTATIONS))}); use engine = \"aer\"")
        _schedule(steps, _Step("rotation", qubits, rotations=[(qubits[0], len(exprs))]))
        exprs.append(op.params[0])
        err = noise.error(op.name, qubits)
        if err is not None:
            _schedule(steps, _Step("static", qubits, err))
    initial = np.zeros(4**n)
    z_type = np.all((_digits(np.arange(4**n), n) % 3) == 0, axis=1)  # only I and Z
    initial[z_type] = 1.0
    while steps and steps[0].kind == "static":  # acts on the constant |0...0>
        initial = _apply_local(initial[:, None], steps[0].matrix, steps[0].qubits, n)[:, 0]
        steps.pop(0)
    return _Head(n, initial, steps, compile_expressions(exprs, list(circuit.parameters)))


def _digits(index: np.ndarray, n: int) -> np.ndarray:
    """Base-4 digits (Pauli letter per qubit) of Pauli indices, ``(len, n)``."""
    return (index[:, None] // 4 ** np.arange(n)) % 4


def _measure_maps(circuit: QuantumCircuit, tail, noise: NoiseTables) -> tuple[np.ndarray, ...]:
    """The tail's linear maps from the Pauli vector to clbit outcome probabilities."""
    n = circuit.num_qubits
    tail_ptm = np.eye(4**n)
    measured: dict[int, int] = {}  # clbit -> qubit
    for inst in tail:
        op = inst.operation
        if op.name in IGNORED_OPS:
            continue
        qubits = tuple(circuit.find_bit(q).index for q in inst.qubits)
        if op.name == "measure":
            clbit = circuit.find_bit(inst.clbits[0]).index
            if clbit in measured:
                raise UnsupportedOperationError(f"clbit {clbit} is measured twice")
            measured[clbit] = qubits[0]
            continue
        if set(qubits) & set(measured.values()):
            raise UnsupportedOperationError("operations after a measurement are not supported")
        if op.name == "reset" or inst.clbits or _is_free(op):
            raise UnsupportedOperationError(f"'{op.name}' is not supported in the circuit tail")
        tail_ptm = _apply_local(tail_ptm, _static_ptm(op, qubits, noise), qubits, n)
    nc = circuit.num_clbits
    if sorted(measured) != list(range(nc)):
        raise UnsupportedOperationError("every clbit must be measured exactly once")
    # Z-basis probabilities over all qubits from the Z-type Pauli components
    subsets = np.arange(2**n)
    z_index = sum(((subsets >> q) & 1) * 3 * 4**q for q in range(n))  # Z_S as a Pauli index
    signs = parity_signs(subsets[:, None], subsets[None, :])
    probs = signs @ tail_ptm[z_index] / 2**n  # (2^n outcomes b, 4^n)
    maps = []
    for with_readout in (True, False):
        g = np.zeros((2**nc, 2**n))  # qubit outcomes b -> clbit outcomes r
        for b in range(2**n):
            dist = np.ones(1)
            for c in range(nc):  # clbit c is the next more significant bit
                q = measured[c]
                row = noise.readout(q)[(b >> q) & 1] if with_readout else np.eye(2)[(b >> q) & 1]
                dist = np.kron(row, dist)
            g[:, b] = dist
        maps.append(g @ probs)
    return maps[0], maps[1]


def compile_density_program(circuit: QuantumCircuit, noise: NoiseTables,
                            heads: dict | None = None) -> DensityProgram:
    """Compile a measured circuit (measurements at the end, into distinct clbits).

    Args:
        circuit: The circuit; parameterised gates must be ``rz``, ``p`` or ``u1``.
        noise: The noise of the circuit's qubits.
        heads: A cache of compiled heads by structural key, shared between circuits.

    Raises:
        UnsupportedOperationError: Another parameterised gate, a reset, a mid-circuit
            measurement, or an unmeasured clbit.
    """
    data = list(circuit.data)
    last = max((i for i, inst in enumerate(data) if _is_free(inst.operation)), default=-1)
    head_part, tail = data[: last + 1], data[last + 1:]
    for inst in head_part:
        if inst.operation.name in ("measure", "reset") or inst.clbits:
            raise UnsupportedOperationError(
                f"'{inst.operation.name}' before the last parameterised gate is not supported")
    key = _fingerprint(circuit, head_part)
    head = heads.get(key) if heads is not None else None
    if head is None:
        head = _compile_head(circuit, head_part, noise)
        if heads is not None:
            heads[key] = head
    readout_map, ideal_map = _measure_maps(circuit, tail, noise)
    return DensityProgram(head, readout_map, ideal_map)


def sample_counts(probs: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """Shot counts ``~ Multinomial(shots, p)`` for every row of ``probs`` ``(rows, outcomes)``."""
    p = np.clip(np.asarray(probs, dtype=float), 0.0, None)
    p /= p.sum(axis=1, keepdims=True)
    return rng.multinomial(shots, p)

