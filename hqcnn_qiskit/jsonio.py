"""Strict JSON for files and ``--json`` output (no numpy, no torch: the CLI imports it early)."""

from __future__ import annotations

import json
import math

__all__ = ["to_json"]


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
