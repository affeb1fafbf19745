"""IBM Quantum through qiskit-ibm-runtime: the account, the device, submission with retries, and
the ``runtime`` profile kind.

Everything that talks to the IBM service goes through :func:`get_service`, which builds a
``QiskitRuntimeService`` (channel ``ibm_quantum_platform``) from ``QISKIT_IBM_TOKEN`` and
``QISKIT_IBM_INSTANCE`` or from an account saved with ``QiskitRuntimeService.save_account``.
:func:`set_service_factory` replaces that constructor (the one test hook: tests inject a double of
the service and its jobs here). The token is never printed, logged or written: every message
built from a service exception goes through :func:`scrub`.

Jobs go to the legacy server-side ``qiskit_ibm_runtime.EstimatorV2`` (deprecated in 0.50 in
favour of the client-side executor estimator): its results are post-processed by the service, so
``service.job(job_id).result()`` returns expectation values days later, from any machine, which is
what ``hqcnn-qiskit jobs fetch`` needs. The profile's mitigation fields become its options through
:func:`hqcnn_qiskit.mitigation.runtime_options`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence

from qiskit.circuit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp

from .backends import QuantumBackend, register_kind
from .errors import BackendError
from .profiles import BackendProfile

__all__ = [
    "CHANNEL",
    "ServiceUnavailable",
    "JobFailed",
    "set_service_factory",
    "get_service",
    "scrub",
    "resolve_device",
    "offline_snapshot",
    "is_transient",
    "with_retries",
    "open_mode",
    "submit_estimator",
    "tagged_job",
    "SubmissionUnconfirmed",
    "job_state",
    "failure_reason",
    "job_failure",
    "wait_for_job",
    "RuntimeBackend",
]

CHANNEL = "ibm_quantum_platform"
#: Job states that end a job (``RuntimeJobV2.status()`` strings).
FINAL_STATES = ("DONE", "ERROR", "CANCELLED")


class ServiceUnavailable(BackendError):
    """The IBM Quantum service cannot be used: no account, a rejected token, or no network."""


class JobFailed(BackendError):
    """A job ended in ERROR or CANCELLED; the message carries the service's reason."""


_factory: Callable | None = None


def set_service_factory(factory: Callable | None) -> None:
    """Replace the ``QiskitRuntimeService`` constructor (``None`` restores it).

    The factory is called with keyword arguments ``channel`` and, when set in the environment,
    ``token`` and ``instance``, exactly as ``QiskitRuntimeService`` would be; it returns an object
    with the service's ``backend``, ``backends``, ``least_busy``, ``job`` and ``_run`` (what the
    runtime primitives call). This is the hook for test doubles of the network boundary.
    """
    global _factory
    _factory = factory


def _token() -> str | None:
    return os.environ.get("QISKIT_IBM_TOKEN") or None


def scrub(text: object) -> str:
    """``text`` as one line with the token (if any) and anything shaped like an API key masked."""
    out = " ".join(str(text).split())
    token = _token()
    if token:
        out = out.replace(token, "***")
    return re.sub(r"(?i)(token|api[-_ ]?key|authorization)(['\"]?\s*[:=]\s*['\"]?)"
                  r"(?:(?:bearer|basic|apikey)\s+)?[^\s'\",}]+", r"\1\2***", out)


#: The qiskit-ibm-runtime logger that warns "Loading account with the given token..." on every
#: service built from a token (its own stderr handler, format ``module.function:LEVEL:...``).
SERVICE_LOGGER = "qiskit_ibm_runtime.qiskit_runtime_service"


