"""Shared fixtures: the real MedMNIST folder and synthetic MedMNIST-format files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def real_data_root() -> Path:
    """``$HQCNN_DATA_ROOT`` or ``../shared/medmnist`` beside the repository."""
    env = os.environ.get("HQCNN_DATA_ROOT")
    return Path(env) if env else REPO.parent / "shared" / "medmnist"


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = real_data_root()
    if not (root / "breastmnist.npz").is_file():
        pytest.fail(f"real MedMNIST files are required in {root} (set HQCNN_DATA_ROOT)")
    return root


def write_synthetic(root: Path, flag: str, size: int = 28, seed: int = 0) -> Path:
    """A MedMNIST-format .npz with the official split sizes and random content."""
    from medmnist import INFO

    info = INFO[flag]
    rng = np.random.default_rng(seed)
    shape = (size, size) if info["n_channels"] == 1 else (size, size, 3)
    n_labels = len(info["label"])
    arrays = {}
    for split, n in info["n_samples"].items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n,) + shape, dtype=np.uint8)
        if info["task"].startswith("multi-label"):
            arrays[f"{split}_labels"] = rng.integers(0, 2, (n, n_labels), dtype=np.uint8)
        else:
            arrays[f"{split}_labels"] = rng.integers(0, n_labels, (n, 1), dtype=np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    path = root / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")
    np.savez(path, **arrays)
    return path
