"""Parameter-shift gradients that send one PUB per circuit.

qiskit-machine-learning's ``ParamShiftEstimatorGradient`` sends one single-row PUB for every
shifted parameter row of every (sample, observable) pair. This gradient keeps its API and its
maths (the unique-parameter gradient circuit and the chain rule) but stacks all shifted rows of
all samples into one parameter array per distinct circuit, with the distinct observables
broadcast against it, so a batch costs one estimator ``run`` with one PUB per circuit.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import copy
from dataclasses import dataclass

import numpy as np
from qiskit.circuit import Parameter, ParameterExpression, QuantumCircuit
from qiskit.primitives import BaseEstimatorV2
from qiskit.providers import Options
from qiskit.quantum_info.operators.base_operator import BaseOperator
from qiskit.transpiler.passes import TranslateParameterizedGates
from qiskit_machine_learning.algorithm_job import AlgorithmJob
from qiskit_machine_learning.gradients import BaseEstimatorGradient, EstimatorGradientResult

from .expressions import compile_expressions

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
        views: dict[int, Sequence[Parameter]] = {}

        def all_parameters(circuit):
            view = views.get(id(circuit))
            if view is None:
                view = views[id(circuit)] = circuit.parameters
            return view

        if parameters is None:
            parameters = [all_parameters(c) for c in circuits]
        else:
            parameters = [
                p if p is not None else all_parameters(c) for c, p in zip(circuits, parameters)
            ]
        self._validate_arguments(circuits, observables, parameter_values, parameters)
        opts = copy(self._default_options)
        opts.update_options(**options)
        job = AlgorithmJob(
            self._run, circuits, observables, parameter_values, parameters, **opts.__dict__
        )
        job.submit()
        return job

    # The stock validation walks every (sample, observable) pair; pairs sharing the same
    # circuit and parameter list are checked once.
    def _validate_arguments(self, circuits, observables, parameter_values, parameters):
        if not len(circuits) == len(observables) == len(parameter_values) == len(parameters):
            raise ValueError(
                f"got {len(circuits)} circuits, {len(observables)} observables, "
                f"{len(parameter_values)} parameter rows and {len(parameters)} parameter lists"
            )
        seen = set()
        for circuit, observable, values, params in zip(
            circuits, observables, parameter_values, parameters
        ):
            key = (id(circuit), id(params), id(observable), len(values))
            if key in seen:
                continue
            seen.add(key)
            super()._validate_arguments([circuit], [observable], [values], [params])

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

    def _run(
        self,
        circuits: Sequence[QuantumCircuit],
        observables: Sequence[BaseOperator],
        parameter_values: Sequence[Sequence[float]] | np.ndarray,
        parameters: Sequence[Sequence[Parameter]],
        **options,
    ) -> EstimatorGradientResult:
        groups: dict[tuple, list[int]] = {}
        params_of: dict[tuple, Sequence[Parameter]] = {}
        as_tuple: dict[int, tuple] = {}  # the same list object is usually shared by all rows
        canonical: dict[tuple, tuple] = {}
        for i, (circuit, params) in enumerate(zip(circuits, parameters)):
            frozen = as_tuple.get(id(params))
            if frozen is None:  # equal lists map to one tuple object
                frozen = tuple(params)
                frozen = as_tuple[id(params)] = canonical.setdefault(frozen, frozen)
            key = (id(circuit), id(frozen))
            groups.setdefault(key, []).append(i)
            params_of[key] = params
        pubs, unpack = [], []
        for key, members in groups.items():
            circuit = circuits[members[0]]
            plan = self._plan(circuit, list(params_of[key]))
            values = np.asarray([parameter_values[i] for i in members], dtype=float)
            rows, row_of = np.unique(values, axis=0, return_inverse=True)
            obs_ids: dict[int, int] = {}
            distinct_obs = []
            obs_of = np.empty(len(members), dtype=int)
            for m, i in enumerate(members):
                k = obs_ids.get(id(observables[i]))
                if k is None:
                    k = obs_ids[id(observables[i])] = len(distinct_obs)
                    distinct_obs.append(observables[i])
                obs_of[m] = k
            if plan.layout is not None:
                distinct_obs = [op.apply_layout(plan.layout) for op in distinct_obs]
            g_rows = plan.g_values(rows)  # (R, G)
            offsets = np.zeros((len(plan.shifted), g_rows.shape[1]))
            offsets[np.arange(len(plan.shifted)), plan.shifted] = np.pi / 2
            shifted = np.stack(
                [g_rows[:, None, :] + offsets, g_rows[:, None, :] - offsets], axis=1
            )  # (R, 2, S, G)
            pubs.append((plan.circuit, distinct_obs, shifted[:, :, :, None, :]))
            unpack.append((plan, members, rows, row_of.ravel(), obs_of))

        run_options = {k: v for k, v in options.items() if k == "precision" and v is not None}
        results = self._estimator.run(pubs, **run_options).result() if pubs else []

        num = len(circuits)
        gradients: list[np.ndarray | None] = [None] * num
        for result, (plan, members, rows, row_of, obs_of) in zip(results, unpack):
            evs = np.asarray(result.data.evs)  # (R, 2, S, K)
            g_grad = (evs[:, 0] - evs[:, 1]) / 2  # (R, S, K)
            jac = plan.jacobian(rows)  # (1 or R, S, P)
            grad = np.einsum("rsk,rsp->rpk", g_grad, np.broadcast_to(jac, (len(rows),) + jac.shape[1:]))
            picked = grad[row_of, :, obs_of]  # (members, P)
            for m, i in enumerate(members):
                gradients[i] = picked[m]
        metadata = [{"parameters": p} for p in parameters]
        return EstimatorGradientResult(
            gradients=gradients, metadata=metadata, options=Options(**options)
        )
