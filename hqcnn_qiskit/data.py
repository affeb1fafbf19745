"""MedMNIST data, driven by ``medmnist.INFO``: one table, every 2D dataset, every size.

Files are read by the ``medmnist`` package itself (with ``download=False`` once we have checked
the file and its MD5 ourselves), so the official splits and split sizes are what we train on.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from . import validate
from .errors import ConfigError, DataError, first_line

__all__ = [
    "import_medmnist",
    "DatasetSpec",
    "SPLITS",
    "SIZES",
    "list_datasets",
    "resolve_data_root",
    "dataset_file",
    "subset_indices",
    "load_split",
    "augment_batch",
]

SPLITS = ("train", "val", "test")
SIZES = (28, 64, 128, 224)
DATA_ROOT_ENV = "HQCNN_DATA_ROOT"


def import_medmnist():
    """``import medmnist``, with Ctrl-C held back until it is done (then delivered as usual).

    medmnist's ``__init__`` imports its dataset classes inside a bare ``try/except``: a Ctrl-C
    landing there is swallowed (it prints "Please install the required packages") and can leave
    pandas half-imported, to fail later with a traceback. Every use of medmnist here comes
    through this function first.

    Returns:
        The ``medmnist`` module.
    """
    if "medmnist.evaluator" in sys.modules:
        return sys.modules["medmnist"]
    held: list = []
    # handlers are set in the main thread only, and one installed outside Python (None) could
    # not be put back
    hold = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is not None)
    if hold:
        previous = signal.signal(signal.SIGINT, lambda *args: held.append(args))
    try:
        import medmnist
        import medmnist.evaluator  # noqa: F401 - what the bare except would have hidden
    finally:
        if hold:
            signal.signal(signal.SIGINT, previous)
    if held:
        signal.raise_signal(signal.SIGINT)  # the Ctrl-C held back, to the usual handler
    return medmnist


def _info() -> dict:
    return import_medmnist().INFO


def list_datasets() -> list[str]:
    """The 2D MedMNIST flags (``pathmnist``, ``chestmnist``, ...)."""
    return [flag for flag in _info() if not flag.endswith("3d")]


@dataclass(frozen=True)
class DatasetSpec:
    """Which data a model trains on.

    Args:
        flag: A 2D MedMNIST flag, e.g. ``"breastmnist"``.
        size: Image side: 28, 64, 128 or 224.
        positive: For a binary task cut from a multi-class set: the class indices that form the
            positive class (all others are negative), e.g. ``(8,)`` for PathMNIST tumour vs rest.
    """

    flag: str
    size: int = 28
    positive: tuple[int, ...] = ()

    def __post_init__(self):
        # plain values only: a checkpoint stores the spec, and a list (unhashable) or a string
        # class ("2" matches no integer label) would break resume or empty the positive class
        if not isinstance(self.flag, str):
            raise DataError(f"the dataset must be named by a string, got {self.flag!r}")
        try:
            size = validate.integer(self.size, "size")
            positive = self.positive
            if isinstance(positive, (str, bytes)) or not isinstance(positive, Iterable):
                raise ConfigError(f"positive must be a sequence of class indices, got "
                                  f"{positive!r}")
            positive = tuple(validate.integer(c, "each positive class") for c in positive)
        except ConfigError as exc:
            raise DataError(str(exc)) from None
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "positive", positive)
        info = _info()
        if self.flag not in info:
            raise DataError(
                f"unknown dataset '{self.flag}'; choose from: {', '.join(list_datasets())}"
            )
        if self.flag.endswith("3d"):
            raise DataError(f"'{self.flag}' is a 3D dataset; hqcnn-qiskit handles the 2D ones")
        if self.size not in SIZES:
            raise DataError(f"image size must be one of {SIZES}, got {self.size}")
        if self.positive:
            labels, task = info[self.flag]["label"], info[self.flag]["task"]
            if task == "binary-class" or task.startswith("multi-label"):
                raise DataError(f"'{self.flag}' is {task}; positive classes (--positive) cut a "
                                "binary task from a set with more than two exclusive classes")
            if len(set(self.positive)) < len(self.positive):
                raise DataError(f"positive (--positive) lists a class twice: {list(self.positive)}")
            bad = [p for p in self.positive if str(p) not in labels]
            if bad:
                raise DataError(
                    f"class {bad[0]} is not a label of {self.flag} (labels 0-{len(labels) - 1})"
                )
            if len(set(self.positive)) >= len(labels):
                raise DataError("positive (--positive) must leave at least one class negative")

    @property
    def info(self) -> dict:
        """The dataset's row of ``medmnist.INFO``."""
        return _info()[self.flag]

    @property
    def task(self) -> str:
        """The task trained: medmnist's, or ``binary-class`` for a cut."""
        return "binary-class" if self.positive else self.info["task"]

    @property
    def multilabel(self) -> bool:
        """Whether each image has several independent binary labels (ChestMNIST)."""
        return self.task.startswith("multi-label")

    @property
    def num_outputs(self) -> int:
        """Logits the head needs: classes, or labels for multi-label."""
        return 2 if self.positive else len(self.info["label"])

    @property
    def channels(self) -> int:
        """Image channels (1 or 3)."""
        return int(self.info["n_channels"])

    @property
    def class_names(self) -> list[str]:
        """Names of the trained classes."""
        labels = self.info["label"]
        if self.positive:
            pos = " + ".join(labels[str(p)] for p in sorted(self.positive))
            return ["rest", pos]
        return [labels[str(i)] for i in range(len(labels))]

    @property
    def mirror_safe(self) -> bool:
        """Whether a left-right mirrored image keeps its label: not where a class is a left or
        right side of the body (OrganA/C/SMNIST: femur-left, kidney-right, ...), read from
        the dataset's class names in ``medmnist.INFO``."""
        return not any(side in name.lower() for name in self.info["label"].values()
                       for side in ("left", "right"))

    def describe(self) -> str:
        """e.g. ``pathmnist (28px) classes [8] vs rest``."""
        cut = f" classes {list(self.positive)} vs rest" if self.positive else ""
        return f"{self.flag} ({self.size}px){cut}"

    def to_dict(self) -> dict:
        """Plain values for checkpoints and JSON."""
        return {"flag": self.flag, "size": self.size, "positive": list(self.positive)}

    @classmethod
    def from_dict(cls, data: dict) -> DatasetSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(data["flag"], int(data["size"]), tuple(int(p) for p in data.get("positive", ())))


