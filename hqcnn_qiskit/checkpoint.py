"""Checkpoints: state dicts, optimizer, RNG states and the full config, written atomically and
read with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError
from .jsonio import to_json

__all__ = [
    "seed_everything",
    "rng_state",
    "set_rng_state",
    "atomic_write",
    "probe_writable",
    "write_json",
    "save_checkpoint",
    "load_checkpoint",
    "file_sha256",
]

FORMAT = "hqcnn-qiskit/1"


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file (a checkpoint's identity for journals and caches), read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch in one call."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python, NumPy and torch RNG states in types ``weights_only`` loading accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def probe_writable(folder: str | os.PathLike) -> None:
    """Check that files can be created in ``folder`` (made, with its missing parents, if need
    be) by creating and deleting one; the folders made for the test are removed again, so a
    command that fails later leaves nothing behind.

    Raises:
        OSError: The folder cannot be made or written (read-only, no permission, a file in the
            way); callers turn it into their one-line error.
    """
    folder = Path(folder)
    made = []  # the folder and the parents it lacks, deepest first
    missing = folder
    while not missing.exists() and missing != missing.parent:
        made.append(missing)
        missing = missing.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    finally:
        for path in made:
            try:
                path.rmdir()
            except OSError:  # another process put something there meanwhile: keep it
                break


def _umask() -> int:
    """The process's file-creation mask (read from /proc where it can be, so that no other
    thread ever sees it changed)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> None:
    """Create ``path`` through ``write(handle)`` on a binary temporary file in the same folder,
    flushed to disk and renamed over ``path``: a crash leaves the old file or the new one, never
    half of one, and no temporary file. The file gets the permissions of any new file (0666
    less the umask), not the owner-only ones of a temporary file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.chmod(tmp, 0o666 & ~_umask())
        except OSError:  # a file system without modes (FAT, some network mounts)
            pass
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data) -> None:
    """``data`` as indented strict JSON (:func:`to_json`), written with :func:`atomic_write`."""
    text = to_json(data, indent=2) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically (see :func:`atomic_write`)."""
    payload = {"format": FORMAT, **payload}
    atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint safely (no arbitrary code: ``weights_only=True``).

    Raises:
        CheckpointError: Missing, unreadable, or not an hqcnn-qiskit checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass a checkpoint in it, e.g. {path / 'best.pt'}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors alike
        # torch's own text can advise loading unsafely; we never do, so it is not repeated
        raise CheckpointError(f"{path} is not a readable checkpoint (damaged, truncated or "
                              f"another kind of file; {type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an hqcnn-qiskit checkpoint")
    return payload
