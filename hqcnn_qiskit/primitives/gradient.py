"""Parameter-shift gradients that send one PUB per circuit.

qiskit-machine-learning's ``ParamShiftEstimatorGradient`` sends one single-row PUB for every
shifted parameter row of every (sample, observable) pair. This gradient keeps its API and its
maths (the unique-parameter gradient circuit and the chain rule) but stacks all shifted rows of
all samples into one parameter array per distinct circuit, with the distinct observables
broadcast against it, so a batch costs one estimator ``run`` with one PUB per circuit.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from copy import copy
from dataclasses import dataclass

import numpy as np
from qiskit.circuit import Parameter, ParameterExpression, QuantumCircuit
from qiskit.primitives import BaseEstimatorV2
from qiskit.primitives.containers.observables_array import ObservablesArray
from qiskit.providers import Options
from qiskit.quantum_info.operators.base_operator import BaseOperator
from qiskit.transpiler.passes import TranslateParameterizedGates
from qiskit_machine_learning.algorithm_job import AlgorithmJob
from qiskit_machine_learning.gradients import BaseEstimatorGradient, EstimatorGradientResult

from .expressions import compile_expressions
from .statevector import submit_inline

__all__ = ["BatchedParamShiftEstimatorGradient"]

# Gates where every angle enters once, through a generator with eigenvalues +-1/2 (up to a
# global phase), so the two-term shift rule with +-pi/2 is exact, with or without noise.
SHIFTABLE_GATES = [
    "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "sxdg", "cx", "cy", "cz", "ccx", "swap",
    "ecr", "rx", "ry", "rz", "p", "u1", "u", "u3", "u2", "cp", "cu1", "rxx", "ryy", "rzz", "rzx",
]  # fmt: skip


def _unique_parameters(circuit: QuantumCircuit):
    """Give every parameterised gate angle its own parameter.

    Returns:
        The new circuit, a map from each original parameter to ``(new parameter, d angle /
        d parameter)`` pairs, and a map from each new parameter to the angle it replaced.
    """
    out = circuit.copy_empty_like()
    out.global_phase = 0  # no effect on expectation values
    parameter_map: dict[Parameter, list] = {}
    angle_of: dict[Parameter, ParameterExpression] = {}
    for inst in circuit.data:
        op = inst.operation
        if any(isinstance(a, ParameterExpression) and a.parameters for a in op.params):
            op = op.copy()
            new_params = []
            for angle in op.params:
                if not (isinstance(angle, ParameterExpression) and angle.parameters):
                    new_params.append(angle)
                    continue
                fresh = Parameter(f"_g{len(angle_of)}")
                angle_of[fresh] = angle
                for p in angle.parameters:
                    parameter_map.setdefault(p, []).append((fresh, angle.gradient(p)))
                new_params.append(fresh)
            op.params = new_params
        out.append(op, inst.qubits, inst.clbits)
    return out, parameter_map, angle_of


_IDENTITY_PATTERNS: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}


def _by_identity(objects: Sequence) -> tuple[list, np.ndarray]:
    """The distinct objects of a sequence (by identity, in first-seen order) and the index of
    each item among them, without a Python loop over the items.

    The answer depends only on the pattern of ids, so it is memoised by that pattern: a QNN
    passes the same circuit / parameter / observable sequences every batch, and each is
    analysed several times per gradient call.
    """
    ids = np.fromiter(map(id, objects), dtype=np.uint64, count=len(objects))
    key = ids.tobytes()
    hit = _IDENTITY_PATTERNS.get(key)
    if hit is None:
        _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        hit = (first[order], rank[inverse.ravel()])
        hit[0].flags.writeable = hit[1].flags.writeable = False  # shared between callers
        if len(objects) <= 1 << 16:  # bounded: at most 32 patterns of 64k items
            if len(_IDENTITY_PATTERNS) >= 32:
                _IDENTITY_PATTERNS.clear()
            _IDENTITY_PATTERNS[key] = hit
    first, index = hit
    return [objects[i] for i in first.tolist()], index


_HASH = np.random.default_rng(12345).normal(size=4096)


def _unique_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, axis=0, return_inverse=True)`` (rows in another order), by sorting one
    random projection per row instead of whole rows, checked exactly afterwards."""
    if values.shape[1] > len(_HASH) or len(values) == 0:
        rows, inverse = np.unique(values, axis=0, return_inverse=True)
        return rows, inverse.ravel()
    keys = values @ _HASH[: values.shape[1]]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rows = values[first]
    inverse = inverse.ravel()
    if not np.array_equal(rows[inverse], values):  # a collision (or NaN): do it exactly
        rows, inverse = np.unique(values, axis=0, return_inverse=True)
        inverse = inverse.ravel()
    return rows, inverse


