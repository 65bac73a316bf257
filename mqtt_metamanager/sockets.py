"""Socket options and the clean close, for every paho client in the package."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from typing import Any

DRAIN_CHUNK = 65536


def set_nodelay(sock: Any) -> None:
    """Nagle plus delayed ACK costs ~40 ms per request/reply; paho leaves Nagle on."""
    # Not every socket-like object paho may hand us is TCP (websockets, test socket pairs).
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def drain_until_closed(sock: Any, timeout: float) -> None:
    """Half-close ``sock`` and read until the peer closes (or ``timeout``), dropping the data.

    Closing a socket with unread bytes in its receive buffer makes the kernel send a RST,
    and the peer's kernel then drops what it had not read yet: our last bytes. A FIN behind
    them, and reading until the peer closes its side, delivers them.
    """
    deadline = time.monotonic() + timeout
    with contextlib.suppress(OSError, ValueError):
        sock.shutdown(socket.SHUT_WR)  # on TLS: leaves the raw socket, fine for dropping bytes
        while (left := deadline - time.monotonic()) > 0:
            readable, _w, _x = select.select([sock], [], [], left)
            if not readable:
                return
            try:
                if not sock.recv(DRAIN_CHUNK):
                    return
            except (BlockingIOError, ssl.SSLWantReadError):
                continue
