"""``infer`` and ``jobs``: local testing mode end to end, and IBM Quantum through a double of the
service (tests/fake_service.py; only the network boundary is replaced)."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_service import FakeCloud  # noqa: E402

from hqcnn_qiskit import cli, ibm, jobs  # noqa: E402
from hqcnn_qiskit.data import DatasetSpec  # noqa: E402
from hqcnn_qiskit.errors import ConfigError  # noqa: E402

TOKEN = "sekret-TOKEN-4f9a1c"


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_root) -> Path:
    from hqcnn_qiskit.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(dataset=DatasetSpec("breastmnist"), epochs=1, limit_train=64, limit_eval=32,
                      batch_size=32), out, data_root=data_root, progress=False, log=lambda m: None)
    return out


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HQCNN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HQCNN_POLL_SECONDS", "0")
    monkeypatch.setenv("HQCNN_RETRY_DELAY", "0")
    monkeypatch.delenv("QISKIT_IBM_TOKEN", raising=False)
    monkeypatch.delenv("QISKIT_IBM_INSTANCE", raising=False)
    yield
    ibm.set_service_factory(None)


@pytest.fixture
def cloud(monkeypatch) -> FakeCloud:
    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN)
    c = FakeCloud(token=TOKEN)
    ibm.set_service_factory(c.service)
    return c


def _profile(tmp_path: Path, text: str, name: str = "prof") -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


RUNTIME = """kind = "runtime"
device = "{device}"
shots = 256
execution_mode = "{mode}"
[mitigation]
readout = "twirl"
twirl_samples = 4
gate_twirling = true
dynamical_decoupling = true
"""


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _infer(capsys, run, backend, *extra, limit=8):
    return _cli(capsys, "infer", "--checkpoint", run / "best.pt", "--backend", backend,
                "--split", "test", "--limit", limit, "--data-root", _root(), *extra)


def _root():
    from conftest import real_data_root

    return real_data_root()


def _reference(run: Path, backend: str, limit: int):
    """What ``evaluate`` computes on that backend: its metrics and the circuit's values."""
    from hqcnn_qiskit.data import load_split
    from hqcnn_qiskit.evaluate import compute_metrics, load_checkpoint_model

    model, payload = load_checkpoint_model(run / "best.pt", backend=backend)
    spec = DatasetSpec.from_dict(payload["train_config"]["dataset"])
    images, labels = load_split(spec, "test", root=_root(), limit=limit).tensors
    with torch.no_grad():
        evs = model.quantum(model.features(images))
        scores = torch.softmax(model.head(evs), 1).double().numpy()
    return compute_metrics(spec, labels, scores), evs.double().numpy()


def _evs(home_job: str, run: Path) -> np.ndarray:
    sub = next(json.loads(line)["submission"] for line in (run / "jobs.jsonl").read_text().splitlines()
               if json.loads(line).get("job_id") == home_job)
    return np.load(run / "jobs" / sub / "result_0.npy")


# Local testing mode (qiskit-ibm-runtime SamplerV2 on device snapshots) ---------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend, limit", [("fake_brisbane", 8), ("heron", 4)])
def test_local_mode_infer_then_fetch_matches_evaluate(backend, limit, run, tmp_path, capsys):
    if backend == "heron":  # a Heron r2 snapshot, through a profile file written here
        backend = _profile(tmp_path, 'kind = "runtime_local"\ndevice = "FakeFez"\nshots = 512\n'
                                     'seed = 3\n[mitigation]\nreadout = "none"\n', "fez_local")
    code, out, err = _infer(capsys, run, backend, "--json", limit=limit)
    assert code == 0, err
    got = json.loads(out)
    assert set(got) == {"acc", "auc", "n", "split", "backend", "dataset", "acc_95", "auc_95",
                        "bootstrap", "job_id", "checkpoint"}
    assert got["n"] == limit and got["split"] == "test"
    # fewer than 30 images: no bootstrap, but the exact ACC interval needs none
    low, high = got["acc_95"]
    assert low <= got["acc"] <= high and got["bootstrap"] == 0

    code, out, err = _cli(capsys, "jobs", "fetch", got["job_id"], "--json")
    assert code == 0, err
    assert json.loads(out) == got  # fetch recomputes the head from the journal: same answer

    code, out, _ = _cli(capsys, "jobs", "list")
    assert got["job_id"] in out

    metrics, evs = _reference(run, backend, limit)
    ours = _evs(got["job_id"], run)
    # one PUB of N rows vs the QNN's forward pass: the same circuit values within shot noise
    # (sigma <= 1/sqrt(shots) per value; 0.2 is > 4 sigma even after readout rescaling)
    assert ours.shape == evs.shape == (limit, 8)
    assert np.abs(ours - evs).max() < 0.2
    assert abs(got["acc"] - metrics["acc"]) <= 2 / limit
    assert abs(got["auc"] - metrics["auc"]) <= 0.25
    rows = (run / "jobs").glob("*/predictions.csv")
    assert any(len(p.read_text().splitlines()) == limit + 1 for p in rows)


