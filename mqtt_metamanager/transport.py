"""The MQTT transport: two paho 2.x connections (MQTT v5), one for input, one for output.

- The input link (``mqtt.client_id``, persistent session, manual acks) subscribes and
  receives; the service acks each input on it after the input's commit. It is flow
  controlled: the network loop does not read its socket while ``window`` inputs are held
  (received and not yet released by ``ack``), so TCP pushes back on the broker and a burst
  costs this process at most ``window`` inputs of memory, whatever the broker's view of
  Receive Maximum.
- The output link (``<client_id>-out``, clean session: the outbox table covers crashes)
  carries every publish, so their PUBACKs never queue behind inputs the broker is pushing
  and a paused input link cannot stall them.

Both carry the last will (retained ``offline``): metamanager serves only with both, so
losing either means not online. ``online`` is published once both are up and the input
link's subscriptions are acknowledged. One network thread (``netloop.py``) drives both
links through paho's public external-loop API; what they report (connected, a message, a
publish acknowledged) goes on one queue as an event (``linkevents.py``), and the service
loop is its only consumer. Publishing and acking from the service thread queue the packet
in paho; at the end of a batch (``writes_batched``) the service thread writes them itself
when the network thread is not at the link, else it wakes the network thread to write them.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import ssl
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .config import MQTTConfig
from .link import OFFLINE, Link
from .linkevents import Connected, Disconnected, Event, Published, Received
from .netloop import NetworkLoop
from .routing import Outgoing
from .window import Window

log = logging.getLogger(__name__)

ONLINE = b"online"
OUTPUT_SUFFIX = "-out"
# How long a link's clean close may take (its DISCONNECT written, the broker's side closed).
CLOSE_TIMEOUT = 5.0


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
    """The service's broker connections; events go to ``events``."""

    def __init__(
        self,
        config: MQTTConfig,
        events: queue.SimpleQueue[Event],
        *,
        subscriptions: Sequence[str],
        status_topic: str,
        window: int,
        window_bytes: int,
    ) -> None:
        self.config = config
        self.events = events
        self.subscriptions = list(subscriptions)
        self.status_topic = status_topic
        self.network = NetworkLoop()
        self.window = Window(window, window_bytes, on_open=self.network.wake)
        tls = tls_context(config)
        self.input = Link(
            config,
            "input",
            client_id=config.client_id,
            clean_start=False,
            session_expiry=config.session_expiry,
            will_topic=status_topic,
            wake=self.network.wake,
            manual_ack=True,
            # A broker that honours it sends no more than the window; mosquitto 2.0.11
            # does not once acks interleave (docs/performance.md), the window still holds.
            receive_maximum=min(window, 65535),
            window=self.window,
            tls=tls,
        )
        self.output = Link(
            config,
            "output",
            client_id=config.client_id + OUTPUT_SUFFIX,
            clean_start=True,
            session_expiry=0,
            will_topic=status_topic,
            wake=self.network.wake,
            tls=tls,
        )
        # The output link first: in a turn that finds both ready, PUBACKs are read first.
        self.network.add(self.output)
        self.network.add(self.input)
        # The network thread reports to this state, the service thread acks against it.
        self._lock = threading.Lock()
        self._input_ready = False  # connected, and its subscriptions acknowledged
        self._output_ready = False
        self._session_present = False
        self._subscribe_mid: int | None = None
        self._connection = 0  # bumped on every connect and disconnect of the input link
        i, o = self.input.client, self.output.client
        i.on_connect = self._on_input_connect
        i.on_subscribe = self._on_subscribe
        i.on_disconnect = self._on_input_disconnect
        i.on_message = self._on_message
        o.on_connect = self._on_output_connect
        o.on_disconnect = self._on_output_disconnect
        o.on_publish = self._on_publish

    @property
    def client(self) -> mqtt.Client:
        """The publishing client (the output link's)."""
        return self.output.client

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, attempts: int = 0, cancel: threading.Event | None = None) -> bool:
        """Connect both links (retrying with backoff; ``attempts`` 0 = forever) and run the
        network thread. False, with nothing left connected, when ``cancel`` is set while
        the broker is away (a SIGTERM must not wait for a broker that never comes)."""
        self.network.start()
        try:
            started = self.output.start(attempts, cancel) and self.input.start(attempts, cancel)
        except BaseException:
            self._close_all()
            raise
        if not started:
            self._close_all()
        return started

    def stop(self) -> None:
        """Stop taking input, publish ``offline`` (a will only fires on an unclean loss)
        and disconnect. Acks already handed to paho go out before the input link's
        DISCONNECT; a clean disconnect sends neither link's will."""
        self.input.close(CLOSE_TIMEOUT)
        info = self.output.client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
        with contextlib.suppress(RuntimeError, ValueError):  # not connected: the will covers it
            info.wait_for_publish(timeout=2)
        self._close_all()

    def _close_all(self) -> None:
        self.input.close(CLOSE_TIMEOUT)
        self.output.close(CLOSE_TIMEOUT)
        self.network.stop()

    # -- use ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writes_batched(self) -> Iterator[None]:
        """Publishes and acks made inside go out together at the end, from this thread
        when it can (``Link.writes_batched``)."""
        with self.output.writes_batched(), self.input.writes_batched():
            yield

    def publish(self, out: Outgoing, qos: int) -> int:
        props = None
        if out.correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = out.correlation
        info = self.output.client.publish(
            out.topic, out.payload, qos=qos, retain=out.retain, properties=props
        )
        return int(info.mid)

    def ack(self, received: Received) -> None:
        """Acknowledge an input (QoS 1 and 2) and free its place in the window, unless it
        came on an earlier connection of the input link.

        Packet ids are per connection: after a reconnect the same id may name another,
        unprocessed message. A stale input is left unacked; with a session the broker
        sends it again (the msg_id de-duplication answers it), without one it is gone
        from the broker anyway. It holds no place in the new connection's window.
        """
        # Under the lock the network thread bumps the connection with: checked outside it,
        # a reconnect in between would put this ack on the new connection.
        with self._lock:
            if received.connection != self._connection:
                return
            self.window.release(len(received.payload))
            if received.qos > 0:
                self.input.client.ack(received.mid, received.qos)

    @property
    def input_ready(self) -> bool:
        """The input link is connected and its subscriptions acknowledged."""
        return self._input_ready

    @property
    def output_ready(self) -> bool:
        """The output link is connected."""
        return self._output_ready

    # -- paho callbacks (the network thread; a loss found writing a batch: the service's) ------

    def _on_input_connect(
        self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the input connection: %s", reason)
            return
        with self._lock:
            self._connection += 1
            self.window.reset()
            self._session_present = bool(flags.session_present)
            _rc, self._subscribe_mid = client.subscribe(
                [(topic, self.config.qos) for topic in self.subscriptions]
            )
        log.info("input link up, session_present=%s", flags.session_present)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        with self._lock:
            if mid != self._subscribe_mid:
                return
            self._input_ready = True
            self._announce()

    def _on_input_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self._lock:
            self._connection += 1
            self.window.reset()
            self._input_ready = False
        log.warning("input disconnected from broker: %s", reason)
        self.events.put(Disconnected(f"input: {reason}"))

    def _on_output_connect(
        self, _c: mqtt.Client, _u: Any, _flags: Any, reason: Any, _p: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the output connection: %s", reason)
            return
        log.info("output link up")
        with self._lock:
            self._output_ready = True
            self._announce()

    def _on_output_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any
    ) -> None:
        with self._lock:
            self._output_ready = False
        log.warning("output disconnected from broker: %s", reason)
        self.events.put(Disconnected(f"output: {reason}"))

    def _announce(self) -> None:
        """Both links up (called with the lock held): ``online``, and tell the service.
        Each link's drop published its will; whichever comes back last says ``online``."""
        if self._input_ready and self._output_ready:
            self.output.client.publish(self.status_topic, ONLINE, qos=1, retain=True)
            log.info(
                "connected to %s:%d (input and output links) session_present=%s",
                self.config.host,
                self.config.port,
                self._session_present,
            )
            self.events.put(Connected(self._session_present))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.window.take(len(msg.payload))
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
