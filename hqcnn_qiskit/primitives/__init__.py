"""Batched Qiskit primitives: an exact V2 estimator, a one-PUB parameter-shift gradient, an
``EstimatorQNN`` whose forward pass is one PUB, and a call-counting estimator wrapper."""

from .counting import CountingEstimator
from .gradient import BatchedParamShiftEstimatorGradient
from .qnn import BatchedEstimatorQNN
from .statevector import BatchedStatevectorEstimator, UnsupportedGateError, simulate_statevectors

__all__ = [
    "BatchedEstimatorQNN",
    "BatchedParamShiftEstimatorGradient",
    "BatchedStatevectorEstimator",
    "CountingEstimator",
    "UnsupportedGateError",
    "simulate_statevectors",
]
