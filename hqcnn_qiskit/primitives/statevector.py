"""An exact estimator that simulates a whole parameter array in one vectorised pass.

``StatevectorEstimator`` binds and simulates one circuit per parameter row. For a QNN the rows
are the batch (times the parameter-shift offsets), so that loop dominates training time. Here a
circuit is compiled once into a list of gate steps, and every step is applied to all the
statevectors at the same time, stored amplitude-major as a ``(2**n, rows)`` array.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qiskit.circuit import ParameterExpression, QuantumCircuit
from qiskit.primitives import BaseEstimatorV2
from qiskit.primitives.containers import DataBin, EstimatorPubLike, PrimitiveResult, PubResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.primitive_job import PrimitiveJob
from qiskit.providers import JobError
from qiskit.quantum_info import Operator, Pauli

from .cache import IdentityCache
from .expressions import compile_expressions

__all__ = [
    "BatchedStatevectorEstimator",
    "UnsupportedGateError",
    "simulate_statevectors",
    "single_threaded_blas",
]

_SKIP = {"barrier", "delay", "id"}


class UnsupportedGateError(ValueError):
    """A circuit holds an operation the batched simulator cannot apply."""


_RUNS_MIN_SIZE = 512  # below this, deduplicating costs more than it saves


def _runs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Start and length of each run of equal consecutive columns of a ``(k, rows)`` array, or
    ``None`` when there are too few repeats for run-wise evaluation to pay."""
    rows = x.shape[-1]
    if x.size < _RUNS_MIN_SIZE:
        return None
    new = np.empty(rows, dtype=bool)
    new[0] = True
    if x.ndim == 1:
        np.not_equal(x[1:], x[:-1], out=new[1:])
    else:
        np.any(x[:, 1:] != x[:, :-1], axis=0, out=new[1:])
    starts = np.flatnonzero(new)
    if 3 * len(starts) > rows:
        return None
    return starts, np.diff(starts, append=rows)


def _expand(value, lengths: np.ndarray):
    """Undo run compression: repeat each entry ``lengths`` times (numbers stay numbers)."""
    return np.repeat(value, lengths, axis=-1) if np.ndim(value) else value


