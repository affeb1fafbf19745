"""Noisy backends: a sampling ``BaseEstimatorV2`` on Aer (device noise) or on qiskit-ibm-runtime's
local testing mode, with client-side mitigation.

Why sample instead of using qiskit-aer's ``EstimatorV2``: it leaves readout error out of
expectation values (qiskit-aer #1861), so it is not what hardware returns. Here every PUB is
measured: its observables are grouped into qubit-wise-commuting measurement bases, each basis is
a measured copy of the circuit (basis change with ISA gates), all parameter rows of all bases go
to the simulator in one call, and expectation values are estimated from the outcome counts.

Why it is fast: an ISA circuit spans the whole device (127 qubits on Eagle), but it only acts on
a handful of them. The circuit is compacted onto its active qubits and simulated with a noise
model built from the calibration of exactly those qubits (the device target restricted and
renumbered), as a density matrix (exact noisy probabilities, then shot sampling). Two runners
use that noise model: :class:`DensityRunner` (default, ``engine = "batched"``) evolves all
parameter rows at once in the Pauli-transfer-matrix picture (:mod:`hqcnn_qiskit.density`);
:class:`AerRunner` (``engine = "aer"``, the reference) runs one ``AerSimulator`` experiment per
row. Sampling, bases, mitigation and ZNE sit above the runner, so they are the same on both.
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from qiskit.circuit import ClassicalRegister, QuantumCircuit
from qiskit.primitives import BaseEstimatorV2, PrimitiveJob, PrimitiveResult
from qiskit.primitives.containers import DataBin, PubResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import Target

from .backends import QuantumBackend, register_kind
from .density import NoiseTables, compile_density_program, parity_signs, sample_counts
from .errors import BackendError
from .measurement import group_qubitwise, pauli_terms
from .mitigation import ReadoutCalibration, extrapolate, fold_two_qubit_gates, twirl_masks
from .primitives.cache import IdentityCache
from .primitives.statevector import single_threaded_blas, submit_inline
from .profiles import ENGINES, BackendProfile, MitigationSettings, shots_per_circuit
from .transpile import (
    IGNORED_OPS,
    TranspiledCircuit,
    active_qubits,
    fake_device,
    load_qpy,
    save_qpy,
    transpile_for_profile,
)

__all__ = [
    "restrict_target",
    "noise_model_for",
    "AerRunner",
    "DensityRunner",
    "SamplerRunner",
    "SamplingEstimator",
    "DeviceBackend",
    "AerNoisyBackend",
    "RuntimeLocalBackend",
]


# Noise of exactly the active qubits -----------------------------------------------------------
def restrict_target(target: Target, qubits: Sequence[int]) -> Target:
    """The target's instructions and calibration on ``qubits``, renumbered 0..k-1."""
    pos = {q: i for i, q in enumerate(qubits)}
    props = target.qubit_properties
    small = Target(
        num_qubits=len(qubits),
        dt=target.dt,
        qubit_properties=[props[q] for q in qubits] if props else None,
    )
    for name in target.operation_names:
        op = target.operation_from_name(name)
        if isinstance(op, type):  # variadic control flow: not used in our circuits
            continue
        entries = target[name]
        if entries is None or None in entries:
            continue
        local = {
            tuple(pos[q] for q in qargs): p
            for qargs, p in entries.items()
            if all(q in pos for q in qargs)
        }
        if local:
            small.add_instruction(op, local, name=name)
    return small


def noise_model_for(target: Target, qubits: Sequence[int]):
    """Aer ``NoiseModel`` of ``qubits`` of the device (gate, relaxation and readout errors),
    on qubits renumbered 0..k-1."""
    from qiskit_aer.noise import NoiseModel

    small = restrict_target(target, qubits)
    view = types.SimpleNamespace(  # the BackendV2 surface NoiseModel.from_backend reads
        version=2, operation_names=list(small.operation_names), target=small, dt=target.dt
    )
    return NoiseModel.from_backend(view)


# Runners: measured circuits + parameter rows -> outcome probabilities ---------------------------
@dataclass
class _Job:
    circuit: QuantumCircuit  # measured into one register of k clbits
    rows: np.ndarray  # (M, num_parameters) in circuit.parameters order
    shots: int