# IBM Quantum through the service double -----------------------------------------------------------
def test_queued_running_done_with_batch_and_runtime_options(run, tmp_path, cloud, capsys):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="batch"))
    code, out, err = _infer(capsys, run, backend, "--json")
    assert code == 0, err
    got = json.loads(out)
    assert "QUEUED" in err and "RUNNING" in err and "DONE" in err
    assert cloud.submissions == 1
    job = cloud.jobs[got["job_id"]]
    sent = json.loads(job.payload)
    assert len(sent["pubs"]) == 1  # one PUB for all images
    assert sent["options"]["resilience"]["measure_mitigation"] is True
    assert sent["options"]["twirling"]["enable_gates"] is True
    assert sent["options"]["default_shots"] == 256
    assert 0.0 <= got["acc"] <= 1.0 and got["n"] == 8


def test_failed_job_reports_the_service_reason(run, tmp_path, cloud, capsys):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    cloud.script(statuses=["QUEUED", "ERROR"],
                 reason="Error code 1517; Instruction not in basis gates")
    code, _, err = _infer(capsys, run, backend)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("hqcnn-qiskit infer: error:") and "1517" in last
    job_id = next(iter(cloud.jobs))
    code, out, _ = _cli(capsys, "jobs", "status", job_id)
    assert code == 0 and "ERROR" in out and "1517" in out
    assert '"failed"' in (run / "jobs.jsonl").read_text()


def test_transient_errors_are_retried(run, tmp_path, cloud, capsys):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    cloud.script(submit_failures=2, status_failures=1)
    code, out, err = _infer(capsys, run, backend, "--json")
    assert code == 0, err
    assert cloud.submissions == 1 and err.count("retrying") >= 3


def test_interrupt_after_submit_then_fetch_without_resubmitting(run, tmp_path, cloud, capsys):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_kingston", mode="job"))
    cloud.script(interrupt_on_status=1)  # Ctrl-C while waiting for the job
    code, _, err = _infer(capsys, run, backend)
    assert code == 130 and "jobs fetch" in err
    job_id = next(iter(cloud.jobs))
    assert job_id in err
    code, out, _ = _cli(capsys, "jobs", "list", "--json")
    assert [j["job_id"] for j in json.loads(out)] == [job_id]

    plot = tmp_path / "fetched.png"
    code, out, err = _cli(capsys, "jobs", "fetch", job_id, "--json", "--plot", plot)
    assert code == 0, err
    assert json.loads(out)["job_id"] == job_id and cloud.submissions == 1
    assert f"wrote {plot}" in err and plot.read_bytes()[:4] == b"\x89PNG"  # ROC + confusion


def test_no_wait_returns_at_once_and_fetch_collects(run, tmp_path, cloud, capsys):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    cloud.script(statuses=["QUEUED", "QUEUED", "RUNNING", "DONE"])
    code, out, err = _infer(capsys, run, backend, "--no-wait", "--json")
    assert code == 0, err
    job_id = json.loads(out)["job_id"]
    assert cloud.jobs[job_id].status_calls == 0  # nothing waited
    code, out, _ = _cli(capsys, "jobs", "status", job_id)
    assert "QUEUED" in out
    code, _, err = _cli(capsys, "jobs", "fetch", job_id, "--no-wait")
    assert code == 1 and "QUEUED" in err
    code, out, err = _cli(capsys, "jobs", "fetch", job_id)
    assert code == 0 and "acc" in out, err


