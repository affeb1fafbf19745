"""The MedMNIST loader on real files and on synthetic files in the same format."""

from __future__ import annotations

import hashlib
import sys
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_synthetic
from hqcnn_qiskit.data import DatasetSpec, dataset_file, list_datasets, load_split
from hqcnn_qiskit.errors import DataError


def test_real_breastmnist_official_splits(data_root):
    spec = DatasetSpec("breastmnist")
    raw = np.load(data_root / "breastmnist.npz")
    for split, n in {"train": 546, "val": 78, "test": 156}.items():
        images, labels = load_split(spec, split, root=data_root).tensors
        assert images.shape == (n, 1, 28, 28)
        assert images.dtype == torch.float32
        assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0
        expected = raw[f"{split}_images"].astype(np.float32) / 255.0 * 2 - 1
        np.testing.assert_allclose(images[:, 0].numpy(), expected, atol=1e-6)
        np.testing.assert_array_equal(labels.numpy(), raw[f"{split}_labels"][:, 0])
    assert spec.task == "binary-class" and spec.num_outputs == 2 and spec.channels == 1


def test_real_pneumoniamnist_counts_and_md5(data_root):
    spec = DatasetSpec("pneumoniamnist")
    path, md5 = dataset_file(spec, data_root)
    assert hashlib.md5(path.read_bytes()).hexdigest() == md5
    assert len(load_split(spec, "val", root=data_root)) == 524


def test_limit_is_a_fixed_subset(data_root):
    spec = DatasetSpec("breastmnist")
    a = load_split(spec, "train", root=data_root, limit=50).tensors[0]
    b = load_split(spec, "train", root=data_root, limit=50).tensors[0]
    assert a.shape[0] == 50 and torch.equal(a, b)


def test_data_root_from_environment(data_root, monkeypatch):
    monkeypatch.setenv("HQCNN_DATA_ROOT", str(data_root))
    assert len(load_split(DatasetSpec("breastmnist"), "test")) == 156


def test_missing_file_names_file_folder_and_md5(tmp_path):
    with pytest.raises(DataError) as err:
        load_split(DatasetSpec("pathmnist"), "train", root=tmp_path)
    message = str(err.value)
    assert "pathmnist.npz" in message and str(tmp_path) in message
    assert "a8b06965200029087d5bd730944a56c1" in message and "\n" not in message


def test_md5_mismatch_and_corrupt_file(tmp_path, data_root):
    write_synthetic(tmp_path, "breastmnist")
    with pytest.raises(DataError, match="md5"):
        load_split(DatasetSpec("breastmnist"), "train", root=tmp_path)
    assert len(load_split(DatasetSpec("breastmnist"), "train", root=tmp_path, verify=False)) == 546
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "breastmnist.npz").write_bytes((data_root / "breastmnist.npz").read_bytes()[:5000])
    with pytest.raises(DataError):
        load_split(DatasetSpec("breastmnist"), "train", root=broken, verify=False)
    with pytest.raises(DataError, match="md5"):
        load_split(DatasetSpec("breastmnist"), "train", root=broken)
    # an object array is never unpickled, and the message does not suggest doing so
    np.savez(broken / "breastmnist.npz", train_images=np.array([object()], dtype=object))
    with pytest.raises(DataError, match="pickled objects, which are never loaded") as info:
        load_split(DatasetSpec("breastmnist"), "train", root=broken, verify=False)
    assert "allow_pickle" not in str(info.value)


def test_unknown_dataset_split_size_and_3d():
    with pytest.raises(DataError, match="unknown dataset"):
        DatasetSpec("mnist")
    with pytest.raises(DataError, match="3D"):
        DatasetSpec("organmnist3d")
    with pytest.raises(DataError, match="size"):
        DatasetSpec("breastmnist", size=32)
    with pytest.raises(DataError, match="split"):
        load_split(DatasetSpec("breastmnist"), "validation")
    assert len(list_datasets()) == 12


def test_binary_cut_of_a_multiclass_set(tmp_path):
    write_synthetic(tmp_path, "retinamnist")
    spec = DatasetSpec("retinamnist", positive=(3, 4))
    raw = np.load(tmp_path / "retinamnist.npz")
    images, labels = load_split(spec, "val", root=tmp_path, verify=False).tensors
    assert images.shape == (120, 3, 28, 28)
    np.testing.assert_array_equal(labels.numpy(), np.isin(raw["val_labels"][:, 0], [3, 4]))
    assert spec.num_outputs == 2 and spec.task == "binary-class"
    with pytest.raises(DataError, match="not a label"):
        DatasetSpec("retinamnist", positive=(7,))