def resolve_data_root(root: str | os.PathLike | None) -> tuple[Path, bool]:
    """Where data is read from, and whether a missing file may be downloaded.

    Order: the explicit ``root``, else ``$HQCNN_DATA_ROOT``, else medmnist's default folder
    (``~/.medmnist``), the only case where a missing file is downloaded.
    """
    if root:
        return Path(root).expanduser(), False
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env).expanduser(), False
    return Path(import_medmnist().info.DEFAULT_ROOT), True


def dataset_file(spec: DatasetSpec, root: Path) -> tuple[Path, str]:
    """The ``.npz`` path medmnist reads for ``spec`` under ``root``, and its official MD5."""
    suffix = "" if spec.size == 28 else f"_{spec.size}"
    md5_key = "MD5" if spec.size == 28 else f"MD5_{spec.size}"
    return root / f"{spec.flag}{suffix}.npz", spec.info[md5_key]


@lru_cache(maxsize=32)
def _md5(path: str, mtime: float, size: int) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_file(spec: DatasetSpec, root: Path, download: bool, verify: bool) -> Path:
    path, md5 = dataset_file(spec, root)
    if not path.is_file() and download:
        _download(spec, root)
    if not path.is_file():
        raise DataError(
            f"{path.name} not found in {root} (expected md5 {md5}); download it from MedMNIST "
            f"or point data_root (--data-root) or ${DATA_ROOT_ENV} at the folder that has it"
        )
    if verify:
        stat = path.stat()
        actual = _md5(str(path), stat.st_mtime, stat.st_size)
        if actual != md5:
            raise DataError(
                f"{path} has md5 {actual}, not the official {md5}: the file is corrupt or not "
                "the MedMNIST release (use --no-verify for your own file)"
            )
    return path