def test_token_never_leaks(run, tmp_path, cloud, capsys, monkeypatch):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="batch"))
    code, out1, err1 = _infer(capsys, run, backend, "--json")
    assert code == 0, err1
    assert cloud.service_kwargs[0]["token"] == TOKEN  # it was used ...
    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN + "-wrong")  # ... and a rejected one is echoed
    code, out2, err2 = _infer(capsys, run, backend)
    assert code == 1 and "rejected the token" in err2
    texts = [out1, err1, out2, err2]
    for folder in (run, tmp_path / "home"):
        texts += [p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file()]
    assert not any(TOKEN in t for t in texts)


def test_no_network_is_not_called_a_bad_token(run, capsys, monkeypatch):
    """Without network qiskit-ibm-runtime says 'check that you are using a valid API token';
    the user must hear that the servers were not reached, and the token was not judged."""
    ibm.set_service_factory(FakeCloud(token=TOKEN, offline=True).service)
    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN)
    code, _, err = _infer(capsys, run, "ibm_brisbane")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "cannot reach IBM Quantum: no network connection to its servers (ConnectionError" in err
    assert "the token was not checked" in err and "rejected" not in err and TOKEN not in err


def test_account_and_device_errors_are_one_line(run, tmp_path, capsys, monkeypatch):
    c = FakeCloud(token=TOKEN)
    ibm.set_service_factory(c.service)
    code, _, err = _infer(capsys, run, "ibm_brisbane")  # no token, no saved account
    assert code == 1 and len(err.strip().splitlines()) == 1 and "no IBM Quantum account" in err

    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN)
    code, _, err = _infer(capsys, run, "ibm_brisbane")  # retired
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "ibm_brisbane" in err and "ibm_fez" in err and "ibm_kingston" in err

    backend = _profile(tmp_path, RUNTIME.format(device="ibm_armonk", mode="job"))
    code, _, err = _infer(capsys, run, backend)
    assert code == 1 and "1 qubits" in err

    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job").replace(
        "shots = 256", "shots = 4096"), "costly")
    code, _, err = _infer(capsys, run, backend, limit=64)  # estimate above the threshold
    assert code == 1 and "--yes" in err and c.submissions == 0

    code, _, err = _cli(capsys, "jobs", "fetch", "no-such-job")
    assert code == 1 and "unknown job id" in err and "hqcnn-qiskit jobs fetch: error:" in err


def test_dry_run_for_ibm_brisbane_works_offline(run, capsys):
    code, out, err = _infer(capsys, run, "ibm_brisbane", "--dry-run", limit=64)
    assert code == 0, err
    assert "nothing submitted" in out and "FakeBrisbane snapshot" in out
    assert "127-qubit device" in out and "two-qubit gates" in out
    assert "estimated QPU usage" in out and "64 rows x 2 measurement bases x 1024 shots" in out
    assert not (run / "jobs.jsonl").exists() or "ibm_brisbane" not in (run / "jobs.jsonl").read_text()


# Audit fixes ---------------------------------------------------------------------------------------
def _fresh_run(run: Path, folder: Path) -> Path:
    """A run folder of its own (the checkpoint only), so a test may break its journal."""
    folder.mkdir(parents=True)
    shutil.copy(run / "best.pt", folder / "best.pt")
    return folder


def test_unwritable_index_or_run_folder_fails_before_submitting(run, tmp_path, cloud, capsys,
                                                               monkeypatch):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HQCNN_HOME", str(blocker / "home"))  # a file where a folder must be
    code, _, err = _infer(capsys, run, backend)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "cannot write to the job index folder" in err and "nothing was submitted" in err
    assert cloud.submissions == 0

    monkeypatch.setenv("HQCNN_HOME", str(tmp_path / "home"))
    ro = _fresh_run(run, tmp_path / "ro")
    (ro / "jobs").write_text("")  # the run folder's jobs area cannot be made
    code, _, err = _infer(capsys, ro, backend)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"cannot write to the run folder {ro}" in err and "nothing was submitted" in err
    assert cloud.submissions == 0 and not (tmp_path / "home" / "jobs.jsonl").exists()


def test_a_limit_below_two_images_is_refused_before_submitting(run, tmp_path, cloud, capsys):
    """ACC and AUC need two images: one image used to be sent, and then the command failed."""
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    with pytest.raises(SystemExit) as exit_info:  # the command line: a usage error
        _infer(capsys, run, backend, limit=1)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--limit: expected at least 2, got 1" in err
    with pytest.raises(ConfigError, match="at least 2 images"):  # the Python API
        jobs.infer(run / "best.pt", backend=backend, limit=1, data_root=_root(), yes=True)
    assert cloud.submissions == 0


