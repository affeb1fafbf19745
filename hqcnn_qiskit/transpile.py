"""Transpilation to a device: fake-device lookup, qubit choice, ISA circuit, observable layout.

The QNN circuit is transpiled once per model and backend with Qiskit's preset pass manager onto
4 physical qubits chosen from the device calibration (the connected 4-qubit path with the lowest
total error on the gates and readouts the circuit uses). The 8 readout observables are mapped
onto the transpiled layout, and the ISA circuit can be saved as QPY next to a run so inference on
hardware uses exactly the same circuit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qiskit import qpy
from qiskit.circuit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import Target, generate_preset_pass_manager

from .errors import BackendError

__all__ = [
    "IGNORED_OPS",
    "TranspiledCircuit",
    "count_two_qubit_gates",
    "check_fake_device",
    "fake_device",
    "list_fake_devices",
    "choose_qubits",
    "check_physical_qubits",
    "transpile_for_profile",
    "active_qubits",
    "two_qubit_gate_names",
    "isa_violations",
    "transpile_to_device",
    "save_qpy",
    "load_qpy",
]

#: Operations that do not act on a qubit's state (ignored when finding active qubits).
IGNORED_OPS = frozenset({"barrier", "delay"})


def list_fake_devices() -> list[str]:
    """Names of the device snapshots in ``qiskit_ibm_runtime.fake_provider`` (``FakeBrisbane``...)."""
    from qiskit_ibm_runtime import fake_provider

    names = []
    for name in dir(fake_provider):
        obj = getattr(fake_provider, name)
        if name.startswith("Fake") and isinstance(obj, type) and hasattr(obj, "target"):
            if "Provider" not in name and "Backend" not in name[4:]:
                names.append(name)
    return sorted(names)


def check_fake_device(name: str, *, where: str = "device") -> type:
    """The fake backend class called ``name``, e.g. ``"FakeBrisbane"``.

    Raises:
        BackendError: No such snapshot (the message lists a few valid names).
    """
    from qiskit_ibm_runtime import fake_provider

    cls = getattr(fake_provider, name, None) if name.startswith("Fake") else None
    if cls is None or not isinstance(cls, type):
        valid = [n for n in ("FakeBrisbane", "FakeFez", "FakeMarrakesh", "FakeKingston",
                             "FakeTorino", "FakeSherbrooke") if hasattr(fake_provider, n)]
        raise BackendError(
            f"{where}: unknown fake device '{name}'; valid names include {', '.join(valid)} "
            f"({len(list_fake_devices())} in qiskit_ibm_runtime.fake_provider)"
        )
    return cls


def fake_device(name: str, *, where: str = "device"):
    """The fake backend (device snapshot) called ``name``, e.g. ``"FakeBrisbane"``.

    Raises:
        BackendError: No such snapshot (the message lists a few valid names).
    """
    return check_fake_device(name, where=where)()


def two_qubit_gate_names(target: Target) -> list[str]:
    """The target's 2-qubit gate names (``ecr`` on Eagle, ``cz`` on Heron, ...)."""
    names = []
    for name in target.operation_names:
        op = target.operation_from_name(name)
        if getattr(op, "num_qubits", 0) == 2 and not getattr(op, "_directive", False):
            if isinstance(op, type):  # a variadic placeholder such as a control-flow op
                continue
            names.append(name)
    return names


def _error(target: Target, name: str, qargs: tuple[int, ...]) -> float:
    try:
        props = target[name].get(qargs)
    except KeyError:
        return math.inf
    if props is None or props.error is None:
        return 0.0
    return float(props.error)


def _edge_error(target: Target, a: int, b: int, two_q: Sequence[str]) -> float:
    """Lowest error of any 2-qubit gate between a and b (either direction)."""
    best = math.inf
    for name in two_q:
        best = min(best, _error(target, name, (a, b)), _error(target, name, (b, a)))
    return best


