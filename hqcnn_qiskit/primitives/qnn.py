"""An ``EstimatorQNN`` whose forward pass is one PUB per circuit."""

from __future__ import annotations

import numpy as np
from qiskit.primitives.containers.observables_array import ObservablesArray
from qiskit_machine_learning.neural_networks import EstimatorQNN

__all__ = ["BatchedEstimatorQNN"]


class BatchedEstimatorQNN(EstimatorQNN):
    """``EstimatorQNN`` that sends its forward pass as a single broadcast PUB.

    The stock forward pass sends one PUB per observable. Here the ``(samples, 1)`` parameter
    array broadcasts against the ``(observables,)`` array in one PUB, which the V2 primitives
    (and IBM Runtime) evaluate as a single unit of work. Everything else, including the
    backward pass through the configured gradient, is inherited unchanged.
    """

    def _forward(self, input_data: np.ndarray | None, weights: np.ndarray | None) -> np.ndarray:
        parameter_values, num_samples = self._preprocess_forward(input_data, weights)
        pub = (self._circuit, self._observables_array(), parameter_values[:, None, :])
        job = self.estimator.run([pub], precision=self._default_precision)
        evs = np.asarray(job.result()[0].data.evs, dtype=float)
        return evs.reshape(num_samples, len(self._observables))

    def _observables_array(self) -> ObservablesArray:
        """The observables coerced once (coercion costs more than a small exact batch) and
        reused while ``self._observables`` is unchanged; estimators may also cache work on the
        array itself."""
        cached = getattr(self, "_coerced_observables", None)
        if cached is None or cached[0] is not self._observables:
            cached = (self._observables, ObservablesArray(list(self._observables)))
            self._coerced_observables = cached
        return cached[1]
