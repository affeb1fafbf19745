"""Type checks for the configuration dataclasses, so that a Python caller's mistake is one
:class:`~hqcnn_qiskit.errors.ConfigError` up front and not a numpy or torch error in the middle
of a run, and so that what reaches a checkpoint is a plain Python value.

Checkpoints are read with ``torch.load(weights_only=True)``, which refuses numpy scalars and
arbitrary objects: a ``np.float64`` learning rate from a sweep used to train a whole run whose
checkpoints could then not be read. Each function returns the value as the plain type.
"""

from __future__ import annotations

import math
import numbers
import os

from .errors import ConfigError

__all__ = ["integer", "real", "boolean", "text", "png_file"]


def integer(value, name: str, *, low: int | None = None) -> int:
    """``value`` as an ``int`` (Python or numpy integers; not bools, floats or strings).

    Raises:
        ConfigError: Not a whole number, or below ``low``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ConfigError(f"{name} must be at least {low}, got {value}")
    return value


def real(value, name: str, *, positive: bool = False, non_negative: bool = False) -> float:
    """``value`` as a finite ``float`` (Python or numpy numbers; not bools or strings).

    Raises:
        ConfigError: Not a number, not finite, or not positive / negative where that is asked.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    if non_negative and value < 0:
        raise ConfigError(f"{name} must be zero or positive, got {value}")
    return value


def boolean(value, name: str) -> bool:
    """``value`` as a ``bool``: Python or numpy booleans, or the integers 0 and 1 (which
    checkpoints written before these checks may hold); ``"no"`` is not false.

    Raises:
        ConfigError: Not a boolean.
    """
    kind = type(value)
    if isinstance(value, bool) or (kind.__module__ == "numpy" and kind.__name__ in ("bool",
                                                                                  "bool_")):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"{name} must be True or False, got {value!r}")


def text(value, name: str, *, path: bool = False) -> str:
    """``value`` as a ``str``; with ``path``, an ``os.PathLike`` is accepted too.

    Raises:
        ConfigError: Neither.
    """
    if path and isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, str):
        return value
    kind = "a name or a path" if path else "a string"
    raise ConfigError(f"{name} must be {kind}, got {value!r}")


def png_file(path: str | os.PathLike) -> str:
    """A PNG file that can be written: checked before the work whose result it will show.

    Raises:
        ConfigError: ``path`` does not end in ``.png``, is a folder, or its folder does not
            exist or cannot be written.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    if not path.lower().endswith(".png"):
        raise ConfigError(f"plots are written as PNG: {path} must end in .png")
    if os.path.isdir(path):
        raise ConfigError(f"{path} is a folder, not a file")
    if not os.path.isdir(folder):
        raise ConfigError(f"cannot write {path}: {folder} is not an existing folder")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"cannot write {path}: folder {folder} is not writable")
    return path
