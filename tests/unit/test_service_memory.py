"""The service gives memory back after a burst, without a broker."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from mqtt_metamanager import allocator
from mqtt_metamanager.linkevents import Received
from tests.support import envelope, inbox_for
from tests.unit.conftest import OfflineService


def test_the_heap_is_trimmed_once_a_burst_is_worked_off_not_during_it(
    offline_service: Callable[..., OfflineService], monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, published = offline_service(database={"batch_max": 100})
    trims: list[int] = []
    monkeypatch.setattr(allocator, "trim", lambda libc=None: trims.append(len(published)) or True)
    value = {"metadata": {"name": "a"}, "spec": "x" * 2000}
    burst = 150  # 150 inputs of ~2 KiB: more than TRIM_AFTER_BYTES, in two batches
    for i in range(burst):
        message = envelope("insert", f"ns/pod/p{i}", {**value, "metadata": {"name": f"p{i}"}})
        svc.events.put(
            Received(inbox_for(message), json.dumps(message).encode(), i + 1, 1, None, None)
        )
    svc.step(0)
    assert len(published) == 2 * 100 and trims == []  # the first batch: 50 inputs still wait
    svc.step(0)
    assert trims == [2 * burst]  # after the last batch's answers went out
    svc.step(0)
    assert trims == [2 * burst]  # nothing worked since
