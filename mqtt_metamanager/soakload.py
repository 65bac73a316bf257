"""The soak's traffic: the mixed inputs of an edge box, and who answered what.

Each input has a number ``n``; its msg_id ends in ``-n`` and inputs sent with a Response
Topic carry ``n`` as Correlation Data, so a reply is matched without keeping its text.
Replies on ``P/edgehub/in`` (the cloud's) and ``P/edged/in`` are matched by their
``parent_msg_id``; forwards there have none of ours and are ignored. An input is answered
once: a second reply to it is a duplicate. Answered inputs are one bit each, so a long
soak keeps little in the bench process.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .benchnet import Login, bench_client, start_client
from .routing import EDGED, EDGEHUB, Topics

NAMESPACE = "soak"
CLOUD_SOURCE = "edgecontroller"

# Kinds of input per cycle of 200 (shuffled once): at 200 inputs/s one namespace list a
# second, and 4 remote queries a second that the cloud never answers.
MIX = {
    "cloud_insert": 50,
    "cloud_delete": 14,
    "cloud_patch": 30,
    "edged_status": 65,
    "query_one": 30,
    "query_list": 1,
    "garbage": 6,
    "remote_query": 4,
}
# Answered by the cloud timeout (remote_query.timeout x attempts) by design: not counted in
# the latency percentiles, which are about the service keeping up.
SLOW_KINDS = frozenset({"remote_query"})


# The queries' share of a cycle: as many of them as asked are namespace lists.
MAX_LISTS = MIX["query_one"] + MIX["query_list"]


def schedule(seed: int, lists: int = MIX["query_list"]) -> list[str]:
    """One cycle of 200 kinds of input; ``lists`` namespace lists in it (the rest of the
    queries' share are one-object queries)."""
    if not 0 <= lists <= MAX_LISTS:
        raise ValueError(f"lists per cycle must be 0 to {MAX_LISTS}, got {lists}")
    mix = {**MIX, "query_list": lists, "query_one": MAX_LISTS - lists}
    kinds = [kind for kind, weight in mix.items() for _ in range(weight)]
    random.Random(seed).shuffle(kinds)
    return kinds


def pod_value(name: str, size: int, version: int) -> dict[str, Any]:
    """A pod-like object whose JSON is about ``size`` bytes."""
    value: dict[str, Any] = {
        "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": str(version)},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}], "pad": ""},
    }
    value["spec"]["pad"] = "x" * max(0, size - len(json.dumps(value)))
    return value


@dataclass
class Window:
    """What one reporting interval saw."""

    sent: int = 0
    answered: int = 0
    latencies: list[float] = field(default_factory=list)
    list_latencies: list[float] = field(default_factory=list)
    list_bytes: int = 0