class AerRunner:
    """Runs compacted circuits on an ``AerSimulator`` with the noise of their device qubits.

    All jobs of one :meth:`run` go to the simulator in a single ``run`` call (one experiment per
    parameter row, bound by Aer itself).

    Args:
        target: The device target (its calibration is the noise); ``None`` for a noiseless run.
        seed: Seed of the shot sampling.
    """

    compacts = True

    def __init__(self, target: Target | None, *, seed: int | None = None):
        self.target = target
        self.rng = np.random.default_rng(seed)
        self._simulators: dict[tuple[int, ...], object] = {}

    def simulator(self, qubits: tuple[int, ...]):
        """The simulator of a compacted circuit on device ``qubits`` (cached)."""
        sim = self._simulators.get(qubits)
        if sim is None:
            from qiskit_aer import AerSimulator

            noise = noise_model_for(self.target, qubits) if self.target is not None else None
            method = "density_matrix" if len(qubits) <= 10 else "automatic"
            sim = AerSimulator(
                method=method, noise_model=noise, precision="single", fusion_threshold=1,
                max_parallel_experiments=1,  # leaves cores to others
            )
            self._simulators[qubits] = sim
        return sim

    def run(self, qubits: tuple[int, ...], jobs: list[_Job]) -> list[np.ndarray]:
        """Outcome probabilities ``(M, 2^k)`` of every job."""
        out: list[np.ndarray | None] = [None] * len(jobs)
        for shots in sorted({j.shots for j in jobs}):
            idx = [i for i, j in enumerate(jobs) if j.shots == shots]
            circuits, binds, sizes = [], [], []
            for i in idx:
                job = jobs[i]
                circuits.append(job.circuit)
                params = list(job.circuit.parameters)
                if params:
                    binds.append({p: job.rows[:, c] for c, p in enumerate(params)})
                    sizes.append(job.rows.shape[0])
                else:
                    binds.append({})
                    sizes.append(1)
            seed = int(self.rng.integers(2**31))
            result = self.simulator(qubits).run(
                circuits, parameter_binds=binds, shots=shots, seed_simulator=seed
            ).result()
            if not result.success:
                raise BackendError(f"Aer simulation failed: {result.status}")
            exps = result.results
            start = 0
            for i, size in zip(idx, sizes):
                k = jobs[i].circuit.num_clbits
                probs = np.zeros((size, 2**k))
                for r in range(size):
                    for key, count in exps[start + r].data.counts.items():
                        probs[r, int(key, 16)] = count
                probs /= shots
                out[i] = np.broadcast_to(probs, (jobs[i].rows.shape[0], 2**k)).copy()
                start += size
        return out  # type: ignore[return-value]


