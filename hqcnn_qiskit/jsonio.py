"""Strict JSON for files and ``--json`` output (no numpy, no torch: the CLI imports it early)."""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["to_json", "read_json", "METRIC_KEYS"]

#: Keys whose ``null`` is an undefined metric (written for NaN by :func:`to_json`).
METRIC_KEYS = frozenset({"acc", "auc", "val_acc", "val_auc"})


def to_json(data, **options) -> str:
    """``data`` as strict JSON: a float that is not finite (an undefined AUC) becomes ``null``,
    since ``NaN`` is not JSON and strict parsers (JavaScript's, for one) reject it.

    Args:
        data: Dicts, lists, tuples, strings, numbers, booleans and None.
        options: Passed on to :func:`json.dumps` (e.g. ``indent``).

    Returns:
        The JSON text.
    """
    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(item) for item in value]
        return value

    return json.dumps(finite(data), allow_nan=False, **options)


def read_json(path) -> object:
    """A JSON file written with :func:`to_json`, its undefined metrics (``null`` under one of
    :data:`METRIC_KEYS`) back as NaN, as the code that wrote them had them."""
    def nan_metrics(obj: dict) -> dict:
        return {k: math.nan if v is None and k in METRIC_KEYS else v for k, v in obj.items()}

    return json.loads(Path(path).read_text(encoding="utf-8"), object_hook=nan_metrics)
