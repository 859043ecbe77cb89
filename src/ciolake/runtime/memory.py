"""Keeping the committer's memory to what one batch needs.

A batch is built and written, then freed; the next one is the same size. Two allocators would
keep the freed memory for themselves: Arrow's default pool (mimalloc) and glibc's malloc, which
returns freed heap pages to the system only when asked. Measured on 5,000-event batches, the
committer's resident memory settled at about 300 MiB over its start with both, and under
100 MiB once Arrow allocates with malloc and the heap is trimmed after each batch.

glibc also moves its threshold for serving a block with its own ``mmap`` up to the largest
block freed so far (up to 32 MiB), so after the first batch a batch's multi-MiB Arrow buffers
came from the heap, where they were left as fragments that trimming cannot return.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

import pyarrow as pa

_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


def use_system_allocator() -> None:
    """Make Arrow allocate with malloc, so its freed buffers can be given back too."""
    pa.set_memory_pool(pa.system_memory_pool())


def return_free_memory() -> None:
    """Give freed heap memory back to the system (glibc's ``malloc_trim``; elsewhere nothing)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def keep_large_blocks_apart(threshold_bytes: int = 128 * 1024) -> bool:
    """Make glibc serve every block of ``threshold_bytes`` or more with its own ``mmap``, so
    that freeing it hands it back to the system at once (glibc's ``mallopt``).

    A fixed threshold also turns off glibc's raising of it. Measured over 500,000 events at
    4,800/s, the server's peak RSS went from 292 to 272 MiB.

    Returns:
        True if glibc took the setting; False where there is no ``mallopt``.
    """
    mallopt = _libc_function("mallopt")
    return mallopt is not None and mallopt(_M_MMAP_THRESHOLD, threshold_bytes) == 1


def _malloc_trim() -> Callable[..., int] | None:
    return _libc_function("malloc_trim")


@functools.cache
def _libc_function(name: str) -> Callable[..., int] | None:
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    function: Callable[..., int] | None = getattr(ctypes.CDLL(library), name, None)
    return function
