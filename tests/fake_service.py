"""A test double of IBM Quantum at the network boundary: ``QiskitRuntimeService`` and its jobs.

Only the service is replaced. The devices are real ``qiskit_ibm_runtime.IBMBackend`` objects
built from device snapshots (configuration and calibration served by a fake API client), and
jobs are submitted by the real ``EstimatorV2`` / ``Batch`` code, which validates options, ISA
circuits and faulty qubits and calls ``service._run`` exactly as it would call IBM. ``_run``
JSON-encodes the inputs with the runtime's own ``RuntimeEncoder`` (as the HTTP client does) and
the job decodes them again, so what is tested is what would go over the wire. A job's values
come from a shot-based Aer simulation of the decoded PUB with the snapshot's noise. A service
built with a token goes through the runtime's real account discovery, which logs what it logs for
IBM ("Loading account with the given token...").

Use::

    cloud = FakeCloud(token="...")
    hqcnn_qiskit.ibm.set_service_factory(cloud.service)

and script the next job with ``cloud.script(...)``.
"""

from __future__ import annotations

import copy
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit_ibm_runtime import IBMBackend, QiskitRuntimeService
from qiskit_ibm_runtime.accounts import AccountNotFoundError
from qiskit_ibm_runtime.api.exceptions import RequestsApiError
from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError, RuntimeJobNotFound
from qiskit_ibm_runtime.json import RuntimeDecoder, RuntimeEncoder
from qiskit.providers.exceptions import QiskitBackendNotFoundError

#: Devices the fake account can use (ibm_brisbane is retired: not listed).
DEVICES = {"ibm_fez": "FakeFez", "ibm_kingston": "FakeKingston", "ibm_armonk": "FakeArmonkV2"}


class _Api:
    """The REST client's backend calls, answered from a snapshot."""

    def __init__(self, snapshot):
        self.snapshot = snapshot
        snapshot._set_props_dict_from_json()  # pylint: disable=protected-access

    def backend_properties(self, name, datetime=None, calibration_id=None):
        return self.snapshot._props_dict  # pylint: disable=protected-access

    def backend_status(self, name):
        return {"backend_name": name, "backend_version": "1.0.0", "operational": True,
                "pending_jobs": 0, "status_msg": "active"}


@dataclass
class Script:
    """How the next job behaves.

    Attributes:
        statuses: What successive ``status()`` calls return; the last one repeats.
        reason: ``error_message()`` of a job that ends in ERROR.
        submit_failures: Transient HTTP 503s raised by ``_run`` before it accepts the job.
        status_failures: Transient connection errors raised by the first ``status()`` calls.
        interrupt_on_status: Raise ``KeyboardInterrupt`` from this ``status()`` call (1-based),
            as if the user pressed Ctrl-C while waiting.
        interrupt_on_submit: Raise ``KeyboardInterrupt`` from ``_run`` before the job is
            accepted, as if the user pressed Ctrl-C while the submission was on the wire.
        on_submit: Called with the job once the service has accepted it, before ``_run``
            returns (e.g. to make a journal unwritable in that instant).
        lost_after_accept: Once the service has accepted the job, its answer is lost: ``"read
            timeout"`` raises what qiskit-ibm-runtime 0.51 raises for a read timeout of the
            submission (``IBMRuntimeError("Failed to run program: ...")`` without a cause),
            ``"interrupt"`` a ``KeyboardInterrupt`` (Ctrl-C while the answer was on its way).
    """

    statuses: list = field(default_factory=lambda: ["QUEUED", "RUNNING", "DONE"])
    reason: str | None = None
    submit_failures: int = 0
    status_failures: int = 0
    interrupt_on_status: int | None = None
    interrupt_on_submit: bool = False
    on_submit: Callable | None = None
    lost_after_accept: str | None = None


