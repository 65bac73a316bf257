"""The bench's two MQTT peers: the load client (in the bench process) and the bare echo.

The echo runs as its own process (``python -m mqtt_metamanager.benchnet CONFIG``, the
service's config file) and does per input exactly the publishes the service does, with no
storage: an input without a Response Topic (an insert) is forwarded to edged and answered
on its sender's reply topic; an input with one (a query) is answered there with its
Correlation Data. The input is acked after those publishes, as the service acks after
its commit. It announces itself like the service: ``online`` on the status topic.
"""

from __future__ import annotations

import json
import signal
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from . import config as config_mod
from .config import MQTTConfig
from .routing import Topics
from .sockets import set_nodelay
from .transport import ONLINE, tls_context

MAX_INFLIGHT = 1000
POLL = 0.05


class BenchError(RuntimeError):
    """The bench could not finish a run (no broker, a process died, a wait timed out)."""


@dataclass(frozen=True)
class Login:
    """How every bench client logs in: the identity the load is sent as (SPEC §11)."""

    identity: str = "bench"
    username: str = ""
    password: str = field(default="", repr=False)
    tls: ssl.SSLContext | None = None

    @classmethod
    def of(cls, mqtt_config: MQTTConfig) -> Login:
        """The login ``mqtt_config`` describes; the identity is its user name, if any."""
        return cls(
            identity=mqtt_config.username or cls.identity,
            username=mqtt_config.username,
            password=config_mod.read_password(mqtt_config) or "",
            tls=tls_context(mqtt_config),
        )


def bench_client(client_id: str, login: Login, *, manual_ack: bool = False) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if login.username:
        client.username_pw_set(login.username, login.password or None)
    if login.tls is not None:
        client.tls_set_context(login.tls)
    client.max_inflight_messages_set(MAX_INFLIGHT)
    client.max_queued_messages_set(0)
    client.on_socket_open = lambda _c, _u, sock: set_nodelay(sock)
    return client


def start_client(
    client: mqtt.Client, subscribed: threading.Event, host: str, port: int, what: str
) -> None:
    """Connect, start the network thread, wait for the first SUBACK; stop it on failure."""
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise BenchError(f"cannot reach broker {host}:{port}: {exc}") from exc
    client.loop_start()
    if not subscribed.wait(10):
        client.disconnect()
        client.loop_stop()
        raise BenchError(f"broker {host}:{port} did not accept the {what}")


class LoadClient:
    """Sends bursts of inserts and timed queries, and sees the status topic."""

    def __init__(self, host: str, port: int, topics: Topics, qos: int, login: Login) -> None:
        self.topics = topics
        self.qos = qos
        # Inserts are sent as an operator (with the cloud's route source) and answered on
        # the identity's reply topic; queries carry a Response Topic below it.
        self.inbox = f"{topics.metamanager_in}/{login.identity}"
        self.answers = topics.reply_space(login.identity)
        self.reply_topic = f"{self.answers}/query"
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._online = threading.Event()
        self._online_at = 0.0
        self._replies = 0
        self._want = 0
        self._last_reply_at = 0.0
        self._burst_done = threading.Event()
        self._correlation = b""
        self._answered_at = 0.0
        self._answered = threading.Event()
        self.client = bench_client(f"{topics.prefix}-load", login)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        start_client(self.client, self._subscribed, host, port, "load client")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_a: Any) -> None:
        topics = (self.answers, self.reply_topic, self.topics.status)
        client.subscribe([(t, self.qos) for t in topics])

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if msg.topic == self.answers:
            with self._lock:
                self._replies += 1
                self._last_reply_at = now
                if self._replies >= self._want:
                    self._burst_done.set()
        elif msg.topic == self.reply_topic:
            if getattr(msg.properties, "CorrelationData", None) == self._correlation:
                self._answered_at = now
                self._answered.set()
        elif msg.topic == self.topics.status and msg.payload == ONLINE and not msg.retain:
            # A fresh publish, not the retained status some earlier run left.
            self._online_at = now
            self._online.set()

    def clear_status(self) -> None:
        """Drop the retained status, so only the next process's ``online`` counts."""
        self._online.clear()
        info = self.client.publish(self.topics.status, b"", qos=1, retain=True)
        info.wait_for_publish(10)

    def wait_online(self, started: float, timeout: float, exited: Callable[[], Any]) -> float:
        """Seconds from ``started`` to a fresh ``online``; fails if the process exits."""
        deadline = time.monotonic() + timeout
        while not self._online.wait(POLL):
            if exited() is not None:
                raise BenchError("exited before it was online")
            if time.monotonic() > deadline:
                raise BenchError(f"not online within {timeout}s")
        return self._online_at - started

    def burst(self, payloads: Sequence[bytes], timeout: float) -> float:
        """Publish every payload at once; seconds until as many replies came back."""
        with self._lock:
            self._replies, self._want = 0, len(payloads)
            self._burst_done.clear()
        start = time.monotonic()
        for payload in payloads:
            self.client.publish(self.inbox, payload, qos=self.qos)
        if not self._burst_done.wait(max(0.0, start + timeout - time.monotonic())):
            raise BenchError(f"{self._replies}/{len(payloads)} replies within {timeout}s")
        return self._last_reply_at - start

    def request(self, payload: bytes, timeout: float) -> float:
        """One request with a Response Topic; seconds until its reply arrived."""
        self._correlation = uuid.uuid4().bytes
        self._answered.clear()
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = self._correlation
        start = time.monotonic()
        self.client.publish(self.inbox, payload, qos=self.qos, properties=props)
        if not self._answered.wait(timeout):
            raise BenchError(f"no reply within {timeout}s")
        return self._answered_at - start


