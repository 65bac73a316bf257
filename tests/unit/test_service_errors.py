"""The loop survives inputs that meet a bug, and nobody-to-tell rejections are dead letters."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import peewee as pw

from mqtt_metamanager.envelope import Resource
from mqtt_metamanager.linkevents import Received
from tests.support import DEADLETTER, EDGED, IN, envelope, inbox_for, wait_until
from tests.unit.conftest import OfflineService


def received(message: dict[str, Any] | bytes, mid: int, topic: str | None = None) -> Received:
    payload = message if isinstance(message, bytes) else json.dumps(message).encode()
    return Received(topic or inbox_for(message), payload, mid, 1, None, None)


def test_an_input_that_meets_a_bug_gets_500_is_acked_and_applies_nothing(
    offline_service: Callable[..., OfflineService],
) -> None:
    svc, published = offline_service()
    acked: list[int] = []
    svc.transport.ack = lambda r: acked.append(r.mid)  # type: ignore[method-assign]
    real_handle = svc.ops.handle

    def handle(inbound: Any) -> Any:
        result = real_handle(inbound)  # the effect is written, then the bug strikes
        if inbound.message.msg_id == "poison":
            raise KeyError("a bug")
        return result

    svc.ops.handle = handle  # type: ignore[method-assign]
    poison = envelope("insert", "default/pod/p", {"x": 1}, source="edged", msg_id="poison")
    fine = envelope("insert", "default/pod/f", {"x": 2}, source="edged", msg_id="fine")
    svc.pipeline.process([received(poison, 1), received(fine, 2)])
    assert sorted(acked) == [1, 2]
    assert svc.store.get("default/pod/p") is None
    assert svc.store.get("default/pod/f") is not None
    errors = [json.loads(p.payload) for p in published if p.topic == EDGED]
    [error] = [e for e in errors if e["route"]["operation"] == "error"]
    assert error["header"]["parent_msg_id"] == "poison"
    assert error["content"]["code"] == 500
    # Staged in the outbox like any answer (a fresh transaction), until the broker acks it.
    logged = [json.loads(e.publish.payload) for e in svc.store.outbox_pending()]
    assert error in logged


def test_a_rejected_input_claiming_to_be_metamanager_is_a_dead_letter(
    offline_service: Callable[..., OfflineService],
) -> None:
    # On the legacy inbox a route source is all there is to answer by, and a reply to
    # "metamanager" would come back to us: nobody can be told, so it is a dead letter.
    svc, published = offline_service(security={"legacy_inbox": True})
    bad = envelope("insert", "default/pod/p", {}, source="metamanager")
    del bad["header"]["msg_id"]
    svc.pipeline.process([received(bad, 1, IN)])
    [letter] = [json.loads(p.payload) for p in published if p.topic == DEADLETTER]
    assert letter["reason"] == "missing_msg_id"
    assert [p.topic for p in published] == [DEADLETTER]


def test_a_sender_claiming_to_be_metamanager_is_refused_and_told(
    offline_service: Callable[..., OfflineService],
) -> None:
    # It used to get no reply at all, not even its 503: a reply to "metamanager" went nowhere.
    svc, published = offline_service()
    spoof = envelope("insert", "default/pod/p", {"x": 1}, source="metamanager", msg_id="s")
    svc.pipeline.process([received(spoof, 1, f"{IN}/edged")])
    [reply] = [json.loads(p.payload) for p in published if p.topic == EDGED]
    assert reply["content"]["reason"] == "source_mismatch"
    assert reply["header"]["parent_msg_id"] == "s"
    [letter] = [json.loads(p.payload) for p in published if p.topic == DEADLETTER]
    assert letter["identity"] == "edged"
    assert svc.store.get("default/pod/p") is None


def test_an_input_the_store_failed_is_applied_before_later_inputs_for_its_key(
    offline_service: Callable[..., OfflineService],
) -> None:
    svc, published = offline_service()
    acked: list[int] = []
    svc.transport.ack = lambda r: acked.append(r.mid)  # type: ignore[method-assign]
    real_put = svc.store.put
    failures = [pw.OperationalError("disk I/O error")]

    def put(resource: Resource, value: Any, **options: Any) -> bool:
        if resource.key == "default/pod/a" and failures:
            raise failures.pop()
        return real_put(resource, value, **options)

    svc.store.put = put  # type: ignore[method-assign]
    first = envelope("insert", "default/pod/a", {"v": 1}, msg_id="a1")
    svc.pipeline.process([received(first, 1)])
    assert acked == [] and svc.store.get("default/pod/a") is None
    [told] = [json.loads(p.payload) for p in published]
    assert told["content"]["code"] == 503 and told["header"]["parent_msg_id"] == "a1"
    later = envelope("update", "default/pod/a", {"v": 2}, msg_id="a2")
    other = envelope("insert", "default/pod/b", {"v": 1}, msg_id="b1")
    query = envelope("query", "default/pod/a", msg_id="q")
    svc.pipeline.process([received(later, 2), received(other, 3), received(query, 4)])
    # Another key goes on; the same key waits for the failed input, unapplied and unacked.
    assert acked == [3]
    assert svc.store.get("default/pod/a") is None

    def retried() -> bool:
        svc.step(0.05)  # the retry timer fires on a turn
        return len(acked) == 4

    wait_until(retried, 10, "the retry and the inputs held behind it")
    assert acked == [3, 1, 2, 4]
    assert svc.store.get("default/pod/a").value == {"v": 2}  # type: ignore[union-attr]
    [answer] = [
        json.loads(p.payload)
        for p in published
        if json.loads(p.payload)["header"]["parent_msg_id"] == "q"
    ]
    assert answer["content"] == [{"v": 2}]
    replies = [json.loads(p.payload)["header"]["parent_msg_id"] for p in published]
    assert replies.count("a1") == 2  # the 503 once, then the OK of the retry
