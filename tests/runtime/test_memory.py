"""Arrow on the system allocator, and handing freed heap memory back to the system."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterator

import pyarrow as pa
import pytest

import ciolake.runtime.memory
from ciolake.runtime.memory import return_free_memory, use_system_allocator

ON_GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

PoolSwitch = Callable[[str], None]


def returned(function: Callable[[], object]) -> object:
    """What ``function`` returns (for functions typed as returning None)."""
    return function()


@pytest.fixture
def switch_pool() -> Iterator[PoolSwitch]:
    """Switches Arrow's default pool to a named backend; the previous pool is restored."""
    previous = pa.default_memory_pool()

    def switch(backend: str) -> None:
        pools: dict[str, Callable[[], pa.MemoryPool]] = {
            "mimalloc": pa.mimalloc_memory_pool,
            "jemalloc": pa.jemalloc_memory_pool,
            "system": pa.system_memory_pool,
        }
        pa.set_memory_pool(pools[backend]())

    yield switch
    pa.set_memory_pool(previous)


def test_use_system_allocator_makes_arrow_allocate_with_malloc(switch_pool: PoolSwitch) -> None:
    others = [b for b in pa.supported_memory_backends() if b != "system"]
    if others:
        switch_pool(others[0])
        assert pa.default_memory_pool().backend_name == others[0]

    use_system_allocator()

    assert pa.default_memory_pool().backend_name == "system"
    system = pa.system_memory_pool()
    before = system.bytes_allocated()
    values = pa.array(range(100_000), pa.int64())
    assert system.bytes_allocated() - before >= 100_000 * 8
    del values
    assert system.bytes_allocated() - before < 100_000 * 8


# Frees 200 MiB of 4 KiB blocks held below a block still in use (so the heap cannot shrink from
# its top), optionally returns free memory, and prints how much resident memory that left.
_FREED_BELOW_A_LIVE_BLOCK = """
import ctypes, sys
from ciolake.runtime.memory import return_free_memory
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def anon_mib():
    line = next(l for l in open("/proc/self/status") if l.startswith("RssAnon"))
    return int(line.split()[1]) // 1024
before = anon_mib()
blocks = [libc.malloc(4096) for _ in range(51_200)]
for block in blocks:
    ctypes.memset(block, 1, 4096)
live = libc.malloc(4096)
for block in blocks:
    libc.free(block)
if sys.argv[1] == "returned":
    return_free_memory()
print(anon_mib() - before)
"""


@pytest.mark.skipif(not ON_GLIBC, reason="malloc_trim is a glibc function")
def test_return_free_memory_hands_freed_heap_pages_back() -> None:
    kept = int(_printed(_FREED_BELOW_A_LIVE_BLOCK, dict(os.environ), "kept"))
    after_return = int(_printed(_FREED_BELOW_A_LIVE_BLOCK, dict(os.environ), "returned"))

    assert kept >= 150  # glibc alone keeps the freed pages resident
    assert after_return < 50


@pytest.mark.skipif(not ON_GLIBC, reason="malloc_trim is a glibc function")
def test_malloc_trim_is_found_on_glibc() -> None:
    trim = ciolake.runtime.memory._malloc_trim()
    assert trim is not None
    assert trim(0) in {0, 1}


def test_return_free_memory_trims_the_whole_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_trim(pad: int) -> int:
        calls.append(pad)
        return 1

    monkeypatch.setattr(ciolake.runtime.memory, "_malloc_trim", lambda: fake_trim)
    assert returned(return_free_memory) is None
    assert calls == [0]


def test_return_free_memory_does_nothing_without_malloc_trim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ciolake.runtime.memory, "_malloc_trim", lambda: None)
    assert returned(return_free_memory) is None


def _printed(code: str, environment: dict[str, str], *args: str) -> str:
    """What Python ``code`` prints, run in a fresh interpreter with ``environment``."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _allocator_setting(environment: dict[str, str]) -> str:
    return _printed("import os, ciolake; print(os.environ.get('_RJEM_MALLOC_CONF'))", environment)


def test_delta_rs_is_told_to_hand_freed_memory_back_at_once() -> None:
    environment = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}

    setting = _allocator_setting(environment)

    assert setting == "dirty_decay_ms:0,muzzy_decay_ms:0"


def test_an_allocator_setting_of_the_users_own_wins() -> None:
    environment = {**os.environ, "_RJEM_MALLOC_CONF": "narenas:2"}

    assert _allocator_setting(environment) == "narenas:2"


def _arrow_pool(environment: dict[str, str]) -> str:
    code = "import ciolake, pyarrow; print(pyarrow.default_memory_pool().backend_name)"
    return _printed(code, environment)


def test_arrow_allocates_with_malloc_in_a_process_that_imports_ciolake_first() -> None:
    environment = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}

    assert _arrow_pool(environment) == "system"


def test_an_arrow_pool_of_the_users_own_wins() -> None:
    environment = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}

    assert _arrow_pool(environment) == "mimalloc"


# Frees an 8 MiB block (glibc then raises its mmap threshold to 8 MiB), allocates 1 MiB, and
# prints whether that block came from the heap.
_BLOCK_AFTER_A_LARGER_ONE = """
import ctypes, sys
from ciolake.runtime.memory import keep_large_blocks_apart
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "kept-apart":
    assert keep_large_blocks_apart()
libc.free(libc.malloc(8 << 20))
block = libc.malloc(1 << 20)
heap = next(line for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]"))
low, high = (int(bound, 16) for bound in heap.split()[0].split("-"))
print("heap" if low <= block < high else "own mapping")
"""


@pytest.mark.skipif(not ON_GLIBC, reason="mallopt is a glibc function")
@pytest.mark.parametrize(
    ("mode", "where"), [("kept-apart", "own mapping"), ("glibc-default", "heap")]
)
def test_large_blocks_get_their_own_mapping_once_kept_apart(mode: str, where: str) -> None:
    assert _printed(_BLOCK_AFTER_A_LARGER_ONE, dict(os.environ), mode) == where