def choose_qubits(target: Target, num_qubits: int = 4) -> tuple[int, ...]:
    """The connected path of ``num_qubits`` device qubits with the lowest calibrated error.

    The score of a path adds, from the target's calibration, the 2-qubit gate error of each edge
    (weighted by 3: the circuit's CNOT ring, Toffolis and controlled phases put most of their
    gates on these edges), plus the ``sx`` error and the readout error of every qubit. Paths
    follow the coupling map, so routing stays inside the chosen qubits.

    Raises:
        BackendError: The device has no connected path of that length.
    """
    two_q = two_qubit_gate_names(target)
    neighbours: dict[int, set[int]] = {q: set() for q in range(target.num_qubits)}
    for name in two_q:
        for qargs in target[name]:
            if qargs is not None and len(qargs) == 2:
                a, b = qargs
                neighbours[a].add(b)
                neighbours[b].add(a)

    def qubit_cost(q: int) -> float:
        return _error(target, "sx", (q,)) + _error(target, "measure", (q,))

    best: tuple[float, tuple[int, ...]] | None = None

    def extend(path: list[int], cost: float):
        nonlocal best
        if best is not None and cost >= best[0]:
            return
        if len(path) == num_qubits:
            key = tuple(path) if path[0] < path[-1] else tuple(reversed(path))
            if best is None or cost < best[0]:
                best = (cost, key)
            return
        for nxt in sorted(neighbours[path[-1]]):
            if nxt not in path:
                edge = 3 * _edge_error(target, path[-1], nxt, two_q)
                extend(path + [nxt], cost + edge + qubit_cost(nxt))

    for start in range(target.num_qubits):
        extend([start], qubit_cost(start))
    if best is None or not math.isfinite(best[0]):
        raise BackendError(f"the device has no connected path of {num_qubits} qubits")
    return best[1]


def check_physical_qubits(qubits: Sequence[int], num_qubits: int,
                          device_qubits: int | None = None, *,
                          where: str = "field 'physical_qubits'") -> tuple[int, ...]:
    """``qubits`` as a tuple, if they are ``num_qubits`` distinct qubits of a device with
    ``device_qubits`` qubits (``None``: size unknown, only checked to be non-negative).

    Raises:
        BackendError: Wrong number of qubits, repeated qubits, or qubits outside the device;
            the message starts with ``where`` (the profile file and field, when known).
    """
    qubits = tuple(int(q) for q in qubits)
    if len(qubits) != num_qubits or len(set(qubits)) != num_qubits:
        raise BackendError(f"{where}: needs {num_qubits} distinct qubits, got {list(qubits)}")
    size = math.inf if device_qubits is None else device_qubits
    bad = [q for q in qubits if not 0 <= q < size]
    if bad:
        limit = (f"outside the device's {device_qubits} qubits (0-{device_qubits - 1})"
                 if device_qubits is not None else "negative")
        raise BackendError(f"{where}: {list(qubits)} has {bad} {limit}")
    return qubits


def transpile_for_profile(circuit: QuantumCircuit, observables: Sequence[SparsePauliOp],
                          target: Target, profile) -> TranspiledCircuit:
    """:func:`transpile_to_device` with a backend profile's physical qubits, optimization level
    and transpiler seed; a bad ``physical_qubits`` error names the profile's file."""
    return transpile_to_device(
        circuit, observables, target,
        physical_qubits=profile.physical_qubits,
        optimization_level=profile.optimization_level,
        seed_transpiler=profile.seed_transpiler,
        where=f"{profile.source}: field 'physical_qubits'",
    )


def active_qubits(circuit: QuantumCircuit) -> list[int]:
    """Indices of the qubits some operation (other than barriers and delays) acts on."""
    used = set()
    for inst in circuit.data:
        if inst.operation.name in IGNORED_OPS:
            continue
        used.update(circuit.find_bit(q).index for q in inst.qubits)
    return sorted(used)


def isa_violations(circuit: QuantumCircuit, target: Target) -> list[str]:
    """Operations of ``circuit`` that the target does not support on their qubits (empty: ISA)."""
    bad = []
    for inst in circuit.data:
        name = inst.operation.name
        if name == "barrier":
            continue
        qargs = tuple(circuit.find_bit(q).index for q in inst.qubits)
        if not target.instruction_supported(name, qargs):
            bad.append(f"{name}{qargs}")
    return bad


def count_two_qubit_gates(circuit: QuantumCircuit) -> int:
    """Number of 2-qubit operations of ``circuit`` (barriers and delays not counted)."""
    return sum(1 for inst in circuit.data if inst.operation.num_qubits == 2
               and inst.operation.name not in IGNORED_OPS)


