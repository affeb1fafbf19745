"""The configuration dataclasses: a Python caller's mistake is one clear error before any
work, and what reaches a checkpoint is plain Python that ``weights_only`` loading accepts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hqcnn_qiskit.data import DatasetSpec
from hqcnn_qiskit.errors import ConfigError, DataError
from hqcnn_qiskit.evaluate import evaluate_checkpoint
from hqcnn_qiskit.train import TrainConfig, train

TINY = dict(model="classical", epochs=1, limit_train=16, limit_eval=16, batch_size=8)


def test_numpy_values_from_a_sweep_give_loadable_checkpoints(tmp_path, data_root):
    """A ``np.float64`` rate used to train a run whose checkpoints could not be read back."""
    config = TrainConfig(lr=np.logspace(-3, -2, 2)[0], seed=np.int64(3),
                         weight_decay=np.float32(0), **TINY)
    assert type(config.lr) is float and type(config.seed) is int
    assert type(config.weight_decay) is float
    assert TrainConfig(augment=np.bool_(True)).augment is True  # numpy 2 calls its type bool
    # 0 and 1, as checkpoints written before these checks may hold them
    assert TrainConfig(augment=1, attention=0).attention is False
    train(config, tmp_path, data_root=data_root, progress=False, log=lambda *_: None)
    result = evaluate_checkpoint(tmp_path / "best.pt", split="val", data_root=data_root,
                                 limit=16, progress=False)
    assert 0 <= result["acc"] <= 1
    again = train(config, tmp_path, data_root=data_root, resume=True, progress=False,
                  log=lambda *_: None)  # resume reads last.pt and compares the configs
    assert again["best_epoch"] == 1

    from hqcnn_qiskit.checkpoint import load_checkpoint, save_checkpoint
    from hqcnn_qiskit.errors import CheckpointError

    state = load_checkpoint(tmp_path / "last.pt")
    state["train_config"]["augment"] = "yes"  # a config these checks refuse
    save_checkpoint(tmp_path / "last.pt", state)
    with pytest.raises(CheckpointError, match=r"last.pt has no usable training config \(augment"):
        train(config, tmp_path, data_root=data_root, resume=True, progress=False)


def test_numpy_class_indices_are_stored_as_ints():
    spec = DatasetSpec("pathmnist", positive=np.array([8, 2]))
    assert spec.positive == (8, 2) and all(type(c) is int for c in spec.positive)
    assert spec == DatasetSpec("pathmnist", positive=(8, 2)) and hash(spec)  # resume compares
    assert DatasetSpec("pathmnist", positive=[8]) == DatasetSpec("pathmnist", positive=(8,))


@pytest.mark.parametrize("kwargs, message", [
    (dict(positive=("2",)), "each positive class must be a whole number, got '2'"),
    (dict(positive=2), "positive must be a sequence of class indices, got 2"),
    (dict(positive=(True,)), "each positive class must be a whole number, got True"),
    (dict(size="28"), "size must be a whole number, got '28'"),
])
def test_dataset_spec_rejects_values_of_the_wrong_type(kwargs, message):
    """A string class used to match no label: every image silently became negative."""
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DatasetSpec("dermamnist", **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(seed=1.5), "seed must be a whole number, got 1.5"),
    (dict(seed="0"), "seed must be a whole number, got '0'"),
    (dict(epochs=True), "epochs must be a whole number, got True"),
    (dict(epochs=0), "epochs must be at least 1, got 0"),
    (dict(batch_size=8.5), "batch_size must be a whole number, got 8.5"),
    (dict(batch_size=1), "batch_size must be at least 2, got 1"),
    (dict(limit_train=10.5), "limit_train must be a whole number, got 10.5"),
    (dict(limit_eval=1), "limit_eval must be at least 2, got 1"),
    (dict(lr="1e-3"), "lr must be a number, got '1e-3'"),
    (dict(lr=float("inf")), "lr must be finite, got inf"),
    (dict(lr=0.0), "lr must be positive, got 0.0"),
    (dict(weight_decay=-1e-4), "weight_decay must be zero or positive"),
    (dict(augment="no"), "augment must be True or False, got 'no'"),
    (dict(lr_schedule="cosine"), "lr_schedule must be one of constant, step, got 'cosine'"),
    (dict(dataset=3), "dataset must be a DatasetSpec or a dataset name, got 3"),
    (dict(backend=object()), "backend must be a name or a path"),
])
def test_train_config_rejects_bad_values_before_any_work(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**kwargs)


def test_a_dataset_name_is_enough():
    assert TrainConfig(dataset="pneumoniamnist").dataset == DatasetSpec("pneumoniamnist")
    with pytest.raises(DataError, match="unknown dataset"):
        TrainConfig(dataset="nosuchmnist")


def test_a_profile_file_is_stored_as_given(tmp_path, monkeypatch):
    """A ``Path`` used to reach the checkpoint as an object that ``weights_only`` loading
    refused; a relative path stays relative, so a project folder can move."""
    (tmp_path / "mine.toml").write_text('kind = "exact"\n')
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(backend=Path("mine.toml"))
    assert config.backend == "mine.toml" and type(config.backend) is str
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_a_run_keeps_its_backend_profile(tmp_path, data_root, monkeypatch):
    """A profile file given by a relative path used to be looked up again from the working
    folder: from another folder, evaluate failed, or silently used another file of that name
    (and a resume trained on it); spelled as an absolute path, the same file was refused."""
    from hqcnn_qiskit.errors import CheckpointError
    from hqcnn_qiskit.evaluate import load_checkpoint_model

    profile = 'kind = "aer"\ndevice = "FakeBrisbane"\nshots = {}\nseed = 1\n'
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    for folder, shots in ((project, 64), (elsewhere, 4096)):
        (folder / "profiles").mkdir(parents=True)
        (folder / "profiles" / "mine.toml").write_text(profile.format(shots))
    run = project / "run"
    monkeypatch.chdir(project)
    config = TrainConfig(backend="profiles/mine.toml", epochs=1, limit_train=16, limit_eval=16,
                         batch_size=8)
    train(config, run, data_root=data_root, progress=False, log=lambda *_: None)

    monkeypatch.chdir(elsewhere)  # its profiles/mine.toml says 4096 shots
    model, _ = load_checkpoint_model(run / "best.pt")
    assert model.quantum.backend.profile.shots == 64 and model.quantum.backend.name == "mine"
    with pytest.raises(CheckpointError, match=r"profiles/mine.toml has changed since .*last.pt "
                                              r"was trained with it \(shots 64 vs 4096\)"):
        train(config, run, data_root=data_root, resume=True, progress=False)
    same = TrainConfig.from_dict({**config.to_dict(),
                                  "backend": str(project / "profiles" / "mine.toml")})
    again = train(same, run, data_root=data_root, resume=True, progress=False,
                  log=lambda *_: None)  # the same file, spelled otherwise: accepted
    assert again["best_epoch"] == 1


def test_metrics_json_is_strict_json(tmp_path):
    """metrics.json of a run whose test subset held one class had ``NaN``, which is not JSON."""
    import json

    from hqcnn_qiskit.checkpoint import write_json

    write_json(tmp_path / "m.json", {"test": {"acc": 1.0, "auc": float("nan")},
                                     "seconds": (float("inf"), 2.5)})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"test": {"acc": 1.0, "auc": None}, "seconds": [None, 2.5]}


def test_the_classical_twin_ignores_its_backend(tmp_path, data_root):
    """It has no circuit: a profile that does not exist or changed must not stop it."""
    config = TrainConfig(backend="no_such_profile", **TINY)
    train(config, tmp_path, data_root=data_root, progress=False, log=lambda *_: None)
    again = train(config, tmp_path, data_root=data_root, resume=True, progress=False,
                  log=lambda *_: None)
    assert again["best_epoch"] == 1


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    """Run folders on a shared disk: results are as readable as any file the user creates (a
    temporary file is owner-only, and the rename used to keep that)."""
    from hqcnn_qiskit.checkpoint import atomic_write

    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "metrics.json", lambda fh: fh.write(b"{}"))
    finally:
        os.umask(previous)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == mode


def test_undefined_metrics_round_trip_through_strict_json(tmp_path):
    """metrics.json holds null for an undefined AUC; every reader (train_or_reuse, results.py)
    gets it back as NaN, as train() returned it."""
    import math

    from hqcnn_qiskit.checkpoint import write_json
    from hqcnn_qiskit.jsonio import read_json

    write_json(tmp_path / "m.json", {"test": {"acc": 0.5, "auc": math.nan}, "note": None})
    back = read_json(tmp_path / "m.json")
    assert math.isnan(back["test"]["auc"]) and back["test"]["acc"] == 0.5
    assert back["note"] is None  # only metric keys mean NaN
