"""Keeping the committer's memory to what one batch needs.

A batch is built and written, then freed; the next one is the same size. Two allocators would
keep the freed memory for themselves: Arrow's default pool (mimalloc) and glibc's malloc, which
returns freed heap pages to the system only when asked. Measured on 5,000-event batches, the
committer's resident memory settled at about 300 MiB over its start with both, and under
100 MiB once Arrow allocates with malloc and the heap is trimmed after each batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

import pyarrow as pa


def use_system_allocator() -> None:
    """Make Arrow allocate with malloc, so its freed buffers can be given back too."""
    pa.set_memory_pool(pa.system_memory_pool())


def return_free_memory() -> None:
    """Give freed heap memory back to the system (glibc's ``malloc_trim``; elsewhere nothing)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    function: Callable[[int], int] | None = getattr(ctypes.CDLL(name), "malloc_trim", None)
    return function