def test_a_failed_infer_leaves_no_journal_behind(run, tmp_path, capsys, monkeypatch):
    """The writability check runs before the backend is validated; what it made for the test
    must not stay behind when the command then fails."""
    monkeypatch.setenv("HQCNN_HOME", str(tmp_path / "home"))
    fresh = _fresh_run(run, tmp_path / "fresh")
    code, _, err = _infer(capsys, fresh, "no_such_backend")
    assert code == 1 and "no_such_backend" in err
    assert sorted(p.name for p in fresh.iterdir()) == ["best.pt"]
    assert not (tmp_path / "home").exists()


def _unwritable(path: Path):
    """An ``on_submit`` hook: the journal ``path`` turns into a folder the moment the service
    accepts the job (a write after submission fails, as on a full or read-only disk)."""
    def hook(job):
        path.unlink(missing_ok=True)
        path.mkdir(parents=True)
    return hook


def test_job_is_never_lost_when_a_journal_write_fails_after_submission(run, tmp_path, cloud,
                                                                        capsys, monkeypatch):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    one = _fresh_run(run, tmp_path / "one")
    cloud.script(on_submit=_unwritable(tmp_path / "home" / "jobs.jsonl"))
    code, out, err = _infer(capsys, one, backend, "--json")
    assert code == 0, err  # the job was waited for and fetched through the run folder
    job_id = json.loads(out)["job_id"]
    assert f"`hqcnn-qiskit jobs fetch {job_id} --run {one}`" in err
    code, _, err = _cli(capsys, "jobs", "fetch", job_id)
    assert code == 1 and "unknown job id" in err and "--run RUN_DIR" in err
    code, out, err = _cli(capsys, "jobs", "fetch", job_id, "--run", one, "--json")
    assert code == 0 and json.loads(out)["job_id"] == job_id, err
    code, out, _ = _cli(capsys, "jobs", "status", job_id, "--run", one)
    assert code == 0 and "DONE" in out
    assert cloud.submissions == 1

    # the run journal fails instead: the line to record is printed, and the index still knows
    monkeypatch.setenv("HQCNN_HOME", str(tmp_path / "home2"))
    two = _fresh_run(run, tmp_path / "two")
    cloud.script(on_submit=_unwritable(two / "jobs.jsonl"))
    code, out, err = _infer(capsys, two, backend, "--json")
    assert code == 0, err
    job_id = json.loads(out)["job_id"]
    line = next(t for t in err.splitlines() if "could not be journaled" in t)
    assert job_id in line and str(two / "jobs.jsonl") in line
    assert json.loads(line.split("append this line to that file: ", 1)[1])["job_id"] == job_id
    code, out, err = _cli(capsys, "jobs", "fetch", job_id, "--json")
    assert code == 0 and json.loads(out)["job_id"] == job_id, err
    assert cloud.submissions == 2


def test_interrupt_names_only_this_invocations_jobs(run, tmp_path, cloud, capsys):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    code, out, err = _infer(capsys, run, backend, "--json")
    assert code == 0, err
    older = json.loads(out)["job_id"]  # done and fetched: the last line of the index

    cloud.script(interrupt_on_submit=True)  # Ctrl-C while the submission is on the wire
    code, _, err = _infer(capsys, run, backend)
    assert code == 130 and older not in err
    assert "before any job was submitted" in err and cloud.submissions == 1

    cloud.script(interrupt_on_status=1)  # Ctrl-C while waiting: this run's job, only it
    code, _, err = _infer(capsys, run, backend)
    new = [j for j in cloud.jobs if j != older]
    assert code == 130 and len(new) == 1 and new[0] in err and older not in err


def test_infer_json_is_evaluate_json_plus_job(run, capsys):
    args = ("--checkpoint", run / "best.pt", "--split", "test", "--limit", 40, "--data-root",
            _root(), "--json")
    code, out, err = _cli(capsys, "evaluate", "--backend", "aer_ideal", "--no-progress", *args)
    assert code == 0, err
    evaluated = json.loads(out)
    code, out, err = _cli(capsys, "infer", "--backend", "aer_ideal", *args)
    assert code == 0, err
    got = json.loads(out)
    assert set(got) == set(evaluated) | {"job_id", "checkpoint"}
    assert got["checkpoint"] == str((run / "best.pt").resolve())
    assert got["bootstrap"] == evaluated["bootstrap"] == 0  # binary: no interval needs any
    for key in ("acc", "auc", "n", "split", "backend", "dataset", "acc_95", "auc_95"):
        assert got[key] == pytest.approx(evaluated[key], abs=1e-6), key
    code, out, err = _cli(capsys, "jobs", "fetch", got["job_id"], "--json")
    assert code == 0 and json.loads(out) == got, err


