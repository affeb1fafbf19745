"""Backend profiles: the shipped files load, and bad files give one-line BackendErrors that name
the file and the field."""

from __future__ import annotations

import pytest

from hqcnn_qiskit.backends import get_backend, list_backends
from hqcnn_qiskit.errors import BackendError
from hqcnn_qiskit.profiles import load_profile

SHIPPED = {"aer_ideal", "aer_noisy", "aer_noisy_mitigated", "fake_brisbane", "ibm_brisbane",
           "ibm_least_busy"}


def test_shipped_profiles_load_with_descriptions():
    profiles = {p.name: p for p in list_backends()}
    assert SHIPPED <= set(profiles)
    assert all(p.description for p in profiles.values())
    assert profiles["aer_noisy"].device == "FakeBrisbane" and profiles["aer_noisy"].shots
    assert profiles["aer_noisy_mitigated"].mitigation.enabled
    assert not profiles["aer_noisy"].mitigation.enabled
    assert profiles["fake_brisbane"].kind == "runtime_local"
    assert profiles["ibm_least_busy"].device == "least_busy"


def _write(tmp_path, body: str):
    path = tmp_path / "mine.toml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "body, field",
    [
        ('kind = "aer"\ndevice = "FakeBrisbane"\nshotz = 10\n', "shotz"),
        ('kind = "aer"\ndevice = "FakeBrisbane"\nshots = "many"\n', "shots"),
        ('kind = "aer"\ndevice = "FakeBrisbane"\n[mitigation]\nzne = "yes"\n', "mitigation.zne"),
        ('kind = "aer"\ndevice = "FakeBrisbane"\n[mitigation]\nreadot = "matrix"\n',
         "mitigation.readot"),
        ('kind = "aer"\ndevice = "FakeNowhere"\n', "device"),
        ('kind = "runtime_local"\ndevice = "ibm_brisbane"\n', "device"),
        ('kind = "quantum_magic"\n', "kind"),
    ],
)
def test_bad_profiles_name_file_and_field(tmp_path, body, field):
    path = _write(tmp_path, body)
    with pytest.raises(BackendError) as info:
        load_profile(path)
    message = str(info.value)
    assert str(path) in message and f"'{field}'" in message
    assert "\n" not in message


def test_unknown_device_lists_valid_names(tmp_path):
    path = _write(tmp_path, 'kind = "aer"\ndevice = "FakeNowhere"\n')
    with pytest.raises(BackendError, match="FakeBrisbane"):
        get_backend(str(path))


def test_user_profile_path_selects_another_snapshot(tmp_path):
    path = _write(tmp_path, 'kind = "aer"\ndevice = "FakeFez"\nshots = 256\n')
    backend = get_backend(str(path))
    assert backend.target.num_qubits == 156 and "cz" in backend.target.operation_names
    assert backend.describe()["device"] == "FakeFez"


def test_unknown_profile_name():
    with pytest.raises(BackendError, match="aer_noisy"):
        get_backend("aer_noisier")