def _download(spec: DatasetSpec, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    try:
        medmnist = import_medmnist()
        getattr(medmnist, spec.info["python_class"])(
            split="train", root=str(root), size=spec.size, download=True
        )
    except Exception as exc:  # noqa: BLE001 - network, torchvision and server errors alike
        path, md5 = dataset_file(spec, root)
        raise DataError(
            f"could not download {path.name} to {root} (expected md5 {md5}): {first_line(exc)}"
        ) from None


def subset_indices(n: int, limit: int | None) -> np.ndarray:
    """The sorted indices of the fixed random subset of ``limit`` out of ``n`` samples that
    ``load_split`` keeps (the same subset every run); ``arange(n)`` when ``limit`` is None or
    not below ``n``."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, limit, replace=False))


@lru_cache(maxsize=16)
def _read(flag: str, size: int, split: str, root: str, mtime: float):
    medmnist = import_medmnist()
    cls = getattr(medmnist, _info()[flag]["python_class"])
    dataset = cls(split=split, root=root, size=size, download=False)
    return np.asarray(dataset.imgs), np.asarray(dataset.labels)


def load_split(
    spec: DatasetSpec,
    split: str,
    *,
    root: str | os.PathLike | None = None,
    limit: int | None = None,
    verify: bool = True,
) -> TensorDataset:
    """One split as tensors: images ``(N, C, H, W)`` scaled to [-1, 1], labels ``(N,)`` (class
    index) or ``(N, L)`` (multi-label 0/1).

    Args:
        spec: Dataset, size and optional binary cut.
        split: ``"train"``, ``"val"`` or ``"test"`` (the official splits).
        root: Data folder (see :func:`resolve_data_root`).
        limit: Keep a fixed random subset of this many samples (same subset every run).
        verify: Check the file's MD5 against ``medmnist.INFO``.

    Raises:
        DataError: Unknown split, missing, corrupt or mismatched file.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; choose from {', '.join(SPLITS)}")
    folder, download = resolve_data_root(root)
    path = _check_file(spec, folder, download, verify)
    try:
        images, labels = _read(spec.flag, spec.size, split, str(folder), path.stat().st_mtime)
    except Exception as exc:  # noqa: BLE001 - medmnist raises many kinds on bad files
        reason = ("it holds pickled objects, which are never loaded" if "pickle" in str(exc)
                  else first_line(exc))
        raise DataError(f"{path} is not a readable MedMNIST file: {reason}") from None
    expected = spec.info["n_samples"][split]
    if len(images) != expected or len(labels) != len(images):
        raise DataError(
            f"{path}: split '{split}' has {len(images)} images, the official count is {expected}"
        )
    classes = len(spec.info["label"])
    top = 1 if spec.info["task"].startswith("multi-label") else classes - 1
    if labels.size and (labels.min() < 0 or labels.max() > top):
        raise DataError(f"{path}: split '{split}' has labels outside 0-{top} "
                        f"({spec.flag} has {classes} classes)")
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit must be positive, got {limit}")
        if limit < len(images):
            keep = subset_indices(len(images), limit)
            images, labels = images[keep], labels[keep]
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    x = (x - 0.5) / 0.5
    if spec.positive:
        y = torch.from_numpy(np.isin(labels[:, 0], spec.positive).astype(np.int64))
    elif spec.multilabel:
        y = torch.from_numpy(labels.astype(np.float32))
    else:
        y = torch.from_numpy(labels[:, 0].astype(np.int64))
    return TensorDataset(x, y)


def augment_batch(images: torch.Tensor, generator: torch.Generator, *, shift: int = 2,
                  flip: bool = True) -> torch.Tensor:
    """A randomly shifted (and mirrored) copy of a training batch.

    Each image is padded by ``shift`` pixels (edge values repeated), cropped back to its size at
    a random offset in ``[-shift, shift]`` on both axes, and with probability 1/2 mirrored left
    to right. All draws come from ``generator``, so a run that saves and restores the generator
    resumes with the same augmented batches.

    Args:
        images: ``(N, C, H, W)`` batch.
        generator: Source of the random offsets and flips.
        shift: Largest shift in pixels (0: no shift).
        flip: Whether to mirror half of the images.

    Returns:
        A new tensor of the same shape; ``images`` is not modified.
    """
    n, _, height, width = images.shape
    out = images
    if shift > 0:
        padded = torch.nn.functional.pad(images, (shift,) * 4, mode="replicate")
        offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator).tolist()
        out = torch.stack([padded[i, :, dy : dy + height, dx : dx + width]
                           for i, (dy, dx) in enumerate(offsets)])
    if flip:
        mirror = torch.rand(n, generator=generator) < 0.5
        out = torch.where(mirror[:, None, None, None], out.flip(-1), out)
    return out if out is not images else images.clone()
