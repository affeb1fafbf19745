"""Inference jobs: the classical front runs here, the circuit runs as one journaled job, and the
head is finished whenever the result is fetched.

``infer`` computes the 4 angles of every image locally, then sends the quantum part of all N
images as **one estimator job**: one PUB whose parameter array holds N rows (angles + trained
circuit weights) with the 8 observables broadcast against it (shape ``(N, 1)`` x ``(8,)``). It is
split into several jobs only when a job would pass the service's execution limit.

Nothing is lost after submission: before anything is sent, the head-side inputs (checkpoint path
and hash, image indices, labels, angles, weights, observables and layout) are written to
``RUN_DIR/jobs/<submission>/``; each job id is appended to ``RUN_DIR/jobs.jsonl`` and to the user
index ``$HQCNN_HOME/jobs.jsonl`` (default ``~/.hqcnn-qiskit``) as soon as the service returns it,
before any waiting. Nothing is submitted unless both places can be written
(:func:`check_writable`); a write that still fails after submission is reported with the job id
(``jobs fetch ID --run RUN_DIR`` finds a job the index lacks). ``fetch_job`` then needs only the
job id: it collects the result from the service (or from the run folder, once fetched), runs the
head and writes per-image predictions.

Backends of kind ``runtime`` go to IBM Quantum (:mod:`hqcnn_qiskit.ibm`); every other kind (the
``runtime_local`` testing mode on a device snapshot, Aer, exact) runs in this process through the
backend's own estimator, with the same journal, so ``infer`` + ``jobs fetch`` and ``evaluate`` on
the same profile are the same computation: the same numbers on exact backends, the same up to
shot noise where shots are sampled (``infer`` sends one job, ``evaluate`` several batches).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write, file_sha256, probe_writable, save_checkpoint
from .errors import BackendError, CheckpointError, ConfigError, HQCNNError
from .profiles import CONFIRM_ABOVE_SECONDS, shots_per_circuit

__all__ = [
    "CONFIRM_ABOVE_SECONDS",
    "MAX_EXECUTIONS_PER_JOB",
    "OPEN_PLAN_SECONDS",
    "InferencePlan",
    "hqcnn_home",
    "check_writable",
    "estimate_usage",
    "prepare_inference",
    "describe_plan",
    "submit_inference",
    "job_tag",
    "InterruptedSubmission",
    "infer",
    "fetch_job",
    "job_status",
    "list_jobs",
]

#: The Open plan's QPU time per rolling 28 days.
OPEN_PLAN_SECONDS = 600.0
#: IBM's job validation limit on executions (circuits after broadcasting x shots) per job. The
#: guide exempts Estimator jobs (the service splits them into sub-jobs); we keep to it anyway so
#: that each job stays small and a failure costs little.
MAX_EXECUTIONS_PER_JOB = 10_000_000
#: IBM's job validation passes any job with fewer 2-qubit gates than this (counted on the
#: submitted circuit, multiplied by the sum of ZNE noise factors).
SAFE_TWO_QUBIT_GATES = 10_000
#: IBM's published baseline usage model (guide "Workload usage", section "Estimate usage before
#: submitting a job"): ~2 s per sub-job + (rep_delay + circuit length) x executions.
SUBJOB_OVERHEAD_SECONDS = 2.0
DEFAULT_REP_DELAY = 250e-6

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def hqcnn_home() -> Path:
    """``$HQCNN_HOME``, else ``~/.hqcnn-qiskit``: where the user-level job index lives."""
    return Path(os.environ.get("HQCNN_HOME") or Path.home() / ".hqcnn-qiskit")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _append_line(path: Path, record: dict) -> None:
    """Append one JSON line and make it durable before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def check_writable(run_dir) -> None:
    """Fail before anything is submitted unless the journal can be written: the run folder's
    ``jobs/`` area and ``jobs.jsonl``, and the user index ``$HQCNN_HOME/jobs.jsonl``.

    Each folder is really written to (:func:`~hqcnn_qiskit.checkpoint.probe_writable`, which
    leaves nothing behind) and an existing journal is opened for appending, so a read-only
    mount, a missing permission or a file in the way are all caught.

    Args:
        run_dir: The checkpoint's folder.

    Raises:
        ConfigError: One of them cannot be written (nothing has been submitted).
    """
    run_dir = Path(run_dir)
    index = hqcnn_home() / "jobs.jsonl"
    for folder, journal, what in ((run_dir / "jobs", run_dir / "jobs.jsonl", "run folder"),
                                  (index.parent, index, "job index folder ($HQCNN_HOME)")):
        try:
            probe_writable(folder)
            if journal.exists() or journal.is_symlink():
                with journal.open("a", encoding="utf-8"):
                    pass
        except OSError as exc:
            where = run_dir if folder.parent == run_dir else folder
            raise ConfigError(f"cannot write to the {what} {where} ({exc.strerror or exc}: "
                              f"{exc.filename or journal}); nothing was submitted") from None


def _read_lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line after a crash: skip it
                continue
    return out


def _device_key(name: str | None) -> str:
    """``FakeBrisbane``, ``fake_brisbane`` and ``ibm_brisbane`` all become ``brisbane``."""
    text = (name or "").lower()
    for prefix in ("fake_", "fake", "ibm_"):
        text = text.removeprefix(prefix)
    return text


# Cost ------------------------------------------------------------------------------------------
def _measurement_bases(observables) -> int:
    """How many circuits one parameter row costs: the bases the sampling estimator measures
    (:func:`hqcnn_qiskit.measurement.measurement_bases`)."""
    from .measurement import measurement_bases

    return len(measurement_bases([observables] if isinstance(observables, str)
                                 else list(observables)))


