"""Figures: what they draw is what the numbers say, and files are written whole or not at all."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from medmnist.evaluator import getAUC
from sklearn.metrics import confusion_matrix

from hqcnn_qiskit.errors import ConfigError
from hqcnn_qiskit.plots import roc_and_confusion, save_figure, training_curves

PNG = b"\x89PNG\r\n\x1a\n"


def _history(n: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 1 / e, "val_acc": 0.5 + e / 100,
             "val_auc": None if e == 1 else 0.6 + e / 100, "seconds": 0.1}
            for e in range(1, n + 1)]


def test_training_curves_show_every_epoch_and_the_selected_one(tmp_path):
    figure = training_curves(_history(5), best_epoch=4, title="breastmnist")
    loss_ax, val_ax = figure.axes
    assert list(loss_ax.get_lines()[0].get_ydata()) == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    auc, acc = val_ax.get_lines()[:2]
    assert list(auc.get_xdata()) == [1, 2, 3, 4, 5]
    assert math.isnan(auc.get_ydata()[0]) and auc.get_ydata()[3] == pytest.approx(0.64)
    assert list(acc.get_ydata()) == pytest.approx([0.51, 0.52, 0.53, 0.54, 0.55])
    assert "selected epoch 4" in [t.get_text() for t in val_ax.get_legend().get_texts()]
    assert all(4 in ax.get_lines()[-1].get_xdata() for ax in (loss_ax, val_ax))
    path = save_figure(figure, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == PNG
    # one epoch is still visible (markers on the data, not on the selected-epoch line), with
    # its whole number as the only tick; no epochs is a clear error
    one = training_curves(_history(1), best_epoch=1)
    for ax in one.axes:
        data, selected = ax.get_lines()[0], ax.get_lines()[-1]
        assert data.get_marker() == "o" and selected.get_marker() in ("None", "", None)
        assert list(ax.get_xticks()) == [1] and ax.get_xlim() == (0.5, 1.5)
    with pytest.raises(ConfigError, match="history is empty"):
        training_curves([])


def _texts(ax) -> list[int]:
    return [int(t.get_text()) for t in ax.texts]


def test_binary_roc_and_confusion_match_medmnist_and_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(80, 1))
    p1 = np.clip(0.5 * labels[:, 0] + rng.random(80) * 0.6, 0, 1)
    scores = np.stack([1 - p1, p1], axis=1)
    figure = roc_and_confusion("binary-class", labels, scores, class_names=["benign", "malignant"])
    roc_ax, cm_ax = figure.axes[:2]
    legend = roc_ax.get_legend().get_texts()
    assert len(legend) == 1 and legend[0].get_text() == (
        f"malignant: AUC {getAUC(labels, scores, 'binary-class'):.3f}")
    expected = confusion_matrix(labels[:, 0], (p1 > 0.5).astype(int), labels=[0, 1])
    assert _texts(cm_ax) == list(expected.ravel())
    assert [t.get_text() for t in cm_ax.get_yticklabels()] == ["benign", "malignant"]


def test_multiclass_and_multilabel_figures():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=(60, 1))
    scores = rng.dirichlet(np.ones(3), size=60)
    figure = roc_and_confusion("multi-class", labels, scores, class_names=["a", "b", "c"])
    roc_ax, cm_ax = figure.axes[:2]
    assert len(roc_ax.get_legend().get_texts()) == 3  # one curve per class against the rest
    expected = confusion_matrix(labels[:, 0], scores.argmax(axis=1), labels=[0, 1, 2])
    assert _texts(cm_ax) == list(expected.ravel()) and sum(_texts(cm_ax)) == 60
    # multi-label: one ROC per label with both classes present, no confusion matrix
    multi = rng.integers(0, 2, size=(40, 4))
    multi[:, 3] = 0  # a label no image has: no curve
    figure = roc_and_confusion("multi-label, binary-class", multi, rng.random((40, 4)),
                               class_names=["w", "x", "y", "z"])
    assert len(figure.axes) == 1
    assert [t.get_text().split(":")[0] for t in figure.axes[0].get_legend().get_texts()] == [
        "w", "x", "y"]
    assert "no curve (only one class among these images): z" in [t.get_text()
                                                                 for t in figure.axes[0].texts]
    # 14 labels (ChestMNIST): 14 curves, 14 colours
    many = rng.integers(0, 2, size=(80, 14))
    figure = roc_and_confusion("multi-label, binary-class", many, rng.random((80, 14)),
                               class_names=[f"label {i}" for i in range(14)])
    curves = figure.axes[0].get_lines()[:14]
    assert len({tuple(np.round(to_rgba(c.get_color()), 3)) for c in curves}) == 14


def test_save_figure_refuses_bad_paths_and_leaves_no_half_file(tmp_path, monkeypatch):
    figure = training_curves(_history(3), best_epoch=2)
    with pytest.raises(ConfigError, match="must end in .png"):
        save_figure(figure, tmp_path / "curves.jpg")
    with pytest.raises(ConfigError, match="is not an existing folder"):
        save_figure(figure, tmp_path / "nowhere" / "curves.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        save_figure(figure, tmp_path / "folder.png")
    (tmp_path / "folder.png").rmdir()
    target = tmp_path / "curves.png"
    target.write_bytes(b"old")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(figure), "savefig", broken)
    with pytest.raises(ConfigError, match="No space left on device"):
        save_figure(figure, target)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [
        "curves.png"]
