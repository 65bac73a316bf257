"""The service's handling of the bridge state topic, without a broker."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import peewee as pw
import pytest

from mqtt_metamanager.envelope import Resource
from mqtt_metamanager.linkevents import Received
from mqtt_metamanager.routing import Outgoing
from mqtt_metamanager.service import Service
from tests.support import wait_until
from tests.unit.conftest import OfflineService

BRIDGE_STATE = "kubeedge/edgehub/bridge"


@pytest.fixture
def service(offline_service: Callable[..., OfflineService]) -> OfflineService:
    svc, published = offline_service(cloud={"bridge_state_topic": BRIDGE_STATE})
    with svc.store.atomic():
        svc.store.put(Resource("ns1", "pod", "p1"), {"metadata": {"name": "p1"}})
        svc.store.put(Resource("ns1", "podstatus", "p1"), {"metadata": {"name": "p1"}})
    return svc, published


def bridge_state(payload: bytes, mid: int) -> Received:
    return Received(BRIDGE_STATE, payload, mid, 1, None, None)


def test_a_bridge_state_whose_commit_failed_takes_effect_on_the_retry(
    service: tuple[Service, list[Outgoing]],
) -> None:
    # Caught a bug: the link flipped in memory inside the transaction that rolled back, so
    # the retry saw "unchanged" and neither published the state nor ran the reconnect sync.
    svc, published = service
    real_outbox_add = svc.store.outbox_add
    failures = [pw.OperationalError("disk I/O error")]

    def outbox_add(publishes: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_outbox_add(publishes)

    svc.store.outbox_add = outbox_add  # type: ignore[method-assign]
    svc.pipeline.process([bridge_state(b"1", 1)])
    assert published == []
    assert not svc.ops.link.connected

    def retried() -> bool:
        svc.step(0.05)  # the retry timer fires on a turn
        return svc.ops.link.connected

    wait_until(retried, 10, "the retry of the bridge state")
    topics = [out.topic for out in published]
    assert topics.count("kubeedge/metamanager/connection") == 1
    assert topics.count("kubeedge/edgehub/in") == 1  # the pod-status sync for ns1


@pytest.mark.parametrize(("payload", "connected"), [(b"1", True), (b"0", False), (b"", False)])
def test_bridge_payloads(
    service: tuple[Service, list[Outgoing]], payload: bytes, connected: bool
) -> None:
    svc, _published = service
    svc.ops.link = type(svc.ops.link)(not connected, 0)
    svc.pipeline.process([bridge_state(payload, 1)])
    assert svc.ops.link.connected is connected


def test_a_sync_is_sent_but_never_logged_in_the_outbox(
    service: tuple[Service, list[Outgoing]],
) -> None:
    # A sync is a snapshot the next one supersedes: logged, each wrote ~600 KB to the disk
    # per minute for 10,000 statuses, and its copies in SQLite were the service's peak RSS.
    svc, published = service
    svc.pipeline.process([bridge_state(b"1", 1)])  # the reconnect sync, from an input
    svc.pipeline.internal(svc.ops.podstatus_sync)  # the periodic one, from a timer
    syncs = [out for out in published if out.topic == "kubeedge/edgehub/in"]
    assert [json.loads(s.payload)["route"]["resource"] for s in syncs] == ["ns1/podstatus"] * 2
    rows = [entry.publish.topic for entry in svc.store.outbox_pending()]
    assert rows == ["kubeedge/metamanager/connection"]  # logged: what the input changed