def test_simulators_print_no_qpu_estimate(run, capsys):
    code, out, err = _infer(capsys, run, "aer_noisy", "--dry-run", limit=4)
    assert code == 0, err
    assert "executions:" in out and "QPU" not in out and "Open plan" not in out
    code, out, err = _infer(capsys, run, "aer_ideal", "--no-wait", limit=4)
    assert code == 0, err
    assert "QPU" not in err and "local testing mode" not in err and "runs in this process" in err
    code, out, err = _infer(capsys, run, "fake_brisbane", "--dry-run", limit=4)
    assert code == 0, err  # runtime_local: what the device it stands for would cost
    assert "QPU usage: none (local testing mode" in out and "on the real device" in out


def test_jobs_list_has_a_header(run, tmp_path, cloud, capsys):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    code, out, err = _infer(capsys, run, backend, "--no-wait", "--json")
    assert code == 0, err
    job_id = json.loads(out)["job_id"]
    code, out, _ = _cli(capsys, "jobs", "list")
    header, row = out.splitlines()
    assert header.split() == ["JOB", "ID", "STATE", "BACKEND", "DEVICE", "SUBMITTED", "RUN",
                              "FOLDER"]
    assert row.startswith(job_id) and row.index("submitted") == header.index("STATE")


def test_service_construction_logs_nothing_about_the_token(cloud):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("qiskit_ibm_runtime")
    logger.addHandler(handler)
    try:
        cloud.service(channel=ibm.CHANNEL, token=TOKEN)  # the double logs what IBM's does ...
        assert any("Loading account" in r.getMessage() for r in records)
        records.clear()
        ibm.get_service()  # ... and get_service keeps it off stderr
        assert not records
    finally:
        logger.removeHandler(handler)
    assert logging.getLogger(ibm.SERVICE_LOGGER).level == logging.NOTSET  # restored


