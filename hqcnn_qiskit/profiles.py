"""Backend profiles: the data files in the top-level ``backends/`` folder.

A profile is a small TOML file naming how the quantum layer runs. The shipped profiles are
installed with the package; a user may also pass the path of their own file wherever a backend
name is accepted. Validation is strict: an unknown field, a wrong type or an unknown kind is a
one-line :class:`~hqcnn_qiskit.errors.BackendError` naming the file and the field, raised when
the profile is loaded. What each field may hold, and which kinds use it, is the table
:data:`FIELDS`: a field that the profile's kind would ignore is an error too.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import BackendError, ConfigError

__all__ = ["BackendProfile", "MitigationSettings", "load_profile", "profile_snapshot",
           "snapshot_profile", "profile_difference", "list_profiles", "KINDS", "ENGINES", "SLOW_TO_TRAIN",
           "ON_HARDWARE", "refuse_on_hardware", "DEFAULT_SHOTS", "shots_per_circuit", "EVAL_BATCH_SIZES", "DEFAULT_EVAL_BATCH_SIZE",
           "eval_batch_size", "CONFIRM_ABOVE_SECONDS", "FIELDS", "FieldRule"]

#: What each ``kind`` means; backends.py turns each into an object.
KINDS = {
    "exact": "exact batched statevector simulation",
    "aer": "shot-based Aer simulation with a device snapshot's noise",
    "runtime_local": "qiskit-ibm-runtime local testing mode on a fake device",
    "runtime": "IBM Quantum hardware through qiskit-ibm-runtime",
}

#: Kinds that run each circuit through the device path: fine to evaluate or infer on, but every
#: training step runs 2 x 26 parameter-shift circuits per image through it (seconds per image).
SLOW_TO_TRAIN = frozenset({"runtime_local", "runtime"})

#: Kinds whose every circuit evaluation is a paid job on a QPU. ``train`` and
#: ``evaluate_checkpoint`` refuse them (see :func:`refuse_on_hardware`); ``infer`` is the route to
#: a device: one journaled job, estimated and confirmed before it is sent.
ON_HARDWARE = frozenset({"runtime"})

#: ``infer`` asks for ``--yes`` when a real-device submission is estimated above this many QPU
#: seconds (5% of the Open plan's 10 minutes per 28 days).
CONFIRM_ABOVE_SECONDS = 30.0

#: Images per forward pass when evaluating a checkpoint (``evaluate``), by kind; other kinds use
#: :data:`DEFAULT_EVAL_BATCH_SIZE`. The progress bar advances once per pass. ``runtime_local``
#: costs ~2.5 s per pass plus ~0.5 s per image on FakeBrisbane, so 256 images left the bar
#: still for ~2 minutes; 32 move it every ~20 s for ~1.1x the total time (8 would tick every
#: ~7 s but take ~1.6x). ``runtime`` keeps the default: there every pass is a QPU job (2 s of
#: overhead and a queue wait each).
EVAL_BATCH_SIZES = {"runtime_local": 32}
DEFAULT_EVAL_BATCH_SIZE = 256


def refuse_on_hardware(profile: BackendProfile, what: str, why: str) -> None:
    """Raise for a profile of a kind in :data:`ON_HARDWARE`: ``what`` (``"training"``) does not
    run there, because ``why``; the message names the route that does.

    Raises:
        ConfigError: The profile runs on IBM hardware.
    """
    if profile.kind in ON_HARDWARE:
        raise ConfigError(
            f"{what} does not run on IBM hardware (backend {profile.name}): {why}. Train on a "
            "simulator (aer_ideal, aer_noisy), then send the trained model with `hqcnn-qiskit infer "
            f"--checkpoint RUN_DIR/best.pt --backend {profile.name}` (one journaled job, its cost "
            "estimated first; --dry-run shows the estimate)")


#: Shots per circuit of a profile that sets neither ``shots`` nor ``precision``, by kind: our own
#: samplers take 1024; IBM's estimator its default precision, 1/64, i.e. 4096.
DEFAULT_SHOTS = {"runtime": 4096}


def shots_per_circuit(profile: BackendProfile) -> int:
    """The shots each circuit of ``profile`` gets: ``shots``; else what ``precision`` asks for
    (⌈1/precision²⌉, as IBM's estimator converts it); else the kind's default
    (:data:`DEFAULT_SHOTS`, 1024 where not listed)."""
    if profile.shots:
        return int(profile.shots)
    if profile.precision:
        return math.ceil(1.0 / profile.precision**2)
    return DEFAULT_SHOTS.get(profile.kind, 1024)


def eval_batch_size(kind: str | None) -> int:
    """Images per forward pass for evaluating on a profile of ``kind`` (``None``: no circuit)."""
    return EVAL_BATCH_SIZES.get(kind, DEFAULT_EVAL_BATCH_SIZE)


#: Simulators of kind ``"aer"`` (profile field ``engine``); the first is the default.
ENGINES = ("batched", "aer")


@dataclass(frozen=True)
class MitigationSettings:
    """Client-side error mitigation (and the IBM Runtime options it maps onto).

    Args:
        readout: ``"none"``, ``"twirl"`` (measurement twirling, as in TREX) or ``"matrix"``
            (calibrated per-qubit confusion matrices).
        zne: Zero-noise extrapolation by gate folding.
        zne_factors: Noise scale factors (odd integers) for ZNE.
        zne_extrapolator: ``"linear"`` or ``"exponential"``.
        twirl_samples: Random twirls per circuit for ``readout = "twirl"``.
        calibration_shots: Shots per calibration circuit for ``readout = "matrix"``.
        dynamical_decoupling: IBM Runtime only.
        gate_twirling: IBM Runtime only.
    """

    readout: str = "none"
    zne: bool = False
    zne_factors: tuple[int, ...] = (1, 3, 5)
    zne_extrapolator: str = "linear"
    twirl_samples: int = 8
    calibration_shots: int = 4096
    dynamical_decoupling: bool = False
    gate_twirling: bool = False

    @property
    def enabled(self) -> bool:
        """Whether any client-side mitigation is on."""
        return self.readout != "none" or self.zne


@dataclass(frozen=True)
class BackendProfile:
    """One named way to run the quantum layer.

    Args:
        name: The profile's name (its file name without ``.toml``).
        kind: One of :data:`KINDS`.
        description: One line for ``hqcnn-qiskit backends``.
        device: Device or snapshot name (``FakeBrisbane``, ``ibm_kingston``, ``least_busy``).
        shots: Shots per circuit (sampling kinds).
        precision: Target precision (exact and runtime estimators).
        optimization_level: Transpiler optimisation level (0-3).
        seed_transpiler: Transpiler seed, so a layout is repeatable.
        physical_qubits: The device qubits to use, or empty for a calibration-based choice.
        seed: Seed of shot sampling and twirling.
        execution_mode: ``"job"``, ``"batch"`` or ``"session"`` (runtime kinds).
        engine: Simulator of kind ``"aer"``: ``"batched"`` (the vectorised density-matrix
            engine of :mod:`hqcnn_qiskit.density`, the default) or ``"aer"`` (one
            ``AerSimulator`` experiment per parameter row, the reference). Both use the same
            Aer noise model.
        mitigation: Error mitigation settings.
        source: The file the profile came from.
    """

    name: str
    kind: str
    description: str = ""
    device: str | None = None
    shots: int | None = None
    precision: float | None = None
    optimization_level: int = 2
    seed_transpiler: int = 1234
    physical_qubits: tuple[int, ...] = ()
    seed: int | None = None
    execution_mode: str = "job"
    engine: str | None = None
    mitigation: MitigationSettings = field(default_factory=MitigationSettings)
    source: str = ""


_ALL = frozenset(KINDS)
_DEVICE = frozenset({"aer", "runtime_local", "runtime"})  # transpiled to a device
_SNAPSHOT = frozenset({"aer", "runtime_local"})  # sampled locally, mitigation client-side
_RUNTIME = frozenset({"runtime"})


def _odd_distinct(factors) -> str | None:
    if any(f % 2 == 0 for f in factors) or len(set(factors)) < 2:
        return "needs two or more distinct odd integers"
    return None


def _distinct(qubits) -> str | None:
    return "has repeated qubits" if len(set(qubits)) != len(qubits) else None


@dataclass(frozen=True)
class FieldRule:
    """What a profile field may hold, beyond the type its dataclass annotation gives.

    Attributes:
        kinds: The kinds whose code uses the field; in a profile of any other kind it is an
            error (it would be silently ignored).
        low: Smallest allowed value (of every item, for a list).
        high: Largest allowed value.
        choices: The allowed strings.
        check: Further check of the whole value: a problem description, or ``None``.
    """

    kinds: frozenset[str] = _ALL
    low: int | float | None = None
    high: int | float | None = None
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None


#: Every profile field (``mitigation.*`` inside the ``[mitigation]`` table): the kinds that use it
#: (read from backends.py, noisy.py, ibm.py and mitigation.runtime_options) and its allowed
#: values. ``exact`` uses ``precision`` (Gaussian noise of that standard deviation) and ``seed``;
#: ``aer`` and ``runtime_local`` sample locally (``seed``) with client-side mitigation
#: (``calibration_shots``); ``runtime`` maps mitigation onto IBM's options
#: (``gate_twirling``, ``dynamical_decoupling``), uses ``precision`` when ``shots`` is unset,
#: runs in ``execution_mode``, and has no local sampling to seed.
FIELDS: dict[str, FieldRule] = {
    "kind": FieldRule(choices=tuple(KINDS)),
    "description": FieldRule(),
    "device": FieldRule(_DEVICE),
    "shots": FieldRule(_DEVICE, low=1),
    "precision": FieldRule(frozenset({"exact", "runtime"}), low=0.0),
    "optimization_level": FieldRule(_DEVICE, low=0, high=3),
    "seed_transpiler": FieldRule(_DEVICE, low=0),
    "physical_qubits": FieldRule(_DEVICE, low=0, check=_distinct),
    "seed": FieldRule(frozenset({"exact"}) | _SNAPSHOT, low=0),
    "execution_mode": FieldRule(_RUNTIME, choices=("job", "batch", "session")),
    "engine": FieldRule(frozenset({"aer"}), choices=ENGINES),
    "mitigation": FieldRule(_DEVICE),
    "mitigation.readout": FieldRule(_DEVICE, choices=("none", "twirl", "matrix")),
    "mitigation.zne": FieldRule(_DEVICE),
    "mitigation.zne_factors": FieldRule(_DEVICE, low=1, check=_odd_distinct),
    "mitigation.zne_extrapolator": FieldRule(_DEVICE, choices=("linear", "exponential")),
    "mitigation.twirl_samples": FieldRule(_DEVICE, low=1),
    "mitigation.calibration_shots": FieldRule(_SNAPSHOT, low=1),
    "mitigation.dynamical_decoupling": FieldRule(_RUNTIME),
    "mitigation.gate_twirling": FieldRule(_RUNTIME),
}

_TYPE_NAMES = {"bool": "true or false", "int": "an integer", "float": "a finite number",
               "str": "a string", "tuple[int, ...]": "a list of integers"}


def _check(value, annotation: str, where: str):
    """Coerce a TOML value to a dataclass field's annotated type, or raise."""
    optional = annotation.endswith("| None")
    base = annotation.replace("| None", "").strip()
    if value is None and optional:
        return None
    if base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "float":
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value))
        value = float(value) if ok else value
    elif base == "str":
        ok = isinstance(value, str)
    elif base.startswith("tuple[int"):
        ok = isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        value = tuple(value) if ok else value
    else:  # pragma: no cover - a field type this checker does not know is our bug
        raise TypeError(f"unchecked field type {annotation}")
    if not ok:
        raise BackendError(f"{where}: expected {_TYPE_NAMES.get(base, base)}, "
                           f"got {type(value).__name__} {value!r}")
    return value


