"""A few hundred garbage payloads through the real broker: the service keeps answering, each
one gets exactly one error reply or dead-letter entry, and the store does not change."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mqtt_metamanager.envelope import MAX_RESOURCE_LENGTH
from mqtt_metamanager.jsoninput import MAX_JSON_DEPTH
from tests.support import (
    CLOUD,
    DEADLETTER,
    EDGED,
    IN,
    Publisher,
    ServiceProcess,
    Watcher,
    envelope,
    reply_to,
)

pytestmark = pytest.mark.integration

MAX_PAYLOAD = 4096
GARBAGE = 300


def meta_rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall()


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def garbage(rng: random.Random) -> tuple[bytes, str | None]:
    """One invalid payload, and the Response Topic to send it with (or None)."""
    good = envelope("insert", "default/pod/g", {"n": rng.randrange(1000)})
    kind = rng.randrange(12)
    response_topic = None
    if kind == 0:
        payload = rng.randbytes(rng.randrange(1, 200))
    elif kind == 1:
        text = json.dumps(good).encode()
        payload = text[: rng.randrange(1, len(text))]
    elif kind == 2:
        payload = json.dumps(rng.choice([[], 1, "x", None, True, [good]])).encode()
    elif kind == 3:
        del good["header"]["msg_id"]
        payload = json.dumps(good).encode()
    elif kind == 4:
        good["route"]["resource"] = rng.choice(["", "a", "a/b/c/d", "//", "a//b", "/a/b"])
        payload = json.dumps(good).encode()
    elif kind == 5:
        good["route"]["resource"] = "default/pod/" + "n" * MAX_RESOURCE_LENGTH
        payload = json.dumps(good).encode()
    elif kind == 6:
        good["content"] = _nested(MAX_JSON_DEPTH + rng.randrange(1, 50))
        payload = json.dumps(good).encode()
    elif kind == 7:
        good["content"] = "x" * MAX_PAYLOAD
        payload = json.dumps(good).encode()
    elif kind == 8:
        field, value = rng.choice(
            [("header", []), ("route", "x"), ("msg_id", 5), ("timestamp", "now"), ("sync", 1)]
        )
        if field in ("header", "route"):
            good[field] = value
        else:
            good["header"][field] = value
        payload = json.dumps(good).encode()
    elif kind == 9:
        text = json.dumps(good)
        payload = text.replace('"n"', rng.choice(['"\\ud800"', "NaN", '"n":1e999,"m"'])).encode()
        if b"NaN" in payload:
            payload = payload.replace(b'"NaN"', b"NaN")
    elif kind == 10:
        good["route"]["source"] = ""
        good["route"]["operation"] = "insert"
        good["route"]["resource"] = "nope"
        payload = json.dumps(good).encode()
    else:
        payload = json.dumps(good).encode()
        response_topic = rng.choice(["reply/+/x", "reply/#"])
    return payload, response_topic


def test_garbage_through_the_broker(
    make_service: Callable[..., ServiceProcess], watcher: Watcher, publisher: Publisher
) -> None:
    seed = int(os.environ.get("GARBAGE_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    # The legacy inbox: no identity, so a garbled route source decides who is told (the
    # per-sender inboxes have their own garbage in tests/unit/test_hostile_input.py).
    svc = make_service("svc", **{"mqtt.max_payload": MAX_PAYLOAD, "security.legacy_inbox": True})
    for i in range(3):
        seed_msg = envelope("insert", f"default/pod/seed-{i}", {"i": i})
        publisher.send(seed_msg)
        watcher.wait_for(CLOUD, reply_to(seed_msg["header"]["msg_id"]))
    before = meta_rows(svc.db_path)
    forwards_before = len(watcher.on(EDGED))

    for _ in range(GARBAGE):
        payload, response_topic = garbage(rng)
        publisher.send(payload, IN, response_topic=response_topic)

    # Inputs are handled in order: once this is answered, every piece of garbage was.
    probe = envelope("query", "default/pod/seed-1")
    publisher.send(probe)
    answer = watcher.wait_for(CLOUD, reply_to(probe["header"]["msg_id"]), timeout=30)
    assert answer["route"]["operation"] == "response" and answer["content"] == [{"i": 1}]

    assert svc.proc is not None and svc.proc.poll() is None, svc.logs()
    assert "Traceback" not in svc.logs(), f"seed={seed}"
    errors = [
        m for m in watcher.on(CLOUD) if isinstance(m, dict) and m["route"]["operation"] == "error"
    ]
    assert all(m["content"]["code"] == 400 for m in errors), f"seed={seed}"
    letters = watcher.on(DEADLETTER)
    assert len(errors) + len(letters) == GARBAGE, (seed, len(errors), len(letters))
    assert len(watcher.on(EDGED)) == forwards_before, f"garbage was forwarded, seed={seed}"
    assert meta_rows(svc.db_path) == before, f"seed={seed}"
    print(f"\ngarbage: payloads={GARBAGE} error_replies={len(errors)} deadletters={len(letters)}")
