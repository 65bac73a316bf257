"""One MQTT connection: a paho client driven by the network loop through paho's public
external-loop API (``socket``, ``loop_read``, ``loop_write``, ``loop_misc``, ``want_write``,
``reconnect`` and the ``on_socket_*`` callbacks).

The link knows its broker, its session and its last will, and how to keep itself up:
keepalive, reconnecting with backoff, and a clean close. What its messages mean is the
transport's business (``transport.py``); which socket to wait on is the loop's
(``netloop.py``). Everything below "network thread" runs on the loop's thread. paho's
socket is read, written and tended by one thread at a time, under the link's lock: the
network thread, or the service loop writing what its batch queued (``writes_batched``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .config import MQTTConfig, read_password
from .firstconnect import connect_with_backoff
from .sockets import drain_until_closed, read_ahead, set_nodelay
from .window import Window

log = logging.getLogger(__name__)

OFFLINE = b"offline"
# How often paho's keepalive bookkeeping (``loop_misc``) runs.
MISC_INTERVAL = 1.0
# The backoff between reconnect attempts (paho's own loop used 1 s doubling to 30 s here).
RECONNECT_MIN = 1.0
RECONNECT_MAX = 30.0
# How long a clean close waits for the broker to close its side (see ``_socket_closing``).
CLOSE_DRAIN = 2.0
# Inputs read in one turn of the loop before it writes again (our acks, pings).
READ_BURST = 64


class Link:
    """One paho client (MQTT v5) with its session, will, and its part of the network loop."""

    def __init__(
        self,
        config: MQTTConfig,
        name: str,
        *,
        client_id: str,
        clean_start: bool,
        session_expiry: int,
        will_topic: str,
        wake: Callable[[], None],
        manual_ack: bool = False,
        receive_maximum: int = 0,
        window: Window | None = None,
        tls: Any = None,
    ) -> None:
        self.config = config
        self.name = name
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.receive_maximum = receive_maximum
        self.window = window  # the input link's flow control; None: read freely
        self.wake = wake
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
        )
        # No limit in paho: the service's backpressure (MAX_UNACKED_PUBLISHES) bounds what
        # awaits a PUBACK, and with a limit paho scans every unacked publish on each PUBACK,
        # a cost quadratic in the window under a burst.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        # Both links carry the will: the process dying, or either link dropping, means
        # metamanager cannot serve, and the status says so.
        client.will_set(will_topic, OFFLINE, qos=1, retain=True)
        if config.username:
            client.username_pw_set(config.username, read_password(config))
        if tls is not None:
            client.tls_set_context(tls)
        client.on_socket_open = self._socket_opened
        client.on_socket_close = self._socket_closing
        # With this set, paho queues what the service publishes or acks and tells us, once
        # per write pass, instead of writing from the caller's thread.
        client.on_socket_register_write = self._write_wanted
        self.client = client
        # Held by whichever thread reads, writes or tends paho's socket: paho's packet
        # reading and writing are not safe from two threads at once.
        self._io = threading.Lock()
        # The thread queuing packets that it will write itself (``writes_batched``).
        self._batching = 0
        self.closed = threading.Event()  # set once a close() has finished
        self._active = False  # connected once by start(): the loop drives it from then on
        self._closing = False  # close() asked: disconnect after what is queued, no reconnect
        self._disconnect_sent = False
        self._retry_delay = 0.0
        self._retry_at: float | None = None
        self._misc_at = 0.0

    # -- the service's thread ----------------------------------------------------------------

    def start(self, attempts: int = 0, cancel: threading.Event | None = None) -> bool:
        """Connect (retrying with backoff; ``attempts`` 0 = forever), then hand the link to
        the network loop. False, without connecting, when ``cancel`` is set while the broker
        is away (a SIGTERM must not wait for a broker that never comes)."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry
        if self.receive_maximum:
            props.ReceiveMaximum = self.receive_maximum
        config = self.config

        def connect() -> None:
            self.client.connect(
                config.host,
                config.port,
                keepalive=config.keepalive,
                clean_start=self.clean_start,
                properties=props,
            )

        where = f"{config.host}:{config.port}"
        if not connect_with_backoff(connect, where, attempts, cancel or threading.Event()):
            return False
        self._active = True
        self.wake()
        return True

    def close(self, timeout: float) -> bool:
        """Disconnect cleanly and stop reconnecting: what was handed to paho before (acks,
        publishes) goes out before the DISCONNECT. Waits up to ``timeout`` for the socket
        to be closed; True if it was."""
        if not self._active:
            self.closed.set()
        self._closing = True
        self.wake()
        return self.closed.wait(timeout)

    @contextmanager
    def writes_batched(self) -> Iterator[None]:
        """What this thread queues inside goes out at the end, written by this thread if
        the network thread is not at the link then (one wake-up and one thread switch per
        batch fewer), else by the network thread."""
        self._batching = threading.get_ident()
        try:
            yield
        finally:
            self._batching = 0
            self._write_own()

    def _write_own(self) -> None:
        client = self.client
        if not client.want_write():
            return
        # Not while closing: the DISCONNECT behind our packets is the network thread's to
        # write, and paho closes the socket (and drains it) right after.
        if not self._closing and self._io.acquire(blocking=False):
            try:
                client.loop_write()
            except Exception:  # a callback's bug: the network thread would log it, not stop
                log.exception(
                    "%s link: writing the batch failed, left to the network loop", self.name
                )
            finally:
                self._io.release()
            if not client.want_write():
                return
        self.wake()

    # -- the network thread ------------------------------------------------------------------

    def socket(self) -> Any:
        """The socket to wait on, or None while the link is down or not started."""
        return self.client.socket() if self._active else None

    def buffered(self) -> bool:
        """Bytes already taken from the kernel that ``select`` cannot see (TLS, read-ahead).
        Asked under the link's lock: an SSL object must not be used by two threads at once.
        While the service loop holds it, say yes: the read that follows waits for the lock."""
        if not self._io.acquire(blocking=False):
            return True
        try:
            sock = self.client.socket()
            pending = getattr(sock, "pending", None)
            return pending is not None and pending() > 0
        finally:
            self._io.release()

    def wants_read(self) -> bool:
        """False while the window is full (the broker keeps the rest) or the link closes."""
        return not self._closing and (self.window is None or self.window.is_open())

    def read(self) -> None:
        """Read what the socket has. On the input link paho reads one packet per call (it
        publishes nothing, so it awaits no PUBACK): go on while inputs come and the window
        has room, up to ``READ_BURST``, then let the loop write."""
        with self._io:
            window = self.window
            if window is None:
                self.client.loop_read()
                return
            for _ in range(READ_BURST):
                before = window.taken
                rc = self.client.loop_read()
                if rc or window.taken == before or not window.is_open() or self._closing:
                    return

    def write(self) -> None:
        with self._io:
            self.client.loop_write()

    def tend(self, now: float) -> float | None:
        """Keepalive, reconnecting and closing. Returns when it wants to be called again
        at the latest (None: not before the next event)."""
        if not self._active or self.closed.is_set():
            return None
        with self._io:
            return self._tend(now)

    def _tend(self, now: float) -> float | None:
        client = self.client
        if self._closing:
            if client.socket() is None:
                self.closed.set()
                return None
            if not self._disconnect_sent:
                self._disconnect_sent = True
                client.disconnect()  # queued behind what was handed to paho before
            return now + MISC_INTERVAL
        if client.socket() is None:
            return self._reconnect(now)
        if now >= self._misc_at:
            self._misc_at = now + MISC_INTERVAL
            if client.is_connected():
                self._retry_delay = 0.0
            client.loop_misc()
        return self._misc_at

    def _reconnect(self, now: float) -> float:
        if self._retry_at is None:
            self._retry_delay = min(max(2 * self._retry_delay, RECONNECT_MIN), RECONNECT_MAX)
            self._retry_at = now + self._retry_delay
        if now < self._retry_at:
            return self._retry_at
        self._retry_at = None
        try:
            self.client.reconnect()
        except OSError as exc:
            log.warning(
                "%s link: broker %s:%d unreachable (%s), retrying in %.0fs",
                self.name,
                self.config.host,
                self.config.port,
                exc,
                min(2 * self._retry_delay, RECONNECT_MAX),
            )
        return now

    # -- paho's socket callbacks (the thread at the link: network, or the loop writing) --------

    def _socket_opened(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        set_nodelay(sock)
        read_ahead(sock)

    def _socket_closing(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        # paho closes the socket right after writing our DISCONNECT. If unread bytes sit in
        # the receive buffer then (the input link stops reading while its window is full, so
        # under a burst they always do), the kernel answers close() with a RST and the
        # broker's kernel drops what it had not read yet: our last acks and the DISCONNECT,
        # and those inputs, already applied, would come again. So on a close we asked for,
        # half-close and read until the broker closes its side (docs/reliability.md).
        if self._closing:
            drain_until_closed(sock, CLOSE_DRAIN)

    def _write_wanted(self, _c: mqtt.Client, _u: Any, _sock: Any) -> None:
        # Any thread (a publish or an ack from the service): wake the loop to write, unless
        # this thread writes its packets itself when its batch is done.
        if self._batching != threading.get_ident():
            self.wake()