@contextlib.contextmanager
def _quiet_service_logger():
    """Drop :data:`SERVICE_LOGGER`'s records below ERROR for the duration (the account
    discovery notes are not for our users); its level is restored afterwards."""
    logger = logging.getLogger(SERVICE_LOGGER)
    level = logger.level
    logger.setLevel(max(logger.getEffectiveLevel(), logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def get_service():
    """A connected ``QiskitRuntimeService`` (or the injected double).

    Raises:
        ServiceUnavailable: No account, a rejected token, or the service cannot be reached.
    """
    kwargs: dict = {"channel": CHANNEL}
    if _token():
        kwargs["token"] = _token()
        if os.environ.get("QISKIT_IBM_INSTANCE"):
            kwargs["instance"] = os.environ["QISKIT_IBM_INSTANCE"]
    factory = _factory
    if factory is None:
        from qiskit_ibm_runtime import QiskitRuntimeService

        factory = QiskitRuntimeService
    try:
        with warnings.catch_warnings(), _quiet_service_logger():
            warnings.simplefilter("ignore")
            return factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line without the token
        from qiskit_ibm_runtime.accounts import AccountNotFoundError

        text = scrub(exc)
        offline = _network_cause(exc)
        if offline is not None:  # the runtime words this as a token problem; it is not one
            raise ServiceUnavailable(
                f"cannot reach IBM Quantum: no network connection to its servers "
                f"({type(offline).__name__}: {scrub(offline)}); the token was not checked"
            ) from None
        if isinstance(exc, AccountNotFoundError):
            raise ServiceUnavailable(
                "no IBM Quantum account: set QISKIT_IBM_TOKEN (and QISKIT_IBM_INSTANCE) or save one "
                f"with QiskitRuntimeService.save_account(channel='{CHANNEL}', token=...)"
            ) from None
        if getattr(exc, "status_code", None) in (400, 401, 403) or re.search(
                r"\b40[013]\b|unauthori[sz]ed|forbidden|identity/token|api ?key|token.*invalid|"
                r"invalid.*token", text, re.I):
            raise ServiceUnavailable(f"IBM Quantum rejected the token ({text})") from None
        raise ServiceUnavailable(f"cannot reach IBM Quantum ({type(exc).__name__}: {text})") from None


def _network_cause(exc: BaseException) -> BaseException | None:
    """The connection failure behind ``exc`` (its causes and contexts), if there is one."""
    from requests.exceptions import ConnectionError as NoConnection, Timeout

    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, (NoConnection, Timeout, ConnectionError, TimeoutError)):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _backend_names(service) -> list[str]:
    try:
        return sorted(b.name for b in service.backends(simulator=False, operational=True))
    except TypeError:  # a service without those filters
        return sorted(b.name for b in service.backends())


def resolve_device(service, name: str, *, min_qubits: int = 4):
    """The device ``name`` (or the least busy one for ``"least_busy"``) from ``service``.

    Raises:
        BackendError: Unknown or retired device (the message lists what the account can use),
            or a device with fewer than ``min_qubits`` qubits.
    """
    try:
        if name == "least_busy":
            device = with_retries(lambda: service.least_busy(
                operational=True, simulator=False, min_num_qubits=min_qubits))
        else:
            device = with_retries(lambda: service.backend(name))
    except BackendError:
        raise
    except Exception as exc:  # noqa: BLE001 - QiskitBackendNotFoundError and friends
        try:
            names = ", ".join(_backend_names(service)) or "none"
        except Exception:  # noqa: BLE001
            names = "(could not list devices)"
        what = "no operational device" if name == "least_busy" else f"device '{name}'"
        raise BackendError(
            f"{what} is not available to this account (retired, unknown or no access: "
            f"{scrub(exc)}); available: {names}"
        ) from None
    if device.num_qubits < min_qubits:
        raise BackendError(
            f"device '{device.name}' has {device.num_qubits} qubits; the circuit needs {min_qubits}"
        )
    return device


def offline_snapshot(name: str):
    """The qiskit-ibm-runtime snapshot standing in for device ``name`` when IBM is unreachable.

    ``ibm_brisbane`` -> ``FakeBrisbane`` and so on; ``least_busy`` or a device without a snapshot
    gets ``FakeFez`` (a Heron r2, like most of the current fleet).

    Returns:
        The fake backend and the name of its class.
    """
    from qiskit_ibm_runtime import fake_provider

    cls_name = "Fake" + name.removeprefix("ibm_").capitalize()
    if name == "least_busy" or not hasattr(fake_provider, cls_name):
        cls_name = "FakeFez"
    return getattr(fake_provider, cls_name)(), cls_name


# Retries ---------------------------------------------------------------------------------------
_TRANSIENT_STATUS = (429, 500, 502, 503, 504)


#: How qiskit-ibm-runtime words a request that never got an answer: its HTTP client wraps the
#: ``requests`` error into ``RequestsApiError(status_code=-1)``, and a submission turns that into
#: ``IBMRuntimeError("Failed to run program: ...")`` without the cause, so only the text is left.
_NO_ANSWER = (r"max retries exceeded|connection (?:refused|aborted|reset)|remotedisconnected|"
              r"timed out|name resolution|failed to resolve|temporarily unavailable|try again")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying: a dropped connection, a timeout, HTTP 429 or 5xx (as
    raised by ``requests``, or as qiskit-ibm-runtime rewraps them). A job's own failure never
    is, whatever its reason says."""
    if type(exc).__name__ in ("RuntimeJobFailureError", "RuntimeJobNotFound",
                              "RuntimeJobMaxTimeoutError"):
        return False
    if _network_cause(exc) is not None:
        return True
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and (status in _TRANSIENT_STATUS or status == -1):
        return True
    return bool(re.search(rf"\b(429|50[0234])\b|{_NO_ANSWER}", str(exc), re.I))


def _retry_delay() -> float:
    return float(os.environ.get("HQCNN_RETRY_DELAY", "2"))


def with_retries(fn: Callable, *, attempts: int = 5, delay: float | None = None,
                 log: Callable[[str], None] | None = None):
    """``fn()``, retried with exponential backoff (delay, 2·delay, 4·delay, ...) on transient
    errors; any other error (a :class:`BackendError` always), or the last transient one, is
    raised."""
    delay = _retry_delay() if delay is None else delay
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, BackendError) or not is_transient(exc) or attempt == attempts - 1:
                raise  # our own errors are verdicts, never retried
            wait = delay * 2**attempt
            if log:
                log(f"transient service error ({scrub(exc)}); retrying in {wait:.0f} s")
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


# Submission ------------------------------------------------------------------------------------
def open_mode(device, execution_mode: str):
    """The ``mode`` for a primitive: the device (job mode), or a new ``Batch`` or ``Session``.

    Raises:
        BackendError: The service refused the batch or session (the Open plan has no sessions).
    """
    if execution_mode == "job":
        return device
    from qiskit_ibm_runtime import Batch, Session

    cls = Batch if execution_mode == "batch" else Session
    try:
        return with_retries(lambda: cls(backend=device))
    except Exception as exc:  # noqa: BLE001
        raise BackendError(
            f"could not open a {execution_mode} on '{device.name}' ({scrub(exc)}); the Open plan "
            "allows job and batch mode only: set execution_mode in the profile"
        ) from None


def _estimator(mode, options: dict):
    from qiskit_ibm_runtime import EstimatorV2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return EstimatorV2(mode=mode, options=options)


class SubmissionUnconfirmed(BackendError):
    """A submission's answer was lost and the service could not be asked whether it took the
    job. ``tag`` is what the job carries if it exists."""

    def __init__(self, message: str, tag: str):
        super().__init__(message)
        self.tag = tag


def tagged_job(mode, tag: str):
    """The job on the service behind ``mode`` that carries ``tag``, or None if there is none.

    Raises:
        Exception: Whatever the lookup raised (the service could not be asked).
    """
    found = list(mode.service.jobs(job_tags=[tag], limit=1))
    return found[0] if found else None


def submit_estimator(mode, pubs: Sequence, options: dict, *, tag: str | None = None, log=None):
    """Submit ``pubs`` as one ``EstimatorV2`` job in ``mode``; transient errors are retried.

    With ``tag``, the job carries it (``environment.job_tags``). When a request breaks off
    without an answer (a dropped connection, a timeout), the service is asked for a job with
    that tag before anything is sent again (after the backoff, so that a job the service was
    still creating is found too), and once more after the last attempt: a job it took before
    the answer was lost is adopted, never submitted (and paid for) twice. After Ctrl-C it is
    asked at once.

    Returns:
        The runtime job.

    Raises:
        BackendError: The service refused the job (the message is the service's reason).
        SubmissionUnconfirmed: An answer was lost and the lookup by ``tag`` failed too.
        KeyboardInterrupt: Ctrl-C while sending. Its ``job`` attribute is the job if the service
            had taken it, None if it had not; ``unconfirmed`` is true when the service could not
            be asked (also after a second Ctrl-C during the lookup).
    """
    if tag is not None:
        options = {**options, "environment": {**options.get("environment", {}), "job_tags": [tag]}}
    lost: list[BaseException] = []  # the attempts whose answer was lost

    def look_up():
        try:
            return with_retries(lambda: tagged_job(mode, tag), log=log)
        except Exception as failure:  # noqa: BLE001
            raise SubmissionUnconfirmed(
                f"the answer to the submission was lost ({scrub(lost[-1])}) and IBM Quantum "
                f"could not be asked whether it took the job ({scrub(failure)})", tag) from None

    def adopted():
        job = look_up() if tag is not None and lost else None
        if job is not None and log:
            log(f"the answer to the submission was lost ({scrub(lost[-1])}); the service had "
                f"taken job {job.job_id()}")
        return job

    def send():
        job = adopted()
        if job is not None:
            return job
        try:
            return estimator.run(list(pubs))
        except KeyboardInterrupt as interrupt:
            interrupt.job, interrupt.unconfirmed = None, tag is not None
            if tag is not None:
                lost.append(interrupt)
                try:
                    interrupt.job, interrupt.unconfirmed = look_up(), False
                except (SubmissionUnconfirmed, KeyboardInterrupt):  # a second Ctrl-C included
                    pass
            raise
        except Exception as exc:
            if tag is not None and is_transient(exc):
                lost.append(exc)
            raise

    try:
        estimator = _estimator(mode, options)
        return with_retries(send, log=log)
    except BackendError:
        raise
    except Exception as exc:  # noqa: BLE001
        job = adopted() if is_transient(exc) else None  # the last attempt's answer was lost
        if job is not None:
            return job
        maybe = f"; if IBM Quantum took it after all, it is tagged {tag}" if lost else ""
        raise BackendError(f"the job was not accepted: {scrub(exc)}{maybe}") from None


def job_state(job, *, log: Callable[[str], None] | None = None) -> str:
    """``job.status()`` (retried on transient errors) as an upper-case state name: ``"DONE"``,
    ``"ERROR"``, ``"RUNNING"``... (``JobStatus.DONE`` and ``"done"`` both become ``"DONE"``)."""
    return str(with_retries(job.status, log=log)).rsplit(".", 1)[-1].upper()


def failure_reason(job) -> str:
    """The service's reason for a failed ``job``, scrubbed of secrets."""
    reason = None
    try:
        reason = job.error_message()
    except Exception:  # noqa: BLE001
        pass
    return scrub(reason or "no reason given")


def job_failure(job, status: str) -> JobFailed:
    """The :class:`JobFailed` for ``job`` ended in ``status`` (ERROR or CANCELLED), with the
    service's reason."""
    reason = failure_reason(job)
    if status == "CANCELLED" and reason == "no reason given":  # the service gives none for it
        reason = "by you, an administrator of the instance, or the service; it gave no reason"
    return JobFailed(f"job {job.job_id()} {status.lower()}: {reason}")


def wait_for_job(job, *, poll: float | None = None, timeout: float | None = None,
                 on_status: Callable[[str], None] | None = None,
                 log: Callable[[str], None] | None = None) -> str:
    """Poll ``job.status()`` until a final state; transient errors while polling are retried.

    Returns:
        ``"DONE"``.

    Raises:
        JobFailed: The job ended in ERROR or CANCELLED (with the service's reason).
        BackendError: ``timeout`` seconds passed first.
    """
    poll = float(os.environ.get("HQCNN_POLL_SECONDS", "5")) if poll is None else poll
    start = time.monotonic()
    last = None
    while True:
        status = job_state(job, log=log)
        if status != last and on_status:
            on_status(status)
        last = status
        if status == "DONE":
            return status
        if status in FINAL_STATES:
            raise job_failure(job, status)
        if timeout is not None and time.monotonic() - start > timeout:
            raise BackendError(f"job {job.job_id()} still {status} after {timeout:.0f} s; "
                               "`hqcnn-qiskit jobs fetch` collects it later")
        time.sleep(poll)


# The ``runtime`` profile kind ---------------------------------------------------------------------
class RuntimeBackend(QuantumBackend):
    """A profile of kind ``runtime``: the circuit transpiled once to an IBM device and evaluated
    by the runtime estimator with the profile's mitigation options (synchronous: every batch is a
    job; ``hqcnn-qiskit infer`` is the path that journals jobs and survives interruptions).

    Nothing connects until the circuit is prepared.
    """

    def __init__(self, *, profile: BackendProfile):
        super().__init__(profile=profile)
        self._device = None
        self._mode = None
        self.transpiled = None

    @property
    def device(self):
        """The IBM backend (connects on first use)."""
        if self._device is None:
            self._device = resolve_device(get_service(), self.profile.device)
        return self._device

    def prepare(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp]):
        from .transpile import transpile_for_profile

        self.transpiled = transpile_for_profile(circuit, observables, self.device.target,
                                                self.profile)
        return self.transpiled.circuit, list(self.transpiled.observables)

    def estimator(self):
        from .mitigation import runtime_options

        if self._mode is None:
            self._mode = open_mode(self.device, self.profile.execution_mode)
        return _estimator(self._mode, runtime_options(self.profile))

    def close(self) -> None:
        """Close the batch or session this backend opened (its submitted jobs still run); the
        next batch of work opens a new one."""
        mode, self._mode = self._mode, None
        if mode is not None and mode is not self._device:
            mode.close()

    def __getstate__(self):
        """Refused: the live service connection (with its account) must not reach a pickle, and
        a copy would submit jobs of its own."""
        raise TypeError(f"a model on the IBM Runtime backend {self.name} cannot be pickled or "
                        "copied; switch it to a simulator first "
                        "(model.quantum.set_backend('aer_ideal'))")

    def describe(self) -> dict:
        info = super().describe()
        if self._device is not None:
            info["device"] = self._device.name
        if self.transpiled is not None:
            info.update(self.transpiled.describe())
        return info


register_kind("runtime", lambda profile: RuntimeBackend(profile=profile))
