"""The network loop: one thread that drives every link's socket.

Each turn: let each link tend itself (keepalive, reconnect, close), wait in ``select`` on
the sockets that may be read (not the input link's while its window is full: that is the
flow control) and the ones paho has something to write on, then write, then read. Other
threads (the service publishing and acking, the window opening) wake it through a socket
pair. One thread for both links: each input costs fewer thread switches than a paho thread
per link would. The service loop may write a link itself at the end of a batch, when this
thread is not at it (``Link.writes_batched``).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from typing import Any

from .link import MISC_INTERVAL, Link

log = logging.getLogger(__name__)


class NetworkLoop:
    """Runs ``turn`` in a thread of its own between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self.links: list[Link] = []
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, link: Link) -> None:
        self.links.append(link)

    def wake(self) -> None:
        """Make the loop look around now (any thread). Wake-ups not yet seen coalesce."""
        wake_w = self._wake_w
        if wake_w is not None:
            with contextlib.suppress(OSError):  # full: one is pending anyway; closed: stopped
                wake_w.send(b"\0")

    def start(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(
            target=self._run, args=(self._wake_r,), name="mqtt-network", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def _run(self, wake_r: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                self.turn(wake_r, MISC_INTERVAL)
            except Exception:  # a bug must not silently stop all traffic
                log.exception("network loop: unexpected error, going on")
                self._stopping.wait(0.1)

    def turn(self, wake_r: socket.socket, max_wait: float) -> None:
        """Tend, wait up to ``max_wait`` for something to do (or a wake-up on ``wake_r``),
        write, read."""
        now = time.monotonic()
        deadline = now + max_wait
        rlist: list[Any] = [wake_r]
        wlist: list[Any] = []
        owner: dict[Any, Link] = {}
        to_read: list[Link] = []  # readable, or holding bytes select cannot see (SSL, read-ahead)
        for link in self.links:
            come_back = link.tend(now)
            if come_back is not None:
                deadline = min(deadline, come_back)
            sock = link.socket()
            if sock is None:
                continue
            owner[sock] = link
            if link.wants_read():
                rlist.append(sock)
                if link.buffered():
                    to_read.append(link)
            if link.client.want_write():
                wlist.append(sock)
        timeout = 0.0 if to_read else max(0.0, deadline - now)
        try:
            readable, writable, _x = select.select(rlist, wlist, [], timeout)
        except (ValueError, OSError):
            # The service loop, writing a batch, found a link lost and paho closed its
            # socket after we took it: the next turn tends the link (reconnects).
            return
        to_write = [owner[sock] for sock in writable]
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                wake_r.recv(4096)
            # Woken for a publish or an ack: write it in this turn, not after another
            # select (a socket is nearly always writable; paho keeps what it could not
            # send). That second turn was a good part of a query's reply time.
            to_write += [
                link for link in owner.values()
                if link not in to_write and link.client.want_write()
            ]  # fmt: skip
        # Writes first: acks and publishes the service is waiting to see go out.
        for link in to_write:
            link.write()
        for sock in readable:
            if sock is not wake_r and owner[sock] not in to_read:
                to_read.append(owner[sock])
        for link in to_read:
            if link.socket() is not None:  # a write may have closed it
                link.read()
