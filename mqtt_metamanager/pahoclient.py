"""paho's client, adjusted for the service: buffered socket reads, one wake-up per write
pass, flow control of the input link (``Window``) and a disconnect that does not reset.

These override private paho 2.2 methods (``_sock_recv``, ``loop_read``, ``_loop``,
``_packet_queue``, ``_sock_close``); pyproject pins paho to 2.2.x for that reason, and an
upgrade needs the fault and bench tiers run again (docs/performance.md says why each is here).
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, _ConnectionState

RECV_CHUNK = 65536
# How long paho's input thread waits for a free slot in the window before it looks
# around (writes our acks and pings, checks the keepalive) and waits again.
PAUSE_POLL = 0.05
# How long a clean disconnect waits for the broker to close its side (see
# FlowControlledClient._sock_close).
CLOSE_DRAIN = 2.0


def set_nodelay(sock: Any) -> None:
    """Nagle plus delayed ACK costs ~40 ms per request/reply; paho leaves Nagle on."""
    # Not every socket-like object paho may hand us is TCP (websockets, test socket pairs).
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class FlowControlledClient(mqtt.Client):
    """paho's client reading the socket in large chunks.

    paho reads each packet with three or more ``recv`` calls (the command byte, each
    remaining-length byte, the body); every call releases and retakes the GIL, which under
    a burst was the largest cost in the process (docs/performance.md). Here one ``recv`` of
    up to ``RECV_CHUNK`` bytes feeds many packets; paho's packet state machine is unchanged.
    """

    _rsock: Any = None
    _rbuf = b""
    _rpos = 0
    window: Window | None = None  # the input link's flow control; None: read freely

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake_lock = threading.Lock()
        self._wake_pending = False

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: mqtt.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        # paho wakes its network thread with a byte on its socket pair for every packet
        # queued (each publish, each ack): a syscall and a thread switch each. One wake-up
        # is enough until the thread starts writing (``loop_write`` clears the flag before
        # it takes packets, so a packet queued after that sends a new one).
        if self._thread is None or self._sockpairW is None:
            return super()._packet_queue(command, packet, mid, qos, info)
        out = {
            "command": command,
            "mid": mid,
            "qos": qos,
            "pos": 0,
            "to_process": len(packet),
            "packet": packet,
            "info": info,
        }
        with self._wake_lock:
            self._out_packet.append(out)  # type: ignore[arg-type]
            if self._wake_pending:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            self._wake_pending = True
        with contextlib.suppress(BlockingIOError):
            self._sockpairW.send(b"0")
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def loop_write(self) -> MQTTErrorCode:
        with self._wake_lock:
            self._wake_pending = False
        return super().loop_write()

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rsock is not self._sock:  # a new connection: nothing of the old one is kept
            self._rsock, self._rbuf, self._rpos = self._sock, b"", 0
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            buf = super()._sock_recv(RECV_CHUNK)  # BlockingIOError when nothing is there
            self._rbuf, pos = buf, 0
        end = pos + bufsize
        self._rpos = end
        return buf[pos:end] if pos or end < len(buf) else buf

    def _buffered(self) -> bool:
        return self._sock is not None and self._rsock is self._sock and self._rpos < len(self._rbuf)

    def _sock_close(self) -> None:
        # paho closes the socket right after writing our DISCONNECT. If unread bytes sit in
        # the receive buffer then (the input link stops reading while its window is full, so
        # under a burst they always do), the kernel answers close() with a RST, and the
        # broker's kernel drops what it had not yet read: our last acks and the DISCONNECT.
        # Those inputs, already applied, would come again. So on a disconnect we asked for:
        # half-close (a FIN behind the acks and the DISCONNECT), read and drop whatever the
        # broker still sends (unacked inputs, which it keeps for the session), until it
        # closes its side, then close.
        sock = self._sock
        if sock is not None and self._state == _ConnectionState.MQTT_CS_DISCONNECTING:
            drain_until_closed(sock, CLOSE_DRAIN)
        super()._sock_close()

    def _loop(self, timeout: float = 1.0) -> MQTTErrorCode:
        # Bytes left in the buffer while the window was full are invisible to select():
        # parse them first once there is room, and poll while some remain.
        if self._buffered():
            window = self.window
            if window is None or window.is_open() or window.wait(PAUSE_POLL):
                rc = self.loop_read()
                if rc or self._sock is None:
                    return rc
            if self._buffered():
                timeout = min(timeout, PAUSE_POLL)
        return super()._loop(timeout)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        # paho stops after a number of packets and then waits in select(), which knows
        # nothing of bytes already read into the buffer: keep going until it is empty.
        # With a window, no packet is read while it is full (the link only receives, so
        # paho reads one packet per call): the rest stays in the buffer or in the socket.
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        while True:
            window = self.window
            if window is not None and not window.is_open() and not window.wait(PAUSE_POLL):
                return rc  # full: let paho write acks and pings, then come back
            rc = super().loop_read(max_packets)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not self._buffered():
                return rc


class Window:
    """Flow control of the input link: at most ``size`` inputs held at once.

    An input is held from the moment paho reads it (``take``, paho's thread) until the
    service is done with it (``release``, after its ack). Once full, the window opens again
    when half of it is free (a batch's acks), not at every ack: one wake-up of paho's
    thread per batch instead of one per input. A new connection starts empty: inputs of
    an earlier one are never acked on it (see ``Transport.ack``).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.low = size // 2
        self.held = 0
        self.max_held = 0  # the high-water mark, for metrics and tests
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()

    def take(self) -> None:
        with self._lock:
            self.held += 1
            self.max_held = max(self.max_held, self.held)
            if self.held >= self.size:
                self._open.clear()

    def release(self) -> None:
        with self._lock:
            self.held = max(0, self.held - 1)
            if self.held <= self.low:
                self._open.set()

    def reset(self) -> None:
        with self._lock:
            self.held = 0
            self._open.set()

    def is_open(self) -> bool:
        return self._open.is_set()

    def wait(self, timeout: float) -> bool:
        """True when another input may be read (waits up to ``timeout`` for a slot)."""
        return self._open.wait(timeout)


def drain_until_closed(sock: Any, timeout: float) -> None:
    """Half-close ``sock`` and read until the peer closes (or ``timeout``), dropping the data."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(OSError, ValueError):
        sock.shutdown(socket.SHUT_WR)  # on TLS: leaves the raw socket, fine for dropping bytes
        while (left := deadline - time.monotonic()) > 0:
            readable, _w, _x = select.select([sock], [], [], left)
            if not readable:
                return
            try:
                if not sock.recv(RECV_CHUNK):
                    return
            except (BlockingIOError, ssl.SSLWantReadError):
                continue
