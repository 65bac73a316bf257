"""A monotonic timer queue for the single-threaded service loop."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any

import tenacity


def backoff_delay(wait: tenacity.wait.wait_base, attempt: int) -> float:
    """Seconds a tenacity wait strategy gives before attempt ``attempt`` (1-based), for
    retries we schedule on our own timers instead of sleeping in tenacity's loop."""
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = attempt
    return float(wait(state))


class TimerQueue:
    """Callbacks due at monotonic deadlines; the loop sleeps until ``next_delay``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Callable[[], Any]]] = []
        self._seq = itertools.count()

    def call_later(self, delay: float, callback: Callable[[], Any]) -> None:
        heapq.heappush(self._heap, (self.clock() + max(0.0, delay), next(self._seq), callback))

    def next_delay(self, cap: float) -> float:
        if not self._heap:
            return cap
        return max(0.0, min(cap, self._heap[0][0] - self.clock()))

    def run_due(self) -> int:
        now = self.clock()
        ran = 0
        while self._heap and self._heap[0][0] <= now:
            _, _, callback = heapq.heappop(self._heap)
            callback()
            ran += 1
        return ran

    def __len__(self) -> int:
        return len(self._heap)