class FakeJob:
    """A ``RuntimeJobV2`` double: ``job_id``, ``status``, ``error_message``, ``result``."""

    def __init__(self, cloud: FakeCloud, device: str, payload: str, options: dict, script: Script):
        self._id = "d" + uuid.uuid4().hex[:19]
        self.cloud = cloud
        self.device = device
        self.payload = payload  # the JSON the service received
        self.options = options
        self.script = script
        self.status_calls = 0
        self._result = None
        self.created = time.monotonic()

    def job_id(self) -> str:
        return self._id

    @property
    def tags(self) -> list:
        return list(self.options.get("job_tags") or [])

    def status(self) -> str:
        self.status_calls += 1
        s = self.script
        if s.interrupt_on_status == self.status_calls:
            raise KeyboardInterrupt
        if self.status_calls <= s.status_failures:  # as the runtime's HTTP client wraps it
            raise RequestsApiError("HTTPSConnectionPool(host='quantum.cloud.ibm.com', port=443): "
                                   "Max retries exceeded (Caused by ConnectionError('Connection "
                                   "aborted.', RemoteDisconnected()))", status_code=-1)
        k = self.status_calls - 1 - s.status_failures
        return s.statuses[min(max(k, 0), len(s.statuses) - 1)]

    def _final(self) -> str:
        return self.script.statuses[-1]

    def error_message(self):
        return self.script.reason if self._final() == "ERROR" else None

    def result(self):
        if self._final() == "ERROR":
            raise RuntimeJobFailureError(f"Unable to retrieve job result. {self.script.reason}")
        if self._final() == "CANCELLED":
            raise RuntimeJobFailureError("Unable to retrieve job result. Job was cancelled.")
        if self._result is None:
            self._result = self.cloud.simulate(self.device, self.payload)
        return self._result


class FakeCloud:
    """The state behind every service object: accounts, devices and jobs.

    Args:
        token: The token the cloud accepts; ``None`` accepts any. A service built without a token
            fails with ``AccountNotFoundError`` unless ``saved_account`` is true.
        saved_account: Whether an account is "saved on disk".
        offline: IBM's servers cannot be reached: building a service with a token fails the way
            qiskit-ibm-runtime 0.51 does without network, an ``InvalidAccountError`` ("... valid
            API token") raised while handling a ``requests`` connection error.
    """

    def __init__(self, *, token: str | None = None, saved_account: bool = False,
                 devices: dict | None = None, seed: int = 11, offline: bool = False):
        from qiskit_ibm_runtime import fake_provider

        self.token = token
        self.saved_account = saved_account
        self.offline = offline
        self.jobs: dict[str, FakeJob] = {}
        self.submissions = 0
        self.lookup_failures = 0  # how many lookups by tag (service.jobs) fail to connect
        self.visible_after = 0.0  # seconds after its creation before a lookup finds a job
        self.shots: list[int] = []  # per simulated job, as the service would run them
        self.service_kwargs: list[dict] = []
        self._scripts: list[Script] = []
        self._snapshots = {name: getattr(fake_provider, cls)()
                           for name, cls in (devices or DEVICES).items()}
        self._backends: dict[str, IBMBackend] = {}
        self.seed = seed

    # the factory handed to hqcnn_qiskit.ibm.set_service_factory
    def service(self, **kwargs) -> FakeService:
        self.service_kwargs.append(kwargs)
        token = kwargs.get("token")
        if token is None and not self.saved_account:
            raise AccountNotFoundError("Unable to find account.")
        if token is not None:  # the real account discovery, which logs as it does for IBM
            QiskitRuntimeService._discover_account(  # noqa: SLF001
                None, token=token, channel=kwargs.get("channel"))
        if token is not None and self.offline:
            from qiskit_ibm_runtime.accounts import InvalidAccountError
            from requests.exceptions import ConnectionError as NoConnection

            try:
                raise NoConnection("HTTPSConnectionPool(host='iam.cloud.ibm.com', port=443): Max "
                                   "retries exceeded with url: /identity/token (Caused by "
                                   "NameResolutionError: Failed to resolve 'iam.cloud.ibm.com')")
            except NoConnection:
                raise InvalidAccountError("Unable to retrieve instances. Please check that you "
                                          "are using a valid API token.")  # noqa: B904
        if token is not None and self.token is not None and token != self.token:
            raise RequestsApiError(  # what IAM answers, echoing the key it was given
                f"'400 Client Error: Bad Request for url: https://iam.cloud.ibm.com/identity/token. "
                f"Provided API key could not be found. apikey={token}'", status_code=400)
        return FakeService(self)

    def script(self, **kwargs) -> Script:
        """Queue the behaviour of the next submitted job."""
        s = Script(**kwargs)
        self._scripts.append(s)
        return s

    def next_script(self) -> Script:
        return self._scripts.pop(0) if self._scripts else Script()

    def backend(self, name: str, service) -> IBMBackend:
        if name not in self._backends:
            snap = self._snapshots[name]
            conf = copy.deepcopy(snap.configuration())
            conf.backend_name = name
            self._backends[name] = IBMBackend(configuration=conf, service=service,
                                              api_client=_Api(snap), instance="crn:fake")
        return self._backends[name]

    def simulate(self, device: str, payload: str):
        """Decode the submitted JSON and estimate every PUB with the snapshot's noise."""
        from hqcnn_qiskit.noisy import AerRunner, SamplingEstimator

        inputs = json.loads(payload, cls=RuntimeDecoder)
        options = inputs.get("options", {})  # shots as IBM's estimator derives them
        precision = options.get("default_precision")
        shots = int(options.get("default_shots")
                    or (math.ceil(1 / precision**2) if precision else 4096))
        self.shots.append(shots)
        pubs = [EstimatorPub.coerce(p) for p in inputs["pubs"]]
        target = self._snapshots[device].target
        estimator = SamplingEstimator(AerRunner(target, seed=self.seed), shots=shots,
                                      target=target, seed=self.seed)
        return estimator.run(pubs).result()


