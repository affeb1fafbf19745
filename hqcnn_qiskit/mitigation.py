"""Client-side error mitigation, and the IBM Runtime options the same profile fields map onto.

Everything here works on circuits that are already in the device ISA and on measured outcome
probabilities, so it runs the same on Aer and in qiskit-ibm-runtime's local testing mode (which
ignores the runtime's own mitigation options):

* readout mitigation, either with calibrated per-qubit confusion matrices (``readout = "matrix"``:
  two calibration circuits, |0...0> and |1...1>, then the tensor product of the inverse 2x2
  matrices is applied to the outcome distribution) or with measurement twirling as in TREX
  (``readout = "twirl"``: random X before each measurement, flipped back classically, which makes
  the readout noise diagonal in the Pauli basis; each Pauli expectation is then divided by the
  same quantity measured on a twirled |0...0> calibration circuit);
* zero-noise extrapolation by folding every 2-qubit gate ``G -> G (G^dag G)^k`` with ISA gates
  only, then a linear or exponential fit to noise factor 0.

mthree 3.0.0 and mitiq 1.1.0 were considered: mitiq pins numpy below 2.3 and pulls cirq-core,
mthree pulls extra runtime dependencies; what we need is small enough to keep here, tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from qiskit.circuit import QuantumCircuit
from qiskit.transpiler import Target

from .errors import BackendError
from .profiles import BackendProfile, MitigationSettings
from .transpile import IGNORED_OPS

__all__ = [
    "fold_two_qubit_gates",
    "extrapolate",
    "ReadoutCalibration",
    "twirl_masks",
    "runtime_options",
]


# Zero-noise extrapolation ---------------------------------------------------------------------
def fold_two_qubit_gates(
    circuit: QuantumCircuit, factor: int, *, target: Target | None = None
) -> QuantumCircuit:
    """Scale the 2-qubit gate noise by ``factor`` (odd): ``G -> G (G^dag G)^((factor-1)/2)``.

    The inverse of each ISA 2-qubit gate (``ecr``, ``cz``, ``cx`` are their own inverses) must be
    in the target too, so the folded circuit stays inside the device ISA and is not transpiled
    again (which would cancel the folds). Barriers between folds keep any later optimisation
    from cancelling them.

    Raises:
        ValueError: ``factor`` is not a positive odd integer.
        BackendError: A gate's inverse is not in the target's ISA.
    """
    if factor < 1 or factor % 2 == 0:
        raise ValueError(f"noise factor must be a positive odd integer, got {factor}")
    if factor == 1:
        return circuit.copy()
    folds = (factor - 1) // 2
    out = circuit.copy_empty_like()
    for inst in circuit.data:
        op = inst.operation
        out.append(op, inst.qubits, inst.clbits)
        if op.num_qubits != 2 or op.name in IGNORED_OPS or inst.clbits:
            continue
        inverse = op.inverse()
        if target is not None:
            qargs = tuple(circuit.find_bit(q).index for q in inst.qubits)
            if not target.instruction_supported(inverse.name, qargs):
                raise BackendError(
                    f"cannot fold '{op.name}': its inverse '{inverse.name}' is not in the ISA"
                )
        for _ in range(folds):
            out.barrier(inst.qubits)
            out.append(inverse, inst.qubits)
            out.append(op, inst.qubits)
            out.barrier(inst.qubits)
    return out


def extrapolate(
    factors: Sequence[float], values: np.ndarray, method: str = "linear"
) -> np.ndarray:
    """Extrapolate ``values[k]`` measured at noise ``factors[k]`` to zero noise.

    Args:
        factors: The noise scale factors.
        values: Array of shape ``(len(factors), ...)``.
        method: ``"linear"`` (least-squares line) or ``"exponential"`` (``a * exp(-b * f)``
            fitted on ``|values|`` with the sign of the unscaled value, falling back to linear
            where the values change sign or vanish).

    Returns:
        The zero-noise values, shape ``values.shape[1:]``, clipped to [-1, 1] (Pauli
        expectation values).
    """
    x = np.asarray(factors, dtype=float)
    y = np.asarray(values, dtype=float)
    flat = y.reshape(len(x), -1)
    design = np.vstack([np.ones_like(x), x]).T
    coef, *_ = np.linalg.lstsq(design, flat, rcond=None)
    linear = coef[0]
    if method == "linear":
        out = linear
    elif method == "exponential":
        sign = np.sign(flat[0])
        ok = np.all(flat * sign > 1e-3, axis=0)
        logs = np.log(np.where(ok, flat * sign, 1.0))
        lcoef, *_ = np.linalg.lstsq(design, logs, rcond=None)
        out = np.where(ok, sign * np.exp(lcoef[0]), linear)
    else:
        raise ValueError(f"unknown extrapolator '{method}'")
    return np.clip(out, -1.0, 1.0).reshape(y.shape[1:])


# Readout mitigation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ReadoutCalibration:
    """Per-qubit readout errors of the measured qubits (bit ``i`` = clbit ``i``).

    Attributes:
        p01: Probability of reading 1 when the qubit was prepared in 0, per qubit.
        p10: Probability of reading 0 when the qubit was prepared in 1, per qubit.
    """

    p01: np.ndarray
    p10: np.ndarray

    @classmethod
    def from_probabilities(cls, zeros: np.ndarray, ones: np.ndarray) -> ReadoutCalibration:
        """From the outcome distributions of the all-0 and all-1 calibration circuits."""
        n = int(round(np.log2(len(zeros))))
        outcomes = np.arange(2**n)
        p01 = np.array([zeros[(outcomes >> i) & 1 == 1].sum() for i in range(n)])
        p10 = np.array([ones[(outcomes >> i) & 1 == 0].sum() for i in range(n)])
        return cls(p01, p10)

    def inverse(self) -> np.ndarray:
        """The inverse of the tensored confusion matrix, ``(2^n, 2^n)``."""
        full = np.ones((1, 1))
        for a, b in zip(self.p01, self.p10):  # qubit 0 is the least significant bit
            m = np.array([[1 - a, b], [a, 1 - b]])
            if abs(np.linalg.det(m)) < 1e-6:
                raise BackendError("readout calibration is singular (readout error near 50%)")
            full = np.kron(np.linalg.inv(m), full)
        return full

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Mitigated quasi-probabilities for every row of ``probs`` ``(rows, 2^n)``."""
        return probs @ self._inverse_t

    @cached_property
    def _inverse_t(self) -> np.ndarray:
        # built once per calibration (the dataclass is frozen, but not slotted: cached_property
        # writes to the instance __dict__ directly)
        return self.inverse().T


