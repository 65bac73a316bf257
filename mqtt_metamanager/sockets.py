"""What the package does to the sockets paho opens: no Nagle, reading ahead, and a clean
close."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from typing import Any

RECV_CHUNK = 65536
DRAIN_CHUNK = 65536


class _Ahead:
    """What a read-ahead socket took from the kernel and how much of it was handed out."""

    __slots__ = ("buf", "pos")

    def __init__(self) -> None:
        self.buf = b""
        self.pos = 0


_AHEAD: dict[socket.socket, _Ahead] = {}


def set_nodelay(sock: Any) -> None:
    """Nagle plus delayed ACK costs ~40 ms per request/reply; paho leaves Nagle on."""
    # Not every socket-like object paho may hand us is TCP (websockets, test socket pairs).
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class ReadAheadSocket(socket.socket):
    """A TCP socket whose ``recv`` reads up to ``RECV_CHUNK`` bytes from the kernel at once.

    paho reads each packet with three or more ``recv`` calls (the command byte, each
    remaining-length byte, the body), each a system call that gives up and retakes the
    GIL; under a burst (an input and two PUBACKs per insert, ten calls) that was the
    largest cost of the network thread (docs/performance.md). This serves them from one
    chunk. Like an SSL socket it can hold bytes ``select`` no longer sees; ``pending()``
    says how many, and the network loop (as paho's own loop does for SSL) reads those
    without waiting.

    ``read_ahead`` turns the socket paho opened into one (``on_socket_open``): a class
    change, the layout is the same (no slots added), so the state lives in ``_AHEAD``.
    """

    __slots__ = ()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        ahead = _AHEAD.get(self)
        if ahead is None or flags:
            return super().recv(bufsize, flags)
        buf, pos = ahead.buf, ahead.pos
        if pos >= len(buf):
            buf, pos = super().recv(RECV_CHUNK), 0  # BlockingIOError when nothing is there
            ahead.buf = buf
        end = pos + bufsize
        ahead.pos = end
        return buf[pos:end] if pos or end < len(buf) else buf

    def pending(self) -> int:
        ahead = _AHEAD.get(self)
        return max(0, len(ahead.buf) - ahead.pos) if ahead else 0

    def close(self) -> None:
        _AHEAD.pop(self, None)
        super().close()


def read_ahead(sock: Any) -> Any:
    """Make ``sock`` read ahead if it is a plain TCP socket (an SSL socket reads whole
    records already; anything else is left alone)."""
    if type(sock) is socket.socket:
        sock.__class__ = ReadAheadSocket
        _AHEAD[sock] = _Ahead()
    return sock


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