def test_a_model_on_ibm_runtime_refuses_to_be_pickled(tmp_path, cloud):
    """Its service connection holds the account: a pickle could carry the token."""
    import pickle

    from hqcnn_qiskit.model import get_model

    net = get_model(backend=_profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job")))
    with pytest.raises(TypeError, match=r"cannot be pickled or copied; switch it to a simulator"):
        pickle.dumps(net)
    net.quantum.set_backend("aer_ideal")
    assert TOKEN.encode() not in pickle.dumps(net)


def test_train_and_evaluate_refuse_ibm_hardware_before_connecting(run, tmp_path, capsys):
    """A training step or an evaluation batch on a QPU would be paid jobs nobody estimated or
    journaled: both refuse, name `infer`, and never reach the service."""
    calls = []
    ibm.set_service_factory(lambda **kwargs: calls.append(kwargs))
    code, _, err = _cli(capsys, "evaluate", "--checkpoint", run / "best.pt", "--backend",
                        "ibm_least_busy", "--data-root", _root())
    assert code == 1 and "Traceback" not in err
    assert "evaluate does not run on IBM hardware (backend ibm_least_busy)" in err
    assert "hqcnn-qiskit infer --checkpoint RUN_DIR/best.pt --backend ibm_least_busy" in err
    out = tmp_path / "t"
    code, _, err = _cli(capsys, "train", "--dataset", "breastmnist", "--backend", "ibm_brisbane",
                        "--epochs", 1, "--data-root", _root(), "--out", out)
    assert code == 1 and "training does not run on IBM hardware (backend ibm_brisbane)" in err
    assert calls == [] and not (out / "last.pt").exists()
    # nor a checkpoint whose kept profile is a device, evaluated without --backend
    from hqcnn_qiskit.checkpoint import load_checkpoint, save_checkpoint
    from hqcnn_qiskit.profiles import profile_snapshot

    payload = load_checkpoint(run / "best.pt")
    payload["backend_profile"] = profile_snapshot("ibm_least_busy")
    save_checkpoint(tmp_path / "device.pt", payload)
    code, _, err = _cli(capsys, "evaluate", "--checkpoint", tmp_path / "device.pt",
                        "--data-root", _root())
    assert code == 1 and "evaluate does not run on IBM hardware" in err and calls == []
    # the classical twin has no circuit: its backend is only a name, nothing to refuse
    code, _, err = _cli(capsys, "train", "--dataset", "breastmnist", "--model", "classical",
                        "--backend", "ibm_brisbane", "--epochs", 1, "--limit-train", 16,
                        "--limit-eval", 16, "--data-root", _root(), "--out", out)
    assert code == 0 and (out / "best.pt").is_file()


@pytest.mark.parametrize("sampling", ["shots = 64", "precision = 0.125", ""])
def test_a_model_on_ibm_runtime_runs_through_the_python_api(run, tmp_path, cloud, sampling):
    """The API can still put a model on a device (one job per forward pass), whether the profile
    gives shots, a precision, or neither (IBM's estimator refuses a precision of 0)."""
    from hqcnn_qiskit.data import load_split
    from hqcnn_qiskit.evaluate import load_checkpoint_model

    text = RUNTIME.format(device="ibm_fez", mode="job").replace("shots = 256", sampling)
    model, payload = load_checkpoint_model(run / "best.pt", backend=_profile(tmp_path, text))
    spec = DatasetSpec.from_dict(payload["train_config"]["dataset"])
    images = load_split(spec, "test", root=_root(), limit=4).tensors[0]
    with torch.no_grad():
        evs = model.quantum(model.features(images))
    assert evs.shape == (4, 8) and torch.isfinite(evs).all() and cloud.submissions == 1
    sent = next(iter(cloud.jobs.values())).payload
    assert ('"default_shots": 64' in sent) == (sampling == "shots = 64")
    assert ('"default_precision": 0.125' in sent) == (sampling == "precision = 0.125")


@pytest.mark.parametrize("sampling, shots", [("precision = 0.01", 10000), ("", 4096)])
def test_the_estimate_counts_the_shots_ibm_will_run(run, tmp_path, cloud, capsys, sampling, shots):
    """Without `shots`, IBM's estimator runs ⌈1/precision²⌉ shots (4096 at its default); the
    estimate, and the --yes gate that reads it, count those, not a local default of 1024."""
    text = RUNTIME.format(device="ibm_fez", mode="job").replace("shots = 256", sampling)
    backend = _profile(tmp_path, text)
    code, out, err = _infer(capsys, run, backend, "--dry-run", limit=32)
    assert code == 0, err
    assert f"32 rows x 2 measurement bases x {shots} shots" in out
    # over 30 s of QPU time either way (at 1024 shots it would be ~20 s and go without asking)
    code, _, err = _infer(capsys, run, backend, limit=32)
    assert code == 1 and "rerun with --yes" in err and cloud.submissions == 0
    code, _, err = _infer(capsys, run, backend, "--yes", limit=32)
    assert code == 0, err
    assert cloud.submissions == 1 and cloud.shots == [shots]


# A submission whose answer is lost: found by its tag, never paid for twice ---------------------
def test_a_lost_submission_answer_is_adopted_not_paid_twice(run, tmp_path, cloud, capsys):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    cloud.script(lost_after_accept="read timeout")  # the service took it; the answer timed out
    code, out, err = _infer(capsys, run, backend, "--json")
    assert code == 0, err
    job_id = json.loads(out)["job_id"]
    assert cloud.submissions == 1 and f"the service had taken job {job_id}" in err
    journal = [json.loads(line) for line in (run / "jobs.jsonl").read_text().splitlines()]
    tag = next(e["tag"] for e in journal if e.get("job_id") == job_id and e["event"] == "submitted")
    assert cloud.jobs[job_id].tags == [tag]


def test_ctrl_c_while_the_answer_is_on_its_way_keeps_the_job(run, tmp_path, cloud, capsys):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    cloud.script(lost_after_accept="interrupt")
    code, _, err = _infer(capsys, run, backend)
    job_id = next(iter(cloud.jobs))
    assert code == 130 and f"job(s) {job_id} keep running" in err
    code, out, err = _cli(capsys, "jobs", "fetch", job_id, "--json")
    assert code == 0, err
    assert json.loads(out)["job_id"] == job_id and cloud.submissions == 1


def test_an_unconfirmed_submission_is_adopted_by_its_tag(run, tmp_path, cloud, capsys):
    """Ctrl-C as the service takes the job, and the lookup by tag fails too: the message gives the
    tag, and `jobs fetch ID --run RUN_DIR` adopts the job once its id is known."""
    folder = _fresh_run(run, tmp_path / "r")
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    cloud.lookup_failures = 10**6
    cloud.script(lost_after_accept="interrupt")
    code, _, err = _infer(capsys, folder, backend)
    job_id = next(iter(cloud.jobs))
    tag = cloud.jobs[job_id].tags[0]
    assert code == 130 and f"IBM Quantum may have taken it, tagged {tag}" in err
    assert f"jobs fetch JOB_ID --run {folder}" in err and job_id not in err
    assert job_id not in (folder / "jobs.jsonl").read_text()
    code, _, err = _cli(capsys, "jobs", "fetch", job_id)  # the index never heard of it
    assert code == 1 and "unknown job id" in err
    other = _fresh_run(run, tmp_path / "other")  # a folder without that tag does not adopt it
    (other / "jobs.jsonl").write_text(json.dumps({"event": "submitting", "tag": "hqcnn-x-p0",
                                                  "submission": "x", "part": 0}) + "\n")
    code, _, err = _cli(capsys, "jobs", "fetch", job_id, "--run", other)
    assert code == 1 and "unknown job id" in err
    cloud.lookup_failures = 0
    cloud.offline = True  # no network is said as such, not as an unknown job
    code, _, err = _cli(capsys, "jobs", "fetch", job_id, "--run", folder)
    assert code == 1 and "cannot reach IBM Quantum" in err and "unknown job id" not in err
    cloud.offline = False
    code, out, err = _cli(capsys, "jobs", "fetch", job_id, "--run", folder, "--json")
    assert code == 0, err
    assert json.loads(out)["job_id"] == job_id and cloud.submissions == 1
    code, out, _ = _cli(capsys, "jobs", "list", "--json")  # now in the index as well
    assert job_id in [j["job_id"] for j in json.loads(out)]


def test_a_lost_answer_that_cannot_be_checked_is_not_sent_again(run, tmp_path, cloud, capsys):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    cloud.lookup_failures = 10**6
    cloud.script(lost_after_accept="read timeout")
    code, _, err = _infer(capsys, run, backend)
    assert code == 1 and cloud.submissions == 1 and "Traceback" not in err
    assert "could not be asked whether it took the job" in err and "--run" in err


def test_is_transient_knows_how_the_runtime_words_a_lost_connection():
    from qiskit_ibm_runtime.api.exceptions import RequestsApiError
    from qiskit_ibm_runtime.exceptions import IBMRuntimeError

    assert ibm.is_transient(RequestsApiError("HTTPSConnectionPool(host='x', port=443): Max "
                                             "retries exceeded", status_code=-1))
    assert ibm.is_transient(IBMRuntimeError("Failed to run program: HTTPSConnectionPool("
                                            "host='x', port=443): Read timed out."))
    assert ibm.is_transient(IBMRuntimeError("Failed to run program: '503 Server Error'"))
    assert not ibm.is_transient(IBMRuntimeError("Failed to run program: '400 Client Error: Bad "
                                                "Request'. Error code: 1517."))
    from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError

    assert not ibm.is_transient(RuntimeJobFailureError("Unable to retrieve job result. Error "
                                                       "code 1305; the job timed out"))


def test_a_connection_lost_while_waiting_or_asking_is_one_line(run, tmp_path, cloud, capsys):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    cloud.script(status_failures=10)  # more than the retries
    code, _, err = _infer(capsys, run, backend)
    job_id = next(iter(cloud.jobs))
    assert code == 1 and "Traceback" not in err
    assert f"lost contact with IBM Quantum while waiting for job {job_id}" in err
    assert f"jobs fetch {job_id}` collects it later" in err
    del cloud.jobs[job_id]  # journaled here, unknown to the service
    code, _, err = _cli(capsys, "jobs", "status", job_id)
    assert code == 1 and f"the service does not know job {job_id}" in err and "Traceback" not in err


def test_non_finite_values_give_no_metrics(run, tmp_path, capsys):
    folder = _fresh_run(run, tmp_path / "r")
    code, out, err = _infer(capsys, folder, "aer_ideal", "--json")
    assert code == 0, err
    job_id = json.loads(out)["job_id"]
    result = next((folder / "jobs").glob("*/result_0.npy"))
    evs = np.load(result)
    evs[1, 3] = np.inf
    np.save(result, evs)
    code, _, err = _cli(capsys, "jobs", "fetch", job_id)
    assert code == 1 and "non-finite values for 1 of 8 images" in err


@pytest.mark.parametrize("text", ["Authorization: Bearer eyJ.abc-123", "api-key: abc-123",
                                  "{'apikey': 'abc-123'}", "token=abc-123 and more"])
def test_scrub_masks_credentials_in_every_shape(text, monkeypatch):
    monkeypatch.delenv("QISKIT_IBM_TOKEN", raising=False)  # not known: only the shape can tell
    assert "abc-123" not in ibm.scrub(text) and "***" in ibm.scrub(text)


def test_a_cancelled_job_says_who_may_have_cancelled_it(run, tmp_path, cloud, capsys):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    cloud.script(statuses=["QUEUED", "CANCELLED"])
    code, _, err = _infer(capsys, run, backend)
    assert code == 1 and "cancelled: by you, an administrator of the instance, or the service" in err


def test_runtime_backend_closes_its_batch(tmp_path, cloud):
    from hqcnn_qiskit.backends import get_backend

    backend = get_backend(_profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="batch")))
    backend.estimator()
    batch = backend._mode  # noqa: SLF001
    closed = []
    batch.close = lambda: closed.append(True)
    backend.close()
    assert closed == [True] and backend._mode is None  # noqa: SLF001
    backend.close()  # nothing open: nothing to do
    assert closed == [True]


