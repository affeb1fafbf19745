"""Predictions and medmnist's own ACC/AUC, for a model in memory or a checkpoint on disk."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm import tqdm

from . import validate
from .checkpoint import load_checkpoint
from .data import DatasetSpec, import_medmnist, load_split
from .errors import (
    BackendError,
    CheckpointError,
    ConfigError,
    DataError,
    DivergedError,
    first_line,
)
from .model import HQCNN, ModelConfig
from .profiles import DEFAULT_EVAL_BATCH_SIZE, eval_batch_size, refuse_on_hardware

__all__ = ["predict", "compute_metrics", "evaluate_model", "load_checkpoint_model", "evaluate_checkpoint",
           "trained_backend"]

#: Seconds between the progress lines that ``log`` gets when no bar is drawn.
LOG_EVERY_SECONDS = 15.0


def _images(dataset) -> torch.Tensor:
    """The image tensor of a ``TensorDataset`` (its first tensor), or the tensor itself."""
    if isinstance(dataset, torch.Tensor):
        return dataset
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0]
    raise DataError(f"predict takes a TensorDataset or a tensor of images, got "
                    f"{type(dataset).__name__}")


@torch.no_grad()
def predict(
    model: nn.Module, dataset: TensorDataset | torch.Tensor, *,
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE, multilabel: bool = False,
    progress: bool = False, desc: str = "predict", log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Class probabilities (softmax), or label probabilities (sigmoid) for multi-label tasks.

    The model runs in eval mode; the mode of each of its modules is restored afterwards, also
    when the forward pass fails. In eval mode each image's score does not depend on its batch:
    ``batch_size`` only sets how often the progress bar (counted in images) advances.
    Shot-sampling backends draw their samples per forward pass, so there the scores move within
    shot noise with the batching.

    Args:
        model: The model (e.g. an :class:`~hqcnn_qiskit.model.HQCNN`).
        dataset: A ``TensorDataset`` whose first tensor holds the images (as
            :func:`~hqcnn_qiskit.data.load_split` returns it), or the ``(N, C, H, W)`` image
            tensor itself.
        batch_size: Images per forward pass.
        multilabel: Sigmoid per label instead of softmax over classes.
        progress: Show a progress bar.
        desc: The progress bar's label.
        log: Without a bar, where a line on progress goes every :data:`LOG_EVERY_SECONDS`
            of long work (``"test: 64/624 images, 31 s"``), e.g. for a log file.

    Returns:
        Scores ``(N, outputs)`` as float64.

    Raises:
        ConfigError: ``batch_size`` is not a whole number of at least 1.
        DataError: No images, or ``dataset`` is neither a tensor nor a ``TensorDataset``.
    """
    batch_size = validate.integer(batch_size, "batch_size", low=1)
    images = _images(dataset)
    if len(images) == 0:
        raise DataError("there are no images to predict (the dataset is empty)")
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        scores = []
        begun = last = time.monotonic()
        with tqdm(total=len(images), desc=desc, disable=not progress, leave=False,
                  unit="image") as bar:
            for start in range(0, len(images), batch_size):
                batch = images[start : start + batch_size]
                logits = model(batch)
                scores.append(torch.sigmoid(logits) if multilabel
                              else torch.softmax(logits, dim=1))
                bar.update(len(batch))
                now = time.monotonic()
                if log and not progress and now - last >= LOG_EVERY_SECONDS:
                    last = now
                    log(f"{desc}: {start + len(batch)}/{len(images)} images, {now - begun:.0f} s")
    finally:
        for module, training in modes:
            module.training = training
    return torch.cat(scores).double().numpy()


def compute_metrics(spec: DatasetSpec, labels: torch.Tensor, scores: np.ndarray) -> dict:
    """ACC and AUC with medmnist's evaluator functions for the spec's task."""
    from sklearn.exceptions import UndefinedMetricWarning

    evaluator = import_medmnist().evaluator
    getACC, getAUC = evaluator.getACC, evaluator.getAUC

    y_true = labels.numpy()
    if len(y_true) < 2:
        raise DataError("ACC and AUC need at least 2 images")
    broken = int((~np.isfinite(scores)).any(axis=1).sum())
    if broken:
        raise DivergedError(f"the model's scores are not finite (nan or inf) on {broken} of "
                            f"{len(y_true)} images: its training diverged (or the images "
                            "hold nan or inf)")
    if not spec.multilabel:
        y_true = y_true.reshape(-1, 1)
    task = spec.task
    with warnings.catch_warnings():  # a one-class subset: AUC is nan, said by the caller
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return {"acc": float(getACC(y_true, scores, task)),
                "auc": float(getAUC(y_true, scores, task))}


def evaluate_model(model: HQCNN, spec: DatasetSpec, dataset: TensorDataset, *,
                   batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
                   progress: bool = False, desc: str = "evaluate", keep_scores: bool = False,
                   log: Callable[[str], None] | None = None) -> dict:
    """ACC and AUC of ``model`` on a labelled dataset (the model's train/eval mode is left as
    it was, see :func:`predict`).

    Args:
        model: The model.
        spec: The dataset's spec (its task decides the metrics).
        dataset: ``TensorDataset`` of images and labels, as :func:`~hqcnn_qiskit.data.load_split`
            returns it.
        batch_size: Images per forward pass.
        progress: Show a progress bar.
        desc: The progress bar's label.
        keep_scores: Also return the scores and labels.
        log: Progress lines without a bar (see :func:`predict`).

    Returns:
        ``{"acc", "auc", "n"}``; with ``keep_scores`` also ``"scores"`` (images x columns) and
        ``"labels"``, as NumPy arrays.
    """
    scores = predict(model, dataset, batch_size=batch_size, multilabel=spec.multilabel,
                     progress=progress, desc=desc, log=log)
    labels = dataset.tensors[1]
    kept = {"scores": scores, "labels": labels.numpy()} if keep_scores else {}
    return {**compute_metrics(spec, labels, scores), "n": len(dataset), **kept}


