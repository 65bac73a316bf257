"""The MQTT transport: one paho 2.x client, MQTT v5, persistent session, manual acks.

paho runs its network loop in its own thread; everything it reports (connected, a message,
a publish acknowledged) is put on one queue as an event, and the service loop is the only
consumer. Publishing and acking from the service thread are thread-safe in paho.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import tenacity
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .config import MQTTConfig, read_password
from .routing import Outgoing

log = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
# Inputs the broker may have given us unacked at once (MQTT v5 Receive Maximum; without
# it the default is 65535 and a burst lands in this process's memory all at once).
RECEIVE_MAXIMUM = 1000
RECV_CHUNK = 65536


@dataclass(frozen=True)
class Connected:
    session_present: bool


@dataclass(frozen=True)
class Disconnected:
    reason: str


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    mid: int
    qos: int
    response_topic: str | None
    correlation: bytes | None
    # Which connection it came on: a packet id means nothing on the next one.
    connection: int = 0


@dataclass(frozen=True)
class Published:
    mid: int


@dataclass(frozen=True)
class Wakeup:
    """Put on the queue by signal handlers and tests to make the loop look around."""

    reason: str


Event = Connected | Disconnected | Received | Published | Wakeup


def set_nodelay(sock: Any) -> None:
    """Nagle plus delayed ACK costs ~40 ms per request/reply; paho leaves Nagle on."""
    # Not every socket-like object paho may hand us is TCP (websockets, test socket pairs).
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Client(mqtt.Client):
    """paho's client reading the socket in large chunks.

    paho reads each packet with three or more ``recv`` calls (the command byte, each
    remaining-length byte, the body); every call releases and retakes the GIL, which under
    a burst was the largest cost in the process (docs/performance.md). Here one ``recv`` of
    up to ``RECV_CHUNK`` bytes feeds many packets; paho's packet state machine is unchanged.
    """

    _rsock: Any = None
    _rbuf = b""
    _rpos = 0

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

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        # paho stops after a number of packets and then waits in select(), which knows
        # nothing of bytes already read into the buffer: keep going until it is empty.
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._buffered():
            rc = super().loop_read(max_packets)
        return rc


def tls_context(config: MQTTConfig) -> ssl.SSLContext | None:
    tls = config.tls
    if not (tls.ca_file or tls.cert_file):
        return None
    context = ssl.create_default_context(cafile=tls.ca_file or None)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Transport:
    """The service's broker connection; events go to ``events``."""

    def __init__(
        self,
        config: MQTTConfig,
        events: queue.SimpleQueue[Event],
        *,
        subscriptions: Sequence[str],
        status_topic: str,
    ) -> None:
        self.config = config
        self.events = events
        self.subscriptions = list(subscriptions)
        self.status_topic = status_topic
        self._connection = 0  # bumped on every connect and disconnect (network thread)
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        # No limit in paho: the service's backpressure (MAX_UNACKED_PUBLISHES) bounds what
        # awaits a PUBACK, and with a limit paho scans every unacked publish on each PUBACK
        # (``_update_inflight``), a cost quadratic in the window under a burst.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.will_set(status_topic, OFFLINE, qos=1, retain=True)
        if config.username:
            client.username_pw_set(config.username, read_password(config))
        context = tls_context(config)
        if context is not None:
            client.tls_set_context(context)
        client.on_socket_open = lambda _c, _u, sock: set_nodelay(sock)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self.client = client

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, attempts: int = 0, cancel: threading.Event | None = None) -> bool:
        """Connect (retrying with backoff; ``attempts`` 0 = forever), then run paho's thread.

        Returns False, without connecting, when ``cancel`` is set while the broker is away
        (a SIGTERM must not wait for a broker that never comes).
        """
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        cancel = cancel or threading.Event()
        stop: tenacity.stop.stop_base = tenacity.stop_when_event_set(cancel)
        if attempts:
            stop = stop | tenacity.stop_after_attempt(attempts)

        def interruptible_sleep(seconds: float) -> None:
            cancel.wait(seconds)

        @tenacity.retry(
            wait=tenacity.wait_exponential(multiplier=0.2, max=10),
            stop=stop,
            sleep=interruptible_sleep,
            retry=tenacity.retry_if_exception_type(OSError),
            before_sleep=lambda state: log.warning(
                "broker %s:%d unreachable (%s), retrying",
                self.config.host,
                self.config.port,
                state.outcome.exception() if state.outcome else "",
            ),
            reraise=True,
        )
        def connect() -> None:
            self.client.connect(
                self.config.host,
                self.config.port,
                keepalive=self.config.keepalive,
                clean_start=False,
                properties=props,
            )

        try:
            connect()
        except OSError:
            if cancel.is_set():
                return False
            raise
        self.client.loop_start()
        return True

    def stop(self) -> None:
        """Publish ``offline`` (the will only fires on an unclean loss) and disconnect."""
        info = self.client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
        with contextlib.suppress(RuntimeError, ValueError):  # not connected: the will covers it
            info.wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()

    # -- use ---------------------------------------------------------------------------------

    def publish(self, out: Outgoing, qos: int) -> int:
        props = None
        if out.correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = out.correlation
        info = self.client.publish(
            out.topic, out.payload, qos=qos, retain=out.retain, properties=props
        )
        return int(info.mid)

    def ack(self, received: Received) -> None:
        """Acknowledge an input, unless it came on an earlier connection.

        Packet ids are per connection: after a reconnect the same id may name another,
        unprocessed message. A stale input is left unacked; with a session the broker
        sends it again (the msg_id de-duplication answers it), without one it is gone
        from the broker anyway.
        """
        if received.qos > 0 and received.connection == self._connection:
            self.client.ack(received.mid, received.qos)

    # -- paho callbacks (network thread) -----------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused connection: %s", reason)
            return
        self._connection += 1
        client.subscribe([(topic, self.config.qos) for topic in self.subscriptions])
        client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        log.info(
            "connected to %s:%d session_present=%s",
            self.config.host,
            self.config.port,
            flags.session_present,
        )
        self.events.put(Connected(bool(flags.session_present)))

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connection += 1
        log.warning("disconnected from broker: %s", reason)
        self.events.put(Disconnected(str(reason)))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        self.events.put(
            Received(
                msg.topic,
                bytes(msg.payload),
                msg.mid,
                msg.qos,
                response_topic,
                correlation,
                self._connection,
            )
        )

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        self.events.put(Published(mid))
