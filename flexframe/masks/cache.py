"""The package's one cache mechanism: a small thread-safe LRU of built masks.

Two instances serve flexframe: :data:`BLOCK_MASKS` (BlockMasks, 64 entries by default: each holds
O(blocks) integers) and :data:`DENSE_MASKS` (dense ``[q_len, kv_len]`` bool masks for the sdpa
backend, 8 entries: each holds ``q_len * kv_len`` bytes). Keys start with the mask's name, so a
re-registered mask can drop its entries (:meth:`LRUCache.clear` with a name).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from flexframe._checks import check_int


class LRUCache:
    """A thread-safe least-recently-used map with hit and miss counts.

    Keys are tuples whose first item's first item is a mask name (a spec's cache key), so that
    :meth:`clear` can drop one mask's entries.

    Example:
        >>> cache = LRUCache(maxsize=1)
        >>> cache.put((("a",), 1), "x"); cache.put((("b",), 1), "y")
        >>> cache.get((("a",), 1)) is None, cache.get((("b",), 1))
        (True, 'y')
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = check_int("maxsize", maxsize, minimum=0)
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any:
        """The value stored under ``key`` (now the most recent), or ``None``."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value`` under ``key``, evicting the least recently used beyond ``maxsize``."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            self._evict()

    def resize(self, maxsize: int) -> None:
        """Bound the cache to ``maxsize`` entries (0 keeps nothing)."""
        with self._lock:
            self.maxsize = check_int("maxsize", maxsize, minimum=0)
            self._evict()

    def _evict(self) -> None:
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def clear(self, name: str | None = None) -> None:
        """Forget every entry, or those of the mask called ``name``."""
        with self._lock:
            if name is None:
                self._data.clear()
            else:
                for key in [k for k in self._data if _name_of(k) == name]:
                    del self._data[key]

    def info(self) -> dict[str, int]:
        """Hits, misses, current size and bound."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "size": len(self),
            "maxsize": self.maxsize,
        }

    def __len__(self) -> int:
        return len(self._data)


def _name_of(key: Hashable) -> object:
    try:
        return key[0][0]  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return None


BLOCK_MASKS = LRUCache(maxsize=64)
"""BlockMasks by (spec cache key, device, block size, builder)."""
DENSE_MASKS = LRUCache(maxsize=8)
"""Dense bool masks for the sdpa backend, by (spec cache key, device) or a BlockMask's identity."""


def clear_block_mask_cache(name: str | None = None) -> None:
    """Forget cached masks (BlockMasks and dense masks): all of them, or those of one mask name.

    Example:
        >>> from flexframe import clear_block_mask_cache
        >>> clear_block_mask_cache()
    """
    BLOCK_MASKS.clear(name)
    DENSE_MASKS.clear(name)


def set_block_mask_cache_size(maxsize: int) -> None:
    """Bound the BlockMask cache to ``maxsize`` entries (default 64); 0 disables caching.

    Example:
        >>> from flexframe import set_block_mask_cache_size
        >>> set_block_mask_cache_size(64)
    """
    BLOCK_MASKS.resize(maxsize)


def block_mask_cache_info() -> dict[str, int]:
    """Hits, misses, current size and bound of the BlockMask cache.

    Example:
        >>> from flexframe import block_mask_cache_info
        >>> sorted(block_mask_cache_info())
        ['hits', 'maxsize', 'misses', 'size']
    """
    return BLOCK_MASKS.info()
