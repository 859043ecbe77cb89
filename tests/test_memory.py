"""Arrow on the system allocator, and handing freed heap memory back to the system."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterator

import pyarrow as pa
import pytest

import ciolake.memory
from ciolake.memory import return_free_memory, use_system_allocator

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


def test_return_free_memory_runs_and_returns_none() -> None:
    garbage = [bytes(4096) for _ in range(256)]
    del garbage
    assert returned(return_free_memory) is None


@pytest.mark.skipif(not ON_GLIBC, reason="malloc_trim is a glibc function")
def test_malloc_trim_is_found_on_glibc() -> None:
    trim = ciolake.memory._malloc_trim()
    assert trim is not None
    assert trim(0) in {0, 1}


def test_return_free_memory_trims_the_whole_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_trim(pad: int) -> int:
        calls.append(pad)
        return 1

    monkeypatch.setattr(ciolake.memory, "_malloc_trim", lambda: fake_trim)
    assert returned(return_free_memory) is None
    assert calls == [0]


def test_return_free_memory_does_nothing_without_malloc_trim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ciolake.memory, "_malloc_trim", lambda: None)
    assert returned(return_free_memory) is None


def _allocator_setting(environment: dict[str, str]) -> str:
    code = "import os, ciolake; print(os.environ.get('_RJEM_MALLOC_CONF'))"
    return subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_delta_rs_is_told_to_hand_freed_memory_back_at_once() -> None:
    environment = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}

    setting = _allocator_setting(environment)

    assert setting == "dirty_decay_ms:0,muzzy_decay_ms:0"


def test_an_allocator_setting_of_the_users_own_wins() -> None:
    environment = {**os.environ, "_RJEM_MALLOC_CONF": "narenas:2"}

    assert _allocator_setting(environment) == "narenas:2"