def estimate_usage(circuit, target, *, rows: int, observables, shots: int, mitigation,
                   rep_delay: float | None = None, jobs: int = 1) -> dict:
    """QPU usage of ``rows`` parameter rows of ``circuit`` with IBM's baseline model.

    ``usage ≈ jobs x 2 s + (rep_delay + circuit length) x executions``, where executions =
    rows x measurement bases (the qubit-wise commuting groups the local sampling estimator
    measures, :func:`hqcnn_qiskit.measurement.measurement_bases`; IBM groups on its side, and
    the greedy grouping is never smaller than qiskit's, so for IBM this errs high) x shots x ZNE
    noise factors,
    plus, with readout mitigation (TREX), one calibration circuit's shots per basis (assumed).
    Circuit length is the ISA circuit's scheduled duration plus one measurement and one qubit
    initialisation (a reset's duration). Twirling spreads the shots over randomizations without
    adding executions. Assumes one sub-job per job.

    Returns:
        A dict with ``executions``, ``circuit_seconds``, ``rep_delay``, ``seconds`` and the parts.
    """
    bases = _measurement_bases(observables)
    factors = len(mitigation.zne_factors) if mitigation.zne else 1
    executions = rows * bases * shots * factors
    calibration = bases * shots if mitigation.readout != "none" else 0
    try:
        length = float(circuit.estimate_duration(target, unit="s"))
    except Exception:  # noqa: BLE001 - a target without durations: IBM's "typical" 100 µs
        length = 100e-6
    for name in ("measure", "reset"):
        try:
            props = target[name].get((0,))
            length += float(props.duration or 0.0) if props is not None else 0.0
        except KeyError:
            pass
    rep = DEFAULT_REP_DELAY if rep_delay is None else float(rep_delay)
    total_exec = executions + calibration
    seconds = jobs * SUBJOB_OVERHEAD_SECONDS + (rep + length) * total_exec
    return {
        "rows": rows, "bases": bases, "shots": shots, "zne_factors": factors,
        "executions": executions, "calibration_executions": calibration,
        "circuit_seconds": length, "rep_delay": rep, "jobs": jobs, "seconds": seconds,
        "quick_formula_seconds": jobs * SUBJOB_OVERHEAD_SECONDS + 0.00035 * total_exec,
    }