def test_fetch_uses_the_head_saved_at_submission(run, tmp_path, capsys):
    """Training on (or deleting) the checkpoint before a paid job is fetched does not strand the
    job: the head it goes through is saved with the submission."""
    from hqcnn_qiskit.checkpoint import load_checkpoint, save_checkpoint

    folder = _fresh_run(run, tmp_path / "r")
    code, out, err = _infer(capsys, folder, "aer_ideal", "--json", "--bootstrap", 0)
    assert code == 0, err
    first = json.loads(out)
    csv_file = next((folder / "jobs").glob("*/predictions.csv"))
    predictions = csv_file.read_text()  # per-image scores
    payload = load_checkpoint(folder / "best.pt")  # "train on": other head weights
    payload["model"] = {k: (v + 1.0 if k.startswith("head.") else v)
                        for k, v in payload["model"].items()}
    save_checkpoint(folder / "best.pt", payload)
    code, out, err = _cli(capsys, "jobs", "fetch", first["job_id"], "--json", "--bootstrap", 0)
    assert code == 0, err
    assert "changed or disappeared since job" in err and "saved with the submission" in err
    again = json.loads(out)
    assert (again["acc"], again["auc"]) == (first["acc"], first["auc"])
    assert csv_file.read_text() == predictions
    next((folder / "jobs").glob("*/head.pt")).unlink()  # a submission from before heads were kept
    code, _, err = _cli(capsys, "jobs", "fetch", first["job_id"])
    assert code == 1 and "the head would not match the circuit weights" in err