class FakeService:
    """What ``QiskitRuntimeService`` offers the code under test."""

    def __init__(self, cloud: FakeCloud):
        self.cloud = cloud

    def backends(self, simulator=None, operational=None, **kwargs):
        return [self.cloud.backend(n, self) for n in self.cloud._snapshots]  # noqa: SLF001

    def backend(self, name: str, instance=None):
        if name not in self.cloud._snapshots:  # noqa: SLF001
            raise QiskitBackendNotFoundError("No backend matches the criteria.")
        return self.cloud.backend(name, self)

    def least_busy(self, min_num_qubits=None, **kwargs):
        for b in self.backends():
            if min_num_qubits is None or b.num_qubits >= min_num_qubits:
                return b
        raise QiskitBackendNotFoundError("No backend matches the criteria.")

    def job(self, job_id: str):
        try:
            return self.cloud.jobs[job_id]
        except KeyError:
            raise RuntimeJobNotFound(f"Job not found: {job_id}") from None

    def _run(self, program_id, inputs, options=None, calibration_id=None, dry_run=False,
             **kwargs):
        """The primitives' submission call (an HTTP POST in the real service)."""
        cloud = self.cloud
        if program_id != "estimator":
            raise RequestsApiError(f"400 program {program_id} not expected", status_code=400)
        if not hasattr(cloud, "_pending"):
            cloud._pending = cloud.next_script()  # noqa: SLF001
        script = cloud._pending  # noqa: SLF001
        if script.interrupt_on_submit:
            del cloud._pending  # noqa: SLF001
            raise KeyboardInterrupt
        if script.submit_failures > 0:
            script.submit_failures -= 1
            raise RequestsApiError("'503 Server Error: Service Unavailable'", status_code=503)
        del cloud._pending  # noqa: SLF001
        options = dict(options or {})
        backend = options.pop("backend")
        payload = json.dumps(inputs, cls=RuntimeEncoder)
        job = FakeJob(cloud, backend.name, payload, options, script)
        cloud.jobs[job.job_id()] = job
        cloud.submissions += 1
        if script.on_submit is not None:
            script.on_submit(job)
        if script.lost_after_accept == "interrupt":
            raise KeyboardInterrupt
        if script.lost_after_accept == "read timeout":
            from qiskit_ibm_runtime.exceptions import IBMRuntimeError

            raise IBMRuntimeError(
                "Failed to run program: HTTPSConnectionPool(host='quantum.cloud.ibm.com', "
                "port=443): Read timed out. (read timeout=300)")
        return job

    def jobs(self, limit=10, job_tags=None, **kwargs):
        """The lookup of jobs by tag, newest first."""
        if self.cloud.lookup_failures > 0:
            self.cloud.lookup_failures -= 1
            raise RequestsApiError("HTTPSConnectionPool(host='quantum.cloud.ibm.com', port=443): "
                                   "Max retries exceeded", status_code=-1)
        now = time.monotonic()
        found = [j for j in reversed(self.cloud.jobs.values())
                 if set(job_tags or ()) <= set(j.tags)
                 and now >= j.created + self.cloud.visible_after]
        return found[:limit] if limit else found