def twirl_masks(num_qubits: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """``samples`` random X-flip masks (integers, bit i = flip qubit i), balanced per qubit."""
    if samples < 1:
        raise ValueError("twirl samples must be positive")
    masks = rng.integers(0, 2, size=(samples, num_qubits))
    if samples % 2 == 0:  # complementary pairs: every qubit flipped in exactly half the twirls
        half = samples // 2
        masks[half:] = 1 - masks[:half]
    return (masks << np.arange(num_qubits)).sum(axis=1)


# IBM Runtime ----------------------------------------------------------------------------------
def runtime_options(profile: BackendProfile) -> dict:
    """The IBM Runtime estimator options for ``profile`` (a dict for ``options=``).

    The same profile fields drive the client-side mitigation on simulators; on IBM hardware the
    runtime does it server-side. The dict fits both ``qiskit_ibm_runtime.EstimatorV2`` and the
    client-side ``qiskit_ibm_runtime.executor_estimator.Estimator`` (same option names).

    ``readout = "twirl"`` or ``"matrix"`` -> ``resilience.measure_mitigation`` (TREX) with
    measurement twirling; ``zne`` -> ``resilience.zne_mitigation`` with gate folding at the same
    noise factors and extrapolator; ``gate_twirling`` and ``dynamical_decoupling`` map one to one.
    """
    m: MitigationSettings = profile.mitigation
    measure = m.readout != "none"
    options: dict = {
        "resilience_level": 0,
        "resilience": {"measure_mitigation": measure, "zne_mitigation": m.zne},
        "twirling": {
            "enable_gates": m.gate_twirling,
            "enable_measure": measure,
        },
        "dynamical_decoupling": {"enable": m.dynamical_decoupling},
    }
    if measure and m.readout == "twirl":
        options["twirling"]["num_randomizations"] = m.twirl_samples
    if m.zne:
        options["resilience"]["zne"] = {
            "amplifier": "gate_folding",
            "noise_factors": [float(f) for f in m.zne_factors],
            "extrapolator": m.zne_extrapolator,
        }
    if profile.shots is not None:
        options["default_shots"] = int(profile.shots)
    elif profile.precision:
        options["default_precision"] = float(profile.precision)
    return options  # no simulator seed: a runtime profile has no `seed` (hardware ignores one)