def _trig(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``cos(x), sin(x)`` of a float array, evaluated once per run of equal consecutive values.

    An angle column of a parameter-shift PUB is mostly runs of one value (its shifted rows
    differ from their neighbours in one other column), so computing cos/sin per run and
    repeating the results is exact and several times cheaper than one per element.
    """
    x = np.asarray(x, dtype=float)
    flat = x.ravel()
    runs = _runs(flat)
    if runs is None:
        return np.cos(x), np.sin(x)
    starts, lengths = runs
    firsts = flat[starts]
    return (
        _expand(np.cos(firsts), lengths).reshape(x.shape),
        _expand(np.sin(firsts), lengths).reshape(x.shape),
    )


def submit_inline(job: PrimitiveJob) -> None:
    """Submit a ``PrimitiveJob`` (or ``AlgorithmJob``) by running its function now, in the
    calling thread, instead of on a fresh one-off worker thread.

    The stock ``_submit`` starts a new thread per job (about 0.1 ms, on every forward and twice
    per backward); the work here is CPU-bound numpy, so the thread buys nothing. The job keeps
    its interface: ``result()`` returns the value or raises the error, ``status()`` is final.
    """
    if job._future is not None:  # pylint: disable=protected-access
        raise JobError("Primitive job has been submitted already.")
    future: Future = Future()
    try:
        future.set_result(job._function(*job._args, **job._kwargs))  # pylint: disable=protected-access
    except Exception as exc:  # noqa: BLE001 - delivered by job.result(), as with a thread
        future.set_exception(exc)
    job._future = future  # pylint: disable=protected-access


_BLAS = None


def single_threaded_blas():
    """A context that keeps BLAS on one thread: the matrices here are small, and a BLAS thread
    pool competing with torch's (or another process) for the cores is slower by a wide margin."""
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
        except Exception:  # noqa: BLE001 - optional: without it BLAS keeps its threads
            _BLAS = False
    if _BLAS is False:
        return contextlib.nullcontext()
    return _BLAS.limit(limits=1, user_api="blas")


def _cis(x: np.ndarray) -> np.ndarray:
    """``exp(1j * x)`` of a float array, without a complex exponential."""
    c, s = _trig(x)
    out = np.empty(c.shape, dtype=complex)
    out.real = c
    out.imag = s
    return out


def _cos_sin(theta):
    return _trig(np.multiply(theta, 0.5))


# Kernels take their angles as a (num_angles, rows) array. Single-qubit kernels return the four
# entries (m00, m01, m10, m11) of one 2x2 matrix per row, each an array over rows or a number;
# the others return (rows, 2^k, 2^k) matrices.
def _rx(a):
    c, s = _cos_sin(a[0])
    return c, -1j * s, -1j * s, c


def _ry(a):
    c, s = _cos_sin(a[0])
    return c, -s, s, c


def _u3(a):
    c, s = _cos_sin(a[0])
    e_phi, e_lam = _cis(a[1]), _cis(a[2])
    return c, -e_lam * s, e_phi * s, (e_phi * e_lam) * c


def _u2(a):
    return _u3(np.vstack([np.full(a.shape[1], np.pi / 2), a[0], a[1]]))


def _mul2(a: tuple, b: tuple) -> tuple:
    """``a @ b`` for two single-qubit kernels' entries."""
    a00, a01, a10, a11 = a
    b00, b01, b10, b11 = b
    return (
        a00 * b00 + a01 * b10,
        a00 * b01 + a01 * b11,
        a10 * b00 + a11 * b10,
        a10 * b01 + a11 * b11,
    )


def _as_matrices(entries: tuple, rows: int) -> np.ndarray:
    out = np.empty((rows, 2, 2), dtype=complex)
    out[:, 0, 0], out[:, 0, 1], out[:, 1, 0], out[:, 1, 1] = entries
    return out


def _controlled(single):
    def kernel(a):
        out = np.tile(np.eye(4, dtype=complex), (a.shape[1], 1, 1))
        out[:, 1::2, 1::2] = _as_matrices(single(a), a.shape[1])  # control: the low bit
        return out

    return kernel


def _pauli_rotation(label):
    pauli = Pauli(label).to_matrix()

    def kernel(a):
        c, s = _cos_sin(a[0])
        return c[:, None, None] * np.eye(len(pauli)) - 1j * s[:, None, None] * pauli

    return kernel


# Gates whose angles are vectorised directly (with the diagonal ones in _PHASES below);
# anything else parameterised is expanded through its definition.
KERNELS = {
    "rx": _rx,
    "ry": _ry,
    "u": _u3,
    "u3": _u3,
    "u2": _u2,
    "crx": _controlled(_rx),
    "cry": _controlled(_ry),
    "rxx": _pauli_rotation("XX"),
    "ryy": _pauli_rotation("YY"),
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
    return _apply(np.eye(2**n, dtype=complex), matrix, qubits, n)


def _mergeable(a: _Step, b: _Step) -> bool:
    if a.kind == b.kind == "diagonal":
        return True  # diagonal gates commute and multiply elementwise
    return a.kind == b.kind == "single" and a.qubits == b.qubits


class _Buffers:
    """Work arrays kept between runs of a program.

    Fresh multi-megabyte arrays come from ``mmap`` and cost a page fault per 4 KiB when first
    written, which was a third of a gradient run; reusing them avoids that.
    """

    def __init__(self):
        self._arrays: dict[str, np.ndarray] = {}

    def __call__(self, name: str, shape: tuple[int, ...], dtype=complex) -> np.ndarray:
        size = math.prod(shape)
        array = self._arrays.get(name)
        if array is None or array.dtype != dtype or array.size < size:
            array = self._arrays[name] = np.empty(size, dtype=dtype)
        return array[:size].reshape(shape)


class _Program:
    """A circuit compiled for batched simulation.

    Gates move left past gates on other qubits, so that parameterised single-qubit gates on one
    qubit merge into one 2x2 product per row and parameterised diagonal gates (RZ, P, CP, ...)
    merge into one elementwise phase. The leading single-qubit gates build a product state.
    Runs of gates without free parameters become one matrix each (a 2x2 butterfly on one qubit,
    else the full matrix, for small circuits). Other parameterised gates are batched matrix
    products.
    """

    def __init__(self, circuit: QuantumCircuit):
        self.num_qubits = circuit.num_qubits
        self.parameters = list(circuit.parameters)
        self.steps: list[_Step] = []
        self._angles: list = []
        self._add(circuit, list(range(circuit.num_qubits)))
        self.angles = compile_expressions(self._angles, self.parameters)
        self._buffers = _Buffers()
        self._lock = threading.Lock()  # the buffers belong to one run at a time
        if self.num_qubits <= _FUSE_MAX_QUBITS:
            self._fuse()
        # Leading parameterised single-qubit steps on distinct qubits act on |0...0>: they give
        # a product state, built from one 2-vector per qubit instead of full-state updates.
        seen: set[int] = set()
        self.prefix = 0
        for step in self.steps:
            if step.kind != "single" or step.qubits[0] in seen:
                break
            seen.add(step.qubits[0])
            self.prefix += 1
        for step in self.steps:
            if step.kind == "diagonal":
                step.matrix = _diagonal_tables(step.parts)

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
            elif op.name in KERNELS or op.name in _PHASES:
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
        """Multiply each run of consecutive static steps into one matrix: 2x2 if the run acts on
        one qubit (applied as a cheap butterfly), else the full 2^n x 2^n matrix."""
        n, fused, run = self.num_qubits, [], []

        def flush():
            if not run:
                return
            if len({q for step in run for q in step.qubits}) == 1 and all(
                len(step.qubits) == 1 for step in run
            ):
                matrix = np.eye(2, dtype=complex)
                for step in run:
                    matrix = step.matrix @ matrix
                fused.append(_Step("static", run[0].qubits, matrix))
            else:
                matrix = np.eye(2**n, dtype=complex)
                for step in run:
                    matrix = _embed(step.matrix, step.qubits, n) @ matrix
                fused.append(_Step("static", tuple(range(n)), matrix))
            run.clear()

        for step in self.steps:
            if step.kind == "static":
                run.append(step)
            else:
                flush()
                fused.append(step)
        flush()
        self.steps = fused

    def run(self, values: np.ndarray, consume: Callable[[np.ndarray], Any] | None = None):
        """Simulate every row of ``values`` (rows x parameters) from |0...0>.

        The states are amplitude-major, ``(2^n, rows)``: every elementwise operation then runs
        over long contiguous vectors instead of 2^n-wide rows. They live in work arrays that the
        next run reuses, so they are handed to ``consume`` and its result returned (without
        ``consume``, a copy of the states is returned).
        """
        with self._lock:
            state = self._simulate(np.asarray(values, dtype=float).reshape(len(values), -1))
            return consume(state) if consume is not None else state.copy()

    def _simulate(self, values: np.ndarray) -> np.ndarray:
        rows = values.shape[0]
        n, dim = self.num_qubits, 2**self.num_qubits
        buf = self._buffers
        angles = self.angles(values, out=buf("angles", (len(self._angles), rows), float))
        state, spare = self._product_state(angles, rows), "b"
        for step in self.steps[self.prefix :]:
            if step.kind == "static":
                if step.matrix.shape[0] == dim:
                    out = buf(spare, (dim, rows))
                    np.matmul(step.matrix, state, out=out)
                    state, spare = out, ("a" if spare == "b" else "b")
                elif len(step.qubits) == 1:
                    out = buf(spare, (dim, rows))
                    _butterfly(state, step.matrix, step.qubits[0], n, out, buf)
                    state, spare = out, ("a" if spare == "b" else "b")
                else:
                    state = _apply(state, step.matrix, step.qubits, n)
            elif step.kind == "diagonal":
                cols, factors, index = step.matrix
                num = len(cols)
                phase = buf("phase", (num, rows), float)
                np.take(angles, cols, axis=0, out=phase, mode="clip")
                phase *= factors[:, None]
                table = buf("table", (1 + 2 * num, rows))
                table[0] = 1.0
                table[1 : 1 + num].real, table[1 : 1 + num].imag = _trig(phase)
                np.conjugate(table[1 : 1 + num], out=table[1 + num :])
                factor = buf("factor", (dim, rows))
                for idx in index:
                    np.take(table, idx, axis=0, out=factor, mode="clip")
                    state *= factor
            elif step.kind == "single":
                m00, m01, m10, m11 = self._single_matrix(step, angles)
                q = step.qubits[0]
                psi = state.reshape(2 ** (n - q - 1), 2, 2**q, rows)
                zero, one = psi[:, 0], psi[:, 1]
                out = buf(spare, psi.shape)
                out[:, 0] = m00 * zero + m01 * one
                out[:, 1] = m10 * zero + m11 * one
                state, spare = out.reshape(dim, rows), ("a" if spare == "b" else "b")
            else:
                (kernel, columns, _), = step.parts
                state = _apply(state, kernel(angles[columns]), step.qubits, n)
        return state

    @staticmethod
    def _single_matrix(step: _Step, angles: np.ndarray) -> tuple:
        matrix = None
        for kernel, columns, _ in step.parts:
            m = kernel(angles[columns])
            matrix = m if matrix is None else _mul2(m, matrix)
        return matrix

    def _product_state(self, angles: np.ndarray, rows: int) -> np.ndarray:
        """The state after the leading single-qubit steps, as a product of 2-vectors (built in
        work array "a")."""
        vectors = {}
        for step in self.steps[: self.prefix]:
            (kernel, columns, _), *rest = step.parts
            v0, _, v1, _ = kernel(angles[columns])  # first column: the gate applied to |0>
            for kernel, columns, _ in rest:
                m00, m01, m10, m11 = kernel(angles[columns])
                v0, v1 = m00 * v0 + m01 * v1, m10 * v0 + m11 * v1
            vectors[step.qubits[0]] = (v0, v1)
        # alternate between "b" and "a" so that the last level (2^n amplitudes) lands in "a"
        names = ["a", "b"] * (self.num_qubits + 1)
        state = self._buffers(names[self.num_qubits], (1, rows))
        state[...] = 1.0
        for level, q in enumerate(reversed(range(self.num_qubits))):  # new qubit: lowest bit
            out = self._buffers(names[self.num_qubits - 1 - level], (state.shape[0], 2, rows))
            v0, v1 = vectors.get(q, (1.0, 0.0))
            np.multiply(state, v0, out=out[:, 0])
            np.multiply(state, v1, out=out[:, 1])
            state = out.reshape(-1, rows)
        return state


def _butterfly(state, matrix, q: int, n: int, out, buf) -> None:
    """``out`` = a constant 2x2 ``matrix`` on qubit ``q`` of amplitude-major states."""
    rows = state.shape[-1]
    psi = state.reshape(2 ** (n - q - 1), 2, 2**q, rows)
    res = out.reshape(psi.shape)
    zero, one = psi[:, 0], psi[:, 1]
    scratch = buf("scratch", zero.shape)
    for i in range(2):
        a, b = matrix[i]
        if b == 0:
            np.multiply(zero, a, out=res[:, i])
        elif a == 0:
            np.multiply(one, b, out=res[:, i])
        else:
            np.multiply(zero, a, out=res[:, i])
            res[:, i] += np.multiply(one, b, out=scratch)


def _diagonal_tables(parts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precompute a merged diagonal step.

    Part ``p`` multiplies basis state ``j`` by ``exp(i * a_p * phase_p[j])``, with only a few
    distinct phases per part (RZ: -1/2, 1/2; CP: 0, 1). So ``exp(i * a_p * f)`` is computed for
    each distinct positive ``|phase| = f`` only, negative phases are its conjugate, zero is 1, and
    the diagonal is the product over parts of these factors gathered by basis state.

    Returns:
        The angle column and factor ``f`` of every table entry, and for each part, the index of
        each basis state's factor in ``[1, table, conj(table)]``.
    """
    cols, factors, index = [], [], []
    for _, col, phases in parts:
        phases = phases[0]
        distinct = np.unique(np.abs(phases[phases != 0]))
        position = np.zeros(len(phases), dtype=int)  # 0: the constant 1
        for f in distinct:
            position[phases == f] = 1 + len(factors)
            position[phases == -f] = -(1 + len(factors))  # resolved to a conjugate below
            cols.append(col)
            factors.append(f)
        index.append(position)
    index = np.array(index)
    index = np.where(index < 0, -index + len(factors), index)
    return np.array(cols, dtype=int), np.array(factors, dtype=float), index


def _apply(state: np.ndarray, matrix: np.ndarray, qubits: tuple[int, ...], n: int) -> np.ndarray:
    """Apply a k-qubit matrix (static, or one per row) to amplitude-major ``(2^n, rows)`` states
    (the matrix index is little-endian over ``qubits``, as in Qiskit)."""
    rows, k = state.shape[1], len(qubits)
    psi = state.reshape((2,) * n + (rows,))
    source = [n - 1 - q for q in reversed(qubits)]  # axis of qubit q is n - 1 - q
    psi = np.moveaxis(psi, source, list(range(k)))
    shape = psi.shape
    psi = psi.reshape(2**k, -1, rows)
    if matrix.ndim == 2:
        out = (matrix @ psi.reshape(2**k, -1)).reshape(psi.shape)
    else:  # (rows, 2^k, 2^k): out[i] = sum_j m[:, i, j] * psi[j]
        out = np.zeros_like(psi)
        for i in range(2**k):
            for j in range(2**k):
                out[i] += matrix[:, i, j] * psi[j]
    out = np.moveaxis(out.reshape(shape), list(range(k)), source)
    return out.reshape(2**n, rows)


_PROGRAMS: IdentityCache[_Program] = IdentityCache()


def _program(circuit: QuantumCircuit) -> _Program:
    """The compiled program of ``circuit``, cached while the circuit object lives."""
    return _PROGRAMS.get(circuit, len(circuit.data), lambda: _Program(circuit))


def simulate_statevectors(circuit: QuantumCircuit, values: np.ndarray) -> np.ndarray:
    """Statevectors of ``circuit`` for each row of ``values``.

    Args:
        circuit: A circuit without measurements.
        values: ``(rows, circuit.num_parameters)`` values in ``circuit.parameters`` order.

    Returns:
        A complex array ``(rows, 2**num_qubits)`` in Qiskit's little-endian order.
    """
    values = np.asarray(values, dtype=float).reshape(-1, circuit.num_parameters)
    with single_threaded_blas():
        return _program(circuit).run(values, lambda states: np.ascontiguousarray(states.T))


def _expectation_plan(observables: list, num_qubits: int) -> list:
    """The observables (dicts of Pauli label -> coefficient, little-endian labels) compiled for
    :func:`_expectation_table`: per X mask, the observables using it and their weights.

    A Pauli string is ``P = (-i)^{#Y} Z^z X^x`` with ``<psi|P|psi> = sum_c conj(psi_c) P[c, c^x]
    psi_{c^x}``. Terms are grouped by X mask. For ``x != 0`` the amplitudes pair up (``c`` and
    ``c^x``) and, P being Hermitian, each pair contributes ``2 Re(conj(psi_c) P[c, c^x]
    psi_{c^x})``, so half the amplitudes suffice; for ``x = 0`` it is probabilities times signs.

    Raises:
        ValueError: A label is not a Pauli string, or an observable is not Hermitian.
    """
    dim = 2**num_qubits
    index = np.arange(dim)
    groups: dict[int, dict[int, np.ndarray]] = {}  # xmask -> observable -> weights over c
    for k, obs in enumerate(observables):
        for label, coeff in obs.items():
            if set(label) - set("IXYZ"):
                raise ValueError(f"observable term '{label}' is not a Pauli string")
            coeff = complex(coeff)
            if abs(coeff.imag) > 1e-10 * max(1.0, abs(coeff)):
                # distinct Pauli strings are independent: the sum is Hermitian iff all are real
                raise ValueError(
                    f"observable is not Hermitian: term '{label}' has coefficient {coeff}"
                )
            xmask = sum(1 << q for q, char in enumerate(reversed(label)) if char in "XY")
            parity = np.zeros(dim, dtype=int)
            for q, char in enumerate(reversed(label)):
                if char in "ZY":
                    parity ^= (index >> q) & 1
            weights = coeff.real * (-1j) ** label.count("Y") * (1.0 - 2.0 * parity)
            by_obs = groups.setdefault(xmask, {})
            by_obs[k] = by_obs.get(k, 0) + weights
    plan = []
    for xmask, by_obs in groups.items():
        ks = list(by_obs)
        weights = np.array([by_obs[k] for k in ks])  # (K_group, dim)
        if xmask == 0:  # diagonal terms: probabilities times real weights
            plan.append((xmask, ks, np.ascontiguousarray(weights.real), None))
        else:
            low = index[(index & (xmask & -xmask)) == 0]  # one amplitude of every pair
            plan.append((xmask, ks, np.ascontiguousarray(weights[:, low]), low))
    return plan


def _expectation_table(
    states: np.ndarray, observables: list, buffers: _Buffers | None = None, plan=None
) -> np.ndarray:
    """``<psi_r|O_k|psi_r>`` for amplitude-major ``(2^n, rows)`` states and observables given as
    dicts of Pauli label -> coefficient (see :func:`_expectation_plan`, or pass its ``plan``),
    as a real ``(rows, K)`` table."""
    buffers = buffers or _Buffers()
    dim, rows = states.shape
    if plan is None:
        plan = _expectation_plan(observables, dim.bit_length() - 1)
    table = np.zeros((len(observables), rows))
    for xmask, ks, weights, low in plan:
        if low is None:
            probs = buffers("probs", (dim, rows), float)
            square = buffers("square", (dim, rows), float)
            np.square(states.real, out=probs)
            probs += np.square(states.imag, out=square)
            table[ks] += weights @ probs
            continue
        prod = buffers("prod", (len(low), rows))
        partner = buffers("partner", (len(low), rows))
        np.take(states, low, axis=0, out=prod, mode="clip")
        np.conjugate(prod, out=prod)
        prod *= np.take(states, low ^ xmask, axis=0, out=partner, mode="clip")
        table[ks] += 2 * (weights @ prod).real
    return table.T


_OBSERVABLE_PLANS: IdentityCache[tuple[list, list]] = IdentityCache()


def _observable_plan(observables, num_qubits: int) -> tuple[list, list]:
    """The flat observable dicts of an ``ObservablesArray`` and their :func:`_expectation_plan`,
    cached while the array lives (callers that pass the same array every batch, as the QNN and
    the gradient do, skip converting and compiling the observables)."""
    def build() -> tuple[list, list]:
        obs_list = observables.ravel().tolist()
        return obs_list, _expectation_plan(obs_list, num_qubits)

    return _OBSERVABLE_PLANS.get(observables, num_qubits, build)


def _parameter_table(bindings, circuit: QuantumCircuit) -> np.ndarray:
    """The ``(rows, num_parameters)`` values of a PUB in ``circuit.parameters`` order; without a
    copy when the bindings are one array in that order already (the usual case)."""
    names = tuple(p.name for p in circuit.parameters)
    if len(bindings.data) == 1:
        (keys, array), = bindings.data.items()
        if tuple(getattr(k, "name", k) for k in keys) == names:
            return np.asarray(array, dtype=float).reshape(-1, len(names))
    return bindings.as_array(circuit.parameters).reshape(-1, len(names))


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

    def __init__(
        self, *, default_precision: float = 0.0, seed: int | np.random.Generator | None = None
    ):
        if default_precision < 0:
            raise ValueError("default_precision must be non-negative")
        self._default_precision = default_precision
        self._seed = seed

    @property
    def default_precision(self) -> float:
        """Precision used when none is given."""
        return self._default_precision

    def run(
        self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None, **unsupported
    ) -> PrimitiveJob[PrimitiveResult[PubResult]]:
        if unsupported:
            raise TypeError(
                f"BatchedStatevectorEstimator.run() got unsupported option(s) "
                f"{sorted(unsupported)}: an estimator takes precision=, not shots= "
                "(precision > 0 adds Gaussian noise of that standard deviation)"
            )
        if precision is None:
            precision = self._default_precision
        coerced = [EstimatorPub.coerce(pub, precision) for pub in pubs]
        for pub in coerced:
            if pub.precision < 0:
                raise ValueError(f"precision must be non-negative, got {pub.precision}")
        job = PrimitiveJob(self._run, coerced)
        submit_inline(job)
        return job

    def _run(self, pubs: list[EstimatorPub]) -> PrimitiveResult[PubResult]:
        rng = np.random.default_rng(self._seed)
        with single_threaded_blas():
            results = [self._run_pub(pub, rng) for pub in pubs]
        return PrimitiveResult(results, metadata={"version": 2})

    def _run_pub(self, pub: EstimatorPub, rng: np.random.Generator) -> PubResult:
        circuit = pub.circuit
        bindings = pub.parameter_values
        observables = pub.observables
        shape = np.broadcast_shapes(bindings.shape, observables.shape)
        if circuit.num_parameters:
            values = _parameter_table(bindings, circuit)
        else:
            values = np.zeros((int(np.prod(bindings.shape, dtype=int)), 0))
        obs_list, obs_plan = _observable_plan(observables, circuit.num_qubits)
        program = _program(circuit)
        table = program.run(
            values,
            lambda states: _expectation_table(states, obs_list, program._buffers, obs_plan),
        )
        param_idx = np.broadcast_to(np.arange(table.shape[0]).reshape(bindings.shape), shape)
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
