"""The loop survives inputs that meet a bug, and nobody-to-tell rejections are dead letters."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mqtt_metamanager.transport import Received
from tests.support import DEADLETTER, EDGED, IN, envelope
from tests.unit.conftest import OfflineService


def received(message: dict[str, Any] | bytes, mid: int) -> Received:
    payload = message if isinstance(message, bytes) else json.dumps(message).encode()
    return Received(IN, payload, mid, 1, None, None)


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
    svc._process([received(poison, 1), received(fine, 2)])
    assert sorted(acked) == [1, 2]
    assert svc.store.get("default/pod/p") is None
    assert svc.store.get("default/pod/f") is not None
    errors = [json.loads(p.payload) for p in published if p.topic == EDGED]
    [error] = [e for e in errors if e["route"]["operation"] == "error"]
    assert error["header"]["parent_msg_id"] == "poison"
    assert error["content"]["code"] == 500


def test_a_rejected_input_claiming_to_be_metamanager_is_a_dead_letter(
    offline_service: Callable[..., OfflineService],
) -> None:
    svc, published = offline_service()
    bad = envelope("insert", "default/pod/p", {}, source="metamanager")
    del bad["header"]["msg_id"]
    svc._process([received(bad, 1)])
    [letter] = [json.loads(p.payload) for p in published if p.topic == DEADLETTER]
    assert letter["reason"] == "missing_msg_id"