class DensityRunner:
    """Runs compacted circuits on the batched density-matrix engine (:mod:`hqcnn_qiskit.density`)
    with the same Aer ``NoiseModel`` as :class:`AerRunner`: exact noisy outcome probabilities for
    all parameter rows at once, then ``counts ~ Multinomial(shots, p)`` per row.

    Jobs that share their parameter rows and everything up to the last parameterised gate (the
    measurement bases and readout twirls of one PUB) share one simulation of that part.

    Args:
        target: The device target (its calibration is the noise); ``None`` for a noiseless run.
        seed: Seed of the shot sampling.
        precision: ``"single"`` (float32 state, as Aer runs for us) or ``"double"``.
    """

    compacts = True

    def __init__(self, target: Target | None, *, seed: int | None = None,
                 precision: str = "single"):
        if precision not in ("single", "double"):
            raise ValueError(f"precision must be 'single' or 'double', got {precision!r}")
        self.target = target
        self.rng = np.random.default_rng(seed)
        self.dtype = np.float32 if precision == "single" else np.float64
        self._noise: dict[tuple[int, ...], NoiseTables] = {}
        self._heads: dict[tuple[int, ...], dict] = {}
        self._programs: IdentityCache = IdentityCache()

    def noise(self, qubits: tuple[int, ...]) -> NoiseTables:
        """The noise of a compacted circuit on device ``qubits`` (cached)."""
        tables = self._noise.get(qubits)
        if tables is None:
            model = noise_model_for(self.target, qubits) if self.target is not None else None
            tables = self._noise[qubits] = NoiseTables(model)
        return tables

    def program(self, qubits: tuple[int, ...], circuit: QuantumCircuit):
        """The compiled program of a measured circuit (cached while the circuit lives)."""
        return self._programs.get(
            circuit, (qubits, len(circuit.data)),
            lambda: compile_density_program(circuit, self.noise(qubits),
                                            self._heads.setdefault(qubits, {})))

    def probabilities(self, qubits: tuple[int, ...], jobs: list[_Job], *,
                      readout: bool = True) -> list[np.ndarray]:
        """Exact outcome probabilities ``(M, 2^k)`` of every job (with readout error unless
        ``readout=False``)."""
        programs = [self.program(qubits, job.circuit) for job in jobs]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (job, prog) in enumerate(zip(jobs, programs)):
            groups.setdefault((id(prog.head), id(job.rows)), []).append(i)
        out: list[np.ndarray | None] = [None] * len(jobs)
        with single_threaded_blas():
            for idx in groups.values():
                job, head = jobs[idx[0]], programs[idx[0]].head
                rows = job.rows.reshape(job.rows.shape[0], -1)
                state = head.run(rows, self.dtype).astype(float, copy=False)
                for i in idx:
                    prog = programs[i]
                    out[i] = ((prog.readout_map if readout else prog.ideal_map) @ state).T
        return out  # type: ignore[return-value]

    def run(self, qubits: tuple[int, ...], jobs: list[_Job]) -> list[np.ndarray]:
        """Sampled outcome frequencies ``(M, 2^k)`` of every job."""
        probs = self.probabilities(qubits, jobs)
        return [sample_counts(p, job.shots, self.rng) / job.shots for p, job in zip(probs, jobs)]


class SamplerRunner:
    """Runs full-width device circuits through a ``BaseSamplerV2`` (e.g. qiskit-ibm-runtime's
    sampler in local testing mode): the jobs with the same number of shots as the PUBs of one
    ``run`` call (the runtime's client-side sampler refuses a call whose PUBs differ in shots,
    as readout calibration and data circuits do).

    Args:
        sampler: The sampler.
        seed: With a seed, each ``run`` call gives the local simulator a new seed drawn from
            it, so that successive calls (batches) get independent shots and a run is
            reproducible. A fixed ``seed_simulator`` in the sampler's options would repeat the
            same shot noise in every batch.
    """

    compacts = False

    def __init__(self, sampler, *, seed: int | None = None):
        self.sampler = sampler
        self.rng = np.random.default_rng(seed) if seed is not None else None

    def run(self, qubits: tuple[int, ...], jobs: list[_Job]) -> list[np.ndarray]:
        by_shots: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            by_shots.setdefault(job.shots, []).append(i)
        results = [None] * len(jobs)
        for shots, indices in by_shots.items():
            if self.rng is not None:
                self.sampler.options.simulator.seed_simulator = int(self.rng.integers(2**31))
            pubs = [(jobs[i].circuit, jobs[i].rows if jobs[i].circuit.num_parameters else None,
                     shots) for i in indices]
            for i, res in zip(indices, self.sampler.run(pubs).result()):
                results[i] = res
        out = []
        for job, res in zip(jobs, results):
            bits = res.data[job.circuit.cregs[0].name]
            k = job.circuit.num_clbits
            raw = bits.array.reshape(-1, bits.num_shots, bits.array.shape[-1]).astype(np.int64)
            values = np.zeros(raw.shape[:2], dtype=np.int64)
            for b in range(raw.shape[-1]):  # big-endian bytes
                values = (values << 8) | raw[..., b]
            probs = np.stack([np.bincount(v, minlength=2**k) for v in values]) / bits.num_shots
            out.append(np.broadcast_to(probs, (job.rows.shape[0], 2**k)).copy())
        return out


# The sampling estimator -----------------------------------------------------------------------
_BASIS_CHANGE = {"X": [("rz", np.pi / 2), ("sx", None), ("rz", np.pi / 2)],  # H
                 "Y": [("sx", None), ("rz", np.pi / 2)],  # H S^dag
                 "Z": []}


