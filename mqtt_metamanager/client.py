"""A small client for other edge modules: request/reply with metamanager over MQTT v5.

Example::

    with MetaClient("127.0.0.1", 1883) as client:
        reply = client.query("default/configmap/app")
        if reply.operation == "response":
            print(reply.content)
"""

from __future__ import annotations

import ssl
import threading
import uuid
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .envelope import BadMessage, Message, decode
from .routing import Topics
from .sockets import set_nodelay

ANONYMOUS_IDENTITY = "metactl"


class ClientError(RuntimeError):
    """No connection, or no reply in time."""


class MetaClient:
    """Connects on enter; ``request`` is safe to call from several threads.

    The client sends as the identity it logs in with (SPEC §11): to
    ``P/metamanager/in/<username>``, with its replies under ``P/reply/<username>/``. Without
    a user name (a development broker that lets anyone in) it sends as ``metactl``, an
    identity that may only query.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        topic_prefix: str = "kubeedge",
        source: str | None = None,
        qos: int = 1,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.topics = Topics(topic_prefix)
        self.identity = username or ANONYMOUS_IDENTITY
        self.source = source or self.identity
        self.qos = qos
        self.connect_timeout = connect_timeout
        self.inbox = f"{self.topics.metamanager_in}/{self.identity}"
        self.reply_topic = f"{self.topics.reply_space(self.identity)}/{uuid.uuid4().hex}"
        self._waiting: dict[bytes, tuple[threading.Event, list[Message]]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._refused: str | None = None
        self._denied: dict[int, str] = {}  # publish mid -> the broker's failure reason
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if username:
            self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set_context(tls)
        self._client.on_socket_open = lambda _c, _u, sock: set_nodelay(sock)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self.host, self.port = host, port

    def __enter__(self) -> MetaClient:
        self.connect()
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def connect(self) -> None:
        try:
            self._client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise ClientError(f"cannot reach broker {self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        ready = self._ready.wait(self.connect_timeout)
        if self._refused is not None:
            self.close()
            raise ClientError(f"broker {self.host}:{self.port} refused us: {self._refused}")
        if not ready:
            self.close()
            raise ClientError(f"broker {self.host}:{self.port} did not accept us in time")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            # A wrong password or an unknown user: say so now, not after a time-out.
            self._refused = str(reason)
            self._ready.set()
            return
        # Ready only once the SUBACK is in (``_on_subscribe``), or the first reply is lost.
        client.subscribe(self.reply_topic, qos=1)

    def _on_subscribe(self, *_args: Any) -> None:
        self._ready.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        # Runs before paho marks the publish done, so ``_send`` sees it after the wait.
        if reason.is_failure:
            with self._lock:
                self._denied[mid] = str(reason)

    def _send(self, topic: str, payload: bytes, properties: Properties | None = None) -> None:
        """Publish and wait for the broker's PUBACK; a refusal (ACL: 0x87) is an error."""
        info = self._client.publish(topic, payload, qos=self.qos, properties=properties)
        info.wait_for_publish(timeout=self.connect_timeout)
        if not info.is_published():
            raise ClientError("broker did not acknowledge the publish")
        with self._lock:
            denied = self._denied.pop(info.mid, None)
        if denied is not None:
            raise ClientError(f"broker refused the publish to {topic}: {denied}")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        correlation = getattr(msg.properties, "CorrelationData", None)
        with self._lock:
            waiter = self._waiting.get(correlation) if correlation else None
        if waiter is None:
            return
        try:
            waiter[1].append(decode(bytes(msg.payload)))
        except BadMessage:
            return
        waiter[0].set()

    def publish(self, message: Message, topic: str | None = None) -> None:
        """Send without waiting for a reply (QoS 1, waits for the broker's ack)."""
        self._send(topic or self.inbox, message.encode())

    def request(self, message: Message, timeout: float = 10.0) -> Message:
        """Publish with a Response Topic and wait for the reply."""
        correlation = uuid.uuid4().bytes
        done = threading.Event()
        box: list[Message] = []
        with self._lock:
            self._waiting[correlation] = (done, box)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = correlation
        try:
            self._send(self.inbox, message.encode(), props)
            if not done.wait(timeout):
                raise ClientError(f"no reply within {timeout}s for msg_id {message.msg_id}")
            return box[0]
        finally:
            with self._lock:
                self._waiting.pop(correlation, None)

    def query(self, resource: str, timeout: float = 10.0) -> Message:
        return self.request(
            Message.new(
                source=self.source,
                group="resource",
                operation="query",
                resource=resource,
                content=None,
            ),
            timeout,
        )