def _check_rule(value, rule: FieldRule, where: str) -> None:
    """Raise unless ``value`` (already of the field's type) is allowed by ``rule``."""
    if rule.choices and value not in rule.choices:
        raise BackendError(f"{where}: '{value}' is not one of {', '.join(rule.choices)}")
    items = value if isinstance(value, tuple) else (value,)
    shown = list(value) if isinstance(value, tuple) else value
    for item in items:
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            if rule.low is not None and item < rule.low:
                bound = (f"between {rule.low} and {rule.high}" if rule.high is not None
                         else f"at least {rule.low}")
                raise BackendError(f"{where}: must be {bound}, got {shown!r}")
            if rule.high is not None and item > rule.high:
                raise BackendError(f"{where}: must be between {rule.low} and {rule.high}, "
                                   f"got {shown!r}")
    problem = rule.check(value) if rule.check else None
    if problem:
        raise BackendError(f"{where}: {problem}, got {shown!r}")


def _build(cls, data: dict, path: str, given: list[str], prefix: tuple[str, ...] = (), **extra):
    """``cls`` from a TOML table; every field is type-checked and checked against
    :data:`FIELDS`, and its dotted name appended to ``given``."""
    known = {f.name: f for f in fields(cls) if f.name not in ("name", "source")}
    values = {}
    for key, value in data.items():
        dotted = ".".join(prefix + (key,))
        where = f"{path}: field '{dotted}'"
        if key not in known:
            raise BackendError(f"{where} is unknown (known: {', '.join(sorted(known))})")
        given.append(dotted)
        if key == "mitigation":
            if not isinstance(value, dict):
                raise BackendError(f"{where}: expected a table")
            values[key] = _build(MitigationSettings, value, path, given, ("mitigation",))
            continue
        value = _check(value, str(known[key].type), where)
        _check_rule(value, FIELDS[dotted], where)
        values[key] = value
    return cls(**extra, **values)