@dataclass
class _Plan:
    """A device circuit compacted for execution (independent of parameter values)."""

    qubits: tuple[int, ...]  # active device qubits
    position: dict[int, int]  # device qubit -> index among the active qubits
    base: QuantumCircuit  # the circuit that is executed (compact or full width), no measures
    exec_qubits: list[int]  # qubit of ``base`` for each active qubit
    measured: dict[tuple, QuantumCircuit] = field(default_factory=dict)


class SamplingEstimator(BaseEstimatorV2):
    """``BaseEstimatorV2`` that measures: expectation values estimated from sampled counts.

    Accepts any parameterised circuit on the device (the ISA circuit, the gradient's circuits
    with unique parameters, ...): each circuit object is compacted once onto its active qubits
    and cached. PUBs broadcast parameter arrays against observable arrays as the V2 primitives
    do; general Pauli observables are grouped into qubit-wise-commuting measurement bases. One
    :meth:`run` call is one runner call for all PUBs, bases, noise factors and twirls.

    Args:
        runner: :class:`AerRunner` or :class:`SamplerRunner`.
        shots: Shots per measured circuit (split across twirls with ``readout = "twirl"``).
        mitigation: Client-side mitigation settings (``None``: raw counts).
        target: Device target; needed to check that ZNE folds stay inside the ISA.
        seed: Seed of the twirl masks.

    Attributes:
        total_stats: Shots, circuits (parameter rows x bases x factors x twirls), seconds and
            ``run`` calls since creation.
    """

    def __init__(self, runner, *, shots: int = 1024, mitigation: MitigationSettings | None = None,
                 target: Target | None = None, seed: int | None = None):
        if shots < 1:
            raise ValueError("shots must be positive")
        self.runner = runner
        self.shots = int(shots)
        self.mitigation = mitigation or MitigationSettings()
        self.target = target
        self._rng = np.random.default_rng(seed)
        self._plans: IdentityCache[_Plan] = IdentityCache()
        self._calibrations: dict[tuple[int, ...], object] = {}
        self._lock = threading.Lock()
        self.total_stats = {"shots": 0, "circuits": 0, "seconds": 0.0, "calls": 0}
        self._tally = dict(self.total_stats)

    def calibration_state(self) -> list[dict]:
        """The readout calibrations measured so far, as plain lists (for a checkpoint: they
        were drawn from the random streams, so a resumed run must not draw them again)."""
        out = []
        for (qubits, readout), cal in self._calibrations.items():
            values = ({"p01": cal.p01.tolist(), "p10": cal.p10.tolist()}
                      if isinstance(cal, ReadoutCalibration) else {"z": np.asarray(cal).tolist()})
            out.append({"qubits": list(qubits), "readout": readout, **values})
        return out

    def set_calibration_state(self, state: list[dict]) -> None:
        """Restore what :meth:`calibration_state` returned."""
        self._calibrations = {
            (tuple(c["qubits"]), c["readout"]):
                ReadoutCalibration(np.array(c["p01"]), np.array(c["p10"])) if "p01" in c
                else np.array(c["z"])
            for c in state
        }

    def generators(self) -> list[np.random.Generator]:
        """Every random stream this estimator draws from: twirl masks, then the runner's."""
        runner = getattr(self.runner, "rng", None)
        return [self._rng] + ([runner] if runner is not None else [])

    # stats for progress bars
    def pop_stats(self) -> dict:
        """Shots, circuits, seconds and calls since the previous ``pop_stats`` (then reset)."""
        with self._lock:
            stats, self._tally = self._tally, {"shots": 0, "circuits": 0, "seconds": 0.0,
                                               "calls": 0}
        return stats

    def _record(self, shots: int, circuits: int, seconds: float):
        with self._lock:
            for tally in (self.total_stats, self._tally):
                tally["shots"] += shots
                tally["circuits"] += circuits
                tally["seconds"] += seconds
                tally["calls"] += 1

    # plans
    def _plan(self, circuit: QuantumCircuit) -> _Plan:
        return self._plans.get(circuit, len(circuit.data), lambda: self._build_plan(circuit))

    def _build_plan(self, circuit: QuantumCircuit) -> _Plan:
        for inst in circuit.data:
            if inst.operation.name in ("measure", "reset") or inst.clbits:
                raise ValueError(f"'{inst.operation.name}' is not allowed in an estimator circuit")
        qubits = tuple(active_qubits(circuit))
        position = {q: i for i, q in enumerate(qubits)}
        if self.runner.compacts:
            base = QuantumCircuit(len(qubits), global_phase=circuit.global_phase)
            for inst in circuit.data:
                if inst.operation.name in IGNORED_OPS:
                    continue
                base.append(inst.operation,
                            [position[circuit.find_bit(q).index] for q in inst.qubits])
            exec_qubits = list(range(len(qubits)))
        else:
            base = circuit.copy()
            exec_qubits = list(qubits)
        return _Plan(qubits, position, base, exec_qubits)

    def _measured(self, plan: _Plan, basis: str, factor: int, mask: int) -> QuantumCircuit:
        """The plan's circuit folded by ``factor``, rotated to ``basis`` (one letter per active
        qubit), X-flipped where ``mask`` says, measured into one register."""
        key = (basis, factor, mask)
        circ = plan.measured.get(key)
        if circ is not None:
            return circ
        circ = fold_two_qubit_gates(plan.base, factor, target=None if self.runner.compacts
                                    else self.target)
        k = len(plan.qubits)
        creg = ClassicalRegister(k, "meas")
        circ.add_register(creg)
        for i, letter in enumerate(basis):
            q = plan.exec_qubits[i]
            for name, angle in _BASIS_CHANGE[letter]:
                if name == "rz":
                    circ.rz(angle, q)
                else:
                    circ.sx(q)
            if (mask >> i) & 1:
                circ.x(q)
        circ.measure(plan.exec_qubits, creg)
        plan.measured[key] = circ
        return circ

    def _calibration(self, plan: _Plan):
        """Readout calibration of the plan's qubits (cached per device qubit set)."""
        m = self.mitigation
        key = (plan.qubits, m.readout)
        cal = self._calibrations.get(key)
        if cal is not None:
            return cal
        k = len(plan.qubits)
        empty = np.zeros((1, 0))
        if m.readout == "matrix":
            jobs = []
            for flip in (0, 2**k - 1):
                c = QuantumCircuit(*plan.base.qregs, ClassicalRegister(k, "meas"))
                for i, q in enumerate(plan.exec_qubits):
                    if (flip >> i) & 1:
                        c.x(q)
                c.measure(plan.exec_qubits, c.cregs[0])
                jobs.append(_Job(c, empty, m.calibration_shots))
            p0, p1 = self.runner.run(plan.qubits, jobs)
            cal = ReadoutCalibration.from_probabilities(p0[0], p1[0])
        else:  # twirl: <Z_S> of the twirled |0...0> for every subset S of the qubits
            masks = twirl_masks(k, m.twirl_samples, self._rng)
            jobs = []
            for mask in masks:
                c = QuantumCircuit(*plan.base.qregs, ClassicalRegister(k, "meas"))
                for i, q in enumerate(plan.exec_qubits):
                    if (int(mask) >> i) & 1:
                        c.x(q)
                c.measure(plan.exec_qubits, c.cregs[0])
                jobs.append(_Job(c, empty, max(1, m.calibration_shots // len(masks))))
            outcomes = np.arange(2**k)
            probs = sum(p[0][outcomes ^ int(mask)] for p, mask in
                        zip(self.runner.run(plan.qubits, jobs), masks)) / len(masks)
            signs = parity_signs(outcomes[:, None], outcomes[None, :])
            cal = probs @ signs  # cal[S] = <Z_S> on |0...0>, S as a bit mask
        self._calibrations[key] = cal
        return cal

    # run
    def run(self, pubs: Iterable, *, precision: float | None = None) -> PrimitiveJob:
        coerced = [EstimatorPub.coerce(pub, precision) for pub in pubs]
        job = PrimitiveJob(self._run, coerced)
        submit_inline(job)
        return job

    def _run(self, pubs: list[EstimatorPub]) -> PrimitiveResult:
        start = time.perf_counter()
        m = self.mitigation
        factors = list(m.zne_factors) if m.zne else [1]
        twirls = m.readout == "twirl"
        prepared, jobs = [], []
        for pub in pubs:
            plan = self._plan(pub.circuit)
            k = len(plan.qubits)
            bindings = pub.parameter_values
            if pub.circuit.num_parameters:
                rows = bindings.as_array(pub.circuit.parameters).reshape(
                    -1, pub.circuit.num_parameters)
            else:
                rows = np.zeros((int(np.prod(bindings.shape, dtype=int)), 0))
            # observables -> Pauli terms on the active qubits -> measurement bases (the same
            # grouping as measurement.measurement_bases, which the job usage estimate counts)
            obs_list = pub.observables.ravel().tolist()
            terms, obs_terms = pauli_terms(obs_list, plan.position)
            bases, which = group_qubitwise([t for t in terms if t])
            basis_strings = ["".join(b.get(i, "Z") for i in range(k)) for b in bases]
            masks = twirl_masks(k, m.twirl_samples, self._rng) if twirls else np.array([0])
            shots = max(1, self.shots // len(masks))
            slots = {}
            for b, basis in enumerate(basis_strings):
                for f in factors:
                    for mask in masks:
                        slots[(b, f, int(mask))] = len(jobs)
                        jobs.append(_Job(self._measured(plan, basis, f, int(mask)), rows, shots))
            prepared.append((pub, plan, rows, terms, which, obs_terms, basis_strings, masks,
                             slots, obs_list))
        # one runner call per device qubit set (normally exactly one)
        probs: list[np.ndarray | None] = [None] * len(jobs)
        by_qubits: dict[tuple, list[int]] = {}
        for entry in prepared:
            plan, slots = entry[1], entry[8]
            by_qubits.setdefault(plan.qubits, []).extend(slots.values())
        for qubits, idx in by_qubits.items():
            for j, p in zip(idx, self.runner.run(qubits, [jobs[j] for j in idx])):
                probs[j] = p
        results = [self._evaluate(entry, probs, factors) for entry in prepared]
        total_shots = sum(j.shots * j.rows.shape[0] for j in jobs)
        self._record(total_shots, sum(j.rows.shape[0] for j in jobs), time.perf_counter() - start)
        return PrimitiveResult(results, metadata={"version": 2})

    def _evaluate(self, entry, probs, factors) -> PubResult:
        pub, plan, rows, terms, which, obs_terms, basis_strings, masks, slots, obs_list = entry
        m = self.mitigation
        k = len(plan.qubits)
        outcomes = np.arange(2**k)
        cal = self._calibration(plan) if m.readout != "none" else None
        nonid_index = [i for i, t in enumerate(terms) if t]
        term_mask = np.zeros(len(terms), dtype=int)
        for i, t in enumerate(terms):
            term_mask[i] = sum(1 << q for q in t)
        per_factor = []
        for f in factors:
            values = np.ones((rows.shape[0], len(terms)))
            for b in range(len(basis_strings)):
                p = sum(probs[slots[(b, f, int(mask))]][:, outcomes ^ int(mask)]
                        for mask in masks) / len(masks)
                if isinstance(cal, ReadoutCalibration):
                    p = cal.apply(p)
                for pos, t in enumerate(nonid_index):
                    if which[pos] != b:
                        continue
                    sign = parity_signs(outcomes, term_mask[t])
                    v = p @ sign
                    if cal is not None and not isinstance(cal, ReadoutCalibration):
                        v = v / max(cal[term_mask[t]], 1e-3)
                    values[:, t] = v
            per_factor.append(values)
        if len(factors) > 1:
            term_values = extrapolate(factors, np.stack(per_factor), m.zne_extrapolator)
        else:
            term_values = per_factor[0]
        table = np.zeros((rows.shape[0], len(obs_list)))
        var = np.zeros((rows.shape[0], len(obs_list)))
        for o, parts in enumerate(obs_terms):
            for t, coeff in parts:
                table[:, o] += coeff.real * term_values[:, t]
                if terms[t]:
                    var[:, o] += coeff.real**2 * np.clip(1 - term_values[:, t] ** 2, 0, 1)
        bindings, observables = pub.parameter_values, pub.observables
        shape = np.broadcast_shapes(bindings.shape, observables.shape)
        param_idx = np.broadcast_to(np.arange(rows.shape[0]).reshape(bindings.shape), shape)
        obs_idx = np.broadcast_to(np.arange(len(obs_list)).reshape(observables.shape), shape)
        evs = table[param_idx, obs_idx]
        stds = np.sqrt(var[param_idx, obs_idx] / self.shots)
        data = DataBin(evs=evs, stds=stds, shape=shape)
        return PubResult(data, metadata={"shots": self.shots, "bases": basis_strings,
                                         "circuit_metadata": pub.circuit.metadata})


# Backends -------------------------------------------------------------------------------------
class DeviceBackend(QuantumBackend):
    """A backend whose circuits are transpiled once to a device's ISA (shared logic).

    Attributes:
        transpiled: The :class:`~hqcnn_qiskit.transpile.TranspiledCircuit` after ``prepare``.
    """

    def __init__(self, *, profile: BackendProfile):
        super().__init__(profile=profile)
        self._open_device()
        self.transpiled: TranspiledCircuit | None = None
        self._pinned: QuantumCircuit | None = None
        self._estimator = None

    def _open_device(self) -> None:
        """The profile's device snapshot and its target (made anew for a copy)."""
        self.device = fake_device(self.profile.device,
                                  where=f"{self.profile.source}: field 'device'")
        self.target = self.device.target

    @property
    def isa_circuit(self) -> QuantumCircuit | None:
        """The transpiled circuit the model runs (``None`` before ``build_qnn``)."""
        return self.transpiled.circuit if self.transpiled else None

    def prepare(self, circuit, observables):
        if self._pinned is not None:
            isa = self._pinned
            names = sorted(p.name for p in circuit.parameters)
            if sorted(p.name for p in isa.parameters) != names:
                raise BackendError("the saved ISA circuit does not have the model's parameters")
            # the saved circuit's parameters are new objects: rebind by name
            from qiskit.circuit import Parameter

            by_name = {p.name: p for p in circuit.parameters}
            temp = {p: Parameter(f"_pin{i}") for i, p in enumerate(isa.parameters)}
            isa = isa.assign_parameters(temp)  # two steps: old and new names coincide
            isa = isa.assign_parameters({t: by_name[p.name] for p, t in temp.items()})
            obs = [SparsePauliOp(o).apply_layout(isa.layout) for o in observables]
            qubits = tuple(isa.layout.initial_index_layout()[: circuit.num_qubits])
            self.transpiled = TranspiledCircuit.from_isa(isa, obs, qubits)
        else:
            self.transpiled = transpile_for_profile(circuit, observables, self.target,
                                                    self.profile)
        return self.transpiled.circuit, list(self.transpiled.observables)

    def save_qpy(self, path) -> None:
        """Save the transpiled circuit (QPY) so a later run uses exactly the same one."""
        if self.transpiled is None:
            raise BackendError("nothing to save: build the model (build_qnn) first")
        save_qpy(self.transpiled.circuit, path)

    def load_qpy(self, path) -> None:
        """Use the ISA circuit saved at ``path`` instead of transpiling (call before
        ``build_qnn``, e.g. before building the model)."""
        self._pinned = load_qpy(path)

    def estimator(self):
        if self._estimator is None:
            self._estimator = self._make_estimator()
        return self._estimator

    def _make_estimator(self):  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def rng_state(self) -> dict:
        estimator = self.estimator()
        return {"streams": [g.bit_generator.state for g in estimator.generators()],
                "calibrations": estimator.calibration_state()}

    def set_rng_state(self, state: dict) -> None:
        estimator = self.estimator()
        generators = estimator.generators()
        if len(state["streams"]) != len(generators):
            raise BackendError(f"backend {self.name}: the saved random state has "
                               f"{len(state['streams'])} streams, this backend {len(generators)}")
        for generator, saved in zip(generators, state["streams"]):
            generator.bit_generator.state = saved
        estimator.set_calibration_state(state["calibrations"])

    def __getstate__(self) -> dict:
        """The backend for pickle and ``copy.deepcopy``: its profile, ISA circuit and random
        state, without the device, simulators and locks (rebuilt by :meth:`__setstate__`). A
        copy draws the same shots as the original would from here on."""
        state = self.__dict__.copy()
        state["_random"] = self.rng_state() if self._estimator is not None else None
        for live in ("device", "target", "_estimator"):
            state[live] = None
        if self.transpiled is not None:  # the copy runs this circuit instead of transpiling
            state["_pinned"] = self.transpiled.circuit
        return state

    def __setstate__(self, state: dict) -> None:
        """Restore what :meth:`__getstate__` returned."""
        random = state.pop("_random")
        self.__dict__.update(state)
        self._open_device()
        if random is not None:
            self.set_rng_state(random)

    @property
    def last_batch_stats(self) -> dict:
        """Shots, circuits, seconds and estimator calls since the previous read (so reading it
        once per training step gives that step's forward and backward cost)."""
        if self._estimator is None:
            return {"shots": 0, "circuits": 0, "seconds": 0.0, "calls": 0}
        return self._estimator.pop_stats()

    def describe(self) -> dict:
        info = super().describe()
        info["shots"] = self.profile.shots
        if self.profile.kind == "aer":
            info["engine"] = self.profile.engine or ENGINES[0]
        info["mitigation"] = {
            "readout": self.profile.mitigation.readout, "zne": self.profile.mitigation.zne,
        }
        if self.transpiled is not None:
            info.update(self.transpiled.describe())
        return info


class AerNoisyBackend(DeviceBackend):
    """Shot-based simulation with the Aer noise model of a device snapshot (kind ``"aer"``), on
    the batched density-matrix engine (``engine = "batched"``, default) or on ``AerSimulator``
    (``engine = "aer"``)."""

    @property
    def engine(self) -> str:
        """``"batched"`` or ``"aer"``."""
        return self.profile.engine or ENGINES[0]

    def _make_estimator(self):
        p = self.profile
        if self.engine == "aer":
            runner = AerRunner(self.target, seed=p.seed)
        else:
            runner = DensityRunner(self.target, seed=p.seed)
        return SamplingEstimator(
            runner, shots=shots_per_circuit(p),
            mitigation=p.mitigation, target=self.target, seed=p.seed,
        )


def runtime_sampler(device, *, shots: int):
    """qiskit-ibm-runtime's sampler in local testing mode on ``device`` (a fake backend).

    The legacy ``SamplerV2`` (deprecated in 0.50) while the runtime still has it: its local
    mode keeps the device's simulator, where the client-side ``executor_sampler.Sampler`` builds
    the device noise model again on every call, simulates its PUBs one at a time and takes about
    twice as long for our circuits (``benchmarks/local_sampler.py``). Once ``SamplerV2`` is
    gone, the client-side sampler; both take the same options and give the same result layout,
    and :class:`SamplerRunner` sends them one shot count per call, as the client-side sampler
    requires.
    """
    import warnings

    with warnings.catch_warnings():  # the legacy one warns on import and construction
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from qiskit_ibm_runtime import SamplerV2 as Sampler
        except ImportError:  # removed from qiskit-ibm-runtime
            from qiskit_ibm_runtime.executor_sampler import Sampler
        return Sampler(mode=device, options={"default_shots": shots})


class RuntimeLocalBackend(DeviceBackend):
    """qiskit-ibm-runtime local testing mode on a fake device (kind ``"runtime_local"``): the
    runtime's sampler (:func:`runtime_sampler`) with the fake backend as ``mode`` samples
    full-width ISA circuits, and our sampling estimator turns counts into (mitigated)
    expectation values."""

    def _make_estimator(self):
        p = self.profile
        sampler = runtime_sampler(self.device, shots=shots_per_circuit(p))
        return SamplingEstimator(
            SamplerRunner(sampler, seed=p.seed), shots=shots_per_circuit(p), mitigation=p.mitigation,
            target=self.target, seed=p.seed,
        )


register_kind("aer", lambda profile: AerNoisyBackend(profile=profile))
register_kind("runtime_local", lambda profile: RuntimeLocalBackend(profile=profile))