class SoakClient:
    """Sends the mix as the cloud, edged and an operator, and matches the replies."""

    def __init__(
        self, host: str, port: int, topics: Topics, login: Login, *, pods: int, size: int
    ) -> None:
        self.topics = topics
        self.pods, self.size = pods, size
        self.run_id = f"soak{random.randrange(16**6):06x}"
        self.operator_inbox = f"{topics.metamanager_in}/{login.identity}"
        self.reply_topic = f"{topics.reply_space(login.identity)}/soak"
        self.rng = random.Random(13)
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[float, str]] = {}  # n -> (sent at, kind)
        self._answered = bytearray()
        self.duplicates = 0
        self.unexpected = 0
        self.window = Window()
        self.metrics: dict[str, Any] = {}
        self.link_up = threading.Event()
        self._subscribed = threading.Event()
        self.client = bench_client(f"{topics.prefix}-soak", login)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        start_client(self.client, self._subscribed, host, port, "soak client")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_a: Any) -> None:
        topics = (self.topics.cloud, self.topics.edged_in, self.reply_topic)
        extra = (self.topics.metrics, self.topics.connection)
        client.subscribe([(t, 1) for t in (*topics, *extra)])

    # -- sending ------------------------------------------------------------------------------

    def send(self, n: int, kind: str) -> None:
        """Send input number ``n`` of ``kind``; it then awaits exactly one reply."""
        pod = f"pod-{self.rng.randrange(self.pods)}"
        msg_id = f"{self.run_id}-{n}"
        cloud_inbox = f"{self.topics.metamanager_in}/{EDGEHUB}"
        respond = True
        if kind == "cloud_insert":
            topic, respond = cloud_inbox, False
            payload = _envelope(
                msg_id, "insert", f"{NAMESPACE}/pod/{pod}", pod_value(pod, self.size, n)
            )
        elif kind == "cloud_delete":
            topic, respond = cloud_inbox, False
            payload = _envelope(msg_id, "delete", f"{NAMESPACE}/pod/{pod}", None)
        elif kind == "cloud_patch":
            topic, respond = cloud_inbox, False
            patch = {"metadata": {"labels": {"rev": str(n)}, "resourceVersion": str(n)}}
            payload = _envelope(msg_id, "patch", f"{NAMESPACE}/pod/{pod}", patch)
        elif kind == "edged_status":
            topic, respond = f"{self.topics.metamanager_in}/{EDGED}", False
            status = {"metadata": {"name": pod, "namespace": NAMESPACE}, "status": {"seq": n}}
            resource = f"{NAMESPACE}/podstatus/{pod}"
            payload = _envelope(msg_id, "update", resource, status, source=EDGED)
        elif kind == "query_one":
            topic = self.operator_inbox
            payload = _envelope(msg_id, "query", f"{NAMESPACE}/pod/{pod}", None, source="soak")
        elif kind == "query_list":
            topic = self.operator_inbox
            payload = _envelope(msg_id, "query", f"{NAMESPACE}/pod", None, source="soak")
        elif kind == "remote_query":
            topic = self.operator_inbox
            resource = f"{NAMESPACE}/configmap/cm-{n}"  # never stored, never answered
            payload = _envelope(msg_id, "query", resource, None, source="soak")
        elif kind == "garbage":
            topic = self.operator_inbox
            payload = b"\x00not json {" + str(n).encode()
        else:
            raise ValueError(f"unknown kind {kind!r}")
        props = None
        if respond:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = self.reply_topic
            props.CorrelationData = str(n).encode()
        with self._lock:
            self._pending[n] = (time.monotonic(), kind)
            self.window.sent += 1
        self.client.publish(topic, payload, qos=1, properties=props)

    def set_cloud_link(self, connected: bool) -> None:
        """edgehub's retained connect message, as on a real node (no reply)."""
        content = "cloud_connected" if connected else "cloud_disconnected"
        msg_id = f"{self.run_id}-link-{time.monotonic_ns()}"
        payload = _envelope(msg_id, "connect", "node/connection", content, source=EDGEHUB)
        self.client.publish(self.topics.edgehub_connection, payload, qos=1, retain=True)

    def clear_retained(self) -> None:
        info = self.client.publish(self.topics.edgehub_connection, b"", qos=1, retain=True)
        info.wait_for_publish(5)

    # -- receiving ----------------------------------------------------------------------------

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if msg.topic == self.reply_topic:
            corr = getattr(msg.properties, "CorrelationData", b"") or b""
            n = int(corr) if corr.isdigit() else -1
        elif msg.topic == self.topics.metrics:
            self.metrics = json.loads(msg.payload)
            return
        elif msg.topic == self.topics.connection:
            if msg.payload and json.loads(msg.payload).get("connected"):
                self.link_up.set()
            return
        else:
            parent = json.loads(msg.payload).get("header", {}).get("parent_msg_id", "")
            if not isinstance(parent, str) or not parent.startswith(f"{self.run_id}-"):
                return  # a forward, or the service's own query to the cloud
            tail = parent.rsplit("-", 1)[1]
            n = int(tail) if tail.isdigit() else -1
        self._answer(n, now, len(msg.payload))

    def _answer(self, n: int, now: float, size: int) -> None:
        with self._lock:
            sent = self._pending.pop(n, None)
            if sent is None:
                if 0 <= n < len(self._answered) * 8 and self._answered[n // 8] >> (n % 8) & 1:
                    self.duplicates += 1
                else:
                    self.unexpected += 1
                return
            if n // 8 >= len(self._answered):
                self._answered.extend(bytes(n // 8 + 1 - len(self._answered) + 1024))
            self._answered[n // 8] |= 1 << (n % 8)
            took, kind = now - sent[0], sent[1]
            window = self.window
            window.answered += 1
            if kind == "query_list":
                window.list_latencies.append(took)
                window.list_bytes += size
            if kind not in SLOW_KINDS:
                window.latencies.append(took)

    # -- reading ------------------------------------------------------------------------------

    def take_window(self) -> Window:
        with self._lock:
            window, self.window = self.window, Window()
        return window

    @property
    def backlog(self) -> int:
        """Inputs sent and not answered yet."""
        with self._lock:
            return len(self._pending)

    def missing(self) -> dict[str, int]:
        """The unanswered inputs by kind."""
        with self._lock:
            kinds = [kind for _, kind in self._pending.values()]
        return {kind: kinds.count(kind) for kind in sorted(set(kinds))}


def _envelope(
    msg_id: str, op: str, resource: str, content: Any, source: str = CLOUD_SOURCE
) -> bytes:
    message = {
        "header": {"msg_id": msg_id, "parent_msg_id": "", "timestamp": int(time.time() * 1000)},
        "route": {"source": source, "group": "resource", "operation": op, "resource": resource},
        "content": content,
    }
    return json.dumps(message, separators=(",", ":")).encode()