@pytest.mark.parametrize("flag, positive, message", [
    # ChestMNIST read only column 0; BreastMNIST silently swapped the classes
    ("chestmnist", (3,), "is multi-label, binary-class; positive classes (--positive) cut"),
    ("breastmnist", (0,), "is binary-class; positive classes (--positive) cut"),
    ("pathmnist", (1, 1), "lists a class twice"),
])
def test_a_binary_cut_that_makes_no_sense_is_refused(flag, positive, message):
    with pytest.raises(DataError, match=re.escape(message)):
        DatasetSpec(flag, positive=positive)


def test_labels_outside_the_classes_are_refused(tmp_path):
    """With --no-verify any file loads; a label the model has no output for must not reach
    the loss (an IndexError) or the metrics (a silent ACC of 0)."""
    path = write_synthetic(tmp_path, "breastmnist")
    arrays = dict(np.load(path))
    arrays["val_labels"][3] = 5
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"split 'val' has labels outside 0-1 \(breastmnist has 2"):
        load_split(DatasetSpec("breastmnist"), "val", root=tmp_path, verify=False)
    assert len(load_split(DatasetSpec("breastmnist"), "test", root=tmp_path, verify=False)) == 156


def test_multilabel_and_larger_sizes(tmp_path):
    write_synthetic(tmp_path, "breastmnist", size=64)
    images, _ = load_split(DatasetSpec("breastmnist", 64), "test", root=tmp_path, verify=False).tensors
    assert images.shape == (156, 1, 64, 64)
    spec = DatasetSpec("chestmnist")
    assert spec.multilabel and spec.num_outputs == 14
    write_synthetic(tmp_path, "chestmnist")
    labels = load_split(spec, "val", root=tmp_path, verify=False, limit=10).tensors[1]
    assert labels.shape == (10, 14) and labels.dtype == torch.float32


def test_augment_batch_shifts_and_mirrors_within_bounds():
    from hqcnn_qiskit.data import augment_batch

    images = torch.full((64, 1, 28, 28), -1.0)
    images[:, 0, 10, 5] = 1.0  # one bright pixel, left of centre
    before = images.clone()
    out = augment_batch(images, torch.Generator().manual_seed(3), shift=2, flip=True)
    assert torch.equal(images, before), "the input batch must not be modified"
    assert out.shape == images.shape
    rows, cols = [], []
    for img in out[:, 0]:
        r, c = (img == 1.0).nonzero()[0].tolist()
        rows.append(r)
        cols.append(c if c < 14 else 27 - c)  # undo the mirror
        assert int((img == 1.0).sum()) == 1
    assert set(rows) <= set(range(8, 13)) and set(cols) <= set(range(3, 8))
    assert len(set(rows)) > 1 and len(set(cols)) > 1, "offsets should vary across the batch"
    mirrored = sum(1 for img in out[:, 0] if (img == 1.0).nonzero()[0, 1] >= 14)
    assert 10 < mirrored < 54, "about half the images should be mirrored"
    again = augment_batch(images, torch.Generator().manual_seed(3), shift=2, flip=True)
    assert torch.equal(out, again), "the same generator state gives the same batch"
    plain = augment_batch(images, torch.Generator().manual_seed(3), shift=0, flip=False)
    assert torch.equal(plain, images) and plain is not images


def test_ctrl_c_while_medmnist_imports_is_not_swallowed():
    """medmnist's __init__ imports its datasets in a bare try/except, which swallowed a Ctrl-C
    landing there (printing "Please install the required packages"); it now arrives just after
    the import, which completes."""
    import subprocess

    probe = (
        "import builtins, os, signal, sys\n"
        "real = builtins.__import__\n"
        "def spy(name, *args, **kwargs):\n"
        "    if name == 'medmnist.dataset' and 'medmnist.dataset' not in sys.modules:\n"
        "        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C inside medmnist's try block\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = spy\n"
        "from hqcnn_qiskit.data import import_medmnist\n"
        "try:\n"
        "    import_medmnist()\n"
        "    print('not interrupted')\n"
        "except KeyboardInterrupt:\n"
        "    builtins.__import__ = real\n"
        "    import medmnist\n"
        "    print('interrupted', hasattr(medmnist, 'BreastMNIST'))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parent.parent)
    assert done.stdout.strip() == "interrupted True", done.stdout + done.stderr
    assert "Please install" not in done.stdout


def test_mirroring_is_off_where_classes_are_body_sides():
    """A mirrored kidney-left is a kidney-right: --augment must not flip the Organ sets."""
    assert not DatasetSpec("organamnist").mirror_safe
    assert not DatasetSpec("organsmnist", positive=(5,)).mirror_safe  # a binary cut too
    assert DatasetSpec("breastmnist").mirror_safe and DatasetSpec("pathmnist").mirror_safe
