"""allocator.py: glibc's malloc set through ctypes, a no-op elsewhere."""

from __future__ import annotations

import ctypes
import platform
from typing import Any

import pytest

from mqtt_metamanager import allocator
from mqtt_metamanager.config import MemoryConfig


class RecordingLibc:
    """A C library with glibc's mallopt and malloc_trim that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def mallopt(self, param: ctypes.c_int, value: ctypes.c_int) -> int:
        self.calls.append(("mallopt", param.value, value.value))
        return 1

    def malloc_trim(self, pad: ctypes.c_size_t) -> int:
        self.calls.append(("malloc_trim", pad.value, 0))
        return 1


def test_tune_sets_the_threshold_and_the_arena_bound_from_config() -> None:
    libc = RecordingLibc()
    assert allocator.tune(MemoryConfig(), libc)
    assert libc.calls == [
        ("mallopt", allocator.M_MMAP_THRESHOLD, 128 * 1024),
        ("mallopt", allocator.M_ARENA_MAX, 2),
    ]
    assert allocator.trim(libc)
    assert libc.calls[-1] == ("malloc_trim", 0, 0)


def test_zero_leaves_glibc_its_own_choice() -> None:
    libc = RecordingLibc()
    assert allocator.tune(MemoryConfig(malloc_mmap_threshold=0, malloc_arena_max=0), libc)
    assert libc.calls == []


def test_without_glibc_nothing_is_called_and_nothing_fails(caplog: Any) -> None:
    musl_like = object()  # no mallopt, no malloc_trim, no mallinfo2
    caplog.set_level("INFO", logger="mqtt_metamanager.allocator")
    assert allocator.tune(MemoryConfig(), musl_like) is False
    assert "not glibc" in caplog.text
    assert allocator.trim(musl_like) is False
    assert allocator.figures(musl_like) == {}


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_on_glibc_the_real_calls_work_and_report_the_heap() -> None:
    assert allocator.tune(MemoryConfig())
    assert allocator.trim()
    figures = allocator.figures()
    assert set(figures) == {"malloc_heap_bytes", "malloc_free_bytes", "malloc_mmapped_bytes"}
    assert 0 < figures["malloc_free_bytes"] < figures["malloc_heap_bytes"]


def test_a_burst_worked_off_is_trimmed_once_not_while_input_waits() -> None:
    libc = RecordingLibc()
    trims = allocator.TrimAfterBursts(after_bytes=1000, libc=libc)
    assert not trims.worked(600, backlog=False)  # too little input to be worth a trim
    assert not trims.worked(600, backlog=True)  # a burst, but more of it is waiting
    assert libc.calls == []
    assert trims.worked(10, backlog=False)  # worked off
    assert libc.calls == [("malloc_trim", 0, 0)]
    assert not trims.worked(999, backlog=False)  # counted again from nothing
    assert trims.worked(1, backlog=False)
    assert len(libc.calls) == 2


def test_trimming_after_bursts_does_nothing_without_glibc() -> None:
    trims = allocator.TrimAfterBursts(after_bytes=1, libc=object())
    assert trims.worked(10, backlog=False) is False
