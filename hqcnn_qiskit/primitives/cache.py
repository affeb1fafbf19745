"""A cache keyed on object identity: what was compiled from a circuit (or an observables array)
is kept while that object lives and is reused as long as its version (e.g. its length) holds."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["IdentityCache"]

T = TypeVar("T")


class IdentityCache(Generic[T]):
    """Values built from live objects, dropped when the object is garbage-collected.

    Keys are ``id(obj)`` checked against a weak reference, so a new object that reuses a dead
    object's id never sees the old value. Objects that cannot be weakly referenced are not
    cached (the value is built every time).
    """

    def __init__(self):
        self._entries: dict[int, tuple[weakref.ref, Hashable, T]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, obj: object, version: Hashable, build: Callable[[], T]) -> T:
        """The cached value for ``obj`` at ``version``, else ``build()`` (then cached).

        Args:
            obj: The object the value was computed from.
            version: Anything that changes when ``obj`` is mutated in a way that matters.
            build: Computes the value.

        Returns:
            The value.
        """
        key = id(obj)
        hit = self._entries.get(key)
        if hit is not None and hit[0]() is obj and hit[1] == version:
            return hit[2]
        value = build()
        entries = self._entries

        def forget(ref, key=key):
            if entries.get(key, (None,))[0] is ref:
                entries.pop(key, None)

        try:
            ref = weakref.ref(obj, forget)
        except TypeError:
            return value
        entries[key] = (ref, version, value)
        return value
