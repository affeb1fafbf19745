"""Measurement bases: how Pauli observables are grouped into measured circuits.

One grouping serves both the sampling estimator (:class:`hqcnn_qiskit.noisy.SamplingEstimator`
measures one circuit per basis) and the usage estimate of ``infer``
(:func:`hqcnn_qiskit.jobs.estimate_usage` counts executions per basis), so the estimate counts
the circuits the local engine runs. For the HQCNN's readout (``X_i`` and ``Z_i`` on every qubit)
it gives two bases: all-X and all-Z.

Pure Python; qiskit is imported only by :func:`measurement_bases`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["pauli_terms", "group_qubitwise", "measurement_bases"]

#: A Pauli term as ``{qubit: "X" | "Y" | "Z"}`` (identity factors left out).
Term = dict[int, str]


def pauli_terms(
    observables: Iterable[Mapping[str, complex]], position: Mapping[int, int] | None = None,
) -> tuple[list[Term], list[list[tuple[int, complex]]]]:
    """The distinct Pauli terms of ``observables``, in order of first appearance.

    Args:
        observables: Each a mapping ``{label: coefficient}`` with little-endian labels (qubit 0
            last), as the elements of a qiskit ``ObservablesArray``.
        position: Renumber qubit ``q`` as ``position[q]`` (e.g. device qubit -> index among a
            circuit's active qubits); ``None`` keeps the numbering.

    Returns:
        ``(terms, parts)``: the terms (the identity is ``{}``), and each observable as
        ``(term index, coefficient)`` pairs.

    Raises:
        ValueError: A term acts on a qubit that ``position`` does not list.
    """
    index: dict[tuple, int] = {}
    terms: list[Term] = []
    parts_of = []
    for obs in observables:
        parts = []
        for label, coeff in obs.items():
            term = {}
            for q, char in enumerate(reversed(label)):
                if char == "I":
                    continue
                if position is not None:
                    if q not in position:
                        raise ValueError(f"observable {label} acts on qubit {q}, which the "
                                         "circuit does not use")
                    q = position[q]
                term[q] = char
            key = tuple(sorted(term.items()))
            if key not in index:
                index[key] = len(terms)
                terms.append(term)
            parts.append((index[key], complex(coeff)))
        parts_of.append(parts)
    return terms, parts_of


def group_qubitwise(terms: Iterable[Term]) -> tuple[list[Term], list[int]]:
    """Greedy qubit-wise-commuting grouping, in term order.

    Each term joins the first basis it agrees with on every qubit both act on (the basis then
    takes the term's letters), else it opens a new basis. The result depends on the order of the
    terms and is not always the fewest bases (qiskit's ``group_commuting`` colours a graph and
    sometimes needs fewer), but it is what the sampling estimator measures.

    Returns:
        The bases, and the index of the basis of each term. Without terms (every observable
        the identity) one empty basis, ``[{}]``: the circuit still runs once.
    """
    bases: list[Term] = []
    which = []
    for term in terms:
        for b, basis in enumerate(bases):
            if all(basis.get(q, p) == p for q, p in term.items()):
                basis.update(term)
                which.append(b)
                break
        else:
            bases.append(dict(term))
            which.append(len(bases) - 1)
    return bases or [{}], which


def measurement_bases(observables) -> list[Term]:
    """The bases the sampling estimator measures for one PUB with these observables.

    Args:
        observables: Anything a qiskit ``ObservablesArray`` accepts (``SparsePauliOp``, labels,
            ``{label: coeff}`` dicts, or a list of them); coerced the same way an estimator PUB
            coerces them, so zero coefficients and repeated terms count as they do there.

    Returns:
        The bases (``{qubit: letter}``); ``[{}]`` (one circuit) when every term is the identity.
    """
    from qiskit.primitives.containers import ObservablesArray

    terms, _ = pauli_terms(ObservablesArray.coerce(observables).ravel().tolist())
    return group_qubitwise([t for t in terms if t])[0]
