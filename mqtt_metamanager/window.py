"""The input window: how many inputs, and how many bytes of them, the process may hold
received and not yet acked.

mosquitto 2.0.11 stops honouring a client's Receive Maximum once the client acks while
more is queued (docs/performance.md), so the bound is kept here: while the window is full
the network loop does not read the input link's socket, TCP pushes back on the broker, and
a burst waits in the broker's session instead of in this process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Window:
    """At most ``size`` inputs held at once, and no more once ``max_bytes`` of payload are.

    An input is held from the moment it is read (``take``, the network thread) until the
    service is done with it (``release``, after its ack). Once full, the window opens again
    when half of it is free, in count and in bytes (a batch's acks), not at every ack: one
    wake-up of the network thread per batch instead of one per input. An input larger than
    ``max_bytes`` is still read when the window is open: it then holds the window alone. A
    new connection starts empty: inputs of an earlier one are never acked on it (see
    ``Transport.ack``).
    """

    def __init__(
        self, size: int, max_bytes: int, on_open: Callable[[], None] | None = None
    ) -> None:
        if size < 1:
            raise ValueError(f"window size must be at least 1, not {size}")
        if max_bytes < 1:
            raise ValueError(f"window bytes must be at least 1, not {max_bytes}")
        self.size = size
        self.low = size // 2
        self.max_bytes = max_bytes
        self.low_bytes = max_bytes // 2
        self.held = 0
        self.held_bytes = 0
        self.max_held = 0  # the high-water marks, for metrics and tests
        self.max_held_bytes = 0
        self.taken = 0  # inputs read since start: the reader's sign of progress
        self.on_open = on_open  # called (outside the lock) when a full window opens again
        self._lock = threading.Lock()
        self._open = True

    def take(self, size: int) -> None:
        """One input of ``size`` payload bytes was read."""
        with self._lock:
            self.held += 1
            self.held_bytes += size
            self.taken += 1
            self.max_held = max(self.max_held, self.held)
            self.max_held_bytes = max(self.max_held_bytes, self.held_bytes)
            if self.held >= self.size or self.held_bytes >= self.max_bytes:
                self._open = False

    def release(self, size: int) -> None:
        """One input of ``size`` payload bytes was acked."""
        with self._lock:
            self.held = max(0, self.held - 1)
            self.held_bytes = max(0, self.held_bytes - size)
            opened = not self._open and self.held <= self.low and self.held_bytes <= self.low_bytes
            if opened:
                self._open = True
        if opened and self.on_open is not None:
            self.on_open()

    def reset(self) -> None:
        with self._lock:
            self.held = 0
            self.held_bytes = 0
            opened = not self._open
            self._open = True
        if opened and self.on_open is not None:
            self.on_open()

    def is_open(self) -> bool:
        """True when another input may be read."""
        return self._open
