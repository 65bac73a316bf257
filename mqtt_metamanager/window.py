"""The input window: how many inputs the process may hold received and not yet acked.

mosquitto 2.0.11 stops honouring a client's Receive Maximum once the client acks while
more is queued (docs/performance.md), so the bound is kept here: while the window is full
the network loop does not read the input link's socket, TCP pushes back on the broker, and
a burst waits in the broker's session instead of in this process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Window:
    """At most ``size`` inputs held at once.

    An input is held from the moment it is read (``take``, the network thread) until the
    service is done with it (``release``, after its ack). Once full, the window opens again
    when half of it is free (a batch's acks), not at every ack: one wake-up of the network
    thread per batch instead of one per input. A new connection starts empty: inputs of an
    earlier one are never acked on it (see ``Transport.ack``).
    """

    def __init__(self, size: int, on_open: Callable[[], None] | None = None) -> None:
        if size < 1:
            raise ValueError(f"window size must be at least 1, not {size}")
        self.size = size
        self.low = size // 2
        self.held = 0
        self.max_held = 0  # the high-water mark, for metrics and tests
        self.taken = 0  # inputs read since start: the reader's sign of progress
        self.on_open = on_open  # called (outside the lock) when a full window opens again
        self._lock = threading.Lock()
        self._open = True

    def take(self) -> None:
        with self._lock:
            self.held += 1
            self.taken += 1
            self.max_held = max(self.max_held, self.held)
            if self.held >= self.size:
                self._open = False

    def release(self) -> None:
        with self._lock:
            self.held = max(0, self.held - 1)
            opened = not self._open and self.held <= self.low
            if opened:
                self._open = True
        if opened and self.on_open is not None:
            self.on_open()

    def reset(self) -> None:
        with self._lock:
            self.held = 0
            opened = not self._open
            self._open = True
        if opened and self.on_open is not None:
            self.on_open()

    def is_open(self) -> bool:
        """True when another input may be read."""
        return self._open
