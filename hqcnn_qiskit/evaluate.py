"""Predictions and medmnist's own ACC/AUC, for a model in memory or a checkpoint on disk."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm import tqdm

from .checkpoint import load_checkpoint
from .data import DatasetSpec, load_split
from .errors import CheckpointError, ConfigError, DataError, DivergedError, first_line
from .model import HQCNN, ModelConfig
from .profiles import DEFAULT_EVAL_BATCH_SIZE, eval_batch_size

__all__ = ["predict", "compute_metrics", "evaluate_model", "load_checkpoint_model", "evaluate_checkpoint"]


@torch.no_grad()
def predict(
    model: nn.Module, dataset: TensorDataset, *, batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
    multilabel: bool = False,
    progress: bool = False, desc: str = "predict",
) -> np.ndarray:
    """Class probabilities (softmax), or label probabilities (sigmoid) for multi-label tasks.

    In eval mode each image's score does not depend on its batch: ``batch_size`` only sets how
    often the progress bar (counted in images) advances. Shot-sampling backends draw their
    samples per forward pass, so there the scores move within shot noise with the batching.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    model.eval()
    images = dataset.tensors[0]
    scores = []
    with tqdm(total=len(images), desc=desc, disable=not progress, leave=False,
              unit="image") as bar:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            logits = model(batch)
            scores.append(torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1))
            bar.update(len(batch))
    return torch.cat(scores).double().numpy()


def compute_metrics(spec: DatasetSpec, labels: torch.Tensor, scores: np.ndarray) -> dict:
    """ACC and AUC with medmnist's evaluator functions for the spec's task."""
    from medmnist.evaluator import getACC, getAUC
    from sklearn.exceptions import UndefinedMetricWarning

    y_true = labels.numpy()
    if len(y_true) < 2:
        raise DataError("ACC and AUC need at least 2 images")
    broken = int((~np.isfinite(scores)).any(axis=1).sum())
    if broken:
        raise DivergedError(f"the model's scores are not finite (nan or inf) on {broken} of "
                            f"{len(y_true)} images: its training diverged")
    if not spec.multilabel:
        y_true = y_true.reshape(-1, 1)
    task = spec.task
    with warnings.catch_warnings():  # a one-class subset: AUC is nan, said by the caller
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return {"acc": float(getACC(y_true, scores, task)),
                "auc": float(getAUC(y_true, scores, task))}


def evaluate_model(model: HQCNN, spec: DatasetSpec, dataset: TensorDataset, *,
                   batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
                   progress: bool = False, desc: str = "evaluate", keep_scores: bool = False) -> dict:
    """``{"acc", "auc", "n"}`` of ``model`` on ``dataset``; with ``keep_scores`` also
    ``"scores"`` (images x columns) and ``"labels"``, as NumPy arrays."""
    scores = predict(model, dataset, batch_size=batch_size, multilabel=spec.multilabel,
                     progress=progress, desc=desc)
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
    payload = load_checkpoint(path)
    try:
        model_config = ModelConfig(**payload["model_config"])
        backend = backend or payload["train_config"]["backend"]
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} has no usable model config ({exc})") from None
    model = HQCNN(config=model_config, backend=backend)  # the classical twin ignores it
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(
            f"{path}: weights do not fit a {model_config.model} model ({first_line(exc)})"
        ) from None
    model.eval()
    return model, payload


def evaluate_checkpoint(
    checkpoint: str | os.PathLike, *, split: str = "test", backend: str | None = None,
    data_root: str | os.PathLike | None = None, limit: int | None = None, verify: bool = True,
    batch_size: int | None = None, progress: bool = True, keep_scores: bool = False,
) -> dict:
    """Evaluate a checkpoint on an official split.

    Args:
        batch_size: Images per forward pass; by default the backend kind's
            (:func:`~hqcnn_qiskit.profiles.eval_batch_size`: small where one pass takes
            seconds per image, so that the progress bar moves).
        keep_scores: Also return the per-image ``"scores"`` and ``"labels"`` (NumPy arrays),
            e.g. for :mod:`hqcnn_qiskit.uncertainty`.

    Returns:
        ``{"acc", "auc", "n", "split", "backend", "dataset", "checkpoint", "task"}`` (and the
        scores).
    """
    model, payload = load_checkpoint_model(checkpoint, backend=backend)
    if batch_size is None:
        kind = model.quantum.backend.profile.kind if model.is_quantum else None
        batch_size = eval_batch_size(kind)
    spec = DatasetSpec.from_dict(payload["train_config"]["dataset"])
    dataset = load_split(spec, split, root=data_root, limit=limit, verify=verify)
    metrics = evaluate_model(model, spec, dataset, batch_size=batch_size, progress=progress,
                             desc=f"{split}", keep_scores=keep_scores)
    used = model.quantum.backend.name if model.is_quantum else "none (classical)"
    return {**metrics, "split": split, "backend": used, "dataset": spec.describe(),
            "checkpoint": str(Path(checkpoint)), "task": spec.task}
