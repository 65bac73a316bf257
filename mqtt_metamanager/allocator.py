"""glibc's malloc, set for a service that makes megabyte replies among small objects.

A namespace list reply is ~1.5 MB. glibc serves a block that big with ``mmap``, but on its
``free`` raises its mmap threshold to that size (the dynamic threshold), so every later
reply comes from the heap, between small long-lived objects, and the heap fragments: the
RSS creeps though nothing leaks (docs/performance.md, "Where the memory went"). A fixed
threshold keeps big blocks mmapped (unmapped on free); fewer arenas keep the free space of
the service's few threads in fewer places; ``malloc_trim`` once a minute gives back the
free pages left inside the heap.

All of it through ``ctypes`` on the C library the process already has; where that is not
glibc (no ``mallopt``), every call here does nothing and says so.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from typing import Any

from .config import MemoryConfig

log = logging.getLogger(__name__)

# glibc's malloc.h parameter numbers for mallopt.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

# A burst of at least this much input, worked off, gives the heap's free pages back
# (``TrimAfterBursts``): one trim (0.2-1.6 ms) per 256 KiB is under 1 µs per 1 KiB input.
TRIM_AFTER_BYTES = 256 * 1024


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (2.33+): every field a size_t."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes the heaps hold from the system (not mmapped blocks)
            "ordblks",
            "smblks",
            "hblks",  # mmapped blocks
            "hblkhd",  # bytes in mmapped blocks
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use in the heaps
            "fordblks",  # bytes free in the heaps: what fragmentation keeps
            "keepcost",
        )
    ]


@functools.cache
def c_library() -> Any:
    """The C library the process runs on (its own symbols)."""
    return ctypes.CDLL(None)


def is_glibc(libc: Any) -> bool:
    return hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")


def tune(config: MemoryConfig, libc: Any = None) -> bool:
    """Set the mmap threshold and the arena bound (``memory.*``); call it before the heavy
    allocation starts. Returns False where the C library is not glibc (nothing done)."""
    libc = c_library() if libc is None else libc
    if not is_glibc(libc):
        log.info("memory: the C library has no mallopt (not glibc): allocator left as it is")
        return False
    settings = (
        ("memory.malloc_mmap_threshold", M_MMAP_THRESHOLD, config.malloc_mmap_threshold),
        ("memory.malloc_arena_max", M_ARENA_MAX, config.malloc_arena_max),
    )
    for key, param, value in settings:
        if value == 0:
            continue  # glibc's own choice
        if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) != 1:
            log.warning("memory: glibc refused %s=%d", key, value)
        else:
            log.info("memory: %s=%d", key, value)
    return True


def trim(libc: Any = None) -> bool:
    """Give the free pages inside the heaps back to the system (``malloc_trim(0)``);
    False where the C library is not glibc."""
    libc = c_library() if libc is None else libc
    if not is_glibc(libc):
        return False
    libc.malloc_trim(ctypes.c_size_t(0))
    return True


def figures(libc: Any = None) -> dict[str, int]:
    """glibc's own account (``mallinfo2``): bytes the heaps hold, bytes free in them,
    bytes in mmapped blocks. Empty where there is no ``mallinfo2`` (not glibc 2.33+)."""
    libc = c_library() if libc is None else libc
    if not hasattr(libc, "mallinfo2"):
        return {}
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return {
        "malloc_heap_bytes": int(info.arena),
        "malloc_free_bytes": int(info.fordblks),
        "malloc_mmapped_bytes": int(info.hblkhd),
    }


class TrimAfterBursts:
    """Gives the heap's free pages back once a burst of input has been worked off.

    A burst's held inputs and their answers leave free pages inside the heap, resident until
    the minute's trim (``Upkeep``) and under whatever comes next: a 10,000-status sync
    right after the bursts that stored them peaked ~1.5 MB higher for them (the scale
    bench, docs/performance.md). Not while more input waits (the pages would be taken again
    at once), and only after ``after_bytes`` of input since the last trim, so a steady
    trickle of small inputs does not pay for a trim each.
    """

    def __init__(self, *, after_bytes: int = TRIM_AFTER_BYTES, libc: Any = None) -> None:
        self.after_bytes = after_bytes
        self.libc = libc
        self._worked = 0

    def worked(self, nbytes: int, *, backlog: bool) -> bool:
        """``nbytes`` of input handled; ``backlog``: more input is waiting. True if it
        trimmed now."""
        self._worked += nbytes
        if backlog or self._worked < self.after_bytes:
            return False
        self._worked = 0
        return trim(self.libc)
