"""A ``BaseEstimatorV2`` wrapper that counts calls and PUBs (for tests and benchmarks)."""

from __future__ import annotations

from qiskit.primitives import BaseEstimatorV2

__all__ = ["CountingEstimator"]


class CountingEstimator(BaseEstimatorV2):
    """Forwards every ``run`` to another estimator and records what was sent.

    Args:
        estimator: The estimator doing the work.

    Attributes:
        calls: Number of ``run`` calls.
        pubs: Number of PUBs over all calls.
        rows: Number of broadcast elements (parameter rows x observables) over all PUBs.
    """

    def __init__(self, estimator: BaseEstimatorV2):
        self.estimator = estimator
        self.reset()

    def reset(self) -> None:
        """Zero the counters."""
        self.calls = 0
        self.pubs = 0
        self.rows = 0

    def run(self, pubs, *, precision=None):
        from qiskit.primitives.containers.estimator_pub import EstimatorPub

        pubs = [EstimatorPub.coerce(pub, precision) for pub in pubs]
        self.calls += 1
        self.pubs += len(pubs)
        self.rows += sum(int(pub.parameter_values.size) for pub in pubs)
        return self.estimator.run(pubs, precision=precision)

    def __getattr__(self, name):  # options, backend, ... of the wrapped estimator
        if name == "estimator":
            raise AttributeError(name)
        return getattr(self.estimator, name)