def _validate(profile: BackendProfile, given: list[str]) -> BackendProfile:
    """Checks across fields: each given field applies to the kind, the device exists, the
    physical qubits fit the circuit and (for a snapshot) the device."""
    where = profile.source
    for dotted in given:
        kinds = FIELDS[dotted].kinds
        if profile.kind not in kinds:
            used = ", ".join(k for k in KINDS if k in kinds)
            raise BackendError(f"{where}: field '{dotted}' does not apply to kind "
                               f"'{profile.kind}' (only to {used})")
    if profile.kind in _DEVICE and not profile.device:
        raise BackendError(f"{where}: field 'device' is required for kind '{profile.kind}'")
    device_qubits = None
    if profile.kind in _SNAPSHOT:  # a device snapshot: must exist
        from .transpile import check_fake_device

        cls = check_fake_device(profile.device, where=f"{where}: field 'device'")
        if profile.physical_qubits:
            device_qubits = cls().num_qubits
    if profile.physical_qubits:
        from .model import NUM_QUBITS
        from .transpile import check_physical_qubits

        check_physical_qubits(profile.physical_qubits, NUM_QUBITS, device_qubits,
                              where=f"{where}: field 'physical_qubits'")
    return profile


def profile_dir() -> Path:
    """The folder of the shipped profiles.

    An installed package has them in ``hqcnn_qiskit/backend_profiles`` (setup.cfg maps the
    top-level ``backends/`` folder there); a source checkout or editable install reads
    ``backends/`` itself.
    """
    here = Path(__file__).resolve().parent
    installed = here / "backend_profiles"
    if installed.is_dir():
        return installed
    source = here.parent / "backends"
    if source.is_dir():
        return source
    raise BackendError(f"no backend profiles found (looked in {installed} and {source})")