class CloudSide:
    """The cloud's end of ``P/edgehub/in``: counts the pod statuses syncs bring."""

    def __init__(self, host: str, port: int, topics: Topics, login: Login) -> None:
        self.topics = topics
        self._lock = threading.Lock()
        self._statuses, self._want, self._last_at = 0, 0, 0.0
        self._done = threading.Event()
        subscribed = threading.Event()
        self.client = bench_client(f"{topics.prefix}-cloud", login)
        self.client.on_connect = lambda c, *_a: c.subscribe(topics.cloud, 1)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_message = self._on_message
        start_client(self.client, subscribed, host, port, "cloud client")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        try:
            message = json.loads(msg.payload)
            resource = str(message["route"]["resource"])
            content = message["content"]
        except (ValueError, KeyError, TypeError):
            return
        if resource.endswith("/podstatus") and isinstance(content, list):
            with self._lock:
                self._statuses += len(content)
                self._last_at = now
                if self._statuses >= self._want:
                    self._done.set()

    def timed_sync(self, want: int, trigger: Callable[[], None], timeout: float) -> float:
        """Seconds from ``trigger`` to the last of ``want`` statuses received."""
        with self._lock:
            self._statuses, self._want = 0, want
            self._done.clear()
        started = time.monotonic()
        trigger()
        if not self._done.wait(timeout):
            raise BenchError(f"{self._statuses}/{want} pod statuses synced within {timeout}s")
        return self._last_at - started


def echo(host: str, port: int, prefix: str, qos: int, login: Login) -> None:
    """The bare echo: serve until SIGTERM or SIGINT. Like the service it reads every
    sender's inbox and answers on the sender's reply topic, and forwards to edged."""
    topics = Topics(prefix)
    stop = threading.Event()
    client = bench_client(f"{prefix}-echo", login, manual_ack=True)
    inbox_level = f"{topics.metamanager_in}/"

    def on_connect(c: mqtt.Client, *_a: Any) -> None:
        c.subscribe(f"{inbox_level}+", qos)

    def on_subscribe(c: mqtt.Client, *_a: Any) -> None:
        c.publish(topics.status, ONLINE, qos=1, retain=True)

    def on_message(c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        response_topic = getattr(msg.properties, "ResponseTopic", None)
        if response_topic:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = getattr(msg.properties, "CorrelationData", b"")
            c.publish(response_topic, msg.payload, qos=qos, properties=props)
        else:
            c.publish(topics.edged_in, msg.payload, qos=qos)
            c.publish(topics.reply_space(msg.topic[len(inbox_level) :]), msg.payload, qos=qos)
        c.ack(msg.mid, msg.qos)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    signal.signal(signal.SIGTERM, lambda *_a: stop.set())
    signal.signal(signal.SIGINT, lambda *_a: stop.set())
    client.connect(host, port, keepalive=30, clean_start=True)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    # The broker, prefix, QoS and login come from the same config file the service gets.
    _mqtt = config_mod.load(sys.argv[1], environ={}).mqtt
    echo(_mqtt.host, _mqtt.port, _mqtt.topic_prefix, _mqtt.qos, Login.of(_mqtt))
