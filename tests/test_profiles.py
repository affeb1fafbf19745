"""Backend profiles: the shipped files load, and bad files give one-line BackendErrors that name
the file and the field."""

from __future__ import annotations

import pytest

from hqcnn_qiskit.backends import get_backend, list_backends
from hqcnn_qiskit.errors import BackendError
from hqcnn_qiskit.profiles import FIELDS, KINDS, BackendProfile, MitigationSettings, load_profile

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


AER = 'kind = "aer"\ndevice = "FakeBrisbane"\n'
RUNTIME = 'kind = "runtime"\ndevice = "ibm_fez"\n'


# Values the code downstream would reject with a traceback (numpy, qiskit, the sampling estimator),
# or silently misuse: each must be a one-line BackendError at load time.
@pytest.mark.parametrize(
    "body, field",
    [
        (AER + "seed = -7\n", "seed"),
        ('kind = "exact"\nseed = -1\n', "seed"),
        (AER + "seed_transpiler = -1\n", "seed_transpiler"),
        (AER + "shots = 0\n", "shots"),
        (AER + "optimization_level = 4\n", "optimization_level"),
        (AER + "optimization_level = -1\n", "optimization_level"),
        ('kind = "exact"\nprecision = -0.1\n', "precision"),
        ('kind = "exact"\nprecision = nan\n', "precision"),
        ('kind = "exact"\nprecision = inf\n', "precision"),
        ('kind = "exact"\nprecision = true\n', "precision"),
        ('kind = "exact"\ndescription = 3\n', "description"),
        (AER + "seed = 1.5\n", "seed"),
        (AER + "physical_qubits = 3\n", "physical_qubits"),
        (AER + "physical_qubits = [0, 1, -2, 3]\n", "physical_qubits"),
        (AER + "physical_qubits = [0, 1, 1, 3]\n", "physical_qubits"),
        (AER + "physical_qubits = [0, 1, 2]\n", "physical_qubits"),
        (AER + "physical_qubits = [0, 1, 500, 3]\n", "physical_qubits"),
        (RUNTIME + "physical_qubits = [0, 1, -500, 3]\n", "physical_qubits"),
        (RUNTIME + 'execution_mode = "sessions"\n', "execution_mode"),
        (AER + "[mitigation]\ntwirl_samples = 0\n", "mitigation.twirl_samples"),
        (AER + "[mitigation]\ntwirl_samples = -2\n", "mitigation.twirl_samples"),
        (AER + "[mitigation]\ncalibration_shots = -3\n", "mitigation.calibration_shots"),
        (AER + "[mitigation]\ncalibration_shots = 0\n", "mitigation.calibration_shots"),
        (AER + "[mitigation]\nzne_factors = [1, -3]\n", "mitigation.zne_factors"),
        (AER + "[mitigation]\nzne_factors = [1, 2]\n", "mitigation.zne_factors"),
        (AER + "[mitigation]\nzne_factors = [3, 3]\n", "mitigation.zne_factors"),
        (AER + '[mitigation]\nzne_extrapolator = "cubic"\n', "mitigation.zne_extrapolator"),
        (AER + '[mitigation]\nreadout = "twirl"\ntwirl_samples = "4"\n',
         "mitigation.twirl_samples"),
        (AER + "[mitigation]\nreadout = false\n", "mitigation.readout"),
        (RUNTIME + '[mitigation]\ndynamical_decoupling = "yes"\n', "mitigation.dynamical_decoupling"),
        (AER + "mitigation = 3\n", "mitigation"),
    ],
)
def test_out_of_range_and_mistyped_values_name_file_and_field(tmp_path, body, field):
    path, message = _refused(tmp_path, body)
    assert message.startswith(f"{path}: field '{field}'")


def _refused(tmp_path, body: str) -> tuple:
    """The profile file written from ``body`` and the one-line error its loading raises."""
    path = _write(tmp_path, body)
    with pytest.raises(BackendError) as info:
        load_profile(path)
    assert "\n" not in str(info.value)
    return path, str(info.value)


def test_physical_qubits_outside_the_snapshot_name_the_size(tmp_path):
    path = _write(tmp_path, AER + "physical_qubits = [0, 1, 500, 3]\n")
    with pytest.raises(BackendError, match=r"\[500\] outside the device's 127 qubits"):
        load_profile(path)


# Fields the profile's kind never reads: an error, not silently ignored.
@pytest.mark.parametrize(
    "body, field, kind",
    [
        ('kind = "exact"\ndevice = "FakeBrisbane"\n', "device", "exact"),
        ('kind = "exact"\nshots = 100\n', "shots", "exact"),
        ('shots = 100\nkind = "exact"\n', "shots", "exact"),  # before the kind in the file
        ('kind = "exact"\noptimization_level = 1\n', "optimization_level", "exact"),
        ('kind = "exact"\nseed_transpiler = 1\n', "seed_transpiler", "exact"),
        ('kind = "exact"\nphysical_qubits = []\n', "physical_qubits", "exact"),
        ('kind = "exact"\nexecution_mode = "batch"\n', "execution_mode", "exact"),
        ('kind = "exact"\n[mitigation]\nzne = true\n', "mitigation", "exact"),
        (AER + "precision = 0.01\n", "precision", "aer"),
        (AER + 'execution_mode = "batch"\n', "execution_mode", "aer"),
        (AER + "[mitigation]\ngate_twirling = true\n", "mitigation.gate_twirling", "aer"),
        (AER + "[mitigation]\ndynamical_decoupling = true\n",
         "mitigation.dynamical_decoupling", "aer"),
        ('kind = "runtime_local"\ndevice = "FakeFez"\nengine = "batched"\n', "engine",
         "runtime_local"),
        (RUNTIME + "seed = 7\n", "seed", "runtime"),
        (RUNTIME + 'engine = "aer"\n', "engine", "runtime"),
        (RUNTIME + "[mitigation]\ncalibration_shots = 1024\n", "mitigation.calibration_shots",
         "runtime"),
    ],
)
def test_fields_the_kind_does_not_use_are_errors(tmp_path, body, field, kind):
    path, message = _refused(tmp_path, body)
    assert message.startswith(f"{path}: field '{field}' does not apply to kind '{kind}'")


@pytest.mark.parametrize(
    "body",
    [
        'kind = "exact"\nprecision = 0.01\nseed = 0\ndescription = "noisy exact"\n',
        AER + "seed = 0\nseed_transpiler = 0\noptimization_level = 0\n"
              "physical_qubits = [112, 126, 125, 124]\n"
              '[mitigation]\nreadout = "twirl"\ntwirl_samples = 1\ncalibration_shots = 1\n'
              'zne = true\nzne_factors = [1, 3, 5]\nzne_extrapolator = "exponential"\n',
        RUNTIME + 'precision = 0.02\nexecution_mode = "session"\nphysical_qubits = [0, 1, 2, 3]\n'
                  '[mitigation]\nreadout = "twirl"\ntwirl_samples = 2\ngate_twirling = true\n'
                  "dynamical_decoupling = true\n",
    ],
)
def test_boundary_values_and_fields_of_the_kind_load(tmp_path, body):
    load_profile(_write(tmp_path, body))


def test_every_profile_field_has_a_rule():
    names = {f for f in BackendProfile.__dataclass_fields__ if f not in ("name", "source")}
    names |= {f"mitigation.{f}" for f in MitigationSettings.__dataclass_fields__}
    assert set(FIELDS) == names
    assert all(rule.kinds and rule.kinds <= set(KINDS) for rule in FIELDS.values())


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