@dataclass(frozen=True)
class TranspiledCircuit:
    """A circuit transpiled to a device, with the facts a run records.

    Attributes:
        circuit: The ISA circuit (full device width).
        observables: The observables mapped onto the device layout.
        physical_qubits: Device qubit of each virtual qubit (layout before routing).
        depth: Circuit depth.
        two_qubit_gates: Number of 2-qubit gates.
        ops: Gate counts by name.
    """

    circuit: QuantumCircuit
    observables: list[SparsePauliOp]
    physical_qubits: tuple[int, ...]
    depth: int
    two_qubit_gates: int
    ops: dict[str, int]

    @classmethod
    def from_isa(cls, isa: QuantumCircuit, observables: Sequence[SparsePauliOp],
                 physical_qubits: Sequence[int]) -> TranspiledCircuit:
        """Record an ISA circuit with its mapped observables, depth and gate counts."""
        return cls(isa, list(observables), tuple(physical_qubits), isa.depth(),
                   count_two_qubit_gates(isa), dict(isa.count_ops()))

    def describe(self) -> dict:
        """Plain facts for logs and run folders."""
        return {
            "qubits": list(self.physical_qubits),
            "active_qubits": active_qubits(self.circuit),
            "depth": self.depth,
            "two_qubit_gates": self.two_qubit_gates,
            "ops": dict(self.ops),
        }


def transpile_to_device(
    circuit: QuantumCircuit,
    observables: Sequence[SparsePauliOp],
    target: Target,
    *,
    physical_qubits: Sequence[int] = (),
    optimization_level: int = 2,
    seed_transpiler: int | None = 1234,
    where: str = "field 'physical_qubits'",
) -> TranspiledCircuit:
    """Transpile ``circuit`` to the target's ISA on chosen physical qubits.

    Args:
        circuit: The logical circuit.
        observables: Observables on the logical qubits.
        target: The device target.
        physical_qubits: Device qubits for the logical ones; empty picks them with
            :func:`choose_qubits`.
        optimization_level: Preset pass manager level.
        seed_transpiler: Seed of the stochastic passes.
        where: Start of the message of a bad ``physical_qubits`` (pass
            ``f"{profile.source}: field 'physical_qubits'"`` so it names the profile file).

    Raises:
        BackendError: Wrong number of qubits, qubits outside the device, or a transpiled circuit
            that leaves the chosen qubits.
    """
    n = circuit.num_qubits
    if physical_qubits:
        qubits = check_physical_qubits(physical_qubits, n, target.num_qubits, where=where)
    else:
        qubits = choose_qubits(target, n)
    pm = generate_preset_pass_manager(
        optimization_level=optimization_level,
        target=target,
        initial_layout=list(qubits),
        seed_transpiler=seed_transpiler,
    )
    isa = pm.run(circuit)
    used = set(active_qubits(isa))
    if not used <= set(qubits):
        outside = sorted(used - set(qubits))
        if physical_qubits:
            raise BackendError(f"{where}: the transpiled circuit uses qubits {outside} outside "
                               f"{list(qubits)}; choose connected qubits")
        raise BackendError(f"the transpiled circuit uses qubits {outside} outside the chosen "
                           f"{list(qubits)}; choose connected physical_qubits")
    mapped = [SparsePauliOp(obs).apply_layout(isa.layout) for obs in observables]
    return TranspiledCircuit.from_isa(isa, mapped, qubits)


def save_qpy(circuit: QuantumCircuit, path: str | Path) -> Path:
    """Write ``circuit`` (with its layout) to a QPY file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        qpy.dump(circuit, fh)
    return path


def load_qpy(path: str | Path) -> QuantumCircuit:
    """Read the (first) circuit of a QPY file.

    Raises:
        BackendError: The file is missing or not QPY.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            circuits = qpy.load(fh)
    except (OSError, qpy.QpyError, ValueError) as exc:
        raise BackendError(f"{path}: not a readable QPY circuit ({exc})") from None
    if not circuits:
        raise BackendError(f"{path}: holds no circuit")
    return circuits[0]