@dataclass
class _Plan:
    """Everything about one circuit that does not depend on the parameter values."""

    circuit: QuantumCircuit  # the gradient circuit (unique parameters), transpiled if asked
    layout: object
    g_values: object  # original values -> gradient-circuit values
    shifted: np.ndarray  # indices of the gradient-circuit parameters to shift
    jacobian: object  # original values -> d g_shifted / d p_requested, (rows, S, P)


class BatchedParamShiftEstimatorGradient(BaseEstimatorGradient):
    """Parameter-shift estimator gradient with one PUB per distinct circuit.

    Works with any ``BaseEstimatorV2``: the exact batched estimator, qiskit-aer's, our sampling
    estimators or IBM Runtime's. Each call of :meth:`run` makes exactly one ``estimator.run`` call
    holding one PUB per distinct (circuit, requested parameters) pair.

    Args:
        estimator: The estimator that evaluates the shifted circuits.
        options: Default run options (``precision``) for the estimator.
        pass_manager: Optional pass manager applied once to each gradient circuit.
    """

    def __init__(
        self,
        estimator: BaseEstimatorV2,
        *,
        options: Options | None = None,
        pass_manager=None,
    ):
        super().__init__(estimator, options=options, pass_manager=pass_manager)
        self._plans: dict[tuple, _Plan] = {}
        # distinct observables of a PUB -> (those operators, their ObservablesArray)
        self._observable_arrays: dict[tuple, tuple[list, ObservablesArray]] = {}
        self._spare_shifts: list[np.ndarray] = []  # see _shift_buffer
        self._lent_shifts: list[np.ndarray] = []
        self._keepalive: dict[int, QuantumCircuit] = {}

    def run(
        self,
        circuits: Sequence[QuantumCircuit],
        observables: Sequence[BaseOperator],
        parameter_values: Sequence[Sequence[float]] | np.ndarray,
        parameters: Sequence[Sequence[Parameter] | None] | None = None,
        **options,
    ) -> AlgorithmJob:
        """Run the gradient job (same contract as ``BaseEstimatorGradient.run``).

        Rows that share a circuit share one parameter list, instead of one list per row.
        """
        if isinstance(circuits, QuantumCircuit):
            circuits = (circuits,)
        if isinstance(observables, BaseOperator):
            observables = (observables,)
        distinct, index = _by_identity(circuits)
        views = [c.parameters for c in distinct]  # one parameter view per distinct circuit
        if parameters is None:
            parameters = [views[k] for k in index.tolist()]
        else:
            parameters = [
                p if p is not None else views[k] for k, p in zip(index.tolist(), parameters)
            ]
        self._validate_arguments(circuits, observables, parameter_values, parameters)
        opts = copy(self._default_options)
        opts.update_options(**options)
        job = AlgorithmJob(
            self._run, circuits, observables, parameter_values, parameters, **opts.__dict__
        )
        submit_inline(job)  # no worker thread: see submit_inline
        return job

    # The stock validation walks every (sample, observable) pair; pairs sharing the same
    # circuit and parameter list are checked once.
    def _validate_arguments(self, circuits, observables, parameter_values, parameters):
        if not len(circuits) == len(observables) == len(parameter_values) == len(parameters):
            raise ValueError(
                f"got {len(circuits)} circuits, {len(observables)} observables, "
                f"{len(parameter_values)} parameter rows and {len(parameters)} parameter lists"
            )
        if not len(circuits):
            return
        columns = [_by_identity(seq)[1] for seq in (circuits, parameters, observables)]
        if not (isinstance(parameter_values, np.ndarray) and parameter_values.ndim == 2):
            lengths = np.fromiter(map(len, parameter_values), dtype=np.int64)
            columns.append(np.unique(lengths, return_inverse=True)[1].ravel())
        sizes = [int(c.max()) + 1 for c in columns]
        if math.prod(sizes) < 2**62:  # one integer per distinct combination: a 1-D unique
            key = np.zeros(len(circuits), dtype=np.int64)
            for column, size in zip(columns, sizes):
                key = key * size + column
            _, first = np.unique(key, return_index=True)
        else:
            _, first = np.unique(np.column_stack(columns), axis=0, return_index=True)
        for i in first.tolist():
            super()._validate_arguments(
                [circuits[i]], [observables[i]], [parameter_values[i]], [parameters[i]]
            )

    def _plan(self, circuit: QuantumCircuit, parameters: Sequence[Parameter]) -> _Plan:
        key = (id(circuit), tuple(parameters))
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        translator = TranslateParameterizedGates(SHIFTABLE_GATES)
        g_circuit, parameter_map, angle_of = _unique_parameters(translator(circuit))
        g_params = list(g_circuit.parameters)
        g_values = compile_expressions([angle_of[g] for g in g_params], list(circuit.parameters))
        position = {g: i for i, g in enumerate(g_params)}
        shifted = sorted({position[g] for p in parameters for g, _ in parameter_map.get(p, [])})
        slot = {g: s for s, g in enumerate(shifted)}
        coeff_exprs, coeff_targets = [], []
        for j, p in enumerate(parameters):
            for g, coeff in parameter_map.get(p, []):
                coeff_exprs.append(coeff)
                coeff_targets.append((slot[position[g]], j))
        coeffs = compile_expressions(coeff_exprs, list(circuit.parameters))
        num_shifted, num_requested = len(shifted), len(parameters)
        constant = all(
            not isinstance(c, ParameterExpression) or not c.parameters for c in coeff_exprs
        )
        targets = np.array(coeff_targets, dtype=int).reshape(-1, 2)

        def jacobian(values: np.ndarray) -> np.ndarray:
            rows = 1 if constant else values.shape[0]
            c = coeffs(values[:rows])
            jac = np.zeros((rows, num_shifted, num_requested))
            np.add.at(jac, (slice(None), targets[:, 0], targets[:, 1]), c)
            return jac

        layout = None
        if self._pass_manager is not None:
            g_circuit = self._pass_manager.run(g_circuit)
            layout = g_circuit.layout
        plan = _Plan(g_circuit, layout, g_values, np.array(shifted, dtype=int), jacobian)
        self._plans[key] = plan
        self._keepalive[id(circuit)] = circuit  # ids stay valid while plans are cached
        return plan

    def _shift_buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialised float array for the shifted parameter values of one PUB.

        Fresh megabyte arrays cost a page fault per 4 KiB on first write (half a millisecond
        at batch 128); arrays that no one references any more after a run are reused instead.
        """
        size = math.prod(shape)
        try:
            buffer = self._spare_shifts.pop()
        except IndexError:
            buffer = None
        if buffer is None or buffer.size < size:
            buffer = np.empty(size)
        self._lent_shifts.append(buffer)
        return buffer[:size].reshape(shape)

    def _release_shift_buffers(self) -> None:
        """Keep the buffers of this run that nothing references any more (the PUBs and any
        views of them are gone: only the list and ``getrefcount``'s argument hold them)."""
        lent, self._lent_shifts = self._lent_shifts, []
        while lent:
            buffer = lent.pop()
            if sys.getrefcount(buffer) == 2 and len(self._spare_shifts) < 4:
                self._spare_shifts.append(buffer)

    def _observables_array(self, plan: _Plan, observables: list) -> ObservablesArray:
        """``observables`` (laid out for the plan's circuit) as an ``ObservablesArray``, the same
        object while the same operator objects come back (each batch of a QNN): coercion is
        skipped and the estimator can reuse what it derived from the array."""
        key = (id(plan), *map(id, observables))
        hit = self._observable_arrays.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], observables)):
            return hit[1]
        laid_out = observables
        if plan.layout is not None:
            laid_out = [op.apply_layout(plan.layout) for op in observables]
        array = ObservablesArray(laid_out)
        if len(self._observable_arrays) > 64:  # bounded: callers with fresh operators each time
            self._observable_arrays.clear()
        self._observable_arrays[key] = (list(observables), array)  # keeps the ids valid
        return array

    def _run(
        self,
        circuits: Sequence[QuantumCircuit],
        observables: Sequence[BaseOperator],
        parameter_values: Sequence[Sequence[float]] | np.ndarray,
        parameters: Sequence[Sequence[Parameter]],
        **options,
    ) -> EstimatorGradientResult:
        num = len(circuits)
        _, circuit_index = _by_identity(circuits)
        param_lists, param_index = _by_identity(parameters)
        canonical: dict[tuple, int] = {}  # equal parameter lists share a group
        param_group = np.array(
            [canonical.setdefault(tuple(p), len(canonical)) for p in param_lists], dtype=int
        )
        _, obs_index = _by_identity(observables)
        keys = circuit_index * max(len(canonical), 1) + param_group[param_index]
        _, group_of = np.unique(keys, return_inverse=True)
        group_of = group_of.ravel()
        values_all = None
        if isinstance(parameter_values, np.ndarray) and parameter_values.ndim == 2:
            values_all = np.asarray(parameter_values, dtype=float)
        pubs, unpack = [], []
        for g in range(int(group_of.max()) + 1 if num else 0):
            members = np.flatnonzero(group_of == g)
            first = int(members[0])
            circuit = circuits[first]
            plan = self._plan(circuit, list(parameters[first]))
            if values_all is not None:
                values = values_all[members]
            else:
                values = np.asarray([parameter_values[i] for i in members.tolist()], dtype=float)
            rows, row_of = _unique_rows(values)
            _, obs_first, obs_of = np.unique(
                obs_index[members], return_index=True, return_inverse=True
            )
            obs_of = obs_of.ravel()
            distinct_obs = [observables[i] for i in members[obs_first].tolist()]
            distinct_obs = self._observables_array(plan, distinct_obs)
            g_rows = plan.g_values(rows)  # (R, G)
            offsets = np.zeros((len(plan.shifted), g_rows.shape[1]))
            offsets[np.arange(len(plan.shifted)), plan.shifted] = np.pi / 2
            shifted = self._shift_buffer((len(g_rows), 2) + offsets.shape)  # (R, 2, S, G)
            np.add(g_rows[:, None, :], offsets, out=shifted[:, 0])
            np.subtract(g_rows[:, None, :], offsets, out=shifted[:, 1])
            pubs.append((plan.circuit, distinct_obs, shifted[:, :, :, None, :]))
            unpack.append((plan, members, rows, row_of.ravel(), obs_of))

        run_options = {k: v for k, v in options.items() if k == "precision" and v is not None}
        results = self._estimator.run(pubs, **run_options).result() if pubs else []

        gradients: list[np.ndarray | None] = [None] * num
        for result, (plan, members, rows, row_of, obs_of) in zip(results, unpack):
            evs = np.asarray(result.data.evs)  # (R, 2, S, K)
            g_grad = (evs[:, 0] - evs[:, 1]) / 2  # (R, S, K)
            jac = plan.jacobian(rows)  # (1 or R, S, P)
            # chain rule, as one matrix product: (R, P, S) @ (R, S, K) -> (R, P, K)
            grad = np.matmul(np.swapaxes(jac, 1, 2), g_grad)
            picked = grad[row_of, :, obs_of]  # (members, P)
            if len(members) == num:  # one group, rows in order: the common case
                gradients = list(picked)
            else:
                for i, row in zip(members.tolist(), picked):
                    gradients[i] = row
        pubs = results = shifted = None  # drop the references to the shift buffers
        self._release_shift_buffers()
        # one metadata dict per distinct parameter list (thousands of rows share a few)
        shared = [{"parameters": p} for p in param_lists]
        metadata = [shared[k] for k in param_index.tolist()]
        return EstimatorGradientResult(
            gradients=gradients, metadata=metadata, options=Options(**options)
        )