def load_profile(name_or_path: str | Path) -> BackendProfile:
    """Load a shipped profile by name, or a profile file by path.

    Raises:
        BackendError: Unknown name, unreadable file, or an invalid field.
    """
    data, name, path = _read_profile(name_or_path)
    return _profile_from_data(data, name=name, source=str(path))


def _read_profile(name_or_path: str | Path) -> tuple[dict, str, Path]:
    """A profile file's parsed fields, the profile's name and the file."""
    text = str(name_or_path)
    if is_profile_path(text):
        path = Path(text)
        name = path.stem
        if not path.is_file():
            raise BackendError(f"backend profile file {path} does not exist")
    else:
        name = text
        path = profile_dir() / f"{text}.toml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in profile_dir().glob("*.toml")))
            raise BackendError(f"unknown backend '{text}'; choose from: {known}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), name, path
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BackendError(f"{path}: not a readable TOML file ({exc})") from None


def _profile_from_data(data: dict, *, name: str, source: str) -> BackendProfile:
    if "kind" not in data:
        raise BackendError(f"{source}: field 'kind' is missing (one of {', '.join(KINDS)})")
    given: list[str] = []
    profile = _build(BackendProfile, data, source, given, name=name, source=source)
    return _validate(profile, given)


def profile_snapshot(name_or_path: str | Path) -> dict:
    """What a checkpoint keeps of the profile a run trains on, so that evaluating the run later
    uses this very profile (from any folder, whatever the file says by then) and resuming it
    checks that the profile given again says the same, however its path is spelled.

    Returns:
        ``{"name", "source", "fields"}``: the profile's name, where it came from as the user
        named it (a shipped name, or the path given), and its fields as parsed from the file
        (plain values; the file's comments are not kept).

    Raises:
        BackendError: As :func:`load_profile`.
    """
    data, name, path = _read_profile(name_or_path)
    _profile_from_data(data, name=name, source=str(path))  # only a valid profile is kept
    shipped = not is_profile_path(name_or_path)
    return {"name": name, "source": f"{name} (shipped)" if shipped else str(name_or_path),
            "fields": data}


def snapshot_profile(snapshot: dict) -> BackendProfile:
    """The profile a :func:`profile_snapshot` holds.

    Raises:
        BackendError: The snapshot is not a valid profile (e.g. made by another version).
    """
    try:
        return _profile_from_data(snapshot["fields"], name=snapshot["name"],
                                  source=snapshot["source"])
    except (KeyError, TypeError) as exc:
        raise BackendError(f"the kept backend profile is incomplete ({exc!r})") from None


def is_profile_path(name_or_path: str | Path) -> bool:
    """Whether :func:`load_profile` reads ``name_or_path`` as a file (a ``.toml`` name or a
    path with a folder in it) rather than as a shipped profile's name."""
    text = str(name_or_path)
    return text.endswith(".toml") or "/" in text or "\\" in text


def profile_difference(a: BackendProfile, b: BackendProfile) -> str | None:
    """The first setting in which two profiles differ (``"shots 256 vs 8192"``), or None when
    they run the same (their names and files may differ)."""
    for f in fields(BackendProfile):
        if f.name in ("name", "source", "description"):
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "mitigation":
            for g in fields(MitigationSettings):
                if getattr(x, g.name) != getattr(y, g.name):
                    return f"mitigation.{g.name} {getattr(x, g.name)} vs {getattr(y, g.name)}"
        elif x != y:
            return f"{f.name} {x} vs {y}"
    return None


def list_profiles() -> list[BackendProfile]:
    """Every shipped profile, sorted by name."""
    return [load_profile(p) for p in sorted(profile_dir().glob("*.toml"))]
