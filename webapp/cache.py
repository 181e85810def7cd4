"""A small thread-safe LRU map with an optional time to live, kept per app in ``app.extensions``."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from flask import current_app


class Lru:
    """Least-recently-used map of at most ``size`` entries; entries expire after ``ttl`` seconds."""

    def __init__(self, size: int, ttl: float | None = None):
        self._size, self._ttl = size, ttl
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        """The value, or None when absent or expired."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if self._ttl is not None and time.monotonic() > item[0]:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: Any, value: Any) -> None:
        """Store a value, evicting the least recently used entry when full."""
        expires = time.monotonic() + self._ttl if self._ttl is not None else 0.0
        with self._lock:
            self._items[key] = (expires, value)
            self._items.move_to_end(key)
            if len(self._items) > self._size:
                self._items.popitem(last=False)


def app_cache(name: str, size: int, ttl: float | None = None) -> Lru:
    """The current app's cache of that name, made on first use."""
    extensions = current_app.extensions
    cache = extensions.get(name)
    if cache is None:
        cache = extensions.setdefault(name, Lru(size, ttl))
    return cache
