"""Backends: a profile (data) turned into the estimator, gradient and QNN that run the circuit.

``get_backend("aer_ideal")`` loads the profile and builds the object for its ``kind`` from the
registry below; nothing else in the package branches on a backend's name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from qiskit.circuit import Parameter, QuantumCircuit
from qiskit.quantum_info import SparsePauliOp

from .errors import BackendError
from .primitives import (
    BatchedEstimatorQNN,
    BatchedParamShiftEstimatorGradient,
    BatchedStatevectorEstimator,
)
from .profiles import BackendProfile, list_profiles, load_profile

__all__ = ["QuantumBackend", "ExactBackend", "get_backend", "register_kind", "list_backends"]


class QuantumBackend:
    """Base class: what the model needs from a backend.

    Args:
        profile: The profile this backend was built from.
    """

    def __init__(self, *, profile: BackendProfile):
        self.profile = profile

    @property
    def name(self) -> str:
        """The profile name."""
        return self.profile.name

    def estimator(self):
        """The ``BaseEstimatorV2`` that evaluates the circuit."""
        raise NotImplementedError

    def prepare(
        self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp]
    ) -> tuple[QuantumCircuit, list[SparsePauliOp]]:
        """The circuit and observables as this backend runs them (e.g. transpiled to an ISA)."""
        return circuit, list(observables)

    def build_qnn(
        self,
        *,
        circuit: QuantumCircuit,
        input_params: Sequence[Parameter],
        weight_params: Sequence[Parameter],
        observables: Sequence[SparsePauliOp],
    ) -> BatchedEstimatorQNN:
        """An ``EstimatorQNN`` (with input gradients) running on this backend.

        The circuit is prepared once here and reused for every batch and every gradient.
        """
        prepared, obs = self.prepare(circuit, observables)
        estimator = self.estimator()
        # None (unset or 0) lets the estimator use its own default: exact values here, the
        # profile's shots on sampling kinds; IBM's estimator refuses a precision of 0
        precision = self.profile.precision or None
        return BatchedEstimatorQNN(
            circuit=prepared,
            estimator=estimator,
            observables=obs,
            input_params=list(input_params),
            weight_params=list(weight_params),
            gradient=BatchedParamShiftEstimatorGradient(estimator),
            input_gradients=True,
            default_precision=precision,
        )

    def describe(self) -> dict:
        """Facts for logs and run folders (never credentials)."""
        return {"name": self.name, "kind": self.profile.kind, "device": self.profile.device}

    def rng_state(self) -> dict:
        """The state of the random streams this backend draws from (shots, twirls) and of what
        it has already drawn and kept (readout calibrations), for a checkpoint; empty for a
        deterministic backend."""
        return {}

    def set_rng_state(self, state: dict) -> None:
        """Restore what :meth:`rng_state` returned, so a resumed run draws the same shots."""
        if state:
            raise BackendError(f"backend {self.name} has no random state to restore")


class ExactBackend(QuantumBackend):
    """Exact expectation values from the batched statevector estimator."""

    def estimator(self):
        return BatchedStatevectorEstimator(
            default_precision=self.profile.precision or 0.0, seed=self.profile.seed
        )


_KINDS: dict[str, Callable[[BackendProfile], QuantumBackend]] = {
    "exact": lambda profile: ExactBackend(profile=profile),
}


def register_kind(kind: str, factory: Callable[[BackendProfile], QuantumBackend]) -> None:
    """Add (or replace) the builder of a profile ``kind``."""
    _KINDS[kind] = factory


def _ensure_kinds_loaded() -> None:
    """Import the modules that register the optional kinds (kept lazy: they pull in Aer and
    qiskit-ibm-runtime)."""
    import importlib

    for module in ("hqcnn_qiskit.noisy", "hqcnn_qiskit.ibm"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def get_backend(backend: str | Path | BackendProfile | QuantumBackend = "aer_ideal") -> QuantumBackend:
    """Turn a profile name, a profile file path or a profile into a backend object.

    Raises:
        BackendError: Unknown profile, invalid file, or a kind that is not available.
    """
    if isinstance(backend, QuantumBackend):
        return backend
    profile = backend if isinstance(backend, BackendProfile) else load_profile(backend)
    if profile.kind not in _KINDS:
        _ensure_kinds_loaded()
    if profile.kind not in _KINDS:
        raise BackendError(f"{profile.source}: kind '{profile.kind}' is not available yet")
    return _KINDS[profile.kind](profile)


def list_backends() -> list[BackendProfile]:
    """The shipped profiles."""
    return list_profiles()
