"""Opt-in heap figures for the metrics snapshot, only when Python traces allocations.

Nothing happens unless the service was started with ``PYTHONTRACEMALLOC=1``, which
``bench --soak --tracemalloc`` does: tracing costs CPU and memory of its own, and so does
the ``tracemalloc`` module (~0.5 MB of RSS), so it is not even imported without it. Then
each metrics snapshot carries the traced heap and the source lines whose allocations grew
most since the first snapshot, to find what keeps memory (docs/performance.md).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tracemalloc

TOP = 8


class HeapWatch:
    def __init__(self) -> None:
        self._baseline: tracemalloc.Snapshot | None = None
        self._wanted = bool(os.environ.get("PYTHONTRACEMALLOC"))

    def figures(self) -> dict[str, Any]:
        """``heap_bytes``, ``heap_peak_bytes`` and ``heap_growth`` (lines), or nothing."""
        if not self._wanted:
            return {}
        import tracemalloc  # here, not at the top: see the module's docstring

        if not tracemalloc.is_tracing():
            return {}
        current, peak = tracemalloc.get_traced_memory()
        snapshot = tracemalloc.take_snapshot()
        if self._baseline is None:
            self._baseline = snapshot
        growth = snapshot.compare_to(self._baseline, "lineno")[:TOP]
        return {
            "heap_bytes": current,
            "heap_peak_bytes": peak,
            "heap_growth": [
                f"{s.traceback[0].filename.rsplit('/', 2)[-1]}:{s.traceback[0].lineno} "
                f"{s.size_diff / 1024:+.0f} KiB ({s.count_diff:+d} blocks)"
                for s in growth
            ],
        }
