"""Which publishes the service logs in the outbox, without a broker."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from mqtt_metamanager.linkevents import Connected, Published, Received
from mqtt_metamanager.routing import Outgoing
from mqtt_metamanager.service import Service
from tests.support import envelope, inbox_for
from tests.unit.conftest import OfflineService


@pytest.fixture
def service(offline_service: Callable[..., OfflineService]) -> OfflineService:
    return offline_service()


def received(message: dict[str, object], mid: int, response_topic: str | None = None) -> Received:
    return Received(inbox_for(message), json.dumps(message).encode(), mid, 1, response_topic, b"c")


def test_an_insert_logs_its_forward_and_reply_until_the_broker_acks_them(
    service: tuple[Service, list[Outgoing]],
) -> None:
    svc, published = service
    svc.pipeline.process([received(envelope("insert", "ns/pod/a", {"metadata": {"name": "a"}}), 1)])
    assert len(published) == 2
    assert len(svc.store.outbox_pending()) == 2
    for mid in (1, 2):
        svc.events.put(Published(mid))
    svc.step(0)
    assert svc.store.outbox_pending() == []


def test_a_local_query_is_answered_without_an_outbox_row_or_a_write(
    service: tuple[Service, list[Outgoing]],
) -> None:
    svc, published = service
    svc.pipeline.process([received(envelope("insert", "ns/pod/a", {"metadata": {"name": "a"}}), 1)])
    for mid in (1, 2):
        svc.events.put(Published(mid))
    svc.step(0)
    before = svc.store.changes()
    query = envelope("query", "ns/pod/a", source="edged")
    svc.pipeline.process([received(query, 3, response_topic="kubeedge/reply/edged/1")])
    assert published[-1].topic == "kubeedge/reply/edged/1"
    assert json.loads(published[-1].payload)["content"] == [{"metadata": {"name": "a"}}]
    assert svc.store.outbox_pending() == []
    svc.events.put(Published(3))
    svc.step(0)
    assert svc.store.changes() == before


def test_the_first_connect_resends_only_rows_left_by_the_last_run(
    service: tuple[Service, list[Outgoing]],
) -> None:
    # The input link can deliver the session's backlog before its SUBACK, so inputs of this
    # run may be applied (and their publishes in flight) before ``Connected``.
    svc, published = service
    svc.pipeline.process([received(envelope("insert", "ns/pod/a", {"metadata": {"name": "a"}}), 1)])
    assert len(published) == 2 and len(svc.store.outbox_pending()) == 2
    svc.events.put(Connected(True))
    svc.step(0)
    # the connection status only; the two in-flight rows are not sent again
    assert [p.topic for p in published[2:]] == [svc.ops.connection_publish().topic]
