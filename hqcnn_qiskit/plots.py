"""Figures of a run and of an evaluation, written as PNG files next to the numbers.

- :func:`training_curves`: the training loss and the validation ACC/AUC of every epoch, with
  the selected (best validation AUC) epoch marked; ``train`` writes it as ``curves.png``.
- :func:`roc_and_confusion`: the ROC curve of every column medmnist's AUC averages, and the
  confusion matrix of the decisions its ACC counts; ``evaluate``, ``infer`` and ``jobs fetch``
  write it with ``--plot FILE``.

The figures use matplotlib's object API (``matplotlib.figure.Figure``), never ``pyplot``: drawing
one does not change a notebook's current figure or a script's backend, and works without a
display. In a notebook, a returned figure shows itself as the cell's value.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from . import validate
from .checkpoint import atomic_write
from .errors import ConfigError
from .uncertainty import metric_columns, predictions

__all__ = ["training_curves", "roc_and_confusion", "save_figure"]


def _figure(width: float, height: float, columns: int):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def training_curves(history: list[dict], *, best_epoch: int | None = None, title: str = ""):
    """The training loss and the validation ACC and AUC, epoch by epoch.

    Args:
        history: ``metrics.json``'s (or a checkpoint's) ``history``: one dict per epoch with
            ``epoch``, ``train_loss``, ``val_acc`` and ``val_auc``.
        best_epoch: The selected epoch, marked on both panels.
        title: The figure's title.

    Returns:
        A ``matplotlib.figure.Figure``.

    Raises:
        ConfigError: An empty history.
    """
    if not history:
        raise ConfigError("no epochs to plot: the history is empty")
    epochs = [h["epoch"] for h in history]
    marker = "o" if len(epochs) == 1 else None  # a line needs two points
    figure, (loss_ax, val_ax) = _figure(10, 3.6, 2)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], color="#444444", marker=marker)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss")
    for key, label, color in (("val_auc", "validation AUC", "#1f77b4"),
                              ("val_acc", "validation ACC", "#ff7f0e")):
        values = [math.nan if h[key] is None else h[key] for h in history]  # undefined AUC
        val_ax.plot(epochs, values, label=label, color=color, marker=marker)
    val_ax.set(xlabel="epoch", ylabel="validation metric", title="validation split")
    if best_epoch is not None:
        for ax in (loss_ax, val_ax):
            ax.axvline(best_epoch, color="#2ca02c", linestyle="--", linewidth=1,
                       label=f"selected epoch {best_epoch}" if ax is val_ax else None)
    val_ax.legend(loc="lower right", fontsize="small")
    from matplotlib.ticker import MaxNLocator

    for ax in (loss_ax, val_ax):
        if len(epochs) == 1:  # the locator has no whole number inside a range narrower than 1
            ax.set_xticks(epochs)
            ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        figure.suptitle(title)
    return figure


def roc_and_confusion(task: str, labels, scores, *, class_names: list[str], title: str = ""):
    """ROC curves and, for single-label tasks, the confusion matrix of the evaluated images.

    The curves are those medmnist's AUC averages (one for a binary task, one per class against
    the rest for a multi-class task, one per label for a multi-label task), each with its AUC
    in the legend; the matrix counts the decisions medmnist's ACC scores (threshold 0.5 for a
    binary task, the argmax otherwise). A multi-label task has no single confusion matrix.

    Args:
        task: medmnist's task.
        labels: The true labels (images, or images x labels).
        scores: The model's probabilities (images x columns).
        class_names: One name per class (or label).
        title: The figure's title.

    Returns:
        A ``matplotlib.figure.Figure``.

    Raises:
        DataError: Labels or scores that do not fit the task (see
            :func:`~hqcnn_qiskit.uncertainty.metric_columns`).
    """
    from sklearn.metrics import auc, roc_curve

    columns, correct = metric_columns(task, labels, scores)
    multilabel = task.startswith("multi-label")
    figure, axes = _figure(5.2 if multilabel else 10.5, 4.4, 1 if multilabel else 2)
    roc_ax = axes[0]
    names = class_names[-1:] if task == "binary-class" else class_names
    if len(columns) > 10:  # the default cycle repeats its colours after 10
        from matplotlib import colormaps

        roc_ax.set_prop_cycle(color=[colormaps["tab20"](i % 20) for i in range(len(columns))])
    missing = []
    for (positive, score), name in zip(columns, names):
        if positive.all() or not positive.any():  # one class only: no curve, no AUC
            missing.append(name)
            continue
        fpr, tpr, _ = roc_curve(positive, score)  # the curve's area is its AUC
        roc_ax.plot(fpr, tpr, linewidth=1.4, label=f"{name}: AUC {auc(fpr, tpr):.3f}")
    if missing:
        roc_ax.text(0.02, 0.98, "no curve (only one class among these images): "
                    + ", ".join(missing), transform=roc_ax.transAxes, va="top",
                    fontsize="x-small", wrap=True)
    roc_ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1),
               ylim=(0, 1.01), aspect="equal",
               title=f"ROC ({len(correct)} images, ACC {float(np.mean(correct)):.3f})")
    if roc_ax.get_legend_handles_labels()[0]:
        roc_ax.legend(loc="lower right", fontsize="x-small" if len(columns) > 4 else "small")
    if not multilabel:
        _confusion(axes[1], np.asarray(labels).reshape(-1), predictions(task, scores),
                   class_names)
    if title:
        figure.suptitle(title)
    return figure


def _confusion(ax, truth: np.ndarray, decided: np.ndarray, class_names: list[str]) -> None:
    k = len(class_names)
    matrix = np.zeros((k, k), dtype=int)
    np.add.at(matrix, (truth.astype(int), decided.astype(int)), 1)
    ax.imshow(matrix, cmap="Blues")
    dark = matrix.max() / 2 if matrix.max() else 1
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize="small" if k < 8 else 6,
                color="white" if count > dark else "black")
    short = [name if len(name) <= 14 else name[:13] + "…" for name in class_names]
    ax.set_xticks(range(k), short, rotation=45 if k > 2 else 0, ha="right" if k > 2 else "center",
                  fontsize="small")
    ax.set_yticks(range(k), short, fontsize="small")
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")


def save_figure(figure, path: str | os.PathLike) -> Path:
    """Write ``figure`` as a PNG to ``path`` without ever leaving half a file.

    Args:
        figure: A ``matplotlib.figure.Figure``.
        path: The file; its folder must exist.

    Returns:
        The path written.

    Raises:
        ConfigError: ``path`` is not a writable ``.png`` file (see
            :func:`~hqcnn_qiskit.validate.png_file`), or writing it failed.
    """
    path = Path(validate.png_file(path))
    try:
        atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=120))
    except OSError as exc:
        raise ConfigError(f"cannot write {path} ({exc.strerror or exc})") from None
    return path
