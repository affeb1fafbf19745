"""Errors a user can cause. The CLI prints their message on one line and exits non-zero."""

from __future__ import annotations

__all__ = [
    "HQCNNError",
    "DataError",
    "CheckpointError",
    "BackendError",
    "ConfigError",
    "DivergedError",
    "first_line",
]


class HQCNNError(Exception):
    """Base class of every error caused by input (files, options, accounts), not by a bug."""


class DataError(HQCNNError):
    """A dataset is unknown, missing, corrupt or not what its metadata says."""


class CheckpointError(HQCNNError):
    """A checkpoint is missing, unreadable, or belongs to another model or task."""


class BackendError(HQCNNError):
    """A backend profile is invalid, or its device or service cannot be used."""


class ConfigError(HQCNNError):
    """An option value is out of range or inconsistent with the others."""


class DivergedError(ConfigError):
    """A model's numbers are no longer finite: its training diverged (e.g. too high a rate)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none), for one-line
    errors built on top of a library's multi-line ones."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
