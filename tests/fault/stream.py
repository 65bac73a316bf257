"""Fault-test helpers: a stream of inserts, a recorder of what the service sends, and the
end-of-test check of every invariant against the broker traffic and the SQLite file."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support import (
    CLOUD,
    EDGED,
    HOST,
    STATUS,
    ServiceProcess,
    envelope,
    inbox_for,
    wait_until,
)

SESSION_EXPIRY = 600


def _persistent_client(port: int, name: str) -> mqtt.Client:
    """A v5 client with a session the broker keeps across our and its own restarts."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{name}-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.reconnect_delay_set(min_delay=0.1, max_delay=1)
    client.max_inflight_messages_set(200)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_EXPIRY
    client.connect(HOST, port, clean_start=False, properties=props)
    return client


class Recorder:
    """Counts forwards to edged (by msg_id) and replies to the cloud (by parent_msg_id)."""

    def __init__(self, port: int) -> None:
        self.forwards: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()
        self.errors: dict[str, list[Any]] = {}
        self.status: list[bytes] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = _persistent_client(port, "recorder")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.loop_start()
        assert self._subscribed.wait(10), "recorder did not subscribe"

    def _on_connect(self, client: mqtt.Client, *_a: Any) -> None:
        # Always: after a broker restart without persistence the session is gone.
        client.subscribe([(EDGED, 1), (CLOUD, 1), (STATUS, 1)])

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == STATUS:
            with self._lock:
                self.status.append(bytes(msg.payload))
            return
        try:
            data = json.loads(msg.payload)
            header, route = data["header"], data["route"]
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            if msg.topic == EDGED:
                self.forwards[header["msg_id"]] += 1
            elif route["operation"] == "response":
                self.replies[header["parent_msg_id"]] += 1
            elif route["operation"] == "error":
                self.errors.setdefault(header["parent_msg_id"], []).append(data["content"])

    def replied(self, msg_ids: list[str]) -> int:
        with self._lock:
            return sum(1 for m in msg_ids if self.replies[m])

    def complete(self, msg_ids: list[str]) -> bool:
        with self._lock:
            return all(self.replies[m] and self.forwards[m] for m in msg_ids)

    def last_status(self) -> bytes | None:
        with self._lock:
            return self.status[-1] if self.status else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Stream:
    """``count`` QoS 1 inserts from the cloud, published from a background thread."""

    port: int
    count: int
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def __post_init__(self) -> None:
        self.messages = [
            envelope(
                "insert",
                f"ns-{self.tag}/pod/p{i}",
                {"metadata": {"name": f"p{i}", "resourceVersion": str(i)}, "spec": {"i": i}},
            )
            for i in range(self.count)
        ]
        self.msg_ids = [m["header"]["msg_id"] for m in self.messages]
        self._infos: list[mqtt.MQTTMessageInfo] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.client = _persistent_client(self.port, "stream")
        self.client.loop_start()

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        for message in self.messages:
            self._infos.append(self.client.publish(inbox_for(message), json.dumps(message), qos=1))

    def published(self) -> int:
        return sum(1 for info in list(self._infos) if info.is_published())

    def wait_published(self, timeout: float) -> None:
        self._thread.join(timeout)
        wait_until(
            lambda: self.published() == self.count, timeout, "the broker to take every input"
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Figures:
    test: str
    messages: int
    faults: int
    fault_kind: str
    lost_forwards: int = 0
    lost_replies: int = 0
    lost_objects: int = 0
    duplicate_forwards: int = 0
    duplicate_replies: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def losses(self) -> int:
        return self.lost_forwards + self.lost_replies + self.lost_objects

    def line(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.extra.items())
        return (
            f"{self.test}: messages={self.messages} {self.fault_kind}={self.faults}"
            f" losses={self.losses} (forwards={self.lost_forwards} replies={self.lost_replies}"
            f" objects={self.lost_objects}) duplicates: forwards={self.duplicate_forwards}"
            f" replies={self.duplicate_replies} time={self.seconds:.1f}s{extra}"
        )


def read_db(path: Path) -> tuple[str, dict[str, Any], int]:
    """integrity_check, the meta table (key -> decoded value), outbox rows; read-only."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
        outbox = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    return integrity, meta, outbox


def settle_and_count(
    recorder: Recorder, stream: Stream, figures: Figures, timeout: float = 60
) -> None:
    """Wait (bounded) for every forward and reply, then count losses and duplicates."""
    deadline = time.monotonic() + timeout
    while not recorder.complete(stream.msg_ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    ids = stream.msg_ids
    with recorder._lock:
        figures.lost_forwards = sum(1 for m in ids if not recorder.forwards[m])
        figures.lost_replies = sum(1 for m in ids if not recorder.replies[m])
        figures.duplicate_forwards = sum(max(0, recorder.forwards[m] - 1) for m in ids)
        figures.duplicate_replies = sum(max(0, recorder.replies[m] - 1) for m in ids)


def check_store(path: Path, stream: Stream, figures: Figures) -> None:
    """Every object stored with its content; the file is sound; nothing left in the outbox."""
    integrity, meta, outbox = read_db(path)
    figures.lost_objects = sum(
        1 for m in stream.messages if meta.get(m["route"]["resource"]) != m["content"]
    )
    figures.extra["outbox_left"] = outbox
    assert integrity == "ok", f"PRAGMA integrity_check: {integrity}"


def finish_run(
    svc: ServiceProcess, stream: Stream, recorder: Recorder, figures: Figures, started: float
) -> None:
    """The end of every fault run: the stream is all sent, answered and stored, once each
    at least; the service stops cleanly; nothing is lost and the outbox is empty."""
    stream.wait_published(60)
    settle_and_count(recorder, stream, figures)
    assert svc.stop() == 0
    figures.seconds = time.monotonic() - started
    check_store(svc.db_path, stream, figures)
    stream.close()
    assert figures.losses == 0, figures.line()
    assert figures.extra["outbox_left"] == 0, figures.line()