def load_checkpoint_model(path: str | os.PathLike, *, backend=None) -> tuple[HQCNN, dict]:
    """Rebuild the model a checkpoint was trained as, with its weights.

    Args:
        path: A ``best.pt`` or ``last.pt``.
        backend: Run the quantum layer here instead of the training backend.

    Returns:
        The model (in eval mode) and the checkpoint payload.

    Raises:
        CheckpointError: Unreadable, or the weights do not fit the model it describes.
    """
    return _build_model(path, load_checkpoint(path), backend)


def _build_model(path, payload: dict, backend) -> tuple[HQCNN, dict]:
    """:func:`load_checkpoint_model` for a checkpoint already read."""
    try:
        model_config = ModelConfig(**payload["model_config"])
        backend = backend or trained_backend(payload)
    except (KeyError, TypeError, ConfigError, BackendError) as exc:
        raise CheckpointError(f"{path} has no usable model config ({exc})") from None
    model = HQCNN(config=model_config, backend=backend)  # the classical twin ignores it
    weights = payload.get("model")
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path} holds no model weights")
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as exc:
        reason = _state_dict_mismatch(model.state_dict(), weights) or first_line(exc)
        raise CheckpointError(
            f"{path}: weights do not fit a {model_config.model} model ({reason})"
        ) from None
    model.eval()
    return model, payload


def trained_backend(payload: dict):
    """The backend profile a checkpoint was trained on: the copy the run kept (so neither the
    working folder nor later edits of the file change it), or for runs made before runs kept
    one, the name or path in its config.

    Raises:
        KeyError: The checkpoint has neither.
        BackendError: The kept copy is not a valid profile.
    """
    from .profiles import snapshot_profile

    if payload.get("backend_profile"):  # None for the classical twin
        return snapshot_profile(payload["backend_profile"])
    return payload["train_config"]["backend"]


def _listed(items: list[str], shown: int = 3) -> str:
    """``a, b, c and 4 more``: the first few of a list, for one-line messages."""
    head = ", ".join(items[:shown])
    return head + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _state_dict_mismatch(expected: dict, given: dict) -> str:
    """Why ``given`` does not load into a model whose state dict is ``expected``, on one line
    (empty if nothing is found: the caller then uses torch's own message)."""
    # a parameter registered under two names (TorchConnector's ``weight`` and ``_weights``) is
    # reported once, under its first name
    seen, names = set(), []
    for key, value in expected.items():
        storage = (value.data_ptr(), tuple(value.shape)) if value.numel() else key
        if storage not in seen:
            seen.add(storage)
            names.append(key)
    missing = [k for k in names if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} {tuple(given[k].shape)} in the checkpoint, {tuple(expected[k].shape)} in the model"
        for k in names
        if k in given and hasattr(given[k], "shape") and given[k].shape != expected[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"missing {_listed(missing)}")
    if unexpected:
        parts.append(f"unexpected {_listed(unexpected)}")
    if shapes:
        parts.append(f"size mismatch {_listed(shapes, shown=2)}")
    return "; ".join(parts)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike, *, split: str = "test", backend: str | None = None,
    data_root: str | os.PathLike | None = None, limit: int | None = None, verify: bool = True,
    batch_size: int | None = None, progress: bool = True, keep_scores: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate a checkpoint on an official split.

    Args:
        batch_size: Images per forward pass; by default the backend kind's
            (:func:`~hqcnn_qiskit.profiles.eval_batch_size`: small where one pass takes
            seconds per image, so that the progress bar moves).
        keep_scores: Also return the per-image ``"scores"`` and ``"labels"`` (NumPy arrays),
            e.g. for :mod:`hqcnn_qiskit.uncertainty`.
        log: Progress lines without a bar (see :func:`predict`).

    Returns:
        ``{"acc", "auc", "n", "split", "backend", "dataset", "checkpoint", "task",
        "class_names"}`` (and the scores).

    Raises:
        ConfigError: ``backend`` is IBM hardware (``hqcnn-qiskit infer`` runs a model there).
    """
    # where the circuit would run, checked before the model is built (that connects there)
    payload = load_checkpoint(checkpoint)
    where = None
    if backend is not None:
        from .backends import get_backend

        backend = get_backend(backend)  # built once, and handed on to the model
        where = backend.profile
    elif payload.get("backend_profile"):  # the profile the run kept
        try:
            where = backend = trained_backend(payload)
        except BackendError as exc:
            raise CheckpointError(f"{checkpoint} has no usable backend profile ({exc})") from None
    if where is not None:
        refuse_on_hardware(where, "evaluate",
                           "every batch would be a paid QPU job, neither estimated nor journaled")
    model, payload = _build_model(checkpoint, payload, backend)
    if batch_size is None:
        kind = model.quantum.backend.profile.kind if model.is_quantum else None
        batch_size = eval_batch_size(kind)
    spec = DatasetSpec.from_dict(payload["train_config"]["dataset"])
    dataset = load_split(spec, split, root=data_root, limit=limit, verify=verify)
    metrics = evaluate_model(model, spec, dataset, batch_size=batch_size, progress=progress,
                             desc=f"{split}", keep_scores=keep_scores, log=log)
    used = model.quantum.backend.name if model.is_quantum else "none (classical)"
    return {**metrics, "split": split, "backend": used, "dataset": spec.describe(),
            "checkpoint": str(Path(checkpoint)), "task": spec.task,
            "class_names": spec.class_names}