def _split_rows(n: int, per_row_executions: int) -> list[tuple[int, int]]:
    per_job = max(1, MAX_EXECUTIONS_PER_JOB // max(1, per_row_executions))
    return [(a, min(n, a + per_job)) for a in range(0, n, per_job)]


# Planning --------------------------------------------------------------------------------------
@dataclass
class InferencePlan:
    """Everything decided before submission (no job exists yet).

    Attributes:
        checkpoint: Absolute path of the checkpoint.
        run_dir: The checkpoint's folder (journal and results go here).
        profile: The backend profile.
        remote: Whether the job goes to IBM Quantum (kind ``runtime``).
        device_name: Device the ISA circuit is for.
        offline_note: Why a snapshot stands in for the device (dry-run without the service).
        circuit: The ISA circuit; ``observables`` are mapped onto its layout.
        rows: ``(N, P)`` parameter values in ``circuit.parameters`` order.
        parts: Row ranges, one per job.
        estimate: :func:`estimate_usage` of the whole submission.
    """

    checkpoint: Path
    run_dir: Path
    checkpoint_sha256: str
    dataset: dict
    dataset_label: str
    split: str
    indices: np.ndarray
    labels: np.ndarray
    angles: np.ndarray
    weights: dict
    profile: object
    remote: bool
    device_name: str
    offline_note: str | None
    circuit_source: str
    circuit: object
    observables: list
    physical_qubits: tuple
    rows: np.ndarray
    parts: list
    estimate: dict
    isa_stats: dict
    backend: object = None  # the local backend object, or the IBM device
    notes: list = field(default_factory=list)
    head: dict = field(default_factory=dict)  # model config and head weights, kept for fetching


def _saved_circuit(run_dir: Path, train_backend, device_name: str, target):
    """``RUN_DIR/circuit.qpy`` if it was made for this device and is valid on its target
    (``train_backend``: the training profile, or its name or path)."""
    from .profiles import BackendProfile, load_profile
    from .transpile import isa_violations, load_qpy

    path = run_dir / "circuit.qpy"
    if not path.is_file():
        return None, "no circuit.qpy in the run folder"
    if not train_backend:
        return None, "the checkpoint does not say which backend circuit.qpy was made for"
    try:
        trained_on = (train_backend if isinstance(train_backend, BackendProfile)
                      else load_profile(train_backend)).device
    except HQCNNError:
        trained_on = None
    if _device_key(trained_on) != _device_key(device_name):
        return None, f"circuit.qpy was made for {trained_on or 'another backend'}"
    circuit = load_qpy(path)
    if circuit.num_qubits != target.num_qubits or isa_violations(circuit, target):
        return None, "circuit.qpy is not valid on the device's current ISA"
    return circuit, None


def _rows(circuit, model, angles: np.ndarray) -> tuple[np.ndarray, dict]:
    """Parameter rows in ``circuit.parameters`` order, matched by name."""
    q = model.quantum
    weights = dict(zip((p.name for p in q.weight_params),
                       q.connector.weight.detach().double().numpy().tolist()))
    columns = []
    inputs = {p.name: i for i, p in enumerate(q.input_params)}
    for p in circuit.parameters:
        if p.name in inputs:
            columns.append(angles[:, inputs[p.name]])
        elif p.name in weights:
            columns.append(np.full(len(angles), weights[p.name]))
        else:
            raise CheckpointError(f"the circuit's parameter '{p.name}' is not in the checkpoint")
    if len(columns) != len(inputs) + len(weights):
        raise CheckpointError("the circuit does not have the checkpoint's parameters")
    return np.stack(columns, axis=1), weights


def _isa_stats(circuit, physical_qubits) -> dict:
    from .transpile import count_two_qubit_gates

    return {"device_qubits": circuit.num_qubits, "qubits": [int(q) for q in physical_qubits],
            "depth": circuit.depth(), "two_qubit_gates": count_two_qubit_gates(circuit),
            "ops": {k: int(v) for k, v in circuit.count_ops().items()}}


def prepare_inference(checkpoint, *, backend: str, split: str = "test", limit: int | None = None,
                      data_root=None, verify: bool = True, dry_run: bool = False,
                      log: Log = _stderr) -> InferencePlan:
    """Run the classical front, pick the ISA circuit, build the parameter rows and the estimate.

    For a ``runtime`` profile this connects to IBM Quantum to resolve the device; with
    ``dry_run`` and no service (no account, no network) the device's snapshot stands in.

    Raises:
        CheckpointError: Missing checkpoint, a classical twin, or a circuit that does not fit.
        BackendError: Unknown profile or device, too few qubits, no account (not in dry run).
        DataError: The data does not match the checkpoint's dataset.
        ConfigError: ``limit`` below 2.
    """
    from .backends import get_backend
    from .data import DatasetSpec, load_split, subset_indices
    from .evaluate import load_checkpoint_model, trained_backend
    from .profiles import load_profile
    from .transpile import transpile_for_profile

    if limit is not None and limit < 2:  # checked before anything is sent, not after
        raise ConfigError(f"limit must be at least 2 images (ACC and AUC need two), got {limit}")
    checkpoint = Path(checkpoint).resolve()
    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint {checkpoint} does not exist")
    profile = load_profile(backend)
    model, payload = load_checkpoint_model(checkpoint, backend="aer_ideal")
    if not model.is_quantum:
        raise CheckpointError(f"{checkpoint} is a classical twin: it has no circuit to run")
    try:
        spec = DatasetSpec.from_dict(payload["train_config"]["dataset"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{checkpoint} has no dataset config ({exc})") from None
    dataset = load_split(spec, split, root=data_root, limit=limit, verify=verify)
    images, labels = dataset.tensors
    # load_split checked the split has its official size; the subset it kept is this one
    indices = subset_indices(int(spec.info["n_samples"][split]), limit)
    if images.shape[1] != model.config.in_channels or images.shape[-1] != model.config.image_size:
        raise CheckpointError(
            f"{checkpoint} expects {model.config.in_channels}x{model.config.image_size}px images, "
            f"the data has {images.shape[1]}x{images.shape[-1]}px"
        )
    with torch.no_grad():
        angles = torch.cat([model.features(images[i:i + 256]) for i in range(0, len(images), 256)])
    angles = angles.double().numpy()
    run_dir = checkpoint.parent
    observables = model.quantum.observables
    remote = profile.kind == "runtime"
    offline_note = None
    notes = []
    try:
        train_backend = trained_backend(payload)
    except (KeyError, HQCNNError):
        train_backend = None
    if remote:
        from . import ibm

        try:
            device = ibm.resolve_device(ibm.get_service(), profile.device)
            device_name = device.name
        except ibm.ServiceUnavailable as exc:
            if not dry_run:
                raise
            device, snap = ibm.offline_snapshot(profile.device)
            device_name = profile.device
            offline_note = (f"IBM Quantum not reachable ({exc}); ISA circuit and estimate use "
                            f"the {snap} snapshot in place of {profile.device}")
        target = device.target
        circuit, why = _saved_circuit(run_dir, train_backend, device_name, target)
        if circuit is not None:
            source = f"{run_dir / 'circuit.qpy'} (saved with the run)"
            from qiskit.quantum_info import SparsePauliOp

            mapped = [SparsePauliOp(o).apply_layout(circuit.layout) for o in observables]
            qubits = tuple(circuit.layout.initial_index_layout()[: model.quantum.circuit.num_qubits])
        else:
            tc = transpile_for_profile(model.quantum.circuit, observables, target, profile)
            circuit, mapped, qubits = tc.circuit, list(tc.observables), tc.physical_qubits
            source = f"transpiled now ({why})"
        rep_delay = getattr(device, "default_rep_delay", None)
        backend_obj = device
    else:
        backend_obj = get_backend(profile)
        target = getattr(backend_obj, "target", None)
        source = "built by the backend"
        if target is not None and hasattr(backend_obj, "load_qpy"):
            saved, why = _saved_circuit(run_dir, train_backend, profile.device, target)
            if saved is not None:
                backend_obj.load_qpy(run_dir / "circuit.qpy")
                source = f"{run_dir / 'circuit.qpy'} (saved with the run)"
            else:
                source = f"transpiled now ({why})"
        circuit, mapped = backend_obj.prepare(model.quantum.circuit, observables)
        transpiled = getattr(backend_obj, "transpiled", None)
        qubits = transpiled.physical_qubits if transpiled is not None else tuple(range(4))
        device_name = profile.device or profile.kind
        rep_delay = getattr(getattr(backend_obj, "device", None), "default_rep_delay", None)
    rows, weights = _rows(circuit, model, angles)
    shots = shots_per_circuit(profile)
    m = profile.mitigation
    bases = _measurement_bases(mapped)
    per_row = bases * shots * (len(m.zne_factors) if m.zne else 1)
    parts = _split_rows(len(rows), per_row)
    if target is not None:
        estimate = estimate_usage(circuit, target, rows=len(rows), observables=mapped, shots=shots,
                                  mitigation=m, rep_delay=rep_delay, jobs=len(parts))
    else:
        estimate = {"seconds": 0.0, "executions": len(rows) * per_row, "jobs": len(parts)}
    isa = _isa_stats(circuit, qubits)
    two_q = isa["two_qubit_gates"] * (sum(m.zne_factors) if m.zne else 1)
    if two_q >= SAFE_TWO_QUBIT_GATES:
        notes.append(f"{two_q} two-qubit gates (with ZNE folding) is above the {SAFE_TWO_QUBIT_GATES} "
                     "that IBM's job validation always accepts; the service may reject the job")
    return InferencePlan(
        checkpoint=checkpoint, run_dir=run_dir, checkpoint_sha256=file_sha256(checkpoint),
        dataset=payload["train_config"]["dataset"],
        dataset_label=spec.describe(), split=split,
        indices=indices, labels=labels.numpy(), angles=angles,
        weights=weights, profile=profile, remote=remote, device_name=device_name,
        offline_note=offline_note, circuit_source=source, circuit=circuit, observables=mapped,
        physical_qubits=tuple(int(q) for q in qubits), rows=rows, parts=parts, estimate=estimate,
        isa_stats=isa, backend=backend_obj, notes=notes,
        head={"model_config": payload["model_config"], "weights": model.head.state_dict()},
    )


def describe_plan(plan: InferencePlan) -> list[str]:
    """Human-readable lines: device, ISA circuit, jobs, executions, usage estimate."""
    e, s, p = plan.estimate, plan.isa_stats, plan.profile
    m = p.mitigation
    lines = [f"backend: {p.name} (kind {p.kind}, device {plan.device_name}, "
             f"execution mode {p.execution_mode})"]
    if plan.offline_note:
        lines.append(f"offline: {plan.offline_note}")
    lines += [
        f"checkpoint: {plan.checkpoint} ({plan.dataset_label}, {plan.split} split, "
        f"{len(plan.rows)} images)",
        f"ISA circuit: {plan.circuit_source}",
        f"  {s['device_qubits']}-qubit device, physical qubits {s['qubits']}, depth {s['depth']}, "
        f"two-qubit gates {s['two_qubit_gates']}",
        f"  ops: {', '.join(f'{k} {v}' for k, v in sorted(s['ops'].items()))}",
        f"mitigation: readout {m.readout}, zne {m.zne}, gate twirling {m.gate_twirling}, "
        f"dynamical decoupling {m.dynamical_decoupling}",
        f"jobs: {len(plan.parts)} job(s), 1 PUB each: {len(plan.rows)} parameter rows x "
        f"{len(plan.observables)} observables broadcast",
    ]
    if "bases" in e:
        lines.append(
            f"executions: {e['rows']} rows x {e['bases']} measurement bases x {e['shots']} shots"
            + (f" x {e['zne_factors']} ZNE factors" if e["zne_factors"] > 1 else "")
            + f" = {e['executions']:,}"
            + (f" (+{e['calibration_executions']:,} readout calibration, assumed)"
               if e["calibration_executions"] else ""))
    # QPU time applies to IBM devices only: a runtime_local snapshot says what the device it
    # stands for would charge; simulators (aer, exact) cost no QPU time at all
    if "bases" in e and p.kind in ("runtime", "runtime_local"):
        rate = (e["rep_delay"] + e["circuit_seconds"]) * 1e6
        if p.kind == "runtime_local":
            lines.append(f"QPU usage: none (local testing mode on the {plan.device_name} "
                         "snapshot); the same job on the real device would cost:")
        lines += [
            f"estimated QPU usage: {e['seconds']:.1f} s = {e['jobs']} x 2 s overhead + "
            f"{e['executions'] + e['calibration_executions']:,} x {rate:.0f} µs "
            f"(rep_delay {e['rep_delay'] * 1e6:.0f} µs + circuit {e['circuit_seconds'] * 1e6:.1f} µs)"
            f"; IBM quick formula 2 s + 350 µs/execution: {e['quick_formula_seconds']:.1f} s",
            f"  = {100 * e['seconds'] / OPEN_PLAN_SECONDS:.1f}% of the Open plan's "
            f"{OPEN_PLAN_SECONDS / 60:.0f} min per 28 days (model: IBM 'Workload usage' guide; "
            "mitigation overheads beyond TREX calibration not counted)",
        ]
    lines += [f"note: {n}" for n in plan.notes]
    return lines


# Submission ------------------------------------------------------------------------------------
def _pub(plan: InferencePlan, a: int, b: int):
    rows = plan.rows[a:b]
    return (plan.circuit, list(plan.observables), rows.reshape(len(rows), 1, rows.shape[1]))


def _submission_dir(plan: InferencePlan, submission: str) -> Path:
    return plan.run_dir / "jobs" / submission


def _save_inputs(plan: InferencePlan, submission: str) -> Path:
    """Write the head-side inputs before anything is submitted."""
    folder = _submission_dir(plan, submission)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "inputs.npz",
                 lambda fh: np.savez(fh, indices=plan.indices, labels=plan.labels,
                                     angles=plan.angles, rows=plan.rows))
    # the head the values go through, so that training on (or deleting) the checkpoint before
    # the job is fetched cannot strand it
    save_checkpoint(folder / "head.pt", plan.head)
    meta = {
        "submission": submission, "created": _now(), "checkpoint": str(plan.checkpoint),
        "checkpoint_sha256": plan.checkpoint_sha256, "dataset": plan.dataset,
        "dataset_label": plan.dataset_label, "split": plan.split, "n": int(len(plan.rows)),
        "backend": plan.profile.name, "kind": plan.profile.kind, "device": plan.device_name,
        "execution_mode": plan.profile.execution_mode, "shots": shots_per_circuit(plan.profile),
        "parts": [list(p) for p in plan.parts], "weights": plan.weights,
        "parameters": [p.name for p in plan.circuit.parameters],
        "observables": [[(lbl, float(c.real)) for lbl, c in o.label_iter()]
                        if hasattr(o, "label_iter") else str(o) for o in plan.observables],
        "physical_qubits": list(plan.physical_qubits), "isa": plan.isa_stats,
        "estimate": plan.estimate, "circuit_source": plan.circuit_source,
    }
    text = json.dumps(meta, indent=1, sort_keys=True)
    atomic_write(folder / "meta.json", lambda fh: fh.write(text.encode("utf-8")))
    return folder


def _journal(run_dir: Path, record: dict, *, index: bool = True, log: Log = _stderr) -> None:
    """Append ``record`` (an event of a job that exists) to the run journal and, with ``index``,
    to the user index.

    :func:`check_writable` ran before submission, so a write fails here only in a race (a full
    disk, a folder made read-only meanwhile). The job exists by then, so a failure is never
    raised: ``log`` gets the job id and what to do, and the other journal is still written.
    """
    job_id = record["job_id"]
    journal = run_dir / "jobs.jsonl"
    try:
        _append_line(journal, record)
    except OSError as exc:
        log(f"warning: job {job_id} exists but could not be journaled in {journal} "
            f"({exc.strerror or exc}); to keep it fetchable, append this line to that file: "
            + json.dumps(record, sort_keys=True))
    if not index:
        return
    path = hqcnn_home() / "jobs.jsonl"
    try:
        _append_line(path, {
            k: record[k] for k in ("job_id", "submission", "part", "parts", "backend", "device",
                                   "kind", "time") if k in record
        } | {"run_dir": str(run_dir)})
    except OSError as exc:
        log(f"warning: job {job_id} exists but is not in the job index {path} "
            f"({exc.strerror or exc}); `hqcnn-qiskit jobs fetch {job_id} --run {run_dir}` "
            "finds it in the run folder's journal")


def job_tag(submission: str, part: int) -> str:
    """The tag a runtime job of ``submission`` carries on IBM Quantum, so that it can be found
    when its id never came back (``jobs fetch ID --run RUN_DIR`` adopts it by this tag)."""
    return f"hqcnn-{submission}-p{part}"


class InterruptedSubmission(KeyboardInterrupt):
    """Ctrl-C while a job was on its way, and the service could not confirm whether it took it.

    Attributes:
        tag: The tag the job carries if it exists (see :func:`job_tag`).
        run_dir: The run folder whose journal knows the tag.
    """

    def __init__(self, tag: str, run_dir: Path):
        super().__init__(tag)
        self.tag, self.run_dir = tag, run_dir


def submit_inference(plan: InferencePlan, *, yes: bool = False, log: Log = _stderr,
                     submitted: list | None = None) -> list[str]:
    """Submit the plan's jobs and journal each id as soon as it exists.

    Runtime jobs return at once (use :func:`fetch_job` to wait); other kinds run here and their
    result is saved with the journal. Nothing is submitted unless the journal can be written
    (:func:`check_writable`); a journal write that still fails afterwards is reported on ``log``
    with the job id, never raised.

    Args:
        plan: From :func:`prepare_inference`.
        yes: Submit even above :data:`CONFIRM_ABOVE_SECONDS` of estimated QPU usage.
        log: Where progress lines go.
        submitted: If given, each job id is appended to it as soon as the service returns it,
            so that a caller interrupted later (Ctrl-C) knows exactly which jobs this call made.

    Returns:
        The job ids, one per part.

    Raises:
        ConfigError: A real-device submission above :data:`CONFIRM_ABOVE_SECONDS` without ``yes``,
            or a run folder or job index that cannot be written.
    """
    seconds = max(plan.estimate.get("seconds", 0.0), plan.estimate.get("quick_formula_seconds", 0.0))
    if plan.remote and seconds > CONFIRM_ABOVE_SECONDS and not yes:
        raise ConfigError(
            f"estimated QPU usage {seconds:.0f} s on {plan.device_name} is above "
            f"{CONFIRM_ABOVE_SECONDS:.0f} s (Open plan: {OPEN_PLAN_SECONDS / 60:.0f} min per 28 "
            "days); check with --dry-run, then rerun with --yes"
        )
    check_writable(plan.run_dir)
    submission = uuid.uuid4().hex[:12]
    try:
        folder = _save_inputs(plan, submission)
    except OSError as exc:
        raise ConfigError(f"cannot write the job inputs to {_submission_dir(plan, submission)} "
                          f"({exc.strerror or exc}); nothing was submitted") from None
    submitted = [] if submitted is None else submitted
    common = {"submission": submission, "parts": len(plan.parts), "backend": plan.profile.name,
              "device": plan.device_name, "kind": "runtime" if plan.remote else "local"}
    ids = []
    if plan.remote:
        from . import ibm
        from .mitigation import runtime_options

        options = runtime_options(plan.profile)
        mode = ibm.open_mode(plan.backend, plan.profile.execution_mode)
        try:
            for part, (a, b) in enumerate(plan.parts):
                tag = job_tag(submission, part)
                _note(plan.run_dir, {**common, "event": "submitting", "part": part,
                                     "rows": [a, b], "tag": tag, "time": _now()}, log=log)
                interrupted = None
                try:
                    job = ibm.submit_estimator(mode, [_pub(plan, a, b)], options, tag=tag,
                                               log=log)
                except ibm.SubmissionUnconfirmed as exc:
                    raise BackendError(f"{exc}; if it did, the job is tagged {tag}: find its id "
                                       f"by that tag, then `hqcnn-qiskit jobs fetch JOB_ID --run "
                                       f"{plan.run_dir}` adopts it; else rerun `infer`") from None
                except KeyboardInterrupt as exc:  # keep a job the service had already taken
                    job, interrupted = getattr(exc, "job", None), exc
                    if job is None and getattr(exc, "unconfirmed", True):
                        raise InterruptedSubmission(tag, plan.run_dir) from None
                    if job is None:
                        raise
                job_id = job.job_id()
                submitted.append(job_id)
                _journal(plan.run_dir, {**common, "event": "submitted", "job_id": job_id,
                                        "part": part, "rows": [a, b], "tag": tag,
                                        "time": _now()}, log=log)
                ids.append(job_id)
                log(f"submitted job {job_id} ({b - a} images) to {plan.device_name}")
                if interrupted is not None:
                    raise interrupted
        finally:
            if mode is not plan.backend:
                try:  # closing a batch or session lets its submitted jobs run
                    mode.close()
                except Exception as exc:  # noqa: BLE001
                    log(f"warning: could not close the {plan.profile.execution_mode} "
                        f"({ibm.scrub(exc)})")
        return ids
    estimator = plan.backend.estimator()
    for part, (a, b) in enumerate(plan.parts):
        job = estimator.run([_pub(plan, a, b)])
        job_id = f"local-{job.job_id()}"
        submitted.append(job_id)
        _journal(plan.run_dir, {**common, "event": "submitted", "job_id": job_id, "part": part,
                                "rows": [a, b], "time": _now()}, log=log)
        log(f"running job {job_id} ({b - a} images) locally on {plan.profile.name}")
        evs = np.asarray(job.result()[0].data.evs, dtype=float)
        _save_result(folder, part, evs, job_id=job_id,
                     retry="make the run folder writable and rerun `infer`")
        _journal(plan.run_dir, {**common, "event": "done", "job_id": job_id, "part": part,
                                "time": _now()}, index=False, log=log)
        ids.append(job_id)
    return ids


def _save_result(folder: Path, part: int, evs: np.ndarray, *, job_id: str, retry: str) -> None:
    """Store a job's values as ``folder/result_<part>.npy``.

    Raises:
        HQCNNError: The folder cannot be written; ``retry`` says how to get the values again.
    """
    try:
        atomic_write(folder / f"result_{part}.npy", lambda fh: np.save(fh, evs))
    except OSError as exc:
        raise HQCNNError(f"cannot save the values of job {job_id} in {folder} "
                         f"({exc.strerror or exc}); {retry}") from None


def _note(run_dir: Path, record: dict, *, log: Log) -> None:
    """Append a state change (``submitting``, ``done``, ``fetched``, ``failed``) to the run
    journal. Those lines inform ``jobs list`` and, for ``submitting``, keep the tag by which a
    job whose id was lost can be adopted; the result files are what counts, so a failed write
    is a warning."""
    try:
        _append_line(run_dir / "jobs.jsonl", record)
    except OSError as exc:
        log(f"warning: could not note job {record['job_id']} as {record['event']} in "
            f"{run_dir / 'jobs.jsonl'} ({exc.strerror or exc})")


# Fetching --------------------------------------------------------------------------------------
def list_jobs() -> list[dict]:
    """The user index (``$HQCNN_HOME/jobs.jsonl``), newest last, with the last known state."""
    known = ("submitted", "done", "fetched", "failed")
    journals: dict[str, dict] = {}  # run_dir -> {job_id: last known event}
    out = []
    for rec in _read_lines(hqcnn_home() / "jobs.jsonl"):
        run_dir = rec.get("run_dir", "")
        if run_dir not in journals:
            journals[run_dir] = {e.get("job_id"): e["event"]
                                 for e in _read_lines(Path(run_dir) / "jobs.jsonl")
                                 if e.get("event") in known}
        out.append({**rec, "state": journals[run_dir].get(rec.get("job_id"), "submitted")})
    return out


def _find(job_id: str, *, run_dir=None) -> tuple[Path, dict, list[dict]]:
    """Run folder, submission meta and the submission's journal lines of ``job_id``.

    Args:
        job_id: The job.
        run_dir: Look the job up in this run folder's ``jobs.jsonl`` first (a path to a file in
            it, such as ``best.pt``, also works), then in the index's lines for that folder;
            for a job whose index line could not be written. Without it: the user index.

    The jobs of the submission that only the index knows (its run journal line could not be
    written) count as submitted.

    Raises:
        HQCNNError: Unknown job id, or its inputs are unreadable.
    """
    index = hqcnn_home() / "jobs.jsonl"
    entries = _read_lines(index)
    rec = None
    if run_dir is not None:
        run_dir = Path(run_dir).resolve()
        if run_dir.is_file():
            run_dir = run_dir.parent
        rec = next((e for e in reversed(_read_lines(run_dir / "jobs.jsonl"))
                    if e.get("job_id") == job_id and e.get("event") == "submitted"), None)
        entries = [r for r in entries if r.get("run_dir") == str(run_dir)]
    if rec is None:
        rec = next((r for r in reversed(entries) if r.get("job_id") == job_id), None)
        if rec is None and run_dir is not None:
            rec = _adopt(job_id, run_dir)
        if rec is None and run_dir is not None:
            raise HQCNNError(f"unknown job id '{job_id}' (not in {run_dir / 'jobs.jsonl'})")
        if rec is None:
            raise HQCNNError(f"unknown job id '{job_id}' (not in {index}; `hqcnn-qiskit jobs "
                             "list` shows the known ones; `hqcnn-qiskit jobs fetch JOB_ID --run "
                             "RUN_DIR` looks in a run folder's journal)")
        run_dir = Path(rec["run_dir"])
    submission = rec["submission"]
    indexed = [r for r in entries
               if r.get("submission") == submission and r.get("run_dir") == str(run_dir)]
    folder = run_dir / "jobs" / submission
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HQCNNError(f"job {job_id}: its inputs in {folder} are unreadable ({exc})") from None
    events = [e for e in _read_lines(run_dir / "jobs.jsonl") if e.get("submission") == submission]
    journaled = {e.get("job_id") for e in events if e.get("event") == "submitted"}
    events += [{**r, "event": "submitted"} for r in indexed if r.get("job_id") not in journaled]
    return run_dir, meta, events


def _adopt(job_id: str, run_dir: Path) -> dict | None:
    """Journal a runtime job whose id never reached ``run_dir``'s journal (the process stopped
    while it was being sent), found by its tag among the journal's ``submitting`` lines.

    Returns:
        Its ``submitted`` record, or None when no submission of this folder was left waiting for
        an id, or the service does not know the job or it carries none of their tags.
    """
    journal = _read_lines(run_dir / "jobs.jsonl")
    has_job = {(e.get("submission"), e.get("part")) for e in journal if e.get("event") == "submitted"}
    waiting = {e["tag"]: e for e in journal if e.get("event") == "submitting" and e.get("tag")
               and (e.get("submission"), e.get("part")) not in has_job}
    if not waiting or job_id.startswith("local-"):
        return None
    from .ibm import ServiceUnavailable

    try:
        tags = list(_service_job(job_id).tags or [])
    except ServiceUnavailable:  # no account or no network: said as such
        raise
    except HQCNNError:  # the service does not know the job: reported as unknown here
        return None
    tag = next((t for t in tags if t in waiting), None)
    if tag is None:
        return None
    record = {**{k: v for k, v in waiting[tag].items() if k != "tag"}, "event": "submitted",
              "job_id": job_id, "tag": tag, "time": _now()}
    _journal(run_dir, record)
    return {**record, "run_dir": str(run_dir)}


def job_status(job_id: str, *, run_dir=None) -> dict:
    """The service's state for runtime jobs, the journal's for local ones.

    Args:
        job_id: The job.
        run_dir: Look the job up in this run folder's journal instead of the user index.

    Returns:
        ``{"job_id", "status", "backend", "device", "reason"}``.
    """
    run_dir, meta, events = _find(job_id, run_dir=run_dir)
    folder = run_dir / "jobs" / meta["submission"]
    part = next(e["part"] for e in events
                if e.get("job_id") == job_id and e.get("event") == "submitted")
    out = {"job_id": job_id, "backend": meta["backend"], "device": meta["device"], "reason": None}
    if (folder / f"result_{part}.npy").is_file():
        return {**out, "status": "DONE"}
    if meta["kind"] != "runtime":
        return {**out, "status": "LOST",
                "reason": "a local job runs inside `infer`; that process ended before it finished"}
    from . import ibm

    job = _service_job(job_id)
    try:
        status = ibm.job_state(job)
    except Exception as exc:  # noqa: BLE001 - what is left after the retries
        raise BackendError(f"cannot reach IBM Quantum to ask about job {job_id} "
                           f"({ibm.scrub(exc)}); try again later") from None
    if status in ("ERROR", "CANCELLED"):
        out["reason"] = ibm.failure_reason(job)
    return {**out, "status": status}


def fetch_job(job_id: str, *, run_dir=None, wait: bool = True, keep_scores: bool = False,
              log: Log = _stderr) -> dict:
    """Collect a submission's results (waiting for runtime jobs), finish the head, write
    ``predictions.csv`` and return the metrics.

    ``job_id`` may be any job of a submission split into several jobs; all are collected.

    Args:
        job_id: The job.
        run_dir: Look the job up in this run folder's journal instead of the user index.
        wait: Wait for a runtime job that is not done yet (else raise).
        keep_scores: Also return the per-image ``"scores"`` and ``"labels"`` (NumPy arrays), for
            :func:`hqcnn_qiskit.uncertainty.split_intervals`.
        log: Where progress lines go.

    Returns:
        ``{"acc", "auc", "n", "split", "backend", "dataset", "job_id", "device", "predictions",
        "checkpoint", "task", "class_names"}`` (and the scores).

    Raises:
        HQCNNError: Unknown job id, a failed job (with the service's reason), a job not finished
            yet (``wait=False``), or, for a submission made before the head was saved with
            it, a checkpoint that changed since.
    """
    from .data import DatasetSpec
    from .evaluate import compute_metrics

    run_dir, meta, events = _find(job_id, run_dir=run_dir)
    folder = run_dir / "jobs" / meta["submission"]
    submitted = {e["part"]: e for e in events if e.get("event") == "submitted"}
    missing = [i for i in range(len(meta["parts"])) if i not in submitted]
    if missing:
        ranges = [meta["parts"][i] for i in missing]
        tags = [e["tag"] for e in events if e.get("event") == "submitting"
                and e.get("part") in missing and e.get("tag")]
        maybe = (f"; if IBM Quantum took it, it is tagged {', '.join(tags)}: `hqcnn-qiskit jobs "
                 f"fetch JOB_ID --run {run_dir}` with its id adopts it" if tags else "")
        raise HQCNNError(f"submission {meta['submission']} has no job for rows {ranges} (the "
                         f"process stopped while submitting){maybe}; else rerun `infer`")
    results = []
    for part in range(len(meta["parts"])):
        path = folder / f"result_{part}.npy"
        if not path.is_file():
            pid = submitted[part]["job_id"]
            if meta["kind"] != "runtime":
                raise HQCNNError(f"local job {pid} never finished (a local job runs inside "
                                 "`infer`, whose process ended first); rerun `infer`")
            _collect(run_dir, meta, pid, part, path, wait=wait, log=log)
        results.append(np.load(path))
    evs = np.concatenate(results)
    inputs = np.load(folder / "inputs.npz")
    checkpoint = Path(meta["checkpoint"])
    head = _submitted_head(folder, checkpoint, meta, job_id, log=log)
    if evs.shape != (meta["n"], 8):
        raise HQCNNError(f"job {job_id} returned values of shape {evs.shape}, "
                         f"expected ({meta['n']}, 8)")
    if not np.isfinite(evs).all():  # e.g. an exponential ZNE fit that diverged
        bad = int((~np.isfinite(evs)).any(axis=1).sum())
        raise HQCNNError(f"job {job_id} returned non-finite values for {bad} of {meta['n']} "
                         "images (with ZNE: an extrapolation that diverged); no metrics from it")
    spec = DatasetSpec.from_dict(meta["dataset"])
    with torch.no_grad():
        logits = head(torch.as_tensor(evs, dtype=torch.float32))
        scores = (torch.sigmoid(logits) if spec.multilabel else torch.softmax(logits, 1))
    scores = scores.double().numpy()
    labels = torch.as_tensor(inputs["labels"])
    metrics = compute_metrics(spec, labels, scores)
    predictions = folder / "predictions.csv"

    def write(handle):
        with io.StringIO(newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["index", "label", "prediction"]
                       + [f"score_{k}" for k in range(scores.shape[1])]
                       + [f"ev_{k}" for k in range(evs.shape[1])])
            for i in range(len(scores)):
                label = inputs["labels"][i].tolist()
                pred = ((scores[i] > 0.5).astype(int).tolist() if spec.multilabel
                        else int(scores[i].argmax()))
                w.writerow([int(inputs["indices"][i]), " ".join(map(str, np.ravel(label))),
                            " ".join(map(str, np.ravel(pred)))]
                           + [f"{v:.6f}" for v in scores[i]] + [f"{v:.6f}" for v in evs[i]])
            handle.write(fh.getvalue().encode("utf-8"))

    try:
        atomic_write(predictions, write)
    except OSError as exc:
        raise HQCNNError(f"cannot write {predictions} ({exc.strerror or exc}); the job's values "
                         f"are kept: fetch again once {folder} is writable") from None
    _note(run_dir, {"event": "fetched", "job_id": job_id, "submission": meta["submission"],
                    "time": _now(), "acc": metrics["acc"], "auc": metrics["auc"]}, log=log)
    kept = {"scores": scores, "labels": inputs["labels"]} if keep_scores else {}
    return {**metrics, "n": int(meta["n"]), "split": meta["split"], "backend": meta["backend"],
            "dataset": meta["dataset_label"], "job_id": job_id, "device": meta["device"],
            "predictions": str(predictions), "checkpoint": str(checkpoint), "task": spec.task,
            "class_names": spec.class_names, **kept}


def _service_job(job_id: str, *, log: Log | None = None):
    """The service's job ``job_id``.

    Raises:
        ServiceUnavailable: No account, or no connection.
        BackendError: The service does not know the job.
    """
    from . import ibm

    service = ibm.get_service()
    try:
        return ibm.with_retries(lambda: service.job(job_id), log=log)
    except Exception as exc:  # noqa: BLE001
        if ibm.is_transient(exc):
            raise ibm.ServiceUnavailable(f"cannot reach IBM Quantum to look up job {job_id} "
                                         f"({ibm.scrub(exc)}); try again later") from None
        raise BackendError(f"the service does not know job {job_id} ({ibm.scrub(exc)})") from None


def _submitted_head(folder: Path, checkpoint: Path, meta: dict, job_id: str, *, log: Log):
    """The dense head the job's values go through: the one saved with the submission, or for a
    submission made before heads were saved, the checkpoint's, if it has not changed since.

    Raises:
        CheckpointError: No saved head, and the checkpoint changed or disappeared.
    """
    from .checkpoint import load_checkpoint
    from .evaluate import load_checkpoint_model
    from .model import Head, ModelConfig

    unchanged = checkpoint.is_file() and file_sha256(checkpoint) == meta["checkpoint_sha256"]
    if (folder / "head.pt").is_file():
        saved = load_checkpoint(folder / "head.pt")
        head = Head(num_outputs=ModelConfig(**saved["model_config"]).num_outputs)
        head.load_state_dict(saved["weights"])
        if not unchanged:
            log(f"note: {checkpoint} changed or disappeared since job {job_id} was submitted; "
                "its head as it was then (saved with the submission) is used")
        return head.eval()
    if not unchanged:
        raise CheckpointError(f"{checkpoint} changed or disappeared since job {job_id} was "
                              "submitted; the head would not match the circuit weights")
    return load_checkpoint_model(checkpoint, backend="aer_ideal")[0].head


def _collect(run_dir: Path, meta: dict, job_id: str, part: int, path: Path, *, wait: bool,
             log: Log) -> None:
    from . import ibm

    job = _service_job(job_id, log=log)
    common = {"job_id": job_id, "submission": meta["submission"], "part": part}
    try:
        if wait:
            ibm.wait_for_job(job, on_status=lambda s: log(f"job {job_id}: {s}"), log=log)
        else:
            status = ibm.job_state(job)
            if status in ("ERROR", "CANCELLED"):
                raise ibm.job_failure(job, status)
            if status != "DONE":
                raise HQCNNError(f"job {job_id} is {status}; fetch again later (or without "
                                 "--no-wait to wait for it)")
    except ibm.JobFailed as exc:
        _note(run_dir, {**common, "event": "failed", "reason": str(exc), "time": _now()}, log=log)
        raise
    except HQCNNError:
        raise
    except Exception as exc:  # noqa: BLE001 - the connection stayed lost through the retries
        raise BackendError(f"lost contact with IBM Quantum while waiting for job {job_id} "
                           f"({ibm.scrub(exc)}); the job is journaled and keeps running: "
                           f"`hqcnn-qiskit jobs fetch {job_id}` collects it later") from None
    try:
        result = ibm.with_retries(job.result, log=log)
    except Exception as exc:  # noqa: BLE001 - RuntimeJobFailureError and friends
        if ibm.is_transient(exc):
            raise BackendError(f"lost contact with IBM Quantum while downloading job {job_id} "
                               f"({ibm.scrub(exc)}); `hqcnn-qiskit jobs fetch {job_id}` tries "
                               "again") from None
        if type(exc).__name__ != "RuntimeJobFailureError":  # the job is fine; reading it is not
            raise BackendError(f"cannot read the result of job {job_id} ({ibm.scrub(exc)}); "
                               "the service keeps it: fetch again with a qiskit-ibm-runtime "
                               "that can decode it") from None
        failed = ibm.JobFailed(f"job {job_id} failed: {ibm.scrub(exc)}")
        _note(run_dir, {**common, "event": "failed", "reason": str(failed), "time": _now()},
              log=log)
        raise failed from None
    evs = np.asarray(result[0].data.evs, dtype=float)
    _save_result(path.parent, part, evs, job_id=job_id,
                 retry="the service keeps the job: fetch again once the folder is writable")
    _note(run_dir, {**common, "event": "done", "time": _now()}, log=log)


def infer(checkpoint, *, backend: str, split: str = "test", limit: int | None = None,
          data_root=None, verify: bool = True, dry_run: bool = False, wait: bool = True,
          yes: bool = False, keep_scores: bool = False, submitted: list | None = None,
          log: Log = _stderr) -> dict:
    """Plan, (dry-run or) submit, and (unless ``wait`` is false) fetch.

    Args:
        checkpoint: ``RUN_DIR/best.pt``; the journal goes to ``RUN_DIR``.
        backend: Profile name or ``.toml`` path.
        split: Official split to run.
        limit: A fixed subset of this many images.
        data_root: Folder with the MedMNIST files.
        verify: Check the data file's MD5.
        dry_run: Plan and estimate only; submit nothing.
        wait: Wait for a runtime job and fetch it (local kinds always run to the end).
        yes: Submit even above :data:`CONFIRM_ABOVE_SECONDS` of estimated QPU usage.
        keep_scores: Passed to :func:`fetch_job`.
        submitted: Passed to :func:`submit_inference`: receives this call's job ids as soon as
            they exist.
        log: Where progress lines go.

    Returns:
        ``{"dry_run": True, "plan": [...lines]}``, ``{"job_id", "job_ids", "status": "submitted"}``
        or the metrics of :func:`fetch_job`.

    Raises:
        ConfigError: The run folder or the job index cannot be written (checked before the
            plan is made, nothing is submitted), or the estimate needs ``yes``.
    """
    if not dry_run and Path(checkpoint).is_file():  # fail fast, before data and transpiling
        check_writable(Path(checkpoint).resolve().parent)
    plan = prepare_inference(checkpoint, backend=backend, split=split, limit=limit,
                             data_root=data_root, verify=verify, dry_run=dry_run, log=log)
    lines = describe_plan(plan)
    if dry_run:
        return {"dry_run": True, "plan": lines, "estimate": plan.estimate, "isa": plan.isa_stats,
                "offline": plan.offline_note}
    for line in lines:
        log(line)
    ids = submit_inference(plan, yes=yes, log=log, submitted=submitted)
    if not wait and plan.remote:
        return {"job_id": ids[0], "job_ids": ids, "status": "submitted",
                "backend": plan.profile.name}
    if not wait:
        what = ("local testing mode" if plan.profile.kind == "runtime_local"
                else f"kind {plan.profile.kind}")
        log(f"{what} runs in this process: the job is already done")
    # by run folder: found even if the user index could not be written
    return fetch_job(ids[0], run_dir=plan.run_dir, wait=True, keep_scores=keep_scores,
                     log=log) | {"job_ids": ids}
