"""The package-level Python API: lazy exports, predict / evaluate_model and checkpoint loading."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import hqcnn_qiskit
from hqcnn_qiskit.checkpoint import save_checkpoint
from hqcnn_qiskit.errors import CheckpointError, ConfigError, DataError


def _images(n: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def twin():
    from hqcnn_qiskit.model import get_model

    torch.manual_seed(0)
    return get_model("classical")


# 1. predict / evaluate_model ----------------------------------------------------------------------
def test_predict_restores_the_training_mode(twin):
    from hqcnn_qiskit.evaluate import predict

    data = TensorDataset(_images(), torch.zeros(5, dtype=torch.long))
    twin.train()
    predict(twin, data)
    assert twin.training and all(m.training for m in twin.modules())
    twin.eval()
    predict(twin, data)
    assert not any(m.training for m in twin.modules())
    # a mixed mode (e.g. a frozen BatchNorm kept in eval) comes back module by module
    twin.train()
    twin.angles.norm.eval()
    predict(twin, data)
    assert twin.training and not twin.angles.norm.training and twin.head.training


def test_predict_restores_the_mode_when_the_forward_pass_fails(twin):
    from hqcnn_qiskit.evaluate import predict

    twin.train()
    with pytest.raises(DataError, match="3 channels"):
        predict(twin, torch.zeros(4, 3, 28, 28))
    assert twin.training and twin.backbone.training


def test_evaluate_model_restores_the_training_mode(twin):
    from hqcnn_qiskit.data import DatasetSpec
    from hqcnn_qiskit.evaluate import evaluate_model

    data = TensorDataset(_images(6), torch.tensor([0, 1, 0, 1, 0, 1]))
    twin.train()
    metrics = evaluate_model(twin, DatasetSpec("breastmnist"), data)
    assert metrics["n"] == 6 and 0 <= metrics["acc"] <= 1
    assert twin.training


def test_predict_takes_a_tensor_of_images_like_a_dataset(twin):
    from hqcnn_qiskit.evaluate import predict

    images = _images()
    from_tensor = predict(twin, images, batch_size=2)
    from_dataset = predict(twin, TensorDataset(images, torch.zeros(5)), batch_size=2)
    assert from_tensor.shape == (5, 2) and from_tensor.dtype == np.float64
    np.testing.assert_array_equal(from_tensor, from_dataset)
    np.testing.assert_allclose(from_tensor.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    with pytest.raises(DataError, match="takes a TensorDataset or a tensor of images, got list"):
        predict(twin, [images])


def test_predict_on_no_images_is_a_clear_error(twin):
    from hqcnn_qiskit.evaluate import predict

    for empty in (torch.zeros(0, 1, 28, 28), TensorDataset(torch.zeros(0, 1, 28, 28),
                                                           torch.zeros(0))):
        with pytest.raises(DataError, match="there are no images to predict"):
            predict(twin, empty)
    with pytest.raises(ConfigError, match="batch_size must be a whole number, got 2.5"):
        predict(twin, _images(), batch_size=2.5)


# 2. package-level names ---------------------------------------------------------------------------
def test_every_advertised_name_imports_from_the_package():
    from hqcnn_qiskit import (
        DatasetSpec,
        TrainConfig,
        evaluate_checkpoint,
        load_checkpoint_model,
        load_split,
    )
    from hqcnn_qiskit import data, evaluate, train as train_module

    assert DatasetSpec is data.DatasetSpec and load_split is data.load_split
    assert TrainConfig is train_module.TrainConfig
    assert evaluate_checkpoint is evaluate.evaluate_checkpoint
    assert load_checkpoint_model is evaluate.load_checkpoint_model
    for name in ("DatasetSpec", "load_split", "TrainConfig", "evaluate_checkpoint",
                 "load_checkpoint_model"):
        assert name in hqcnn_qiskit.__all__ and name in dir(hqcnn_qiskit)
    for name in hqcnn_qiskit.__all__:
        assert getattr(hqcnn_qiskit, name) is not None
    # the function train is not a package attribute: hqcnn_qiskit.train is the submodule
    assert "train" not in hqcnn_qiskit.__all__
    assert hqcnn_qiskit.train is train_module
    assert "from hqcnn_qiskit.train import train" in hqcnn_qiskit.__doc__


def test_the_package_and_cli_import_without_torch_or_qiskit():
    code = ("import sys, hqcnn_qiskit, hqcnn_qiskit.cli; names = hqcnn_qiskit.__all__; "
            "dir(hqcnn_qiskit); "
            "print(*(m in sys.modules for m in ('torch', 'qiskit', 'numpy')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split() == ["False", "False", "False"], result.stderr


# 6. load_checkpoint_model on weights that do not fit ----------------------------------------------
def _checkpoint(path, model_config: dict, weights: dict):
    save_checkpoint(path, {"model_config": model_config,
                           "train_config": {"backend": "aer_ideal"}, "model": weights})
    return path


def test_mismatched_weights_are_named_on_one_line(tmp_path, twin):
    from hqcnn_qiskit.evaluate import load_checkpoint_model
    from hqcnn_qiskit.model import get_model

    config = twin.config.to_dict()
    weights = twin.state_dict()
    # the quantum layer's weight, loaded into a classical twin: one unexpected key, two missing
    hqcnn = get_model("hqcnn", generator=torch.Generator().manual_seed(0)).state_dict()
    path = _checkpoint(tmp_path / "a.pt", config, {**{k: v for k, v in weights.items()
                                                      if not k.startswith("quantum.")},
                                                   "quantum.connector.weight":
                                                       hqcnn["quantum.connector.weight"]})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_model(path)
    message = str(info.value)
    assert "\n" not in message and "do not fit a classical model" in message
    assert "missing quantum.linear.weight, quantum.linear.bias" in message
    assert "unexpected quantum.connector.weight" in message
    # many missing keys: a few names, then the count
    path = _checkpoint(tmp_path / "b.pt", config, {"head.net.0.weight": weights["head.net.0.weight"]})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_model(path)
    missing = len(weights) - 1
    assert f"and {missing - 3} more" in str(info.value) and "\n" not in str(info.value)
    # a size mismatch says which tensor and both shapes
    other = get_model("classical", num_outputs=3).state_dict()
    path = _checkpoint(tmp_path / "c.pt", config, other)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_model(path)
    assert ("size mismatch head.net.3.weight (3, 128) in the checkpoint, (2, 128) in the model"
            in str(info.value))
    # weights of the circuit without attention (12) in a model with it (22): named once, although
    # the connector registers its weight under two names
    hqcnn_config = get_model("hqcnn").config.to_dict()
    path = _checkpoint(tmp_path / "d.pt", hqcnn_config,
                       get_model("hqcnn", attention=False).state_dict())
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_model(path)
    assert str(info.value).endswith(
        "weights do not fit a hqcnn model (size mismatch quantum.connector.weight (12,) in the "
        "checkpoint, (22,) in the model)")


def test_a_bad_model_config_in_a_checkpoint_is_a_checkpoint_error(tmp_path, twin):
    from hqcnn_qiskit.evaluate import load_checkpoint_model

    path = _checkpoint(tmp_path / "bad.pt", {**twin.config.to_dict(), "layers": 0},
                       twin.state_dict())
    with pytest.raises(CheckpointError, match="no usable model config .*layers must be at least 1"):
        load_checkpoint_model(path)
    path = _checkpoint(tmp_path / "good.pt", twin.config.to_dict(), twin.state_dict())
    model, _ = load_checkpoint_model(path)
    assert not model.training
    for key, value in twin.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
