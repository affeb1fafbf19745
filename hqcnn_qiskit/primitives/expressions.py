"""Vectorised evaluation of circuit parameter expressions.

Gate angles in a Qiskit circuit are floats, bare :class:`~qiskit.circuit.Parameter` objects or
:class:`~qiskit.circuit.ParameterExpression` objects (``2*x``, ``θ + π``, ``a + b`` after
transpilation). The batched primitives need every angle for thousands of parameter rows at once,
so each expression is compiled once into a small affine map (the common case) or a NumPy
function (through SymPy, for anything non-linear).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import numpy as np
from qiskit.circuit import Parameter, ParameterExpression

__all__ = ["compile_expressions"]


def _affine(expr: ParameterExpression, index: dict[Parameter, int]):
    """Return ``(coeffs, const)`` when ``expr`` is affine in its parameters, else ``None``."""
    coeffs = {}
    for param in expr.parameters:
        grad = expr.gradient(param)
        if isinstance(grad, ParameterExpression):
            if grad.parameters:
                return None
            grad = complex(grad)
        grad = complex(grad)
        if abs(grad.imag) > 0:
            return None
        coeffs[index[param]] = grad.real
    const = expr.bind({p: 0.0 for p in expr.parameters})
    const = complex(const)
    if abs(const.imag) > 0:
        return None
    return coeffs, const.real


def compile_expressions(
    exprs: Sequence[float | ParameterExpression], parameters: Sequence[Parameter]
) -> Callable[[np.ndarray], np.ndarray]:
    """Compile angles into one function of a parameter table.

    Args:
        exprs: The angles (numbers, parameters or expressions of ``parameters``).
        parameters: The parameters whose values form the columns of the table.

    Returns:
        A function mapping a ``(rows, len(parameters))`` array to a ``(rows, len(exprs))`` array.

    Raises:
        ValueError: An expression uses a parameter that is not in ``parameters``.
    """
    index = {p: i for i, p in enumerate(parameters)}
    num = len(exprs)
    matrix = np.zeros((len(parameters), num))
    offset = np.zeros(num)
    nonlinear: list[tuple[int, Callable, list[int]]] = []
    for j, expr in enumerate(exprs):
        if not isinstance(expr, ParameterExpression):
            offset[j] = float(expr)
            continue
        missing = [p.name for p in expr.parameters if p not in index]
        if missing:
            raise ValueError(f"angle {expr} uses unbound parameter(s) {missing}")
        if isinstance(expr, Parameter):
            matrix[index[expr], j] = 1.0
            continue
        affine = _affine(expr, index)
        if affine is not None:
            coeffs, const = affine
            for i, c in coeffs.items():
                matrix[i, j] = c
            offset[j] = const
            continue
        import sympy  # only for non-linear expressions

        params = sorted(expr.parameters, key=lambda p: p.name)
        symbols = [sympy.Symbol(p.name) for p in params]
        func = sympy.lambdify(symbols, expr.sympify(), modules="numpy", dummify=True)
        nonlinear.append((j, func, [index[p] for p in params]))

    # Usually every angle is one parameter times a number (plus a constant): a column gather
    # then beats the matrix product by far.
    nonzero = matrix != 0
    gather = len(parameters) > 0 and bool(np.all(nonzero.sum(axis=0) <= 1))
    source = nonzero.argmax(axis=0) if gather else None
    scale = matrix[source, np.arange(num)] if gather else None

    unit_scale = gather and bool(np.all(scale == 1))
    any_offset = bool(np.any(offset != 0))

    def evaluate(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The ``(rows, len(exprs))`` angles, or, if ``out`` is given, their transpose written
        into ``out`` (``(len(exprs), rows)``, for amplitude-major simulation)."""
        values = np.asarray(values, dtype=float)
        if out is None:
            if gather:
                result = values[:, source] * scale + offset
            else:
                result = values @ matrix + offset
            for j, func, cols in nonlinear:
                result[:, j] = np.real(func(*(values[:, c] for c in cols)))
            return result
        columns = values.T
        if gather:
            np.take(columns, source, axis=0, out=out, mode="clip")
            if not unit_scale:
                out *= scale[:, None]
        else:
            np.matmul(matrix.T, columns, out=out)
        if any_offset:
            out += offset[:, None]
        for j, func, cols in nonlinear:
            out[j] = np.real(func(*(columns[c] for c in cols)))
        return out

    return evaluate