def test_a_job_the_service_was_still_creating_is_found_after_the_backoff(run, tmp_path, cloud,
                                                                         capsys, monkeypatch):
    """After a read timeout the service may not list the job yet: the lookup waits for the
    backoff, and a lookup that fails once is retried, so nothing is sent twice."""
    monkeypatch.setenv("HQCNN_RETRY_DELAY", "0.3")
    cloud.visible_after = 0.1  # listed a little after it was created
    cloud.lookup_failures = 1  # and the first lookup meets a dropped connection
    cloud.script(lost_after_accept="read timeout")
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    code, _, err = _infer(capsys, run, backend)
    assert code == 0, err
    assert cloud.submissions == 1 and "the service had taken job" in err


def test_a_second_ctrl_c_during_the_lookup_still_gives_the_tag(run, tmp_path, cloud, capsys,
                                                                monkeypatch):
    backend = _profile(tmp_path, RUNTIME.format(device="ibm_fez", mode="job"))
    cloud.script(lost_after_accept="interrupt")

    def impatient(*args, **kwargs):  # Ctrl-C again while the lookup waits on the network
        raise KeyboardInterrupt

    from fake_service import FakeService

    monkeypatch.setattr(FakeService, "jobs", impatient)
    code, _, err = _infer(capsys, run, backend)
    tag = next(iter(cloud.jobs.values())).tags[0]
    assert code == 130 and f"IBM Quantum may have taken it, tagged {tag}" in err
    assert "nothing was sent" not in err
